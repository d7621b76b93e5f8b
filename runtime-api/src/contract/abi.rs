//! What actually crosses the boundary: ABI-stable mirrors of the public types, the runtime and
//! stream vtables, the log sink and the plugin's root module.
//!
//! Nothing here uses a Rust-ABI type: strings are `RString`/`RStr`, lists `RVec`, options
//! `ROption`, results `RResult`, futures async-ffi's `FfiFuture`, trait objects
//! `#[sabi_trait]` objects, and JSON travels as text (`""` for `null`). abi_stable checks the
//! layout of every one of these types when a host loads a plugin.
//!
//! Plugin authors never see this module: the [`export_plugin!`](crate::export_plugin) macro
//! and the generated glue convert to and from it. Hosts use it through the loader.

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RArc, RBox, ROption, RResult, RStr, RString, RVec, Tuple2};
use abi_stable::{StableAbi, declare_root_module_statics, sabi_trait};
use async_ffi::{FfiContext, FfiFuture, FfiPoll};
use serde_json::Value;

use crate::{
    Capabilities, Delta, DeltaKind, ErrorKind, ExecutionContext, FinishReason, Message, Role,
    RuntimeError, RuntimeInfo, Sampling, StreamItem, ToolCall, ToolDefinition, TurnOutput,
    TurnRequest, Usage,
};

/// JSON on the boundary: `null` travels as the empty string.
pub(crate) fn json_to_abi(value: &Value) -> RString {
    if value.is_null() {
        RString::new()
    } else {
        RString::from(value.to_string())
    }
}

/// JSON from the boundary: the empty string is `null`; text that is not JSON becomes a JSON
/// string rather than an error, so nothing is lost.
pub(crate) fn json_from_abi(text: RString) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    match serde_json::from_str(&text) {
        Ok(value) => value,
        Err(_) => Value::String(text.into_string()),
    }
}

fn opt_to_abi(value: Option<String>) -> ROption<RString> {
    value.map(RString::from).into()
}

fn opt_from_abi(value: ROption<RString>) -> Option<String> {
    value.into_option().map(RString::into_string)
}

fn strings_to_abi(values: Vec<String>) -> RVec<RString> {
    values.into_iter().map(RString::from).collect()
}

fn strings_from_abi(values: RVec<RString>) -> Vec<String> {
    values.into_iter().map(RString::into_string).collect()
}

/// [`ToolCall`] on the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiToolCall {
    /// See [`ToolCall::id`].
    pub id: RString,
    /// See [`ToolCall::name`].
    pub name: RString,
    /// See [`ToolCall::arguments`] (JSON text).
    pub arguments: RString,
}

/// [`Message`] on the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiMessage {
    /// See [`Message::role`].
    pub role: RString,
    /// See [`Message::content`].
    pub content: RString,
    /// See [`Message::tool_call_id`].
    pub tool_call_id: ROption<RString>,
    /// See [`Message::tool_calls`].
    pub tool_calls: RVec<AbiToolCall>,
}

/// [`ToolDefinition`] on the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiToolDefinition {
    /// See [`ToolDefinition::name`].
    pub name: RString,
    /// See [`ToolDefinition::description`].
    pub description: RString,
    /// See [`ToolDefinition::parameters`] (JSON text).
    pub parameters: RString,
}

/// [`ExecutionContext`] on the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiExecutionContext {
    /// See [`ExecutionContext::agent_id`].
    pub agent_id: ROption<RString>,
    /// See [`ExecutionContext::organization_id`].
    pub organization_id: ROption<RString>,
    /// See [`ExecutionContext::user_id`].
    pub user_id: ROption<RString>,
    /// See [`ExecutionContext::session_id`].
    pub session_id: ROption<RString>,
    /// See [`ExecutionContext::environment`] (key, value), sorted by key.
    pub environment: RVec<Tuple2<RString, RString>>,
}

