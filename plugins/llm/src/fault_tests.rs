//! The runtimes against a small local fault server: a tokio listener on 127.0.0.1 that
//! answers each request with a scripted raw HTTP response (statuses, slow chunks, cut
//! streams, a kept-alive connection closed under the client).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use runtime_api::{
    DeltaKind, ErrorKind, FinishReason, Runtime, RuntimeError, StreamItem, TurnOutput, TurnRequest,
    Value, json,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::{AnthropicRuntime, OpenAiRuntime};

/// What the server does with the next request.
enum Reply {
    /// Writes each part after its delay; closes the connection afterwards unless kept alive.
    Send {
        parts: Vec<(u64, Vec<u8>)>,
        keep_alive: bool,
    },
    /// Closes the connection without answering.
    Hangup,
}

struct Server {
    base_url: String,
    requests: Arc<Mutex<Vec<String>>>,
    /// One message per connection the client closed while the server was still writing or
    /// waiting, so a test can see a cancelled stream close its connection.
    closed: mpsc::UnboundedReceiver<()>,
}

impl Server {
    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

async fn serve(replies: Vec<Reply>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let replies = Arc::new(Mutex::new(VecDeque::from(replies)));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (closed_tx, closed) = mpsc::unbounded_channel();
    let recorded = Arc::clone(&requests);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let replies = Arc::clone(&replies);
            let recorded = Arc::clone(&recorded);
            let closed_tx = closed_tx.clone();
            tokio::spawn(connection(socket, replies, recorded, closed_tx));
        }
    });
    Server {
        base_url: format!("http://{address}/v1"),
        requests,
        closed,
    }
}

async fn connection(
    socket: TcpStream,
    replies: Arc<Mutex<VecDeque<Reply>>>,
    recorded: Arc<Mutex<Vec<String>>>,
    closed: mpsc::UnboundedSender<()>,
) {
    let mut socket = BufReader::new(socket);
    loop {
        let Some(request) = read_request(&mut socket).await else {
            return;
        };
        recorded.lock().unwrap().push(request);
        let reply = replies.lock().unwrap().pop_front();
        match reply {
            None | Some(Reply::Hangup) => return,
            Some(Reply::Send { parts, keep_alive }) => {
                for (delay, bytes) in parts {
                    if delay > 0 {
                        // Wait, but notice when the client goes away meanwhile.
                        let mut probe = [0u8; 1];
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_millis(delay)) => {}
                            read = socket.get_mut().read(&mut probe) => {
                                if matches!(read, Ok(0) | Err(_)) {
                                    let _ = closed.send(());
                                    return;
                                }
                            }
                        }
                    }
                    if socket.get_mut().write_all(&bytes).await.is_err() {
                        let _ = closed.send(());
                        return;
                    }
                }
                if !keep_alive {
                    return;
                }
            }
        }
    }
}

/// Reads one request (head and Content-Length body) as text; `None` at EOF.
async fn read_request(socket: &mut BufReader<TcpStream>) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if socket.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    socket.read_exact(&mut body).await.ok()?;
    Some(head + &String::from_utf8_lossy(&body))
}

fn response_head(status: &str, content_type: &str, extra: &str) -> String {
    format!("HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n{extra}")
}

/// A complete response with a Content-Length body.
fn reply(status: &str, body: &str, extra_headers: &str, keep_alive: bool) -> Reply {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let head = response_head(status, "application/json", extra_headers);
    let text = format!(
        "{head}connection: {connection}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    Reply::Send {
        parts: vec![(0, text.into_bytes())],
        keep_alive,
    }
}

/// A 200 event stream, its body delimited by the connection's close, written in parts
/// (each after its delay in milliseconds).
fn sse(parts: &[(u64, &str)]) -> Reply {
    let head = response_head("200 OK", "text/event-stream", "connection: close\r\n\r\n");
    let mut all = vec![(0, head.into_bytes())];
    all.extend(parts.iter().map(|(d, p)| (*d, p.as_bytes().to_vec())));
    Reply::Send {
        parts: all,
        keep_alive: false,
    }
}

