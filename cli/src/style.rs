//! Colours, when they are wanted, and plain tables.

use std::io::IsTerminal;

use crate::ColorChoice;

/// Whether stdout and stderr get ANSI colours.
#[derive(Debug, Clone)]
pub struct Style {
    pub stdout_color: bool,
    pub stderr_color: bool,
    pub stdout_terminal: bool,
}

impl Style {
    pub fn new(choice: ColorChoice) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let decide = |terminal: bool| match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => terminal && !no_color,
        };
        let stdout_terminal = std::io::stdout().is_terminal();
        Self {
            stdout_color: decide(stdout_terminal),
            stderr_color: decide(std::io::stderr().is_terminal()),
            stdout_terminal,
        }
    }

    fn paint(on: bool, code: &str, text: &str) -> String {
        if on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// Bold red, on stderr.
    pub fn error(&self, text: &str) -> String {
        Self::paint(self.stderr_color, "1;31", text)
    }

    /// Bold, on stdout.
    pub fn heading(&self, text: &str) -> String {
        Self::paint(self.stdout_color, "1", text)
    }

    /// Dim, on stdout (thinking, secondary text).
    pub fn dim(&self, text: &str) -> String {
        Self::paint(self.stdout_color, "2", text)
    }

    /// Yellow, on stdout (warnings).
    pub fn warn(&self, text: &str) -> String {
        Self::paint(self.stdout_color, "33", text)
    }

    /// Green, on stdout.
    pub fn ok(&self, text: &str) -> String {
        Self::paint(self.stdout_color, "32", text)
    }
}

/// A runtime's id with its aliases: `echo (alias parrot)`.
pub fn named(id: &str, aliases: &[String]) -> String {
    if aliases.is_empty() {
        id.to_owned()
    } else {
        format!("{id} (alias {})", aliases.join(", "))
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
