//! Memory: RSS after loading 1, 10 and 100 plugin libraries.
//!
//! Every measurement runs in a fresh child process (this binary started again with
//! `RUNTIME_BENCHES_RSS_CHILD=N`), so earlier loads do not pollute it. The parent makes 100
//! distinct, unpatched copies of the echo library; the child registers each one in its own
//! registry (they all declare the id `echo`), resolves it (`dlopen`, checks, factory), keeps
//! every handle, and reports `VmRSS` and `Threads` before and after. Three children per N.
//!
//! Not a criterion benchmark: it prints its figures and writes `memory.json` for
//! `bench-report`.

#![allow(clippy::print_stdout)]
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use runtime_benches::{Conditions, Lab, Spread, install, nanos, proc_status, write_result};
use runtime_loader::{LoaderOptions, Runtimes};
use serde_json::{Value, json};

const CHILD_ENV: &str = "RUNTIME_BENCHES_RSS_CHILD";
const DIR_ENV: &str = "RUNTIME_BENCHES_RSS_DIR";
const COUNTS: [usize; 3] = [1, 10, 100];
const RUNS: usize = 3;

fn copy_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("echo-{i:03}{}", std::env::consts::DLL_SUFFIX))
}

/// In the child: load `n` copies and print the figures as one JSON line.
fn child(n: usize, dir: &Path) {
    // The loader's own code and data are touched before the first figure.
    let warm = Runtimes::with_options(LoaderOptions::STRICT);
    let _ = warm.resolve("echo");
    let before = proc_status();
    let started = Instant::now();
    let kept: Vec<_> = (0..n)
        .map(|i| {
            let runtimes = Runtimes::with_options(LoaderOptions::STRICT);
            let report = runtimes.discover_files(&[copy_path(dir, i)]);
            assert_eq!(report.registered.len(), 1, "{report}");
            let handle = runtimes.resolve("echo").expect("echo loads");
            (runtimes, handle)
        })
        .collect();
    let elapsed = started.elapsed();
    let after = proc_status();
    println!(
        "{}",
        json!({
            "n": n,
            "before": before.to_json(),
            "after": after.to_json(),
            "load_ns": nanos(elapsed),
        })
    );
    drop(kept);
}

fn main() {
    if let Ok(n) = std::env::var(CHILD_ENV) {
        let n: usize = n.parse().expect("a count");
        let dir = PathBuf::from(std::env::var_os(DIR_ENV).expect("a folder"));
        child(n, &dir);
        return;
    }
    let conditions = Conditions::start("memory");
    let lab = Lab::new();
    let dir = lab.folder("rss");
    let max = COUNTS.iter().copied().max().unwrap_or(0);
    for i in 0..max {
        let path = install(&dir, &lab.echo, &format!("echo-{i:03}"));
        assert_eq!(path, copy_path(&dir, i));
    }
    let me = std::env::current_exe().expect("this binary");
    let mut results = serde_json::Map::new();
    println!("RSS after loading N plugin libraries (fresh process each, {RUNS} runs)");
    for n in COUNTS {
        let runs: Vec<Value> = (0..RUNS)
            .map(|_| {
                let output = Command::new(&me)
                    .env(CHILD_ENV, n.to_string())
                    .env(DIR_ENV, &dir)
                    .output()
                    .expect("the child runs");
                assert!(
                    output.status.success(),
                    "the child failed:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
                let stdout = String::from_utf8_lossy(&output.stdout);
                stdout
                    .lines()
                    .find_map(|line| serde_json::from_str::<Value>(line).ok())
                    .expect("the child printed its figures")
            })
            .collect();
        let figure = |f: &dyn Fn(&Value) -> f64| {
            let values: Vec<f64> = runs.iter().map(f).collect();
            Spread::of(&values)
        };
        let kib = |v: &Value, when: &str, what: &str| v[when][what].as_f64().unwrap_or(0.0);
        let added = figure(&|v| kib(v, "after", "rss_kib") - kib(v, "before", "rss_kib"));
        let rss_after = figure(&|v| kib(v, "after", "rss_kib"));
        let threads = figure(&|v| kib(v, "after", "threads") - kib(v, "before", "threads"));
        let load_ns = figure(&|v| v["load_ns"].as_f64().unwrap_or(0.0));
        let file = figure(&|v| kib(v, "after", "file_kib") - kib(v, "before", "file_kib"));
        let anon = figure(&|v| kib(v, "after", "anon_kib") - kib(v, "before", "anon_kib"));
        println!(
            "  N = {n:>3}: RSS {:.1} MiB after, +{:.1} MiB for the plugins ({:.0} KiB each; \
             min {:.0}, max {:.0} KiB added; per plugin {:.0} KiB file-backed (the library's \
             pages), {:.0} KiB anonymous), +{:.0} threads, {:.2} ms to load",
            rss_after.median / 1024.0,
            added.median / 1024.0,
            added.median / n as f64,
            added.min,
            added.max,
            file.median / n as f64,
            anon.median / n as f64,
            threads.median,
            load_ns.median / 1e6,
        );
        results.insert(
            n.to_string(),
            json!({
                "rss_after_kib": rss_after.to_json(),
                "rss_added_kib": added.to_json(),
                "rss_added_per_plugin_kib": added.median / n as f64,
                "threads_added": threads.to_json(),
                "file_added_kib": file.to_json(),
                "anon_added_kib": anon.to_json(),
                "load_ns": load_ns.to_json(),
                "runs": runs,
            }),
        );
    }
    write_result("memory", &Value::Object(results));
    conditions.finish();
}
