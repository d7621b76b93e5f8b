//! What actually crosses the boundary: ABI-stable mirrors of the public types, the runtime and
//! stream vtables, the log sink and the plugin's root module.
//!
//! Nothing here uses a Rust-ABI type: strings are `RString`/`RStr`, lists `RVec`, options
//! `ROption`, results `RResult`, futures async-ffi's `FfiFuture`, trait objects
//! `#[sabi_trait]` objects, and JSON travels as text (`""` for `null`). abi_stable checks the
//! layout of every one of these types when a host loads a plugin.
//!
//! Plugin authors never see this module: the `runtime_api::export_plugin!` macro
//! and the generated glue convert to and from it. Hosts use it through the loader.

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RArc, RBox, ROption, RResult, RStr, RString, RVec, Tuple2};
use abi_stable::{StableAbi, declare_root_module_statics, sabi_trait};
use async_ffi::{FfiContext, FfiFuture, FfiPoll};

use crate::capabilities::Capabilities;

/// `ToolCall` on the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiToolCall {
    /// See `ToolCall::id`.
    pub id: RString,
    /// See `ToolCall::name`.
    pub name: RString,
    /// See `ToolCall::arguments` (JSON text).
    pub arguments: RString,
}

/// `Message` on the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiMessage {
    /// See `Message::role`.
    pub role: RString,
    /// See `Message::content`.
    pub content: RString,
    /// See `Message::tool_call_id`.
    pub tool_call_id: ROption<RString>,
    /// See `Message::tool_calls`.
    pub tool_calls: RVec<AbiToolCall>,
}

/// `ToolDefinition` on the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiToolDefinition {
    /// See `ToolDefinition::name`.
    pub name: RString,
    /// See `ToolDefinition::description`.
    pub description: RString,
    /// See `ToolDefinition::parameters` (JSON text).
    pub parameters: RString,
}

/// `ExecutionContext` on the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiExecutionContext {
    /// See `ExecutionContext::agent_id`.
    pub agent_id: ROption<RString>,
    /// See `ExecutionContext::organization_id`.
    pub organization_id: ROption<RString>,
    /// See `ExecutionContext::user_id`.
    pub user_id: ROption<RString>,
    /// See `ExecutionContext::session_id`.
    pub session_id: ROption<RString>,
    /// See `ExecutionContext::environment` (key, value), sorted by key.
    pub environment: RVec<Tuple2<RString, RString>>,
}

/// `TurnRequest` on the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiTurnRequest {
    /// See `TurnRequest::prompt`.
    pub prompt: RString,
    /// See `TurnRequest::system`.
    pub system: ROption<RString>,
    /// See `TurnRequest::model`.
    pub model: ROption<RString>,
    /// See `TurnRequest::history`.
    pub history: RVec<AbiMessage>,
    /// See `TurnRequest::tools`.
    pub tools: RVec<AbiToolDefinition>,
    /// See `Sampling::max_tokens`.
    pub max_tokens: ROption<u32>,
    /// See `Sampling::temperature`.
    pub temperature: ROption<f64>,
    /// See `Sampling::stop`.
    pub stop: RVec<RString>,
    /// See `TurnRequest::config` (JSON text).
    pub config: RString,
    /// See `TurnRequest::execution_id`.
    pub execution_id: RString,
    /// See `TurnRequest::metadata` (JSON text).
    pub metadata: RString,
    /// See `TurnRequest::context`.
    pub context: AbiExecutionContext,
    /// See `TurnRequest::mcp_servers` (JSON text).
    pub mcp_servers: RString,
}

/// How the host asks a turn to run.
///
/// `flags` is a bit set so that a later release of the same contract can add requests an
/// older plugin ignores; unknown bits are ignored.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, Default)]
pub struct AbiTurnOptions {
    /// [`AbiTurnOptions::SPAWN`] and future bits.
    pub flags: u64,
    /// With [`AbiTurnOptions::SPAWN`], how many stream items may wait between the plugin's
    /// task and the host (backpressure); `0` for the plugin's default.
    pub channel_capacity: u32,
}

impl AbiTurnOptions {
    /// Run the turn as a task on the plugin's own runtime and hand its results to the host
    /// through a channel, so the host never polls plugin code (isolation level *threads*).
    /// Without it the plugin's future is polled on the host's task (level *inline*).
    pub const SPAWN: u64 = 1 << 0;

    /// Options for the inline level.
    pub const INLINE: Self = Self {
        flags: 0,
        channel_capacity: 0,
    };

    /// Options for the threads level.
    pub const SPAWNED: Self = Self {
        flags: Self::SPAWN,
        channel_capacity: 0,
    };

