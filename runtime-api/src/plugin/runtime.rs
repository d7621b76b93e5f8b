//! The plugin's own tokio runtime.
//!
//! Each plugin library carries its own copy of tokio, whose thread-local "current runtime" is
//! empty: the host's runtime lives in the host's copy. Without help, `tokio::time::sleep` or a
//! `TcpStream` in plugin code panics with "there is no reactor running". The glue therefore
//! enters this runtime around every poll of a plugin future or stream; its worker threads
//! drive timers and I/O and wake the host's tasks through the wakers they were polled with.

use std::sync::OnceLock;

use tokio::runtime::{Builder, EnterGuard, Handle, Runtime};

static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();

/// Worker threads of a plugin's runtime; `AGENT_RUNTIMES_PLUGIN_THREADS` overrides it.
const DEFAULT_THREADS: usize = 2;

fn build() -> Option<Runtime> {
    let threads = std::env::var("AGENT_RUNTIMES_PLUGIN_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| (1..=64).contains(n))
        .unwrap_or(DEFAULT_THREADS);
    match Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("agent-runtime-plugin")
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(error) => {
            tracing::error!(%error, "could not start the plugin's tokio runtime");
            None
        }
    }
}

/// The plugin's runtime handle, started on first use; `None` if it could not be started.
pub(crate) fn handle() -> Option<&'static Handle> {
    RUNTIME.get_or_init(build).as_ref().map(Runtime::handle)
}

/// Enters the plugin's runtime unless a runtime of this tokio copy is already current (as it
/// is when the runtime is compiled into the host itself).
pub(crate) fn enter() -> Option<EnterGuard<'static>> {
    if Handle::try_current().is_ok() {
        return None;
    }
    RUNTIME.get_or_init(build).as_ref().map(Runtime::enter)
}
