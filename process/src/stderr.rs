//! A worker's stderr: logged line by line (escaped) and its last lines kept for crash reports.
//!
//! Read as bytes, cut into lines of bounded length ([`LineSplitter`]: a run without a newline
//! is passed on in pieces), decoded lossily: a plugin that floods its stderr without newlines,
//! or writes bytes that are not UTF-8, costs the host a bounded buffer and never stops the
//! capture (the crash report still gets the last lines).

use std::sync::{Arc, Mutex};

use runtime_text::{LineSplitter, LineTail};
use tokio::io::AsyncReadExt as _;
use tokio::process::ChildStderr;
use tokio::task::JoinHandle;

use crate::io::lock;
use crate::limits::LIMITS;

/// The last lines of a worker's stderr, shared with the task that reads it.
pub(crate) type SharedTail = Arc<Mutex<LineTail>>;

/// Reads a worker's stderr until it closes: each line escaped, cut, logged at debug level
/// and kept in the returned tail.
pub(crate) fn read_stderr(
    stderr: ChildStderr,
    runtime: String,
    pid: u32,
) -> (SharedTail, JoinHandle<()>) {
    let tail: SharedTail = Arc::new(Mutex::new(LineTail::new(
        LIMITS.stderr_tail_lines,
        LIMITS.stderr_line_chars,
    )));
    let task = {
        let tail = Arc::clone(&tail);
        tokio::spawn(async move {
            let mut stderr = stderr;
            let mut splitter = LineSplitter::with_max_pending(LIMITS.stderr_max_pending);
            let mut buffer = vec![0u8; 8192];
            let keep = |line: &str| {
                let mut tail = lock(&tail);
                let line = tail.clean_line(line.trim_end_matches(['\n', '\r']));
                tracing::debug!(target: "agent_runtimes::worker", runtime = %runtime, pid, "{line}");
                tail.push_clean(line);
            };
            loop {
                match stderr.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => splitter.push(&buffer[..read]).iter().for_each(|l| keep(l)),
                }
            }
            if let Some(last) = splitter.finish() {
                keep(&last);
            }
        })
    };
    (tail, task)
}

/// The lines kept, oldest first.
pub(crate) fn lines_of(tail: &SharedTail) -> Vec<String> {
    lock(tail).lines()
}
