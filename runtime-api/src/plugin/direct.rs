//! A runtime compiled into the host, called with the public types: its inline turns skip the
//! conversions to the boundary's types and back, and keep every guarantee a plugin's turn has
//! (plugin code polled and dropped inside its scope with panics caught, registered for
//! cancellation by execution id before the turn is handed out, released when it ends).

use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::sync::Arc;

use crate::{Runtime, RuntimeError, TurnOutput, TurnRequest};

use super::glue::start_turn;
use super::guarded::guard;
use super::turns::{CancellableTurn, Turns};

/// An inline turn of a runtime compiled into the host: one allocation for the whole turn.
pub(crate) type DirectTurn =
    Pin<Box<dyn Future<Output = Result<TurnOutput, RuntimeError>> + Send + 'static>>;

/// The turns of a runtime compiled into the host, without the boundary.
pub(crate) trait DirectRuntime: Send + Sync {
    /// Starts an inline turn, registered for cancellation by id before this returns.
    fn run_turn(&self, request: TurnRequest) -> DirectTurn;
}

/// A runtime object's direct side: the same runtime and running turns as its glue, so
/// `cancel(execution id)` through the runtime object reaches direct turns too.
pub(crate) struct Direct<T: Runtime> {
    /// Dropped by hand in `Drop`, inside a guard: this may hold the last reference, and the
    /// author's destructor may panic.
    runtime: ManuallyDrop<Arc<T>>,
    turns: Arc<Turns>,
}

impl<T: Runtime> Direct<T> {
    pub(super) fn new(runtime: Arc<T>, turns: Arc<Turns>) -> Self {
        Self {
            runtime: ManuallyDrop::new(runtime),
            turns,
        }
    }
}

impl<T: Runtime> Drop for Direct<T> {
    fn drop(&mut self) {
        let runtime = &mut self.runtime;
        let _ = guard(T::ID, "the runtime's destructor", true, || {
            // SAFETY: `runtime` is dropped exactly once, here, and `self` is never used again.
            unsafe { ManuallyDrop::drop(runtime) }
        });
    }
}

impl<T: Runtime> DirectRuntime for Direct<T> {
    fn run_turn(&self, request: TurnRequest) -> DirectTurn {
        let (guarded, ticket) = start_turn(&self.runtime, &self.turns, request);
        Box::pin(CancellableTurn::new(guarded, ticket))
    }
}
