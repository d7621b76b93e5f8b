//! Streaming: 1,000,000 small text deltas through the host API's `Stream`.
//!
//! The prompt is `"a "` repeated 1,000,000 times, which echo streams as 1,000,000 deltas of
//! `"a "` and a final result. Each iteration starts a stream and drains it on a current-thread
//! runtime; criterion reports the throughput in deltas per second.
//!
//! - `echo_plugin`: `RuntimeHandle::stream_turn` on the echo plugin;
//! - `echo_in_process`: the same through `Runtimes::register::<Echo>()` (same glue, no library
//!   boundary);
//! - `echo_direct`: `<Echo as Runtime>::stream_turn` with no registry and no glue.

#![forbid(unsafe_code)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use echo_runtime::Echo;
use futures::{Stream, StreamExt};
use runtime_api::{Runtime, RuntimeError, StreamItem, TurnRequest, Value};
use runtime_benches::{Conditions, Lab, install, registry};
use runtime_loader::{Isolation, LoaderOptions, Runtimes};

const DELTAS: u64 = 1_000_000;

/// Drains a turn's stream; returns the number of deltas.
async fn drain(stream: impl Stream<Item = Result<StreamItem, RuntimeError>>) -> u64 {
    let mut stream = std::pin::pin!(stream);
    let mut deltas = 0;
    let mut done = false;
    while let Some(item) = stream.next().await {
        match item.expect("the stream succeeds") {
            StreamItem::Delta(delta) => {
                black_box(delta);
                deltas += 1;
            }
            StreamItem::Done(output) => {
                black_box(output);
                done = true;
            }
            other => {
                black_box(other);
            }
        }
    }
    assert!(done, "the stream ends with its result");
    deltas
}

fn main() {
    let conditions = Conditions::start("streaming");
    let lab = Lab::new();
    let dir = lab.folder("plugins");
    install(&dir, &lab.echo, "echo");
    let plugins = registry(&[&dir]);
    let in_process = Runtimes::with_options(LoaderOptions::STRICT);
    in_process.register::<Echo>().expect("echo registers");
    // The inline level: the figures against the direct call; `_threads`: the default level.
    let plugin = plugins
        .resolve("echo")
        .expect("the plugin resolves")
        .with_isolation(Isolation::Inline);
    let in_process = in_process
        .resolve("echo")
        .expect("in-process resolves")
        .with_isolation(Isolation::Inline);
    let plugin_threads = plugin.with_isolation(Isolation::Threads);
    let direct = Arc::new(Echo::new(Value::Null).expect("echo builds"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let prompt = "a ".repeat(DELTAS as usize);
    for handle in [&plugin, &in_process] {
        let streamed = rt.block_on(drain(handle.stream_turn(TurnRequest::new(prompt.clone()))));
        assert_eq!(streamed, DELTAS);
    }

    let mut c = Criterion::default().without_plots().configure_from_args();
    let mut group = c.benchmark_group("stream");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .throughput(Throughput::Elements(DELTAS))
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4));
    for (name, handle) in [
        ("echo_plugin", &plugin),
        ("echo_in_process", &in_process),
        ("echo_plugin_threads", &plugin_threads),
    ] {
        group.bench_function(BenchmarkId::new(name, DELTAS), |b| {
            b.to_async(&rt).iter(|| {
                let stream = handle.stream_turn(TurnRequest::new(prompt.clone()));
                async move { assert_eq!(drain(stream).await, DELTAS) }
            });
        });
    }
    group.bench_function(BenchmarkId::new("echo_direct", DELTAS), |b| {
        b.to_async(&rt).iter(|| {
            let stream = Arc::clone(&direct).stream_turn(TurnRequest::new(prompt.clone()));
            async move { assert_eq!(drain(stream).await, DELTAS) }
        });
    });
    group.finish();
    c.final_summary();
    conditions.finish();
}