fn openai(server: &Server, extra: Value) -> Arc<OpenAiRuntime> {
    let mut config = json!({ "base_url": server.base_url, "model": "fault-model" });
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    Arc::new(OpenAiRuntime::new(config).unwrap())
}

fn anthropic(server: &Server, extra: Value) -> Arc<AnthropicRuntime> {
    let mut config = json!({ "base_url": server.base_url, "model": "fault-model" });
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    Arc::new(AnthropicRuntime::new(config).unwrap())
}

async fn collect<R: Runtime>(
    runtime: &Arc<R>,
    request: TurnRequest,
) -> Vec<Result<StreamItem, RuntimeError>> {
    Arc::clone(runtime).stream_turn(request).collect().await
}

fn last_error(items: &[Result<StreamItem, RuntimeError>]) -> &RuntimeError {
    match items.last() {
        Some(Err(error)) => error,
        other => panic!("expected an error last, got {other:?}"),
    }
}

fn last_output(items: &[Result<StreamItem, RuntimeError>]) -> &TurnOutput {
    match items.last() {
        Some(Ok(StreamItem::Done(output))) => output,
        other => panic!("expected Done last, got {other:?}"),
    }
}

const OK_CHAT: &str = r#"{"id":"1","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}"#;

#[tokio::test]
async fn status_429_is_rate_limited_with_status_and_message() {
    let body = r#"{"error":{"message":"Rate limit reached","type":"rate_limit_error"}}"#;
    let server = serve(vec![
        reply("429 Too Many Requests", body, "retry-after: 3\r\n", false),
        reply("429 Too Many Requests", body, "", false),
    ])
    .await;
    let runtime = openai(&server, json!({}));
    let error = runtime.run_turn(TurnRequest::new("hi")).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::RateLimited);
    assert!(error.retriable);
    assert_eq!(error.metadata["status"], 429);
    assert_eq!(error.metadata["retry_after_s"], 3);
    assert!(error.message.contains("Rate limit reached"), "{error}");
    // The same before a stream starts.
    let items = collect(&runtime, TurnRequest::new("hi")).await;
    assert_eq!(items.len(), 1);
    assert_eq!(last_error(&items).kind, ErrorKind::RateLimited);
}

#[tokio::test]
async fn status_503_is_unavailable_and_retriable() {
    let server = serve(vec![reply(
        "503 Service Unavailable",
        r#"{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}"#,
        "",
        false,
    )])
    .await;
    let items = collect(&openai(&server, json!({})), TurnRequest::new("hi")).await;
    let error = last_error(&items);
    assert_eq!(error.kind, ErrorKind::Unavailable);
    assert!(error.retriable);
    assert_eq!(error.metadata["status"], 503);
    assert!(error.message.contains("Loading model"));
}

