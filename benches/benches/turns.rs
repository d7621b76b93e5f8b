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
//! multi-thread runtime, each turn spawned and awaited before the next). The plugin also runs
//! at the threads level (`turn_threads`).
//!
//! Then the spread (not criterion's): `turns.latency.json` (also printed) has the p50 and p99
//! of 20,000 sequential turns of each subject, each turn timed on its own, with the clock's
//! own cost measured the same way (an empty timed section) beside them.

#![forbid(unsafe_code)]
// The spread of single turns is printed, as criterion prints its own figures.
#![allow(clippy::print_stdout)]

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use echo_runtime::Echo;
use runtime_api::{Runtime, RuntimeError, TurnOutput, TurnRequest, Value};
use runtime_benches::{Conditions, Lab, install, registry, write_result};
use runtime_loader::{Isolation, LoaderOptions, RuntimeHandle, Runtimes};
use serde_json::{Value as Json, json};
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

/// Turns timed one by one for the spread of each subject.
const TURNS_TIMED: usize = 20_000;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(at).copied().unwrap_or(f64::NAN)
}

/// p50 and p99 (ns) of `TURNS_TIMED` sequential turns, each timed on its own, after as many
/// untimed ones.
fn spread_of<F, T>(rt: &Tokio, turn: F) -> Json
where
    F: Fn() -> T,
    T: Future<Output = Result<TurnOutput, RuntimeError>>,
{
    let mut timed = rt.block_on(async {
        for _ in 0..TURNS_TIMED {
            black_box(turn().await.expect("the turn succeeds"));
        }
        let mut timed = Vec::with_capacity(TURNS_TIMED);
        for _ in 0..TURNS_TIMED {
            let started = Instant::now();
            let output = turn().await;
            timed.push(started.elapsed().as_nanos() as f64);
            black_box(output.expect("the turn succeeds"));
        }
        timed
    });
    timed.sort_by(f64::total_cmp);
    json!({ "p50_ns": percentile(&timed, 0.50), "p99_ns": percentile(&timed, 0.99) })
}

/// The spread of one turn of each subject, and of the clock itself.
fn latencies(rt: &Tokio, s: &Subjects) {
    let mut clock: Vec<f64> = (0..TURNS_TIMED)
        .map(|_| {
            let started = Instant::now();
            black_box(());
            started.elapsed().as_nanos() as f64
        })
        .collect();
    clock.sort_by(f64::total_cmp);
    let results = json!({
        "turns": TURNS_TIMED,
        "clock": { "p50_ns": percentile(&clock, 0.50), "p99_ns": percentile(&clock, 0.99) },
        "echo_plugin": spread_of(rt, || s.plugin.run_turn(request())),
        "echo_in_process": spread_of(rt, || s.in_process.run_turn(request())),
        "echo_direct": spread_of(rt, || s.direct.run_turn(request())),
        "echo_plugin_threads": spread_of(rt, || s.plugin_threads.run_turn(request())),
    });
    for way in [
        "echo_plugin",
        "echo_in_process",
        "echo_direct",
        "echo_plugin_threads",
        "clock",
    ] {
        println!(
            "turn latency {way:>20}: p50 {:9.0} ns  p99 {:9.0} ns",
            results[way]["p50_ns"].as_f64().unwrap_or(f64::NAN),
            results[way]["p99_ns"].as_f64().unwrap_or(f64::NAN)
        );
    }
    write_result("turns.latency", &results);
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
    latencies(&current_thread, &subjects);
    conditions.finish();
}
