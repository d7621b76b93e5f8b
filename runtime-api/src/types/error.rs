//! The error a turn or a runtime call returns.

use serde::{Deserialize, Serialize};
use serde_json::Value;

open_enum! {
    /// What kind of failure a [`RuntimeError`] is.
    ///
    /// Crosses the boundary as its name; a kind this version does not know arrives as
    /// [`ErrorKind::Other`] with its name.
    pub enum ErrorKind {
        /// A kind from a newer runtime-api or a third-party runtime.
        Other(String);
        /// The request was malformed or refused by the model server (HTTP 400).
        InvalidRequest = "invalid_request",
        /// The runtime was asked for something it does not support.
        Unsupported = "unsupported",
        /// The runtime's backend cannot be reached or is overloaded.
        Unavailable = "unavailable",
        /// The turn ran out of time.
        Timeout = "timeout",
        /// The turn was cancelled.
        Cancelled = "cancelled",
        /// Code inside the plugin panicked; the host went on.
        Panicked = "panicked",
        /// A bug or an unexpected state inside the runtime.
        Internal = "internal",
        /// The runtime's configuration is invalid.
        InvalidConfig = "invalid_config",
        /// The backend refused the credentials.
        Authentication = "authentication",
        /// The backend asked to slow down.
        RateLimited = "rate_limited",
        /// The process running the plugin died (isolation level *process*): the message names the
        /// plugin file, the runtime and how it died.
        Crashed = "crashed",
        /// The worker that took a queued turn stopped answering and the turn was not retried.
        WorkerLost = "worker_lost",
    }
}

impl ErrorKind {
    /// Whether an error of this kind is worth retrying unless the runtime says otherwise.
    pub fn retriable_by_default(&self) -> bool {
        matches!(
            self,
            ErrorKind::Unavailable
                | ErrorKind::Timeout
                | ErrorKind::RateLimited
                | ErrorKind::Crashed
                | ErrorKind::WorkerLost
        )
    }
}

/// A failed turn or runtime call: a kind, a message, and whether retrying may help.
///
/// This is a value, not a panic: it crosses the boundary intact, and a panic inside plugin code
/// arrives as one of kind [`ErrorKind::Panicked`].
///
/// # Examples
///
/// ```
/// use runtime_api::{ErrorKind, RuntimeError};
///
/// let err = RuntimeError::new(ErrorKind::RateLimited, "slow down");
/// assert!(err.retriable);
/// assert_eq!(err.to_string(), "rate_limited: slow down");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
#[non_exhaustive]
pub struct RuntimeError {
    /// What kind of failure it is.
    pub kind: ErrorKind,
    /// What happened, for people.
    pub message: String,
    /// Whether retrying the same request may succeed.
    pub retriable: bool,
    /// Structured details (JSON), e.g. `{"status": 429}`; `null` when absent.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub metadata: Value,
}

impl RuntimeError {
    /// An error of a kind, retriable as the kind suggests.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            retriable: kind.retriable_by_default(),
            kind,
            message: message.into(),
            metadata: Value::Null,
        }
    }

    /// Sets whether retrying may help.
    pub fn with_retriable(mut self, retriable: bool) -> Self {
        self.retriable = retriable;
        self
    }

    /// Sets the structured details.
    pub fn with_metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }

    /// An [`ErrorKind::InvalidRequest`] error.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message)
    }

    /// An [`ErrorKind::Unsupported`] error.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    /// An [`ErrorKind::Unavailable`] error.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// An [`ErrorKind::Timeout`] error.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }

    /// An [`ErrorKind::Cancelled`] error.
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Cancelled, message)
    }

    /// An [`ErrorKind::Internal`] error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// An [`ErrorKind::InvalidConfig`] error.
    pub fn invalid_config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidConfig, message)
    }

    /// An [`ErrorKind::Panicked`] error built from a panic payload.
    pub fn from_panic(payload: &(dyn std::any::Any + Send), during: &str) -> Self {
        let what = Self::panic_message(payload);
        Self::new(
            ErrorKind::Panicked,
            format!("plugin code panicked in {during}: {what}"),
        )
    }

    /// The text of a panic payload (`&str` or `String`), or a placeholder for other payloads.
    pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic payload".to_owned())
    }
}
