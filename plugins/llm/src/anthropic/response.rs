//! A non-streamed Messages response, and the parts of one a stream shares.

use openai_wire::http;
use runtime_api::{FinishReason, RuntimeError, ToolCall, TurnOutput, Usage, Value, json};

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
pub(super) fn parse_response(body: &Value) -> Result<TurnOutput, RuntimeError> {
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
    use super::*;

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
