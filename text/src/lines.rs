//! A byte stream cut into lines of bounded length.

/// The longest piece held back while waiting for a newline; a longer run is passed on as it
/// is (cut at a character boundary), so output without newlines still streams.
pub const MAX_PENDING: usize = 64 * 1024;

/// Cuts a byte stream into lines that keep their `\n`. Bytes that are not UTF-8 become
/// U+FFFD; a character split across reads is kept whole. Each byte is looked at once, and at
/// most [`LineSplitter::max_pending`] bytes wait for a newline: a longer run is passed on.
#[derive(Debug)]
pub struct LineSplitter {
    pending: Vec<u8>,
    max_pending: usize,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::with_max_pending(MAX_PENDING)
    }
}

impl LineSplitter {
    /// A splitter that holds back at most `max_pending` bytes (at least 4, one character)
    /// while waiting for a newline.
    pub fn with_max_pending(max_pending: usize) -> Self {
        Self {
            pending: Vec::new(),
            max_pending: max_pending.max(4),
        }
    }

    /// The most bytes held back while waiting for a newline.
    pub fn max_pending(&self) -> usize {
        self.max_pending
    }

    /// Adds bytes; returns the lines (and over-long pieces) now complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut start = 0;
        // Only the new bytes are searched: what is pending holds no newline.
        while let Some(at) = bytes[start..].iter().position(|b| *b == b'\n') {
            let end = start + at + 1;
            if self.pending.is_empty() {
                out.push(String::from_utf8_lossy(&bytes[start..end]).into_owned());
            } else {
                self.pending.extend_from_slice(&bytes[start..end]);
                out.push(String::from_utf8_lossy(&self.pending).into_owned());
                self.pending.clear();
            }
            start = end;
        }
        self.pending.extend_from_slice(&bytes[start..]);
        if self.pending.len() >= self.max_pending {
            let cut = match std::str::from_utf8(&self.pending) {
                Ok(_) => self.pending.len(),
                // An incomplete character at the end waits for its other bytes.
                Err(error) if error.error_len().is_none() => error.valid_up_to(),
                Err(_) => self.pending.len(),
            };
            if cut > 0 {
                let piece: Vec<u8> = self.pending.drain(..cut).collect();
                out.push(String::from_utf8_lossy(&piece).into_owned());
            }
        }
        out
    }

    /// What is left when the stream ended: a last line without a newline.
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.pending);
        Some(String::from_utf8_lossy(&rest).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_their_newlines_across_reads() {
        let mut lines = LineSplitter::default();
        assert_eq!(lines.push(b"one\ntw"), ["one\n"]);
        assert!(lines.push(b"o").is_empty());
        assert_eq!(lines.push(b"\nthree\nfour"), ["two\n", "three\n"]);
        assert_eq!(lines.finish().as_deref(), Some("four"));
        assert_eq!(lines.finish(), None);
    }

    #[test]
    fn a_character_split_across_reads_stays_whole() {
        let mut lines = LineSplitter::default();
        assert!(lines.push(b"caf\xc3").is_empty());
        assert_eq!(lines.push(b"\xa9\n"), ["café\n"]);
        assert_eq!(lines.push(b"\xff\n"), ["\u{FFFD}\n"]);
    }

    #[test]
    fn a_long_run_without_newline_is_passed_on() {
        let mut lines = LineSplitter::default();
        let mut long = vec![b'a'; MAX_PENDING - 1];
        long.push(0xc3); // the first byte of a two-byte character
        let out = lines.push(&long);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), MAX_PENDING - 1);
        assert_eq!(lines.push(b"\xa9\n"), ["é\n"]);
    }
}
