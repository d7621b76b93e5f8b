//! A worker's stderr: logged line by line (escaped) and its last lines kept for crash reports.

use std::sync::{Arc, Mutex};

use runtime_text::LineTail;
use tokio::io::AsyncBufReadExt as _;
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
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut tail = lock(&tail);
                let line = tail.clean_line(&line);
                tracing::debug!(target: "agent_runtimes::worker", runtime = %runtime, pid, "{line}");
                tail.push_clean(line);
            }
        })
    };
    (tail, task)
}

/// The lines kept, oldest first.
pub(crate) fn lines_of(tail: &SharedTail) -> Vec<String> {
    lock(tail).lines()
}
