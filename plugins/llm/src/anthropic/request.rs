//! The Messages request body of a turn.

use openai_wire::{parse_arguments, schema_or_empty};
use runtime_api::{Role, TurnRequest, Value, json};

use crate::config::{Config, DEFAULT_ANTHROPIC_MAX_TOKENS};

/// The Messages request body for a turn.
pub(super) fn request_body(config: &Config, request: &TurnRequest, stream: bool) -> Value {
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

#[cfg(test)]
mod tests {
    use runtime_api::{Message, ToolCall, ToolDefinition};

    use super::*;
    use crate::config::Provider;

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
}
