//! Where a turn spawned by the host (isolation level *threads*) is polled first: the plugin's
//! front thread.
//!
//! Spawning on the plugin's tokio runtime wakes one of its parked workers: a futex wake and a
//! thread scheduled again, several microseconds on an idle machine and tens on a busy one,
//! for turns whose own work often takes one. The front thread stays awake for [`LINGER`] after
//! each turn it ran, so a turn that follows soon is taken at once: it polls the turn once
//! inside the plugin's scope (the plugin's thread, never the host's), hands a ready result
//! straight to the host, and otherwise moves the turn on to the plugin's runtime as a task,
//! which polls it from then on. A turn never waits behind another: while the front thread is
//! busy (with a turn whose first poll takes long, or blocks), turns go to the runtime
//! directly, as they always did.
//!
//! The host's side ([`SpawnedTurn`]) reads the result when it is there; dropping it stops the
//! turn wherever it is (not yet polled, in its first poll, or a task).

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use tokio::task::AbortHandle;

use crate::{RuntimeError, TurnOutput};

use super::turns::{LiveTask, Turns};

/// How long the front thread stays awake for the next turn after one.
const LINGER: Duration = Duration::from_micros(50);

type TurnResult = Result<TurnOutput, RuntimeError>;
type Job = Box<dyn FnOnce() + Send>;

/// What a spawned turn's two sides share.
#[derive(Default)]
struct Shared {
    slot: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    result: Option<TurnResult>,
    waker: Option<Waker>,
    /// The host let go of the turn: it is dropped wherever it is, not run on.
    dropped: bool,
    /// The task the turn went on in after a pending first poll.
    task: Option<AbortHandle>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn deliver(&self, result: TurnResult) {
        let waker = {
            let mut slot = self.lock();
            if slot.dropped {
                return;
            }
            slot.result = Some(result);
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The host's side of a spawned turn: a future of its result. Dropping it stops the turn.
pub(super) struct SpawnedTurn {
    shared: Arc<Shared>,
}

impl Future for SpawnedTurn {
    type Output = TurnResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TurnResult> {
        let mut slot = self.shared.lock();
        if let Some(result) = slot.result.take() {
            return Poll::Ready(result);
        }
        let previous = match &slot.waker {
            Some(known) if known.will_wake(cx.waker()) => None,
            _ => slot.waker.replace(cx.waker().clone()),
        };
        drop(slot);
        // Dropped outside the lock: a waker's last reference may end a task.
        drop(previous);
        Poll::Pending
    }
}

impl Drop for SpawnedTurn {
    fn drop(&mut self) {
        let (task, waker) = {
            let mut slot = self.shared.lock();
            slot.dropped = true;
            (slot.task.take(), slot.waker.take())
        };
        drop(waker);
        if let Some(task) = task {
            task.abort();
        }
    }
}

/// Starts a turn for the host: on the front thread when it is free, else as a task on the
/// plugin's runtime; counted live in `turns` until the turn is dropped.
pub(super) fn spawn_turn<F>(turns: &Arc<Turns>, turn: F) -> Result<SpawnedTurn, RuntimeError>
where
    F: Future<Output = TurnResult> + Send + 'static,
{
    let handle = super::runtime::handle().ok_or_else(|| {
        RuntimeError::unavailable("the plugin's tokio runtime could not be started")
    })?;
    let shared = Arc::new(Shared::default());
    let live = LiveTask::new(turns);
    let turn = Box::pin(turn);
    let theirs = Arc::clone(&shared);
    let Some(front) = front().filter(|front| front.reserve()) else {
        // The front thread is busy (or could not start): the turn runs as a task from its
        // first poll, as it always did.
        continue_as_task(handle, shared.clone(), turn, live);
        return Ok(SpawnedTurn { shared });
    };
    let mut turn = turn;
    front.submit(Box::new(move || {
        if theirs.lock().dropped {
            drop((turn, live));
            return;
        }
        let _runtime = handle.enter();
        // The first poll's waker wakes nothing: a turn pending now is polled again by its task,
        // which registers its own waker then.
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        match catch_unwind(AssertUnwindSafe(|| turn.as_mut().poll(&mut cx))) {
            Ok(Poll::Ready(result)) => {
                drop((turn, live));
                theirs.deliver(result);
            }
            Ok(Poll::Pending) => continue_as_task(handle, theirs, turn, live),
            Err(_) => {
                // The turn's own guard catches plugin panics; whatever else panicked, the
                // host gets an answer rather than waiting for ever.
                let _ = catch_unwind(AssertUnwindSafe(move || drop((turn, live))));
                theirs.deliver(Err(panicked()));
            }
        }
    }));
    Ok(SpawnedTurn { shared })
}

fn panicked() -> RuntimeError {
    RuntimeError::new(
        crate::ErrorKind::Panicked,
        "plugin code panicked in the turn's task",
    )
}

/// A turn (pending at its first poll, or not polled yet) run on as a task on the plugin's
/// runtime.
fn continue_as_task(
    handle: &'static tokio::runtime::Handle,
    shared: Arc<Shared>,
    turn: Pin<Box<dyn Future<Output = TurnResult> + Send>>,
    live: LiveTask,
) {
    let theirs = Arc::clone(&shared);
    let task = handle.spawn(async move {
        let _live = live;
        let result = AssertUnwindSafe(turn)
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(panicked()));
        theirs.deliver(result);
    });
    let mut slot = shared.lock();
    if slot.dropped {
        drop(slot);
        task.abort();
    } else {
        slot.task = Some(task.abort_handle());
    }
}

/// The front thread and the one turn waiting for it.
struct Front {
    next: Mutex<FrontState>,
    /// A turn waits in `next` (read without the lock while the thread lingers).
    has_next: AtomicBool,
    thread: OnceLock<Thread>,
}

#[derive(Default)]
struct FrontState {
    next: Option<Job>,
    /// Promised to a turn about to be handed over.
    reserved: bool,
    busy: bool,
    parked: bool,
}

impl Front {
    fn lock(&self) -> MutexGuard<'_, FrontState> {
        self.next.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves the front thread for one turn: `false` when it is busy or has a turn waiting
    /// (a turn never waits behind another).
    fn reserve(&self) -> bool {
        let mut state = self.lock();
        if state.busy || state.reserved || state.next.is_some() {
            return false;
        }
        state.reserved = true;
        true
    }

    /// Hands the reserved thread its turn.
    fn submit(&self, job: Job) {
        let mut state = self.lock();
        state.reserved = false;
        state.next = Some(job);
        self.has_next.store(true, Ordering::Release);
        let parked = std::mem::take(&mut state.parked);
        drop(state);
        if parked {
            if let Some(thread) = self.thread.get() {
                thread.unpark();
            }
        }
    }

    fn serve(&'static self) {
        let _ = self.thread.set(std::thread::current());
        let mut idle_since = Instant::now();
        loop {
            if self.has_next.load(Ordering::Acquire) {
                let job = {
                    let mut state = self.lock();
                    self.has_next.store(false, Ordering::Relaxed);
                    let job = state.next.take();
                    state.busy = job.is_some();
                    job
                };
                if let Some(job) = job {
                    // A turn's own panics are caught inside it; this keeps the thread alive
                    // whatever happens.
                    let _ = catch_unwind(AssertUnwindSafe(job));
                    self.lock().busy = false;
                    idle_since = Instant::now();
                }
                continue;
            }
            if idle_since.elapsed() < LINGER {
                for _ in 0..32 {
                    std::hint::spin_loop();
                }
                continue;
            }
            {
                let mut state = self.lock();
                if state.next.is_some() {
                    continue;
                }
                state.parked = true;
            }
            // Unparked by `submit` (or spuriously: the loop looks again).
            std::thread::park();
            self.lock().parked = false;
            idle_since = Instant::now();
        }
    }
}

/// The front thread, started by the first spawned turn; `None` if it could not be started.
fn front() -> Option<&'static Front> {
    static FRONT: OnceLock<Front> = OnceLock::new();
    static STARTED: OnceLock<bool> = OnceLock::new();
    let front = FRONT.get_or_init(|| Front {
        next: Mutex::new(FrontState::default()),
        has_next: AtomicBool::new(false),
        thread: OnceLock::new(),
    });
    let started = *STARTED.get_or_init(|| {
        std::thread::Builder::new()
            .name("agent-runtime-front".to_owned())
            .spawn(move || front.serve())
            .is_ok()
    });
    started.then_some(front)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::spawn_turn;
    use crate::plugin::turns::Turns;
    use crate::{RuntimeError, TurnOutput};

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio")
            .block_on(future)
    }

