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
    /// Why the runtime is marked failed, and until when.
    pub(crate) failed: Option<(String, Instant)>,
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
        let marked = state.failed.as_ref().is_some_and(|(_, until)| now < *until);
        if count >= options.max_crashes && !marked {
            state.failed = Some((
                format!(
                    "its worker crashed {count} times within {:?}; the last time: {what}. The mark expires after {:?}",
                    options.crash_window, options.failed_for
                ),
                now + options.failed_for,
            ));
        }
        count
    }

    /// Why the runtime is marked failed, if it is (a mark expires after
    /// [`ProcessOptions::failed_for`]; the crashes counted before it are forgotten then).
    pub fn failed(&self) -> Option<String> {
        let mut state = lock(&self.state);
        match &state.failed {
            Some((reason, until)) if Instant::now() < *until => Some(reason.clone()),
            Some(_) => {
                *state = LedgerState::default();
                None
            }
            None => None,
        }
    }

    /// Why the runtime is marked failed and how long the mark still holds, if it is.
    pub fn failed_mark(&self) -> Option<(String, std::time::Duration)> {
        let reason = self.failed()?;
        let state = lock(&self.state);
        let left = state
            .failed
            .as_ref()
            .map(|(_, until)| until.saturating_duration_since(Instant::now()))?;
        Some((reason, left))
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_failed_mark_expires() {
        let options = ProcessOptions::DEFAULT
            .with_crash_limit(2, Duration::from_secs(60))
            .with_failed_for(Duration::ZERO);
        let ledger = CrashLedger::default();
        assert_eq!(ledger.record(&options, "one"), 1);
        assert_eq!(ledger.failed(), None);
        assert_eq!(ledger.record(&options, "two"), 2);
        // Marked for no time at all: gone at the next look, with the crashes counted.
        assert_eq!(ledger.failed(), None);
        assert_eq!(ledger.record(&options, "three"), 1);

        let options = options.with_failed_for(Duration::from_secs(3600));
        ledger.record(&options, "four");
        assert!(ledger.failed().is_some_and(|r| r.contains("four")));
        ledger.clear();
        assert_eq!(ledger.failed(), None);
    }
}
