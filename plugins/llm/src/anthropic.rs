//! `anthropic`: the Anthropic Messages API (and servers that speak it, such as llama.cpp's
//! `/v1/messages`).

use std::collections::BTreeMap;

use reqwest::header::{HeaderName, HeaderValue};
use runtime_api::{
    Delta, FinishReason, Role, RuntimeError, ToolCall, TurnOutput, TurnRequest, Usage, Value, json,
};

use crate::config::{Config, DEFAULT_ANTHROPIC_MAX_TOKENS, Provider};
use crate::http::{self, StreamDecoder};
use crate::parse_arguments;
use crate::shell::{Api, LlmRuntime};

const API_KEY_HEADER: HeaderName = HeaderName::from_static("x-api-key");
const VERSION_HEADER: HeaderName = HeaderName::from_static("anthropic-version");

/// The `anthropic` runtime (alias `claude`): the Messages API over HTTP.
///
/// Config: as [`OpenAiRuntime`](crate::OpenAiRuntime)'s (`base_url` such as
/// `https://api.anthropic.com/v1`, `model`, `api_key_env` sent as `x-api-key`, `headers`,
/// timeouts, `max_tokens` — default 4096, as the API requires one — and `extra_body`), plus
/// `anthropic_version` (default `2023-06-01`) and `thinking_budget_tokens`, which enables
/// extended thinking.
///
/// Mapping: the system prompt and any system messages of the history become `system`; tool
/// results become `tool_result` blocks of a user message and assistant tool calls `tool_use`
/// blocks; consecutive messages of one role are merged, as the API requires alternation; an
/// empty prompt adds no user message. Streams: `text_delta` → text, `input_json_delta` →
/// tool-call fragments assembled per content block, `thinking_delta` → thinking,
/// `message_delta` → stop reason and usage; `ping` and unknown events are ignored.
pub type AnthropicRuntime = LlmRuntime<Anthropic>;

/// The Messages API, for [`LlmRuntime`].
#[derive(Debug)]
pub struct Anthropic;

impl Api for Anthropic {
    const PROVIDER: Provider = Provider::Anthropic;
    const ID: &'static str = "anthropic";
    const DISPLAY_NAME: &'static str = "Anthropic Messages";
    const DESCRIPTION: &'static str =
        "The Anthropic Messages API over HTTP, streamed, with tools and extended thinking.";
    const ALIASES: &'static [&'static str] = &["claude"];
    const CONFIG_SCHEMA: &'static str = crate::config::ANTHROPIC_SCHEMA;
    const TURN_PATH: &'static str = "messages";
    const REQUEST_LOG: &'static str = "sending an Anthropic request";
    type Decoder = AnthropicStreamState;

    fn request_body(config: &Config, request: &TurnRequest, stream: bool) -> Value {
        request_body(config, request, stream)
    }

    fn parse_response(body: &Value) -> Result<TurnOutput, RuntimeError> {
        parse_response(body)
    }

    fn decoder() -> AnthropicStreamState {
        AnthropicStreamState::new()
    }

    /// `anthropic-version`, and `x-api-key` when the config names a key variable.
    fn auth_headers(config: &Config) -> Result<Vec<(HeaderName, HeaderValue)>, RuntimeError> {
        let version = HeaderValue::from_str(&config.anthropic_version)
            .map_err(|_| RuntimeError::invalid_config("`anthropic_version` is not header-safe"))?;
        let mut headers = vec![(VERSION_HEADER, version)];
        if let Some(key) = config.api_key()? {
            headers.push((API_KEY_HEADER, key));
        }
        Ok(headers)
    }

    fn accept(_stream: bool) -> &'static str {
        "application/json, text/event-stream"
    }
}

