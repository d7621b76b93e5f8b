//! Hosts get the tower ecosystem (feature `tower`): a [`RuntimeHandle`] is a
//! `tower::Service<TurnRequest>` whose response is the [`TurnOutput`] and whose error is the
//! [`RuntimeError`], and [`RetryRetriable`] is a retry policy driven by the error's
//! `retriable` flag.
//!
//! Compose timeouts, retries, concurrency and rate limits from tower's layers:
//!
//! ```no_run
//! use std::time::Duration;
//! use runtime_api::TurnRequest;
//! use runtime_loader::{Runtimes, SearchPath, service::RetryRetriable};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # async fn demo() -> Result<(), tower::BoxError> {
//! let runtimes = Runtimes::new();
//! runtimes.discover(&SearchPath::standard(["./plugins"]));
//! let echo = runtimes.resolve("echo")?;
//! let service = ServiceBuilder::new()
//!     .retry(RetryRetriable::new(3, Duration::from_millis(100)))
//!     .service(echo.with_timeout(Duration::from_secs(30))); // each attempt: a `timeout` error
//! let output = service.oneshot(TurnRequest::new("hello")).await?;
//! # Ok(()) }
//! ```
//!
//! A full stack (an overall timeout, retries, a concurrency limit and a rate limit) is the
//! `tower_stack` example of the repository's `examples/`.

use std::task::{Context, Poll};
use std::time::Duration;

use runtime_api::{RuntimeError, TurnOutput, TurnRequest};

use crate::{RuntimeHandle, Turn};

impl tower::Service<TurnRequest> for RuntimeHandle {
    type Response = TurnOutput;
    type Error = RuntimeError;
    type Future = Turn;

    /// Always ready: a runtime handle has no queue of its own (put a concurrency limit or a
    /// rate limit in front of it to bound the load).
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), RuntimeError>> {
        Poll::Ready(Ok(()))
    }

    /// [`RuntimeHandle::run_turn`]: the turn starts now (registered for `cancel`), with this
    /// handle's timeout and isolation level.
    fn call(&mut self, request: TurnRequest) -> Turn {
        self.run_turn(request)
    }
}

/// A retry policy for turns: retries a turn whose error says it is
/// [`retriable`](RuntimeError::retriable) (`unavailable`, `timeout`, `rate_limited`, … unless
/// the runtime said otherwise), up to a number of times, waiting between attempts. Errors that
/// are not retriable (`invalid_request`, `unsupported`, `panicked`, …) are returned at once.
///
/// A retried turn is sent again as it was, with the same execution id if it had one (an
/// idempotency key for the runtime); without one, each attempt gets a fresh id.
#[derive(Debug, Clone)]
pub struct RetryRetriable {
    remaining: u32,
    backoff: Duration,
}

impl RetryRetriable {
    /// At most `retries` retries after the first attempt, `backoff` apart.
    pub fn new(retries: u32, backoff: Duration) -> Self {
        Self {
            remaining: retries,
            backoff,
        }
    }
}

impl tower::retry::Policy<TurnRequest, TurnOutput, RuntimeError> for RetryRetriable {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _request: &mut TurnRequest,
        result: &mut Result<TurnOutput, RuntimeError>,
    ) -> Option<Self::Future> {
        match result {
            Err(error) if error.retriable && self.remaining > 0 => {
                self.remaining -= 1;
                tracing::debug!(kind = %error.kind, remaining = self.remaining, "retrying a turn");
                Some(tokio::time::sleep(self.backoff))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, request: &TurnRequest) -> Option<TurnRequest> {
        Some(request.clone())
    }
}
