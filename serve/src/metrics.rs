//! The server's Prometheus metrics, recorded with the `metrics` crate and rendered by
//! `metrics-exporter-prometheus` at `GET /metrics`.
//!
//! - `runtimes_serve_turns_total{runtime, stream, outcome}`: finished turns; `outcome` is
//!   `ok`, `error` or `disconnected` (the client left and the turn was cancelled);
//! - `runtimes_serve_errors_total{kind}`: failed requests by error kind (a runtime error
//!   kind such as `rate_limited`, or the server's own code such as `invalid_value`,
//!   `model_not_found`, `too_many_concurrent_requests`, `invalid_api_key`);
//! - `runtimes_serve_turn_duration_seconds{runtime, stream}`: turn latency histogram;
//! - `runtimes_serve_turns_in_flight`: turns running now.

use std::time::Instant;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const TURNS: &str = "runtimes_serve_turns_total";
const ERRORS: &str = "runtimes_serve_errors_total";
const DURATION: &str = "runtimes_serve_turn_duration_seconds";
const IN_FLIGHT: &str = "runtimes_serve_turns_in_flight";

/// Latency buckets, in seconds: from 100 µs (echo) to 5 minutes (a long LLM turn).
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Why the metrics recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The exporter refused its configuration.
    #[error("the Prometheus exporter could not be configured: {0}")]
    Build(#[from] metrics_exporter_prometheus::BuildError),
    /// Another recorder was installed first.
    #[error("a metrics recorder is already installed in this process")]
    AlreadyInstalled,
}

/// Installs the process-wide recorder and returns the handle that renders it.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(DURATION.to_owned()), BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| MetricsError::AlreadyInstalled)?;
    metrics::describe_counter!(TURNS, "Finished turns by runtime, streaming and outcome.");
    metrics::describe_counter!(ERRORS, "Failed requests by error kind.");
    metrics::describe_histogram!(
        DURATION,
        metrics::Unit::Seconds,
        "Turn latency, from the request to the last byte of the answer."
    );
    metrics::describe_gauge!(IN_FLIGHT, "Turns running now.");
    metrics::gauge!(IN_FLIGHT).set(0.0);
    Ok(handle)
}

/// Counts a failed request.
pub fn error(kind: &str) {
    metrics::counter!(ERRORS, "kind" => kind.to_owned()).increment(1);
}

/// How a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It answered.
    Ok,
    /// It failed (the error is counted separately).
    Error,
}

/// One running turn: counted in flight from creation; when dropped, counted as finished with
/// its outcome (or as `disconnected` if none was set: the client went away and the turn was
/// dropped, which cancels it in the plugin).
#[derive(Debug)]
pub struct TurnGuard {
    runtime: String,
    stream: bool,
    execution_id: String,
    started: Instant,
    outcome: Option<Outcome>,
}

impl TurnGuard {
    /// Starts counting a turn.
    pub fn start(runtime: &str, stream: bool, execution_id: &str) -> Self {
        metrics::gauge!(IN_FLIGHT).increment(1.0);
        Self {
            runtime: runtime.to_owned(),
            stream,
            execution_id: execution_id.to_owned(),
            started: Instant::now(),
            outcome: None,
        }
    }

    /// Records how the turn ended.
    pub fn finish(&mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
    }
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        metrics::gauge!(IN_FLIGHT).decrement(1.0);
        let stream = if self.stream { "true" } else { "false" };
        let outcome = match self.outcome {
            Some(Outcome::Ok) => "ok",
            Some(Outcome::Error) => "error",
            None => {
                tracing::info!(
                    runtime = %self.runtime,
                    execution_id = %self.execution_id,
                    "the client disconnected: turn cancelled"
                );
                "disconnected"
            }
        };
        metrics::counter!(TURNS, "runtime" => self.runtime.clone(), "stream" => stream, "outcome" => outcome)
            .increment(1);
        metrics::histogram!(DURATION, "runtime" => self.runtime.clone(), "stream" => stream)
            .record(self.started.elapsed().as_secs_f64());
    }
}
