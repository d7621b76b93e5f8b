//! Execution ids: generated for turns that come without one, and kept by a turn without an
//! allocation of their own.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The longest id kept inline: every generated id fits (`turn-` and two 20-digit numbers).
const INLINE: usize = 46;

/// A turn's execution id: inline when it is short (as every generated id is), so a turn keeps
/// its id without an allocation; on the heap otherwise.
#[derive(Clone)]
pub(crate) enum ExecutionId {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl ExecutionId {
    /// A copy of `id`.
    pub(crate) fn new(id: &str) -> Self {
        let mut bytes = [0u8; INLINE];
        match (bytes.get_mut(..id.len()), u8::try_from(id.len())) {
            (Some(prefix), Ok(len)) => {
                prefix.copy_from_slice(id.as_bytes());
                ExecutionId::Inline { len, bytes }
            }
            _ => ExecutionId::Heap(id.into()),
        }
    }

    /// `turn-<pid>-<n>`, unique within the process and across processes in one log: the id
    /// a turn's request carries, and the same id as the turn keeps it.
    pub(crate) fn generate() -> (String, Self) {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        static PREFIX: OnceLock<String> = OnceLock::new();
        let prefix = PREFIX.get_or_init(|| format!("turn-{}-", std::process::id()));
        let number = Decimal::of(NEXT.fetch_add(1, Ordering::Relaxed));
        let digits = number.as_bytes();
        let mut id = String::with_capacity(prefix.len() + digits.len());
        id.push_str(prefix);
        id.extend(digits.iter().map(|&digit| char::from(digit)));
        let kept = Self::new(&id);
        (id, kept)
    }

    /// The id.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            ExecutionId::Inline { len, bytes } => bytes
                .get(..usize::from(*len))
                .and_then(|text| std::str::from_utf8(text).ok())
                .unwrap_or(""),
            ExecutionId::Heap(id) => id,
        }
    }
}

impl fmt::Debug for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A number in decimal, as ASCII digits: every turn without an id gets one, and `write!`
/// costs several times more.
struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    fn of(mut n: u64) -> Self {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        // 20 digits hold any u64, so `start` never passes 0.
        while let Some(slot) = start.checked_sub(1).and_then(|i| digits.get_mut(i)) {
            start -= 1;
            // `n % 10` is below 10, so the cast cannot truncate.
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Self { digits, start }
    }

    fn as_bytes(&self) -> &[u8] {
        self.digits.get(self.start..).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::{Decimal, ExecutionId};

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0, 7, 10, 4_096, 1_000_000_007, u64::MAX] {
            assert_eq!(Decimal::of(n).as_bytes(), n.to_string().as_bytes());
        }
    }

    #[test]
    fn generated_ids_are_unique_and_name_the_process() {
        let (first_text, first) = ExecutionId::generate();
        let (_, second) = ExecutionId::generate();
        let prefix = format!("turn-{}-", std::process::id());
        assert_eq!(first.as_str(), first_text);
        assert!(first.as_str().starts_with(&prefix), "{first:?}");
        assert_ne!(first.as_str(), second.as_str());
        assert!(matches!(first, ExecutionId::Inline { .. }));
    }

    #[test]
    fn ids_of_any_length_are_kept_whole() {
        for id in ["", "a", &"x".repeat(46), &"y".repeat(47), &"é".repeat(300)] {
            assert_eq!(ExecutionId::new(id).as_str(), id);
        }
    }
}
