//! From an OpenAI chat-completions request to a [`TurnRequest`], and from a [`TurnOutput`]
//! back to a chat completion.
//!
//! Messages map as follows: every `system` and `developer` message joins (blank-line
//! separated) into the system prompt; when the last message is the user's, its text is the
//! prompt and the messages before it are the history; otherwise (the conversation ends with
//! tool results or an assistant message) the prompt is empty and every message is history.

use runtime_api::{
    FinishReason, Message, Role, ToolCall, ToolDefinition, TurnOutput, TurnRequest, Usage,
};
use serde_json::Value;

use crate::error::ApiError;
use crate::wire::{
    AssistantMessage, ChatCompletion, ChatMessage, ChatRequest, Choice, Content, FunctionCall,
    Stop, WireToolCall, WireUsage,
};

/// What the server needs besides the turn itself.
#[derive(Debug)]
pub struct Options {
    /// Answer as server-sent events.
    pub stream: bool,
    /// Send the usage chunk at the end of a stream.
    pub include_usage: bool,
}

/// Parses the body, naming the field at fault when it does not fit.
pub fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::InvalidRequest {
                param: None,
                message: format!("the request body is not valid JSON: {inner}"),
            }
        } else {
            let missing = missing_field(&inner.to_string());
            let param = match (path.as_str(), missing) {
                (".", None) => None,
                (".", Some(field)) => Some(field),
                (_, Some(field)) => Some(format!("{path}.{field}")),
                (_, None) => Some(path.clone()),
            };
            ApiError::InvalidRequest {
                message: match &param {
                    Some(p) => format!("invalid field `{p}`: {inner}"),
                    None => format!("invalid request: {inner}"),
                },
                param,
            }
        }
    })
}

/// The field named by serde's "missing field `x`" message.
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split_once('`').map(|(field, _)| field.to_owned())
}

/// The `model` field split into the runtime's name and, after a `/`, the model to pass on.
pub fn split_model(model: &str) -> (&str, Option<&str>) {
    match model.split_once('/') {
        Some((runtime, inner)) if !inner.is_empty() => (runtime, Some(inner)),
        Some((runtime, _)) => (runtime, None),
        None => (model, None),
    }
}

fn text_of(content: Option<&Content>, at: usize) -> Result<String, ApiError> {
    match content {
        None => Ok(String::new()),
        Some(Content::Text(text)) => Ok(text.clone()),
        Some(Content::Parts(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                match (part.kind.as_str(), &part.text) {
                    ("text", Some(piece)) => text.push_str(piece),
                    ("text", None) => {
                        return Err(ApiError::field(
                            format!("messages[{at}].content[{j}].text"),
                            "a text part needs `text`",
                        ));
                    }
                    (other, _) => {
                        return Err(ApiError::field(
                            format!("messages[{at}].content[{j}].type"),
                            format!(
                                "content parts of type `{}` are not supported: send `text` parts",
                                other.escape_debug()
                            ),
                        ));
                    }
                }
            }
            Ok(text)
        }
    }
}

fn tool_calls_of(message: &ChatMessage) -> Vec<ToolCall> {
    message
        .tool_calls
        .iter()
        .flatten()
        .map(|call| {
            let arguments = serde_json::from_str(&call.function.arguments)
                .unwrap_or_else(|_| Value::String(call.function.arguments.clone()));
            ToolCall::new(call.id.clone(), call.function.name.clone(), arguments)
        })
        .collect()
}

