//! The host's short wait for a turn it spawned on a plugin's runtime (isolation level
//! *threads*).
//!
//! A spawned turn crosses threads twice: to the plugin's runtime, and back with its result.
//! When the host's task returns `Pending` its thread parks, and the result's wake-up then
//! costs a futex wake and a thread scheduled again: several microseconds on an idle machine,
//! tens on a busy one, for a turn whose own work may take one. So at its first poll a spawned
//! turn may wait for its result on the host's thread for at most [`SPIN`], checking the
//! result (never running plugin code: the plugin's future runs on the plugin's threads).
//!
//! The wait is adaptive, so it costs nothing where it cannot pay: a runtime object keeps a
//! score of its recent spawned turns (ready within the wait or not), and waits only while
//! recent turns were; one turn of a runtime object waits at a time (10,000 concurrent turns
//! never spin together); and a turn waits only at its first poll.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// The longest a host's thread waits for a spawned turn's result before parking.
pub(crate) const SPIN: Duration = Duration::from_micros(25);

/// The score above which turns wait: a turn ready within the wait adds one (up to
/// [`MAX_SCORE`]), a turn that was not takes two. New runtime objects start able to wait.
const MAX_SCORE: u8 = 8;

/// What a runtime object remembers of its recent spawned turns.
#[derive(Debug)]
pub(crate) struct Handoff {
    score: AtomicU8,
    waiting: AtomicBool,
}

impl Default for Handoff {
    fn default() -> Self {
        Self {
            score: AtomicU8::new(1),
            waiting: AtomicBool::new(false),
        }
    }
}

impl Handoff {
    /// Waits for `ready` to return `Some` for at most [`SPIN`], when recent turns were ready
    /// within the wait and no other turn of this runtime object is waiting; `None` when the
    /// turn is still not ready (or did not wait).
    pub(crate) fn wait<T>(&self, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
        if self.score.load(Ordering::Relaxed) == 0
            || self
                .waiting
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return None;
        }
        let deadline = Instant::now() + SPIN;
        let found = loop {
            for _ in 0..32 {
                std::hint::spin_loop();
            }
            if let Some(found) = ready() {
                break Some(found);
            }
            if Instant::now() >= deadline {
                break None;
            }
        };
        self.waiting.store(false, Ordering::Release);
        self.record(found.is_some());
        found
    }

    /// Scores one turn: ready within the wait, or not.
    fn record(&self, in_time: bool) {
        let _ = self
            .score
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |score| {
                Some(if in_time {
                    score.saturating_add(1).min(MAX_SCORE)
                } else {
                    score.saturating_sub(2)
                })
            });
    }

    /// Scores a turn that was not waited for but turned out ready at its second poll, or
    /// later: a runtime object whose turns all take long never waits again, one whose turns
    /// became quick again waits again.
    pub(crate) fn ready_later(&self, soon: bool) {
        if soon {
            self.record(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Handoff;

    #[test]
    fn a_result_that_comes_within_the_wait_is_taken() {
        let handoff = Handoff::default();
        let mut polls = 0;
        let found = handoff.wait(|| {
            polls += 1;
            (polls == 3).then_some("done")
        });
        assert_eq!(found, Some("done"));
    }

    #[test]
    fn turns_that_miss_the_wait_stop_the_waiting() {
        let handoff = Handoff::default();
        assert_eq!(handoff.wait(|| None::<()>), None);
        // The score fell to zero: the next turn does not wait (`ready` is never called).
        let found = handoff.wait(|| -> Option<()> { panic!("waited") });
        assert_eq!(found, None);
        // A quick turn seen later makes turns wait again.
        handoff.ready_later(true);
        assert_eq!(handoff.wait(|| Some(1)), Some(1));
    }
}