    /// Whether the turn runs as a task on the plugin's runtime.
    pub const fn spawned(self) -> bool {
        self.flags & Self::SPAWN != 0
    }
}

/// `Usage` on the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, Default)]
pub struct AbiUsage {
    /// See `Usage::input_tokens`.
    pub input_tokens: u64,
    /// See `Usage::output_tokens`.
    pub output_tokens: u64,
    /// See `Usage::total_tokens`.
    pub total_tokens: u64,
    /// See `Usage::cache_read_tokens`.
    pub cache_read_tokens: u64,
    /// See `Usage::cache_write_tokens`.
    pub cache_write_tokens: u64,
    /// See `Usage::reasoning_tokens`.
    pub reasoning_tokens: u64,
}

/// `TurnOutput` on the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiTurnOutput {
    /// See `TurnOutput::content`.
    pub content: RString,
    /// See `TurnOutput::tool_calls`.
    pub tool_calls: RVec<AbiToolCall>,
    /// See `TurnOutput::usage`.
    pub usage: AbiUsage,
    /// See `TurnOutput::finish_reason`: its code (`FinishReason::code`).
    pub finish_reason: u32,
    /// The reason's text when its code is `0` (another reason); empty otherwise, so the usual
    /// reasons cost no allocation.
    pub finish_reason_text: RString,
    /// See `TurnOutput::metadata` (JSON text).
    pub metadata: RString,
}

/// `Delta` on the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiDelta {
    /// `DeltaKind::code`.
    pub kind: u32,
    /// See `Delta::content`.
    pub content: RString,
    /// See `Delta::metadata` (JSON text).
    pub metadata: RString,
}

/// `StreamItem` on the boundary.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone)]
pub enum AbiStreamItem {
    /// A delta.
    Delta(AbiDelta),
    /// The final result.
    Done(AbiTurnOutput),
}

/// `RuntimeError` on the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiRuntimeError {
    /// See `RuntimeError::kind` (its wire name).
    pub kind: RString,
    /// See `RuntimeError::message`.
    pub message: RString,
    /// See `RuntimeError::retriable`.
    pub retriable: bool,
    /// See `RuntimeError::metadata` (JSON text).
    pub metadata: RString,
}

/// `RuntimeInfo` on the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiRuntimeInfo {
    /// See `RuntimeInfo::id`.
    pub id: RString,
    /// See `RuntimeInfo::display_name`.
    pub display_name: RString,
    /// See `RuntimeInfo::description`.
    pub description: RString,
    /// See `RuntimeInfo::version`.
    pub version: RString,
    /// See `RuntimeInfo::capabilities`.
    pub capabilities: Capabilities,
    /// See `RuntimeInfo::metadata` (JSON text).
    pub metadata: RString,
}

/// A runtime object on the boundary: what a runtime entry's factory returns.
///
/// The vtable is a prefix type; see the crate docs for what may change within a series.
#[sabi_trait]
pub trait AbiRuntime: Send + Sync {
    /// See `Runtime::info`.
    fn info(&self) -> RResult<AbiRuntimeInfo, AbiRuntimeError>;

