//! How a command fails, and the exit code that says so.

use runtime_api::RuntimeError;
use runtime_loader::ResolveError;

use crate::style::clean;

/// A failed command.
#[derive(Debug)]
pub enum Failure {
    /// The turn failed: exit 1.
    Turn(RuntimeError),
    /// A usage error or an unknown runtime: exit 2.
    Usage(String),
    /// A plugin was rejected or a check failed: exit 3.
    Rejected(String),
    /// Something else went wrong (I/O): exit 1.
    Other(anyhow::Error),
}

impl Failure {
    pub fn code(&self) -> u8 {
        match self {
            Failure::Turn(_) | Failure::Other(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Rejected(_) => 3,
        }
    }

    /// The message for stderr. Usage and rejection messages are composed with their data
    /// already escaped (they may span lines); a plugin's error and an I/O error are escaped
    /// here.
    pub fn message(&self) -> String {
        match self {
            Failure::Turn(error) => format!(
                "the turn failed ({}{}): {}",
                error.kind,
                if error.retriable { ", retriable" } else { "" },
                clean(&error.message)
            ),
            Failure::Usage(message) | Failure::Rejected(message) => message.clone(),
            Failure::Other(error) => clean(&format!("{error:#}")).into_owned(),
        }
    }
}

impl From<ResolveError> for Failure {
    fn from(error: ResolveError) -> Self {
        match error {
            ResolveError::NotFound { .. } => Failure::Usage(clean(&error.to_string()).into()),
            ResolveError::Factory { .. } => Failure::Rejected(clean(&error.to_string()).into()),
            _ => Failure::Rejected(clean(&error.to_string()).into()),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure::Other(error)
    }
}
