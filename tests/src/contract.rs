//! The plugin contract as a host relies on it: cancellation registered at start, the
//! execution id in the caller's hand, configuration checked before a runtime exists, hooks
//! balanced however a turn ends, and the *threads* level never waiting on a plugin poll.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use runtime_api::{ErrorKind, RuntimeError, StreamItem, ToolDefinition, TurnOutput, TurnRequest};
use runtime_loader::{Isolation, RuntimeHandle, Runtimes, TurnContext, TurnHook};
use serde_json::json;

use crate::support::{artifacts, install, plugin_dir, registry};

fn plugins() -> (tempfile::TempDir, Runtimes) {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().echo, "libecho");
    install(dir.path(), &artifacts().fixture, "libfixture");
    let runtimes = registry(&[dir.path()]);
    (dir, runtimes)
}

fn slow_echo(runtimes: &Runtimes) -> RuntimeHandle {
    runtimes
        .new_instance("echo", &json!({"delay_ms": 10_000}))
        .unwrap()
}

#[tokio::test]
async fn cancel_right_after_starting_always_ends_the_turn_at_every_level() {
    let (_dir, runtimes) = plugins();
    for level in [Isolation::Inline, Isolation::Threads] {
        let echo = slow_echo(&runtimes).with_isolation(level);
        for _ in 0..20 {
            let turn = echo.run_turn(TurnRequest::new("never"));
            assert!(turn.execution_id().starts_with("turn-"));
            assert!(echo.cancel(turn.execution_id()).unwrap(), "{level}");
            assert_eq!(
                turn.await.unwrap_err().kind,
                ErrorKind::Cancelled,
                "{level}"
            );

            let stream = echo.stream_turn(TurnRequest::new("never"));
            assert!(echo.cancel(stream.execution_id()).unwrap(), "{level}");
            let items: Vec<_> = stream.collect().await;
            assert_eq!(items.len(), 1, "{level}: {items:?}");
            assert_eq!(
                items[0].as_ref().unwrap_err().kind,
                ErrorKind::Cancelled,
                "{level}"
            );
        }
    }
}

#[tokio::test]
async fn a_configuration_is_checked_before_a_runtime_exists() {
    let (_dir, runtimes) = plugins();
    assert_eq!(
        runtimes
            .validate_config("parrot", &json!({"delay_ms": 3}))
            .unwrap(),
        Vec::<String>::new()
    );
    let problems = runtimes
        .validate_config("echo", &json!({"delay_ms": "soon"}))
        .unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    // Building with a refused configuration lists the problems in the error.
    let Err(runtime_loader::ResolveError::Factory { error, .. }) =
        runtimes.new_instance("echo", &json!({"delay_ms": "soon"}))
    else {
        panic!("refused")
    };
    assert_eq!(error.kind, ErrorKind::InvalidConfig);
    assert_eq!(error.metadata["problems"].as_array().unwrap().len(), 1);
    // The declared schema is in the manifest: readable without loading anything.
    let entry = runtimes.get_entry("echo").unwrap();
    assert_eq!(
        entry.config_schema().unwrap()["properties"]["delay_ms"]["type"],
        "integer"
    );
}

/// Counts, per execution id, how each turn began and ended.
#[derive(Default)]
struct Ledger(Mutex<HashMap<String, Vec<String>>>);

impl Ledger {
    fn note(&self, turn: &TurnContext, what: String) {
        self.0
            .lock()
            .unwrap()
            .entry(turn.execution_id.clone())
            .or_default()
            .push(what);
    }

    fn of(&self, id: &str) -> Vec<String> {
        self.0.lock().unwrap().get(id).cloned().unwrap_or_default()
    }
}

impl TurnHook for Ledger {
    fn before_turn(&self, turn: &TurnContext, _request: &TurnRequest) {
        self.note(turn, "before".into());
    }
    fn after_turn(&self, turn: &TurnContext, _output: &TurnOutput) {
        self.note(turn, "after".into());
    }
    fn on_error(&self, turn: &TurnContext, error: &RuntimeError) {
        self.note(turn, format!("error:{}", error.kind));
    }
}

#[tokio::test]
async fn every_started_turn_ends_in_exactly_one_hook_call() {
    let (_dir, runtimes) = plugins();
    let ledger = Arc::new(Ledger::default());
    runtimes.add_hook(ledger.clone());
    let echo = runtimes.resolve("echo").unwrap();
    let slow = slow_echo(&runtimes);
    let failing = runtimes
        .new_instance("fixture-faults", &json!({"fail_with": "unavailable"}))
        .unwrap();
    let fixture = runtimes.resolve("fixture").unwrap();
    let tools = TurnRequest::new("x").with_tools(vec![ToolDefinition::new("t", "", json!({}))]);

    let mut expected: Vec<(String, &str)> = Vec::new();
    let request = |id: &str| TurnRequest::new("a b").with_execution_id(id);

    echo.run_turn(request("ok")).await.unwrap();
    expected.push(("ok".into(), "after"));
    failing.run_turn(request("failed")).await.unwrap_err();
    expected.push(("failed".into(), "error:unavailable"));
    fixture
        .run_turn(tools.clone().with_execution_id("refused"))
        .await
        .unwrap_err();
    expected.push(("refused".into(), "error:unsupported"));
    slow.with_timeout(Duration::from_millis(50))
        .run_turn(request("timed-out"))
        .await
        .unwrap_err();
    expected.push(("timed-out".into(), "error:timeout"));
    let turn = slow.run_turn(request("cancelled"));
    slow.cancel("cancelled").unwrap();
    turn.await.unwrap_err();
    expected.push(("cancelled".into(), "error:cancelled"));
    drop(slow.run_turn(request("dropped-unpolled")));
    expected.push(("dropped-unpolled".into(), "error:cancelled"));

    let _: Vec<_> = echo.stream_turn(request("stream-ok")).collect().await;
    expected.push(("stream-ok".into(), "after"));
    let _: Vec<_> = failing
        .stream_turn(request("stream-failed"))
        .collect()
        .await;
    expected.push(("stream-failed".into(), "error:unavailable"));
    let _: Vec<_> = fixture
        .stream_turn(request("stream-refused"))
        .collect()
        .await;
    expected.push(("stream-refused".into(), "error:unsupported"));
    let _: Vec<_> = slow
        .with_timeout(Duration::from_millis(50))
        .stream_turn(request("stream-timed-out"))
        .collect()
        .await;
    expected.push(("stream-timed-out".into(), "error:timeout"));
    let mut stream = slow.stream_turn(request("stream-dropped"));
    let first = tokio::time::timeout(Duration::from_millis(20), stream.next()).await;
    assert!(first.is_err(), "the slow stream yields nothing yet");
    drop(stream);
    expected.push(("stream-dropped".into(), "error:cancelled"));

    for (id, end) in expected {
        assert_eq!(
            ledger.of(&id),
            vec!["before".to_owned(), end.to_owned()],
            "{id}"
        );
    }
}

