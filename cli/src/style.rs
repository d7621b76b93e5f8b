//! Colours, when they are wanted, plain tables, and escaping: nothing from a file, a plugin or
//! the network reaches the terminal with its control characters.
//!
//! Colours are `anstyle` styles; whether a stream gets them is `anstream`'s decision (a
//! terminal, `NO_COLOR`, `CLICOLOR`, `CLICOLOR_FORCE`, `TERM=dumb`), overridden by `--color`.
//! Text is escaped *before* it is styled, so the only escape sequences written are our own.

use std::io::IsTerminal;

use anstream::{AutoStream, ColorChoice as StreamChoice};
use anstyle::{AnsiColor, Style as Paint};

use crate::ColorChoice;

/// Whether stdout and stderr get ANSI colours.
#[derive(Debug, Clone)]
pub struct Style {
    pub stdout_color: bool,
    pub stderr_color: bool,
    pub stdout_terminal: bool,
}

const ERROR: Paint = Paint::new()
    .bold()
    .fg_color(Some(anstyle::Color::Ansi(AnsiColor::Red)));
const HEADING: Paint = Paint::new().bold();
const DIM: Paint = Paint::new().dimmed();
const WARN: Paint = Paint::new().fg_color(Some(anstyle::Color::Ansi(AnsiColor::Yellow)));
const OK: Paint = Paint::new().fg_color(Some(anstyle::Color::Ansi(AnsiColor::Green)));

impl Style {
    pub fn new(choice: ColorChoice) -> Self {
        match choice {
            ColorChoice::Always => StreamChoice::Always,
            ColorChoice::Never => StreamChoice::Never,
            ColorChoice::Auto => StreamChoice::Auto,
        }
        .write_global();
        let wants = |choice: StreamChoice| choice != StreamChoice::Never;
        Self {
            stdout_color: wants(AutoStream::choice(&std::io::stdout())),
            stderr_color: wants(AutoStream::choice(&std::io::stderr())),
            stdout_terminal: std::io::stdout().is_terminal(),
        }
    }

    fn paint(on: bool, paint: Paint, text: &str) -> String {
        if on {
            format!("{paint}{text}{paint:#}")
        } else {
            text.to_owned()
        }
    }

    /// Bold red, on stderr.
    pub fn error(&self, text: &str) -> String {
        Self::paint(self.stderr_color, ERROR, text)
    }

    /// Bold, on stdout.
    pub fn heading(&self, text: &str) -> String {
        Self::paint(self.stdout_color, HEADING, text)
    }

    /// Dim, on stdout (thinking, secondary text).
    pub fn dim(&self, text: &str) -> String {
        Self::paint(self.stdout_color, DIM, text)
    }

    /// Yellow, on stdout (warnings).
    pub fn warn(&self, text: &str) -> String {
        Self::paint(self.stdout_color, WARN, text)
    }

    /// Green, on stdout.
    pub fn ok(&self, text: &str) -> String {
        Self::paint(self.stdout_color, OK, text)
    }
}

/// A runtime's id with its aliases: `echo (alias parrot)`.
pub fn named(id: &str, aliases: &[String]) -> String {
    let id = clean(id);
    if aliases.is_empty() {
        id.into_owned()
    } else {
        format!("{id} (alias {})", clean(&aliases.join(", ")))
    }
}

/// Lays out rows in columns separated by two spaces; the first row is the header.
pub fn table(rows: &[Vec<String>], style: &Style) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[c] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        let line = line.trim_end().to_owned();
        if i == 0 {
            out.push_str(&style.heading(&line));
        } else {
            out.push_str(&line);
        }
        out.push('\n');
    }
    out
}

// Escaping has one home, shared with the loader, the worker and the plugins.
pub use runtime_text::{clean, clean_lines};
use runtime_text::{escape_except, unsafe_for_terminal};

/// A path from a file or the user, made safe for one line of a terminal.
pub fn path(path: &std::path::Path) -> String {
    clean(&path.display().to_string()).into_owned()
}

/// JSON for stdout, pretty-printed. serde_json escapes C0 controls; DEL, C1 controls and the
/// characters [`clean`] escapes are written as `\uXXXX` escapes too, which is still valid JSON
/// (outside strings the output is ASCII) and never reaches a terminal raw.
pub fn json_text(value: &serde_json::Value, pretty: bool) -> String {
    let text = if pretty {
        format!("{value:#}")
    } else {
        value.to_string()
    };
    if !text.chars().any(unsafe_for_terminal_in_json) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_for_terminal_in_json(c) {
            use std::fmt::Write as _;
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

fn unsafe_for_terminal_in_json(c: char) -> bool {
    // serde_json already escapes C0; the newlines of pretty-printing are its own.
    c != '\n' && unsafe_for_terminal(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_stays_valid_and_has_no_raw_controls() {
        let value = serde_json::json!({"name": "a\u{1b}]0;title\u{7}\u{9b}\u{7f}\u{202e}z"});
        for pretty in [false, true] {
            let text = json_text(&value, pretty);
            assert!(!text.chars().any(|c| c != '\n' && c.is_control()), "{text}");
            let back: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back, value);
        }
    }
}

/// Standard error for the log subscriber, one event per write, with every control character
/// of the event escaped except its final newline and the subscriber's own colour codes (the
/// subscriber already escapes `ESC`, `BEL` and C1 controls in messages and fields, but not
/// carriage returns, newlines or bidirectional overrides, which could fake a log line).
#[derive(Debug, Clone, Copy)]
pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (body, end) = match text.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (&*text, ""),
        };
        let body = escape_except(body, &['\u{1b}']);
        let mut stderr = std::io::stderr().lock();
        stderr.write_all(body.as_bytes())?;
        stderr.write_all(end.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// One line saying what a reload (SIGHUP) changed; ids are plain (`[a-z0-9._-]`).
pub fn reloaded(outcome: &runtime_loader::Rediscovered) -> String {
    let list = |ids: &[String]| {
        if ids.is_empty() {
            "none".to_owned()
        } else {
            ids.join(", ")
        }
    };
    let restart: Vec<String> = outcome
        .restart_needed
        .iter()
        .map(|r| r.id.clone())
        .collect();
    let mut line = format!(
        "reloaded: upgraded {}; added {}; removed {}",
        list(&outcome.upgraded),
        list(&outcome.added),
        list(&outcome.removed)
    );
    if !restart.is_empty() {
        line.push_str(&format!(
            "; restart needed for {} (loaded in this process, never unloaded)",
            restart.join(", ")
        ));
    }
    clean(&line).into_owned()
}
