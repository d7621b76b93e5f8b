//! The *process* isolation level of agent-runtimes: a plugin library loaded in a worker process.
//!
//! The loader (`runtime-loader`) uses this crate for runtimes at the process level; its types
//! are public for the loader, not a stable API of their own. In dependency order:
//! - [`protocol`]: the messages between host and worker (length-delimited frames of
//!   MessagePack), the versioned handshake, the credit window;
//! - [`spawn`](find_worker): finding the worker executable, the child's setup between fork and
//!   exec, describing how a worker ended;
//! - `connection`: one worker: spawn, handshake, the link turns and calls go through, the task
//!   that dispatches what the worker sends;
//! - `stderr`: a worker's stderr, logged escaped, its last lines kept for crash reports;
//! - `supervision`: the crash ledger that marks a runtime failed, pings, crash errors;
//! - `runtime`: [`ProcessRuntime`], turns multiplexed by number over its worker, restarts;
//! - `turn`: the turn futures ([`ProcessTurn`], [`ProcessStream`]);
//! - [`ProcessLimits`]: every fixed bound between host and workers, in one place;
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

mod connection;
mod io;
mod limits;
mod options;
pub mod plugin_log;
pub mod protocol;
mod runtime;
pub mod sandbox;
mod spawn;
mod stderr;
mod supervision;
mod turn;
pub mod worker;

pub use limits::{LIMITS, ProcessLimits};
pub use runtime::ProcessRuntime;
pub use supervision::CrashLedger;
pub use turn::{ProcessStream, ProcessTurn};

pub use io::io_runtime;
pub use options::{
    LibraryFile, ProcessOptions, Spec, WORKER_MEMORY_ENV, WORKER_POOL_ENV, WORKER_PROCESSES_ENV,
};
pub use spawn::{WORKER_ENV, WORKER_NAME, find_worker};
