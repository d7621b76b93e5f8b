//! `openai`: the OpenAI Chat Completions API, as OpenAI, Ollama, vLLM, llama.cpp's server and
//! LM Studio serve it.

use std::collections::BTreeMap;

use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use runtime_api::{
    Delta, FinishReason, Role, RuntimeError, ToolCall, TurnOutput, TurnRequest, Usage, Value, json,
};

use crate::config::{Config, Provider};
use crate::http::{self, StreamDecoder};
use crate::parse_arguments;
use crate::shell::{Api, LlmRuntime};

/// The `openai` runtime (alias `openai-compatible`): Chat Completions over HTTP.
///
/// Config (JSON object):
///
/// | key | meaning |
/// | --- | --- |
/// | `base_url` (required) | the API base, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8080/v1` |
/// | `model` (required) | the model, unless a request names one |
/// | `api_key_env` | the *name* of the environment variable holding the key, sent as `Authorization: Bearer`; the key itself never goes in the config or the logs |
/// | `headers` | extra headers, an object of strings |
/// | `connect_timeout_ms`, `read_timeout_ms`, `request_timeout_ms` | connecting (default 10 s), the longest gap between bytes (default 300 s), the whole request (default none) |
/// | `max_tokens` | the default when a request sets none |
/// | `include_usage` | ask for usage in streams with `stream_options.include_usage` (default true) |
/// | `extra_body` | keys merged into every request body (`top_p`, `seed`, …) |
///
/// Mapping: the system prompt, the history (assistant tool calls and tool results included)
/// and the prompt become `messages` (an empty prompt adds no user message, so a history may
/// end with a tool result or an assistant prefill); tools become `function` tools;
/// `max_tokens`, `temperature` and `stop` are passed on; a request's `model` overrides the
/// config's. `reasoning_content` (llama.cpp, DeepSeek, vLLM) arrives as thinking deltas.
pub type OpenAiRuntime = LlmRuntime<OpenAi>;

/// The Chat Completions API, for [`LlmRuntime`].
#[derive(Debug)]
pub struct OpenAi;

impl Api for OpenAi {
    const PROVIDER: Provider = Provider::OpenAi;
    const ID: &'static str = "openai";
    const DISPLAY_NAME: &'static str = "OpenAI-compatible";
    const DESCRIPTION: &'static str =
        "Chat Completions over HTTP (OpenAI, Ollama, vLLM, llama.cpp, LM Studio), streamed.";
    const ALIASES: &'static [&'static str] = &["openai-compatible"];
    const CONFIG_SCHEMA: &'static str = crate::config::OPENAI_SCHEMA;
    const TURN_PATH: &'static str = "chat/completions";
    const REQUEST_LOG: &'static str = "sending a chat completion request";
    type Decoder = OpenAiStreamState;

    fn request_body(config: &Config, request: &TurnRequest, stream: bool) -> Value {
        request_body(config, request, stream)
    }

    fn parse_response(body: &Value) -> Result<TurnOutput, RuntimeError> {
        parse_response(body)
    }

    fn decoder() -> OpenAiStreamState {
        OpenAiStreamState::new()
    }

    /// `Authorization: Bearer <key>` when the config names a key variable.
    fn auth_headers(config: &Config) -> Result<Vec<(HeaderName, HeaderValue)>, RuntimeError> {
        let Some(key) = config.api_key()? else {
            return Ok(Vec::new());
        };
        let mut value = HeaderValue::from_bytes(&[b"Bearer ", key.as_bytes()].concat())
            .map_err(|_| RuntimeError::invalid_config("the API key is not header-safe"))?;
        value.set_sensitive(true);
        Ok(vec![(AUTHORIZATION, value)])
    }

    fn accept(stream: bool) -> &'static str {
        if stream {
            "text/event-stream"
        } else {
            "application/json"
        }
    }
}