/// The Messages request body for a turn.
pub(crate) fn request_body(config: &Config, request: &TurnRequest, stream: bool) -> Value {
    let mut system: Vec<&str> = request
        .system
        .as_deref()
        .filter(|s| !s.is_empty())
        .into_iter()
        .collect();
    let mut messages: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut push = |role: &'static str, blocks: Vec<Value>| {
        if blocks.is_empty() {
            return;
        }
        match messages.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => messages.push((role, blocks)),
        }
    };
    let text_block = |text: &str| -> Vec<Value> {
        if text.is_empty() {
            Vec::new()
        } else {
            vec![json!({ "type": "text", "text": text })]
        }
    };
    for message in &request.history {
        match &message.role {
            Role::System => system.push(&message.content),
            Role::Assistant => {
                let mut blocks = text_block(&message.content);
                for call in &message.tool_calls {
                    let input = match &call.arguments {
                        Value::Object(_) => call.arguments.clone(),
                        Value::String(text) => match parse_arguments(text) {
                            object @ Value::Object(_) => object,
                            _ => json!({}),
                        },
                        _ => json!({}),
                    };
                    blocks.push(json!({
                        "type": "tool_use", "id": call.id, "name": call.name, "input": input,
                    }));
                }
                push("assistant", blocks);
            }
            Role::Tool => push(
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id.clone().unwrap_or_default(),
                    "content": message.content,
                })],
            ),
            _ => push("user", text_block(&message.content)),
        }
    }
    push("user", text_block(&request.prompt));

    let mut body = serde_json::Map::new();
    body.insert(
        "model".into(),
        json!(request.model.as_deref().unwrap_or(&config.model)),
    );
    body.insert(
        "max_tokens".into(),
        json!(
            request
                .sampling
                .max_tokens
                .or(config.max_tokens)
                .unwrap_or(DEFAULT_ANTHROPIC_MAX_TOKENS)
        ),
    );
    let messages: Vec<Value> = messages
        .into_iter()
        .map(|(role, content)| json!({ "role": role, "content": content }))
        .collect();
    body.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        body.insert("system".into(), json!(system.join("\n\n")));
    }
    body.insert("stream".into(), json!(stream));
    if let Some(temperature) = request.sampling.temperature {
        body.insert("temperature".into(), json!(temperature));
    }
    if !request.sampling.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(request.sampling.stop));
    }
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": crate::schema_or_empty(&tool.parameters),
                })
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(budget) = config.thinking_budget_tokens {
        body.insert(
            "thinking".into(),
            json!({ "type": "enabled", "budget_tokens": budget }),
        );
    }
    for (key, value) in &config.extra_body {
        body.insert(key.clone(), value.clone());
    }
    Value::Object(body)
}

/// Anthropic's stop reasons.
pub(crate) fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// Merges the counts an Anthropic usage object carries into `usage`; absent counts are kept.
fn merge_usage(usage: &mut Usage, value: &Value) {
    if let Some(n) = value["input_tokens"].as_u64() {
        usage.input_tokens = n;
    }
    if let Some(n) = value["output_tokens"].as_u64() {
        usage.output_tokens = n;
    }
    if let Some(n) = value["cache_read_input_tokens"].as_u64() {
        usage.cache_read_tokens = n;
    }
    if let Some(n) = value["cache_creation_input_tokens"].as_u64() {
        usage.cache_write_tokens = n;
    }
    usage.total_tokens = usage.input_tokens + usage.output_tokens;
}

/// The output of a non-streamed Messages response.
///
/// # Errors
///
/// An error object in the body.
pub(crate) fn parse_response(body: &Value) -> Result<TurnOutput, RuntimeError> {
    if body["type"] == "error" || body.get("error").is_some_and(|e| !e.is_null()) {
        return Err(http::stream_error_object(body.get("error").unwrap_or(body)));
    }
    let mut content = String::new();
    let mut thinking = String::new();
    let mut tool_calls = Vec::new();
    for block in body["content"].as_array().map_or(&[][..], Vec::as_slice) {
        match block["type"].as_str() {
            Some("text") => content.push_str(block["text"].as_str().unwrap_or_default()),
            Some("thinking") => thinking.push_str(block["thinking"].as_str().unwrap_or_default()),
            Some("tool_use") => tool_calls.push(ToolCall::new(
                block["id"].as_str().unwrap_or_default(),
                block["name"].as_str().unwrap_or_default(),
                block
                    .get("input")
                    .filter(|i| !i.is_null())
                    .cloned()
                    .unwrap_or_else(|| json!({})),
            )),
            _ => {}
        }
    }
    let mut output = TurnOutput::new(content).with_tool_calls(tool_calls);
    if let Some(reason) = body["stop_reason"].as_str() {
        output.finish_reason = finish_reason(reason);
    }
    merge_usage(&mut output.usage, &body["usage"]);
    output.metadata = metadata(body, &thinking);
    Ok(output)
}

