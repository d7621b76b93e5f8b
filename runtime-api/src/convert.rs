//! Conversions between the public types and their frozen mirrors in [`abi`](crate::abi).
//!
//! They live here, not in the contract crate, so that the public types may gain methods and
//! helpers in any release; what they convert to is frozen.

use abi_stable::std_types::{ROption, RString, RVec, Tuple2};
use serde_json::Value;

use crate::abi::{
    AbiDelta, AbiExecutionContext, AbiMessage, AbiRuntimeError, AbiRuntimeInfo, AbiStreamItem,
    AbiToolCall, AbiToolDefinition, AbiTurnOutput, AbiTurnRequest, AbiUsage,
};
use crate::{
    Delta, DeltaKind, ErrorKind, ExecutionContext, FinishReason, Message, Role, RuntimeError,
    RuntimeInfo, Sampling, StreamItem, ToolCall, ToolDefinition, TurnOutput, TurnRequest, Usage,
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
        // Built field by field: every turn crosses here, and `TurnRequest::new` would build
        // defaults only to drop them.
        TurnRequest {
            prompt: request.prompt.into_string(),
            system: opt_from_abi(request.system),
            model: opt_from_abi(request.model),
            history: request.history.into_iter().map(Into::into).collect(),
            tools: request.tools.into_iter().map(Into::into).collect(),
            sampling: Sampling {
                max_tokens: request.max_tokens.into_option(),
                temperature: request.temperature.into_option(),
                stop: strings_from_abi(request.stop),
            },
            config: json_from_abi(request.config),
            execution_id: request.execution_id.into_string(),
            context: request.context.into(),
            mcp_servers: json_from_abi(request.mcp_servers),
            metadata: json_from_abi(request.metadata),
        }
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
            finish_reason: output.finish_reason.code(),
            finish_reason_text: match output.finish_reason {
                FinishReason::Other(text) => text.into(),
                _ => RString::new(),
            },
            metadata: json_to_abi(&output.metadata),
        }
    }
}

impl From<AbiTurnOutput> for TurnOutput {
    fn from(output: AbiTurnOutput) -> Self {
        TurnOutput::new(output.content)
            .with_tool_calls(output.tool_calls.into_iter().map(Into::into).collect())
            .with_usage(output.usage.into())
            .with_finish_reason(FinishReason::from_code(
                output.finish_reason,
                output.finish_reason_text.into_string(),
            ))
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
