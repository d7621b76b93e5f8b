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

use crate::support::{
    artifacts, install, plugin_dir, process_gone, replace_plugin, write_candidate,
};

mod hostile;
mod openai;
mod operations;
mod redis;

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
