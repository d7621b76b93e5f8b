//! The manifest embedded in every plugin library, readable without loading it.
//!
//! # Layout
//!
//! The export macro writes one exported static byte array whose name starts with
//! [`MANIFEST_SYMBOL`] (followed by `_` and the crate's name, so that several plugin crates can
//! be linked into one host as rlibs), exactly [`EMBED_SIZE`] bytes long:
//!
//! ```text
//! offset 0   16 bytes  MAGIC: "agent-runtimes\0" followed by the format byte (1)
//! offset 16   4 bytes  length N of the JSON document, little-endian u32, N <= MAX_JSON_LEN
//! offset 20   N bytes  the JSON document (a `Manifest`), UTF-8
//! then zero padding up to EMBED_SIZE
//! ```
//!
//! An exported symbol is found the same way in ELF (`.dynsym`), Mach-O (with a leading `_`)
//! and PE (the export table), so the loader reads it with the `object` crate by parsing the
//! file: no `dlopen`, no plugin code run. The fixed size bounds what the loader ever reads.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::capabilities::Capabilities;

/// The exported symbol that holds the manifest, or the prefix of it: the export macro names it
/// `AGENT_RUNTIMES_MANIFEST_<crate name>`. A library exports exactly one.
pub const MANIFEST_SYMBOL: &str = "AGENT_RUNTIMES_MANIFEST";

/// The prefix of the exported symbol that holds the root module: the export macro names it
/// `AGENT_RUNTIMES_ROOT_<crate name>`, and the manifest names it in
/// [`Manifest::root_symbol`].
pub const ROOT_SYMBOL_PREFIX: &str = "AGENT_RUNTIMES_ROOT_";

/// Whether an exported symbol's name is a manifest's: [`MANIFEST_SYMBOL`] itself (libraries
/// built before contracts were versioned) or followed by `_` and a crate name.
pub fn is_manifest_symbol(name: &[u8]) -> bool {
    match name.strip_prefix(MANIFEST_SYMBOL.as_bytes()) {
        Some([]) => true,
        Some([b'_', rest @ ..]) => !rest.is_empty(),
        _ => false,
    }
}

/// Whether `name` is a root-module symbol name a manifest may declare: the prefix and a crate
/// name of `[A-Za-z0-9_]`, at most 128 bytes in all.
pub fn is_root_symbol(name: &str) -> bool {
    name.len() <= 128
        && name.strip_prefix(ROOT_SYMBOL_PREFIX).is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

/// The first 16 bytes of an embedded manifest; the last byte is the format number.
pub const MAGIC: [u8; 16] = *b"agent-runtimes\0\x01";

/// The format number this version writes and reads.
pub const FORMAT: u8 = 1;

/// The size of the embedded array, and the most the loader reads.
pub const EMBED_SIZE: usize = 8 * 1024;

/// The longest JSON document that fits.
pub const MAX_JSON_LEN: usize = EMBED_SIZE - HEADER_LEN;

const HEADER_LEN: usize = 20;

/// A plugin library's manifest: who built it against what, and the runtimes it carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Manifest {
    /// The plugin contract the library was built for (see [`crate::version`]); `0` for a
    /// library built before contracts were versioned.
    #[serde(default)]
    pub contract: u32,
    /// The runtime-api package version the plugin was built against (for people).
    pub api_version: String,
    /// The exported symbol of the library's root module; empty for a library built before
    /// contracts were versioned.
    #[serde(default)]
    pub root_symbol: String,
    /// The plugin package's name.
    pub plugin_name: String,
    /// The plugin package's version.
    pub plugin_version: String,
    /// The runtimes the library carries.
    pub runtimes: Vec<ManifestRuntime>,
}

/// One runtime of a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ManifestRuntime {
    /// The runtime's id.
    pub id: String,
    /// A name for people.
    pub display_name: String,
    /// What it is for.
    pub description: String,
    /// Other names it answers to.
    pub aliases: Vec<String>,
    /// What it can do.
    pub capabilities: Capabilities,
    /// The JSON Schema of its configuration, as text; empty when it declares none. See
    /// [`ManifestRuntime::config_schema`].
    #[serde(default, rename = "config_schema")]
    pub config_schema_text: String,
    /// What the runtime needs from its sandbox at the process level, as JSON text (network,
    /// paths to read and write, programs to run, environment variables); empty when it
    /// declares nothing (then nothing is granted but what the operator grants). Added within
    /// contract 1: older plugins have none.
    #[serde(
        default,
        rename = "permissions",
        skip_serializing_if = "String::is_empty"
    )]
    pub permissions_text: String,
}

