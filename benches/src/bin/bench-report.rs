//! Prints the figures of the last `cargo bench -p runtime-benches` as the Markdown tables of
//! `BENCHMARKS.md`: criterion's estimates (median, its 95% confidence interval, the fastest and
//! slowest sample), the ratios against the in-process baselines, the memory figures, and each
//! target beside its figure.
//!
//! Run it after the benchmarks: `cargo run --release -q -p runtime-benches --bin bench-report`.

#![allow(clippy::print_stdout)]
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::path::Path;

use runtime_benches::{criterion_dir, results_dir};
use serde_json::Value;

/// One criterion benchmark's figures, per iteration, in nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Figure {
    median: f64,
    low: f64,
    high: f64,
    fastest: f64,
    slowest: f64,
}

fn read_json(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// The figures of benchmark `id` (its criterion path, e.g. `list/plugins/100`).
fn figure(id: &str) -> Option<Figure> {
    let dir = criterion_dir().join(id).join("new");
    let estimates = read_json(&dir.join("estimates.json"))?;
    let sample = read_json(&dir.join("sample.json"))?;
    let median = &estimates["median"];
    let per_iter: Vec<f64> = sample["iters"]
        .as_array()?
        .iter()
        .zip(sample["times"].as_array()?)
        .filter_map(|(i, t)| Some(t.as_f64()? / i.as_f64()?))
        .collect();
    Some(Figure {
        median: median["point_estimate"].as_f64()?,
        low: median["confidence_interval"]["lower_bound"].as_f64()?,
        high: median["confidence_interval"]["upper_bound"].as_f64()?,
        fastest: per_iter.iter().copied().fold(f64::INFINITY, f64::min),
        slowest: per_iter.iter().copied().fold(0.0, f64::max),
    })
}

/// A duration in nanoseconds, in a readable unit.
fn time(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn spread(f: &Figure) -> String {
    format!(
        "[{} – {}]; samples {} – {}",
        time(f.low),
        time(f.high),
        time(f.fastest),
        time(f.slowest)
    )
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    format!("{cpus} CPUs (`nproc`), {model}")
}

fn conditions() -> String {
    let mut out = String::new();
    for name in [
        "discovery",
        "resolve",
        "turns",
        "streaming",
        "concurrency",
        "memory",
        "isolation",
        "serve",
    ] {
        let Some(c) = read_json(&results_dir().join(format!("{name}.conditions.json"))) else {
            continue;
        };
        let _ = write!(
            out,
            "{name}: {} → {}; ",
            c["loadavg_start"], c["loadavg_end"]
        );
    }
    out.trim_end_matches("; ").to_owned()
}

fn main() {
    let mut out = String::new();
    let o = &mut out;
    let _ = writeln!(o, "Machine: {}.", machine());
    let _ = writeln!(
        o,
        "Load averages (1, 5, 15 min) at the start → end of each bench binary: {}.\n",
        conditions()
    );

    // Discovery and resolution.
    let _ = writeln!(
        o,
        "| figure | median | 95% CI of the median; fastest – slowest sample | target | |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|");
    for n in [1, 10, 100] {
        if let Some(f) = figure(&format!("list/plugins/{n}")) {
            let (target, met) = if n == 100 {
                ("≤ 1 ms", verdict(f.median <= 1e6))
            } else {
                ("", "")
            };
            let _ = writeln!(
                o,
                "| discover + list {n} plugins (fresh registry) | {} ({} per plugin) | {} | {target} | {met} |",
                time(f.median),
                time(f.median / n as f64),
                spread(&f)
            );
        }
    }
    if let Some(f) = figure("list_changed/plugins/100") {
        let _ = writeln!(
            o,
            "| discover + list 100 plugins, every file changed since the last listing (as a process's first) | {} ({} per plugin) | {} | | |",
            time(f.median),
            time(f.median / 100.0),
            spread(&f)
        );
    }
    for (id, what) in [
        ("real_file", "one candidate: resolve its real path"),
        (
            "read_manifest",
            "one candidate: read its manifest (the loader)",
        ),
        (
            "prototype_interp_by_phdr",
            "one candidate: read its manifest, `.interp` check by program header (prototype)",
        ),
        (
            "prototype_dynsym_only",
            "one candidate: read its manifest from the dynamic symbols only (prototype)",
        ),
    ] {
        if let Some(f) = figure(&format!("list_parts/{id}")) {
            let _ = writeln!(o, "| {what} | {} | {} | | |", time(f.median), spread(&f));
        }
    }
    if let Some(f) = figure("first_resolve/echo") {
        let _ = writeln!(
            o,
            "| first resolve of a plugin (dlopen, checks, factory) | {} | {} | ≤ 0.3 ms | {} |",
            time(f.median),
            spread(&f),
            verdict(f.median <= 0.3e6)
        );
    }
    for (id, what) in [
        ("by_id", "resolve by id"),
        ("by_alias", "resolve by alias"),
        ("unknown_id", "resolve an unknown id (error value)"),
        (
            "unknown_id_message",
            "resolve an unknown id, error rendered to text",
        ),
    ] {
        if let Some(f) = figure(&format!("resolve/{id}")) {
            let (target, met) = if id.starts_with("by_") {
                ("≤ 50 ns", verdict(f.median <= 50.0))
            } else {
                ("", "")
            };
            let _ = writeln!(
                o,
                "| {what} | {} | {} | {target} | {met} |",
                time(f.median),
                spread(&f)
            );
        }
    }

    // Turns.
    for (group, title) in [
        ("turn_inline", "awaited inline (current-thread runtime)"),
        (
            "turn_spawn",
            "through `tokio::spawn` (multi-thread runtime, 2 workers)",
        ),
    ] {
        let _ = writeln!(o, "\nOne `run_turn`, {title}:\n");
        let _ = writeln!(
            o,
            "| runtime | plugin | in-process (registry) | direct (no registry) | plugin / in-process | plugin / direct | target |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|");
        for runtime in ["echo"] {
            let get = |way: &str| figure(&format!("{group}/{runtime}_{way}"));
            let (Some(p), Some(i), Some(d)) = (get("plugin"), get("in_process"), get("direct"))
            else {
                continue;
            };
            let target = if group == "turn_inline" {
                format!(
                    "≤ 300 ns and ≤ 2.5× direct: {}",
                    verdict(p.median <= 300.0 && p.median / d.median <= 2.5)
                )
            } else {
                String::new()
            };
            let cell =
                |f: &Figure| format!("{} [{} – {}]", time(f.median), time(f.low), time(f.high));
            let _ = writeln!(
                o,
                "| {runtime} | {} | {} | {} | {:.2}× | {:.2}× | {target} |",
                cell(&p),
                cell(&i),
                cell(&d),
                p.median / i.median,
                p.median / d.median
            );
        }
    }

    if let Some(f) = figure("turn_threads/echo_plugin") {
        let _ = writeln!(
            o,
            "\nOne `run_turn` of the plugin at the threads level (the default), awaited inline: {} [{} – {}] (target ≤ 5 µs at p50: {}; p50 and p99 below).",
            time(f.median),
            time(f.low),
            time(f.high),
            verdict(f.median <= 5e3)
        );
    }

    // The spread of single turns.
    if let Some(latency) = read_json(&results_dir().join("turns.latency.json")) {
        let _ = writeln!(
            o,
            "\nOne turn timed on its own, {} sequential turns each (current-thread runtime; the clock's own cost beside them):\n",
            latency["turns"]
        );
        let _ = writeln!(o, "| subject | p50 | p99 | target |");
        let _ = writeln!(o, "|---|---|---|---|");
        for (way, what) in [
            ("echo_plugin", "plugin, inline"),
            ("echo_in_process", "in-process (registry), inline"),
            ("echo_direct", "direct (no registry)"),
            ("echo_plugin_threads", "plugin, threads level"),
            ("clock", "the clock alone (`Instant::now` twice)"),
        ] {
            let p50 = latency[way]["p50_ns"].as_f64().unwrap_or(f64::NAN);
            let p99 = latency[way]["p99_ns"].as_f64().unwrap_or(f64::NAN);
            let target = match way {
                "echo_plugin_threads" => format!(
                    "p50 ≤ 5 µs, p99 ≤ 20 µs: {}",
                    verdict(p50 <= 5e3 && p99 <= 20e3)
                ),
                _ => String::new(),
            };
            let _ = writeln!(o, "| {what} | {} | {} | {target} |", time(p50), time(p99));
        }
    }

    // Streaming.
    let _ = writeln!(o, "\nStreaming text deltas through the host `Stream`:\n");
    let _ = writeln!(
        o,
        "| runtime, deltas | plugin | in-process (registry) | direct (no registry) | plugin / in-process (time) | target |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    for (runtime, deltas) in [("echo", 1_000_000u64)] {
        let get = |way: &str| figure(&format!("stream/{runtime}_{way}/{deltas}"));
        let (Some(p), Some(i), Some(d)) = (get("plugin"), get("in_process"), get("direct")) else {
            continue;
        };
        let rate = |ns: f64| deltas as f64 / ns * 1e9;
        let cell = |f: &Figure| {
            format!(
                "{:.2} M/s [{:.2} – {:.2}] ({} per stream)",
                rate(f.median) / 1e6,
                rate(f.high) / 1e6,
                rate(f.low) / 1e6,
                time(f.median)
            )
        };
        let per_second = deltas as f64 / p.median * 1e9;
        let _ = writeln!(
            o,
            "| {runtime}, {deltas} | {} | {} | {} | {:.2}× | ≥ 10 M/s: {} |",
            cell(&p),
            cell(&i),
            cell(&d),
            p.median / i.median,
            verdict(per_second >= 10e6)
        );
    }

    // Concurrency.
    let memory = read_json(&results_dir().join("concurrency.memory.json"));
    let _ = writeln!(
        o,
        "\n10,000 concurrent turns of echo, `delay_ms = 50`, multi-thread runtime (2 workers):\n"
    );
    let _ = writeln!(
        o,
        "| runtime | wall time per batch | 95% CI; fastest – slowest | / ideal 50 ms | RSS in flight | peak RSS added | target ≤ 1.15× direct tokio |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|");
    let direct = figure("concurrent_10000x50ms/echo_direct");
    for way in ["echo_plugin", "echo_in_process", "echo_direct"] {
        let Some(f) = figure(&format!("concurrent_10000x50ms/{way}")) else {
            continue;
        };
        let mem = |key: &str| {
            memory
                .as_ref()
                .and_then(|m| m[way][key]["median"].as_f64())
                .map_or("?".to_owned(), |kib| format!("+{:.1} MiB", kib / 1024.0))
        };
        let _ = writeln!(
            o,
            "| {way} | {} | {} | {:.2}× | {} | {} | {} |",
            time(f.median),
            spread(&f),
            f.median / 50e6,
            mem("rss_in_flight_delta_kib"),
            mem("hwm_delta_kib"),
            direct.as_ref().map_or(String::new(), |d| format!(
                "{:.2}×: {}",
                f.median / d.median,
                verdict(f.median <= 1.15 * d.median)
            ))
        );
    }

    // Memory.
    if let Some(memory) = read_json(&results_dir().join("memory.json")) {
        let _ = writeln!(
            o,
            "\nRSS after loading N plugin libraries (first resolve of each), fresh process, median of 3 [min – max]:\n"
        );
        let _ = writeln!(
            o,
            "| N | RSS after | RSS added | per plugin (target ≤ 512 KiB) | of which file-backed / anonymous | threads added (target 0) | time to discover + load all |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|");
        for n in ["1", "10", "100"] {
            let m = &memory[n];
            let mib = |v: &Value| v.as_f64().unwrap_or(0.0) / 1024.0;
            let count: f64 = n.parse().unwrap_or(1.0);
            let per = |v: &Value| v.as_f64().unwrap_or(0.0) / count;
            let _ = writeln!(
                o,
                "| {n} | {:.1} MiB | {:.1} MiB [{:.1} – {:.1}] | {:.0} KiB | {:.0} / {:.0} KiB | {} | {} |",
                mib(&m["rss_after_kib"]["median"]),
                mib(&m["rss_added_kib"]["median"]),
                mib(&m["rss_added_kib"]["min"]),
                mib(&m["rss_added_kib"]["max"]),
                m["rss_added_per_plugin_kib"].as_f64().unwrap_or(0.0),
                per(&m["file_added_kib"]["median"]),
                per(&m["anon_added_kib"]["median"]),
                m["threads_added"]["median"],
                time(m["load_ns"]["median"].as_f64().unwrap_or(0.0)),
            );
        }
    }
    print!("{out}");
}
