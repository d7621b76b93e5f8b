//! How a command fails, and the exit code that says so.

use runtime_api::{ErrorKind, RuntimeError};
use runtime_loader::ResolveError;

/// A failed command.
#[derive(Debug)]
pub enum Failure {
    /// The turn failed: exit 1.
    Turn(RuntimeError),
    /// A usage error or an unknown runtime: exit 2.
    Usage(String),
    /// A plugin was rejected or a check failed: exit 3.
    Rejected(String),
    /// A plugin crashed (its worker process died) in `check --load`: exit 4.
    Crashed(String),
    /// Something else went wrong (I/O): exit 1.
    Other(anyhow::Error),
}

impl Failure {
    pub fn code(&self) -> u8 {
        match self {
            Failure::Turn(error) if error.kind == ErrorKind::Crashed => 4,
            Failure::Turn(_) | Failure::Other(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Rejected(_) => 3,
            Failure::Crashed(_) => 4,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Failure::Turn(error) => format!(
                "the turn failed ({}{}): {}",
                error.kind,
                if error.retriable { ", retriable" } else { "" },
                error.message
            ),
            Failure::Usage(message) | Failure::Rejected(message) | Failure::Crashed(message) => {
                message.clone()
            }
            Failure::Other(error) => format!("{error:#}"),
        }
    }
}

impl From<ResolveError> for Failure {
    fn from(error: ResolveError) -> Self {
        match error {
            ResolveError::NotFound { .. } => Failure::Usage(error.to_string()),
            ResolveError::Factory {
                error: ref cause, ..
            } if cause.kind == ErrorKind::Crashed => Failure::Crashed(error.to_string()),
            ResolveError::Failed { .. } => Failure::Crashed(error.to_string()),
            ResolveError::Factory { .. } => Failure::Rejected(error.to_string()),
            _ => Failure::Rejected(error.to_string()),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure::Other(error)
    }
}
