//! Tool calls and tool schemas as JSON, the same for every provider.

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
