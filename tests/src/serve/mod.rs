//! `runtimes serve` (issue 14): the real binary on a free loopback port, driven over HTTP by
//! reqwest. Every endpoint, every error, streaming, tools, auth, limits, disconnects,
//! graceful shutdown, and a load test of 1,000 concurrent streams.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use runtime_api::{ErrorKind, RuntimeError, StreamItem};
use runtime_queue::{QueueClient, TurnStatus};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::support::{artifacts, install, plugin_dir, write_candidate};

/// How long any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(60);

/// A running `runtimes serve` with echo and the fixture plugin installed.
struct Server {
    child: Child,
    url: String,
    stderr: mpsc::UnboundedReceiver<String>,
    _stdout: Lines<BufReader<ChildStdout>>,
    plugins: TempDir,
    _home: TempDir,
}

impl Server {
    async fn start(args: &[&str]) -> Server {
        Self::start_with(args, &[], |_| {}).await
    }

    /// Starts the server and waits for its `listening on` line.
    async fn start_with(
        args: &[&str],
        env: &[(&str, &str)],
        prepare: impl FnOnce(&Path),
    ) -> Server {
        let home = plugin_dir();
        let plugins = plugin_dir();
        install(plugins.path(), &artifacts().echo, "libecho");
        install(plugins.path(), &artifacts().fixture, "libfixture");
        prepare(plugins.path());
        let mut command = Command::new(&artifacts().runtimes);
        command
            .arg("--plugin-dir")
            .arg(plugins.path())
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .env_remove("AGENT_RUNTIMES_PATH")
            .env_remove("AGENT_RUNTIMES_ALLOW_INSECURE")
            .env("XDG_DATA_HOME", home.path().join("data"))
            .env("HOME", home.path())
            .env("NO_COLOR", "1")
            .env("RUNTIMES_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("runtimes serve starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let url = timeout(WAIT, async {
            while let Some(line) = stdout.next_line().await.expect("stdout readable") {
                if let Some(url) = line.strip_prefix("listening on ") {
                    return url.to_owned();
                }
            }
            panic!("the server exited before listening");
        })
        .await
        .expect("the server listens within the wait");
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        Server {
            child,
            url,
            stderr: rx,
            _stdout: stdout,
            plugins,
            _home: home,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Waits for a stderr line containing `needle`.
    async fn wait_stderr(&mut self, needle: &str) -> String {
        timeout(WAIT, async {
            while let Some(line) = self.stderr.recv().await {
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("stderr closed before `{needle}`");
        })
        .await
        .unwrap_or_else(|_| panic!("no stderr line with `{needle}`"))
    }

    fn terminate(&self) {
        let pid = self.child.id().expect("still running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM sent");
    }

    /// A metric's value in /metrics (the sum of the series that match every label).
    async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let text = client()
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter(|l| labels.iter().all(|label| l.contains(label)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until a metric reaches a value (each check is one /metrics request).
    async fn wait_metric(&self, name: &str, labels: &[&str], value: f64) {
        for _ in 0..600 {
            if self.metric(name, labels).await == value {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{name}{labels:?} never reached {value}");
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(WAIT)
        .build()
        .expect("client")
}

/// POSTs JSON; the status, headers and JSON body.
async fn post(server: &Server, path: &str, body: &Value) -> (StatusCode, HeaderMap, Value) {
    post_raw(server, path, body.to_string().into_bytes(), &[]).await
}

async fn post_raw(
    server: &Server,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
    let mut request = client()
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(body);
    for (key, value) in headers {
        request = request.header(*key, *value);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, headers, json)
}

async fn get(server: &Server, path: &str) -> (StatusCode, Value) {
    let response = client().get(server.url(path)).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// The `data:` payloads of a server-sent-event stream, read as they arrive.
struct Events {
    body: futures::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buffer: String,
}

impl Events {
    fn new(response: reqwest::Response) -> Self {
        Self {
            body: response
                .bytes_stream()
                .map(|r| r.map(|b| b.to_vec()))
                .boxed(),
            buffer: String::new(),
        }
    }

    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some(data.join("\n"));
            }
            let chunk = timeout(WAIT, self.body.next())
                .await
                .expect("an event in time")?;
            self.buffer
                .push_str(&String::from_utf8_lossy(&chunk.expect("stream readable")));
        }
    }

    /// Every remaining payload, up to and including `[DONE]`.
    async fn rest(&mut self) -> Vec<String> {
        let mut all = Vec::new();
        while let Some(data) = self.next().await {
            let done = data == "[DONE]";
            all.push(data);
            if done {
                break;
            }
        }
        all
    }
}

async fn stream(server: &Server, body: &Value) -> (StatusCode, HeaderMap, Events) {
    let response = client()
        .post(server.url("/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, Events::new(response))
}

fn user(text: &str) -> Value {
    json!([{ "role": "user", "content": text }])
}

fn assert_openai_error(body: &Value, kind: &str, param: Option<&str>, code: &str) {
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(error["type"], kind, "{body}");
    assert_eq!(error["param"], json!(param), "{body}");
    assert_eq!(error["code"], code, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn models_lists_every_runtime_id_and_alias() {
    let server = Server::start(&[]).await;
    let (status, body) = get(&server, "/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, served_names());
    assert!(
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["object"] == "model")
    );

    let (status, body) = get(&server, "/v1/models/parrot").await;
    assert_eq!(
        (status, body["id"].clone()),
        (StatusCode::OK, json!("parrot"))
    );
    let (status, body) = get(&server, "/v1/models/nothing").await;
    assert_eq!(status, 404);
    assert_openai_error(
        &body,
        "invalid_request_error",
        Some("model"),
        "model_not_found",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_completion_maps_messages_and_returns_usage_and_the_execution_id() {
    let server = Server::start(&[]).await;
    let (status, headers, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({
            "model": "echo",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello you"},
                {"role": "user", "content": "hello there world"}
            ]
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let execution_id = headers["x-execution-id"].to_str().unwrap();
    assert_eq!(body["id"], format!("chatcmpl-{execution_id}"));
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "echo");
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "hello there world");
    assert_eq!(choice["finish_reason"], "stop");
    // echo counts words: prompt 3 + system 2 + history 1 + 2 in, prompt 3 out.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11})
    );

    // What the runtime receives: RUNTIME/MODEL, system, history, sampling, the execution id.
    let (status, headers, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({
            "model": "fixture-tools/some-model",
            "messages": [
                {"role": "system", "content": "one"},
                {"role": "developer", "content": "two"},
                {"role": "user", "content": "earlier"},
                {"role": "user", "content": "show request"}
            ],
            "max_tokens": 12, "temperature": 0.25, "stop": ["END", "STOP"]
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen: Value =
        serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(seen["model"], "some-model");
    assert_eq!(seen["system"], "one\n\ntwo");
    assert_eq!(
        seen["history"],
        json!([{"role": "user", "content": "earlier"}])
    );
    assert_eq!(
        seen["sampling"],
        json!({"max_tokens": 12, "temperature": 0.25, "stop": ["END", "STOP"]})
    );
    assert_eq!(
        seen["execution_id"],
        headers["x-execution-id"].to_str().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_sends_chunks_usage_and_done() {
    let server = Server::start(&[]).await;
    let (status, headers, mut events) = stream(
        &server,
        &json!({"model": "parrot", "messages": user("hello there world"), "stream": true,
                "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let execution_id = headers["x-execution-id"].to_str().unwrap().to_owned();
    let data = events.rest().await;
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["id"] == format!("chatcmpl-{execution_id}"))
    );
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "hello there world");
    assert!(chunks.len() >= 5, "one chunk per word: {chunks:?}");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6})
    );

    // Without include_usage: no usage chunk.
    let (_, _, mut events) = stream(
        &server,
        &json!({"model": "echo", "messages": user("a b"), "stream": true}),
    )
    .await;
    let data = events.rest().await;
    let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(data.iter().all(|d| !d.contains("\"usage\":{")), "{data:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runtime_that_does_not_stream_answers_a_stream_in_one_chunk() {
    let server = Server::start(&[]).await;
    let (status, _, mut events) = stream(
        &server,
        &json!({"model": "fx", "messages": user("x y"), "stream": true}),
    )
    .await;
    assert_eq!(status, 200);
    let data = events.rest().await;
    let text: String = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "fixture:x y");
    assert_eq!(data.last().unwrap(), "[DONE]");
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}}])
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_go_in_and_tool_calls_come_out() {
    let server = Server::start(&[]).await;
    let (status, _, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": "fixture-tools", "messages": user("Oslo"), "tools": weather_tool()}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["id"], "call_1");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"text": "Oslo"}));

    // The tool's result goes back as history; the runtime answers from it.
    let (status, _, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": "fixture-tools", "tools": weather_tool(), "messages": [
            {"role": "user", "content": "Oslo"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "tool said: sunny");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");

    // Streamed: the pieces of the call add up to the same call.
    let (status, _, mut events) = stream(
        &server,
        &json!({"model": "fixture-tools", "messages": user("Oslo"), "tools": weather_tool(),
                "stream": true}),
    )
    .await;
    assert_eq!(status, 200);
    let chunks: Vec<Value> = events
        .rest()
        .await
        .iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let pieces: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(pieces.len(), 2, "{chunks:?}");
    assert_eq!(pieces[0]["id"], "call_1");
    assert_eq!(pieces[0]["function"]["name"], "weather");
    let arguments: String = pieces
        .iter()
        .map(|p| p["function"]["arguments"].as_str().unwrap())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"text": "Oslo"})
    );
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
    );

    // A runtime without the tools capability refuses tools: 400.
    let (status, _, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": "echo", "messages": user("Oslo"), "tools": weather_tool()}),
    )
    .await;
    assert_eq!(status, 400);
    assert_openai_error(&body, "invalid_request_error", None, "unsupported");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_400s_naming_the_field() {
    let server = Server::start(&[]).await;
    let chat = "/v1/chat/completions";
    let (status, _, body) = post_raw(&server, chat, b"{not json".to_vec(), &[]).await;
    assert_eq!(status, 400);
    assert_openai_error(&body, "invalid_request_error", None, "invalid_value");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );

    let cases = [
        (json!({"messages": user("x")}), "model"),
        (json!({"model": "echo"}), "messages"),
        (json!({"model": "echo", "messages": []}), "messages"),
        (
            json!({"model": "echo", "messages": [{"role": "pilot", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "echo", "messages": [{"role": "user", "content": 7}]}),
            "messages[0].content",
        ),
        (
            json!({"model": "echo", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
            "messages[0].content[0].type",
        ),
        (
            json!({"model": "echo", "messages": [{"role": "tool", "content": "r"}]}),
            "messages[0].tool_call_id",
        ),
        (
            json!({"model": "echo", "messages": user("x"), "temperature": 3}),
            "temperature",
        ),
        (
            json!({"model": "echo", "messages": user("x"), "max_tokens": -1}),
            "max_tokens",
        ),
        (
            json!({"model": "echo", "messages": user("x"), "stream": "yes"}),
            "stream",
        ),
        (json!({"model": "echo", "messages": user("x"), "n": 2}), "n"),
        (
            json!({"model": "echo", "messages": user("x"), "tools": [{"type": "web"}]}),
            "tools[0].function",
        ),
    ];
    for (request, param) in cases {
        let (status, _, body) = post(&server, chat, &request).await;
        assert_eq!(status, 400, "{request}: {body}");
        assert_openai_error(&body, "invalid_request_error", Some(param), "invalid_value");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_model_is_a_404_listing_the_available_ones() {
    let server = Server::start(&[]).await;
    for model in ["nope", "nope/inner"] {
        let (status, _, body) = post(
            &server,
            "/v1/chat/completions",
            &json!({"model": model, "messages": user("x")}),
        )
        .await;
        assert_eq!(status, 404);
        assert_openai_error(
            &body,
            "invalid_request_error",
            Some("model"),
            "model_not_found",
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("`{model}`")), "{message}");
        assert!(message.contains(&served_names().join(", ")), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_error_kinds_map_to_status_codes_streamed_or_not() {
    let server = Server::start(&[]).await;
    let cases = [
        ("invalid_request", 400, "invalid_request_error"),
        ("unsupported", 400, "invalid_request_error"),
        ("rate_limited", 429, "rate_limit_error"),
        ("authentication", 502, "upstream_error"),
        ("unavailable", 503, "server_error"),
        ("timeout", 504, "timeout_error"),
        ("internal", 500, "server_error"),
        ("invalid_config", 500, "server_error"),
        ("something_new", 500, "server_error"),
    ];
    for (kind, status, kind_type) in cases {
        for streamed in [false, true] {
            let (got, headers, body) = post(
                &server,
                "/v1/chat/completions",
                &json!({"model": "fixture-tools", "messages": user(&format!("fail {kind}")),
                        "stream": streamed}),
            )
            .await;
            assert_eq!(got.as_u16(), status, "{kind} streamed={streamed}: {body}");
            assert_openai_error(&body, kind_type, None, kind);
            assert!(headers.contains_key("x-execution-id"), "{kind}");
            assert_eq!(
                headers.contains_key("retry-after"),
                ["rate_limited", "unavailable", "timeout"].contains(&kind),
                "{kind}"
            );
        }
    }
    assert_eq!(
        server
            .metric("runtimes_serve_errors_total", &["kind=\"rate_limited\""])
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_after_the_first_chunk_ends_the_stream_with_an_error_event() {
    let server = Server::start(&[]).await;
    let (status, _, mut events) = stream(
        &server,
        &json!({"model": "fixture-tools", "messages": user("fail late unavailable"),
                "stream": true}),
    )
    .await;
    assert_eq!(status, 200);
    let data = events.rest().await;
    assert_eq!(data.last().unwrap(), "[DONE]", "{data:?}");
    let error: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_openai_error(&error, "server_error", None, "unavailable");
    assert!(data.iter().any(|d| d.contains("partial ")), "{data:?}");
    assert_eq!(
        server
            .metric(
                "runtimes_serve_turns_total",
                &["runtime=\"fixture-tools\"", "outcome=\"error\""]
            )
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_routes_and_methods_answer_in_the_openai_shape() {
    let server = Server::start(&[]).await;
    let (status, body) = get(&server, "/v1/nothing").await;
    assert_eq!(status, 404);
    assert_openai_error(&body, "not_found_error", None, "unknown_url");
    let (status, body) = get(&server, "/v1/chat/completions").await;
    assert_eq!(status, 405);
    assert_openai_error(&body, "invalid_request_error", None, "method_not_allowed");
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_runtimes_and_metrics_report_the_server() {
    let server = Server::start_with(&[], &[], |dir| {
        write_candidate(dir, "libjunk", b"not a library");
    })
    .await;
    let (status, body) = get(&server, "/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["runtimes"], served_runtimes());

    let (status, body) = get(&server, "/v1/runtimes").await;
    assert_eq!(status, 200);
    let echo = &body["runtimes"][0];
    assert_eq!(echo["id"], "echo");
    assert_eq!(echo["aliases"], json!(["parrot"]));
    assert!(
        echo["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("streaming"))
    );
    assert_eq!(body["rejected"][0]["reason"]["kind"], "not_a_library");
    assert!(
        body["rejected"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("libjunk.so")
    );

    let (status, _, _) = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": "echo", "messages": user("a")}),
    )
    .await;
    assert_eq!(status, 200);
    let response = client().get(server.url("/metrics")).send().await.unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for expected in [
        "runtimes_serve_turns_total{runtime=\"echo\",stream=\"false\",outcome=\"ok\"} 1",
        "runtimes_serve_turn_duration_seconds_bucket{runtime=\"echo\",stream=\"false\",le=\"+Inf\"} 1",
        "runtimes_serve_turns_in_flight 0",
        "# TYPE runtimes_serve_turn_duration_seconds histogram",
    ] {
        assert!(text.contains(expected), "no `{expected}` in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_auth_guards_everything_but_healthz() {
    let server = Server::start_with(
        &["--api-key-env", "SERVE_TEST_KEY"],
        &[("SERVE_TEST_KEY", "s3cret-key")],
        |_| {},
    )
    .await;
    let body = json!({"model": "echo", "messages": user("hi")})
        .to_string()
        .into_bytes();
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong")],
        vec![("authorization", "Bearer s3cret-ke")],
        vec![("authorization", "s3cret-key")],
    ] {
        let (status, response_headers, error) =
            post_raw(&server, "/v1/chat/completions", body.clone(), &headers).await;
        assert_eq!(status, 401, "{headers:?}");
        assert_eq!(response_headers["www-authenticate"], "Bearer");
        assert_openai_error(&error, "authentication_error", None, "invalid_api_key");
    }
    let (status, _, answer) = post_raw(
        &server,
        "/v1/chat/completions",
        body,
        &[("authorization", "Bearer s3cret-key")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["choices"][0]["message"]["content"], "hi");
    for path in ["/v1/models", "/v1/runtimes", "/metrics"] {
        let status = client()
            .get(server.url(path))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401, "{path}");
    }
    assert_eq!(get(&server, "/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_api_key_variable_refuses_to_start() {
    for (args, message) in [(
        vec!["--api-key-env", "SERVE_TEST_UNSET_VARIABLE"],
        "SERVE_TEST_UNSET_VARIABLE",
    )] {
        let output = Command::new(&artifacts().runtimes)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(&args)
            .env_remove("SERVE_TEST_UNSET_VARIABLE")
            .env("NO_COLOR", "1")
            .output()
            .await
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn isolate_serves_every_runtime_from_a_worker_process() {
    let server = Server::start(&["--isolate"]).await;
    let (status, _, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": "echo", "messages": user("from a worker")}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "from a worker");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_creates_a_runtime_with_its_configuration_by_id_and_alias() {
    let server = Server::start(&["--config", r#"faults={"fail_with": "rate_limited"}"#]).await;
    for model in ["fixture-faults", "faults", "fixture-faults/any-model"] {
        let (status, _, body) = post(
            &server,
            "/v1/chat/completions",
            &json!({"model": model, "messages": user("x")}),
        )
        .await;
        assert_eq!(status, 429, "{model}: {body}");
        assert_openai_error(&body, "rate_limit_error", None, "rate_limited");
    }
    let (status, _, _) = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": "fixture", "messages": user("x")}),
    )
    .await;
    assert_eq!(
        status, 200,
        "other runtimes keep their default configuration"
    );

    // A configuration the runtime refuses, an unknown runtime, or bad JSON stop the start.
    let plugins = plugin_dir();
    install(plugins.path(), &artifacts().echo, "libecho");
    for (config, code, message) in [
        (r#"echo={"no_such_key": 1}"#, 3, "could not be created"),
        (r#"nothing={}"#, 2, "no runtime named `nothing`"),
        ("echo={", 2, "not valid JSON"),
        ("echo", 2, "expected NAME=JSON"),
    ] {
        let output = Command::new(&artifacts().runtimes)
            .arg("--plugin-dir")
            .arg(plugins.path())
            .args(["serve", "--addr", "127.0.0.1:0", "--config", config])
            .env("NO_COLOR", "1")
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{config}: {stderr}");
        assert!(stderr.contains(message), "{config}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_limit_is_a_413() {
    let server = Server::start(&["--max-body-bytes", "1024"]).await;
    let big = "x".repeat(4096);
    let (status, _, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": "echo", "messages": user(&big)}),
    )
    .await;
    assert_eq!(status, 413);
    assert_openai_error(&body, "invalid_request_error", None, "request_too_large");
}

#[tokio::test(flavor = "multi_thread")]
async fn turns_beyond_max_concurrent_are_429s() {
    let server = Server::start(&["--max-concurrent", "1"]).await;
    let (status, _, mut first) = stream(
        &server,
        &json!({"model": "fixture-tools", "messages": user("sleep 30000"), "stream": true}),
    )
    .await;
    assert_eq!(status, 200);
    first.next().await.expect("the role chunk");
    let (status, headers, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": "echo", "messages": user("x")}),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "1");
    assert_openai_error(
        &body,
        "rate_limit_error",
        None,
        "too_many_concurrent_requests",
    );
    drop(first);
    server
        .wait_metric("runtimes_serve_turns_in_flight", &[], 0.0)
        .await;
    let (status, _, _) = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": "echo", "messages": user("x")}),
    )
    .await;
    assert_eq!(status, 200, "the permit came back");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_longer_than_the_request_timeout_is_a_504() {
    let server = Server::start(&["--request-timeout", "0.3"]).await;
    let (status, _, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": "fixture-tools", "messages": user("sleep 30000")}),
    )
    .await;
    assert_eq!(status, 504);
    assert_openai_error(&body, "timeout_error", None, "timeout");
}

async fn wait_for_file(path: &Path) {
    for _ in 0..600 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", path.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_disconnects_cancels_its_turn() {
    let mut server = Server::start(&[]).await;
    // Streamed: the client reads the first chunk, then goes away.
    let marker = server.plugins.path().join("streamed.cancelled");
    let (status, _, mut events) = stream(
        &server,
        &json!({"model": "fixture-tools", "stream": true,
                "messages": user(&format!("sleep 30000 {}", marker.display()))}),
    )
    .await;
    assert_eq!(status, 200);
    events.next().await.expect("the role chunk");
    events.next().await.expect("the first delta");
    drop(events);
    wait_for_file(&marker).await;
    server
        .wait_stderr("the client disconnected: turn cancelled")
        .await;

    // Not streamed: the client gives up while the turn runs.
    let marker = server.plugins.path().join("plain.cancelled");
    let url = server.url("/v1/chat/completions");
    let body = json!({"model": "fixture-tools",
                      "messages": user(&format!("sleep 30000 {}", marker.display()))});
    let request = tokio::spawn(async move { client().post(url).json(&body).send().await });
    server
        .wait_metric("runtimes_serve_turns_in_flight", &[], 1.0)
        .await;
    request.abort();
    wait_for_file(&marker).await;
    server
        .wait_metric("runtimes_serve_turns_in_flight", &[], 0.0)
        .await;
    assert_eq!(
        server
            .metric("runtimes_serve_turns_total", &["outcome=\"disconnected\""])
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_accepting_and_lets_running_turns_finish() {
    let mut server = Server::start(&["--shutdown-grace", "30"]).await;
    let (status, _, mut events) = stream(
        &server,
        &json!({"model": "fixture-tools", "messages": user("sleep 1000"), "stream": true}),
    )
    .await;
    assert_eq!(status, 200);
    events.next().await.expect("the role chunk");
    server.terminate();
    server.wait_stderr("shutting down").await;
    let refused = reqwest::Client::new()
        .get(server.url("/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a new connection was accepted: {refused:?}"
    );
    let rest = events.rest().await;
    assert_eq!(rest.last().unwrap(), "[DONE]", "{rest:?}");
    assert!(rest.iter().any(|d| d.contains("slept")), "{rest:?}");
    let status = timeout(WAIT, server.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn turns_still_running_after_the_grace_period_are_cancelled() {
    let mut server = Server::start(&["--shutdown-grace", "0.2"]).await;
    let marker = server.plugins.path().join("grace.cancelled");
    let (_, _, mut events) = stream(
        &server,
        &json!({"model": "fixture-tools", "stream": true,
                "messages": user(&format!("sleep 30000 {}", marker.display()))}),
    )
    .await;
    events.next().await.expect("the role chunk");
    server.terminate();
    server.wait_stderr("the grace period is over").await;
    let status = timeout(WAIT, server.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    wait_for_file(&marker).await;
}

/// 1,000 streaming requests at once against echo: every one completes, none fails.
#[tokio::test(flavor = "multi_thread")]
async fn load_1000_concurrent_streams_against_echo_without_errors() {
    const REQUESTS: usize = 1000;
    let server = Server::start(&["--max-concurrent", "2000"]).await;
    let client = reqwest::Client::builder()
        .timeout(WAIT)
        .pool_max_idle_per_host(REQUESTS)
        .build()
        .unwrap();
    let url = server.url("/v1/chat/completions");
    let started = std::time::Instant::now();
    let requests = (0..REQUESTS).map(|i| {
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let prompt = format!("request {i} says hello");
            let response = client
                .post(&url)
                .json(&json!({"model": "echo", "messages": user(&prompt), "stream": true}))
                .send()
                .await
                .map_err(|e| format!("{i}: {e}"))?;
            if response.status() != 200 {
                return Err(format!("{i}: status {}", response.status()));
            }
            let text = response.text().await.map_err(|e| format!("{i}: {e}"))?;
            let content: String = text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .filter_map(|c| {
                    c["choices"][0]["delta"]["content"]
                        .as_str()
                        .map(str::to_owned)
                })
                .collect();
            if !text.trim_end().ends_with("data: [DONE]") || content != prompt {
                return Err(format!("{i}: incomplete stream: {text}"));
            }
            Ok(())
        })
    });
    let results = timeout(
        Duration::from_secs(120),
        futures::future::join_all(requests),
    )
    .await
    .expect("1,000 streams finish within 120 s");
    let errors: Vec<String> = results
        .into_iter()
        .filter_map(|r| match r {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(e.to_string()),
        })
        .collect();
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    println!("1000 concurrent streams in {:?}", started.elapsed());
    assert_eq!(
        server
            .metric(
                "runtimes_serve_turns_total",
                &["runtime=\"echo\"", "outcome=\"ok\""]
            )
            .await,
        REQUESTS as f64
    );
}

/// The manifests of the plugins the test server serves (echo and the fixture library).
fn served_manifests() -> Vec<runtime_api::manifest::Manifest> {
    [&artifacts().echo, &artifacts().fixture]
        .into_iter()
        .map(|lib| runtime_loader::inspect::read_manifest(lib).unwrap())
        .collect()
}

/// Every runtime id and alias the test server serves, sorted.
fn served_names() -> Vec<String> {
    let mut names: Vec<String> = served_manifests()
        .iter()
        .flat_map(|m| m.runtimes.iter())
        .flat_map(|r| std::iter::once(r.id.clone()).chain(r.aliases.iter().cloned()))
        .collect();
    names.sort();
    names
}

/// How many runtimes the test server serves.
fn served_runtimes() -> usize {
    served_manifests().iter().map(|m| m.runtimes.len()).sum()
}

// --- `serve --redis`: the HTTP front sends its turns through the queue (issue 15) ---

/// A `runtimes worker` process with echo alone installed; started (its advert written) when
/// [`QueueWorker::start`] returns.
struct QueueWorker {
    /// Killed when dropped.
    _child: Child,
    _plugins: TempDir,
}

impl QueueWorker {
    async fn start(url: &str, prefix: &str) -> QueueWorker {
        let plugins = plugin_dir();
        install(plugins.path(), &artifacts().echo, "libecho");
        let mut child = Command::new(&artifacts().runtimes)
            .arg("--plugin-dir")
            .arg(plugins.path())
            .args(["worker", "--redis", url, "--prefix", prefix])
            .env_remove("AGENT_RUNTIMES_PATH")
            .env("RUNTIMES_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("runtimes worker starts");
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.expect("stderr readable") {
                if line.contains("worker started") {
                    return;
                }
            }
            panic!("the worker exited before it started");
        })
        .await
        .expect("the worker starts within the wait");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        QueueWorker {
            _child: child,
            _plugins: plugins,
        }
    }
}

/// A queue of its own, a worker on it, and a `serve --redis` front (whose own plugin folder
/// has echo and the fixture library: it must not use them).
async fn scaled(test: &str, serve_args: &[&str]) -> (Server, QueueWorker, QueueClient) {
    let url = crate::queue::redis_url();
    let config = crate::queue::queue(test);
    let worker = QueueWorker::start(url, &config.prefix).await;
    let mut args = vec!["--redis", url, "--prefix", &config.prefix];
    args.extend_from_slice(serve_args);
    let server = Server::start(&args).await;
    let client = QueueClient::connect(url, config).await.expect("Redis");
    (server, worker, client)
}

/// A response body or chunk without what differs between two servers: `id`, `created`.
fn normalised(mut value: Value) -> Value {
    if let Some(object) = value.as_object_mut() {
        object.remove("id");
        object.remove("created");
    }
    value
}

/// The turn's results read to their end from the queue (the worker publishes the last one
/// when the turn ends, cancelled or not).
async fn queued_results(
    client: &QueueClient,
    execution_id: &str,
) -> Vec<Result<StreamItem, RuntimeError>> {
    timeout(WAIT, client.results(execution_id).collect::<Vec<_>>())
        .await
        .expect("the turn ends within the wait")
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs redis-server: scripts/redis.sh start"]
async fn serve_redis_answers_like_a_local_server_through_a_worker() {
    let (queued, _worker, client) = scaled("serve-same", &[]).await;
    let local = Server::start(&[]).await;

    // Models: what the worker advertises (echo and its alias), not the front's own plugins.
    let (status, body) = get(&queued, "/v1/models").await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["echo", "parrot"]);
    let (status, body) = get(&queued, "/v1/models/parrot").await;
    assert_eq!((status, &body["id"]), (StatusCode::OK, &json!("parrot")));
    let (status, body) = get(&queued, "/v1/runtimes").await;
    assert_eq!(status, 200);
    assert_eq!(body["runtimes"][0]["id"], "echo");
    assert_eq!(body["runtimes"][0]["capabilities"][0], "streaming");
    assert_eq!(body["workers"].as_array().unwrap().len(), 1, "{body}");
    // The same, from a shell: the backlog and the live workers with their runtimes.
    let prefix = client.config().prefix.clone();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&artifacts().runtimes)
            .args(["queue", "status", "--json", "--prefix", &prefix])
            .args(["--redis", crate::queue::redis_url()])
            .output()
            .expect("runtimes runs")
    })
    .await
    .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        (&status["waiting"], &status["running"], &status["dead"]),
        (&json!(0), &json!(0), &json!(0))
    );
    assert_eq!(
        status["workers"][0]["runtimes"][0]["id"], "echo",
        "{status}"
    );

    // A completion: the same body as a local server's but for id and created.
    let request = json!({"model": "parrot", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello you"},
        {"role": "user", "content": "hello there world"}
    ]});
    let (status, headers, body) = post(&queued, "/v1/chat/completions", &request).await;
    assert_eq!(status, 200, "{body}");
    let execution_id = headers["x-execution-id"].to_str().unwrap().to_owned();
    assert_eq!(body["id"], format!("chatcmpl-{execution_id}"));
    let (_, _, expected) = post(&local, "/v1/chat/completions", &request).await;
    assert_eq!(normalised(body), normalised(expected));
    let state = client
        .status(&execution_id)
        .await
        .unwrap()
        .expect("a status");
    assert_eq!((state.status, state.attempts), (TurnStatus::Complete, 1));

    // A stream, with usage: the same chunks, one per word.
    let request = json!({"model": "echo", "messages": user("one two three four"), "stream": true,
                         "stream_options": {"include_usage": true}});
    let chunks = |data: Vec<String>| -> Vec<Value> {
        data.iter()
            .map(|d| match serde_json::from_str::<Value>(d) {
                Ok(chunk) => normalised(chunk),
                Err(_) => json!(d),
            })
            .collect()
    };
    let (status, headers, mut events) = stream(&queued, &request).await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let got = chunks(events.rest().await);
    let (_, _, mut events) = stream(&local, &request).await;
    let want = chunks(events.rest().await);
    assert_eq!(got, want);
    assert_eq!(
        got.len(),
        8,
        "role, four words, finish, usage, [DONE]: {got:?}"
    );
    assert_eq!(
        queued
            .metric(
                "runtimes_serve_turns_total",
                &["runtime=\"echo\"", "outcome=\"ok\""]
            )
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs redis-server: scripts/redis.sh start"]
async fn serve_redis_an_unknown_model_is_the_same_404_as_local() {
    let (queued, _worker, client) = scaled("serve-unknown", &[]).await;
    let (status, _, body) = post(
        &queued,
        "/v1/chat/completions",
        &json!({"model": "fixture-tools", "messages": user("x")}),
    )
    .await;
    // Installed in the front's plugin folder, but no worker serves it.
    assert_eq!(status, 404, "{body}");
    assert_openai_error(
        &body,
        "invalid_request_error",
        Some("model"),
        "model_not_found",
    );
    assert_eq!(
        body["error"]["message"],
        "the model `fixture-tools` does not exist: available models are echo, parrot"
    );
    let (status, body) = get(&queued, "/v1/models/nothing").await;
    assert_eq!(status, 404);
    assert_openai_error(
        &body,
        "invalid_request_error",
        Some("model"),
        "model_not_found",
    );
    assert_eq!(
        client.backlog().await.unwrap().jobs,
        0,
        "nothing was queued"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs redis-server: scripts/redis.sh start"]
async fn serve_redis_a_client_that_disconnects_cancels_its_queued_turn() {
    // 40 words at 200 ms each: about 8 s if it ran to its end.
    let (mut queued, _worker, client) = scaled(
        "serve-disconnect",
        &["--config", r#"echo={"delay_ms": 200}"#],
    )
    .await;
    let prompt = vec!["word"; 40].join(" ");
    let (status, headers, mut events) = stream(
        &queued,
        &json!({"model": "echo", "messages": user(&prompt), "stream": true}),
    )
    .await;
    assert_eq!(status, 200);
    let execution_id = headers["x-execution-id"].to_str().unwrap().to_owned();
    events.next().await.expect("the role chunk");
    let first: Value =
        serde_json::from_str(&events.next().await.expect("the first delta")).unwrap();
    assert_eq!(first["choices"][0]["delta"]["content"], "word ");
    drop(events);
    queued
        .wait_stderr("the client disconnected: turn cancelled")
        .await;
    let items = queued_results(&client, &execution_id).await;
    let last = items.last().expect("a last item");
    assert_eq!(
        last.as_ref().unwrap_err().kind,
        ErrorKind::Cancelled,
        "{items:?}"
    );
    assert!(items.len() < 40, "it stopped early: {} items", items.len());
    let state = client
        .status(&execution_id)
        .await
        .unwrap()
        .expect("a status");
    assert_eq!(state.status, TurnStatus::Cancelled);
    assert_eq!(
        queued
            .metric("runtimes_serve_turns_total", &["outcome=\"disconnected\""])
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs redis-server: scripts/redis.sh start"]
async fn serve_redis_a_request_timeout_is_a_504_and_cancels_the_queued_turn() {
    let (queued, _worker, client) = scaled(
        "serve-timeout",
        &[
            "--config",
            r#"echo={"delay_ms": 200}"#,
            "--request-timeout",
            "1",
        ],
    )
    .await;
    let prompt = vec!["word"; 40].join(" ");
    let (status, headers, body) = post(
        &queued,
        "/v1/chat/completions",
        &json!({"model": "echo", "messages": user(&prompt)}),
    )
    .await;
    assert_eq!(status, 504, "{body}");
    assert_openai_error(&body, "timeout_error", None, "timeout");
    let execution_id = headers["x-execution-id"].to_str().unwrap().to_owned();
    let items = queued_results(&client, &execution_id).await;
    assert_eq!(
        items.last().unwrap().as_ref().unwrap_err().kind,
        ErrorKind::Cancelled,
        "{items:?}"
    );
    let state = client
        .status(&execution_id)
        .await
        .unwrap()
        .expect("a status");
    assert_eq!(state.status, TurnStatus::Cancelled);
}

/// Needs no Redis: the point is that there is none.
#[tokio::test(flavor = "multi_thread")]
async fn serve_redis_without_a_reachable_redis_answers_503_and_never_hangs() {
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let mut server = Server::start(&["--redis", &url, "--redis-wait", "0.5"]).await;
    server.wait_stderr("serving anyway").await;
    let started = std::time::Instant::now();
    for streamed in [false, true] {
        let (status, headers, body) = post(
            &server,
            "/v1/chat/completions",
            &json!({"model": "echo", "messages": user("x"), "stream": streamed}),
        )
        .await;
        assert_eq!(status, 503, "{body}");
        assert_openai_error(&body, "server_error", None, "unavailable");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("Redis is unreachable"), "{message}");
        assert_eq!(headers["retry-after"], "1");
    }
    let (status, body) = get(&server, "/v1/models").await;
    assert_eq!(status, 503, "{body}");
    assert_openai_error(&body, "server_error", None, "unavailable");
    let (status, body) = get(&server, "/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(
        (&body["status"], &body["queue"]),
        (&json!("ok"), &json!("unreachable"))
    );
    // Each wait is bounded by --redis-wait (plus a connection attempt), never a hang.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // A URL that is not one stops the server at start, as a usage error.
    let output = std::process::Command::new(&artifacts().runtimes)
        .args(["serve", "--addr", "127.0.0.1:0", "--redis", "not a url"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not usable"));
}
