//! Finding the worker executable and starting it: a clean environment, no inherited
//! descriptors, its own process group, a memory limit, and death with its host.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use crate::options::ProcessOptions;

/// The worker executable's file name.
pub const WORKER_NAME: &str = "runtimes-worker";

/// The environment variable naming the worker executable.
pub const WORKER_ENV: &str = "AGENT_RUNTIMES_WORKER";

/// Where the worker executable is: [`ProcessOptions::worker`], then `AGENT_RUNTIMES_WORKER`,
/// then `runtimes-worker` beside the current executable (or in its parent folder, where
/// `cargo test` puts test binaries one level down), then on `PATH`.
///
/// # Errors
///
/// Where it looked, when it found none.
pub fn find_worker(options: &ProcessOptions) -> Result<PathBuf, String> {
    let mut looked = Vec::new();
    if let Some(path) = options.worker {
        return executable(path).then(|| path.to_owned()).ok_or_else(|| {
            format!(
                "the configured worker {} is not an executable file",
                path.display()
            )
        });
    }
    if let Some(path) = std::env::var_os(WORKER_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return executable(&path)
            .then_some(path.clone())
            .ok_or_else(|| format!("{WORKER_ENV}={} is not an executable file", path.display()));
    }
    let name = format!("{WORKER_NAME}{}", std::env::consts::EXE_SUFFIX);
    if let Ok(current) = std::env::current_exe() {
        for dir in current.ancestors().skip(1).take(2) {
            let candidate = dir.join(&name);
            if executable(&candidate) {
                return Ok(candidate);
            }
            looked.push(dir.display().to_string());
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(&name);
            if executable(&candidate) {
                return Ok(candidate);
            }
        }
        looked.push("PATH".to_owned());
    }
    Err(format!(
        "no `{name}` found (looked in {}): install it with `cargo xtask install` or `cargo install --locked --path loader` from a checkout of agent-runtimes, or name it in {WORKER_ENV} or LoaderOptions::process.worker",
        looked.join(", ")
    ))
}

fn executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// The names of the environment variables a configuration asks for: the string values of its
/// keys that end in `_env` (such as `api_key_env`), at any depth.
pub fn env_names(config: &serde_json::Value, names: &mut Vec<String>) {
    match config {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match value {
                    serde_json::Value::String(name) if key.ends_with("_env") => {
                        names.push(name.clone());
                    }
                    other => env_names(other, names),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| env_names(v, names)),
        _ => {}
    }
}

/// A command for the worker: stdin and stdout carry the protocol, stderr is kept for crash
/// reports; only the named environment variables are passed. `library`, when given, is the
/// host's checked open library file, which the worker inherits as descriptor
/// [`LIBRARY_FD`](crate::protocol::LIBRARY_FD) (and nothing else above stderr).
pub fn command(
    worker: &Path,
    options: &ProcessOptions,
    env: &[String],
    library: Option<std::os::fd::RawFd>,
    policy: Option<&crate::sandbox::Policy>,
) -> Result<tokio::process::Command, String> {
    let mut command = tokio::process::Command::new(worker);
    if let Some(policy) = policy {
        let json = serde_json::to_string(policy).map_err(|e| e.to_string())?;
        command.arg(crate::sandbox::POLICY_ARG).arg(json);
    }
    let processes = policy.and(options.max_processes);
    command
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for name in env
        .iter()
        .map(String::as_str)
        .chain(options.pass_env.iter().copied())
    {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    // After the variables passed: the runtime's private folder wins over a host's TMPDIR.
    if let Some(tmp) = policy.and_then(|p| p.tmp.as_ref()) {
        command.env("TMPDIR", tmp);
    }
    #[cfg(unix)]
    {
        command.process_group(0);
        let limit = options.memory_limit;
        let host = rustix::process::getpid();
        // SAFETY: the closure runs in the child between fork and exec, where only
        // async-signal-safe calls are allowed: it makes raw system calls only (prctl, getppid,
        // setrlimit, close_range, dup2, fcntl), allocates nothing and takes no lock.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(move || child_setup(host, limit, processes, library));
        }
    }
    Ok(command)
}

/// In the child, before exec: die with the host, at most `limit` bytes of address space, and
/// every descriptor above stderr closed at exec.
#[cfg(unix)]
fn child_setup(
    host: rustix::process::Pid,
    limit: Option<u64>,
    processes: Option<u64>,
    library: Option<std::os::fd::RawFd>,
) -> std::io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
        // The host may have died between fork and prctl: then no signal would come.
        if rustix::process::getppid() != Some(host) {
            return Err(std::io::Error::other("the host exited"));
        }
        // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only marks descriptors; it reads
        // and writes no memory of this process. An old kernel without it returns an error,
        // which is ignored: the descriptors Rust opens are close-on-exec already.
        #[allow(unsafe_code)]
        let _ = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
    }
    if let Some(fd) = library {
        inherit_at(fd, crate::protocol::LIBRARY_FD)?;
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = host;
    use crate::sandbox::rlimits::set;
    use rustix::process::Resource;
    if let Some(bytes) = limit {
        set(Resource::As, bytes)?;
    }
    set(Resource::Core, 0)?;
    if let Some(count) = processes {
        set(Resource::Nproc, count)?;
    }
    Ok(())
}

/// Makes descriptor `fd` of the host's (open in the child after fork) descriptor `at` of the
/// worker, kept open across exec.
#[cfg(unix)]
fn inherit_at(fd: std::os::fd::RawFd, at: std::os::fd::RawFd) -> std::io::Result<()> {
    let result = if fd == at {
        // SAFETY: fcntl(F_SETFD, 0) on a descriptor number clears its close-on-exec flag; it
        // touches no memory of this process. A bad number is an error, returned.
        #[allow(unsafe_code)]
        unsafe {
            libc::fcntl(at, libc::F_SETFD, 0)
        }
    } else {
        // SAFETY: dup2 makes `at` a copy of `fd` (without close-on-exec), closing what `at` was
        // in this child; no Rust object of the child owns `at` (the child only execs next).
        #[allow(unsafe_code)]
        unsafe {
            libc::dup2(fd, at)
        }
    };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// How a worker ended, in words: "killed by SIGSEGV", "exited with status 3".
pub fn describe_exit(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let name = signal_name(signal);
            let core = if status.core_dumped() {
                " (core dumped)"
            } else {
                ""
            };
            return format!("killed by {name}{core}");
        }
    }
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => format!("ended ({status})"),
    }
}

#[cfg(unix)]
fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGSYS => "SIGSYS",
        libc::SIGXCPU => "SIGXCPU",
        other => return format!("signal {other}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn env_names_are_found_at_any_depth() {
        let mut names = Vec::new();
        env_names(
            &json!({"api_key_env": "OPENAI_API_KEY", "nested": [{"token_env": "T"}], "x_env": 3}),
            &mut names,
        );
        names.sort();
        assert_eq!(names, ["OPENAI_API_KEY", "T"]);
    }

    #[cfg(unix)]
    #[test]
    fn exits_are_described() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            describe_exit(ExitStatus::from_raw(3 << 8)),
            "exited with status 3"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(libc::SIGSEGV)),
            "killed by SIGSEGV"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(libc::SIGABRT)),
            "killed by SIGABRT"
        );
    }
}
