//! Lifecycle hooks a host installs around every turn.

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