fn metadata(message: &Value, thinking: &str) -> Value {
    let mut metadata = json!({});
    for key in ["id", "model"] {
        if let Some(value) = message[key].as_str() {
            metadata[key] = json!(value);
        }
    }
    if !thinking.is_empty() {
        metadata["thinking"] = json!(thinking);
    }
    metadata
}

/// One content block of a streamed message.
#[derive(Debug)]
enum Block {
    Text,
    Thinking,
    ToolUse {
        /// The call's position among the message's tool calls (the delta `index`).
        ordinal: usize,
        id: String,
        name: String,
        json: String,
    },
    Other,
}

/// The accumulator of a streamed Messages response: fed each SSE event, it yields deltas and
/// assembles the final [`TurnOutput`].
///
/// Content blocks are tracked by their `index`; a `tool_use` block's `input_json_delta`
/// fragments are appended to that block, and its tool-call deltas are numbered by the call's
/// position among the tool calls (so they match [`TurnOutput::tool_calls`]). `message_start`
/// and `message_delta` carry usage and the stop reason; `ping` and unknown events are
/// ignored; an `error` event fails the turn; complete only after `message_stop`.
#[derive(Debug, Default)]
pub struct AnthropicStreamState {
    content: String,
    thinking: String,
    blocks: BTreeMap<u64, Block>,
    tool_count: usize,
    usage: Usage,
    stop_reason: Option<FinishReason>,
    metadata: Value,
    done: bool,
}

