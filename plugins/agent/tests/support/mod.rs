//! What the agent runtime's tests share: a scripted OpenAI-compatible model server (axum on
//! 127.0.0.1, answers from a script, records every request), the reference MCP servers
//! installed by `scripts/mcp-servers.sh`, and stream helpers.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_runtime::AgentRuntime;
use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::routing::post;
use futures::StreamExt as _;
use runtime_api::{
    Delta, DeltaKind, Runtime, RuntimeError, StreamItem, TurnOutput, TurnRequest, Value, json,
};

/// One scripted model reply.
#[derive(Clone)]
pub enum Reply {
    /// Text, streamed in two pieces, finish reason `stop`.
    Text(String),
    /// Tool calls `(id, name, arguments)`, finish reason `tool_calls`.
    Calls(Vec<(String, String, Value)>),
    /// Runs the action, then replies.
    After(Arc<dyn Fn() + Send + Sync>, Box<Reply>),
}

impl Reply {
    pub fn text(text: &str) -> Reply {
        Reply::Text(text.to_owned())
    }

    pub fn call(id: &str, name: &str, arguments: Value) -> Reply {
        Reply::Calls(vec![(id.to_owned(), name.to_owned(), arguments)])
    }
}

/// Usage each scripted reply reports.
pub const PROMPT_TOKENS: u64 = 11;
pub const COMPLETION_TOKENS: u64 = 5;

#[derive(Clone)]
struct Script {
    replies: Arc<Vec<Reply>>,
    requests: Arc<Mutex<Vec<Value>>>,
}