#[tokio::test]
async fn status_401_is_authentication_and_the_key_comes_from_the_named_variable() {
    // A variable cargo sets for every test process stands in for a key, so the test needs
    // no `set_var` (unsafe while other test threads read the environment).
    let key = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it for tests");
    let server = serve(vec![
        reply(
            "401 Unauthorized",
            r#"{"error":{"message":"Invalid API Key","type":"authentication_error"}}"#,
            "",
            false,
        ),
        reply(
            "403 Forbidden",
            r#"{"type":"error","error":{"type":"permission_error","message":"nope"}}"#,
            "",
            false,
        ),
    ])
    .await;
    let config = json!({ "api_key_env": "CARGO_MANIFEST_DIR", "headers": { "x-team": "blue" } });
    let error = openai(&server, config.clone())
        .run_turn(TurnRequest::new("hi"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Authentication);
    assert!(!error.retriable);
    assert_eq!(error.metadata["status"], 401);
    assert!(!error.message.contains(&key));
    let items = collect(&anthropic(&server, config), TurnRequest::new("hi")).await;
    let error = last_error(&items);
    assert_eq!(error.kind, ErrorKind::Authentication);
    assert_eq!(error.metadata["status"], 403);

    let requests = server.requests();
    let openai_request = requests[0].to_ascii_lowercase();
    assert!(openai_request.starts_with("post /v1/chat/completions "));
    assert!(openai_request.contains(&format!(
        "authorization: bearer {}",
        key.to_ascii_lowercase()
    )));
    assert!(openai_request.contains("x-team: blue"));
    let anthropic_request = requests[1].to_ascii_lowercase();
    assert!(anthropic_request.starts_with("post /v1/messages "));
    assert!(anthropic_request.contains(&format!("x-api-key: {}", key.to_ascii_lowercase())));
    assert!(anthropic_request.contains("anthropic-version: 2023-06-01"));
}

#[tokio::test]
async fn an_unset_key_variable_fails_the_turn_before_any_request() {
    let server = serve(vec![]).await;
    let runtime = openai(
        &server,
        json!({ "api_key_env": "AGENT_RUNTIMES_SURELY_UNSET_VARIABLE" }),
    );
    let error = runtime.run_turn(TurnRequest::new("hi")).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidConfig);
    assert!(
        error
            .message
            .contains("AGENT_RUNTIMES_SURELY_UNSET_VARIABLE")
    );
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn slow_chunks_stream_as_they_come() {
    let server = serve(vec![sse(&[
        (0, "data: {\"choices\":[{\"delta\":{\"content\":\"first \"}}]}\n\n"),
        (400, "data: {\"choices\":[{\"delta\":{\"content\":\"second\"},\"finish_reason\":\"stop\"}]}\n\n"),
        (0, "data: [DONE]\n\n"),
    ])])
    .await;
    let runtime = openai(&server, json!({}));
    let started = Instant::now();
    let mut stream = Box::pin(Arc::clone(&runtime).stream_turn(TurnRequest::new("hi")));
    let first = stream.next().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert!(matches!(&first, StreamItem::Delta(d) if d.content == "first "));
    let rest: Vec<_> = stream.collect().await;
    assert!(
        first_at < Duration::from_millis(300),
        "the first delta waited for the rest: {first_at:?}"
    );
    assert_eq!(last_output(&rest).content, "first second");
}

#[tokio::test]
async fn a_stall_longer_than_the_read_timeout_is_a_timeout() {
    let server = serve(vec![sse(&[
        (
            0,
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
        ),
        (3_000, "data: [DONE]\n\n"),
    ])])
    .await;
    let runtime = openai(&server, json!({ "read_timeout_ms": 300 }));
    let started = Instant::now();
    let items = collect(&runtime, TurnRequest::new("hi")).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(&items[0], Ok(StreamItem::Delta(d)) if d.content == "a"));
    let error = last_error(&items);
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    assert!(error.retriable);
}

#[tokio::test]
async fn an_error_object_mid_stream_over_the_wire() {
    let server = serve(vec![sse(&[
        (0, "data: {\"choices\":[{\"delta\":{\"content\":\"<tool\"}}]}\n\n"),
        (0, "data: {\"error\":{\"code\":500,\"message\":\"Failed to parse tool call\",\"type\":\"server_error\"}}\n\n"),
    ])])
    .await;
    let items = collect(&openai(&server, json!({})), TurnRequest::new("hi")).await;
    assert!(matches!(&items[0], Ok(StreamItem::Delta(d)) if d.kind == DeltaKind::Text));
    let error = last_error(&items);
    assert!(error.message.contains("Failed to parse tool call"));
    assert_eq!(error.metadata["status"], 500);
}