/// The Chat Completions request body for a turn.
pub(crate) fn request_body(config: &Config, request: &TurnRequest, stream: bool) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = request.system.as_deref().filter(|s| !s.is_empty()) {
        messages.push(json!({ "role": "system", "content": system }));
    }
    for message in &request.history {
        messages.push(match &message.role {
            Role::Assistant if !message.tool_calls.is_empty() => {
                let calls: Vec<Value> = message
                    .tool_calls
                    .iter()
                    .map(|call| {
                        json!({
                            "id": call.id,
                            "type": "function",
                            "function": { "name": call.name, "arguments": arguments_text(&call.arguments) },
                        })
                    })
                    .collect();
                let content = if message.content.is_empty() {
                    Value::Null
                } else {
                    json!(message.content)
                };
                json!({ "role": "assistant", "content": content, "tool_calls": calls })
            }
            Role::Tool => json!({
                "role": "tool",
                "tool_call_id": message.tool_call_id.clone().unwrap_or_default(),
                "content": message.content,
            }),
            role => json!({ "role": role.as_str(), "content": message.content }),
        });
    }
    if !request.prompt.is_empty() {
        messages.push(json!({ "role": "user", "content": request.prompt }));
    }

    let mut body = serde_json::Map::new();
    body.insert(
        "model".into(),
        json!(request.model.as_deref().unwrap_or(&config.model)),
    );
    body.insert("messages".into(), Value::Array(messages));
    body.insert("stream".into(), json!(stream));
    if stream && config.include_usage {
        body.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    if let Some(max_tokens) = request.sampling.max_tokens.or(config.max_tokens) {
        body.insert("max_tokens".into(), json!(max_tokens));
    }
    if let Some(temperature) = request.sampling.temperature {
        body.insert("temperature".into(), json!(temperature));
    }
    if !request.sampling.stop.is_empty() {
        body.insert("stop".into(), json!(request.sampling.stop));
    }
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": crate::schema_or_empty(&tool.parameters),
                    },
                })
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    for (key, value) in &config.extra_body {
        body.insert(key.clone(), value.clone());
    }
    Value::Object(body)
}

/// Tool-call arguments as the JSON text OpenAI expects.
fn arguments_text(arguments: &Value) -> String {
    match arguments {
        Value::String(text) => text.clone(),
        Value::Null => "{}".to_owned(),
        other => other.to_string(),
    }
}

/// OpenAI's finish reasons.
pub(crate) fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// OpenAI's usage object.
pub(crate) fn usage(value: &Value) -> Usage {
    let count = |v: &Value| v.as_u64().unwrap_or(0);
    let mut usage = Usage::new(
        count(&value["prompt_tokens"]),
        count(&value["completion_tokens"]),
    );
    if let Some(total) = value["total_tokens"].as_u64() {
        usage.total_tokens = total;
    }
    usage.cache_read_tokens = count(&value["prompt_tokens_details"]["cached_tokens"]);
    usage.reasoning_tokens = count(&value["completion_tokens_details"]["reasoning_tokens"]);
    usage
}

