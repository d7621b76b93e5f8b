//! How a command fails, and the exit code that says so: one code per kind of failure, whatever
//! step found it (a configuration refused when the runtime is built and one refused during a
//! turn exit alike).

use runtime_api::{ErrorKind, RuntimeError};
use runtime_loader::ResolveError;
use serde_json::json;

use crate::style::clean;

/// The exit codes, as `runtimes --help` and the README list them.
pub const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    the turn failed (its error kind is printed), or a file could not be read or written
  2    usage error: bad arguments, an unknown runtime, or a request the runtime does not
       support (streaming, tools or MCP servers it does not declare)
  3    refused: a plugin file was rejected, a check failed, or the configuration was refused
       (when the runtime was created or during the turn)
  4    a plugin crashed (its worker process died)
  130  interrupted (Ctrl-C)
With --json, a failure is one JSON object on stdout, {\"error\": {\"kind\", \"message\", \"exit_code\"}},
unless the command's JSON output already holds the verdicts (check, info).";

/// A failed command.
#[derive(Debug)]
pub enum Failure {
    /// The turn failed: exit 1, or the code of its kind (`invalid_config` 3, `unsupported` 2,
    /// `crashed` 4).
    Turn(RuntimeError),
    /// A usage error or an unknown runtime: exit 2.
    Usage(String),
    /// A plugin was rejected, a check failed, or a configuration was refused: exit 3.
    Rejected(String),
    /// A plugin crashed (its worker process died): exit 4.
    Crashed(String),
    /// Ctrl-C ended the command: exit 130.
    Interrupted,
    /// Something else went wrong (I/O): exit 1.
    Other(anyhow::Error),
    /// The command already wrote this failure's details in its `--json` output: the exit code
    /// of the inner failure, and only its summary on stderr.
    Reported(Box<Failure>),
}

impl Failure {
    pub fn code(&self) -> u8 {
        match self {
            Failure::Turn(error) => match error.kind {
                ErrorKind::Crashed => 4,
                ErrorKind::InvalidConfig => 3,
                ErrorKind::Unsupported => 2,
                _ => 1,
            },
            Failure::Other(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Rejected(_) => 3,
            Failure::Crashed(_) => 4,
            Failure::Interrupted => 130,
            Failure::Reported(inner) => inner.code(),
        }
    }

    /// The kind in `--json` output: the runtime error's kind for a failed turn, else `usage`,
    /// `rejected`, `crashed`, `interrupted` or `failed`.
    pub fn kind(&self) -> String {
        match self {
            Failure::Turn(error) => error.kind.to_string(),
            Failure::Usage(_) => "usage".to_owned(),
            Failure::Rejected(_) => "rejected".to_owned(),
            Failure::Crashed(_) => "crashed".to_owned(),
            Failure::Interrupted => "interrupted".to_owned(),
            Failure::Other(_) => "failed".to_owned(),
            Failure::Reported(inner) => inner.kind(),
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
            Failure::Usage(message) | Failure::Rejected(message) | Failure::Crashed(message) => {
                message.clone()
            }
            Failure::Interrupted => "interrupted (Ctrl-C): the turn was cancelled".to_owned(),
            Failure::Other(error) => clean(&format!("{error:#}")).into_owned(),
            Failure::Reported(inner) => inner.message(),
        }
    }

    /// The failure as one JSON object, `{"error": {"kind", "message", "exit_code"}}` (plus
    /// `retriable` for a failed turn): the last line of `--json` output. The message is the
    /// raw text (JSON escapes it; `style::json_text` escapes what a terminal must not see).
    pub fn to_json(&self) -> serde_json::Value {
        let message = match self {
            Failure::Turn(error) => error.message.clone(),
            Failure::Other(error) => format!("{error:#}"),
            other => other.message(),
        };
        let mut error = json!({
            "kind": self.kind(),
            "message": message,
            "exit_code": self.code(),
        });
        if let Failure::Turn(turn) = self {
            error["retriable"] = json!(turn.retriable);
        }
        json!({ "error": error })
    }
}

impl From<ResolveError> for Failure {
    fn from(error: ResolveError) -> Self {
        let message = clean(&error.to_string()).into_owned();
        match &error {
            ResolveError::NotFound { .. } => Failure::Usage(message),
            ResolveError::Factory { error: cause, .. } if cause.kind == ErrorKind::Crashed => {
                Failure::Crashed(message)
            }
            ResolveError::Failed { .. } => Failure::Crashed(message),
            // A configuration refused, or a runtime that could not be created: refused.
            _ => Failure::Rejected(message),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure::Other(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_configuration_exits_3_wherever_it_is_refused() {
        let at_build = Failure::from(ResolveError::Factory {
            id: "echo".to_owned(),
            error: RuntimeError::invalid_config("bad"),
        });
        let in_turn = Failure::Turn(RuntimeError::invalid_config("bad"));
        assert_eq!(at_build.code(), 3);
        assert_eq!(in_turn.code(), 3);
    }

    #[test]
    fn the_json_form_is_one_object_with_kind_message_and_code() {
        let failure = Failure::Turn(RuntimeError::new(ErrorKind::RateLimited, "slow down\u{1b}"));
        let value = failure.to_json();
        assert_eq!(value["error"]["kind"], "rate_limited");
        assert_eq!(value["error"]["message"], "slow down\u{1b}");
        assert_eq!(value["error"]["exit_code"], 1);
        assert_eq!(value["error"]["retriable"], true);
        assert_eq!(Failure::Interrupted.to_json()["error"]["exit_code"], 130);
    }
}