    /// See `Runtime::supports`.
    fn supports(&self, model: RStr<'_>) -> RResult<bool, AbiRuntimeError>;

    /// Starts a turn. The turn is registered for `cancel` before this returns; the future
    /// owns everything it needs, and dropping it cancels the turn.
    fn run_turn(
        &self,
        request: AbiTurnRequest,
        options: AbiTurnOptions,
    ) -> FfiFuture<RResult<AbiTurnOutput, AbiRuntimeError>>;

    /// Starts a streamed turn, registered for `cancel` before this returns; dropping the
    /// stream cancels the turn.
    fn stream_turn(
        &self,
        request: AbiTurnRequest,
        options: AbiTurnOptions,
    ) -> RResult<AbiTurnStream, AbiRuntimeError>;

    /// Cancels the running turns with this execution id; `true` if there was one.
    fn cancel(&self, execution_id: RStr<'_>) -> RResult<bool, AbiRuntimeError>;

    /// Checks that the runtime can serve turns; `Ok` carries a short status text.
    fn health(&self) -> FfiFuture<RResult<RString, AbiRuntimeError>>;

    /// A named call added within a contract without changing this vtable: `name` says what
    /// is asked, `payload` and the answer are JSON text. A runtime that does not know `name`
    /// answers with an `unsupported` error.
    #[sabi(last_prefix_field)]
    fn extension(
        &self,
        name: RStr<'_>,
        payload: RStr<'_>,
    ) -> FfiFuture<RResult<RString, AbiRuntimeError>>;
}

/// An owned runtime object.
pub type AbiRuntimeBox = AbiRuntime_TO<'static, RBox<()>>;

/// One item of a stream on the boundary: an item, or a terminal error.
pub type AbiStreamResult = RResult<AbiStreamItem, AbiRuntimeError>;

/// A streamed turn on the boundary: a pull stream, polled by the host with its waker, that
/// hands over every item ready at once (up to a limit) so a fast stream crosses the boundary
/// once per batch rather than once per delta.
#[sabi_trait]
pub trait AbiDeltaStream: Send {
    /// Appends up to `max` ready items to `out` (at least one when it returns `Ready`, unless
    /// the stream has ended). `Ready(true)`: the stream has ended and nothing follows what was
    /// appended; `Ready(false)`: more may follow; `Pending`: nothing is ready, and the waker
    /// will be woken. An `RErr` item is terminal.
    #[sabi(last_prefix_field)]
    fn poll_batch(
        &mut self,
        cx: &mut FfiContext<'_>,
        out: &mut RVec<AbiStreamResult>,
        max: u32,
    ) -> FfiPoll<bool>;
}

/// An owned stream object.
pub type AbiTurnStream = AbiDeltaStream_TO<'static, RBox<()>>;

/// One runtime a plugin library carries, as its root module lists it.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct AbiRuntimeEntry {
    /// The runtime's id.
    pub id: RString,
    /// A name for people.
    pub display_name: RString,
    /// What it is for.
    pub description: RString,
    /// Other names it answers to.
    pub aliases: RVec<RString>,
    /// What it can do.
    pub capabilities: Capabilities,
    /// The JSON Schema of its configuration, as text; `""` when it declares none.
    pub config_schema: RString,
    /// Every problem with a configuration (JSON text, `""` for none), without building a
    /// runtime object; empty when it is valid.
    pub validate_config: extern "C" fn(config: RStr<'_>) -> RResult<RVec<RString>, AbiRuntimeError>,
    /// Builds a runtime object from a configuration (JSON text, `""` for none). The plugin's
    /// tokio runtime is not entered (and not started) here.
    pub factory: extern "C" fn(config: RStr<'_>) -> RResult<AbiRuntimeBox, AbiRuntimeError>,
}

/// One log event from a plugin, as it crosses to the host.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct AbiLogRecord<'a> {
    /// 1 error, 2 warn, 3 info, 4 debug, 5 trace.
    pub level: u8,
    /// The event's target (usually the module path inside the plugin).
    pub target: RStr<'a>,
    /// The formatted `message` field.
    pub message: RStr<'a>,
    /// The other fields, as a JSON object (text), or `""`.
    pub fields: RStr<'a>,
    /// The id of the runtime whose code emitted it, or `""` outside a runtime call.
    pub runtime_id: RStr<'a>,
    /// The execution id of the turn whose code emitted it, or `""` outside a turn.
    pub execution_id: RStr<'a>,
    /// The source file, or `""`.
    pub file: RStr<'a>,
    /// The source line, or 0.
    pub line: u32,
}

/// Where a plugin sends its log events: implemented by the host.
#[sabi_trait]
pub trait AbiLogSink: Send + Sync {
    /// The most verbose level the host wants (0 none, 5 trace).
    fn max_level(&self) -> u8;

    /// Receives one event.
    #[sabi(last_prefix_field)]
    fn log(&self, record: &AbiLogRecord<'_>);
}

/// A shared log sink object.
pub type AbiLogSinkBox = AbiLogSink_TO<'static, RArc<()>>;

/// The root module every plugin library exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// The plugin contract the library was built for.
    pub contract: u32,
    /// The runtime-api package version the plugin was built against.
    pub api_version: RStr<'static>,
    /// The plugin package's name.
    pub plugin_name: RStr<'static>,
    /// The plugin package's version.
    pub plugin_version: RStr<'static>,
    /// Lists the runtimes the library carries.
    pub runtimes: extern "C" fn() -> RResult<RVec<AbiRuntimeEntry>, AbiRuntimeError>,
    /// Installs the host's log sink; the plugin's `tracing` events go there from then on.
    #[sabi(last_prefix_field)]
    pub install_log_sink: extern "C" fn(sink: AbiLogSinkBox),
}

impl std::fmt::Debug for PluginModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginModule")
            .field("contract", &self.contract)
            .field("api_version", &self.api_version)
            .field("plugin_name", &self.plugin_name)
            .field("plugin_version", &self.plugin_version)
            .finish_non_exhaustive()
    }
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "agent_runtimes_plugin";
    const NAME: &'static str = "agent_runtimes_plugin";
    // abi_stable's own version check runs on the contract, not on the package version.
    const VERSION_STRINGS: VersionStrings =
        VersionStrings::new(crate::version::CONTRACT_VERSION_STRINGS);
}
