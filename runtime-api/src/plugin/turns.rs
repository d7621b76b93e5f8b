//! Running turns: registered for cancellation by execution id when they start ([`Turns`]), a
//! turn's future as the host polls it ([`CancellableTurn`]), spawned turns on the plugin's own
//! runtime ([`AbortOnDrop`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use pin_project_lite::pin_project;
use slab::Slab;
use tokio::task::JoinHandle;

use crate::{RuntimeError, TurnOutput};

use super::guarded::cancelled_by_id;
use super::turn_id::TurnId;

/// The running turns of one runtime object, so `cancel(execution id)` can reach them; and how
/// many of its turns run as tasks on the plugin's runtime, so a host can wait until the plugin
/// has released them all (a task stopped by the host is dropped by the plugin's runtime shortly
/// after, on its own threads).
///
/// Registering and releasing a turn happen on every turn; cancelling by id is rare. So turns
/// sit in a slab (a turn's ticket is its slot: no hashing, no allocation once the slab has
/// grown), `cancel` scans it, and a turn learns that it was cancelled from its own slot. A
/// poll looks at the slot only when some turn was cancelled since the turn last looked
/// (`cancels` moved): the common poll takes no lock.
#[derive(Default)]
pub(super) struct Turns {
    running: Mutex<Slab<Running>>,
    /// How many `cancel` calls found a turn; bumped under the lock, after the flags are set.
    cancels: AtomicU64,
    pub(super) live_tasks: AtomicUsize,
    pub(super) idle: tokio::sync::Notify,
}

/// One running turn's slot.
struct Running {
    execution_id: TurnId,
    cancelled: bool,
    /// Woken by `cancel`: the waker of the turn's last pending poll.
    waker: Option<Waker>,
}

/// Counts a task as live until the task (and the turn it runs) is dropped.
pub(super) struct LiveTask(Arc<Turns>);

impl LiveTask {
    pub(super) fn new(turns: &Arc<Turns>) -> Self {
        turns.live_tasks.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(turns))
    }
}

impl Drop for LiveTask {
    fn drop(&mut self) {
        if self.0.live_tasks.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The extension call that waits until no task of the runtime object is live.
pub(crate) const WAIT_IDLE: &str = "agent_runtimes.wait_idle";

impl Turns {
    /// Resolves once no task of this runtime object is live.
    pub(super) async fn wait_idle(self: Arc<Self>) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.live_tasks.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slab<Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a turn; turns without an execution id cannot be cancelled by id.
    pub(super) fn register(self: &Arc<Self>, execution_id: &str) -> Option<TurnTicket> {
        if execution_id.is_empty() {
            return None;
        }
        let execution_id = TurnId::new(execution_id);
        // Read before the slot exists: a cancel that finds this turn bumps it afterwards.
        let seen = self.cancels.load(Ordering::Acquire);
        let slot = self.lock().insert(Running {
            execution_id,
            cancelled: false,
            waker: None,
        });
        Some(TurnTicket {
            turns: Arc::clone(self),
            slot,
            seen,
        })
    }

    /// Cancels every running turn of `execution_id` (the same id may run more than once).
    pub(super) fn cancel(&self, execution_id: &str) -> bool {
        let mut wakers = Vec::new();
        let mut found = false;
        {
            let mut running = self.lock();
            for (_, turn) in running.iter_mut() {
                if turn.execution_id.is(execution_id) {
                    found = true;
                    turn.cancelled = true;
                    wakers.extend(turn.waker.take());
                }
            }
            if found {
                self.cancels.fetch_add(1, Ordering::Release);
            }
        }
        // Woken outside the lock: a wake-up may run the turn's task, which may end the turn
        // (and release its slot) before this returns.
        wakers.into_iter().for_each(Waker::wake);
        found
    }
}

/// Keeps a turn registered while it runs: its slot in the runtime object's [`Turns`].
pub(super) struct TurnTicket {
    turns: Arc<Turns>,
    slot: usize,
    /// `turns.cancels` when this turn last looked at its slot.
    seen: u64,
}

impl TurnTicket {
    /// Whether the turn was cancelled by id; takes the lock only when some turn of the
    /// runtime object was cancelled since this one last looked.
    pub(super) fn cancelled(&mut self) -> bool {
        let now = self.turns.cancels.load(Ordering::Acquire);
        if now == self.seen {
            return false;
        }
        let running = self.turns.lock();
        self.seen = now;
        running.get(self.slot).is_some_and(|turn| turn.cancelled)
    }

    /// For a turn whose poll is pending: whether it was cancelled meanwhile, and if not,
    /// `waker` is woken when it is.
    pub(super) fn cancelled_or_wake(&mut self, waker: &Waker) -> bool {
        let mut running = self.turns.lock();
        self.seen = self.turns.cancels.load(Ordering::Acquire);
        let Some(turn) = running.get_mut(self.slot) else {
            return false;
        };
        if turn.cancelled {
            return true;
        }
        let previous = match &turn.waker {
            Some(known) if known.will_wake(waker) => None,
            _ => turn.waker.replace(waker.clone()),
        };
        drop(running);
        // Dropped outside the lock: the last reference to another task may end a turn of
        // this runtime object, whose ticket takes the lock.
        drop(previous);
        false
    }
}

impl Drop for TurnTicket {
    fn drop(&mut self) {
        let released = self.turns.lock().try_remove(self.slot);
        // Dropped outside the lock: the id and the waker may be the last references.
        drop(released);
    }
}

/// A task on the plugin's runtime, aborted when its handle is dropped.
pub(super) struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<Result<T, RuntimeError>> {
    type Output = Result<T, RuntimeError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.unwrap_or_else(|error| {
                Err(if error.is_panic() {
                    RuntimeError::new(
                        crate::ErrorKind::Panicked,
                        "plugin code panicked in the turn's task",
                    )
                } else {
                    RuntimeError::cancelled("the turn's task was stopped")
                })
            })
        })
    }
}

