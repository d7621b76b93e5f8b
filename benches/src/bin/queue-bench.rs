//! Measures the Redis queue (`runtime-queue`): turns per second through 1, 2 and 4 workers,
//! and the latency the queue adds over a local turn. Not a criterion bench: it needs a real
//! redis-server, and its figures are throughput and percentiles.
//!
//! ```sh
//! scripts/redis.sh start && set -a && . target/redis/env && set +a
//! cargo run --release -p runtime-benches --bin queue-bench [-- TURNS IN_FLIGHT LATENCY_TURNS]
//! ```
//!
//! Workers run as tasks in this process (each with its own registry and Redis connections),
//! 64 turns at a time each; the client keeps IN_FLIGHT turns (default 512) submitted and
//! reads each one's stream to the end. Latency: LATENCY_TURNS (default 2,000) one-word echo
//! turns one after another, through the queue (submit → worker → results) and locally
//! (`RuntimeHandle::stream_turn`), both read to the end. Results also go to
//! `target/criterion/runtime-benches/queue.json`.

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use runtime_api::TurnRequest;
use runtime_benches::{Lab, load_average, registry, write_result};
use runtime_queue::{QueueClient, QueueConfig, Worker};
use serde_json::json;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn config(name: &str) -> QueueConfig {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    QueueConfig::default()
        .with_prefix(format!("bench-{name}-{nanos}"))
        .with_result_ttl(std::time::Duration::from_secs(600))
}

async fn throughput(url: &str, lab: &Lab, workers: usize, turns: usize, in_flight: usize) -> f64 {
    let config = config(&format!("w{workers}"));
    let dir = lab.path().join("libs");
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let worker = Worker::new(Arc::new(registry(&[&dir])), config.clone()).with_concurrency(64);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            worker
                .run(&url, async move {
                    let _ = stopped.await;
                })
                .await
        }));
        stops.push(stop);
    }
    let client = QueueClient::connect(url, config).await.expect("connect");
    let run = |count: usize| {
        let client = client.clone();
        async move {
            futures::stream::iter(0..count)
                .map(|i| {
                    let client = client.clone();
                    async move {
                        let mut stream = client
                            .stream_turn("echo", TurnRequest::new(format!("turn {i}")))
                            .await
                            .expect("submit");
                        let mut n = 0;
                        while let Some(item) = stream.next().await {
                            item.expect("an echo item");
                            n += 1;
                        }
                        assert_eq!(n, 3);
                    }
                })
                .buffer_unordered(in_flight)
                .collect::<Vec<()>>()
                .await;
        }
    };
    run(in_flight.min(turns)).await; // warm-up: libraries loaded, scripts cached
    let started = Instant::now();
    run(turns).await;
    let rate = turns as f64 / started.elapsed().as_secs_f64();
    for stop in stops {
        let _ = stop.send(());
    }
    for task in tasks {
        task.await.expect("worker task").expect("worker");
    }
    rate
}

async fn latency(url: &str, lab: &Lab, turns: usize) -> (Vec<f64>, Vec<f64>) {
    let config = config("latency");
    let dir = lab.path().join("libs");
    let runtimes = Arc::new(registry(&[&dir]));
    let local = runtimes.resolve("echo").expect("echo");
    let worker = Worker::new(Arc::clone(&runtimes), config.clone()).with_concurrency(4);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let url_owned = url.to_owned();
    let task = tokio::spawn(async move {
        worker
            .run(&url_owned, async move {
                let _ = stopped.await;
            })
            .await
    });
    let client = QueueClient::connect(url, config).await.expect("connect");
    let (mut queued, mut direct) = (Vec::new(), Vec::new());
    for i in 0..turns + 100 {
        let started = Instant::now();
        let stream = client
            .stream_turn("echo", TurnRequest::new(format!("q{i}")))
            .await
            .expect("submit");
        assert_eq!(stream.collect::<Vec<_>>().await.len(), 2);
        let q = started.elapsed();
        let started = Instant::now();
        let stream = local.stream_turn(TurnRequest::new(format!("l{i}")));
        assert_eq!(stream.collect::<Vec<_>>().await.len(), 2);
        let l = started.elapsed();
        if i >= 100 {
            queued.push(q.as_secs_f64() * 1e6);
            direct.push(l.as_secs_f64() * 1e6);
        }
    }
    let _ = stop.send(());
    task.await.expect("worker task").expect("worker");
    queued.sort_by(f64::total_cmp);
    direct.sort_by(f64::total_cmp);
    (queued, direct)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let url = std::env::var("AGENT_RUNTIMES_REDIS_URL").expect(
        "set AGENT_RUNTIMES_REDIS_URL (scripts/redis.sh start; set -a; . target/redis/env; set +a)",
    );
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers: TURNS IN_FLIGHT LATENCY_TURNS"))
        .collect();
    let turns = args.first().copied().unwrap_or(20_000);
    let in_flight = args.get(1).copied().unwrap_or(512);
    let latency_turns = args.get(2).copied().unwrap_or(2_000);
    let lab = Lab::new();
    let load_before = load_average();
    let mut rates = Vec::new();
    for workers in [1, 2, 4] {
        let rate = throughput(&url, &lab, workers, turns, in_flight).await;
        println!(
            "{workers} worker(s): {rate:.0} turns/s ({turns} echo turns, {in_flight} in flight)"
        );
        rates.push(json!({"workers": workers, "turns_per_second": rate}));
    }
    let (queued, direct) = latency(&url, &lab, latency_turns).await;
    let (q50, q99) = (percentile(&queued, 0.5), percentile(&queued, 0.99));
    let (l50, l99) = (percentile(&direct, 0.5), percentile(&direct, 0.99));
    println!(
        "latency over {latency_turns} sequential turns: queued p50 {q50:.0} µs, p99 {q99:.0} µs; local p50 {l50:.1} µs, p99 {l99:.1} µs; added p50 {:.0} µs, p99 {:.0} µs",
        q50 - l50,
        q99 - l99
    );
    write_result(
        "queue",
        &json!({
            "turns": turns,
            "in_flight": in_flight,
            "throughput": rates,
            "latency_us": {"queued": {"p50": q50, "p99": q99}, "local": {"p50": l50, "p99": l99},
                           "added": {"p50": q50 - l50, "p99": q99 - l99}},
            "load": {"before": load_before, "after": load_average()},
        }),
    );
}
