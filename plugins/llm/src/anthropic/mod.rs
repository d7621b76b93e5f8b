//! `anthropic`: the Anthropic Messages API (and servers that speak it, such as llama.cpp's
//! `/v1/messages`): the runtime, its request body and whole responses here, streamed
//! responses in [`stream`].

mod stream;

use openai_wire::{http, parse_arguments, schema_or_empty};
use reqwest::header::{HeaderName, HeaderValue};
use runtime_api::{
    FinishReason, Role, RuntimeError, ToolCall, TurnOutput, TurnRequest, Usage, Value, json,
};

pub use self::stream::AnthropicStreamState;
use crate::config::{Config, DEFAULT_ANTHROPIC_MAX_TOKENS, Provider};
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
        if let Some(key) = config.server.api_key()? {
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
        json!(request.model.as_deref().unwrap_or(&config.server.model)),
    );
    body.insert(
        "max_tokens".into(),
        json!(
            request
                .sampling
                .max_tokens
                .or(config.server.max_tokens)
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
                    "input_schema": schema_or_empty(&tool.parameters),
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
    for (key, value) in &config.server.extra_body {
        body.insert(key.clone(), value.clone());
    }
    Value::Object(body)
}

/// Anthropic's stop reasons.
pub(super) fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// Merges the counts an Anthropic usage object carries into `usage`; absent counts are kept.
pub(super) fn merge_usage(usage: &mut Usage, value: &Value) {
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

pub(super) fn metadata(message: &Value, thinking: &str) -> Value {
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

#[cfg(test)]
mod tests {
    use runtime_api::{Message, ToolDefinition};

    use super::*;

    fn config() -> Config {
        Config::parse(
            Provider::Anthropic,
            &json!({ "base_url": "http://127.0.0.1:9/v1", "model": "claude-tiny" }),
        )
        .unwrap()
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
