//! Resolution of a runtime that is already loaded: by id, by alias, and the unknown-id error.
//!
//! The registry holds the echo plugin (id `echo`, alias `parrot`), resolved once before
//! measuring, so these are the steady-state lookups a host makes per request. `unknown_id` resolves `ecko`: the error
//! value names every available runtime with its aliases and suggests `echo`;
//! `unknown_id_message` also renders it to text, as a CLI would.

#![forbid(unsafe_code)]

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use runtime_benches::{Conditions, Lab, install, registry};

fn main() {
    let conditions = Conditions::start("resolve");
    let lab = Lab::new();
    let dir = lab.folder("plugins");
    install(&dir, &lab.echo, "echo");
    let runtimes = registry(&[&dir]);
    runtimes.resolve("echo").expect("echo loads");
    let message = runtimes.resolve("ecko").expect_err("unknown").to_string();
    assert!(message.contains("echo"), "{message}");

    let mut c = Criterion::default()
        .without_plots()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut group = c.benchmark_group("resolve");
    group.bench_function("by_id", |b| {
        b.iter(|| runtimes.resolve(black_box("echo")).expect("resolves"));
    });
    group.bench_function("by_alias", |b| {
        b.iter(|| runtimes.resolve(black_box("parrot")).expect("resolves"));
    });
    group.bench_function("unknown_id", |b| {
        b.iter(|| runtimes.resolve(black_box("ecko")).expect_err("unknown"));
    });
    group.bench_function("unknown_id_message", |b| {
        b.iter(|| {
            runtimes
                .resolve(black_box("ecko"))
                .expect_err("unknown")
                .to_string()
        });
    });
    group.finish();
    c.final_summary();
    conditions.finish();
}
