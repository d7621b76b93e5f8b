//! The stable-ABI interface between agent-runtime plugins and their hosts.
//!
//! An *agent runtime* executes one agent turn: a prompt and history in, an answer, usage
//! figures and a stream of typed deltas out. This crate is the contract both sides compile
//! against:
//!
//! - **for runtime authors**: implement [`Runtime`] in plain async Rust and call
//!   [`export_plugin!`] in a `cdylib` crate. No `unsafe`, no abi_stable types.
//! - **for hosts**: the public data types ([`TurnRequest`], [`TurnOutput`], [`Delta`],
//!   [`StreamItem`], [`RuntimeError`], …) and [`host::RemoteRuntime`]. Most hosts use the
//!   `runtime-loader` crate, which finds, checks and loads plugins.
//!
//! # What is frozen, and what may change
//!
//! The crate is laid out so that the frozen part is visible at a glance:
//!
//! | where | what | may change |
//! |---|---|---|
//! | the `runtime-contract` crate, re-exported here as [`abi`], [`manifest`], [`version`], [`ids`] and [`Capabilities`] | what crosses the boundary: the `#[repr(C)]` types and vtables, the embedded manifest, the compatibility rule, the id grammar, the capability bits | only with a new [contract version](version::CONTRACT_VERSION) (that crate's major version) |
//! | `src/convert.rs` | conversions between the public types and the frozen ones | in any release, as long as they round-trip |
//! | `src/types/` | the idiomatic public types hosts and authors use | in any release, as long as their wire codes (kind names, finish reasons, delta codes) keep their meaning |
//! | `src/plugin/` | plugin-side support: the [`Runtime`] trait, the glue the export macro generates, log forwarding, the plugin's tokio runtime | in any release |
//! | `src/host.rs` | the host side of a runtime object | in any release |
//!
//! # The boundary
//!
//! Everything that crosses between a plugin and its host is an abi_stable type (see
//! [`abi`]); no Rust-ABI type crosses. Futures are async-ffi `FfiFuture`s, streams are pull
//! streams polled with the host's waker (several items per poll), and JSON travels as text.
//! Every entry point the macro generates catches panics and returns them as
//! [`ErrorKind::Panicked`] errors. A library, once loaded, is never unloaded.
//!
//! # Compatibility
//!
//! The rule, stated once: a host loads a plugin when both were built for the same **contract
//! version** ([`version::CONTRACT_VERSION`]), whatever their runtime-api package versions. See
//! [`version`] for the reasons and [`version::check_contract`] for the check.
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

pub mod config;
mod convert;
mod handoff;
pub mod host;
mod plugin;
mod types;
pub mod version;

pub(crate) use plugin::{glue, logging};
pub use runtime_contract::{abi, ids, manifest};

pub use plugin::author::Runtime;
pub use plugin::logging::level_number;
pub use runtime_contract::capabilities::Capabilities;
pub use types::context::ExecutionContext;
pub use types::delta::{Delta, DeltaKind, StreamItem};
pub use types::error::{ErrorKind, RuntimeError};
pub use types::info::RuntimeInfo;
pub use types::output::{FinishReason, ToolCall, TurnOutput, Usage};
pub use types::request::{Message, Role, Sampling, ToolDefinition, TurnRequest};

/// Re-exports for a plugin author's convenience: the JSON value type used in configs and
/// metadata.
pub use serde_json::{Value, json};

/// What kind of JSON value this is, in words, for messages about a configuration or an
/// answer: `null`, `a boolean`, `a number`, `a string`, `an array`, `an object`.
pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Sets, inside `impl Runtime for …`, the configuration items of a runtime whose
/// configuration is a Rust type ([`config::TypedConfig`]): `CONFIG_SCHEMA` (the schema file,
/// compiled in), `validate_config` and `new`.
///
/// The argument is the schema file's path from the package's root (where `Cargo.toml` is),
/// conventionally `"config.schema.json"`, or a constant [`config::SchemaFile`] (made with
/// [`schema_file!`]) when a generic runtime takes its file from a type parameter.
///
/// The file must exist when the crate compiles: create it empty, and the test
/// [`export_plugin!`] generates writes the schema into it (then asks you to run the tests
/// again). The `typed-config` feature of runtime-api. See [`config`] for an example.
#[cfg(feature = "typed-config")]
#[macro_export]
macro_rules! typed_config {
    ($file:literal) => {
        $crate::typed_config!($crate::schema_file!($file));
    };
    ($file:expr) => {
        const CONFIG_SCHEMA: &'static str = $file.text;

        fn validate_config(config: &$crate::Value) -> ::std::vec::Vec<::std::string::String> {
            $crate::config::problems::<Self>(<Self as $crate::Runtime>::CONFIG_SCHEMA, config)
        }

        fn new(config: $crate::Value) -> ::core::result::Result<Self, $crate::RuntimeError> {
            $crate::config::build::<Self>(
                <Self as $crate::Runtime>::ID,
                <Self as $crate::Runtime>::CONFIG_SCHEMA,
                config,
            )
        }

        fn __config_schema_snapshot() -> ::core::option::Option<$crate::config::SchemaSnapshot> {
            ::core::option::Option::Some($crate::config::SchemaSnapshot {
                runtime: <Self as $crate::Runtime>::ID,
                path: $file.path,
                committed: <Self as $crate::Runtime>::CONFIG_SCHEMA,
                generate: $crate::config::schema_text::<
                    <Self as $crate::config::TypedConfig>::Config,
                >,
            })
        }
    };
}

/// A schema file of a typed configuration, as a constant [`config::SchemaFile`]: its text,
/// compiled in, and its path. The argument is the path from the package's root (where
/// `Cargo.toml` is).
///
/// ```ignore
/// const OPENAI: SchemaFile = runtime_api::schema_file!("openai.schema.json");
/// ```
#[cfg(feature = "typed-config")]
#[macro_export]
macro_rules! schema_file {
    ($file:literal) => {
        $crate::config::SchemaFile {
            text: ::core::include_str!(::core::concat!(
                ::core::env!("CARGO_MANIFEST_DIR"),
                "/",
                $file
            )),
            path: ::core::concat!(::core::env!("CARGO_MANIFEST_DIR"), "/", $file),
        }
    };
}

/// Items the export macro expands to. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::plugin::glue::{PluginDefinition, const_runtime, entry, root_module_loader};
    pub use abi_stable::library::{CheckTypeLayout, LibHeader};
}
