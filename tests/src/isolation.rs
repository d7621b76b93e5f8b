//! Fault containment (issue 12): what each isolation level does with a hostile plugin.
//!
//! Longer than 700 lines on purpose: one test per failure class at each level, each a whole
//! scenario; the area reads as one table of faults.
//!
//! Crashes (null write, abort, exit, stack overflow, a panic while unwinding, an allocation
//! beyond the memory limit) are only tried at the *process* level: in-process they would end
//! this test binary, which is exactly what the level is for. Blocking, spinning and flooding
//! are tried at every level where the test binary survives them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use runtime_api::{ErrorKind, RuntimeError, StreamItem, TurnRequest};
use runtime_loader::{
    Isolation, LoaderOptions, ProcessOptions, ResolveError, RuntimeHandle, Runtimes, SearchPath,
};
use serde_json::json;
use tempfile::TempDir;

use crate::support::{artifacts, install, plugin_dir, replace_plugin};

/// Process options for tests: the worker built from the workspace, a short grace, and the
/// temporary folder (where the `sleep:` and `spin:` files are) granted to the sandbox.
fn process_options() -> ProcessOptions {
    ProcessOptions::DEFAULT
        .with_worker(&artifacts().worker)
        .with_grants(runtime_loader::sandbox::Policy::default().with_write(std::env::temp_dir()))
        .with_grace(Duration::from_millis(300))
        .with_restart_backoff(Duration::from_millis(1))
        .with_crash_limit(1_000_000, Duration::from_secs(60))
}

/// A plugin folder with the hostile, echo and fixture plugins.
fn folder() -> (TempDir, PathBuf) {
    let dir = plugin_dir();
    let hostile = install(dir.path(), &artifacts().hostile, "libhostile");
    install(dir.path(), &artifacts().echo, "libecho");
    install(dir.path(), &artifacts().fixture, "libfixture");
    (dir, hostile)
}

fn registry_at(dir: &Path, level: Isolation, process: ProcessOptions) -> Runtimes {
    let runtimes = Runtimes::with_options(
        LoaderOptions::STRICT
            .with_isolation(level)
            .with_process(process),
    );
    runtimes.discover(&SearchPath::empty().with_dir(dir));
    runtimes
}

async fn answer(handle: &RuntimeHandle, prompt: &str) -> Result<String, RuntimeError> {
    handle
        .run_turn(TurnRequest::new(prompt))
        .await
        .map(|o| o.content)
}

