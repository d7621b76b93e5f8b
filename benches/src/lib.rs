//! Shared support for the benchmarks in `benches/`: building the plugin libraries in release
//! mode, plugin folders holding copies of them (renamed, or with a patched manifest), figures
//! from `/proc`, and the result files that `bench-report` turns into the table of
//! `BENCHMARKS.md`.
//!
//! Everything here panics with a message on failure: it runs in benchmark binaries only.

#![forbid(unsafe_code)]

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use runtime_api::manifest::Manifest;
use runtime_loader::{LoaderOptions, Runtimes, SearchPath};
use serde_json::{Value, json};
use tempfile::TempDir;

pub use dev_support::{Built, install};

/// `cargo build --release` with these arguments (a no-op for cargo when fresh): what it built.
pub fn cargo_build_release(args: &[&str]) -> Built {
    dev_support::CargoBuild::new(env!("CARGO_MANIFEST_DIR"))
        .args(["--release"])
        .args(args)
        .run()
}

/// Builds the echo plugin library with `cargo build --release -p echo-runtime` and returns the
/// path cargo reports, as the integration tests do in debug mode.
pub fn build_echo_release() -> PathBuf {
    cargo_build_release(&["-p", "echo-runtime"]).library("echo_runtime")
}

/// Builds the process isolation level's worker with `cargo build --release -p runtime-loader
/// --bin runtimes-worker` and returns the path cargo reports.
pub fn build_worker_release() -> PathBuf {
    cargo_build_release(&["-p", "runtime-loader", "--bin", "runtimes-worker"])
        .executable("runtimes-worker")
}

/// Builds the `runtimes` command with `cargo build --release -p runtimes-cli` and returns the
/// path cargo reports.
pub fn build_runtimes_release() -> PathBuf {
    cargo_build_release(&["-p", "runtimes-cli"]).executable("runtimes")
}

/// A private temporary folder holding the benchmark's own copy of the echo library (so that a
/// concurrent build cannot change it mid-run) and the plugin folders made from it. Removed
/// when dropped.
pub struct Lab {
    dir: TempDir,
    /// The echo library.
    pub echo: PathBuf,
    next_copy: AtomicUsize,
}

impl fmt::Debug for Lab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lab")
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Lab {
    /// Builds the echo plugin and copies it into a fresh folder.
    pub fn new() -> Self {
        let echo = build_echo_release();
        let dir = tempfile::Builder::new()
            .prefix("runtime-benches-")
            .tempdir()
            .expect("temp dir");
        let libs = dir.path().join("libs");
        std::fs::create_dir(&libs).expect("create libs folder");
        Self {
            echo: install(&libs, &echo, "echo"),
            dir,
            next_copy: AtomicUsize::new(0),
        }
    }

    /// The lab's folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A new, empty plugin folder in the lab.
    pub fn folder(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir(&path).expect("create plugin folder");
        path
    }

    /// A copy of `library` under a file name never used before in this lab, in folder
    /// `fresh`: a library the process has never loaded, for measuring a first resolve.
    pub fn fresh_copy(&self, library: &Path) -> PathBuf {
        let dir = self.dir.path().join("fresh");
        std::fs::create_dir_all(&dir).expect("create fresh folder");
        let n = self.next_copy.fetch_add(1, Ordering::Relaxed);
        install(&dir, library, &format!("fresh-{n:06}"))
    }
}

/// Copies a library, rewriting its embedded manifest so that it declares runtime `id` with
/// `aliases` instead of its own. Discovery registers such a copy as a distinct runtime; loading
/// it fails the manifest cross-check (the code still says `echo`), so copies like this are for
/// discovery and listing only.
pub fn install_with_id(
    dir: &Path,
    library: &Path,
    stem: &str,
    id: &str,
    aliases: &[String],
) -> PathBuf {
    let mut bytes = std::fs::read(library).expect("read library");
    let region =
        dev_support::manifest_region(&bytes).expect("the library has an embedded manifest");
    let mut manifest = Manifest::from_embedded(&bytes[region.clone()]).expect("manifest parses");
    assert_eq!(manifest.runtimes.len(), 1, "one runtime per copied library");
    manifest.runtimes[0].id = id.to_owned();
    manifest.runtimes[0].aliases = aliases.to_vec();
    let embedded = manifest.to_embedded().expect("the manifest fits");
    bytes[region].copy_from_slice(&embedded);
    let staged = dir.join(format!(".{stem}.staged"));
    std::fs::write(&staged, &bytes).expect("write library");
    let target = install(dir, &staged, stem);
    std::fs::remove_file(&staged).expect("remove the staged copy");
    target
}

