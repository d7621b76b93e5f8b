//! One model call: a streamed Chat Completions request to an OpenAI-compatible server, its SSE
//! events decoded into text and thinking deltas (sent as they arrive) and the step's result:
//! its text, the tool calls it decided, its usage and finish reason.
//!
//! SSE framing is `eventsource-stream`'s. A stream that ends without `data: [DONE]` is an
//! error (`unavailable`, `truncated: true`), not an answer. HTTP failures map as in the `openai`
//! runtime: 401/403 `authentication`, 429 `rate_limited`, 408/504 `timeout`, other 4xx
//! `invalid_request`, 5xx and connection failures `unavailable`.

use std::collections::BTreeMap;
use std::error::Error as _;

use eventsource_stream::{EventStreamError, Eventsource as _};
use futures::StreamExt as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use runtime_api::{Delta, ErrorKind, RuntimeError, ToolCall, Usage, Value, json};
use tokio::sync::mpsc;

use crate::config::Config;

/// The most of an error body kept in a message.
const MAX_ERROR_BODY: usize = 2048;

/// What one model call decided.
#[derive(Debug, Default)]
pub(crate) struct Step {
    pub content: String,
    pub thinking: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: Option<String>,
    pub usage: Usage,
    pub model: Option<String>,
    /// Whether the `lead` text was sent before this step's first text.
    pub lead_sent: bool,
}

#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// Posts `body` (a streamed Chat Completions request) and decodes the stream; text and
/// thinking deltas go to `deltas` as they arrive, the text preceded by `lead` (a separator
/// from the text of earlier steps) when there is any.
///
/// # Errors
///
/// A [`RuntimeError`] for a transport failure, an HTTP error, an error object in the stream, or
/// a truncated stream.
pub(crate) async fn call(
    client: &reqwest::Client,
    config: &Config,
    body: &Value,
    deltas: &mpsc::Sender<Delta>,
    mut lead: Option<&str>,
) -> Result<Step, RuntimeError> {
    let url = format!("{}/chat/completions", config.base_url);
    let bytes = serde_json::to_vec(body)
        .map_err(|e| RuntimeError::internal(format!("could not encode the request: {e}")))?;
    let mut request = client
        .post(&url)
        .headers(config.headers.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, "text/event-stream")
        .body(bytes);
    if let Some(bearer) = config.api_key()? {
        request = request.header(AUTHORIZATION, bearer);
    }
    tracing::debug!(%url, model = %body["model"], "calling the model");
    let response = request
        .send()
        .await
        .map_err(|e| transport_error(&e, "request"))?;
    let status = response.status();
    if !status.is_success() {
        let body = match response.bytes().await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(error) => format!("(the error body could not be read: {error})"),
        };
        return Err(status_error(status.as_u16(), &body));
    }

    let mut events = response.bytes_stream().eventsource();
    let mut step = Step::default();
    let mut calls: BTreeMap<u64, PartialCall> = BTreeMap::new();
    let mut done = false;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(EventStreamError::Transport(error)) => {
                return Err(transport_error(&error, "stream"));
            }
            Err(error) => {
                return Err(RuntimeError::unavailable(format!(
                    "the model's event stream is malformed: {error}"
                )));
            }
        };
        let data = event.data.trim();
        if data == "[DONE]" {
            done = true;
            break;
        }
        if data.is_empty() {
            continue;
        }
        let chunk: Value = serde_json::from_str(data).map_err(|error| {
            RuntimeError::unavailable(format!(
                "the model sent a chunk that is not JSON ({error}): {}",
                truncate(data, 256)
            ))
        })?;
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            return Err(stream_error(error));
        }
        if step.model.is_none() {
            step.model = chunk["model"].as_str().map(str::to_owned);
        }
        if chunk["usage"].is_object() {
            step.usage = usage(&chunk["usage"]);
        }
        let Some(choice) = chunk["choices"].as_array().and_then(|c| c.first()) else {
            continue;
        };
        let delta = &choice["delta"];
        for key in ["reasoning_content", "reasoning"] {
            if let Some(text) = delta[key].as_str().filter(|t| !t.is_empty()) {
                step.thinking.push_str(text);
                let _ = deltas.send(Delta::thinking(text)).await;
            }
        }
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            if let Some(lead) = lead.take() {
                step.lead_sent = true;
                let _ = deltas.send(Delta::text(lead)).await;
            }
            step.content.push_str(text);
            let _ = deltas.send(Delta::text(text)).await;
        }
        if let Some(fragments) = delta["tool_calls"].as_array() {
            for (position, fragment) in fragments.iter().enumerate() {
                let index = fragment["index"]
                    .as_u64()
                    .unwrap_or(u64::try_from(position).unwrap_or(0));
                let call = calls.entry(index).or_default();
                if let Some(id) = fragment["id"].as_str().filter(|s| !s.is_empty())
                    && call.id.is_empty()
                {
                    call.id = id.to_owned();
                }
                if let Some(name) = fragment["function"]["name"].as_str()
                    && call.name.is_empty()
                {
                    call.name = name.to_owned();
                }
                match &fragment["function"]["arguments"] {
                    Value::String(text) => call.arguments.push_str(text),
                    Value::Null => {}
                    other => call.arguments.push_str(&other.to_string()),
                }
            }
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            step.finish_reason = Some(reason.to_owned());
        }
    }
    if !done {
        return Err(RuntimeError::unavailable(
            "the model's stream ended without `data: [DONE]`: the answer is truncated",
        )
        .with_metadata(json!({ "during": "stream", "truncated": true })));
    }
    step.tool_calls = calls
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
    Ok(step)
}

