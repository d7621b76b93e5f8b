//! Escaping for terminals: text from a file, a plugin or the network never drives a terminal.

use std::borrow::Cow;

/// Whether a character must not reach a terminal as it is: control characters (C0, DEL, C1:
/// escape sequences, carriage returns, backspaces), line and paragraph separators, and the
/// bidirectional overrides that reorder what is shown ("Trojan Source").
pub fn unsafe_for_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

fn escape_char(out: &mut String, c: char) {
    use std::fmt::Write as _;
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// Text made safe for one line of a terminal: every character [`unsafe_for_terminal`]
/// (newlines included) is shown escaped (`\x1b`, `\n`, `\u{9b}`).
pub fn clean(text: &str) -> Cow<'_, str> {
    escape_except(text, &[])
}

/// Text made safe for a terminal that keeps its line structure: as [`clean`], but newlines and
/// tabs are kept. For model output on a terminal.
pub fn clean_lines(text: &str) -> Cow<'_, str> {
    escape_except(text, &['\n', '\t'])
}

/// As [`clean`], but the characters in `keep` pass unchanged (for a log writer that keeps its
/// own colour codes, say). Borrows when nothing needs escaping.
pub fn escape_except<'a>(text: &'a str, keep: &[char]) -> Cow<'a, str> {
    if !text
        .chars()
        .any(|c| unsafe_for_terminal(c) && !keep.contains(&c))
    {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_for_terminal(c) && !keep.contains(&c) {
            escape_char(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(clean("x\ny\r"), "x\\ny\\r");
        assert_eq!(clean("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(clean("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(clean_lines("one\ntwo\x07"), "one\ntwo\\x07");
        assert!(matches!(clean("plain ünïcode"), Cow::Borrowed(_)));
    }
}
