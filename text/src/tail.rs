//! The last part of a stream (a child's stderr, say), kept for error messages.

use std::collections::VecDeque;

use crate::escape::clean;

/// The last bytes of a stream, up to a limit.
#[derive(Debug)]
pub struct ByteTail {
    bytes: VecDeque<u8>,
    limit: usize,
}

impl Default for ByteTail {
    fn default() -> Self {
        Self::new(Self::DEFAULT_LIMIT)
    }
}

impl ByteTail {
    /// How much [`ByteTail::default`] keeps.
    pub const DEFAULT_LIMIT: usize = 2048;

    /// A tail that keeps the last `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            bytes: VecDeque::new(),
            limit,
        }
    }

    /// How many bytes are kept at most.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Adds bytes, dropping the oldest beyond the limit.
    pub fn push(&mut self, bytes: &[u8]) {
        let bytes = &bytes[bytes.len().saturating_sub(self.limit)..];
        self.bytes.extend(bytes);
        let excess = self.bytes.len().saturating_sub(self.limit);
        self.bytes.drain(..excess);
    }

    /// The tail as text, trimmed, starting at a character boundary (bytes that are not UTF-8
    /// become U+FFFD). Control characters are kept: escape before showing it.
    pub fn text(&self) -> String {
        let bytes: Vec<u8> = self.bytes.iter().copied().collect();
        // Skip continuation bytes a cut may have left at the start.
        let start = bytes
            .iter()
            .position(|b| (*b & 0xC0) != 0x80)
            .unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[start..]).trim().to_owned()
    }

    /// [`ByteTail::text`] with control characters escaped, safe for a terminal.
    pub fn clean_text(&self) -> String {
        clean(&self.text()).into_owned()
    }
}

/// The last lines of a stream, each cut to a length and escaped for a terminal.
#[derive(Debug)]
pub struct LineTail {
    lines: VecDeque<String>,
    max_lines: usize,
    max_line_chars: usize,
}

impl LineTail {
    /// A tail of at most `max_lines` lines of at most `max_line_chars` characters each.
    pub fn new(max_lines: usize, max_line_chars: usize) -> Self {
        Self {
            lines: VecDeque::with_capacity(max_lines.min(64)),
            max_lines,
            max_line_chars,
        }
    }

    /// Cuts a line to the length limit and escapes it; returns what is kept.
    pub fn clean_line(&self, line: &str) -> String {
        let end = line
            .char_indices()
            .nth(self.max_line_chars)
            .map_or(line.len(), |(at, _)| at);
        clean(&line[..end]).into_owned()
    }

    /// Adds a line already made by [`LineTail::clean_line`], dropping the oldest beyond the
    /// limit.
    pub fn push_clean(&mut self, line: String) {
        if self.max_lines == 0 {
            return;
        }
        if self.lines.len() == self.max_lines {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// Cleans and adds a line.
    pub fn push(&mut self, line: &str) {
        let line = self.clean_line(line);
        self.push_clean(line);
    }

    /// The lines kept, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_tail_keeps_the_last_bytes() {
        let mut tail = ByteTail::default();
        tail.push("é".repeat(2000).as_bytes());
        tail.push(b"the end\n");
        let text = tail.text();
        assert!(text.ends_with("the end"));
        assert!(text.len() <= ByteTail::DEFAULT_LIMIT);
        assert!(text.starts_with('é'));
    }

    #[test]
    fn the_line_tail_keeps_the_last_lines_cut_and_escaped() {
        let mut tail = LineTail::new(2, 4);
        tail.push("one");
        tail.push("two\x1b[2J");
        tail.push("three");
        assert_eq!(tail.lines(), ["two\\x1b", "thre"]);
    }
}
