//! The isolation levels: what keeping a plugin further from the host costs.
//!
//! - `isolation_turn/<level>`: one `run_turn` of the echo plugin, awaited on a current-thread
//!   runtime, at `inline`, `threads` and `process`; `in_process` is the same runtime compiled
//!   into the bench (`Runtimes::register::<Echo>()`) at the inline level, the reference.
//! - `isolation_stream/<level>/100000`: a turn streaming 100,000 deltas (`"a "` × 100,000),
//!   drained; criterion reports deltas per second.
//! - `worker_start/echo`: `Runtimes::new_instance` at the process level: spawn the worker,
//!   the handshake, the library's checks and load, the runtime's creation; then its first
//!   turn. The worker is let go of after each iteration (it exits on its own).
//!   `worker_start/echo_unsandboxed` and the `process_unsandboxed` turn and stream: the same
//!   with `ProcessOptions::with_sandbox(false)`, so the sandbox's cost shows beside them.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use echo_runtime::Echo;
use futures::StreamExt;
use runtime_api::{StreamItem, TurnRequest, Value};
use runtime_benches::{Conditions, Lab, build_worker_release, install};
use runtime_loader::{
    Isolation, LoaderOptions, ProcessOptions, RuntimeHandle, Runtimes, SearchPath,
};

const DELTAS: u64 = 100_000;

fn registry_at(dir: &std::path::Path, level: Isolation, worker: &std::path::Path) -> Runtimes {
    let runtimes = Runtimes::with_options(
        LoaderOptions::STRICT
            .with_isolation(level)
            .with_process(ProcessOptions::DEFAULT.with_worker(worker)),
    );
    runtimes.discover(&SearchPath::empty().with_dir(dir));
    runtimes
}

async fn drain(handle: &RuntimeHandle, prompt: &str) -> u64 {
    let mut stream = handle.stream_turn(TurnRequest::new(prompt));
    let mut deltas = 0;
    while let Some(item) = stream.next().await {
        match item.expect("the stream succeeds") {
            StreamItem::Delta(delta) => {
                black_box(delta);
                deltas += 1;
            }
            other => {
                black_box(other);
            }
        }
    }
    deltas
}

fn main() {
    let conditions = Conditions::start("isolation");
    let lab = Lab::new();
    let worker = build_worker_release();
    let dir = lab.folder("plugins");
    install(&dir, &lab.echo, "echo");
    let builtin = Runtimes::with_options(LoaderOptions::STRICT.with_isolation(Isolation::Inline));
    builtin.register::<Echo>().expect("echo registers");
    let mut subjects = vec![(
        "in_process".to_owned(),
        builtin.resolve("echo").expect("in-process resolves"),
    )];
    let mut registries = Vec::new();
    for level in Isolation::ALL {
        let runtimes = registry_at(&dir, level, &worker);
        let handle = runtimes.resolve("echo").expect("the plugin resolves");
        assert_eq!(handle.isolation(), level);
        subjects.push((level.to_string(), handle));
        registries.push(runtimes);
    }
    // The process level with its sandbox off (`ProcessOptions::with_sandbox(false)`): what
    // the sandbox (namespaces, Landlock, seccomp, rlimits) costs a turn and a worker's start.
    let unsandboxed = Runtimes::with_options(
        LoaderOptions::STRICT
            .with_isolation(Isolation::Process)
            .with_process(
                ProcessOptions::DEFAULT
                    .with_worker(&worker)
                    .with_sandbox(false),
            ),
    );
    unsandboxed.discover(&SearchPath::empty().with_dir(&dir));
    subjects.push((
        "process_unsandboxed".to_owned(),
        unsandboxed.resolve("echo").expect("the plugin resolves"),
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let mut c = Criterion::default()
        .without_plots()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();

    let mut group = c.benchmark_group("isolation_turn");
    for (name, handle) in &subjects {
        group.bench_function(name.as_str(), |b| {
            b.to_async(&rt)
                .iter(|| handle.run_turn(TurnRequest::new("hello world")));
        });
    }
    group.finish();

    let prompt = "a ".repeat(DELTAS as usize);
    let mut group = c.benchmark_group("isolation_stream");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .throughput(Throughput::Elements(DELTAS));
    for (name, handle) in &subjects {
        group.bench_with_input(BenchmarkId::new(name.as_str(), DELTAS), &prompt, |b, p| {
            b.to_async(&rt).iter(|| async {
                assert_eq!(drain(handle, p).await, DELTAS);
            });
        });
    }
    group.finish();

    let process = &registries[2];
    let mut group = c.benchmark_group("worker_start");
    group.sample_size(20);
    for (name, registry) in [("echo", process), ("echo_unsandboxed", &unsandboxed)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let handle = registry
                        .new_instance("echo", &Value::Null)
                        .expect("a worker starts");
                    total += started.elapsed();
                    drop(handle);
                }
                total
            });
        });
    }
    group.finish();
    c.final_summary();
    conditions.finish();
}
