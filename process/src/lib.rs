//! The *process* isolation level of agent-runtimes: a plugin library loaded in a worker process.
//!
//! The loader (`runtime-loader`) uses this crate for runtimes at the process level; its types
//! are public for the loader, not a stable API of their own. In dependency order:
//! - [`protocol`]: the messages between host and worker (length-delimited frames of
//!   MessagePack), the versioned handshake, the credit window;
//! - [`spawn`](find_worker): finding the worker executable, the child's setup between fork and
//!   exec, describing how a worker ended;
//! - `client`: the host's side of a worker: spawn and handshake, turns multiplexed by number,
//!   supervision (crash ledger, restarts, pings), the worker's stderr tail, the turn futures;
//! - [`worker`]: the worker's side: the protocol loop that serves one library, given the
//!   loader's way of opening it ([`worker::WorkerLibrary`]);
//! - [`plugin_log`]: plugin log events re-emitted in the host's subscriber.
//!
//! Each runtime instance at this level has its own worker, the `runtimes-worker` executable
//! that ships with this package (see [`find_worker`] for how it is found). The host talks to
//! it through [`protocol`]; a worker's death ends the turns in flight on it with a `crashed`
//! error naming the plugin file, the runtime and how it died, and the next turn starts a new
//! worker after a backoff. A runtime whose workers crash too often is marked failed.

// The only unsafe code prepares a worker process between fork and exec (`spawn.rs`), allowed
// at those two places.
#![deny(unsafe_code)]

mod client;
pub mod plugin_log;
pub mod protocol;
mod spawn;
pub mod worker;

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

pub use client::{CrashLedger, ProcessRuntime, ProcessStream, ProcessTurn, Spec};
pub use spawn::{WORKER_ENV, WORKER_NAME, find_worker};

/// The environment variable that limits each worker's address space, in bytes (suffixes `K`,
/// `M`, `G` allowed).
pub const WORKER_MEMORY_ENV: &str = "AGENT_RUNTIMES_WORKER_MEMORY";

/// How workers are run and supervised at the *process* isolation level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessOptions {
    /// The worker executable; when `None`, `AGENT_RUNTIMES_WORKER`, then `runtimes-worker`
    /// beside the current executable, then on `PATH`.
    pub worker: Option<&'static Path>,
    /// The most address space a worker may map (`RLIMIT_AS`), in bytes; an allocation beyond
    /// it fails and the worker dies with the allocation failure on its stderr.
    pub memory_limit: Option<u64>,
    /// How long a worker has to let go of a cancelled or timed-out turn, or to answer a ping,
    /// before it is killed.
    pub grace: Duration,
    /// How long a worker has to start, load its library and create its runtime.
    pub start_timeout: Duration,
    /// How many crashes within `crash_window` mark a runtime failed.
    pub max_crashes: u32,
    /// The window in which crashes are counted.
    pub crash_window: Duration,
    /// The wait before the first restart after a crash; it doubles with every further crash
    /// before a turn succeeds again, up to 5 s.
    pub restart_backoff: Duration,
    /// How often a worker with turns in flight is pinged.
    pub ping_interval: Duration,
    /// Environment variables passed to every worker, besides those a configuration names
    /// (the string values of its keys ending in `_env`, such as `api_key_env`). Nothing else
    /// of the host's environment is passed.
    pub pass_env: &'static [&'static str],
}

impl Default for ProcessOptions {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl ProcessOptions {
    /// The defaults: no memory limit, 1 s grace, 10 s to start, failed after 5 crashes in a
    /// minute, 100 ms first backoff, a ping every 5 s.
    pub const DEFAULT: Self = Self {
        worker: None,
        memory_limit: None,
        grace: Duration::from_secs(1),
        start_timeout: Duration::from_secs(10),
        max_crashes: 5,
        crash_window: Duration::from_secs(60),
        restart_backoff: Duration::from_millis(100),
        ping_interval: Duration::from_secs(5),
        pass_env: &[],
    };

    /// The defaults, with the memory limit from `AGENT_RUNTIMES_WORKER_MEMORY` (an invalid
    /// value is logged and ignored).
    pub fn from_env() -> Self {
        let mut options = Self::DEFAULT;
        if let Ok(text) = std::env::var(WORKER_MEMORY_ENV) {
            match parse_size(&text) {
                Some(bytes) => options.memory_limit = Some(bytes),
                None => tracing::warn!(
                    "{WORKER_MEMORY_ENV}={text:?} is not a size (e.g. 512M); no memory limit"
                ),
            }
        }
        options
    }

    /// Sets the worker executable. The path is kept for the life of the process.
    pub fn with_worker(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.worker = Some(Box::leak(path.into().into_boxed_path()));
        self
    }

    /// Sets the memory limit of each worker, in bytes.
    pub fn with_memory_limit(mut self, bytes: Option<u64>) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// Sets the grace period for cancelled turns and pings.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Sets how many crashes within `window` mark a runtime failed.
    pub fn with_crash_limit(mut self, max_crashes: u32, window: Duration) -> Self {
        self.max_crashes = max_crashes;
        self.crash_window = window;
        self
    }

    /// Sets the first restart backoff.
    pub fn with_restart_backoff(mut self, backoff: Duration) -> Self {
        self.restart_backoff = backoff;
        self
    }

    /// Sets how often a busy worker is pinged.
    pub fn with_ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Sets the environment variables passed to every worker.
    pub fn with_pass_env(mut self, names: &'static [&'static str]) -> Self {
        self.pass_env = names;
        self
    }
}

/// `512M`, `1G`, `65536`.
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_uppercase()),
        _ => (text, 'B'),
    };
    let number: u64 = digits.trim().parse().ok()?;
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return None,
    };
    number.checked_mul(1 << shift)
}

/// The runtime that runs every worker's I/O: one thread of its own, alive for the life of the
/// process. Workers are spawned from it, so the thread their death signal is tied to
/// (`PR_SET_PDEATHSIG` follows the thread that forked) never exits before the host.
pub fn io_runtime() -> Result<&'static tokio::runtime::Handle, String> {
    static HANDLE: OnceLock<Result<tokio::runtime::Handle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("could not start the process level's runtime: {e}"))?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name("runtimes-process-io".to_owned())
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
                .map_err(|e| format!("could not start the process level's thread: {e}"))?;
            Ok(handle)
        })
        .as_ref()
        .map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("5X"), None);
    }
}
