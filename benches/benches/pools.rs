//! The process level's worker pools and upgrades (issue 24's figures).
//!
//! - `process_pool/<workers>`: 64 concurrent echo turns on one runtime instance served by a
//!   pool of 1, 2 or 4 worker processes, on a multi-threaded runtime; criterion reports turns
//!   per second.
//! - `upgrade_pause/echo`: the echo plugin's file replaced by a new build (a copy renamed
//!   over it, as `runtimes install` does), then what a host does on `SIGHUP`:
//!   `Runtimes::rediscover` and the first turn of the upgraded runtime, which starts a worker
//!   of the new file. The time of that sequence is the pause a new turn sees after an
//!   upgrade; turns already running see none.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use runtime_api::TurnRequest;
use runtime_benches::{Conditions, Lab, build_worker_release, install};
use runtime_loader::{Isolation, LoaderOptions, ProcessOptions, Runtimes, SearchPath};

const CONCURRENT: u64 = 64;

fn main() {
    let conditions = Conditions::start("pools");
    let lab = Lab::new();
    let worker = build_worker_release();
    let dir = lab.folder("plugins");
    install(&dir, &lab.echo, "echo");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let mut c = Criterion::default()
        .without_plots()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();

    let mut group = c.benchmark_group("process_pool");
    group.throughput(Throughput::Elements(CONCURRENT));
    for workers in [1usize, 2, 4] {
        let runtimes = Runtimes::with_options(
            LoaderOptions::STRICT
                .with_isolation(Isolation::Process)
                .with_process(
                    ProcessOptions::DEFAULT
                        .with_worker(&worker)
                        .with_pool_size(workers),
                ),
        );
        runtimes.discover(&SearchPath::empty().with_dir(&dir));
        let handle = runtimes.resolve("echo").expect("echo resolves");
        // Every worker of the pool up before measuring.
        rt.block_on(futures::future::join_all(
            (0..workers * 4).map(|_| handle.run_turn(TurnRequest::new("warm"))),
        ));
        group.bench_with_input(
            BenchmarkId::from_parameter(workers),
            &handle,
            |b, handle| {
                b.to_async(&rt).iter(|| async {
                    let turns = (0..CONCURRENT)
                        .map(|i| handle.run_turn(TurnRequest::new(format!("turn {i}"))));
                    for answer in futures::future::join_all(turns).await {
                        answer.expect("the turn succeeds");
                    }
                });
            },
        );
    }
    group.finish();

    let runtimes = Runtimes::with_options(
        LoaderOptions::STRICT
            .with_isolation(Isolation::Process)
            .with_process(ProcessOptions::DEFAULT.with_worker(&worker)),
    );
    runtimes.discover(&SearchPath::empty().with_dir(&dir));
    let running = runtimes.resolve("echo").expect("echo resolves");
    let staging = lab.folder("staging");
    let mut group = c.benchmark_group("upgrade_pause");
    group.sample_size(20);
    group.bench_function("echo", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let fresh = install(&staging, &lab.echo, "echo");
                std::fs::rename(&fresh, dir.join(fresh.file_name().expect("a file name")))
                    .expect("the new build replaces the old");
                let started = Instant::now();
                let outcome = runtimes.rediscover();
                assert_eq!(outcome.upgraded, ["echo"]);
                let upgraded = runtimes.resolve("echo").expect("the new build resolves");
                rt.block_on(upgraded.run_turn(TurnRequest::new("after")))
                    .expect("the new build answers");
                total += started.elapsed();
            }
            total
        });
    });
    group.finish();
    // The handle resolved before the upgrades still answers, on its own worker.
    rt.block_on(running.run_turn(TurnRequest::new("still here")))
        .expect("the old build still answers");
    drop(running);
    c.final_summary();
    conditions.finish();
}