fn sse(reply: &Reply) -> String {
    let mut events = Vec::new();
    let chunk = |delta: Value, finish: Value| json!({ "id": "c", "model": "scripted", "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] });
    let finish = match reply {
        Reply::Text(text) => {
            let middle = text
                .char_indices()
                .nth(text.chars().count() / 2)
                .map_or(0, |(i, _)| i);
            events.push(chunk(
                json!({ "role": "assistant", "content": &text[..middle] }),
                Value::Null,
            ));
            events.push(chunk(json!({ "content": &text[middle..] }), Value::Null));
            "stop"
        }
        Reply::Calls(calls) => {
            for (index, (id, name, arguments)) in calls.iter().enumerate() {
                let text = arguments.to_string();
                let cut = text.len() / 2;
                events.push(chunk(
                    json!({ "tool_calls": [{ "index": index, "id": id, "type": "function",
                        "function": { "name": name, "arguments": &text[..cut] } }] }),
                    Value::Null,
                ));
                events.push(chunk(
                    json!({ "tool_calls": [{ "index": index, "function": { "arguments": &text[cut..] } }] }),
                    Value::Null,
                ));
            }
            "tool_calls"
        }
        Reply::After(_, reply) => return sse(reply),
    };
    events.push(chunk(json!({}), json!(finish)));
    events.push(json!({ "choices": [], "usage": {
        "prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS } }));
    let mut body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    body.push_str("data: [DONE]\n\n");
    body
}

async fn completions(
    State(script): State<Script>,
    body: String,
) -> impl axum::response::IntoResponse {
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let n = {
        let mut requests = script.requests.lock().unwrap();
        requests.push(request);
        requests.len()
    };
    let reply = script.replies[(n - 1).min(script.replies.len() - 1)].clone();
    if let Reply::After(action, _) = &reply {
        action();
    }
    ([(CONTENT_TYPE, "text/event-stream")], sse(&reply))
}

/// A scripted OpenAI-compatible model server: the n-th request gets the n-th reply (the last
/// one again past the end).
pub struct ModelServer {
    pub base_url: String,
    requests: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ModelServer {
    pub async fn start(replies: Vec<Reply>) -> ModelServer {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Script {
            replies: Arc::new(replies),
            requests: requests.clone(),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(script);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ModelServer {
            base_url: format!("http://{address}/v1"),
            requests,
            task,
        }
    }

    /// The request bodies received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The folder the reference MCP servers are installed in.
pub fn mcp_servers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts/mcp-servers/node_modules/@modelcontextprotocol")
}

/// The entry point of a reference MCP server (`server-filesystem`, `server-everything`).
pub fn server_entry(name: &str) -> String {
    let path = mcp_servers_dir().join(name).join("dist/index.js");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/mcp-servers.sh (it installs the pinned reference MCP servers \
         from npm)",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

/// The stdio spec of the filesystem server over `dir`.
pub fn filesystem(dir: &Path) -> Value {
    json!({ "command": "node", "args": [server_entry("server-filesystem"), dir] })
}

/// The stdio spec of the everything server.
pub fn everything() -> Value {
    json!({ "command": "node", "args": [server_entry("server-everything"), "stdio"] })
}

/// A runtime on the scripted server with these extra config keys.
pub fn runtime(model: &ModelServer, extra: Value) -> Arc<AgentRuntime> {
    let mut config = json!({ "base_url": model.base_url, "model": "scripted" });
    if let (Some(config), Value::Object(extra)) = (config.as_object_mut(), extra) {
        config.extend(extra);
    }
    Arc::new(AgentRuntime::new(config).expect("a valid config"))
}

/// Every item of a turn's stream, within a minute.
pub async fn collect(
    runtime: &Arc<AgentRuntime>,
    request: TurnRequest,
) -> Vec<Result<StreamItem, RuntimeError>> {
    tokio::time::timeout(
        Duration::from_secs(60),
        runtime.clone().stream_turn(request).collect::<Vec<_>>(),
    )
    .await
    .expect("the turn ended within a minute")
}

/// The deltas of a stream.
pub fn deltas(items: &[Result<StreamItem, RuntimeError>]) -> Vec<&Delta> {
    items
        .iter()
        .filter_map(|item| match item {
            Ok(StreamItem::Delta(delta)) => Some(delta),
            _ => None,
        })
        .collect()
}

/// The tool-result deltas of a stream.
pub fn tool_results(items: &[Result<StreamItem, RuntimeError>]) -> Vec<&Delta> {
    deltas(items)
        .into_iter()
        .filter(|d| d.kind == DeltaKind::ToolResult)
        .collect()
}

/// The decided tool calls of a stream.
pub fn tool_calls(items: &[Result<StreamItem, RuntimeError>]) -> Vec<&Delta> {
    deltas(items)
        .into_iter()
        .filter(|d| d.kind == DeltaKind::ToolCall)
        .collect()
}

/// The final output, after checking the stream contract: only deltas before it, and the text
/// deltas concatenated equal its content.
pub fn finished(items: &[Result<StreamItem, RuntimeError>]) -> TurnOutput {
    let (last, before) = items.split_last().expect("items");
    let Ok(StreamItem::Done(output)) = last else {
        panic!("the stream did not end with Done: {last:?}")
    };
    let text: String = before
        .iter()
        .map(|item| match item {
            Ok(StreamItem::Delta(d)) if d.kind == DeltaKind::Text => d.content.clone(),
            Ok(StreamItem::Delta(_)) => String::new(),
            other => panic!("only deltas before Done: {other:?}"),
        })
        .collect();
    assert_eq!(text, output.content);
    output.clone()
}

/// The error a stream ended with, after checking that only deltas came before it.
pub fn failed(items: &[Result<StreamItem, RuntimeError>]) -> RuntimeError {
    let (last, before) = items.split_last().expect("items");
    assert!(
        before.iter().all(|i| matches!(i, Ok(StreamItem::Delta(_)))),
        "{items:?}"
    );
    match last {
        Err(error) => error.clone(),
        other => panic!("the stream did not end with an error: {other:?}"),
    }
}

/// The `tool` messages of a model request.
pub fn tool_messages(request: &Value) -> Vec<String> {
    request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Whether a process is gone (no such pid, or a zombie), waiting up to 10 s for it to go:
/// SIGKILL is delivered asynchronously, so its end is polled for (bounded), not slept on.
pub fn gone(pid: u32) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let dead = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            // The state is the field after the parenthesised command name.
            Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| {
                matches!(rest.trim_start().chars().next(), Some('Z' | 'X'))
            }),
        };
        if dead {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The child pids of a process.
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}