impl AnthropicStreamState {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one event: its SSE `event` name and its parsed data.
    ///
    /// # Errors
    ///
    /// When the event is an error.
    pub fn feed_event(&mut self, event: &str, data: &Value) -> Result<Vec<Delta>, RuntimeError> {
        // The SSE event name decides; servers that omit it put the same name in `type`.
        // (llama.cpp's `event: error` carries the error's own type in `type`.)
        let kind = if event != "message" && !event.is_empty() {
            event
        } else {
            data["type"].as_str().unwrap_or_default()
        };
        let mut deltas = Vec::new();
        match kind {
            "message_start" => {
                let message = &data["message"];
                self.metadata = metadata(message, "");
                merge_usage(&mut self.usage, &message["usage"]);
            }
            "content_block_start" => {
                let index = data["index"].as_u64().unwrap_or(0);
                let block = &data["content_block"];
                let started = match block["type"].as_str() {
                    Some("text") => {
                        if let Some(text) = block["text"].as_str().filter(|t| !t.is_empty()) {
                            self.content.push_str(text);
                            deltas.push(Delta::text(text));
                        }
                        Block::Text
                    }
                    Some("thinking") => {
                        if let Some(text) = block["thinking"].as_str().filter(|t| !t.is_empty()) {
                            self.thinking.push_str(text);
                            deltas.push(Delta::thinking(text));
                        }
                        Block::Thinking
                    }
                    Some("tool_use") => {
                        let ordinal = self.tool_count;
                        self.tool_count += 1;
                        let id = block["id"].as_str().unwrap_or_default().to_owned();
                        let name = block["name"].as_str().unwrap_or_default().to_owned();
                        // Anthropic starts with `input: {}` and streams the arguments; a
                        // server that sends them whole here is taken at its word.
                        let json = match &block["input"] {
                            Value::Object(map) if !map.is_empty() => block["input"].to_string(),
                            _ => String::new(),
                        };
                        deltas.push(Delta::tool_call(
                            ordinal,
                            Some(&id).filter(|s| !s.is_empty()).map(String::as_str),
                            Some(&name).filter(|s| !s.is_empty()).map(String::as_str),
                            json.clone(),
                        ));
                        Block::ToolUse {
                            ordinal,
                            id,
                            name,
                            json,
                        }
                    }
                    _ => Block::Other,
                };
                self.blocks.insert(index, started);
            }
            "content_block_delta" => {
                let index = data["index"].as_u64().unwrap_or(0);
                let delta = &data["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        if let Some(text) = delta["text"].as_str().filter(|t| !t.is_empty()) {
                            self.content.push_str(text);
                            deltas.push(Delta::text(text));
                        }
                    }
                    Some("thinking_delta") => {
                        if let Some(text) = delta["thinking"].as_str().filter(|t| !t.is_empty()) {
                            self.thinking.push_str(text);
                            deltas.push(Delta::thinking(text));
                        }
                    }
                    Some("input_json_delta") => {
                        let fragment = delta["partial_json"].as_str().unwrap_or_default();
                        if !self.blocks.contains_key(&index) {
                            // A fragment for a block that never started: keep it anyway.
                            let ordinal = self.tool_count;
                            self.tool_count += 1;
                            self.blocks.insert(
                                index,
                                Block::ToolUse {
                                    ordinal,
                                    id: String::new(),
                                    name: String::new(),
                                    json: String::new(),
                                },
                            );
                        }
                        if let Some(Block::ToolUse { ordinal, json, .. }) =
                            self.blocks.get_mut(&index)
                        {
                            if !fragment.is_empty() {
                                json.push_str(fragment);
                                deltas.push(Delta::tool_call(*ordinal, None, None, fragment));
                            }
                        }
                    }
                    // signature_delta, citations_delta and newer kinds carry no answer text.
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = data["delta"]["stop_reason"].as_str() {
                    self.stop_reason = Some(finish_reason(reason));
                }
                merge_usage(&mut self.usage, &data["usage"]);
            }
            "message_stop" => self.done = true,
            "error" => {
                let error = data.get("error").filter(|e| !e.is_null()).unwrap_or(data);
                return Err(http::stream_error_object(error));
            }
            "ping" | "content_block_stop" => {}
            other => tracing::trace!(event = other, "ignoring an unknown Anthropic event"),
        }
        Ok(deltas)
    }
}

impl StreamDecoder for AnthropicStreamState {
    fn feed(&mut self, event: &str, data: &str) -> Result<Vec<Delta>, RuntimeError> {
        if self.done || data.trim().is_empty() {
            return Ok(Vec::new());
        }
        let value: Value = serde_json::from_str(data).map_err(|error| {
            RuntimeError::unavailable(format!(
                "the stream sent an event that is not JSON ({error}): {}",
                http::truncate(data, 256)
            ))
            .with_metadata(json!({ "during": "stream" }))
        })?;
        self.feed_event(event, &value)
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn finish(&mut self) -> Result<TurnOutput, RuntimeError> {
        if !self.done {
            return Err(RuntimeError::unavailable(
                "the stream ended without `message_stop`: the answer is truncated",
            )
            .with_metadata(json!({ "during": "stream", "truncated": true })));
        }
        let mut calls: Vec<(usize, ToolCall)> = std::mem::take(&mut self.blocks)
            .into_values()
            .filter_map(|block| match block {
                Block::ToolUse {
                    ordinal,
                    id,
                    name,
                    json,
                } => Some((ordinal, ToolCall::new(id, name, parse_arguments(&json)))),
                _ => None,
            })
            .collect();
        calls.sort_by_key(|(ordinal, _)| *ordinal);
        let mut output = TurnOutput::new(std::mem::take(&mut self.content))
            .with_tool_calls(calls.into_iter().map(|(_, call)| call).collect())
            .with_usage(self.usage)
            .with_finish_reason(self.stop_reason.clone().unwrap_or_default());
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
            Provider::Anthropic,
            &json!({ "base_url": "http://127.0.0.1:9/v1", "model": "claude-tiny" }),
        )
        .unwrap()
    }

