//! A resolved runtime as a `tower::Service` (runtime-loader feature `tower`): tower's layers
//! drive real plugin turns, retries follow the error's `retriable` flag, a concurrency limit
//! bounds the turns in the runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use runtime_api::{ErrorKind, RuntimeError, TurnOutput, TurnRequest};
use runtime_loader::service::RetryRetriable;
use runtime_loader::{Runtimes, TurnContext, TurnHook};
use serde_json::json;
use tempfile::TempDir;
use tower::{ServiceBuilder, ServiceExt};

use crate::support::{artifacts, install, plugin_dir, registry};

/// Counts turns started, and the most running at once.
#[derive(Debug, Default)]
struct Turns {
    started: AtomicUsize,
    running: AtomicUsize,
    most: AtomicUsize,
}

impl Turns {
    fn end(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl TurnHook for Turns {
    fn before_turn(&self, _turn: &TurnContext, _request: &TurnRequest) {
        self.started.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
    }
    fn after_turn(&self, _turn: &TurnContext, _output: &TurnOutput) {
        self.end();
    }
    fn on_error(&self, _turn: &TurnContext, _error: &RuntimeError) {
        self.end();
    }
}

/// Echo, and the fixture plugin's `fixture-faults` (which fails on demand).
fn echo_registry() -> (TempDir, Runtimes, Arc<Turns>) {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().echo, "libecho");
    install(dir.path(), &artifacts().fixture, "libfixture");
    let runtimes = registry(&[dir.path()]);
    let turns = Arc::new(Turns::default());
    runtimes.add_hook(turns.clone());
    (dir, runtimes, turns)
}

#[tokio::test]
async fn a_handle_is_a_service_of_turns() {
    let (_dir, runtimes, _turns) = echo_registry();
    let echo = runtimes.resolve("echo").unwrap();
    let output = echo
        .oneshot(TurnRequest::new("through tower"))
        .await
        .unwrap();
    assert_eq!(output.content, "through tower");
}

#[tokio::test]
async fn retries_follow_the_retriable_flag() {
    let (_dir, runtimes, turns) = echo_registry();
    let retrying = |config| {
        ServiceBuilder::new()
            .retry(RetryRetriable::new(2, Duration::from_millis(1)))
            .service(runtimes.new_instance("fixture-faults", &config).unwrap())
    };
    let error = retrying(json!({ "fail_with": "unavailable" }))
        .oneshot(TurnRequest::new("down"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unavailable);
    assert_eq!(
        turns.started.swap(0, Ordering::SeqCst),
        3,
        "1 attempt + 2 retries"
    );

    let error = retrying(json!({ "fail_with": "invalid_request" }))
        .oneshot(TurnRequest::new("refused"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert_eq!(turns.started.swap(0, Ordering::SeqCst), 1, "not retriable");

    let output = retrying(json!(null))
        .oneshot(TurnRequest::new("fine"))
        .await
        .unwrap();
    assert_eq!(output.content, "fine");
    assert_eq!(turns.started.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_concurrency_limit_bounds_the_turns_in_the_runtime() {
    let (_dir, runtimes, turns) = echo_registry();
    let slow = runtimes
        .new_instance("echo", &json!({ "delay_ms": 30 }))
        .unwrap();
    let service = ServiceBuilder::new().concurrency_limit(3).service(slow);
    let requests = futures::stream::iter((0..12).map(|i| TurnRequest::new(format!("turn {i}"))));
    let outputs: Vec<_> = tokio::time::timeout(
        Duration::from_secs(30),
        service.call_all(requests).collect::<Vec<_>>(),
    )
    .await
    .expect("12 turns within 30 s");
    assert_eq!(outputs.len(), 12);
    for (i, output) in outputs.into_iter().enumerate() {
        assert_eq!(output.unwrap().content, format!("turn {i}"));
    }
    assert_eq!(turns.most.load(Ordering::SeqCst), 3);
}
