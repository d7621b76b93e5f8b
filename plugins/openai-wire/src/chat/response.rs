//! A non-streamed Chat Completions response, and the parts of one a stream shares.

use runtime_api::{FinishReason, RuntimeError, ToolCall, TurnOutput, Usage, Value, json};

use crate::http;
use crate::tools::parse_arguments;

/// OpenAI's finish reasons.
pub fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// OpenAI's usage object.
pub fn usage(value: &Value) -> Usage {
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
pub fn parse_response(body: &Value) -> Result<TurnOutput, RuntimeError> {
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

/// The metadata of a response or of a stream's first chunk: its `id`, `model` and
/// `system_fingerprint`, and the thinking text when there is any.
pub(crate) fn response_metadata(body: &Value, thinking: &str) -> Value {
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

#[cfg(test)]
mod tests {
    use runtime_api::ErrorKind;

    use super::*;

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