/// A file the blocking fixture waits for; created to release its thread.
struct Release(tempfile::TempDir);

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
async fn at_the_threads_level_a_blocked_plugin_never_holds_timeouts_or_cancel() {
    let (_dir, runtimes) = plugins();
    let blocker = runtimes.resolve("fixture-blocker").unwrap();
    assert_eq!(blocker.isolation(), Isolation::Threads);

    // A timeout fires while the plugin's thread is still blocked.
    let release = Release::new();
    let timed = blocker
        .with_timeout(Duration::from_millis(100))
        .run_turn(TurnRequest::new(release.path()))
        .await;
    assert_eq!(timed.unwrap_err().kind, ErrorKind::Timeout);
    assert!(!std::path::Path::new(&release.path()).exists());
    release.now();

    // Cancel by id ends a blocked turn at once, and the same for a stream.
    let release = Release::new();
    let turn = blocker.run_turn(TurnRequest::new(release.path()));
    let id = turn.execution_id().to_owned();
    let waiting = tokio::spawn(turn);
    assert!(blocker.cancel(&id).unwrap());
    assert_eq!(
        waiting.await.unwrap().unwrap_err().kind,
        ErrorKind::Cancelled
    );
    let mut stream = blocker.stream_turn(TurnRequest::new(release.path()));
    assert!(blocker.cancel(stream.execution_id()).unwrap());
    let item = stream.next().await.unwrap();
    assert_eq!(item.unwrap_err().kind, ErrorKind::Cancelled);
    release.now();

    // Another runtime keeps serving while the blocker holds a thread.
    let release = Release::new();
    let held = tokio::spawn(blocker.run_turn(TurnRequest::new(release.path())));
    let echo = runtimes.resolve("echo").unwrap();
    for _ in 0..10 {
        assert_eq!(
            echo.run_turn(TurnRequest::new("free"))
                .await
                .unwrap()
                .content,
            "free"
        );
    }
    release.now();
    assert_eq!(held.await.unwrap().unwrap().content, "released");
    let streamed: Vec<_> = blocker
        .stream_turn(TurnRequest::new(release.path()))
        .collect()
        .await;
    assert!(matches!(streamed.last(), Some(Ok(StreamItem::Done(_)))));
}

/// Fails to build until told otherwise: a runtime whose backend is down at the first resolve.
struct Flaky;

static FLAKY_READY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl runtime_api::Runtime for Flaky {
    const ID: &'static str = "flaky";

    fn new(_config: serde_json::Value) -> Result<Self, RuntimeError> {
        if FLAKY_READY.load(std::sync::atomic::Ordering::SeqCst) {
            Ok(Flaky)
        } else {
            Err(RuntimeError::unavailable("the backend is not up yet"))
        }
    }

    async fn run_turn(&self, request: TurnRequest) -> Result<TurnOutput, RuntimeError> {
        Ok(TurnOutput::new(request.prompt))
    }
}

#[tokio::test]
async fn a_failed_creation_is_retried_by_the_next_resolve() {
    let runtimes = Runtimes::new();
    runtimes.register::<Flaky>().unwrap();
    let Err(runtime_loader::ResolveError::Factory { error, .. }) = runtimes.resolve("flaky") else {
        panic!("the first resolve fails")
    };
    assert_eq!(error.kind, ErrorKind::Unavailable);
    FLAKY_READY.store(true, std::sync::atomic::Ordering::SeqCst);
    let flaky = runtimes
        .resolve("flaky")
        .expect("retried, and now it builds");
    assert_eq!(
        flaky
            .run_turn(TurnRequest::new("up"))
            .await
            .unwrap()
            .content,
        "up"
    );
}

#[test]
fn discovering_the_same_folders_again_changes_nothing() {
    let (dir, runtimes) = plugins();
    let first = runtimes.report();
    let listed = runtimes.list_runtimes();
    assert!(first.shadowed.is_empty(), "{first}");
    let again = runtimes.discover(&runtime_loader::SearchPath::empty().with_dir(dir.path()));
    assert!(
        again.shadowed.is_empty(),
        "a runtime shadowed by its own file: {again}"
    );
    assert_eq!(runtimes.report(), first, "the kept report grew");
    assert_eq!(runtimes.list_runtimes(), listed);
}
