//! The stable-ABI interface between agent-runtime plugins and their hosts.
//!
//! An *agent runtime* executes one agent turn: a prompt and history in, an answer, usage
//! figures and a stream of typed deltas out. This crate is the small, rarely changing contract
//! both sides compile against:
//!
//! - **for runtime authors**: implement [`Runtime`] in plain async Rust and call
//!   [`export_plugin!`] in a `cdylib` crate. No `unsafe`, no abi_stable types.
//! - **for hosts**: the public data types ([`TurnRequest`], [`TurnOutput`], [`Delta`],
//!   [`StreamItem`], [`RuntimeError`], …) and [`host::RemoteRuntime`]. Most hosts use the
//!   `runtime-loader` crate, which finds, checks and loads plugins.
//!
//! # The boundary
//!
//! Everything that crosses between a plugin and its host is an abi_stable type (see
//! [`abi`]); no Rust-ABI type crosses. Futures are async-ffi `FfiFuture`s, streams are pull
//! streams polled with the host's waker, and JSON travels as text. Every entry point the macro
//! generates catches panics and returns them as [`ErrorKind::Panicked`] errors. A library, once
//! loaded, is never unloaded.
//!
//! # Compatibility
//!
//! The rule, stated once: a host built against runtime-api `H` loads a plugin built against
//! `P` when both are in the same series (same major, or same `0.minor`) and `P` is not newer
//! than `H`. See [`version`] for the reasons and [`version::check_compatible`] for the check.
//!
//! # Example plugin
//!
//! ```
//! use runtime_api::{Runtime, RuntimeError, TurnOutput, TurnRequest};
//!
//! pub struct Echo;
//!
//! impl Runtime for Echo {
//!     const ID: &'static str = "tiny-echo";
//!
//!     fn new(_config: serde_json::Value) -> Result<Self, RuntimeError> {
//!         Ok(Echo)
//!     }
//!
//!     async fn run_turn(&self, request: TurnRequest) -> Result<TurnOutput, RuntimeError> {
//!         Ok(TurnOutput::new(request.prompt))
//!     }
//! }
//!
//! runtime_api::export_plugin!(Echo);
//! # fn main() {}
//! ```

pub mod abi;
mod author;
mod capabilities;
mod delta;
mod error;
mod export;
mod glue;
pub mod host;
pub mod ids;
mod info;
mod logging;
pub mod manifest;
mod output;
pub mod plugin_runtime;
mod request;
pub mod version;

pub use author::Runtime;
pub use capabilities::Capabilities;
pub use delta::{Delta, DeltaKind, StreamItem};
pub use error::{ErrorKind, RuntimeError};
pub use info::RuntimeInfo;
pub use logging::level_number;
pub use output::{FinishReason, ToolCall, TurnOutput, Usage};
pub use request::{Message, Role, Sampling, ToolDefinition, TurnRequest};

/// Re-exports for a plugin author's convenience: the JSON value type used in configs and
/// metadata.
pub use serde_json::{Value, json};

/// Items the export macro expands to. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::glue::{PluginDefinition, const_runtime, entry, root_module_loader};
    pub use abi_stable::library::{CheckTypeLayout, LibHeader};
}
