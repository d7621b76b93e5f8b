//! The worker's resource limits, set between fork and exec (async-signal-safe system calls
//! only): address space, core files, processes.

/// The default address-space limit of a worker: 4 GiB (`AGENT_RUNTIMES_WORKER_MEMORY` or
/// [`ProcessOptions::memory_limit`](crate::ProcessOptions::memory_limit) change it).
pub const DEFAULT_MEMORY: u64 = 4 << 30;

/// The default cap on processes (and threads) of the worker's user while a sandboxed worker
/// runs (`RLIMIT_NPROC`). The kernel does not apply it to root.
pub const DEFAULT_PROCESSES: u64 = 1024;

/// Sets one limit, soft and hard.
#[cfg(unix)]
pub fn set(resource: rustix::process::Resource, value: u64) -> std::io::Result<()> {
    rustix::process::setrlimit(
        resource,
        rustix::process::Rlimit {
            current: Some(value),
            maximum: Some(value),
        },
    )?;
    Ok(())
}
