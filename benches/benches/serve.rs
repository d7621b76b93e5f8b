//! What `runtimes serve` adds over a direct `RuntimeHandle` turn, for echo, streamed and not.
//!
//! The server is the release `runtimes` binary (built here with `cargo build --release -p
//! runtimes-cli`), started as a child process on a free loopback port with its own copy of the
//! echo library; the client is reqwest on one keep-alive connection (sequential figures) or
//! 64 connections (throughput). The baseline is a handle resolved from the same library in
//! this process: `run_turn`, or `stream_turn` read to the end.
//!
//! - criterion groups `serve_turn/{direct,http}` and `serve_stream/{direct,http}`: one
//!   sequential turn (prompt `hello world`; streamed: 2 text deltas, so 6 SSE events);
//! - `serve.latency.json` (also printed): p50 and p99 of 5,000 sequential turns each way, and
//!   requests per second with 64 concurrent clients over 20,000 turns.
//!
//! Both processes share the machine's cores, so the HTTP figures include the server's and the
//! client's work, as a caller on the same host would see them.

// A benchmark binary: printing its figures is the point.
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use futures::StreamExt;
use runtime_api::{StreamItem, TurnRequest};
use runtime_benches::{
    Conditions, Lab, build_runtimes_release, install, nanos, registry, write_result,
};
use runtime_loader::RuntimeHandle;
use serde_json::{Value, json};
use tokio::runtime::Runtime as Tokio;

const SEQUENTIAL: usize = 5_000;
const CONCURRENT_CLIENTS: usize = 64;
const CONCURRENT_TURNS: usize = 20_000;

/// The server process; killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(binary: &Path, plugins: &Path) -> Self {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(binary)
            .arg("--plugin-dir")
            .arg(plugins)
            .args([
                "--quiet",
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--max-concurrent",
                "1000",
            ])
            .env_remove("AGENT_RUNTIMES_PATH")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("runtimes serve starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let url = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("listening on ").map(str::to_owned))
            .expect("the server printed its address");
        Self { child, url }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One turn each way.
#[derive(Clone)]
struct Subjects {
    handle: RuntimeHandle,
    client: reqwest::Client,
    url: String,
}

fn body(stream: bool) -> String {
    json!({"model": "echo", "stream": stream,
           "messages": [{"role": "user", "content": "hello world"}]})
    .to_string()
}

impl Subjects {
    async fn direct(&self) {
        black_box(self.handle.run_turn(TurnRequest::new("hello world")).await).expect("turn");
    }

    async fn direct_stream(&self) {
        let mut stream = self.handle.stream_turn(TurnRequest::new("hello world"));
        while let Some(item) = stream.next().await {
            if let StreamItem::Done(output) = item.expect("item") {
                black_box(output);
            }
        }
    }

    async fn http(&self, stream: bool) {
        let response = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body(stream))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200);
        black_box(response.bytes().await.expect("body"));
    }

    async fn one(&self, way: &str) {
        match way {
            "direct" => self.direct().await,
            "direct_stream" => self.direct_stream().await,
            "http" => self.http(false).await,
            "http_stream" => self.http(true).await,
            other => panic!("unknown way {other}"),
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// p50/p99 of sequential turns, and turns per second with concurrent clients.
fn measure(rt: &Tokio, subjects: &Subjects) -> Value {
    let mut results = serde_json::Map::new();
    for way in ["direct", "http", "direct_stream", "http_stream"] {
        let mut latencies: Vec<f64> = rt.block_on(async {
            for _ in 0..500 {
                subjects.one(way).await;
            }
            let mut latencies = Vec::with_capacity(SEQUENTIAL);
            for _ in 0..SEQUENTIAL {
                let started = Instant::now();
                subjects.one(way).await;
                latencies.push(nanos(started.elapsed()));
            }
            latencies
        });
        latencies.sort_by(f64::total_cmp);
        let started = Instant::now();
        rt.block_on(async {
            let workers: Vec<_> = (0..CONCURRENT_CLIENTS)
                .map(|_| {
                    let subjects = subjects.clone();
                    tokio::spawn(async move {
                        for _ in 0..CONCURRENT_TURNS / CONCURRENT_CLIENTS {
                            subjects.one(way).await;
                        }
                    })
                })
                .collect();
            for worker in workers {
                worker.await.expect("worker");
            }
        });
        let per_second = CONCURRENT_TURNS as f64 / started.elapsed().as_secs_f64();
        let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
        println!(
            "{way:>13}: p50 {:8.1} µs  p99 {:8.1} µs  {per_second:9.0} turns/s with {CONCURRENT_CLIENTS} clients",
            p50 / 1e3,
            p99 / 1e3
        );
        results.insert(
            way.to_owned(),
            json!({ "p50_ns": p50, "p99_ns": p99, "turns_per_second": per_second,
                    "sequential_turns": SEQUENTIAL, "concurrent_clients": CONCURRENT_CLIENTS,
                    "concurrent_turns": CONCURRENT_TURNS }),
        );
    }
    Value::Object(results)
}

fn main() {
    let conditions = Conditions::start("serve");
    let binary = build_runtimes_release();
    let lab = Lab::new();
    let dir = lab.folder("plugins");
    install(&dir, &lab.echo, "echo");
    let server = Server::start(&binary, &dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let runtimes = Arc::new(registry(&[&dir]));
    let subjects = Subjects {
        handle: runtimes.resolve("echo").expect("echo resolves"),
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(CONCURRENT_CLIENTS)
            .build()
            .expect("client"),
        url: format!("{}/v1/chat/completions", server.url),
    };

    let figures = measure(&rt, &subjects);
    write_result("serve.latency", &figures);

    let mut c = Criterion::default()
        .without_plots()
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    for (group, ways) in [
        ("serve_turn", [("direct", "direct"), ("http", "http")]),
        (
            "serve_stream",
            [("direct", "direct_stream"), ("http", "http_stream")],
        ),
    ] {
        let mut g = c.benchmark_group(group);
        for (name, way) in ways {
            g.bench_function(name, |b| b.to_async(&rt).iter(|| subjects.one(way)));
        }
        g.finish();
    }
    c.final_summary();
    drop(server);
    conditions.finish();
}
