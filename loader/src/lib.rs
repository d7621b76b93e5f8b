//! Finds, checks and loads agent-runtime plugins, and calls them from async Rust hosts.
//!
//! This is Python's entry-point plugin discovery done natively. Copy a runtime's library into
//! a plugin folder, and a host finds it by id:
//!
//! 1. **Discovery** ([`Runtimes::discover`]) scans the [`SearchPath`] and reads each
//!    library's embedded manifest by parsing the file — no `dlopen`, no plugin code. Each
//!    candidate goes through one admission pipeline ([`admission`]: file type, owner and mode,
//!    every folder above it, pins, manifest, runtime-api compatibility, ids) before anything
//!    is registered; every rejection and shadowing lands in a [`DiscoveryReport`] with a
//!    reason that says what to do. The checked file stays open and is what gets loaded.
//! 2. **Resolution** ([`Runtimes::resolve`]) by id or alias fails closed: an unknown name
//!    lists what is available and suggests the closest. The first resolve of a runtime loads
//!    its library (abi_stable's checks, then a cross-check against the manifest) and creates
//!    it. Libraries are never unloaded: abi_stable keeps them mapped for the life of the
//!    process, so install a new version as a new file and restart to use it.
//! 3. **Turns** go through a cheap, cloneable [`RuntimeHandle`]: `run_turn`, `stream_turn`,
//!    `cancel`, per-turn timeouts, capability checks, lifecycle hooks, a `tracing` span per
//!    turn. Plugin log events arrive in the host's subscriber with target
//!    [`PLUGIN_LOG_TARGET`].
//!
//! # Examples
//!
//! ```no_run
//! use futures::StreamExt;
//! use runtime_api::{StreamItem, TurnRequest};
//! use runtime_loader::{Runtimes, SearchPath};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let runtimes = Runtimes::new();
//! runtimes.discover(&SearchPath::standard(["./plugins"]));
//!
//! let echo = runtimes.resolve("echo")?;
//! let output = echo.run_turn(TurnRequest::new("hello there")).await?;
//! println!("{} ({} tokens)", output.content, output.usage.total_tokens);
//!
//! let mut stream = echo.stream_turn(TurnRequest::new("word by word"));
//! while let Some(item) = stream.next().await {
//!     match item? {
//!         StreamItem::Delta(delta) => print!("{}", delta.content),
//!         StreamItem::Done(output) => println!("\n[{}]", output.finish_reason),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

// Errors here carry structured reasons (paths, versions, what to do) and are returned on cold
// paths only; boxing them would make matching on them awkward for hosts.
#![allow(clippy::result_large_err)]
// The only unsafe code is the `dlopen` of a checked plugin file (`library.rs`: the `unsafe fn
// dlopen`, with its `# Safety`, and its two calls), allowed at those places.
#![deny(unsafe_code)]

pub use runtime_discovery::{admission, inspect, search_path};
mod discovery;
mod entry;
mod error;
mod execution_id;
mod handle;
mod hooks;
mod isolation;
mod library;
mod log_bridge;
mod names;
mod options;
mod permissions;
mod registry;
mod resolve;
#[cfg(feature = "tower")]
pub mod service;
mod upgrade;
mod worker;

pub use entry::{RuntimeEntry, RuntimeSource};
pub use error::{Available, RegistryError, ResolveError};
pub use handle::{RuntimeHandle, Turn, TurnStream};
pub use hooks::{TurnContext, TurnHook};
pub use isolation::{ISOLATION_ENV, Isolation, UnknownIsolation};
pub use log_bridge::PLUGIN_LOG_TARGET;
pub use options::LoaderOptions;
pub use registry::{Runtimes, Unregistered};
pub use resolve::FailedMark;
pub use runtime_discovery::{
    DirReport, DirStatus, DiscoveryReport, RejectReason, Rejection, Shadowed,
};
pub use runtime_discovery::{SearchPath, check_manifest, user_plugin_dir};
pub use runtime_process::{
    ProcessOptions, WORKER_ENV, WORKER_MEMORY_ENV, WORKER_NAME, WORKER_POOL_ENV, find_worker,
    sandbox,
};
pub use upgrade::{Rediscovered, RestartNeeded};
pub use worker::worker_main;

/// Refusing plugin files that someone else could have changed: `runtime_discovery::security`,
/// with [`LoaderOptions`].
pub mod security {
    pub use crate::LoaderOptions;
    pub use runtime_discovery::security::*;
}