/// Waits, a bounded time, for a process to be gone (reaped, not a zombie).
fn wait_gone(pid: u32) {
    let started = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "process {pid} is still there: {:?}",
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The children of this process that are zombies, by name.
fn zombie_workers() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut zombies = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z")
            && fields.get(1) == Some(&me.as_str())
            && head.contains("runtimes-worke")
        {
            zombies.push(stat);
        }
    }
    zombies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_level_has_the_same_api() {
    let (dir, _) = folder();
    let runtimes = registry_at(dir.path(), Isolation::Process, process_options());
    let echo = runtimes.resolve("echo").unwrap();
    assert_eq!(echo.isolation(), Isolation::Process);
    assert_eq!(answer(&echo, "hello there").await.unwrap(), "hello there");
    let items: Vec<_> = echo
        .stream_turn(TurnRequest::new("word by word"))
        .collect()
        .await;
    let deltas: String = items
        .iter()
        .filter_map(|i| match i {
            Ok(StreamItem::Delta(d)) => Some(d.content.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(deltas, "word by word");
    assert!(matches!(items.last(), Some(Ok(StreamItem::Done(_)))));
    assert_eq!(echo.info().unwrap().id, "echo");
    assert!(echo.supports("anything").is_ok());
    assert!(echo.health().await.is_ok());
    // Configurations are checked in a worker too.
    assert_eq!(
        runtimes
            .validate_config("echo", &json!({"delay_ms": "soon"}))
            .unwrap()
            .len(),
        1
    );
    let Err(ResolveError::Factory { error, .. }) =
        runtimes.new_instance("echo", &json!({"delay_ms": "soon"}))
    else {
        panic!("refused")
    };
    assert_eq!(error.kind, ErrorKind::InvalidConfig);
    // Cancel right after starting, and timeouts, as at the other levels.
    let slow = runtimes
        .new_instance("echo", &json!({"delay_ms": 10_000}))
        .unwrap();
    for _ in 0..10 {
        let turn = slow.run_turn(TurnRequest::new("never"));
        assert!(slow.cancel(turn.execution_id()).unwrap());
        assert_eq!(turn.await.unwrap_err().kind, ErrorKind::Cancelled);
        let stream = slow.stream_turn(TurnRequest::new("never"));
        assert!(slow.cancel(stream.execution_id()).unwrap());
        let items: Vec<_> = stream.collect().await;
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].as_ref().unwrap_err().kind, ErrorKind::Cancelled);
    }
    let timed = slow
        .with_timeout(Duration::from_millis(50))
        .run_turn(TurnRequest::new("late"))
        .await;
    assert_eq!(timed.unwrap_err().kind, ErrorKind::Timeout);
    // A handle cannot carry its runtime object across the process boundary.
    assert_eq!(
        echo.with_isolation(Isolation::Inline).isolation(),
        Isolation::Process
    );
    // Built-in runtimes stay in the process.
    assert!(!artifacts().worker.as_os_str().is_empty());
}

/// What a crash fault must say about how the worker died.
fn expected_death(fault: &str) -> &'static [&'static str] {
    match fault {
        "null-write" => &["killed by SIGSEGV"],
        "abort" => &["killed by SIGABRT"],
        "exit" => &["exited with status 3"],
        // Rust's guard-page handler aborts with a message where it knows the thread;
        // otherwise the fault is a plain SIGSEGV.
        "stack-overflow" => &["killed by SIGSEGV", "killed by SIGABRT"],
        "panic-in-drop" => &["killed by SIGABRT"],
        "allocate" => &["killed by SIGABRT"],
        _ => &[],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_end_only_their_worker_and_are_named() {
    let (dir, hostile_file) = folder();
    let hostile_file = std::fs::canonicalize(hostile_file).unwrap();
    let runtimes = registry_at(
        dir.path(),
        Isolation::Process,
        // One worker: the turns below share it (a pool spreads them over several).
        process_options()
            .with_memory_limit(Some(1 << 30))
            .with_pool_size(1),
    );
    let hostile = runtimes.resolve("hostile").unwrap();
    let calm = runtimes.resolve("calm").unwrap();
    // In-process runtimes beside them keep serving too.
    runtimes.set_isolation("echo", Isolation::Threads).unwrap();
    let echo = runtimes.resolve("echo").unwrap();
    assert_eq!(echo.isolation(), Isolation::Threads);

    for fault in [
        "null-write",
        "abort",
        "exit",
        "stack-overflow",
        "panic-in-drop",
        "allocate:4294967296",
    ] {
        let name = fault.split(':').next().unwrap();
        let pid: u32 = answer(&hostile, "pid").await.unwrap().parse().unwrap();
        // Another turn in flight on the same worker ends with the same crash.
        let other = hostile.run_turn(TurnRequest::new("sleep"));
        let error = answer(&hostile, fault).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Crashed, "{fault}: {error}");
        assert!(
            expected_death(name)
                .iter()
                .any(|how| error.message.contains(how)),
            "{fault}: {error}"
        );
        assert!(
            error.message.contains(&hostile_file.display().to_string()),
            "{error}"
        );
        assert!(error.message.contains("`hostile`"), "{error}");
        assert_eq!(error.metadata["pid"], pid);
        if name == "allocate" {
            assert!(
                error.message.contains("memory allocation"),
                "the stderr tail names the failed allocation: {error}"
            );
        }
        if name == "panic-in-drop" {
            assert!(error.message.contains("panic"), "{error}");
        }
        let other = other.await.unwrap_err();
        assert_eq!(other.kind, ErrorKind::Crashed, "{other}");
        // The crashed worker is reaped, not left a zombie.
        wait_gone(pid);
        // The host is fine, and so are the others.
        assert_eq!(answer(&calm, "x").await.unwrap(), "calm:x");
        assert_eq!(answer(&echo, "still here").await.unwrap(), "still here");
        // The next turn restarts the worker.
        let again: u32 = answer(&hostile, "pid").await.unwrap().parse().unwrap();
        assert_ne!(again, pid);
    }
    assert!(zombie_workers().is_empty(), "{:?}", zombie_workers());
}

/// A file the hostile plugin's `sleep:` and `spin:` wait for.
struct Release(TempDir);

impl Release {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }
    fn path(&self) -> String {
        self.0.path().join("release").display().to_string()
    }
    fn now(&self) {
        std::fs::write(self.path(), b"go").unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_and_spinning_end_on_time_and_a_stuck_worker_is_killed() {
    let (dir, _) = folder();
    let threads = registry_at(dir.path(), Isolation::Threads, process_options());
    let process = registry_at(dir.path(), Isolation::Process, process_options());
    for fault in ["sleep", "spin"] {
        // Threads: the timeout comes on time; the plugin's thread stays busy until released.
        let release = Release::new();
        let hostile = threads.resolve("hostile").unwrap();
        let started = Instant::now();
        let error = hostile
            .with_timeout(Duration::from_millis(100))
            .run_turn(TurnRequest::new(format!("{fault}:{}", release.path())))
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Timeout, "{fault}");
        assert!(started.elapsed() < Duration::from_secs(5));
        release.now();

        // Process: the timeout comes on time, and the worker that does not let go of the
        // turn within the grace period is killed.
        let hostile = process.resolve("hostile").unwrap();
        let release = Release::new();
        let marker = PathBuf::from(format!("{}.started", release.path()));
        let started = Instant::now();
        let timed = tokio::spawn(
            hostile
                .with_timeout(Duration::from_millis(1_000))
                .run_turn(TurnRequest::new(format!("{fault}:{}", release.path()))),
        );
        let pid: u32 = wait_for_file(&marker).trim().parse().unwrap();
        let error = timed.await.unwrap().unwrap_err();
        assert_eq!(error.kind, ErrorKind::Timeout, "{fault}");
        assert!(started.elapsed() < Duration::from_secs(10));
        wait_gone(pid);

        // Cancel ends it at once, and the worker goes the same way.
        std::fs::remove_file(&marker).unwrap();
        let turn = hostile.run_turn(TurnRequest::new(format!("{fault}:{}", release.path())));
        let id = turn.execution_id().to_owned();
        let waiting = tokio::spawn(turn);
        let again: u32 = wait_for_file(&marker).trim().parse().unwrap();
        assert_ne!(again, pid, "a new worker took the turn");
        assert!(hostile.cancel(&id).unwrap());
        assert_eq!(
            waiting.await.unwrap().unwrap_err().kind,
            ErrorKind::Cancelled
        );
        wait_gone(again);
        assert!(answer(&hostile, "ok").await.is_ok());
        release.now();
    }
}

/// Flood items the plugin has produced so far (a static in whichever process it runs in).
async fn produced(hostile: &RuntimeHandle) -> u64 {
    hostile
        .extension("produced", &json!(null))
        .await
        .unwrap()
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_held_back_by_the_consumer_at_every_level() {
    let (dir, _) = folder();
    for level in Isolation::ALL {
        let runtimes = registry_at(dir.path(), level, process_options());
        let hostile = runtimes.resolve("hostile").unwrap();
        let before = produced(&hostile).await;
        let mut stream = hostile.stream_turn(TurnRequest::new("flood"));
        for _ in 0..10 {
            assert!(matches!(
                stream.next().await,
                Some(Ok(StreamItem::Delta(_)))
            ));
        }
        // However long the consumer dawdles, the plugin gets only so far ahead: ask it many
        // times (each call a round trip that lets it run) and the count stays put.
        let mut counts = Vec::new();
        for _ in 0..50 {
            counts.push(produced(&hostile).await - before);
            tokio::task::yield_now().await;
        }
        let most = *counts.iter().max().unwrap();
        assert!(most <= 1024, "{level}: the flood ran {most} items ahead");
        assert_eq!(
            counts[40..].iter().collect::<HashSet<_>>().len(),
            1,
            "{level}: {counts:?}"
        );
        // Consuming lets it go on.
        for _ in 0..5_000 {
            assert!(matches!(
                stream.next().await,
                Some(Ok(StreamItem::Delta(_)))
            ));
        }
        drop(stream);
    }
    // Across processes the credit weighs bytes too: deltas of 1 MiB get only a few ahead (the
    // window is 256 items or about 1 MiB), not 256 MiB.
    let runtimes = registry_at(dir.path(), Isolation::Process, process_options());
    let hostile = runtimes.resolve("hostile").unwrap();
    let before = produced(&hostile).await;
    let mut stream = hostile.stream_turn(TurnRequest::new("flood:1048576"));
    for _ in 0..3 {
        assert!(matches!(
            stream.next().await,
            Some(Ok(StreamItem::Delta(delta))) if delta.content.len() == 1 << 20
        ));
    }
    let mut counts = Vec::new();
    for _ in 0..50 {
        counts.push(produced(&hostile).await - before);
        tokio::task::yield_now().await;
    }
    let most = *counts.iter().max().unwrap();
    assert!(most <= 3 + 4, "1 MiB deltas ran {most} ahead: {counts:?}");
    for _ in 0..64 {
        assert!(matches!(
            stream.next().await,
            Some(Ok(StreamItem::Delta(_)))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_that_keeps_crashing_is_marked_failed() {
    let (dir, hostile_file) = folder();
    let runtimes = registry_at(
        dir.path(),
        Isolation::Process,
        process_options().with_crash_limit(3, Duration::from_secs(600)),
    );
    let hostile = runtimes.resolve("hostile").unwrap();
    for _ in 0..3 {
        let error = answer(&hostile, "abort").await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Crashed, "{error}");
    }
    let error = answer(&hostile, "ok").await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Crashed);
    assert!(error.message.contains("marked failed"), "{error}");
    assert!(!error.retriable);
    let Err(ResolveError::Failed { name, path, reason }) = runtimes.resolve("hostile") else {
        panic!("resolve refuses a failed runtime")
    };
    assert_eq!(name, "hostile");
    assert_eq!(path, std::fs::canonicalize(hostile_file).unwrap());
    assert!(reason.contains("3 times"), "{reason}");
    assert!(reason.contains("SIGABRT"), "{reason}");
    // The library's other runtime is another runtime.
    assert_eq!(
        answer(&runtimes.resolve("calm").unwrap(), "y")
            .await
            .unwrap(),
        "calm:y"
    );
    assert!(runtimes.clear_failed("hostile").unwrap());
    let hostile = runtimes.new_instance("hostile", &json!(null)).unwrap();
    assert_eq!(answer(&hostile, "ok").await.unwrap(), "ok:ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_start_clean() {
    let (dir, _) = folder();
    let runtimes = registry_at(dir.path(), Isolation::Process, process_options());
    // Only what is passed on purpose: nothing by default, the variables a configuration
    // names (`api_key_env`) when it does.
    let hostile = runtimes.resolve("hostile").unwrap();
    assert_eq!(answer(&hostile, "env").await.unwrap(), "");
    assert!(std::env::var_os("PATH").is_some());
    let keyed = runtimes
        .new_instance("hostile", &json!({"api_key_env": "PATH"}))
        .unwrap();
    assert_eq!(answer(&keyed, "env").await.unwrap(), "PATH");

    // No descriptor of the host's: a file it holds open is not in the worker.
    let held = tempfile::NamedTempFile::new().unwrap();
    let fresh = runtimes.new_instance("hostile", &json!(null)).unwrap();
    let fds = answer(&fresh, "fds").await.unwrap();
    let held = held.path().display().to_string();
    for line in fds.lines() {
        let (fd, target) = line.split_once('=').unwrap();
        assert!(!target.contains(&held), "{fds}");
        if fd.parse::<u32>().unwrap() > 2 {
            // The worker keeps the plugin file it checked open: that file is what it loads.
            let plugin_file = std::fs::canonicalize(dir.path())
                .is_ok_and(|folder| target.starts_with(&folder.display().to_string()));
            assert!(
                plugin_file
                    || target.starts_with("pipe:")
                    || target.starts_with("anon_inode:")
                    || target.starts_with("socket:")
                    || target.starts_with("/proc/")
                    || target.starts_with("/dev/null"),
                "an unexpected descriptor in the worker: {line}\n{fds}"
            );
        }
    }
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The thousand-turn run in a test process of its own, so that its descriptor count is not
/// disturbed by the tests running beside it.
#[test]
fn a_thousand_mixed_turns_with_crashes_leak_nothing() {
    // Built here first, so the child's own build finds everything fresh and relinks nothing
    // that the tests running beside it use.
    let _ = artifacts();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "isolation::mixed_turns_with_crashes",
            "--test-threads=1",
            "--nocapture",
        ])
        .env("ISOLATION_ALONE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn mixed_turns_with_crashes() {
    let alone = std::env::var_os("ISOLATION_ALONE").is_some();
    let (dir, _) = folder();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Warm up: the process level's own thread and runtime exist before counting.
    let warm = registry_at(dir.path(), Isolation::Process, process_options());
    tokio.block_on(async {
        answer(&warm.resolve("calm").unwrap(), "warm")
            .await
            .unwrap();
    });
    drop(warm);
    let baseline = open_descriptors();

    let runtimes = registry_at(dir.path(), Isolation::Process, process_options());
    let hostile = runtimes.resolve("hostile").unwrap();
    let calm = runtimes.resolve("calm").unwrap();
    let (ok, crashed, pids) = tokio.block_on(async {
        let results: Vec<(usize, Result<String, RuntimeError>)> =
            futures::stream::iter(0..1_000usize)
                .map(|i| {
                    let hostile = hostile.clone();
                    let calm = calm.clone();
                    async move {
                        let (prompt, fault) = match i % 100 {
                            17 => ("abort".to_owned(), true),
                            53 => ("exit".to_owned(), true),
                            71 => ("null-write".to_owned(), true),
                            n if n % 10 == 0 => ("pid".to_owned(), false),
                            _ => (format!("turn {i}"), false),
                        };
                        let handle = if !fault && i % 7 == 0 { calm } else { hostile };
                        let result = handle
                            .with_timeout(Duration::from_secs(30))
                            .run_turn(TurnRequest::new(prompt))
                            .await
                            .map(|o| o.content);
                        (i, result)
                    }
                })
                .buffer_unordered(16)
                .collect()
                .await;
        let mut ok = 0;
        let mut crashed = 0;
        let mut pids = HashSet::new();
        for (i, result) in results {
            match result {
                Ok(content) => {
                    ok += 1;
                    if let Ok(pid) = content.parse::<u32>() {
                        pids.insert(pid);
                    }
                }
                Err(error) => {
                    assert_eq!(error.kind, ErrorKind::Crashed, "turn {i}: {error}");
                    assert!(error.message.contains("`hostile`"), "turn {i}: {error}");
                    assert!(
                        error.message.contains("killed by SIG")
                            || error.message.contains("exited with status 3"),
                        "turn {i}: {error}"
                    );
                    crashed += 1;
                }
            }
        }
        (ok, crashed, pids)
    });
    assert_eq!(ok + crashed, 1_000);
    assert!(crashed >= 30, "every fault turn crashed: {crashed}");
    assert!(ok >= 500, "{ok}");
    assert!(pids.len() > 1, "the worker was restarted: {pids:?}");
    // Every crashed worker was reaped before its turns were told.
    assert!(zombie_workers().is_empty(), "{:?}", zombie_workers());
    drop((hostile, calm, runtimes));
    if alone {
        // Letting go of the runtimes ends their workers: they exit, their pipes close and
        // they are reaped.
        let started = Instant::now();
        while open_descriptors() > baseline || !zombie_workers().is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "descriptors leaked ({} open, {baseline} before) or zombies left: {:?}",
                open_descriptors(),
                zombie_workers()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Runs `runtimes` over a plugin folder.
fn runtimes_cli(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(&artifacts().runtimes);
    command
        .arg("--plugin-dir")
        .arg(dir)
        .args(args)
        .env_remove("AGENT_RUNTIMES_ISOLATION")
        .env_remove("AGENT_RUNTIMES_PATH")
        .env("AGENT_RUNTIMES_WORKER", &artifacts().worker)
        // The `sleep:` and `spin:` files are in the temporary folder.
        .env("AGENT_RUNTIMES_ALLOW_WRITE", std::env::temp_dir());
    command
}

#[test]
fn the_cli_names_a_crash_and_exits_4() {
    let (dir, hostile) = folder();
    let hostile = std::fs::canonicalize(hostile).unwrap();
    for (fault, how) in [
        ("abort", "killed by SIGABRT"),
        ("exit", "exited with status 3"),
        ("null-write", "killed by SIGSEGV"),
    ] {
        let output = runtimes_cli(dir.path(), &["run", "hostile", fault, "--isolate"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(4), "{fault}: {stderr}");
        assert!(stderr.contains(how), "{fault}: {stderr}");
        assert!(stderr.contains(&hostile.display().to_string()), "{stderr}");
    }
    // The same level by name and by environment variable.
    let output = runtimes_cli(
        dir.path(),
        &["run", "hostile", "fine", "--isolation", "process"],
    )
    .output()
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ok:fine");
    let output = runtimes_cli(dir.path(), &["run", "hostile", "pid"])
        .env("AGENT_RUNTIMES_ISOLATION", "process")
        .output()
        .unwrap();
    let worker: u32 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    assert_ne!(worker, 0);
}

#[test]
fn check_load_gives_a_crash_its_verdict_and_checks_the_other_files() {
    let (dir, hostile) = folder();
    let fixture = dir
        .path()
        .join(format!("libfixture{}", std::env::consts::DLL_SUFFIX));
    let output = runtimes_cli(
        dir.path(),
        &[
            "check",
            "--load",
            "--config",
            r#"{"fault": "null-write"}"#,
            hostile.to_str().unwrap(),
            fixture.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(4), "{stdout}");
    assert!(
        stdout.contains("smoke turn `hostile`") && stdout.contains("killed by SIGSEGV"),
        "{stdout}"
    );
    assert!(stdout.contains("smoke turn `calm`: ok"), "{stdout}");
    assert!(stdout.contains("smoke turn `fixture`: ok"), "{stdout}");
    // A file refused outright is still exit 3.
    let bogus = crate::support::write_candidate(dir.path(), "bogus", b"not a library");
    let output = runtimes_cli(dir.path(), &["check", "--load", bogus.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
}

/// Waits, a bounded time, for a file to exist; returns its text.
fn wait_for_file(path: &Path) -> String {
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.is_empty()
        {
            return text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits, a bounded time, for a child to exit.
fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("the command did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn ctrl_c_ends_run_and_stream_whatever_the_plugin_does() {
    let (dir, _) = folder();
    for (command, level, fault) in [
        ("run", "threads", "sleep"),
        ("run", "threads", "ignore-sigint"),
        ("stream", "inline", "ignore-sigint"),
        ("run", "inline", "spin"),
        ("stream", "threads", "spin"),
        ("run", "process", "sleep"),
        ("stream", "process", "spin"),
    ] {
        let release = Release::new();
        let prompt = format!("{fault}:{}", release.path());
        let mut child = runtimes_cli(
            dir.path(),
            &[command, "hostile", &prompt, "--isolation", level],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
        wait_for_file(Path::new(&format!("{}.started", release.path())));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        // "Within a second": 3 s leaves room for a loaded machine, and is far below the 30 s
        // a plugin holding the process would take.
        let status = wait_exit(&mut child, Duration::from_secs(3));
        assert!(!status.success(), "{command} {level} {fault}: {status}");
        release.now();
    }
}

#[test]
fn workers_die_with_their_host() {
    let (dir, _) = folder();
    let release = Release::new();
    let prompt = format!("sleep:{}", release.path());
    let mut host = runtimes_cli(dir.path(), &["run", "hostile", &prompt, "--isolate"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let worker: u32 = wait_for_file(Path::new(&format!("{}.started", release.path())))
        .trim()
        .parse()
        .unwrap();
    assert_ne!(worker, host.id());
    host.kill().unwrap();
    host.wait().unwrap();
    // The worker goes too (its parent-death signal), and is reaped by whoever inherits it.
    let started = Instant::now();
    loop {
        let state = std::fs::read_to_string(format!("/proc/{worker}/stat")).ok();
        let dead = state
            .as_deref()
            .and_then(|s| s.rsplit_once(')'))
            .is_none_or(|(_, rest)| rest.trim_start().starts_with('Z'));
        if dead {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the worker {worker} outlived its host"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    release.now();
}

#[test]
fn plugin_logs_cross_from_the_worker_into_the_host_subscriber() {
    let (dir, _) = folder();
    let output = runtimes_cli(dir.path(), &["run", "fixture", "hello", "--isolate", "-v"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "fixture:hello"
    );
    // The same event and fields as an in-process plugin's (see logs.rs), before the answer.
    let line = stderr
        .lines()
        .find(|l| l.contains("fixture-log"))
        .unwrap_or_else(|| panic!("no plugin event in:\n{stderr}"));
    for field in [
        "plugin=\"fixture-plugin\"",
        "runtime=\"fixture\"",
        "execution_id=\"turn-",
        "plugin_target=\"fixture_plugin\"",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    // At the default level (warn) the info event is not forwarded at all.
    let quiet = runtimes_cli(dir.path(), &["run", "fixture", "hello", "--isolate"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("fixture-log"));
}

/// Counts, per execution id, how each turn began and ended.
#[derive(Default)]
struct Ledger(std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>);

impl Ledger {
    fn note(&self, turn: &runtime_loader::TurnContext, what: String) {
        self.0
            .lock()
            .unwrap()
            .entry(turn.execution_id.clone())
            .or_default()
            .push(what);
    }
}

impl runtime_loader::TurnHook for Ledger {
    fn before_turn(&self, turn: &runtime_loader::TurnContext, _request: &TurnRequest) {
        self.note(turn, "before".into());
    }
    fn after_turn(&self, turn: &runtime_loader::TurnContext, _output: &runtime_api::TurnOutput) {
        self.note(turn, "after".into());
    }
    fn on_error(&self, turn: &runtime_loader::TurnContext, error: &RuntimeError) {
        self.note(turn, format!("error:{}", error.kind));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_are_called_once_per_turn_at_the_process_level() {
    let (dir, _) = folder();
    let runtimes = registry_at(dir.path(), Isolation::Process, process_options());
    let ledger = std::sync::Arc::new(Ledger::default());
    runtimes.add_hook(ledger.clone());
    let hostile = runtimes.resolve("hostile").unwrap();
    let calm = runtimes.resolve("calm").unwrap();
    let request = |prompt: &str, id: &str| TurnRequest::new(prompt).with_execution_id(id);
    let mut expected: Vec<(&str, &str)> = Vec::new();

    hostile.run_turn(request("ok", "ok")).await.unwrap();
    expected.push(("ok", "after"));
    calm.stream_turn(request("x", "refused"))
        .collect::<Vec<_>>()
        .await;
    expected.push(("refused", "error:unsupported"));
    hostile
        .run_turn(request("abort", "crashed"))
        .await
        .unwrap_err();
    expected.push(("crashed", "error:crashed"));
    let release = Release::new();
    let blocked = format!("sleep:{}", release.path());
    hostile
        .with_timeout(Duration::from_millis(50))
        .run_turn(request(&blocked, "timed-out"))
        .await
        .unwrap_err();
    expected.push(("timed-out", "error:timeout"));
    let turn = hostile.run_turn(request(&blocked, "cancelled"));
    assert!(hostile.cancel("cancelled").unwrap());
    turn.await.unwrap_err();
    expected.push(("cancelled", "error:cancelled"));
    drop(hostile.run_turn(request(&blocked, "dropped")));
    expected.push(("dropped", "error:cancelled"));
    let items: Vec<_> = hostile
        .stream_turn(request("ok", "streamed"))
        .collect()
        .await;
    assert!(matches!(items.last(), Some(Ok(StreamItem::Done(_)))));
    expected.push(("streamed", "after"));
    let mut flood = hostile.stream_turn(request("flood", "stream-dropped"));
    assert!(flood.next().await.unwrap().is_ok());
    drop(flood);
    expected.push(("stream-dropped", "error:cancelled"));
    release.now();

    let seen = ledger.0.lock().unwrap().clone();
    for (id, end) in expected {
        assert_eq!(
            seen.get(id).cloned().unwrap_or_default(),
            vec!["before".to_owned(), end.to_owned()],
            "{id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_panic_message_reaches_the_hosts_tracing_at_every_level() {
    // Installed before any worker starts: a worker forwards events at the host's level then.
    let captured = crate::logs::Captured::global();
    let (dir, _) = folder();
    for level in [Isolation::Inline, Isolation::Threads, Isolation::Process] {
        let runtimes = registry_at(dir.path(), level, process_options());
        let faults = runtimes
            .new_instance("fixture-faults", &json!({"panic_in": "run_turn"}))
            .unwrap();
        assert_eq!(faults.isolation(), level);
        let id = format!("panic-message-{level}");
        let error = faults
            .run_turn(TurnRequest::new("x").with_execution_id(id.clone()))
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Panicked, "{level}: {error}");
        // The message is emitted before the turn's error is returned (from a worker, in order
        // with the turn's other messages): it is there now, once, naming plugin and runtime.
        let events = captured.messages_containing("fixture-faults was told to panic in run_turn");
        let ours: Vec<_> = events
            .iter()
            .filter(|e| e.get("execution_id") == Some(id.as_str()))
            .collect();
        let [event] = ours.as_slice() else {
            panic!("{level}: one panic message for the turn: {events:?}");
        };
        assert_eq!(event.get("level"), Some("WARN"), "{level}");
        assert_eq!(event.get("plugin"), Some("fixture-plugin"), "{level}");
        assert_eq!(event.get("runtime"), Some("fixture-faults"), "{level}");
    }
}

/// A worker that floods its stderr without a newline costs the host a bounded buffer (the
/// host's RSS is sampled while 256 MiB go through), and the turn still answers.
#[test]
fn a_stderr_flood_without_newlines_leaves_the_host_bounded() {
    let (dir, _) = folder();
    let mut host = runtimes_cli(
        dir.path(),
        &["run", "hostile", "stderr-flood:256", "--isolate"],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let status = format!("/proc/{}/status", host.id());
    let rss_kib = |text: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let mut peak = 0;
    // Sampled until the host exits (a measurement, not a wait: the exit is what ends it).
    while host.try_wait().unwrap().is_none() {
        if let Ok(text) = std::fs::read_to_string(&status) {
            peak = peak.max(rss_kib(&text));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let output = host.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "flooded 256 MiB"
    );
    assert!(peak > 0, "the host's RSS was never read");
    assert!(
        peak < 64 * 1024,
        "the host grew to {peak} KiB while 256 MiB of stderr went through"
    );
}

/// A line that is not UTF-8 does not stop the capture of a worker's stderr: the crash report
/// that follows still quotes the lines after it.
#[test]
fn stderr_that_is_not_utf8_is_captured_up_to_the_crash() {
    let (dir, _) = folder();
    let output = runtimes_cli(
        dir.path(),
        &["run", "hostile", "bad-utf8-then-abort", "--isolate"],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("killed by SIGABRT"), "{stderr}");
    assert!(
        stderr.contains("not \u{fffd}\u{fffd} UTF-8") || stderr.contains("not �� UTF-8"),
        "{stderr}"
    );
    assert!(stderr.contains("the last words"), "{stderr}");
}

/// `AGENT_RUNTIMES_WORKER_MEMORY` limits the workers every command starts: here `run`'s.
#[test]
fn the_worker_memory_variable_limits_the_workers_of_the_cli() {
    let (dir, _) = folder();
    let output = runtimes_cli(
        dir.path(),
        &["run", "hostile", "allocate:1073741824", "--isolate"],
    )
    .env("AGENT_RUNTIMES_WORKER_MEMORY", "256M")
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("crashed") || stderr.contains("killed") || stderr.contains("memory"),
        "{stderr}"
    );
}

/// Workers the host stops for its own reasons (a turn that does not let go of a cancel within
/// the grace period) are not crashes: with a crash limit of 1, a spinning turn cancelled twice
/// leaves the runtime serving, never marked failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_ordered_kills_do_not_mark_a_runtime_failed() {
    let (dir, _) = folder();
    let runtimes = registry_at(
        dir.path(),
        Isolation::Process,
        process_options().with_crash_limit(1, Duration::from_secs(600)),
    );
    let hostile = runtimes.resolve("hostile").unwrap();
    for _ in 0..2 {
        let release = Release::new();
        let marker = PathBuf::from(format!("{}.started", release.path()));
        let turn = hostile.run_turn(TurnRequest::new(format!("spin:{}", release.path())));
        let id = turn.execution_id().to_owned();
        let turn = tokio::spawn(turn);
        // Cancel once the plugin spins (it says so in `<arg>.started`), then wait for the
        // worker the host stops after the grace period to be gone.
        let pid: u32 = wait_for_file(&marker).trim().parse().unwrap();
        assert!(hostile.cancel(&id).unwrap());
        let error = turn.await.unwrap().unwrap_err();
        assert_eq!(error.kind, ErrorKind::Cancelled, "{error}");
        wait_gone(pid);
        release.now();
    }
    assert!(
        runtimes.resolve("hostile").is_ok(),
        "a runtime whose workers the host stopped is not marked failed"
    );
    assert_eq!(answer(&hostile, "fine").await.unwrap(), "ok:fine");
}

/// A request or an answer too large for one frame (16 MiB) is a named error for its turn,
/// before it is sent; never a crash, and the runtime goes on serving (also after several, with
/// a crash limit of 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_too_large_to_cross_are_a_named_error_and_the_runtime_stays_healthy() {
    let (dir, _) = folder();
    let runtimes = registry_at(
        dir.path(),
        Isolation::Process,
        process_options().with_crash_limit(2, Duration::from_secs(600)),
    );
    let echo = runtimes.resolve("echo").unwrap();
    let huge = "y".repeat(17 << 20);
    for _ in 0..3 {
        let error = answer(&echo, &huge).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidRequest, "{error}");
        assert_eq!(error.metadata["error"], "message_too_large", "{error}");
        assert!(!error.retriable);
    }
    assert_eq!(answer(&echo, "small").await.unwrap(), "small");
    let hostile = runtimes.resolve("hostile").unwrap();
    for _ in 0..2 {
        let error = answer(&hostile, "big-answer:17").await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidRequest, "{error}");
        assert!(error.message.contains("the turn's answer"), "{error}");
    }
    assert_eq!(answer(&hostile, "fine").await.unwrap(), "ok:fine");
    assert!(runtimes.resolve("hostile").is_ok(), "not marked failed");
}

/// Every call to a worker has a deadline: a call the plugin never answers is a `timeout`
/// after `call_timeout`, its worker is stopped, and the runtime serves the next turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_a_worker_never_answers_times_out() {
    let (dir, _) = folder();
    let runtimes = registry_at(
        dir.path(),
        Isolation::Process,
        process_options()
            .with_call_timeout(Duration::from_millis(500))
            .with_crash_limit(1, Duration::from_secs(600)),
    );
    let hostile = runtimes.resolve("hostile").unwrap();
    let started = Instant::now();
    let error = hostile.extension("hang", &json!(null)).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(answer(&hostile, "fine").await.unwrap(), "ok:fine");
}

/// A pool of workers per runtime: a stuck turn beside 20 concurrent turns on the same runtime.
/// The stuck one times out and its worker is stopped; the others all answer, and the runtime is
/// not marked failed (crash limit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_turn_holds_only_its_own_worker_in_a_pool() {
    let (dir, _) = folder();
    let runtimes = registry_at(
        dir.path(),
        Isolation::Process,
        process_options()
            .with_pool_size(2)
            .with_crash_limit(1, Duration::from_secs(600)),
    );
    let hostile = runtimes.resolve("hostile").unwrap();
    let release = Release::new();
    let marker = PathBuf::from(format!("{}.started", release.path()));
    let stuck = tokio::spawn(
        hostile
            .with_timeout(Duration::from_millis(500))
            .run_turn(TurnRequest::new(format!("spin:{}", release.path()))),
    );
    let stuck_pid: u32 = wait_for_file(&marker).trim().parse().unwrap();
    let others: Vec<_> = (0..20)
        .map(|i| tokio::spawn(answer_owned(hostile.clone(), format!("turn-{i}"))))
        .collect();
    for (i, other) in others.into_iter().enumerate() {
        assert_eq!(other.await.unwrap().unwrap(), format!("ok:turn-{i}"));
    }
    let error = stuck.await.unwrap().unwrap_err();
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    wait_gone(stuck_pid);
    release.now();
    assert!(runtimes.resolve("hostile").is_ok(), "not marked failed");
    assert_eq!(answer(&hostile, "after").await.unwrap(), "ok:after");
}

/// Cancel without collateral: a turn whose plugin spins past its timeout retires its worker
/// (which still answers pings) instead of taking the other turns on it down: they finish,
/// new turns go to a new worker, and the old one is stopped after its last turn. Only a
/// worker that stops answering altogether is killed, and then a turn that shared it ends
/// with an error that says so (`unavailable`, retriable), not `crashed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_turn_takes_no_other_turn_down() {
    let (dir, _) = folder();
    let runtimes = registry_at(
        dir.path(),
        Isolation::Process,
        process_options().with_pool_size(1),
    );
    let hostile = runtimes.resolve("hostile").unwrap();
    let waiting = Release::new();
    let waiting_turn = tokio::spawn(answer_owned(
        hostile.clone(),
        format!("sleep:{}", waiting.path()),
    ));
    let old: u32 = wait_for_file(Path::new(&format!("{}.started", waiting.path())))
        .trim()
        .parse()
        .unwrap();
    let stuck = Release::new();
    let error = hostile
        .with_timeout(Duration::from_millis(300))
        .run_turn(TurnRequest::new(format!("spin:{}", stuck.path())))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    // Past the grace period and a ping: the worker is retired, not killed.
    let fresh: u32 = loop {
        let pid: u32 = answer(&hostile, "pid").await.unwrap().parse().unwrap();
        if pid != old {
            break pid;
        }
    };
    assert!(
        std::fs::metadata(format!("/proc/{old}")).is_ok(),
        "the retired worker still serves its turn"
    );
    waiting.now();
    assert_eq!(waiting_turn.await.unwrap().unwrap(), "slept");
    wait_gone(old);
    stuck.now();
    assert_eq!(answer(&hostile, "pid").await.unwrap(), fresh.to_string());

    // A worker that answers nothing (every thread stopped, here by the test) is killed after
    // the grace and a ping; the turn that shared it says why.
    let waiting = Release::new();
    let waiting_turn = tokio::spawn(answer_owned(
        hostile.clone(),
        format!("sleep:{}", waiting.path()),
    ));
    let frozen: u32 = wait_for_file(Path::new(&format!("{}.started", waiting.path())))
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(frozen).unwrap()),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let error = hostile
        .with_timeout(Duration::from_millis(300))
        .run_turn(TurnRequest::new("ok"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    let error = waiting_turn.await.unwrap().unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unavailable, "{error}");
    assert!(error.retriable, "{error}");
    assert!(error.message.contains("stopped by the host"), "{error}");
    wait_gone(frozen);
    waiting.now();
    assert!(runtimes.resolve("hostile").is_ok(), "not marked failed");
}

async fn answer_owned(handle: RuntimeHandle, prompt: String) -> Result<String, RuntimeError> {
    answer(&handle, &prompt).await
}

/// `resolve_async` keeps the caller's executor free while a worker starts: on a
/// single-threaded runtime, another task runs during the first resolve (the blocking `resolve`
/// would hold the only thread for the whole start).
#[tokio::test(flavor = "current_thread")]
async fn resolve_async_starts_a_worker_without_holding_the_executor() {
    let (dir, _) = folder();
    let runtimes = std::sync::Arc::new(registry_at(
        dir.path(),
        Isolation::Process,
        process_options(),
    ));
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = {
        let ticks = std::sync::Arc::clone(&ticks);
        tokio::spawn(async move {
            loop {
                ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };
    let echo = runtimes.resolve_async("echo").await.unwrap();
    let during = ticks.load(std::sync::atomic::Ordering::Relaxed);
    ticker.abort();
    assert!(during > 0, "no other task ran while the worker started");
    assert_eq!(answer(&echo, "async").await.unwrap(), "async");
    // Created already: at once, and an unknown name fails closed as `resolve` does.
    assert!(runtimes.resolve_async("echo").await.is_ok());
    assert!(matches!(
        runtimes.resolve_async("ecko").await,
        Err(ResolveError::NotFound { .. })
    ));
}

/// `Runtimes::rediscover`: a replaced file is an upgrade for new resolves (the handle resolved
/// before keeps its worker and answers), a new file is added (at the level a host asked for
/// with `rediscover_at`, never the registry's default), a removed file's runtime goes, and a
/// library loaded in this process is kept and reported as needing a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediscover_upgrades_adds_and_removes_and_keeps_what_is_loaded() {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().echo, "libecho");
    install(dir.path(), &artifacts().fixture, "libfixture");
    // Threads by default; every runtime set to the process level, as `serve --isolate` does.
    // One worker per instance: a handle resolved before the upgrade keeps the workers it has,
    // and cannot start one of the replaced file (refused as changed, as any swapped file).
    let runtimes = registry_at(
        dir.path(),
        Isolation::Threads,
        process_options().with_pool_size(1),
    );
    runtimes.set_isolation("echo", Isolation::Process).unwrap();
    let before = runtimes.resolve("echo").unwrap();
    let old_pid = answer(&before, "x").await.unwrap();
    assert_eq!(old_pid, "x");
    // The fixture loaded in this process (threads level).
    assert!(
        answer(&runtimes.resolve("fixture").unwrap(), "y")
            .await
            .is_ok()
    );

    replace_plugin(dir.path(), &artifacts().echo, "libecho");
    replace_plugin(dir.path(), &artifacts().fixture, "libfixture");
    install(dir.path(), &artifacts().hostile, "libhostile");

    let outcome = runtimes.rediscover_at(Isolation::Process);
    assert_eq!(outcome.upgraded, ["echo"], "{outcome:?}");
    assert_eq!(outcome.added, ["calm", "hostile"], "{outcome:?}");
    assert!(outcome.removed.is_empty(), "{outcome:?}");
    let restart: Vec<&str> = outcome
        .restart_needed
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    assert!(restart.contains(&"fixture"), "{outcome:?}");
    // Upgraded: the level kept; a new resolve is another instance; the old handle answers.
    let after = runtimes.resolve("echo").unwrap();
    assert_eq!(after.isolation(), Isolation::Process);
    assert_eq!(answer(&after, "new").await.unwrap(), "new");
    assert_eq!(answer(&before, "old").await.unwrap(), "old");
    // Added at the level asked for, not the registry's threads.
    assert_eq!(
        runtimes.resolve("hostile").unwrap().isolation(),
        Isolation::Process
    );

    std::fs::remove_file(
        dir.path()
            .join(format!("libhostile{}", std::env::consts::DLL_SUFFIX)),
    )
    .unwrap();
    let outcome = runtimes.rediscover();
    assert_eq!(outcome.removed, ["calm", "hostile"], "{outcome:?}");
    assert!(runtimes.resolve("hostile").is_err());
}
