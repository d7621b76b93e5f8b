//! Turn overhead: one `run_turn` of echo through the plugin boundary against the same runtime
//! compiled into the bench.
//!
//! Three ways to call it:
//! - `plugin`: a handle resolved from the echo plugin library (loader + abi_stable + the
//!   generated glue + the plugin's own tokio copy);
//! - `in_process`: a handle from `Runtimes::register::<Echo>()` (loader + the same glue, no
//!   library boundary, the host's tokio);
//! - `direct`: `<Echo as Runtime>::run_turn` called on the value: no registry, no glue.
//!
//! Each is awaited inline (`turn_inline`: a current-thread runtime, one `block_on` per batch
//! of iterations) and through `tokio::spawn` (`turn_spawn`: from a task on a two-worker
//! multi-thread runtime, each turn spawned and awaited before the next).

#![forbid(unsafe_code)]

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use echo_runtime::Echo;
use runtime_api::{Runtime, RuntimeError, TurnOutput, TurnRequest, Value};
use runtime_benches::{Conditions, Lab, install, registry};
use runtime_loader::{Isolation, LoaderOptions, RuntimeHandle, Runtimes};
use tokio::runtime::Runtime as Tokio;

fn request() -> TurnRequest {
    TurnRequest::new("hello world")
}

/// The three ways to run a turn.
struct Subjects {
    /// The plugin at the inline level.
    plugin: RuntimeHandle,
    /// The same plugin at the threads level (the default).
    plugin_threads: RuntimeHandle,
    in_process: RuntimeHandle,
    direct: Arc<Echo>,
}

fn inline(c: &mut Criterion, rt: &Tokio, s: &Subjects) {
    let mut group = c.benchmark_group("turn_inline");
    group.bench_function("echo_plugin", |b| {
        b.to_async(rt).iter(|| s.plugin.run_turn(request()));
    });
    group.bench_function("echo_in_process", |b| {
        b.to_async(rt).iter(|| s.in_process.run_turn(request()));
    });
    group.bench_function("echo_direct", |b| {
        b.to_async(rt).iter(|| s.direct.run_turn(request()));
    });
    group.finish();
}

fn threads(c: &mut Criterion, rt: &Tokio, s: &Subjects) {
    let mut group = c.benchmark_group("turn_threads");
    group.bench_function("echo_plugin", |b| {
        b.to_async(rt).iter(|| s.plugin_threads.run_turn(request()));
    });
    group.finish();
}

fn spawned(c: &mut Criterion, rt: &Tokio, s: &Subjects) {
    let mut group = c.benchmark_group("turn_spawn");
    group.bench_function("echo_plugin", |b| {
        b.iter_custom(|iters| {
            let handle = s.plugin.clone();
            spawn_loop(rt, iters, move || handle.run_turn(request()))
        });
    });
    group.bench_function("echo_in_process", |b| {
        b.iter_custom(|iters| {
            let handle = s.in_process.clone();
            spawn_loop(rt, iters, move || handle.run_turn(request()))
        });
    });
    group.bench_function("echo_direct", |b| {
        b.iter_custom(|iters| {
            let direct = Arc::clone(&s.direct);
            spawn_loop(rt, iters, move || {
                let direct = Arc::clone(&direct);
                async move { direct.run_turn(request()).await }
            })
        });
    });
    group.finish();
}

/// From a task on the runtime: `iters` times, spawn a turn and await it.
fn spawn_loop<F, T>(rt: &Tokio, iters: u64, turn: F) -> Duration
where
    F: Fn() -> T + Send + Sync + 'static,
    T: Future<Output = Result<TurnOutput, RuntimeError>> + Send + 'static,
{
    rt.block_on(async move {
        tokio::spawn(async move {
            let started = Instant::now();
            for _ in 0..iters {
                let output = tokio::spawn(turn()).await.expect("the task finishes");
                black_box(output.expect("the turn succeeds"));
            }
            started.elapsed()
        })
        .await
        .expect("the timing task finishes")
    })
}

fn main() {
    let conditions = Conditions::start("turns");
    let lab = Lab::new();
    let dir = lab.folder("plugins");
    install(&dir, &lab.echo, "echo");
    let plugins = registry(&[&dir]);
    let in_process = Runtimes::with_options(LoaderOptions::STRICT);
    in_process.register::<Echo>().expect("echo registers");
    let plugin = plugins.resolve("echo").expect("the plugin resolves");
    let subjects = Subjects {
        plugin: plugin.with_isolation(Isolation::Inline),
        plugin_threads: plugin.with_isolation(Isolation::Threads),
        in_process: in_process
            .resolve("echo")
            .expect("in-process resolves")
            .with_isolation(Isolation::Inline),
        direct: Arc::new(Echo::new(Value::Null).expect("echo builds")),
    };
    let current_thread = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let multi_thread = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");

    let mut c = Criterion::default()
        .without_plots()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    inline(&mut c, &current_thread, &subjects);
    threads(&mut c, &current_thread, &subjects);
    spawned(&mut c, &multi_thread, &subjects);
    c.final_summary();
    conditions.finish();
}
