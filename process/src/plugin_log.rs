//! Plugin log events re-emitted in the host's subscriber, from a plugin loaded in this process
//! (the loader's log sink) or forwarded by a worker process.

/// The `tracing` target of re-emitted plugin events.
pub const PLUGIN_LOG_TARGET: &str = "agent_runtimes::plugin";

/// Re-emits one plugin event in the host's subscriber: from a plugin loaded in this process,
/// or forwarded by a worker process.
pub fn emit(
    level: u8,
    plugin: &str,
    runtime: &str,
    execution_id: &str,
    plugin_target: &str,
    fields: &str,
    message: &str,
) {
    macro_rules! emit {
        ($level:expr) => {
            tracing::event!(
                target: "agent_runtimes::plugin",
                $level,
                plugin,
                runtime,
                execution_id,
                plugin_target,
                fields,
                "{message}"
            )
        };
    }
    match level {
        1 => emit!(tracing::Level::ERROR),
        2 => emit!(tracing::Level::WARN),
        3 => emit!(tracing::Level::INFO),
        4 => emit!(tracing::Level::DEBUG),
        _ => emit!(tracing::Level::TRACE),
    }
}