/// Builds the turn; `model` is what followed `RUNTIME/` in the request's model, if anything.
pub fn to_turn(
    request: ChatRequest,
    model: Option<&str>,
    execution_id: &str,
) -> Result<(TurnRequest, Options), ApiError> {
    if request.messages.is_empty() {
        return Err(ApiError::field("messages", "`messages` must not be empty"));
    }
    if let Some(n) = request.n.filter(|n| *n != 1) {
        return Err(ApiError::field(
            "n",
            format!("only n = 1 is supported, not {n}"),
        ));
    }
    if let Some(t) = request
        .temperature
        .filter(|t| !(t.is_finite() && (0.0..=2.0).contains(t)))
    {
        return Err(ApiError::field(
            "temperature",
            format!("`temperature` must be between 0 and 2, not {t}"),
        ));
    }
    let mut system: Vec<String> = Vec::new();
    let mut history: Vec<Message> = Vec::new();
    for (at, message) in request.messages.iter().enumerate() {
        let text = text_of(message.content.as_ref(), at)?;
        let converted = match message.role.as_str() {
            "system" | "developer" => {
                system.push(text);
                continue;
            }
            "user" => Message::user(text),
            "assistant" => {
                let calls = tool_calls_of(message);
                let mut m = Message::assistant_tool_calls(calls);
                m.content = text;
                m
            }
            "tool" => {
                let Some(id) = &message.tool_call_id else {
                    return Err(ApiError::field(
                        format!("messages[{at}].tool_call_id"),
                        "a `tool` message needs `tool_call_id`",
                    ));
                };
                Message::tool_result(id.clone(), text)
            }
            other => {
                return Err(ApiError::field(
                    format!("messages[{at}].role"),
                    format!(
                        "unknown role `{}`: use system, developer, user, assistant or tool",
                        other.escape_debug()
                    ),
                ));
            }
        };
        history.push(converted);
    }
    let prompt = match history.last() {
        Some(last) if last.role == Role::User => history.pop().map(|m| m.content),
        _ => None,
    }
    .unwrap_or_default();

    let hide_tools = request.tool_choice.as_ref().and_then(Value::as_str) == Some("none");
    let mut tools = Vec::new();
    for (at, tool) in request.tools.iter().flatten().enumerate() {
        if tool.kind != "function" {
            return Err(ApiError::field(
                format!("tools[{at}].type"),
                format!(
                    "tools of type `{}` are not supported: send `function` tools",
                    tool.kind.escape_debug()
                ),
            ));
        }
        if tool.function.name.is_empty() {
            return Err(ApiError::field(
                format!("tools[{at}].function.name"),
                "a tool needs a name",
            ));
        }
        tools.push(ToolDefinition::new(
            tool.function.name.clone(),
            tool.function.description.clone().unwrap_or_default(),
            tool.function.parameters.clone().unwrap_or(Value::Null),
        ));
    }

    let mut turn = TurnRequest::new(prompt)
        .with_history(history)
        .with_execution_id(execution_id);
    if !system.is_empty() {
        turn = turn.with_system(system.join("\n\n"));
    }
    if let Some(model) = model {
        turn = turn.with_model(model);
    }
    if !hide_tools {
        turn = turn.with_tools(tools);
    }
    if let Some(max) = request.max_completion_tokens.or(request.max_tokens) {
        turn = turn.with_max_tokens(max);
    }
    if let Some(t) = request.temperature {
        turn = turn.with_temperature(t);
    }
    turn.sampling.stop = match request.stop {
        None => Vec::new(),
        Some(Stop::One(one)) => vec![one],
        Some(Stop::Many(many)) => many,
    };
    let stream = request.stream.unwrap_or(false);
    let include_usage = request
        .stream_options
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    Ok((
        turn,
        Options {
            stream,
            include_usage,
        },
    ))
}

/// OpenAI's name for why the turn ended; a turn with tool calls ends with `tool_calls`.
pub fn finish_reason(reason: &FinishReason, has_tool_calls: bool) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::ToolCalls => "tool_calls",
        _ if has_tool_calls => "tool_calls",
        _ => "stop",
    }
}

