//! The trait a runtime author implements, in plain async Rust.

use std::future::Future;
use std::sync::Arc;

use futures::Stream;
use futures::stream::{self, StreamExt};
use serde_json::Value;

use crate::{Capabilities, Delta, RuntimeError, RuntimeInfo, StreamItem, TurnOutput, TurnRequest};

/// An agent runtime: one turn in, an answer (or a stream of deltas) out.
///
/// Implement it, then export it with [`export_plugin!`](crate::export_plugin). The macro
/// writes the manifest from the constants below, and the generated glue catches every panic,
/// runs your futures inside the plugin's own tokio runtime (so `tokio::time`, `tokio::net` and
/// reqwest just work), makes every turn cancellable by its execution id, and forwards your
/// `tracing` events to the host.
///
/// # Examples
///
/// ```
/// use runtime_api::{Capabilities, Runtime, RuntimeError, TurnOutput, TurnRequest};
///
/// struct Shout;
///
/// impl Runtime for Shout {
///     const ID: &'static str = "shout";
///     const DESCRIPTION: &'static str = "Answers in capitals.";
///
///     fn new(_config: serde_json::Value) -> Result<Self, RuntimeError> {
///         Ok(Shout)
///     }
///
///     async fn run_turn(&self, request: TurnRequest) -> Result<TurnOutput, RuntimeError> {
///         Ok(TurnOutput::new(request.prompt.to_uppercase()))
///     }
/// }
/// // In a `cdylib` crate: runtime_api::export_plugin!(Shout);
/// ```
pub trait Runtime: Send + Sync + Sized + 'static {
    /// The runtime's id: lower-case `[a-z0-9][a-z0-9._-]{0,63}`, checked at compile time.
    const ID: &'static str;
    /// A name for people.
    const DISPLAY_NAME: &'static str = Self::ID;
    /// What it is for, in a sentence.
    const DESCRIPTION: &'static str = "";
    /// Other names it answers to (same grammar as the id).
    const ALIASES: &'static [&'static str] = &[];
    /// What it can do. Declare [`Capabilities::STREAMING`] only if `stream_turn` really
    /// streams: hosts refuse to stream a runtime that does not declare it.
    /// [`Capabilities::CANCELLATION`] is added by the glue, which makes every turn
    /// cancellable.
    const CAPABILITIES: Capabilities = Capabilities::NONE;
    /// The JSON Schema of the configuration `new` accepts, as text (keys, types, required
    /// ones, defaults, a `description` each); `""` for none. It is written into the manifest,
    /// so hosts show it without loading the library (`runtimes info <id>`).
    ///
    /// With a typed configuration ([`crate::config`], the `typed-config` feature),
    /// [`typed_config!`](crate::typed_config) sets it, with `validate_config` and `new`.
    const CONFIG_SCHEMA: &'static str = "";
    /// What the runtime needs from the sandbox at the *process* level, as JSON text, written
    /// into the manifest; `""` (the default) declares nothing, and nothing is granted. Keys,
    /// all optional: `net` (`"none"`, `"any"`, or a list of `"host:port"` / URLs), `read`,
    /// `write` and `run` (lists of paths), `env` (variable names). Values may use
    /// `{plugin_dir}` (the plugin's folder), `{tmp}` (a private temporary folder of the runtime's own, its worker's `TMPDIR`) and
    /// `{config:KEY}` (a string of the configuration; `a.*.b` for every entry of a map or
    /// list): for example `{"net": ["{config:base_url}"]}`. Operators widen or narrow it.
    const PERMISSIONS: &'static str = "";

    /// Every problem with a configuration, at once; empty when it is valid. Called without
    /// an instance (hosts check a configuration before building a runtime with it), and by
    /// the glue before [`Runtime::new`]: `new` only sees configurations that passed.
    fn validate_config(_config: &Value) -> Vec<String> {
        Vec::new()
    }

    /// Builds the runtime from its configuration (`null` when none was given), after
    /// [`Runtime::validate_config`] found no problem.
    ///
    /// `new` runs outside the plugin's tokio runtime, which starts with the first turn, so an
    /// idle plugin costs no thread: build clients and state here, and spawn tasks or open
    /// connections in the first turn.
    ///
    /// # Errors
    ///
    /// A [`RuntimeError`], usually of kind `invalid_config`.
    fn new(config: Value) -> Result<Self, RuntimeError>;

    /// Runs one turn.
    ///
    /// # Errors
    ///
    /// A [`RuntimeError`] saying what failed.
    fn run_turn(
        &self,
        request: TurnRequest,
    ) -> impl Future<Output = Result<TurnOutput, RuntimeError>> + Send;

    /// Runs one turn as a stream: deltas, then exactly one [`StreamItem::Done`].
    ///
    /// The text deltas concatenated must equal the final content. The default runs
    /// [`Runtime::run_turn`] and yields its content as one text delta; such a runtime should
    /// not declare [`Capabilities::STREAMING`].
    fn stream_turn(
        self: Arc<Self>,
        request: TurnRequest,
    ) -> impl Stream<Item = Result<StreamItem, RuntimeError>> + Send + 'static {
        stream::once(async move { self.run_turn(request).await }).flat_map(|result| {
            let items = match result {
                Ok(output) => vec![
                    Ok(StreamItem::Delta(Delta::text(output.content.clone()))),
                    Ok(StreamItem::Done(output)),
                ],
                Err(error) => vec![Err(error)],
            };
            stream::iter(items)
        })
    }

    /// Whether the runtime can serve this model reference.
    fn supports(&self, _model: &str) -> bool {
        true
    }

    /// Called when the host cancels the turns with this execution id, after the glue has
    /// already ended them. Override to release outside resources; return whether you did.
    fn cancel(&self, _execution_id: &str) -> bool {
        false
    }

    /// Checks that the runtime can serve turns.
    ///
    /// # Errors
    ///
    /// A [`RuntimeError`] saying why it cannot.
    fn health(&self) -> impl Future<Output = Result<String, RuntimeError>> + Send {
        async { Ok("ok".to_owned()) }
    }

    /// A named call added within a contract (see [`crate::version`]); `payload` and the
    /// answer are JSON. The default answers `unsupported`.
    ///
    /// # Errors
    ///
    /// `unsupported` for a name the runtime does not know, or the call's own error.
    fn extension(
        &self,
        name: &str,
        _payload: Value,
    ) -> impl Future<Output = Result<Value, RuntimeError>> + Send {
        let error = RuntimeError::unsupported(format!(
            "runtime `{}` has no extension call named `{name}`",
            Self::ID
        ));
        async move { Err(error) }
    }

    /// Where the schema file of a typed configuration is, for the test
    /// [`export_plugin!`](crate::export_plugin) generates; set by
    /// [`typed_config!`](crate::typed_config). Not part of the API.
    #[doc(hidden)]
    fn __config_schema_snapshot() -> Option<crate::config::SchemaSnapshot> {
        None
    }

    /// What the runtime says about itself; by default its constants.
    fn info(&self) -> RuntimeInfo {
        RuntimeInfo {
            id: Self::ID.to_owned(),
            display_name: Self::DISPLAY_NAME.to_owned(),
            description: Self::DESCRIPTION.to_owned(),
            version: String::new(),
            capabilities: Self::CAPABILITIES,
            metadata: Value::Null,
        }
    }
}