impl ManifestRuntime {
    /// The declared JSON Schema of the runtime's configuration: `None` when it declares none,
    /// `Some(Err(..))` when the declared text is not JSON.
    pub fn config_schema(&self) -> Option<Result<serde_json::Value, String>> {
        if self.config_schema_text.trim().is_empty() {
            return None;
        }
        Some(serde_json::from_str(&self.config_schema_text).map_err(|e| e.to_string()))
    }
}

/// Why bytes are not a readable manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Fewer bytes than the header.
    #[error("the manifest is truncated: expected at least {expected} bytes, found {found}")]
    Truncated {
        /// Bytes needed.
        expected: usize,
        /// Bytes available.
        found: usize,
    },
    /// The magic bytes are wrong.
    #[error("the manifest does not start with the agent-runtimes magic bytes")]
    BadMagic,
    /// A format this version cannot read.
    #[error("manifest format {found} is not supported: expected format {expected}")]
    UnsupportedFormat {
        /// The format this version reads.
        expected: u8,
        /// The format found.
        found: u8,
    },
    /// The declared length does not fit the embedded array.
    #[error("the manifest declares {declared} bytes of JSON, more than the {max} bytes that fit")]
    Oversized {
        /// The declared length.
        declared: usize,
        /// The limit.
        max: usize,
    },
    /// The JSON is not valid UTF-8 or not a valid manifest.
    #[error("the manifest JSON is malformed: {message}")]
    Malformed {
        /// What serde_json said.
        message: String,
    },
}

impl Manifest {
    /// Reads an embedded manifest from the bytes at [`MANIFEST_SYMBOL`].
    ///
    /// Reads at most [`EMBED_SIZE`] bytes; never panics, whatever the input.
    ///
    /// # Errors
    ///
    /// A [`ManifestError`] saying what is wrong with the bytes.
    pub fn from_embedded(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() < HEADER_LEN {
            return Err(ManifestError::Truncated {
                expected: HEADER_LEN,
                found: bytes.len(),
            });
        }
        if bytes[..15] != MAGIC[..15] {
            return Err(ManifestError::BadMagic);
        }
        if bytes[15] != FORMAT {
            return Err(ManifestError::UnsupportedFormat {
                expected: FORMAT,
                found: bytes[15],
            });
        }
        let declared = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]) as usize;
        if declared > MAX_JSON_LEN {
            return Err(ManifestError::Oversized {
                declared,
                max: MAX_JSON_LEN,
            });
        }
        let json =
            bytes
                .get(HEADER_LEN..HEADER_LEN + declared)
                .ok_or(ManifestError::Truncated {
                    expected: HEADER_LEN + declared,
                    found: bytes.len(),
                })?;
        serde_json::from_slice(json).map_err(|e| ManifestError::Malformed {
            message: e.to_string(),
        })
    }

    /// The embedded form of this manifest, as the export macro writes it.
    ///
    /// # Errors
    ///
    /// [`ManifestError::Oversized`] when the JSON does not fit.
    pub fn to_embedded(&self) -> Result<Vec<u8>, ManifestError> {
        let json = serde_json::to_vec(self).map_err(|e| ManifestError::Malformed {
            message: e.to_string(),
        })?;
        embed_json(&json)
    }
}

/// Wraps a JSON document in the embedded layout. Used by tests and fixtures that need
/// hand-made manifests; plugins get theirs from the export macro.
///
/// # Errors
///
/// [`ManifestError::Oversized`] when the JSON does not fit.
pub fn embed_json(json: &[u8]) -> Result<Vec<u8>, ManifestError> {
    if json.len() > MAX_JSON_LEN {
        return Err(ManifestError::Oversized {
            declared: json.len(),
            max: MAX_JSON_LEN,
        });
    }
    let mut out = Vec::with_capacity(EMBED_SIZE);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(json);
    out.resize(EMBED_SIZE, 0);
    Ok(out)
}

/// One runtime as the export macro sees it at compile time.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct ConstRuntime {
    pub id: &'static str,
    pub display_name: &'static str,
    pub description: &'static str,
    pub aliases: &'static [&'static str],
    pub capabilities: Capabilities,
    pub config_schema: &'static str,
    pub permissions: &'static str,
}

impl fmt::Debug for ConstRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConstRuntime")
            .field("id", &self.id)
            .finish()
    }
}