/// A tool call's arguments as the JSON text OpenAI sends.
pub fn arguments_text(arguments: &Value) -> String {
    match arguments {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The usage in OpenAI's names; the total is the sum when the runtime did not report it.
pub fn usage(usage: &Usage) -> WireUsage {
    let total = if usage.total_tokens == 0 {
        usage.input_tokens + usage.output_tokens
    } else {
        usage.total_tokens
    };
    WireUsage {
        prompt_tokens: usage.input_tokens,
        completion_tokens: usage.output_tokens,
        total_tokens: total,
    }
}

/// The non-streamed answer.
pub fn completion(output: TurnOutput, id: String, created: u64, model: String) -> ChatCompletion {
    let tool_calls: Vec<WireToolCall> = output
        .tool_calls
        .iter()
        .map(|call| WireToolCall {
            id: call.id.clone(),
            kind: "function".to_owned(),
            function: FunctionCall {
                name: call.name.clone(),
                arguments: arguments_text(&call.arguments),
            },
        })
        .collect();
    let reason = finish_reason(&output.finish_reason, !tool_calls.is_empty());
    let content = if output.content.is_empty() && !tool_calls.is_empty() {
        None
    } else {
        Some(output.content)
    };
    ChatCompletion {
        id,
        object: "chat.completion",
        created,
        model,
        choices: vec![Choice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content,
                tool_calls,
            },
            finish_reason: reason,
            logprobs: None,
        }],
        usage: usage(&output.usage),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn turn(body: Value) -> Result<(TurnRequest, Options), ApiError> {
        let request = parse(body.to_string().as_bytes())?;
        to_turn(request, Some("inner"), "exec-1")
    }

    #[test]
    fn messages_split_into_system_history_and_prompt() {
        let (turn, options) = turn(json!({
            "model": "echo",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "developer", "content": [{"type": "text", "text": "and kind"}]},
                {"role": "user", "content": "what now?"}
            ],
            "max_tokens": 7, "temperature": 0.5, "stop": "END",
            "stream": true, "stream_options": {"include_usage": true}
        }))
        .unwrap();
        assert_eq!(turn.prompt, "what now?");
        assert_eq!(turn.system.as_deref(), Some("be brief\n\nand kind"));
        assert_eq!(
            turn.history,
            vec![Message::user("hi"), Message::assistant("hello")]
        );
        assert_eq!(turn.model.as_deref(), Some("inner"));
        assert_eq!(turn.execution_id, "exec-1");
        assert_eq!(turn.sampling.max_tokens, Some(7));
        assert_eq!(turn.sampling.temperature, Some(0.5));
        assert_eq!(turn.sampling.stop, vec!["END".to_owned()]);
        assert!(options.stream && options.include_usage);
    }

    #[test]
    fn tool_results_end_the_history_with_an_empty_prompt() {
        let (turn, _) = turn(json!({
            "model": "echo",
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
        }))
        .unwrap();
        assert_eq!(turn.prompt, "");
        assert_eq!(turn.history.len(), 3);
        assert_eq!(
            turn.history[1].tool_calls[0].arguments,
            json!({"city": "Oslo"})
        );
        assert_eq!(turn.history[2].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(turn.tools[0].name, "weather");
    }

    #[test]
    fn bad_fields_are_named() {
        let param = |body: Value| match turn(body) {
            Err(e) => e.param(),
            Ok(_) => panic!("accepted"),
        };
        assert_eq!(
            param(json!({"model": "echo", "messages": [{"role": "pilot", "content": "x"}]})),
            Some("messages[0].role".into())
        );
        assert_eq!(
            param(json!({"model": "echo", "messages": [{"role": "user", "content": 5}]})),
            Some("messages[0].content".into())
        );
        assert_eq!(param(json!({"messages": []})), Some("model".into()));
        assert_eq!(
            param(json!({"model": "echo", "messages": [{"content": "x"}]})),
            Some("messages[0].role".into())
        );
        assert_eq!(
            param(json!({"model": "echo", "messages": [{"role": "user"}], "temperature": 9})),
            Some("temperature".into())
        );
        assert_eq!(
            param(json!({"model": 3, "messages": []})),
            Some("model".into())
        );
    }

    #[test]
    fn model_splits_at_the_first_slash() {
        assert_eq!(split_model("llm/gpt-4o"), ("llm", Some("gpt-4o")));
        assert_eq!(split_model("llm/org/m"), ("llm", Some("org/m")));
        assert_eq!(split_model("echo"), ("echo", None));
    }
}
