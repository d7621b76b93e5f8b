//! Running turns: registered for cancellation by execution id when they start ([`Turns`]), a
//! turn's future as the host polls it ([`CancellableTurn`]), spawned turns on the plugin's own
//! runtime ([`AbortOnDrop`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use abi_stable::std_types::{RErr, RResult};
use futures::future::{AbortHandle, AbortRegistration, Abortable, Aborted};

use pin_project_lite::pin_project;
use slab::Slab;
use tokio::task::JoinHandle;

use crate::abi::{AbiRuntimeError, AbiTurnOutput};
use crate::{RuntimeError, TurnOutput};

use super::guarded::{cancelled_by_id, flatten};

/// The running turns of one runtime object, so `cancel(execution id)` can reach them; and how
/// many of its turns run as tasks on the plugin's runtime, so a host can wait until the plugin
/// has released them all (a task stopped by the host is dropped by the plugin's runtime shortly
/// after, on its own threads).
///
/// Registering and releasing a turn happen on every turn; cancelling by id is rare. So turns
/// sit in a slab (a turn's ticket is its slot: no hashing, no allocation once the slab has
/// grown) and `cancel` scans it.
#[derive(Default)]
pub(super) struct Turns {
    pub(super) running: Mutex<Slab<(Arc<str>, AbortHandle)>>,
    pub(super) live_tasks: std::sync::atomic::AtomicUsize,
    pub(super) idle: tokio::sync::Notify,
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
}

/// Keeps a turn registered while it runs: its slot in [`Turns::running`].
pub(super) struct TurnTicket {
    pub(super) turns: Arc<Turns>,
    pub(super) execution_id: Arc<str>,
    pub(super) slot: usize,
}

/// A turn's registration for cancellation by id.
pub(super) struct Registration {
    pub(super) handle: AbortHandle,
    pub(super) registration: AbortRegistration,
    pub(super) ticket: TurnTicket,
}

impl Registration {
    pub(super) fn execution_id(&self) -> Arc<str> {
        Arc::clone(&self.ticket.execution_id)
    }
}

impl Turns {
    /// Registers a turn; turns without an execution id cannot be cancelled by id.
    pub(super) fn register(self: &Arc<Self>, execution_id: &str) -> Option<Registration> {
        if execution_id.is_empty() {
            return None;
        }
        let (handle, registration) = AbortHandle::new_pair();
        let execution_id: Arc<str> = Arc::from(execution_id);
        let slot = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((Arc::clone(&execution_id), handle.clone()));
        let ticket = TurnTicket {
            turns: Arc::clone(self),
            execution_id,
            slot,
        };
        Some(Registration {
            handle,
            registration,
            ticket,
        })
    }

    /// Aborts every running turn of `execution_id` (the same id may run more than once).
    pub(super) fn cancel(&self, execution_id: &str) -> bool {
        let matching: Vec<AbortHandle> = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, (id, _))| &**id == execution_id)
            .map(|(_, (_, handle))| handle.clone())
            .collect();
        // Aborted outside the lock: an abort wakes the turn's task, which may end the turn
        // (and release its slot) before this returns.
        matching.iter().for_each(AbortHandle::abort);
        !matching.is_empty()
    }
}

impl Drop for TurnTicket {
    fn drop(&mut self) {
        let released = self
            .turns
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_remove(self.slot);
        // Dropped outside the lock: the abort handle and the id are the last references.
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
        pub(super) turn: Option<Abortable<F>>,
        pub(super) ticket: Option<TurnTicket>,
    }
}

impl<F> CancellableTurn<F> {
    pub(super) fn new(turn: F, registration: Option<Registration>) -> Self {
        let (registration, ticket) = match registration {
            Some(Registration {
                registration,
                ticket,
                ..
            }) => (registration, Some(ticket)),
            // Nothing can cancel it by id: an unregistered pair that is never aborted.
            None => (AbortHandle::new_pair().1, None),
        };
        CancellableTurn {
            turn: Some(Abortable::new(turn, registration)),
            ticket,
        }
    }
}

impl<F> Future for CancellableTurn<F>
where
    F: Future<Output = Result<TurnOutput, RuntimeError>>,
{
    type Output = RResult<AbiTurnOutput, AbiRuntimeError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(turn) = this.turn.as_mut().as_pin_mut() else {
            return Poll::Ready(RErr(
                RuntimeError::internal("the turn was polled after it finished").into(),
            ));
        };
        let result = match turn.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(result)) => result,
            Poll::Ready(Err(Aborted)) => Err(cancelled_by_id()),
        };
        // Released now: the author's future (dropped inside its scope by `GuardedFuture`), or
        // the spawned task, then the registration.
        this.turn.set(None);
        this.ticket.take();
        Poll::Ready(flatten(Ok(result)))
    }
}
