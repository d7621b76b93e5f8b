//! The process level's limits, in one place.

use std::time::Duration;

/// Every fixed bound between a host and its workers, with its default. What an operator tunes
/// per runtime (memory, grace, crash window, …) is [`ProcessOptions`](crate::ProcessOptions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessLimits {
    /// The largest frame either side accepts, in bytes (16 MiB).
    pub max_frame: usize,
    /// The stream credit a worker may use ahead of the host's consumer (256 units; an item
    /// costs one unit plus one per 4 KiB, at most half the window: so at most 256 items and
    /// about 1 MiB plus two large items are held back for a consumer that stops).
    pub stream_window: u32,
    /// Stderr lines of a worker kept for a crash report (12).
    pub stderr_tail_lines: usize,
    /// The longest stderr line kept, in characters (400).
    pub stderr_line_chars: usize,
    /// The most bytes of a worker's stderr held while waiting for a newline (64 KiB): a longer
    /// run is cut, so a flood without newlines costs the host no more than this.
    pub stderr_max_pending: usize,
    /// The longest wait between restarts of a crashing worker (5 s).
    pub max_backoff: Duration,
    /// Plugin log events a worker queues for the host before it drops new ones (1,024).
    pub max_pending_logs: usize,
}

impl ProcessLimits {
    /// The defaults, as documented on each field.
    pub const DEFAULT: Self = Self {
        max_frame: 16 << 20,
        stream_window: 256,
        stderr_tail_lines: 12,
        stderr_line_chars: 400,
        stderr_max_pending: 64 << 10,
        max_backoff: Duration::from_secs(5),
        max_pending_logs: 1024,
    };
}

impl Default for ProcessLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The limits in force.
pub const LIMITS: ProcessLimits = ProcessLimits::DEFAULT;
