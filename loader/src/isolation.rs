//! How far plugin code is kept from the host: the isolation levels.

use std::fmt;
use std::str::FromStr;

use runtime_api::host::TurnOptions;
use serde::{Deserialize, Serialize};

/// The environment variable that sets the default isolation level
/// (`inline`, `threads` or `process`).
pub const ISOLATION_ENV: &str = "AGENT_RUNTIMES_ISOLATION";

/// How a runtime's turns are run, relative to the host.
///
/// Chosen per registry ([`LoaderOptions::isolation`](crate::LoaderOptions), or the
/// `AGENT_RUNTIMES_ISOLATION` environment variable) and overridable per runtime
/// ([`Runtimes::set_isolation`](crate::Runtimes::set_isolation)). Every level has the same
/// [`RuntimeHandle`](crate::RuntimeHandle) API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Isolation {
    /// The plugin's futures are polled on the caller's task: the fastest level, and it trusts
    /// the plugin not to block its thread (a turn that blocks holds the caller's thread, and
    /// timeouts and cancellation wait for it). Panics are still caught.
    Inline,
    /// The default: each turn runs as a task on the plugin's own tokio runtime and its results
    /// come back through a bounded channel, so the host's timeouts, `cancel` and other runtimes
    /// never wait on a plugin poll. A crash (segfault, abort, exit) still ends the process.
    #[default]
    Threads,
    /// The plugin library is loaded in a worker process (`runtimes-worker`, one per runtime
    /// instance) and turns cross a pipe: a crash, an `exit`, a runaway allocation or a
    /// blocked thread ends that worker only. Turns in flight on it end with a `crashed` error
    /// naming the plugin, the runtime and how the worker died; the next turn starts a new
    /// worker. The slowest level (a few tens of microseconds a turn), for plugins you do not
    /// trust. Runtimes compiled into the host run at the *threads* level instead.
    Process,
}

impl Isolation {
    /// Every level, weakest first.
    pub const ALL: [Isolation; 3] = [Isolation::Inline, Isolation::Threads, Isolation::Process];

    /// The level's name, as the CLI and the environment variable spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Isolation::Inline => "inline",
            Isolation::Threads => "threads",
            Isolation::Process => "process",
        }
    }

    /// The level set by `AGENT_RUNTIMES_ISOLATION`, or the default when it is unset. An
    /// unknown value is logged and ignored.
    pub fn from_env() -> Self {
        match std::env::var(ISOLATION_ENV) {
            Ok(text) if !text.is_empty() => text.parse().unwrap_or_else(|error| {
                tracing::warn!("{ISOLATION_ENV}: {error}; using `{}`", Self::default());
                Self::default()
            }),
            _ => Self::default(),
        }
    }

    /// Whether the plugin's code runs in the host's process at this level.
    pub const fn in_process(self) -> bool {
        !matches!(self, Isolation::Process)
    }

    /// What the boundary is told for a turn at this level.
    pub(crate) fn turn_options(self) -> TurnOptions {
        match self {
            Isolation::Inline => TurnOptions::INLINE,
            Isolation::Threads | Isolation::Process => TurnOptions::SPAWNED,
        }
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An isolation level name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{given}` is not an isolation level: expected one of inline, threads, process")]
#[non_exhaustive]
pub struct UnknownIsolation {
    /// What was given.
    pub given: String,
}

impl FromStr for Isolation {
    type Err = UnknownIsolation;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Isolation::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| UnknownIsolation {
                given: text.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for level in Isolation::ALL {
            assert_eq!(level.as_str().parse::<Isolation>(), Ok(level));
        }
        assert!("process-ish".parse::<Isolation>().is_err());
    }
}
