//! The one OpenAI-compatible HTTP client of agent-runtimes, shared by the `llm` plugin (its
//! `openai` runtime, and the HTTP and SSE plumbing of its `anthropic` runtime) and the `agent`
//! plugin (its model calls).
//!
//! - [`config`]: the configuration keys every HTTP model runtime reads (`base_url`, `model`,
//!   `api_key_env`, `headers`, timeouts, `max_tokens`, `extra_body`, `include_usage`), parsed
//!   so that every problem is reported at once, the API key read from the environment, and the
//!   HTTP client built from them;
//! - [`http`]: sending a request (with one retry on a pooled connection the server had
//!   closed), and HTTP statuses, provider error objects and transport failures mapped to
//!   [`RuntimeError`](runtime_api::RuntimeError)s;
//! - [`sse`]: server-sent events framed by `eventsource-stream` and fed to a provider's
//!   [`StreamDecoder`], as a stream of deltas and then the final output;
//! - [`chat`]: the Chat Completions API: the request body of a turn, the non-streamed
//!   response, and [`OpenAiStreamState`], the decoder of a streamed one.
//!
//! This is a plain library: it exports no plugin symbols (`export_plugin!` belongs to the
//! plugins that link it; a library exporting two plugin manifests is refused as ambiguous).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chat;
pub mod config;
pub mod http;
pub mod sse;

pub use chat::OpenAiStreamState;
pub use config::{Fields, ServerConfig, is_env_name, type_name};
pub use sse::StreamDecoder;

use runtime_api::{Value, json};

/// Tool-call arguments from their JSON text: `{}` when empty, the parsed value when valid,
/// else the text itself as a JSON string (as [`runtime_api::ToolCall`] documents).
pub fn parse_arguments(text: &str) -> Value {
    if text.trim().is_empty() {
        return json!({});
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// Tool-call arguments as the JSON text OpenAI expects: a string as it is, `null` as `{}`,
/// anything else as its JSON.
pub fn arguments_text(arguments: &Value) -> String {
    match arguments {
        Value::String(text) => text.clone(),
        Value::Null => "{}".to_owned(),
        other => other.to_string(),
    }
}

/// A tool's parameter schema, or the empty object schema when it has none.
pub fn schema_or_empty(parameters: &Value) -> Value {
    if parameters.is_object() {
        parameters.clone()
    } else {
        json!({ "type": "object", "properties": {} })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse_or_stay_text() {
        assert_eq!(parse_arguments(""), json!({}));
        assert_eq!(parse_arguments(r#"{"a":1}"#), json!({ "a": 1 }));
        assert_eq!(parse_arguments("{oops"), json!("{oops"));
        assert_eq!(arguments_text(&json!({ "a": 1 })), r#"{"a":1}"#);
        assert_eq!(arguments_text(&Value::Null), "{}");
        assert_eq!(schema_or_empty(&Value::Null)["type"], "object");
    }
}
