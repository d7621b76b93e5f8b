//! Concurrency: 10,000 concurrent turns of echo with `delay_ms = 50` on a two-worker
//! multi-thread runtime. One iteration spawns all 10,000 turns and awaits them all; its wall
//! time is compared with the ideal 50 ms.
//!
//! - `echo_plugin`: echo resolved from the plugin library; its sleeps run on the plugin's own
//!   tokio runtime, whose timer wakes the host's tasks;
//! - `echo_in_process`: the same runtime through `Runtimes::register::<Echo>()`; its sleeps run
//!   on the host's runtime;
//! - `echo_direct`: `<Echo as Runtime>::run_turn` spawned directly, no registry and no glue:
//!   what tokio itself costs here.
//!
//! Memory: for each variant, three fresh child processes (this binary started again with
//! `RUNTIME_BENCHES_CONCURRENCY_CHILD=<variant>`) run one warm-up batch of 100 turns, then one
//! batch of 10,000, reading `VmRSS` before, 25 ms in (every turn in flight) and `VmHWM` after,
//! with the peak reset before the batch (`/proc/self/clear_refs`). A fresh process, because
//! the allocator keeps what an earlier batch freed.

#![allow(clippy::print_stdout)]
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use echo_runtime::Echo;
use runtime_api::{Runtime, RuntimeError, TurnOutput, TurnRequest};
use runtime_benches::{
    Conditions, Lab, Spread, install, nanos, proc_status, registry, reset_peak_rss, write_result,
};
use runtime_loader::{LoaderOptions, RuntimeHandle, Runtimes};
use serde_json::{Value, json};
use tokio::runtime::Runtime as Tokio;
use tokio::task::JoinHandle;

const TURNS: usize = 10_000;
const DELAY_MS: u64 = 50;
const CHILD_ENV: &str = "RUNTIME_BENCHES_CONCURRENCY_CHILD";
const LIBRARY_ENV: &str = "RUNTIME_BENCHES_ECHO_LIBRARY";
const VARIANTS: [&str; 3] = ["echo_plugin", "echo_in_process", "echo_direct"];

/// What runs the turns.
enum Subject {
    Handle(RuntimeHandle),
    Direct(Arc<Echo>),
}

impl Subject {
    /// `variant` of [`VARIANTS`], with echo's plugin library at `library`.
    fn new(variant: &str, library: &Path) -> Self {
        let config = json!({ "delay_ms": DELAY_MS });
        match variant {
            "echo_plugin" => {
                let dir = library.parent().expect("the library's folder");
                let runtimes = registry(&[dir]);
                Subject::Handle(runtimes.new_instance("echo", &config).expect("resolves"))
            }
            "echo_in_process" => {
                let runtimes = Runtimes::with_options(LoaderOptions::STRICT);
                runtimes.register::<Echo>().expect("echo registers");
                Subject::Handle(runtimes.new_instance("echo", &config).expect("resolves"))
            }
            "echo_direct" => Subject::Direct(Arc::new(Echo::new(config).expect("echo builds"))),
            other => panic!("unknown variant {other}"),
        }
    }

    fn spawn(&self, i: usize) -> JoinHandle<Result<TurnOutput, RuntimeError>> {
        let request = TurnRequest::new(format!("turn {i}"));
        match self {
            Subject::Handle(handle) => tokio::spawn(handle.run_turn(request)),
            Subject::Direct(echo) => {
                let echo = Arc::clone(echo);
                tokio::spawn(async move { echo.run_turn(request).await })
            }
        }
    }

    /// Spawns `turns` turns, then awaits them all; calls `in_flight` halfway through the delay.
    async fn batch(&self, turns: usize, in_flight: impl FnOnce()) {
        let tasks: Vec<_> = (0..turns).map(|i| self.spawn(i)).collect();
        tokio::time::sleep(Duration::from_millis(DELAY_MS / 2)).await;
        in_flight();
        for task in tasks {
            black_box(task.await.expect("task").expect("turn"));
        }
    }
}

fn multi_thread() -> Tokio {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio")
}

/// In a child process: one warm-up batch, one measured batch; prints the figures.
fn child(variant: &str, library: &Path) {
    let subject = Subject::new(variant, library);
    let rt = multi_thread();
    rt.block_on(subject.batch(100, || {}));
    let peak_reset = reset_peak_rss();
    let before = proc_status();
    let mut during = before;
    let started = Instant::now();
    rt.block_on(subject.batch(TURNS, || during = proc_status()));
    let wall = started.elapsed();
    let after = proc_status();
    println!(
        "{}",
        json!({
            "variant": variant,
            "wall_ns": nanos(wall),
            "peak_reset": peak_reset,
            "before": before.to_json(),
            "during": during.to_json(),
            "after": after.to_json(),
            "rss_in_flight_delta_kib": during.rss_kib as f64 - before.rss_kib as f64,
            "hwm_delta_kib": after.hwm_kib as f64 - before.rss_kib as f64,
        })
    );
}

fn memory(library: &PathBuf) {
    let me = std::env::current_exe().expect("this binary");
    let mut results = serde_json::Map::new();
    for variant in VARIANTS {
        let runs: Vec<Value> = (0..3)
            .map(|_| {
                let output = Command::new(&me)
                    .env(CHILD_ENV, variant)
                    .env(LIBRARY_ENV, library)
                    .output()
                    .expect("the child runs");
                assert!(
                    output.status.success(),
                    "the child failed:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .find_map(|line| serde_json::from_str::<Value>(line).ok())
                    .expect("the child printed its figures")
            })
            .collect();
        let spread = |key: &str| {
            let values: Vec<f64> = runs.iter().filter_map(|r| r[key].as_f64()).collect();
            Spread::of(&values)
        };
        let (rss, hwm, wall) = (
            spread("rss_in_flight_delta_kib"),
            spread("hwm_delta_kib"),
            spread("wall_ns"),
        );
        println!(
            "{variant}: 10,000 turns in flight: RSS +{:.1} MiB, peak RSS +{:.1} MiB \
             (median of 3 fresh processes; {:.0} bytes per turn), first batch {:.1} ms",
            rss.median / 1024.0,
            hwm.median / 1024.0,
            hwm.median * 1024.0 / TURNS as f64,
            wall.median / 1e6,
        );
        results.insert(
            variant.to_owned(),
            json!({
                "rss_in_flight_delta_kib": rss.to_json(),
                "hwm_delta_kib": hwm.to_json(),
                "first_batch_wall_ns": wall.to_json(),
                "runs": runs,
            }),
        );
    }
    write_result("concurrency.memory", &Value::Object(results));
}

fn main() {
    if let Ok(variant) = std::env::var(CHILD_ENV) {
        let library = PathBuf::from(std::env::var_os(LIBRARY_ENV).expect("a library"));
        child(&variant, &library);
        return;
    }
    let conditions = Conditions::start("concurrency");
    let lab = Lab::new();
    let dir = lab.folder("plugins");
    let library = install(&dir, &lab.echo, "echo");
    memory(&library);

    let rt = multi_thread();
    let mut c = Criterion::default().without_plots().configure_from_args();
    let mut group = c.benchmark_group("concurrent_10000x50ms");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500));
    for variant in VARIANTS {
        let subject = Subject::new(variant, &library);
        group.bench_function(variant, |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                for _ in 0..iters {
                    rt.block_on(subject.batch(TURNS, || {}));
                }
                started.elapsed()
            });
        });
    }
    group.finish();
    c.final_summary();
    conditions.finish();
}
