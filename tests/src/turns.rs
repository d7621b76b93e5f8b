//! The host API (issue: loader): streams, cancellation by drop and by id, timeouts,
//! capability checks, hooks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use runtime_api::{ErrorKind, RuntimeError, StreamItem, ToolDefinition, TurnOutput, TurnRequest};
use runtime_loader::{RuntimeHandle, TurnContext, TurnHook};
use serde_json::json;

use crate::support::{artifacts, install, plugin_dir, registry};

fn slow_echo(delay_ms: u64) -> (tempfile::TempDir, runtime_loader::Runtimes, RuntimeHandle) {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().echo, "libecho");
    install(dir.path(), &artifacts().fixture, "libfixture");
    let runtimes = registry(&[dir.path()]);
    let handle = runtimes
        .new_instance("echo", &json!({ "delay_ms": delay_ms }))
        .unwrap();
    (dir, runtimes, handle)
}

#[tokio::test]
async fn cancel_by_id_ends_a_running_turn() {
    let (_dir, _runtimes, echo) = slow_echo(10_000);
    let started = Instant::now();
    let mut turn =
        std::pin::pin!(echo.run_turn(TurnRequest::new("slow").with_execution_id("turn-a")));
    // Polled once, the turn is running: in its 10 s delay, inside the plugin.
    assert!(futures::poll!(turn.as_mut()).is_pending());
    assert!(
        echo.cancel("turn-a").unwrap(),
        "the running turn is registered"
    );
    let error = turn.await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        !echo.cancel("turn-a").unwrap(),
        "the finished turn is no longer registered"
    );
    assert!(!echo.cancel("never-ran").unwrap());
}

#[tokio::test]
async fn dropping_a_turn_cancels_it_inside_the_plugin() {
    let (_dir, _runtimes, echo) = slow_echo(10_000);
    let mut dropped = Box::pin(echo.run_turn(TurnRequest::new("slow").with_execution_id("turn-b")));
    let mut kept = Box::pin(echo.run_turn(TurnRequest::new("slow").with_execution_id("turn-c")));
    // Poll both once so the plugin starts them, then drop one.
    assert!(futures::poll!(dropped.as_mut()).is_pending());
    assert!(futures::poll!(kept.as_mut()).is_pending());
    drop(dropped);
    assert!(
        !echo.cancel("turn-b").unwrap(),
        "the dropped turn was released in the plugin"
    );
    assert!(
        echo.cancel("turn-c").unwrap(),
        "the other turn is still running"
    );
    assert_eq!(kept.await.unwrap_err().kind, ErrorKind::Cancelled);
}

#[tokio::test]
async fn a_timeout_ends_the_turn_with_a_timeout_error_and_releases_it() {
    let (_dir, _runtimes, echo) = slow_echo(10_000);
    let started = Instant::now();
    let error = echo
        .with_timeout(Duration::from_millis(50))
        .run_turn(TurnRequest::new("slow").with_execution_id("turn-t"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert!(error.retriable);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!echo.cancel("turn-t").unwrap());
}

#[tokio::test]
async fn a_stream_timeout_ends_the_stream() {
    let (_dir, _runtimes, echo) = slow_echo(10_000);
    let items: Vec<_> = echo
        .with_timeout(Duration::from_millis(50))
        .stream_turn(TurnRequest::new("a b c"))
        .collect()
        .await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].as_ref().unwrap_err().kind, ErrorKind::Timeout);
}

#[tokio::test]
async fn cancel_by_id_ends_a_stream_between_deltas() {
    let (_dir, _runtimes, echo) = slow_echo(30);
    let mut stream = echo.stream_turn(TurnRequest::new("one two three four five six"));
    let execution_id = stream.execution_id().to_owned();
    let first = stream.next().await.unwrap().unwrap();
    assert!(matches!(first, StreamItem::Delta(_)));
    assert!(echo.cancel(&execution_id).unwrap());
    let rest: Vec<_> = stream.collect().await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0].as_ref().unwrap_err().kind, ErrorKind::Cancelled);
}