    #[test]
    fn a_turn_ready_at_once_and_one_that_waits_both_deliver() {
        let turns = Arc::new(Turns::default());
        let ready = spawn_turn(&turns, async { Ok(TurnOutput::new("now")) }).unwrap();
        assert_eq!(block_on(ready).unwrap().content, "now");
        let waits = spawn_turn(&turns, async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(TurnOutput::new("later"))
        })
        .unwrap();
        assert_eq!(block_on(waits).unwrap().content, "later");
        let error = spawn_turn(&turns, async { Err(RuntimeError::internal("no")) }).unwrap();
        assert_eq!(block_on(error).unwrap_err().message, "no");
        block_on(Arc::clone(&turns).wait_idle());
    }

    #[test]
    fn a_dropped_turn_is_stopped_and_released() {
        let turns = Arc::new(Turns::default());
        let finished = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&finished);
        let turn = spawn_turn(&turns, async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            flag.store(true, Ordering::SeqCst);
            Ok(TurnOutput::new("never"))
        })
        .unwrap();
        drop(turn);
        // Released: every task of the runtime object is dropped, without its 30 s passing.
        block_on(async {
            tokio::time::timeout(Duration::from_secs(10), Arc::clone(&turns).wait_idle())
                .await
                .expect("the dropped turn is released");
        });
        assert!(!finished.load(Ordering::SeqCst));
    }

    #[test]
    fn turns_do_not_wait_behind_one_that_blocks_its_first_poll() {
        let turns = Arc::new(Turns::default());
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        // Blocks whichever thread polls it first, until released.
        let blocking = spawn_turn(&turns, async move {
            let _ = blocked.recv_timeout(Duration::from_secs(10));
            Ok(TurnOutput::new("blocked"))
        })
        .unwrap();
        for _ in 0..3 {
            let quick = spawn_turn(&turns, async { Ok(TurnOutput::new("quick")) }).unwrap();
            assert_eq!(block_on(quick).unwrap().content, "quick");
        }
        release.send(()).unwrap();
        assert_eq!(block_on(blocking).unwrap().content, "blocked");
    }
}