#[tokio::test]
async fn a_connection_closed_before_done_is_truncation() {
    let server = serve(vec![sse(&[(
        0,
        "data: {\"choices\":[{\"delta\":{\"content\":\"cut\"},\"finish_reason\":\"stop\"}]}\n\n",
    )])])
    .await;
    let items = collect(&openai(&server, json!({})), TurnRequest::new("hi")).await;
    let error = last_error(&items);
    assert_eq!(error.metadata["truncated"], true);
}

#[tokio::test]
async fn a_pooled_connection_closed_by_the_server_is_retried_once() {
    // The first answer keeps the connection alive; the server then closes it on the next
    // request without answering, as a server that closed it meanwhile would.
    let server = serve(vec![
        reply("200 OK", OK_CHAT, "", true),
        Reply::Hangup,
        reply("200 OK", OK_CHAT, "", false),
    ])
    .await;
    let runtime = openai(&server, json!({}));
    let first = runtime.run_turn(TurnRequest::new("one")).await.unwrap();
    assert_eq!(first.content, "hi");
    let second = runtime.run_turn(TurnRequest::new("two")).await.unwrap();
    assert_eq!(second.content, "hi");
    assert_eq!(second.usage.total_tokens, 3);
    assert_eq!(server.requests().len(), 3, "one retry, no more");
}

#[tokio::test]
async fn a_refused_connection_is_unavailable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let runtime =
        OpenAiRuntime::new(json!({ "base_url": format!("http://{address}/v1"), "model": "m" }))
            .unwrap();
    let error = runtime.run_turn(TurnRequest::new("hi")).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unavailable);
    assert!(error.retriable);
}

#[tokio::test]
async fn dropping_the_stream_closes_the_connection() {
    let mut server = serve(vec![sse(&[
        (
            0,
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
        ),
        (10_000, "data: [DONE]\n\n"),
    ])])
    .await;
    let runtime = openai(&server, json!({}));
    let mut stream = Box::pin(Arc::clone(&runtime).stream_turn(TurnRequest::new("hi")));
    assert!(matches!(
        stream.next().await,
        Some(Ok(StreamItem::Delta(_)))
    ));
    drop(stream);
    let closed = tokio::time::timeout(Duration::from_secs(3), server.closed.recv()).await;
    assert!(
        matches!(closed, Ok(Some(()))),
        "the server never saw the connection close"
    );
}

#[tokio::test]
async fn the_request_body_is_what_the_api_expects() {
    let server = serve(vec![sse(&[(0, "data: [DONE]\n\n")])]).await;
    let runtime = openai(&server, json!({ "extra_body": { "seed": 7 } }));
    let items = collect(&runtime, TurnRequest::new("hello").with_temperature(0.0)).await;
    assert_eq!(last_output(&items).finish_reason, FinishReason::Stop);
    let request = &server.requests()[0];
    let body: Value = serde_json::from_str(request.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["seed"], 7);
    assert_eq!(body["model"], "fault-model");
    assert_eq!(
        body["messages"][0],
        json!({ "role": "user", "content": "hello" })
    );
}

#[tokio::test]
async fn anthropic_streams_and_maps_overloaded() {
    let server = serve(vec![
        sse(&[
            (0, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":4,\"output_tokens\":1}}}\n\n"),
            (0, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"),
            (0, "event: ping\ndata: {\"type\":\"ping\"}\n\n"),
            (50, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n"),
            (0, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\n"),
            (0, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        ]),
        reply(
            "529 Overloaded",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            "",
            false,
        ),
    ])
    .await;
    let runtime = anthropic(&server, json!({}));
    let items = collect(&runtime, TurnRequest::new("hi")).await;
    let output = last_output(&items);
    assert_eq!(output.content, "Hello");
    assert_eq!(output.usage.input_tokens, 4);
    assert_eq!(output.usage.output_tokens, 2);
    let error = runtime.run_turn(TurnRequest::new("hi")).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unavailable);
    assert!(error.retriable);
    assert_eq!(error.metadata["status"], 529);
    assert!(error.message.contains("Overloaded"));
}