    fn done(items: &[Result<StreamItem, RuntimeError>]) -> &TurnOutput {
        match items.last() {
            Some(Ok(StreamItem::Done(output))) => output,
            other => panic!("the stream did not end with Done: {other:?}"),
        }
    }

    fn deltas(items: &[Result<StreamItem, RuntimeError>]) -> Vec<&Delta> {
        items
            .iter()
            .filter_map(|i| match i {
                Ok(StreamItem::Delta(d)) => Some(d),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_body_maps_system_history_tool_results_and_sampling() {
        let mut request = TurnRequest::new("thanks")
            .with_system("be brief")
            .with_history(vec![
                Message::new(Role::System, "also polite"),
                Message::user("weather in Paris and Rome?"),
                Message::assistant_tool_calls(vec![
                    ToolCall::new("t1", "get_weather", json!({ "city": "Paris" })),
                    ToolCall::new("t2", "get_weather", json!("{\"city\":\"Rome\"}")),
                ]),
                Message::tool_result("t1", "sunny"),
                Message::tool_result("t2", "rain"),
            ])
            .with_tools(vec![ToolDefinition::new("get_weather", "", Value::Null)])
            .with_temperature(0.0);
        request.sampling.stop = vec!["\n\n".into()];
        let body = request_body(&config(), &request, true);
        assert_eq!(body["model"], "claude-tiny");
        assert_eq!(body["max_tokens"], DEFAULT_ANTHROPIC_MAX_TOKENS);
        assert_eq!(body["system"], "be brief\n\nalso polite");
        assert_eq!(body["stop_sequences"], json!(["\n\n"]));
        assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
        let messages = body["messages"].as_array().unwrap();
        let roles: Vec<&str> = messages
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        // The tool results and the prompt are merged into one user message.
        assert_eq!(roles, ["user", "assistant", "user"]);
        assert_eq!(
            messages[1]["content"][1]["input"],
            json!({ "city": "Rome" })
        );
        let last = messages[2]["content"].as_array().unwrap();
        let types: Vec<&str> = last.iter().map(|b| b["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["tool_result", "tool_result", "text"]);
        assert_eq!(last[1]["tool_use_id"], "t2");

        let mut config = config();
        config.thinking_budget_tokens = Some(1024);
        let body = request_body(&config, &TurnRequest::new("x").with_max_tokens(5), false);
        assert_eq!(body["thinking"]["budget_tokens"], 1024);
        assert_eq!(body["max_tokens"], 5);
        assert!(body.get("system").is_none());
    }

    #[tokio::test]
    async fn a_recorded_stream_with_thinking_text_tools_ping_and_usage() {
        let sse: &[&[u8]] = &[
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
            b"event: ping\ndata: {\"type\": \"ping\"}\n\n",
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Let me see.\"}}\n\n",
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"abc\"}}\n\n",
            b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            b"event: content_block_start\r\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\r\n\r\n",
            b"event: content_block_delta\ndata:{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Checking \xe2\x80",
            b"\x94 \"}}\n\n",
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \\\"Par\"}}\n\n",
            b": a comment\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"is\\\"}\"}}\n\n",
            b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}\n\n",
            b"event: brand_new_event\ndata: {\"type\":\"brand_new_event\"}\n\n",
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}\n\n",
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ];
        let items = replay(sse, AnthropicStreamState::new()).await;
        let deltas = deltas(&items);
        let kinds: Vec<DeltaKind> = deltas.iter().map(|d| d.kind).collect();
        assert_eq!(
            kinds,
            [
                DeltaKind::Thinking,
                DeltaKind::Text,
                DeltaKind::ToolCall,
                DeltaKind::ToolCall,
                DeltaKind::ToolCall
            ]
        );
        assert_eq!(deltas[2].metadata["name"], "get_weather");
        assert_eq!(deltas[2].metadata["index"], 0);
        assert!(deltas[3].metadata.get("name").is_none());
        let output = done(&items);
        assert_eq!(output.content, "Checking — ");
        assert_eq!(output.finish_reason, FinishReason::ToolCalls);
        assert_eq!(output.tool_calls.len(), 1);
        assert_eq!(output.tool_calls[0].id, "toolu_1");
        assert_eq!(output.tool_calls[0].arguments, json!({ "city": "Paris" }));
        assert_eq!(output.usage, Usage::new(25, 42));
        assert_eq!(output.metadata["thinking"], "Let me see.");
        assert_eq!(output.metadata["id"], "msg_1");
    }

    #[tokio::test]
    async fn two_tool_calls_are_numbered_by_call_not_by_block() {
        let sse: &[&[u8]] = &[
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3}}}\n\n",
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"a\",\"name\":\"one\",\"input\":{}}}\n\n",
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"b\",\"name\":\"two\",\"input\":{\"whole\":true}}}\n\n",
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":9}}\n\n",
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ];
        let items = replay(sse, AnthropicStreamState::new()).await;
        let output = done(&items);
        let names: Vec<&str> = output.tool_calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["one", "two"]);
        assert_eq!(output.tool_calls[0].arguments, json!({}));
        assert_eq!(output.tool_calls[1].arguments, json!({ "whole": true }));
        let indexes: Vec<u64> = deltas(&items)
            .iter()
            .map(|d| d.metadata["index"].as_u64().unwrap())
            .collect();
        assert_eq!(indexes, [0, 1]);
    }

    #[tokio::test]
    async fn overloaded_error_mid_stream_is_a_retriable_error() {
        let sse: &[&[u8]] = &[
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3}}}\n\n",
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            b"event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n",
        ];
        let items = replay(sse, AnthropicStreamState::new()).await;
        let Some(Err(error)) = items.last() else {
            panic!("{items:?}")
        };
        assert_eq!(error.kind, ErrorKind::Unavailable);
        assert!(error.retriable);
        assert!(error.message.contains("Overloaded"));
        assert_eq!(error.metadata["type"], "overloaded_error");
    }

    #[tokio::test]
    async fn llama_cpp_error_events_are_errors_too() {
        let sse: &[&[u8]] =
            &[b"event: error\ndata: {\"code\":500,\"message\":\"boom\",\"type\":\"server_error\"}\n\n"];
        let items = replay(sse, AnthropicStreamState::new()).await;
        let Some(Err(error)) = items.last() else {
            panic!("{items:?}")
        };
        assert!(error.message.contains("boom"));
        assert_eq!(error.metadata["status"], 500);
    }

    #[tokio::test]
    async fn a_stream_without_message_stop_is_truncated() {
        let sse: &[&[u8]] = &[
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n",
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}\n\n",
        ];
        let items = replay(sse, AnthropicStreamState::new()).await;
        let Some(Err(error)) = items.last() else {
            panic!("{items:?}")
        };
        assert!(error.message.contains("message_stop"));
        assert_eq!(error.metadata["truncated"], true);
    }

    #[test]
    fn a_non_streamed_response_parses() {
        let body = json!({
            "id": "msg", "type": "message", "role": "assistant", "model": "m",
            "content": [
                { "type": "thinking", "thinking": "hm" },
                { "type": "text", "text": "Sure." },
                { "type": "tool_use", "id": "t", "name": "f", "input": { "a": 1 } }
            ],
            "stop_reason": "max_tokens",
            "usage": { "input_tokens": 10, "output_tokens": 3, "cache_read_input_tokens": 4 }
        });
        let output = parse_response(&body).unwrap();
        assert_eq!(output.content, "Sure.");
        assert_eq!(output.finish_reason, FinishReason::Length);
        assert_eq!(output.tool_calls[0].arguments, json!({ "a": 1 }));
        assert_eq!(output.usage.total_tokens, 13);
        assert_eq!(output.usage.cache_read_tokens, 4);
        assert_eq!(output.metadata["thinking"], "hm");
        let error = parse_response(&json!({
            "type": "error", "error": { "type": "rate_limit_error", "message": "wait" }
        }))
        .unwrap_err();
        assert_eq!(error.kind, runtime_api::ErrorKind::RateLimited);
    }
}
