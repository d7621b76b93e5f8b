//! The Chat Completions request body of a turn.

use runtime_api::{Message, Role, ToolDefinition, TurnRequest, Value, json};

use crate::config::ServerConfig;
use crate::tools::{arguments_text, schema_or_empty};

/// The conversation of a request as Chat Completions messages: the system prompt, the
/// history, then the prompt (an empty prompt adds no user message, so a history may end with
/// a tool result or an assistant prefill).
pub fn messages(request: &TurnRequest) -> Vec<Value> {
    let mut messages = Vec::new();
    if let Some(system) = request.system.as_deref().filter(|s| !s.is_empty()) {
        messages.push(json!({ "role": "system", "content": system }));
    }
    for message in &request.history {
        messages.push(message_json(message));
    }
    if !request.prompt.is_empty() {
        messages.push(json!({ "role": "user", "content": request.prompt }));
    }
    messages
}

/// One message as Chat Completions has it: an assistant's tool calls as `function` calls
/// (content `null` when empty), a tool result with its `tool_call_id`.
pub fn message_json(message: &Message) -> Value {
    match &message.role {
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
    }
}

/// A `function` tool as Chat Completions offers it.
pub fn tool(name: &str, description: &str, parameters: Value) -> Value {
    json!({
        "type": "function",
        "function": { "name": name, "description": description, "parameters": parameters },
    })
}

/// A request's tools as `function` tools (one without a schema gets the empty object schema).
pub fn tools(tools: &[ToolDefinition]) -> Vec<Value> {
    tools
        .iter()
        .map(|t| tool(&t.name, &t.description, schema_or_empty(&t.parameters)))
        .collect()
}

/// The Chat Completions request body of a turn.
pub fn request_body(config: &ServerConfig, request: &TurnRequest, stream: bool) -> Value {
    body(
        config,
        request,
        messages(request),
        tools(&request.tools),
        stream,
    )
}

/// A Chat Completions request body with these `messages` and `tools`: the request's model
/// (else the config's), `max_tokens` (else the config's), `temperature` and `stop`, usage asked
/// for in a stream when the config says so, then the config's `extra_body` merged in.
pub fn body(
    config: &ServerConfig,
    request: &TurnRequest,
    messages: Vec<Value>,
    tools: Vec<Value>,
    stream: bool,
) -> Value {
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
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
    }
    for (key, value) in &config.extra_body {
        body.insert(key.clone(), value.clone());
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use runtime_api::ToolCall;

    use super::*;
    use crate::config::{Fields, object};

    fn config() -> ServerConfig {
        let value = json!({ "base_url": "http://127.0.0.1:9/v1", "model": "tiny" });
        let mut fields = Fields::new(object(&value, "test").unwrap());
        let config = ServerConfig::parse(&mut fields);
        fields.finish(config).unwrap()
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

    #[test]
    fn history_maps_to_chat_messages() {
        let request = TurnRequest::new("now?")
            .with_system("be brief")
            .with_history(vec![
                Message::user("weather?"),
                Message::assistant_tool_calls(vec![ToolCall::new(
                    "c1",
                    "w",
                    json!({ "city": "Paris" }),
                )]),
                Message::tool_result("c1", "sunny"),
            ]);
        let messages = messages(&request);
        let roles: Vec<&str> = messages
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
        assert_eq!(
            messages[2]["tool_calls"][0]["function"]["arguments"],
            r#"{"city":"Paris"}"#
        );
        assert_eq!(messages[3]["tool_call_id"], "c1");
    }

    #[test]
    fn a_tool_without_a_schema_gets_the_empty_object_schema() {
        let tools = tools(&[ToolDefinition::new("weather", "host's", Value::Null)]);
        assert_eq!(tools[0]["function"]["parameters"]["type"], "object");
        assert_eq!(tools[0]["function"]["name"], "weather");
    }
}