/// Writes the embedded manifest at compile time. A manifest that does not fit is a compile
/// error.
#[doc(hidden)]
pub const fn build_embedded(
    api_version: &str,
    root_symbol: &str,
    plugin_name: &str,
    plugin_version: &str,
    runtimes: &[ConstRuntime],
) -> [u8; EMBED_SIZE] {
    let mut w = ConstWriter {
        buf: [0; EMBED_SIZE],
        pos: HEADER_LEN,
    };
    w.raw("{\"contract\":");
    w.number(crate::version::CONTRACT_VERSION);
    w.raw(",\"api_version\":");
    w.string(api_version);
    w.raw(",\"root_symbol\":");
    w.string(root_symbol);
    w.raw(",\"plugin_name\":");
    w.string(plugin_name);
    w.raw(",\"plugin_version\":");
    w.string(plugin_version);
    w.raw(",\"runtimes\":[");
    let mut i = 0;
    while i < runtimes.len() {
        let rt = &runtimes[i];
        if i > 0 {
            w.raw(",");
        }
        w.raw("{\"id\":");
        w.string(rt.id);
        w.raw(",\"display_name\":");
        w.string(rt.display_name);
        w.raw(",\"description\":");
        w.string(rt.description);
        w.raw(",\"aliases\":[");
        let mut a = 0;
        while a < rt.aliases.len() {
            if a > 0 {
                w.raw(",");
            }
            w.string(rt.aliases[a]);
            a += 1;
        }
        w.raw("],\"capabilities\":[");
        let mut first = true;
        let mut k = 0;
        while k < Capabilities::KNOWN.len() {
            let (cap, name) = Capabilities::KNOWN[k];
            if rt.capabilities.contains(cap) {
                if !first {
                    w.raw(",");
                }
                w.string(name);
                first = false;
            }
            k += 1;
        }
        w.raw("],\"config_schema\":");
        w.string(rt.config_schema);
        if !rt.permissions.is_empty() {
            w.raw(",\"permissions\":");
            w.string(rt.permissions);
        }
        w.raw("}");
        i += 1;
    }
    w.raw("]}");
    let len = w.pos - HEADER_LEN;
    let mut m = 0;
    while m < MAGIC.len() {
        w.buf[m] = MAGIC[m];
        m += 1;
    }
    let len_bytes = (len as u32).to_le_bytes();
    w.buf[16] = len_bytes[0];
    w.buf[17] = len_bytes[1];
    w.buf[18] = len_bytes[2];
    w.buf[19] = len_bytes[3];
    w.buf
}

struct ConstWriter {
    buf: [u8; EMBED_SIZE],
    pos: usize,
}

impl ConstWriter {
    const fn byte(&mut self, b: u8) {
        if self.pos >= EMBED_SIZE {
            panic!("the runtime manifest does not fit in 8 KiB: shorten descriptions or aliases");
        }
        self.buf[self.pos] = b;
        self.pos += 1;
    }

