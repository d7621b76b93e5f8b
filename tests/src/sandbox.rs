//! The process level as a sandbox (issue 23).
//!
//! First, the checked file is the loaded file at the process level too: the worker inherits
//! the host's checked open descriptor, verifies it against what the host checked (identity,
//! pin) before the dynamic loader sees it, and reports what it loaded, which the host
//! compares. The fixture plugin's ELF constructor writes `<library>.loaded` when mapped: its
//! absence proves that no code of a refused file ran.

use std::path::{Path, PathBuf};
use std::time::Duration;

use runtime_api::{ErrorKind, TurnRequest};
use runtime_loader::{
    Isolation, LoaderOptions, ProcessOptions, RejectReason, ResolveError, Runtimes, SearchPath,
};
use serde_json::{Value, json};

use crate::support::{artifacts, install, install_patched, plugin_dir};

const SUFFIX: &str = std::env::consts::DLL_SUFFIX;

/// Process options for tests: the worker built from the workspace, a short grace.
fn process_options() -> ProcessOptions {
    ProcessOptions::DEFAULT
        .with_worker(&artifacts().worker)
        .with_grace(Duration::from_millis(300))
        .with_restart_backoff(Duration::from_millis(1))
        .with_crash_limit(1_000_000, Duration::from_secs(60))
}

fn process_registry(dir: &Path) -> Runtimes {
    let runtimes = Runtimes::with_options(
        LoaderOptions::STRICT
            .with_isolation(Isolation::Process)
            .with_process(process_options()),
    );
    runtimes.discover(&SearchPath::empty().with_dir(dir));
    runtimes
}

fn marker(library: &Path) -> PathBuf {
    PathBuf::from(format!("{}.loaded", library.display()))
}

/// The fixture library (whose constructor writes a marker) carrying echo's manifest.
fn impostor(staging: &Path, stem: &str) -> PathBuf {
    let echo: Value =
        serde_json::to_value(runtime_loader::inspect::read_manifest(&artifacts().echo).unwrap())
            .unwrap();
    install_patched(staging, &artifacts().fixture, stem, |m| {
        let root_symbol = m["root_symbol"].clone();
        *m = echo;
        m["root_symbol"] = root_symbol;
    })
}

fn rejected_reason(error: ResolveError) -> RejectReason {
    match error {
        ResolveError::Rejected { reason, .. } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// The checked file is the loaded file, at the process level.

#[test]
fn a_file_swapped_after_discovery_is_refused_at_the_process_level() {
    let dir = plugin_dir();
    let staging = plugin_dir();
    let lib = install(dir.path(), &artifacts().echo, "libecho");
    let runtimes = process_registry(dir.path());
    assert!(runtimes.is_registered("echo"));
    std::fs::rename(impostor(staging.path(), "libecho"), &lib).unwrap();
    let reason = rejected_reason(runtimes.resolve("echo").unwrap_err());
    let RejectReason::Changed { detail } = &reason else {
        panic!("expected `changed`, got {reason:?}");
    };
    assert!(detail.contains("replaced after discovery"), "{detail}");
    assert!(!marker(&lib).exists(), "the swapped-in file's code ran");
    // Configuration checks start a worker too: refused the same way.
    assert!(matches!(
        runtimes.validate_config("echo", &json!(null)),
        Err(ResolveError::Rejected {
            reason: RejectReason::Changed { .. },
            ..
        })
    ));
    assert!(!marker(&lib).exists());
}

#[test]
fn pins_hold_at_the_process_level() {
    let dir = plugin_dir();
    let lib = install(dir.path(), &artifacts().fixture, "libfixture");
    std::fs::write(
        dir.path().join("plugins.lock"),
        format!("{}  libfixture{SUFFIX}\n", "0".repeat(64)),
    )
    .unwrap();
    let runtimes = process_registry(dir.path());
    let reason = rejected_reason(runtimes.resolve("fixture").unwrap_err());
    assert!(
        matches!(reason, RejectReason::HashMismatch { .. }),
        "{reason:?}"
    );
    assert!(!marker(&lib).exists(), "a library failing its pin ran");

    // With the right pin the worker loads it, hashes it itself and says so.
    let hash = runtime_loader::security::sha256_file(&lib).unwrap();
    std::fs::write(
        dir.path().join("plugins.lock"),
        format!("{hash}  libfixture{SUFFIX}\n"),
    )
    .unwrap();
    let runtimes = process_registry(dir.path());
    let handle = runtimes.resolve("fixture").unwrap();
    let output = io().block_on(handle.run_turn(TurnRequest::new("pinned")));
    assert_eq!(output.unwrap().content, "fixture:pinned");
    // Loaded in the worker, whose sandbox kept the fixture's constructor from writing its
    // marker beside the library (no write grant there).
    assert!(!marker(&lib).exists());
}

#[test]
fn a_restarted_worker_refuses_a_file_modified_after_the_first_start() {
    use std::io::Write as _;
    let dir = plugin_dir();
    let lib = install(dir.path(), &artifacts().hostile, "libhostile");
    let runtimes = process_registry(dir.path());
    let handle = runtimes.resolve("hostile").unwrap();
    let rt = io();
    assert_eq!(
        rt.block_on(handle.run_turn(TurnRequest::new("hello")))
            .unwrap()
            .content,
        "ok:hello"
    );
    // Modified in place while the first worker runs; then the worker dies.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&lib)
        .unwrap()
        .write_all(b"appended")
        .unwrap();
    let crashed = rt
        .block_on(handle.run_turn(TurnRequest::new("abort")))
        .unwrap_err();
    assert_eq!(crashed.kind, ErrorKind::Crashed, "{crashed}");
    // The next worker inherits the same open file, sees it changed and refuses it.
    let refused = rt
        .block_on(handle.run_turn(TurnRequest::new("hello")))
        .unwrap_err();
    assert!(
        refused.message.contains("changed after it was checked")
            && refused.message.contains("modified"),
        "{refused}"
    );
}

fn io() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