/// Starts a task on the plugin's runtime, counted live in `turns` until it is dropped, or says
/// why it cannot.
pub(super) fn spawn<F>(
    turns: &Arc<Turns>,
    future: F,
) -> Result<AbortOnDrop<F::Output>, RuntimeError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handle = crate::plugin::runtime::handle().ok_or_else(|| {
        RuntimeError::unavailable("the plugin's tokio runtime could not be started")
    })?;
    let live = LiveTask::new(turns);
    Ok(AbortOnDrop(handle.spawn(async move {
        let _live = live;
        future.await
    })))
}

pin_project! {
    /// A turn's future as the host polls it: ended early with `cancelled` when the turn is
    /// cancelled by id, and registered for that while it runs. One flat future, so the
    /// author's (often large) future is not moved from state to state. The turn is released
    /// as soon as it ends (a spawned turn's task is stopped then, not when the host drops
    /// this), and a poll after the end is an error.
    pub(super) struct CancellableTurn<F> {
        #[pin]
        turn: Option<F>,
        ticket: Option<TurnTicket>,
    }
}

impl<F> CancellableTurn<F> {
    #[inline(always)]
    pub(super) fn new(turn: F, ticket: Option<TurnTicket>) -> Self {
        CancellableTurn {
            turn: Some(turn),
            ticket,
        }
    }
}

impl<F> Future for CancellableTurn<F>
where
    F: Future<Output = Result<TurnOutput, RuntimeError>>,
{
    type Output = Result<TurnOutput, RuntimeError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(turn) = this.turn.as_mut().as_pin_mut() else {
            return Poll::Ready(Err(RuntimeError::internal(
                "the turn was polled after it finished",
            )));
        };
        let result = if this.ticket.as_mut().is_some_and(TurnTicket::cancelled) {
            Err(cancelled_by_id())
        } else {
            match turn.poll(cx) {
                Poll::Ready(result) => result,
                Poll::Pending => {
                    let waker = cx.waker();
                    if !this
                        .ticket
                        .as_mut()
                        .is_some_and(|ticket| ticket.cancelled_or_wake(waker))
                    {
                        return Poll::Pending;
                    }
                    Err(cancelled_by_id())
                }
            }
        };
        // Released now: the author's future (dropped inside its scope by `GuardedFuture`), or
        // the spawned task, then the registration.
        this.turn.set(None);
        this.ticket.take();
        Poll::Ready(result)
    }
}