/// [`TurnRequest`] on the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiTurnRequest {
    /// See [`TurnRequest::prompt`].
    pub prompt: RString,
    /// See [`TurnRequest::system`].
    pub system: ROption<RString>,
    /// See [`TurnRequest::model`].
    pub model: ROption<RString>,
    /// See [`TurnRequest::history`].
    pub history: RVec<AbiMessage>,
    /// See [`TurnRequest::tools`].
    pub tools: RVec<AbiToolDefinition>,
    /// See [`Sampling::max_tokens`].
    pub max_tokens: ROption<u32>,
    /// See [`Sampling::temperature`].
    pub temperature: ROption<f64>,
    /// See [`Sampling::stop`].
    pub stop: RVec<RString>,
    /// See [`TurnRequest::config`] (JSON text).
    pub config: RString,
    /// See [`TurnRequest::execution_id`].
    pub execution_id: RString,
    /// See [`TurnRequest::metadata`] (JSON text).
    pub metadata: RString,
    /// See [`TurnRequest::context`].
    pub context: AbiExecutionContext,
    /// See [`TurnRequest::mcp_servers`] (JSON text).
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

/// [`Usage`] on the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, Default)]
pub struct AbiUsage {
    /// See [`Usage::input_tokens`].
    pub input_tokens: u64,
    /// See [`Usage::output_tokens`].
    pub output_tokens: u64,
    /// See [`Usage::total_tokens`].
    pub total_tokens: u64,
    /// See [`Usage::cache_read_tokens`].
    pub cache_read_tokens: u64,
    /// See [`Usage::cache_write_tokens`].
    pub cache_write_tokens: u64,
    /// See [`Usage::reasoning_tokens`].
    pub reasoning_tokens: u64,
}

/// [`TurnOutput`] on the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiTurnOutput {
    /// See [`TurnOutput::content`].
    pub content: RString,
    /// See [`TurnOutput::tool_calls`].
    pub tool_calls: RVec<AbiToolCall>,
    /// See [`TurnOutput::usage`].
    pub usage: AbiUsage,
    /// See [`TurnOutput::finish_reason`] (its wire name).
    pub finish_reason: RString,
    /// See [`TurnOutput::metadata`] (JSON text).
    pub metadata: RString,
}

/// [`Delta`] on the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiDelta {
    /// [`DeltaKind::code`].
    pub kind: u32,
    /// See [`Delta::content`].
    pub content: RString,
    /// See [`Delta::metadata`] (JSON text).
    pub metadata: RString,
}

/// [`StreamItem`] on the boundary.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone)]
pub enum AbiStreamItem {
    /// A delta.
    Delta(AbiDelta),
    /// The final result.
    Done(AbiTurnOutput),
}

/// [`RuntimeError`] on the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiRuntimeError {
    /// See [`RuntimeError::kind`] (its wire name).
    pub kind: RString,
    /// See [`RuntimeError::message`].
    pub message: RString,
    /// See [`RuntimeError::retriable`].
    pub retriable: bool,
    /// See [`RuntimeError::metadata`] (JSON text).
    pub metadata: RString,
}

/// [`RuntimeInfo`] on the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct AbiRuntimeInfo {
    /// See [`RuntimeInfo::id`].
    pub id: RString,
    /// See [`RuntimeInfo::display_name`].
    pub display_name: RString,
    /// See [`RuntimeInfo::description`].
    pub description: RString,
    /// See [`RuntimeInfo::version`].
    pub version: RString,
    /// See [`RuntimeInfo::capabilities`].
    pub capabilities: Capabilities,
    /// See [`RuntimeInfo::metadata`] (JSON text).
    pub metadata: RString,
}

/// A runtime object on the boundary: what a runtime entry's factory returns.
///
/// The vtable is a prefix type; see the crate docs for what may change within a series.
#[sabi_trait]
pub trait AbiRuntime: Send + Sync {
    /// See [`crate::Runtime::info`].
    fn info(&self) -> RResult<AbiRuntimeInfo, AbiRuntimeError>;