#[tokio::test]
async fn a_stream_abandoned_half_way_is_released() {
    let (_dir, _runtimes, echo) = slow_echo(5);
    let mut abandoned =
        echo.stream_turn(TurnRequest::new("a b c d").with_execution_id("abandoned"));
    let mut kept = echo.stream_turn(TurnRequest::new("a b c d").with_execution_id("kept"));
    abandoned.next().await.unwrap().unwrap();
    kept.next().await.unwrap().unwrap();
    drop(abandoned);
    assert!(
        !echo.cancel("abandoned").unwrap(),
        "the abandoned stream was released"
    );
    assert!(
        echo.cancel("kept").unwrap(),
        "the other stream is still running"
    );
    let output = echo.run_turn(TurnRequest::new("after")).await.unwrap();
    assert_eq!(output.content, "after");
}

#[tokio::test]
async fn streams_deliver_deltas_in_order_then_one_final_item() {
    let (_dir, _runtimes, echo) = slow_echo(0);
    let prompt: String = (0..200).map(|i| format!("w{i} ")).collect();
    let items: Vec<StreamItem> = echo
        .stream_turn(TurnRequest::new(prompt.clone()))
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(items.len(), 201);
    for (i, item) in items[..200].iter().enumerate() {
        let StreamItem::Delta(delta) = item else {
            panic!("delta {i}")
        };
        assert_eq!(delta.content, format!("w{i} "));
    }
    let StreamItem::Done(output) = &items[200] else {
        panic!("final")
    };
    assert_eq!(output.content, prompt);
    assert_eq!(output.usage.output_tokens, 200);
}

#[tokio::test]
async fn undeclared_capabilities_are_refused_not_faked() {
    let (_dir, runtimes, echo) = slow_echo(0);
    let tools = vec![ToolDefinition::new("lookup", "", json!({"type": "object"}))];
    let error = echo
        .run_turn(TurnRequest::new("x").with_tools(tools))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unsupported);
    assert!(error.message.contains("`tools`"), "{error}");
    let fixture = runtimes.resolve("fixture").unwrap();
    let items: Vec<_> = fixture.stream_turn(TurnRequest::new("x")).collect().await;
    assert_eq!(items.len(), 1);
    let error = items[0].as_ref().unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unsupported);
    assert!(error.message.contains("`streaming`"), "{error}");
}

#[derive(Default)]
struct Counting {
    before: AtomicUsize,
    after: AtomicUsize,
    errors: AtomicUsize,
}

impl TurnHook for Counting {
    fn before_turn(&self, turn: &TurnContext, request: &TurnRequest) {
        assert_eq!(turn.execution_id, request.execution_id);
        assert!(!turn.execution_id.is_empty());
        self.before.fetch_add(1, Ordering::SeqCst);
    }
    fn after_turn(&self, _turn: &TurnContext, _output: &TurnOutput) {
        self.after.fetch_add(1, Ordering::SeqCst);
    }
    fn on_error(&self, _turn: &TurnContext, _error: &RuntimeError) {
        self.errors.fetch_add(1, Ordering::SeqCst);
    }
}

struct Panicking;

impl TurnHook for Panicking {
    fn before_turn(&self, _turn: &TurnContext, _request: &TurnRequest) {
        panic!("a hook that panics");
    }
}

#[tokio::test]
async fn hooks_see_every_turn_and_a_panicking_hook_is_contained() {
    let (_dir, runtimes, echo) = slow_echo(0);
    let counting = Arc::new(Counting::default());
    runtimes.add_hook(counting.clone());
    runtimes.add_hook(Arc::new(Panicking));
    echo.run_turn(TurnRequest::new("a")).await.unwrap();
    let _: Vec<_> = echo.stream_turn(TurnRequest::new("b c")).collect().await;
    let tools = vec![ToolDefinition::new("t", "", json!({}))];
    let _ = echo.run_turn(TurnRequest::new("x").with_tools(tools)).await;
    assert_eq!(counting.before.load(Ordering::SeqCst), 3);
    assert_eq!(counting.after.load(Ordering::SeqCst), 2);
    assert_eq!(counting.errors.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_turns_with_real_sleeps_overlap() {
    let (_dir, _runtimes, echo) = slow_echo(100);
    let started = Instant::now();
    let turns: Vec<_> = (0..200)
        .map(|i| echo.run_turn(TurnRequest::new(format!("turn {i}"))))
        .collect();
    let outputs = futures::future::join_all(turns).await;
    for (i, output) in outputs.into_iter().enumerate() {
        assert_eq!(output.unwrap().content, format!("turn {i}"));
    }
    // 200 sequential turns would take 20 s; overlapping ones take about one delay.
    assert!(started.elapsed() < Duration::from_secs(10));
}