/// Tool-call arguments from their JSON text: `{}` when empty, the parsed value when valid, else
/// the text itself as a JSON string.
pub(crate) fn parse_arguments(text: &str) -> Value {
    if text.trim().is_empty() {
        return json!({});
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// Tool-call arguments as the JSON text OpenAI expects.
pub(crate) fn arguments_text(arguments: &Value) -> String {
    match arguments {
        Value::String(text) => text.clone(),
        Value::Null => "{}".to_owned(),
        other => other.to_string(),
    }
}

/// OpenAI's usage object.
fn usage(value: &Value) -> Usage {
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

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn kind_for_status(status: u16) -> ErrorKind {
    match status {
        401 | 403 => ErrorKind::Authentication,
        408 | 504 => ErrorKind::Timeout,
        429 => ErrorKind::RateLimited,
        500..=599 => ErrorKind::Unavailable,
        400..=499 => ErrorKind::InvalidRequest,
        _ => ErrorKind::Internal,
    }
}

fn provider_message(value: &Value) -> Option<String> {
    let error = value.get("error").unwrap_or(value);
    match error {
        Value::String(text) => Some(text.clone()),
        _ => error
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned),
    }
}

/// An error for a non-success HTTP status, with the provider's message when the body has one.
fn status_error(status: u16, body: &str) -> RuntimeError {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .as_ref()
        .and_then(provider_message)
        .unwrap_or_else(|| truncate(body.trim(), MAX_ERROR_BODY).to_owned());
    let retriable = matches!(status, 408 | 429 | 500..=599);
    RuntimeError::new(
        kind_for_status(status),
        format!("the model server answered HTTP {status}: {message}"),
    )
    .with_retriable(retriable)
    .with_metadata(json!({ "status": status, "during": "model" }))
}

/// An error object that arrived inside the stream.
fn stream_error(error: &Value) -> RuntimeError {
    let message = provider_message(&json!({ "error": error }))
        .unwrap_or_else(|| truncate(&error.to_string(), MAX_ERROR_BODY).to_owned());
    let kind = error
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .map_or(ErrorKind::Unavailable, kind_for_status);
    RuntimeError::new(
        kind,
        format!("the model server reported an error mid-stream: {message}"),
    )
    .with_metadata(json!({ "during": "stream" }))
}

/// An error for a transport failure `during` a phase.
fn transport_error(error: &reqwest::Error, during: &str) -> RuntimeError {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    let metadata = json!({ "during": during });
    if error.is_timeout() {
        RuntimeError::timeout(format!("the model {during} timed out: {text}"))
            .with_metadata(metadata)
    } else if error.is_connect() {
        RuntimeError::unavailable(format!("could not connect to the model server: {text}"))
            .with_metadata(metadata)
    } else {
        RuntimeError::unavailable(format!("the model {during} failed: {text}"))
            .with_metadata(metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds() {
        let error = status_error(429, r#"{"error":{"message":"slow down"}}"#);
        assert_eq!(error.kind, ErrorKind::RateLimited);
        assert!(error.retriable);
        assert!(error.message.contains("slow down"));
        assert_eq!(status_error(401, "").kind, ErrorKind::Authentication);
        assert_eq!(status_error(400, "bad").kind, ErrorKind::InvalidRequest);
        assert_eq!(status_error(503, "").kind, ErrorKind::Unavailable);
    }

    #[test]
    fn arguments_parse_or_stay_text() {
        assert_eq!(parse_arguments(""), json!({}));
        assert_eq!(parse_arguments(r#"{"a":1}"#), json!({ "a": 1 }));
        assert_eq!(parse_arguments("{oops"), json!("{oops"));
        assert_eq!(arguments_text(&json!({ "a": 1 })), r#"{"a":1}"#);
    }
}