    /// See [`crate::Runtime::supports`].
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

// ---- conversions ---------------------------------------------------------------------------

impl From<ToolCall> for AbiToolCall {
    fn from(call: ToolCall) -> Self {
        Self {
            id: call.id.into(),
            name: call.name.into(),
            arguments: json_to_abi(&call.arguments),
        }
    }
}

impl From<AbiToolCall> for ToolCall {
    fn from(call: AbiToolCall) -> Self {
        ToolCall::new(call.id, call.name, json_from_abi(call.arguments))
    }
}

impl From<Message> for AbiMessage {
    fn from(message: Message) -> Self {
        Self {
            role: String::from(message.role).into(),
            content: message.content.into(),
            tool_call_id: opt_to_abi(message.tool_call_id),
            tool_calls: message.tool_calls.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<AbiMessage> for Message {
    fn from(message: AbiMessage) -> Self {
        let mut out = Message::new(Role::from(message.role.into_string()), message.content);
        out.tool_call_id = opt_from_abi(message.tool_call_id);
        out.tool_calls = message.tool_calls.into_iter().map(Into::into).collect();
        out
    }
}

impl From<ToolDefinition> for AbiToolDefinition {
    fn from(tool: ToolDefinition) -> Self {
        Self {
            name: tool.name.into(),
            description: tool.description.into(),
            parameters: json_to_abi(&tool.parameters),
        }
    }
}

impl From<AbiToolDefinition> for ToolDefinition {
    fn from(tool: AbiToolDefinition) -> Self {
        ToolDefinition::new(tool.name, tool.description, json_from_abi(tool.parameters))
    }
}

impl From<TurnRequest> for AbiTurnRequest {
    fn from(request: TurnRequest) -> Self {
        Self {
            prompt: request.prompt.into(),
            system: opt_to_abi(request.system),
            model: opt_to_abi(request.model),
            history: request.history.into_iter().map(Into::into).collect(),
            tools: request.tools.into_iter().map(Into::into).collect(),
            max_tokens: request.sampling.max_tokens.into(),
            temperature: request.sampling.temperature.into(),
            stop: strings_to_abi(request.sampling.stop),
            config: json_to_abi(&request.config),
            execution_id: request.execution_id.into(),
            metadata: json_to_abi(&request.metadata),
            context: request.context.into(),
            mcp_servers: json_to_abi(&request.mcp_servers),
        }
    }
}

impl From<ExecutionContext> for AbiExecutionContext {
    fn from(context: ExecutionContext) -> Self {
        Self {
            agent_id: opt_to_abi(context.agent_id),
            organization_id: opt_to_abi(context.organization_id),
            user_id: opt_to_abi(context.user_id),
            session_id: opt_to_abi(context.session_id),
            environment: context
                .environment
                .into_iter()
                .map(|(k, v)| Tuple2(k.into(), v.into()))
                .collect(),
        }
    }
}

impl From<AbiExecutionContext> for ExecutionContext {
    fn from(context: AbiExecutionContext) -> Self {
        ExecutionContext {
            agent_id: opt_from_abi(context.agent_id),
            organization_id: opt_from_abi(context.organization_id),
            user_id: opt_from_abi(context.user_id),
            session_id: opt_from_abi(context.session_id),
            environment: context
                .environment
                .into_iter()
                .map(|Tuple2(k, v)| (k.into_string(), v.into_string()))
                .collect(),
        }
    }
}

impl From<AbiTurnRequest> for TurnRequest {
    fn from(request: AbiTurnRequest) -> Self {
        let sampling = Sampling {
            max_tokens: request.max_tokens.into_option(),
            temperature: request.temperature.into_option(),
            stop: strings_from_abi(request.stop),
        };
        let mut out = TurnRequest::new(request.prompt);
        out.system = opt_from_abi(request.system);
        out.model = opt_from_abi(request.model);
        out.history = request.history.into_iter().map(Into::into).collect();
        out.tools = request.tools.into_iter().map(Into::into).collect();
        out.sampling = sampling;
        out.config = json_from_abi(request.config);
        out.execution_id = request.execution_id.into_string();
        out.metadata = json_from_abi(request.metadata);
        out.context = request.context.into();
        out.mcp_servers = json_from_abi(request.mcp_servers);
        out
    }
}

impl From<Usage> for AbiUsage {
    fn from(usage: Usage) -> Self {
        Self {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            total_tokens: usage.total_tokens,
            cache_read_tokens: usage.cache_read_tokens,
            cache_write_tokens: usage.cache_write_tokens,
            reasoning_tokens: usage.reasoning_tokens,
        }
    }
}

impl From<AbiUsage> for Usage {
    fn from(usage: AbiUsage) -> Self {
        Usage {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            total_tokens: usage.total_tokens,
            cache_read_tokens: usage.cache_read_tokens,
            cache_write_tokens: usage.cache_write_tokens,
            reasoning_tokens: usage.reasoning_tokens,
        }
    }
}

impl From<TurnOutput> for AbiTurnOutput {
    fn from(output: TurnOutput) -> Self {
        Self {
            content: output.content.into(),
            tool_calls: output.tool_calls.into_iter().map(Into::into).collect(),
            usage: output.usage.into(),
            finish_reason: String::from(output.finish_reason).into(),
            metadata: json_to_abi(&output.metadata),
        }
    }
}

impl From<AbiTurnOutput> for TurnOutput {
    fn from(output: AbiTurnOutput) -> Self {
        TurnOutput::new(output.content)
            .with_tool_calls(output.tool_calls.into_iter().map(Into::into).collect())
            .with_usage(output.usage.into())
            .with_finish_reason(FinishReason::from(output.finish_reason.into_string()))
            .with_metadata(json_from_abi(output.metadata))
    }
}

impl From<Delta> for AbiDelta {
    fn from(delta: Delta) -> Self {
        Self {
            kind: delta.kind.code(),
            content: delta.content.into(),
            metadata: json_to_abi(&delta.metadata),
        }
    }
}

impl From<AbiDelta> for Delta {
    fn from(delta: AbiDelta) -> Self {
        Delta::new(DeltaKind::from_code(delta.kind), delta.content)
            .with_metadata(json_from_abi(delta.metadata))
    }
}

impl From<StreamItem> for AbiStreamItem {
    fn from(item: StreamItem) -> Self {
        match item {
            StreamItem::Delta(delta) => AbiStreamItem::Delta(delta.into()),
            StreamItem::Done(output) => AbiStreamItem::Done(output.into()),
        }
    }
}

impl From<AbiStreamItem> for StreamItem {
    fn from(item: AbiStreamItem) -> Self {
        match item {
            AbiStreamItem::Delta(delta) => StreamItem::Delta(delta.into()),
            AbiStreamItem::Done(output) => StreamItem::Done(output.into()),
        }
    }
}

impl From<RuntimeError> for AbiRuntimeError {
    fn from(error: RuntimeError) -> Self {
        Self {
            kind: String::from(error.kind).into(),
            message: error.message.into(),
            retriable: error.retriable,
            metadata: json_to_abi(&error.metadata),
        }
    }
}

impl From<AbiRuntimeError> for RuntimeError {
    fn from(error: AbiRuntimeError) -> Self {
        RuntimeError::new(ErrorKind::from(error.kind.into_string()), error.message)
            .with_retriable(error.retriable)
            .with_metadata(json_from_abi(error.metadata))
    }
}

impl From<RuntimeInfo> for AbiRuntimeInfo {
    fn from(info: RuntimeInfo) -> Self {
        Self {
            id: info.id.into(),
            display_name: info.display_name.into(),
            description: info.description.into(),
            version: info.version.into(),
            capabilities: info.capabilities,
            metadata: json_to_abi(&info.metadata),
        }
    }
}

impl From<AbiRuntimeInfo> for RuntimeInfo {
    fn from(info: AbiRuntimeInfo) -> Self {
        RuntimeInfo {
            id: info.id.into_string(),
            display_name: info.display_name.into_string(),
            description: info.description.into_string(),
            version: info.version.into_string(),
            capabilities: info.capabilities,
            metadata: json_from_abi(info.metadata),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn round_trip<T, A>(value: T) -> T
    where
        T: Clone + Into<A>,
        A: Into<T>,
    {
        let abi: A = value.into();
        abi.into()
    }

    #[test]
    fn request_round_trips() {
        let request = TurnRequest::new("hello")
            .with_system("be brief")
            .with_model("tiny")
            .with_history(vec![
                Message::user("hi"),
                Message::assistant_tool_calls(vec![ToolCall::new(
                    "call_1",
                    "lookup",
                    json!({"q": "x"}),
                )]),
                Message::tool_result("call_1", "42"),
                Message::new(Role::Other("critic".into()), "hmm"),
            ])
            .with_tools(vec![ToolDefinition::new(
                "lookup",
                "looks things up",
                json!({"type": "object"}),
            )])
            .with_max_tokens(10)
            .with_temperature(0.5)
            .with_config(json!({"delay_ms": 3}))
            .with_execution_id("exec-1")
            .with_metadata(json!({"trace": [1, 2]}))
            .with_context(
                ExecutionContext::default()
                    .with_agent_id("a")
                    .with_organization_id("o")
                    .with_user_id("u")
                    .with_session_id("s")
                    .with_environment("region", "eu"),
            )
            .with_mcp_servers(json!({"fs": {"command": "npx", "args": ["x"]}}));
        let mut request = request;
        request.sampling.stop = vec!["\n\n".into()];
        assert_eq!(round_trip::<_, AbiTurnRequest>(request.clone()), request);
        let empty = TurnRequest::new("");
        assert_eq!(round_trip::<_, AbiTurnRequest>(empty.clone()), empty);
    }

    #[test]
    fn output_round_trips_with_every_finish_reason() {
        let reasons = [
            FinishReason::Stop,
            FinishReason::Length,
            FinishReason::ToolCalls,
            FinishReason::ContentFilter,
            FinishReason::Cancelled,
            FinishReason::Error,
            FinishReason::Other("end_turn".into()),
        ];
        for reason in reasons {
            let output = TurnOutput::new("answer")
                .with_usage(Usage {
                    cache_read_tokens: 4,
                    reasoning_tokens: 9,
                    ..Usage::new(3, 5)
                })
                .with_finish_reason(reason)
                .with_tool_calls(vec![ToolCall::new("a", "b", json!([1]))])
                .with_metadata(json!({"model": "m"}));
            assert_eq!(round_trip::<_, AbiTurnOutput>(output.clone()), output);
        }
    }

    #[test]
    fn errors_round_trip_with_every_kind() {
        let kinds = [
            ErrorKind::InvalidRequest,
            ErrorKind::Unsupported,
            ErrorKind::Unavailable,
            ErrorKind::Timeout,
            ErrorKind::Cancelled,
            ErrorKind::Panicked,
            ErrorKind::Internal,
            ErrorKind::InvalidConfig,
            ErrorKind::Authentication,
            ErrorKind::RateLimited,
            ErrorKind::Crashed,
            ErrorKind::WorkerLost,
            ErrorKind::Other("quota".into()),
        ];
        for kind in kinds {
            let error = RuntimeError::new(kind, "boom").with_metadata(json!({"status": 503}));
            assert_eq!(round_trip::<_, AbiRuntimeError>(error.clone()), error);
        }
    }

    #[test]
    fn deltas_round_trip_and_unknown_codes_survive() {
        let deltas = [
            Delta::text("a b"),
            Delta::thinking("hmm"),
            Delta::tool_call(1, Some("id"), Some("name"), "{\"a\""),
            Delta::tool_result("id", "name", false, "no such file"),
            Delta::error(&RuntimeError::unavailable("hiccup")),
        ];
        for delta in deltas {
            assert_eq!(round_trip::<_, AbiDelta>(delta.clone()), delta);
        }
        let future_kind = AbiDelta {
            kind: 77,
            content: "x".into(),
            metadata: RString::new(),
        };
        assert_eq!(Delta::from(future_kind).kind, DeltaKind::Unknown);
    }

    #[test]
    fn json_that_is_not_json_is_kept_as_a_string() {
        let call = AbiToolCall {
            id: "1".into(),
            name: "f".into(),
            arguments: "{broken".into(),
        };
        assert_eq!(ToolCall::from(call).arguments, json!("{broken"));
    }

    #[test]
    fn stream_items_round_trip() {
        let items = [
            StreamItem::Delta(Delta::text("x")),
            StreamItem::Done(TurnOutput::new("x")),
        ];
        for item in items {
            assert_eq!(round_trip::<_, AbiStreamItem>(item.clone()), item);
        }
    }
}
