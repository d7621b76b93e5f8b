//! Text that comes from a plugin, a file or the network, made safe to keep and to show.
//!
//! One home for what every part of agent-runtimes does with such text:
//! - [`escape`]: nothing reaches a terminal with its control characters ([`clean`],
//!   [`clean_lines`]);
//! - [`lines`]: a byte stream cut into lines of bounded length ([`LineSplitter`]);
//! - [`tail`]: the last bytes or lines of a stream, for error messages ([`ByteTail`],
//!   [`LineTail`]).
//!
//! No dependencies, no `unsafe`, no panics on any input.
#![forbid(unsafe_code)]

pub mod escape;
pub mod lines;
pub mod tail;

pub use escape::{clean, clean_lines, escape_except, unsafe_for_terminal};
pub use lines::LineSplitter;
pub use tail::{ByteTail, LineTail};
