//! The queue's errors.

use std::time::Duration;

/// What went wrong talking to the queue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The Redis URL could not be used.
    #[error(
        "the Redis URL `{url}` is not usable: {source}; use redis://[[USER]:PASSWORD@]HOST:PORT[/DB]"
    )]
    Url {
        /// The URL as given, its password replaced by `***`.
        url: String,
        /// The client's reason.
        source: redis::RedisError,
    },
    /// Redis did not answer within the reconnection window.
    #[error(
        "Redis is unreachable ({operation}) after retrying for {:.0?}: {source}; check that redis-server runs at the URL given",
        waited
    )]
    Unreachable {
        /// What was being done.
        operation: &'static str,
        /// How long it retried.
        waited: Duration,
        /// The last error.
        source: redis::RedisError,
    },
    /// Redis answered with an error that retrying does not cure.
    #[error("Redis refused {operation}: {source}")]
    Redis {
        /// What was being done.
        operation: &'static str,
        /// Redis's error.
        source: redis::RedisError,
    },
    /// An execution id that cannot be a key.
    #[error(
        "execution id {id:?} is not usable as a queue key: use 1 to 128 characters of A-Z a-z 0-9 . _ : -"
    )]
    InvalidExecutionId {
        /// The id as given.
        id: String,
    },
    /// Redis answered something this crate did not expect (another program using the keys?).
    #[error("unexpected answer from Redis to {operation}: {detail}")]
    Unexpected {
        /// What was being done.
        operation: &'static str,
        /// What came back.
        detail: String,
    },
    /// The worker's own rules for a runtime cannot be used: an unknown runtime, or a fixed
    /// configuration the runtime refuses.
    #[error("the worker's configuration for runtime `{runtime}` is not usable: {reason}")]
    WorkerConfig {
        /// The runtime as the operator named it.
        runtime: String,
        /// Why (the runtime's problems with the configuration, or that it is not installed).
        reason: String,
    },
}