/// A fresh registry, with strict checks, over exactly these folders.
pub fn registry(dirs: &[&Path]) -> Runtimes {
    let runtimes = Runtimes::with_options(LoaderOptions::STRICT);
    let mut path = SearchPath::empty();
    for dir in dirs {
        path = path.with_dir(*dir);
    }
    runtimes.discover(&path);
    runtimes
}

/// Figures from `/proc/self/status`, in KiB; zero where unavailable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcStatus {
    /// `VmRSS`: resident set size now.
    pub rss_kib: u64,
    /// `VmHWM`: peak resident set size since the start (or the last [`reset_peak_rss`]).
    pub hwm_kib: u64,
    /// `RssAnon`: the anonymous part of `VmRSS` (heap, stacks).
    pub anon_kib: u64,
    /// `RssFile`: the file-backed part of `VmRSS` (mapped libraries' pages).
    pub file_kib: u64,
    /// `Threads`.
    pub threads: u64,
}

impl ProcStatus {
    /// As JSON, for the result files.
    pub fn to_json(self) -> Value {
        json!({
            "rss_kib": self.rss_kib,
            "hwm_kib": self.hwm_kib,
            "anon_kib": self.anon_kib,
            "file_kib": self.file_kib,
            "threads": self.threads,
        })
    }
}

/// Reads `/proc/self/status`.
pub fn proc_status() -> ProcStatus {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    ProcStatus {
        rss_kib: field("VmRSS"),
        hwm_kib: field("VmHWM"),
        anon_kib: field("RssAnon"),
        file_kib: field("RssFile"),
        threads: field("Threads"),
    }
}

/// Resets `VmHWM` to the current RSS (Linux: `5` into `/proc/self/clear_refs`); `false` where
/// that is not possible.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The 1-, 5- and 15-minute load averages, from `/proc/loadavg`.
pub fn load_average() -> Value {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let numbers: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|n| n.parse().ok())
        .collect();
    json!(numbers)
}

/// Where criterion writes its results: `CRITERION_HOME`, else `criterion` in the cargo target
/// directory (`CARGO_TARGET_DIR`, else the workspace's `target`), as criterion decides.
pub fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("criterion")
}

/// The folder of this crate's own result files (the figures criterion does not keep).
pub fn results_dir() -> PathBuf {
    criterion_dir().join("runtime-benches")
}

/// Writes one result file, `<results_dir>/<name>.json`.
pub fn write_result(name: &str, value: &Value) {
    let dir = results_dir();
    std::fs::create_dir_all(&dir).expect("create results folder");
    let text = serde_json::to_string_pretty(value).expect("results serialise");
    std::fs::write(dir.join(format!("{name}.json")), text).expect("write results");
}

/// Records the machine's load while a benchmark binary runs: create it first, call
/// [`Conditions::finish`] last.
#[derive(Debug)]
pub struct Conditions {
    name: String,
    started: Value,
}

impl Conditions {
    /// Notes the load average at the start of benchmark binary `name`.
    pub fn start(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            started: load_average(),
        }
    }

    /// Writes `<name>.conditions.json` with the load averages at the start and now.
    pub fn finish(self) {
        write_result(
            &format!("{}.conditions", self.name),
            &json!({ "loadavg_start": self.started, "loadavg_end": load_average() }),
        );
    }
}

/// The minimum, median and maximum of some figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The smallest.
    pub min: f64,
    /// The median.
    pub median: f64,
    /// The largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; all zero when there are none.
    pub fn of(values: &[f64]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        if n == 0 {
            return Self {
                min: 0.0,
                median: 0.0,
                max: 0.0,
            };
        }
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Self {
            min: sorted[0],
            median,
            max: sorted[n - 1],
        }
    }

    /// As JSON.
    pub fn to_json(self) -> Value {
        json!({ "min": self.min, "median": self.median, "max": self.max })
    }
}

/// Nanoseconds as a float, for the result files.
pub fn nanos(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e9
}
