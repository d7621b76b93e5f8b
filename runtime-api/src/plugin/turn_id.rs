//! A running turn's execution id as the glue keeps it (in the running turns, and in a turn's
//! scope for log forwarding): inline when it is short, as the ids hosts generate are, so
//! registering a turn costs no allocation for it.

use std::fmt;

/// The longest id kept inline.
const INLINE: usize = 46;

/// An execution id, inline when at most 46 bytes long, on the heap otherwise.
#[derive(Clone)]
pub(crate) enum TurnId {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl TurnId {
    /// A copy of `id`.
    pub(crate) fn new(id: &str) -> Self {
        let mut bytes = [0u8; INLINE];
        match (bytes.get_mut(..id.len()), u8::try_from(id.len())) {
            (Some(prefix), Ok(len)) => {
                prefix.copy_from_slice(id.as_bytes());
                TurnId::Inline { len, bytes }
            }
            _ => TurnId::Heap(id.into()),
        }
    }

    /// The id's bytes (UTF-8: it was copied from a `str`).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            TurnId::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            TurnId::Heap(id) => id.as_bytes(),
        }
    }

    /// The id.
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// Whether this is the id `id`.
    pub(crate) fn is(&self, id: &str) -> bool {
        self.as_bytes() == id.as_bytes()
    }
}

impl fmt::Debug for TurnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::TurnId;

    #[test]
    fn ids_of_any_length_are_kept_whole() {
        for id in [
            "",
            "turn-1-2",
            &"x".repeat(46),
            &"y".repeat(47),
            &"é".repeat(300),
        ] {
            let kept = TurnId::new(id);
            assert_eq!(kept.as_str(), id);
            assert!(kept.is(id));
            assert!(!kept.is(&format!("{id}z")));
        }
        assert!(matches!(
            TurnId::new(&"x".repeat(46)),
            TurnId::Inline { .. }
        ));
        assert!(matches!(TurnId::new(&"x".repeat(47)), TurnId::Heap(_)));
    }
}
