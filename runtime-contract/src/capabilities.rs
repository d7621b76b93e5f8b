//! What a runtime declares it can do.

use std::fmt;

use abi_stable::StableAbi;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A set of capabilities, as bits.
///
/// The set crosses the boundary as a plain `u64`, so a minor release can add a capability
/// without breaking plugins already built: unknown bits are kept (and shown as `bit<N>`), never
/// rejected.
///
/// # Examples
///
/// ```
/// use runtime_contract::capabilities::Capabilities;
///
/// let caps = Capabilities::STREAMING.with(Capabilities::TOOLS);
/// assert!(caps.contains(Capabilities::TOOLS));
/// assert_eq!(caps.to_string(), "streaming, tools");
/// ```
#[repr(transparent)]
#[derive(Copy, Clone, PartialEq, Eq, Hash, Default, StableAbi)]
pub struct Capabilities(u64);

impl Capabilities {
    /// No capability.
    pub const NONE: Self = Self(0);
    /// Streams output incrementally (more than one delta per turn).
    pub const STREAMING: Self = Self(1 << 0);
    /// Accepts tool definitions and returns tool calls.
    pub const TOOLS: Self = Self(1 << 1);
    /// A running turn can be cancelled by its execution id.
    pub const CANCELLATION: Self = Self(1 << 2);
    /// Uses the conversation history of a request.
    pub const HISTORY: Self = Self(1 << 3);
    /// Emits thinking (reasoning) deltas.
    pub const THINKING: Self = Self(1 << 4);
    /// Validates its configuration through `validate_config`.
    pub const CONFIG_VALIDATION: Self = Self(1 << 5);
    /// Accepts MCP servers (in its configuration or a request's `mcp_servers`) and calls
    /// their tools itself.
    pub const MCP: Self = Self(1 << 6);

    /// Every capability this version of runtime-api knows, with its name.
    pub const KNOWN: [(Self, &'static str); 7] = [
        (Self::STREAMING, "streaming"),
        (Self::TOOLS, "tools"),
        (Self::CANCELLATION, "cancellation"),
        (Self::HISTORY, "history"),
        (Self::THINKING, "thinking"),
        (Self::CONFIG_VALIDATION, "config_validation"),
        (Self::MCP, "mcp"),
    ];

    /// The set with exactly these bits, known or not.
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// The bits of the set.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// The union of two sets.
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether every capability of `other` is in the set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The capability with this name: a known name, or `bit<N>` for a bit this version does
    /// not name. Each capability has exactly one name (the one [`Capabilities::names`] writes),
    /// so reading and writing a set always agree.
    pub fn from_name(name: &str) -> Option<Self> {
        if let Some(known) = Self::KNOWN.iter().find(|(_, n)| *n == name) {
            return Some(known.0);
        }
        let digits = name.strip_prefix("bit")?;
        let bit = digits.parse::<u32>().ok().filter(|b| *b < 64)?;
        let cap = Self(1 << bit);
        let canonical = bit.to_string() == digits;
        let unnamed = !Self::KNOWN.iter().any(|(c, _)| *c == cap);
        (canonical && unnamed).then_some(cap)
    }

    /// The names of the capabilities in the set, in bit order; unknown bits as `bit<N>`.
    pub fn names(self) -> Vec<String> {
        (0..64)
            .filter(|bit| self.0 & (1 << bit) != 0)
            .map(|bit| {
                let cap = Self(1 << bit);
                Self::KNOWN
                    .iter()
                    .find(|(c, _)| *c == cap)
                    .map(|(_, n)| (*n).to_owned())
                    .unwrap_or_else(|| format!("bit{bit}"))
            })
            .collect()
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(", "))
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Capabilities({self})")
    }
}

impl Serialize for Capabilities {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.names().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Capabilities {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(deserializer)?;
        let mut caps = Self::NONE;
        for name in names {
            let cap = Self::from_name(&name).ok_or_else(|| {
                serde::de::Error::custom(format_args!("unknown capability `{name}`"))
            })?;
            caps = caps.with(cap);
        }
        Ok(caps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_including_unknown_bits() {
        let caps = Capabilities::STREAMING
            .with(Capabilities::THINKING)
            .with(Capabilities::from_bits(1 << 40));
        let json = serde_json::to_string(&caps).unwrap();
        assert_eq!(json, r#"["streaming","thinking","bit40"]"#);
        let back: Capabilities = serde_json::from_str(&json).unwrap();
        assert_eq!(back, caps);
    }

    #[test]
    fn each_capability_has_one_spelling() {
        assert_eq!(
            Capabilities::from_name("bit40"),
            Some(Capabilities::from_bits(1 << 40))
        );
        for alias in ["bit0", "bit05", "bit+5", "bit064", "bit64", "bit"] {
            assert_eq!(Capabilities::from_name(alias), None, "{alias}");
        }
        assert!(serde_json::from_str::<Capabilities>(r#"["bit0","bit05","bit+5"]"#).is_err());
    }

    #[test]
    fn unknown_name_is_an_error() {
        let err = serde_json::from_str::<Capabilities>(r#"["teleport"]"#).unwrap_err();
        assert!(err.to_string().contains("unknown capability `teleport`"));
    }
}
