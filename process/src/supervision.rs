//! Supervision: the crash ledger that marks a runtime failed, pings of busy workers, and
//! crash errors that say how a worker ended.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use runtime_api::{ErrorKind, RuntimeError};

use crate::io::lock;
use crate::options::{ProcessOptions, Spec};

/// The crashes of one registered runtime's workers, and whether it is marked failed.
#[derive(Debug, Default)]
pub struct CrashLedger {
    pub(crate) state: Mutex<LedgerState>,
}

#[derive(Debug, Default)]
pub(crate) struct LedgerState {
    pub(crate) crashes: VecDeque<Instant>,
    pub(crate) failed: Option<String>,
}

impl CrashLedger {
    /// Records a crash; returns how many fell in the window, and marks the runtime failed
    /// when there were too many.
    pub(crate) fn record(&self, options: &ProcessOptions, what: &str) -> u32 {
        let mut state = lock(&self.state);
        let now = Instant::now();
        state.crashes.push_back(now);
        while state
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > options.crash_window)
        {
            state.crashes.pop_front();
        }
        let count = u32::try_from(state.crashes.len()).unwrap_or(u32::MAX);
        if count >= options.max_crashes && state.failed.is_none() {
            state.failed = Some(format!(
                "its worker crashed {count} times within {:?}; the last time: {what}",
                options.crash_window
            ));
        }
        count
    }

    /// Why the runtime is marked failed, if it is.
    pub fn failed(&self) -> Option<String> {
        lock(&self.state).failed.clone()
    }

    /// Forgets the crashes: the runtime may be tried again.
    pub fn clear(&self) {
        *lock(&self.state) = LedgerState::default();
    }
}

/// How a worker ended, with its stderr's last lines, as a `crashed` error.
pub(crate) fn crash_error(spec: &Spec, pid: u32, how: &str, tail: &[String]) -> RuntimeError {
    let mut message = format!(
        "the worker of runtime `{}` (plugin {}, pid {pid}) {how}",
        spec.runtime_id,
        spec.library.display()
    );
    if !tail.is_empty() {
        message.push_str("; the last lines of its stderr:");
        for line in tail {
            message.push_str("\n  ");
            message.push_str(line);
        }
    }
    RuntimeError::new(ErrorKind::Crashed, message).with_metadata(serde_json::json!({
        "plugin": spec.library.display().to_string(),
        "runtime": spec.runtime_id,
        "pid": pid,
        "how": how,
        "stderr": tail,
    }))
}