    const fn raw(&mut self, text: &str) {
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            self.byte(bytes[i]);
            i += 1;
        }
    }

    /// Writes a decimal number.
    const fn number(&mut self, value: u32) {
        let mut digits = [0u8; 10];
        let mut n = value;
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        while len > 0 {
            len -= 1;
            self.byte(digits[len]);
        }
    }

    /// Writes a JSON string literal, escaping what JSON requires.
    const fn string(&mut self, text: &str) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let bytes = text.as_bytes();
        self.byte(b'"');
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match b {
                b'"' => self.raw("\\\""),
                b'\\' => self.raw("\\\\"),
                b'\n' => self.raw("\\n"),
                b'\r' => self.raw("\\r"),
                b'\t' => self.raw("\\t"),
                0..=0x1f => {
                    self.raw("\\u00");
                    self.byte(HEX[(b >> 4) as usize]);
                    self.byte(HEX[(b & 0xf) as usize]);
                }
                _ => self.byte(b),
            }
            i += 1;
        }
        self.byte(b'"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_names() {
        assert!(is_manifest_symbol(b"AGENT_RUNTIMES_MANIFEST"));
        assert!(is_manifest_symbol(b"AGENT_RUNTIMES_MANIFEST_echo_runtime"));
        assert!(!is_manifest_symbol(b"AGENT_RUNTIMES_MANIFEST_"));
        assert!(!is_manifest_symbol(b"AGENT_RUNTIMES_MANIFESTO"));
        assert!(is_root_symbol("AGENT_RUNTIMES_ROOT_echo_runtime"));
        assert!(!is_root_symbol("AGENT_RUNTIMES_ROOT_"));
        assert!(!is_root_symbol("AGENT_RUNTIMES_ROOT_a\0b"));
        assert!(!is_root_symbol("dlopen"));
    }

    const RUNTIMES: [ConstRuntime; 2] = [
        ConstRuntime {
            id: "echo",
            display_name: "Echo \"quoted\"\n\\ and \u{1} control",
            description: "héllo — unicode",
            aliases: &["parrot", "mirror"],
            capabilities: Capabilities::STREAMING.with(Capabilities::CANCELLATION),
            config_schema: r#"{"type": "object", "properties": {"delay_ms": {"type": "integer"}}}"#,
            permissions: r#"{"net": ["{config:base_url}"]}"#,
        },
        ConstRuntime {
            id: "other",
            display_name: "Other",
            description: "",
            aliases: &[],
            capabilities: Capabilities::NONE,
            config_schema: "",
            permissions: "",
        },
    ];

    #[test]
    fn const_builder_round_trips_through_the_parser() {
        const EMBEDDED: [u8; EMBED_SIZE] = build_embedded(
            "0.1.0",
            "AGENT_RUNTIMES_ROOT_demo",
            "demo",
            "1.2.3",
            &RUNTIMES,
        );
        let manifest = Manifest::from_embedded(&EMBEDDED).unwrap();
        assert_eq!(manifest.contract, crate::version::CONTRACT_VERSION);
        assert_eq!(manifest.root_symbol, "AGENT_RUNTIMES_ROOT_demo");
        assert_eq!(manifest.api_version, "0.1.0");
        let schema = manifest.runtimes[0].config_schema().unwrap().unwrap();
        assert_eq!(schema["properties"]["delay_ms"]["type"], "integer");
        assert!(manifest.runtimes[1].config_schema().is_none());
        assert_eq!(manifest.plugin_name, "demo");
        assert_eq!(manifest.runtimes.len(), 2);
        let echo = &manifest.runtimes[0];
        assert_eq!(echo.display_name, RUNTIMES[0].display_name);
        assert_eq!(echo.description, RUNTIMES[0].description);
        assert_eq!(echo.aliases, vec!["parrot", "mirror"]);
        assert_eq!(echo.capabilities, RUNTIMES[0].capabilities);
        assert_eq!(manifest.runtimes[1].aliases, Vec::<String>::new());
        // The serde writer produces the same layout.
        assert_eq!(manifest.to_embedded().unwrap().len(), EMBED_SIZE);
        assert_eq!(
            Manifest::from_embedded(&manifest.to_embedded().unwrap()).unwrap(),
            manifest
        );
    }

    #[test]
    fn every_malformation_has_its_own_error() {
        let good = build_embedded(
            "0.1.0",
            "AGENT_RUNTIMES_ROOT_demo",
            "demo",
            "1.0.0",
            &RUNTIMES,
        );
        assert!(matches!(
            Manifest::from_embedded(&good[..10]),
            Err(ManifestError::Truncated { found: 10, .. })
        ));
        let mut bad = good;
        bad[0] = b'X';
        assert_eq!(Manifest::from_embedded(&bad), Err(ManifestError::BadMagic));
        let mut bad = good;
        bad[15] = 9;
        assert!(matches!(
            Manifest::from_embedded(&bad),
            Err(ManifestError::UnsupportedFormat { found: 9, .. })
        ));
        let mut bad = good;
        bad[16..20].copy_from_slice(&(u32::MAX).to_le_bytes());
        assert!(matches!(
            Manifest::from_embedded(&bad),
            Err(ManifestError::Oversized { .. })
        ));
        assert!(matches!(
            Manifest::from_embedded(&good[..100]),
            Err(ManifestError::Truncated { .. })
        ));
        let not_json = embed_json(b"{not json").unwrap();
        assert!(matches!(
            Manifest::from_embedded(&not_json),
            Err(ManifestError::Malformed { .. })
        ));
        let wrong_shape = embed_json(br#"{"api_version": 3}"#).unwrap();
        assert!(matches!(
            Manifest::from_embedded(&wrong_shape),
            Err(ManifestError::Malformed { .. })
        ));
        assert!(matches!(
            embed_json(&vec![b' '; MAX_JSON_LEN + 1]),
            Err(ManifestError::Oversized { .. })
        ));
    }
}
