//! The process level's own async runtime, and locking that survives a poisoned mutex.

use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

/// Locks a mutex, whether or not a panic poisoned it (every value kept under one stays valid
/// between statements).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The runtime that runs every worker's I/O: one thread of its own, alive for the life of the
/// process. Workers are spawned from it, so the thread their death signal is tied to
/// (`PR_SET_PDEATHSIG` follows the thread that forked) never exits before the host.
pub fn io_runtime() -> Result<&'static tokio::runtime::Handle, String> {
    static HANDLE: OnceLock<Result<tokio::runtime::Handle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("could not start the process level's runtime: {e}"))?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name("runtimes-process-io".to_owned())
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
                .map_err(|e| format!("could not start the process level's thread: {e}"))?;
            Ok(handle)
        })
        .as_ref()
        .map_err(Clone::clone)
}
