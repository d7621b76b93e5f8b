//! Lifecycle hooks a host installs around every turn, and the list a registry keeps of them.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use runtime_api::{RuntimeError, TurnOutput, TurnRequest};

/// The turn a hook is called about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TurnContext {
    /// The runtime's id.
    pub runtime_id: String,
    /// The turn's execution id.
    pub execution_id: String,
    /// Whether the turn is streamed.
    pub streamed: bool,
}

/// Called around every turn of every runtime resolved from the registry.
///
/// Hooks observe; they cannot change a turn. A panicking hook is caught and logged, and the
/// turn goes on.
///
/// # Examples
///
/// ```
/// use runtime_loader::{TurnContext, TurnHook};
/// use runtime_api::TurnOutput;
///
/// struct CountTokens(std::sync::atomic::AtomicU64);
///
/// impl TurnHook for CountTokens {
///     fn after_turn(&self, _turn: &TurnContext, output: &TurnOutput) {
///         self.0.fetch_add(output.usage.total_tokens, std::sync::atomic::Ordering::Relaxed);
///     }
/// }
/// ```
pub trait TurnHook: Send + Sync + 'static {
    /// Before the request goes to the runtime.
    fn before_turn(&self, _turn: &TurnContext, _request: &TurnRequest) {}

    /// After the turn succeeded (for a stream: when its final item arrives).
    fn after_turn(&self, _turn: &TurnContext, _output: &TurnOutput) {}

    /// After the turn failed (including timeouts, cancellations and capability refusals).
    fn on_error(&self, _turn: &TurnContext, _error: &RuntimeError) {}
}

/// The hooks installed on a registry, shared with every handle it resolves. Hooks are only
/// ever added, so "none installed" is one flag: a turn without hooks does no hook work at all.
pub(crate) struct HookList {
    list: RwLock<Arc<[Arc<dyn TurnHook>]>>,
    any: AtomicBool,
}

impl Default for HookList {
    fn default() -> Self {
        Self {
            list: RwLock::new(Arc::from(Vec::new())),
            any: AtomicBool::new(false),
        }
    }
}

impl HookList {
    /// Adds a hook; turns started from now on call it.
    pub(crate) fn add(&self, hook: Arc<dyn TurnHook>) {
        let mut hooks = self.list.write().unwrap_or_else(PoisonError::into_inner);
        let mut list: Vec<Arc<dyn TurnHook>> = hooks.iter().cloned().collect();
        list.push(hook);
        *hooks = Arc::from(list);
        self.any.store(true, Ordering::Release);
    }

    /// The hooks a turn starting now calls, from its start to its end; `None` when none is
    /// installed.
    pub(crate) fn snapshot(&self) -> Option<Arc<[Arc<dyn TurnHook>]>> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        Some(Arc::clone(
            &self.list.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

/// Calls every hook, catching a panicking one so the turn goes on.
pub(crate) fn call_hooks(hooks: &[Arc<dyn TurnHook>], what: &str, f: impl Fn(&dyn TurnHook)) {
    for hook in hooks {
        if catch_unwind(AssertUnwindSafe(|| f(hook.as_ref()))).is_err() {
            tracing::error!(hook = what, "a turn hook panicked; the turn goes on");
        }
    }
}
