//! What is in force while plugin code runs: the id of the runtime whose code it is (for log
//! forwarding) and, for turns, the plugin's tokio runtime.

use std::cell::{Cell, RefCell};

use tokio::runtime::EnterGuard;

use super::turn_id::TurnId;

thread_local! {
    static CURRENT_RUNTIME: Cell<&'static str> = const { Cell::new("") };
    static CURRENT_TURN: RefCell<Option<TurnId>> = const { RefCell::new(None) };
}

/// The id of the runtime whose code runs on this thread right now, or `""`.
pub(crate) fn current_runtime_id() -> &'static str {
    CURRENT_RUNTIME.with(Cell::get)
}

/// Calls `f` with the execution id of the turn whose code runs on this thread, or `""`.
pub(crate) fn with_current_turn<R>(f: impl FnOnce(&str) -> R) -> R {
    CURRENT_TURN.with(|turn| match turn.try_borrow() {
        Ok(turn) => f(turn.as_ref().map_or("", TurnId::as_str)),
        Err(_) => f(""),
    })
}

/// Sets the execution id of the turn whose code runs on this thread until dropped.
pub(crate) struct TurnScope {
    previous: Option<TurnId>,
}

impl TurnScope {
    pub(crate) fn enter(execution_id: &TurnId) -> Self {
        let previous = CURRENT_TURN.with(|turn| {
            turn.try_borrow_mut()
                .map(|mut turn| turn.replace(execution_id.clone()))
                .unwrap_or(None)
        });
        TurnScope { previous }
    }
}

impl Drop for TurnScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT_TURN.with(|turn| {
            if let Ok(mut turn) = turn.try_borrow_mut() {
                *turn = previous;
            }
        });
    }
}

/// Sets the runtime id (and optionally enters the plugin's tokio runtime) until dropped.
pub(crate) struct Scope {
    previous: &'static str,
    _runtime: Option<EnterGuard<'static>>,
}

impl Scope {
    /// Enters the scope of `runtime_id`. With `tokio`, the plugin's tokio runtime is entered
    /// too (and started, the first time); calls that need no runtime (the factory, `info`,
    /// `cancel`) leave it alone, so an idle plugin has no thread of its own.
    pub(crate) fn enter(runtime_id: &'static str, tokio: bool) -> Self {
        let previous = CURRENT_RUNTIME.with(|c| c.replace(runtime_id));
        Scope {
            previous,
            _runtime: if tokio { super::runtime::enter() } else { None },
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        CURRENT_RUNTIME.with(|c| c.set(self.previous));
    }
}