/// The output of a non-streamed Chat Completions response.
///
/// # Errors
///
/// An error object in the body, or a body without a choice.
pub(crate) fn parse_response(body: &Value) -> Result<TurnOutput, RuntimeError> {
    if let Some(error) = body.get("error").filter(|e| !e.is_null()) {
        return Err(http::stream_error_object(error));
    }
    let Some(choice) = body["choices"].as_array().and_then(|c| c.first()) else {
        return Err(RuntimeError::internal(format!(
            "the response has no choices: {}",
            http::truncate(&body.to_string(), 512)
        )));
    };
    let message = &choice["message"];
    let content = match &message["content"] {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<String>(),
        _ => String::new(),
    };
    let tool_calls = message["tool_calls"]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .enumerate()
                .map(|(i, call)| {
                    let arguments = match &call["function"]["arguments"] {
                        Value::String(text) => parse_arguments(text),
                        Value::Null => json!({}),
                        other => other.clone(),
                    };
                    ToolCall::new(
                        call["id"]
                            .as_str()
                            .map_or_else(|| format!("call_{i}"), str::to_owned),
                        call["function"]["name"].as_str().unwrap_or_default(),
                        arguments,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut output = TurnOutput::new(content).with_tool_calls(tool_calls);
    if let Some(reason) = choice["finish_reason"].as_str() {
        output.finish_reason = finish_reason(reason);
    }
    if body["usage"].is_object() {
        output.usage = usage(&body["usage"]);
    }
    let thinking = message["reasoning_content"]
        .as_str()
        .or_else(|| message["reasoning"].as_str())
        .unwrap_or_default();
    output.metadata = response_metadata(body, thinking);
    Ok(output)
}

fn response_metadata(body: &Value, thinking: &str) -> Value {
    let mut metadata = json!({});
    for key in ["id", "model", "system_fingerprint"] {
        if let Some(value) = body[key].as_str() {
            metadata[key] = json!(value);
        }
    }
    if !thinking.is_empty() {
        metadata["thinking"] = json!(thinking);
    }
    metadata
}

/// A tool call being assembled from stream fragments.
#[derive(Debug, Default, Clone)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// The accumulator of a streamed Chat Completion: fed each chunk's JSON, it yields the deltas
/// and assembles the final [`TurnOutput`].
///
/// - text: `choices[0].delta.content`, appended and yielded as it comes;
/// - thinking: `delta.reasoning_content` (or `reasoning`);
/// - tool calls: fragments keyed by their `index`; `arguments` is appended, `id` and `name`
///   are set once and never appended (some servers repeat them in every chunk), and each is
///   announced once in a delta's metadata. A fragment without an `index` continues the last
///   call unless it brings a new id;
/// - usage: from whichever chunk carries a `usage` object (a trailing chunk with
///   `choices: []`, or the finish chunk); the last one wins;
/// - `choices: null` or absent is an empty list; an `error` object is a failed turn;
/// - complete only after `data: [DONE]`: a body that ends before it is a truncated turn.
#[derive(Debug, Default)]
pub struct OpenAiStreamState {
    content: String,
    thinking: String,
    calls: BTreeMap<usize, PartialCall>,
    usage: Option<Usage>,
    finish_reason: Option<FinishReason>,
    metadata: Value,
    done: bool,
}

impl OpenAiStreamState {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk (the JSON of one `data:` line).
    ///
    /// # Errors
    ///
    /// When the chunk is an error object.
    pub fn feed_chunk(&mut self, chunk: &Value) -> Result<Vec<Delta>, RuntimeError> {
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            return Err(http::stream_error_object(error));
        }
        if self.metadata.is_null() {
            self.metadata = response_metadata(chunk, "");
        }
        if chunk["usage"].is_object() {
            self.usage = Some(usage(&chunk["usage"]));
        }
        let mut deltas = Vec::new();
        let choices = chunk["choices"].as_array().map_or(&[][..], Vec::as_slice);
        for choice in choices {
            if choice["index"].as_u64().is_some_and(|i| i != 0) {
                continue; // only the first choice is a turn's answer
            }
            let delta = &choice["delta"];
            let reasoning = delta["reasoning_content"]
                .as_str()
                .or_else(|| delta["reasoning"].as_str());
            if let Some(text) = reasoning.filter(|t| !t.is_empty()) {
                self.thinking.push_str(text);
                deltas.push(Delta::thinking(text));
            }
            if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
                self.content.push_str(text);
                deltas.push(Delta::text(text));
            }
            if let Some(calls) = delta["tool_calls"].as_array() {
                for call in calls {
                    if let Some(delta) = self.feed_tool_call(call) {
                        deltas.push(delta);
                    }
                }
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                self.finish_reason = Some(finish_reason(reason));
            }
        }
        Ok(deltas)
    }

    fn feed_tool_call(&mut self, call: &Value) -> Option<Delta> {
        let id = call["id"].as_str().filter(|s| !s.is_empty());
        let index = match call["index"].as_u64().and_then(|i| usize::try_from(i).ok()) {
            Some(index) => index,
            None => {
                let last = self.calls.keys().next_back().copied();
                let is_new = id.is_some_and(|id| !self.calls.values().any(|c| c.id == id));
                match last {
                    Some(last) if !is_new => last,
                    Some(last) => last + 1,
                    None => 0,
                }
            }
        };
        let entry = self.calls.entry(index).or_default();
        let mut new_id = None;
        if let Some(id) = id {
            if entry.id.is_empty() {
                entry.id = id.to_owned();
                new_id = Some(id);
            }
        }
        let function = &call["function"];
        let mut new_name = None;
        if let Some(name) = function["name"].as_str().filter(|s| !s.is_empty()) {
            if entry.name.is_empty() {
                entry.name = name.to_owned();
                new_name = Some(name);
            }
        }
        let fragment = match &function["arguments"] {
            Value::String(text) => text.clone(),
            // Some servers send whole arguments as an object.
            Value::Object(_) if entry.arguments.is_empty() => function["arguments"].to_string(),
            _ => String::new(),
        };
        entry.arguments.push_str(&fragment);
        if new_id.is_none() && new_name.is_none() && fragment.is_empty() {
            return None;
        }
        Some(Delta::tool_call(index, new_id, new_name, fragment))
    }
}

impl StreamDecoder for OpenAiStreamState {
    fn feed(&mut self, _event: &str, data: &str) -> Result<Vec<Delta>, RuntimeError> {
        if self.done {
            return Ok(Vec::new());
        }
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(Vec::new());
        }
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let chunk: Value = serde_json::from_str(data).map_err(|error| {
            RuntimeError::unavailable(format!(
                "the stream sent a chunk that is not JSON ({error}): {}",
                http::truncate(data, 256)
            ))
            .with_metadata(json!({ "during": "stream" }))
        })?;
        self.feed_chunk(&chunk)
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn finish(&mut self) -> Result<TurnOutput, RuntimeError> {
        if !self.done {
            return Err(RuntimeError::unavailable(
                "the stream ended without `data: [DONE]`: the answer is truncated",
            )
            .with_metadata(json!({ "during": "stream", "truncated": true })));
        }
        let tool_calls = std::mem::take(&mut self.calls)
            .into_iter()
            .map(|(index, call)| {
                let id = if call.id.is_empty() {
                    format!("call_{index}")
                } else {
                    call.id
                };
                ToolCall::new(id, call.name, parse_arguments(&call.arguments))
            })
            .collect();
        let mut output = TurnOutput::new(std::mem::take(&mut self.content))
            .with_tool_calls(tool_calls)
            .with_usage(self.usage.unwrap_or_default())
            .with_finish_reason(self.finish_reason.clone().unwrap_or_default());
        output.metadata = http::output_metadata(
            std::mem::take(&mut self.metadata),
            std::mem::take(&mut self.thinking),
        );
        Ok(output)
    }
}

#[cfg(test)]
mod tests {
    use runtime_api::{DeltaKind, ErrorKind, Message, StreamItem, ToolDefinition};

    use super::*;
    use crate::http::replay;

    fn config() -> Config {
        Config::parse(
            Provider::OpenAi,
            &json!({ "base_url": "http://127.0.0.1:9/v1", "model": "tiny" }),
        )
        .unwrap()
    }

    fn text_of(items: &[Result<StreamItem, RuntimeError>]) -> String {
        items
            .iter()
            .filter_map(|i| match i {
                Ok(StreamItem::Delta(d)) if d.kind == DeltaKind::Text => Some(d.content.as_str()),
                _ => None,
            })
            .collect()
    }

    fn done(items: &[Result<StreamItem, RuntimeError>]) -> &TurnOutput {
        match items.last() {
            Some(Ok(StreamItem::Done(output))) => output,
            other => panic!("the stream did not end with Done: {other:?}"),
        }
    }

    #[test]
    fn the_body_maps_history_tools_and_sampling() {
        let request = TurnRequest::new("and now?")
            .with_system("be brief")
            .with_model("other-model")
            .with_history(vec![
                Message::user("weather?"),
                Message::assistant_tool_calls(vec![ToolCall::new(
                    "call_1",
                    "get_weather",
                    json!({ "city": "Paris" }),
                )]),
                Message::tool_result("call_1", "sunny"),
            ])
            .with_tools(vec![ToolDefinition::new(
                "get_weather",
                "Weather of a city",
                json!({ "type": "object", "properties": { "city": { "type": "string" } } }),
            )])
            .with_max_tokens(12)
            .with_temperature(0.0);
        let mut request = request;
        request.sampling.stop = vec!["END".into()];
        let body = request_body(&config(), &request, true);
        assert_eq!(body["model"], "other-model");
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["max_tokens"], 12);
        assert_eq!(body["temperature"], 0.0);
        assert_eq!(body["stop"], json!(["END"]));
        let messages = body["messages"].as_array().unwrap();
        let roles: Vec<&str> = messages
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
        assert_eq!(messages[2]["content"], Value::Null);
        assert_eq!(
            messages[2]["tool_calls"][0]["function"]["name"],
            "get_weather"
        );
        assert_eq!(
            messages[2]["tool_calls"][0]["function"]["arguments"],
            r#"{"city":"Paris"}"#
        );
        assert_eq!(messages[3]["tool_call_id"], "call_1");
        assert_eq!(body["tools"][0]["type"], "function");
        assert_eq!(body["tools"][0]["function"]["name"], "get_weather");

        // No usage request when switched off; no user message for an empty prompt; the
        // config model when the request names none.
        let mut config = config();
        config.include_usage = false;
        let body = request_body(
            &config,
            &TurnRequest::new("").with_history(vec![Message::user("hi")]),
            true,
        );
        assert!(body.get("stream_options").is_none());
        assert_eq!(body["messages"].as_array().unwrap().len(), 1);
        assert_eq!(body["model"], "tiny");
        assert!(body.get("tools").is_none());
    }

    #[tokio::test]
    async fn text_streams_with_usage_from_the_trailing_chunk() {
        let sse: &[&[u8]] = &[
            b"data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":null}]}\n\n",
            b"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n",
            b"data: [DONE]\n\n",
        ];
        let items = replay(sse, OpenAiStreamState::new()).await;
        assert_eq!(text_of(&items), "Hello");
        let output = done(&items);
        assert_eq!(output.content, "Hello");
        assert_eq!(output.finish_reason, FinishReason::Stop);
        assert_eq!(output.usage, Usage::new(5, 2));
        assert_eq!(output.metadata["model"], "m");
    }

    #[tokio::test]
    async fn crlf_no_space_comments_multiline_and_split_utf8() {
        let sse: &[&[u8]] = &[
            b": keep-alive\r\n\r\n",
            b"data:{\"choices\":[{\"delta\":{\"content\":\"caf\xc3",
            b"\xa9 \"}}]}\r\n\r\n",
            // One JSON document spread over two `data:` lines (joined with a newline).
            b"data: {\"choices\":[{\"delta\":\ndata: {\"content\":\"ok\"},\"finish_reason\":\"stop\"}],\r\n",
            b"data: \"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\r\n\r\n",
            b"data: [DONE]\r",
            b"\n\r\n",
        ];
        let items = replay(sse, OpenAiStreamState::new()).await;
        assert_eq!(text_of(&items), "café ok");
        let output = done(&items);
        assert_eq!(output.content, "café ok");
        // Usage from the finish chunk; the total is computed when absent.
        assert_eq!(output.usage.total_tokens, 3);
    }

    #[tokio::test]
    async fn choices_null_and_missing_are_empty() {
        let sse: &[&[u8]] = &[
            b"data: {\"choices\":null}\n\n",
            b"data: {\"object\":\"chat.completion.chunk\"}\n\n",
            b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"},\"finish_reason\":\"length\"}]}\n\n",
            b"data: [DONE]\n\n",
        ];
        let items = replay(sse, OpenAiStreamState::new()).await;
        let output = done(&items);
        assert_eq!(output.content, "x");
        assert_eq!(output.finish_reason, FinishReason::Length);
        assert!(output.usage.is_empty());
    }

    #[tokio::test]
    async fn tool_call_fragments_assemble_by_index_with_ids_and_names_set_once() {
        let sse: &[&[u8]] = &[
            // Two parallel calls, interleaved; the server repeats id and name in every chunk.
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}}]}\n\n",
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"{\\\"tz\\\"\"}}]}}]}\n\n",
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\"}}]}}]}\n\n",
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"function\":{\"name\":\"get_weather\",\"arguments\":\" \\\"Paris\\\"}\"}}]}}]}\n\n",
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\": \\\"UTC\\\"}\"}}]}}]}\n\n",
            b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            b"data: [DONE]\n\n",
        ];
        let items = replay(sse, OpenAiStreamState::new()).await;
        let deltas: Vec<&Delta> = items
            .iter()
            .filter_map(|i| match i {
                Ok(StreamItem::Delta(d)) => Some(d),
                _ => None,
            })
            .collect();
        assert!(deltas.iter().all(|d| d.kind == DeltaKind::ToolCall));
        // id and name announced exactly once per call, in its first delta.
        let announced: Vec<(u64, &str)> = deltas
            .iter()
            .filter_map(|d| Some((d.metadata["index"].as_u64()?, d.metadata["name"].as_str()?)))
            .collect();
        assert_eq!(announced, [(0, "get_weather"), (1, "get_time")]);
        assert_eq!(
            deltas
                .iter()
                .filter(|d| d.metadata.get("id").is_some())
                .count(),
            2
        );
        let output = done(&items);
        assert_eq!(output.finish_reason, FinishReason::ToolCalls);
        assert_eq!(output.tool_calls.len(), 2);
        assert_eq!(output.tool_calls[0].id, "call_a");
        assert_eq!(output.tool_calls[0].name, "get_weather");
        assert_eq!(output.tool_calls[0].arguments, json!({ "city": "Paris" }));
        assert_eq!(output.tool_calls[1].name, "get_time");
        assert_eq!(output.tool_calls[1].arguments, json!({ "tz": "UTC" }));
        assert_eq!(output.content, "");
    }

    #[tokio::test]
    async fn whole_tool_calls_in_one_chunk_and_missing_indexes() {
        let sse: &[&[u8]] = &[
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[",
            b"{\"id\":\"a\",\"function\":{\"name\":\"one\",\"arguments\":\"{}\"}},",
            b"{\"id\":\"b\",\"function\":{\"name\":\"two\",\"arguments\":{\"x\":1}}}",
            b"]},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n",
        ];
        let items = replay(sse, OpenAiStreamState::new()).await;
        let output = done(&items);
        let names: Vec<&str> = output.tool_calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["one", "two"]);
        assert_eq!(output.tool_calls[0].arguments, json!({}));
        assert_eq!(output.tool_calls[1].arguments, json!({ "x": 1 }));
    }

    #[tokio::test]
    async fn invalid_arguments_arrive_as_a_string() {
        let sse: &[&[u8]] = &[
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"f\",\"arguments\":\"{oops\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
            b"data: [DONE]\n\n",
        ];
        let items = replay(sse, OpenAiStreamState::new()).await;
        let output = done(&items);
        assert_eq!(output.tool_calls[0].arguments, json!("{oops"));
        assert_eq!(output.tool_calls[0].id, "call_0");
    }

    #[tokio::test]
    async fn reasoning_content_is_thinking() {
        let sse: &[&[u8]] = &[
            b"data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"hmm\"}}]}\n\n",
            b"data: {\"choices\":[{\"delta\":{\"content\":\"42\"},\"finish_reason\":\"stop\"}]}\n\n",
            b"data: [DONE]\n\n",
        ];
        let items = replay(sse, OpenAiStreamState::new()).await;
        let Ok(StreamItem::Delta(first)) = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(first.kind, DeltaKind::Thinking);
        assert_eq!(text_of(&items), "42");
        assert_eq!(done(&items).metadata["thinking"], "hmm");
    }

    #[tokio::test]
    async fn an_error_object_mid_stream_is_an_error() {
        let sse: &[&[u8]] = &[
            b"data: {\"choices\":[{\"delta\":{\"content\":\"par\"}}]}\n\n",
            b"data: {\"error\":{\"code\":500,\"message\":\"Failed to parse input\",\"type\":\"server_error\"}}\n\n",
        ];
        let items = replay(sse, OpenAiStreamState::new()).await;
        assert_eq!(text_of(&items), "par");
        let Some(Err(error)) = items.last() else {
            panic!("{items:?}")
        };
        assert_eq!(error.kind, ErrorKind::Unavailable);
        assert!(error.message.contains("Failed to parse input"));
        assert_eq!(error.metadata["status"], 500);
    }

    #[tokio::test]
    async fn a_stream_without_done_is_truncated_not_finished() {
        let sse: &[&[u8]] = &[
            b"data: {\"choices\":[{\"delta\":{\"content\":\"half\"},\"finish_reason\":\"stop\"}]}\n\n",
        ];
        let items = replay(sse, OpenAiStreamState::new()).await;
        let Some(Err(error)) = items.last() else {
            panic!("{items:?}")
        };
        assert_eq!(error.kind, ErrorKind::Unavailable);
        assert_eq!(error.metadata["truncated"], true);
        assert!(error.message.contains("[DONE]"));
    }

    #[tokio::test]
    async fn a_chunk_that_is_not_json_is_an_error() {
        let items = replay(&[b"data: {nope\n\n"], OpenAiStreamState::new()).await;
        assert!(matches!(items.last(), Some(Err(e)) if e.message.contains("not JSON")));
    }

    #[test]
    fn a_non_streamed_response_parses() {
        let body = json!({
            "id": "x", "model": "m",
            "choices": [{ "index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null, "reasoning_content": "think",
                "tool_calls": [{ "id": "c", "type": "function", "function": { "name": "f", "arguments": "{\"a\":1}" } }]
            }}],
            "usage": { "prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7,
                       "prompt_tokens_details": { "cached_tokens": 2 } }
        });
        let output = parse_response(&body).unwrap();
        assert_eq!(output.content, "");
        assert_eq!(output.finish_reason, FinishReason::ToolCalls);
        assert_eq!(output.tool_calls[0].arguments, json!({ "a": 1 }));
        assert_eq!(output.usage.cache_read_tokens, 2);
        assert_eq!(output.metadata["thinking"], "think");
        assert!(parse_response(&json!({ "choices": [] })).is_err());
        let error = parse_response(
            &json!({ "error": { "message": "no", "type": "invalid_request_error" } }),
        )
        .unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidRequest);
    }
}
