//! A runtime behind a tower stack: an overall deadline, retries driven by the error's
//! `retriable` flag, a concurrency limit and a rate limit, shared by many tasks.
//!
//! `cargo run -p host-examples --example tower_stack -- target/demo-plugins` (after `cargo demo`).
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use runtime_api::{ErrorKind, Runtime, RuntimeError, TurnOutput, TurnRequest, Value, json};
use runtime_loader::service::RetryRetriable;
use runtime_loader::{RuntimeHandle, Runtimes, SearchPath, TurnContext, TurnHook};
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

/// A backend in trouble, compiled into this host: every turn fails with the error kind its
/// configuration names (`{"fails_with": "unavailable"}`).
struct Failing(ErrorKind);

impl Runtime for Failing {
    const ID: &'static str = "failing";

    fn new(config: Value) -> Result<Self, RuntimeError> {
        match config["fails_with"].as_str() {
            Some(kind) => Ok(Failing(ErrorKind::from(kind.to_owned()))),
            None => Err(RuntimeError::invalid_config(
                "`fails_with` names an error kind",
            )),
        }
    }

    async fn run_turn(&self, _request: TurnRequest) -> Result<TurnOutput, RuntimeError> {
        Err(RuntimeError::new(
            self.0.clone(),
            "the backend is in trouble",
        ))
    }
}

/// Counts the attempts tower makes (every attempt is a turn, so hooks see each one).
#[derive(Debug, Default)]
struct Attempts(AtomicUsize);

impl TurnHook for Attempts {
    fn before_turn(&self, _turn: &TurnContext, _request: &TurnRequest) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The stack, outermost first. Buffer makes it cloneable (one queue, shared by every task).
fn stack(
    runtime: RuntimeHandle,
) -> impl Service<TurnRequest, Response = TurnOutput, Error = BoxError, Future: Send> + Clone {
    ServiceBuilder::new()
        .buffer(64) // a cloneable front, shared by every task
        .timeout(Duration::from_secs(10)) // the whole turn, retries included
        .concurrency_limit(4) // at most 4 turns in the runtime at once
        .rate_limit(20, Duration::from_secs(1)) // at most 20 turns started per second
        .retry(RetryRetriable::new(2, Duration::from_millis(50))) // retriable errors only
        .service(runtime.with_timeout(Duration::from_secs(2))) // each attempt
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runtimes = Runtimes::new();
    runtimes.discover(&SearchPath::standard(std::env::args().skip(1)));
    runtimes.register::<Failing>()?;
    let attempts = Arc::new(Attempts::default());
    runtimes.add_hook(attempts.clone());

    // 30 turns from 30 tasks: the rate limit spaces them (20 a second), 4 run at a time.
    let service = stack(runtimes.resolve("echo")?);
    let started = Instant::now();
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let service = service.clone();
            tokio::spawn(
                async move { service.oneshot(TurnRequest::new(format!("turn {i}"))).await },
            )
        })
        .collect();
    let mut answered = 0;
    for task in tasks {
        task.await?.map_err(|e| anyhow::anyhow!(e))?;
        answered += 1;
    }
    println!(
        "{answered} turns answered in {:.1} s through the stack ({} attempts)",
        started.elapsed().as_secs_f64(),
        attempts.0.swap(0, Ordering::Relaxed)
    );

    // A backend that is down: `unavailable` is retriable, so tower tries 1 + 2 times.
    let down = runtimes.new_instance("failing", &json!({ "fails_with": "unavailable" }))?;
    let error = stack(down)
        .oneshot(TurnRequest::new("anyone?"))
        .await
        .unwrap_err();
    println!(
        "unavailable: {error} (after {} attempts)",
        attempts.0.swap(0, Ordering::Relaxed)
    );

    // A refused request is not retriable: one attempt.
    let refusing = runtimes.new_instance("failing", &json!({ "fails_with": "invalid_request" }))?;
    let error = stack(refusing)
        .oneshot(TurnRequest::new("nonsense"))
        .await
        .unwrap_err();
    println!(
        "invalid_request: {error} (after {} attempt)",
        attempts.0.swap(0, Ordering::Relaxed)
    );
    Ok(())
}
