//! Namespaces for workers (Linux, no root needed): each sandboxed worker runs in new user, PID
//! and IPC namespaces, and in a new network namespace when it is granted no network.
//!
//! The worker executable enters them itself, first thing in its `main`, while it has one
//! thread: `unshare(CLONE_NEWPID)` applies only to the children of the caller, and a process
//! that has called it can no longer start threads. So it unshares, maps its own user and group
//! one to one (the only mapping an unprivileged process may write), and forks twice:
//!
//! ```text
//! host ── relay (the process the host started; outside the PID namespace, one thread)
//!           └── init (PID 1 of the namespace; one thread)
//!                 └── worker (PID 2: the protocol, Landlock, seccomp, the plugin)
//! ```
//!
//! - When init ends, the kernel kills every process left in the namespace: whatever the plugin
//!   started, `setsid` daemons included. Init ends when the worker does.
//! - The relay dies with the host (`PR_SET_PDEATHSIG`, set between fork and exec), init with the
//!   relay (the same), so a host that is SIGKILLed takes the whole namespace along.
//! - Init reaps every orphan that reaches it (a plugin's daemons after `setsid`), so none stays
//!   a zombie; the worker's own children stay its own, for the plugin to wait for.
//! - The relay ends as the worker did: with its exit code, or killed by the signal that killed
//!   it (init passes the worker's wait status through a pipe: the init of a namespace cannot
//!   kill itself with a signal).
//! - The worker keeps no capability in its user namespace (bounding set emptied, then every
//!   set), so a program it starts gains none either; the seccomp filter applied after this bans
//!   new namespaces.
//!
//! The relay and init close their copies of the protocol pipes (stdin, stdout): the host sees
//! the worker's end of them close when the worker ends. Stderr stays shared, for their reports.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt as _;

use rustix::process::{Pid, Signal, WaitOptions};
use rustix::thread::UnshareFlags;

use super::{Mechanism, Net, Policy, SandboxError};

/// The namespaces a worker under `policy` gets.
fn flags(policy: &Policy) -> UnshareFlags {
    let mut flags = UnshareFlags::NEWUSER | UnshareFlags::NEWPID | UnshareFlags::NEWIPC;
    if policy.net == Net::None {
        flags |= UnshareFlags::NEWNET;
    }
    flags
}

fn setup(detail: impl std::fmt::Display) -> SandboxError {
    SandboxError::Setup {
        mechanism: Mechanism::Namespaces,
        detail: detail.to_string(),
    }
}

/// What to check when the kernel refuses user namespaces.
const HINT: &str = "unprivileged user namespaces may be turned off: see the sysctls user.max_user_namespaces, kernel.unprivileged_userns_clone (Debian) and kernel.apparmor_restrict_unprivileged_userns (Ubuntu), or a container's seccomp profile";

/// The steps of entering the namespaces, as the probe reports them.
const STEPS: [&str; 4] = [
    "unshare(CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWNET)",
    "writing /proc/self/setgroups",
    "writing /proc/self/uid_map",
    "writing /proc/self/gid_map",
];

/// The identity mappings of the calling process's user and group, with the files they go to
/// (read before `unshare`).
fn mappings() -> [(&'static std::ffi::CStr, Vec<u8>); 3] {
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    [
        (c"/proc/self/setgroups", b"deny".to_vec()),
        (
            c"/proc/self/uid_map",
            format!("{uid} {uid} 1\n").into_bytes(),
        ),
        (
            c"/proc/self/gid_map",
            format!("{gid} {gid} 1\n").into_bytes(),
        ),
    ]
}

/// Whether this kernel lets this user do what a worker does: enter new user, PID, IPC and
/// network namespaces and map itself in them (probed in a child process that exits at once).
///
/// # Errors
///
/// The step the kernel refused, and what to check.
pub fn probe() -> Result<(), String> {
    let mappings = mappings();
    let flags = (libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWNET)
        as libc::c_int;
    // SAFETY: fork copies only the calling thread of a (maybe) multi-threaded process; the
    // child then makes raw system calls only (unshare, open, write, close, _exit) on memory
    // prepared before the fork: it allocates nothing and takes no lock, as a child of a
    // multi-threaded process must.
    #[allow(unsafe_code)]
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: as above; the paths are NUL-terminated and the buffers live until _exit.
        #[allow(unsafe_code)]
        unsafe {
            if libc::unshare(flags) != 0 {
                libc::_exit(1);
            }
            for (step, (path, text)) in mappings.iter().enumerate() {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                let code = 2 + step as libc::c_int;
                if fd < 0 {
                    libc::_exit(code);
                }
                let written = libc::write(fd, text.as_ptr().cast(), text.len());
                if written < 0 || written as usize != text.len() {
                    libc::_exit(code);
                }
                libc::close(fd);
            }
            libc::_exit(0);
        }
    }
    let Some(child) = Pid::from_raw(child) else {
        return Err(format!(
            "could not start a probe process: {}",
            std::io::Error::last_os_error()
        ));
    };
    let status = loop {
        match rustix::process::waitpid(Some(child), WaitOptions::empty()) {
            Ok(Some((_, status))) => break status,
            Err(rustix::io::Errno::INTR) => {}
            Ok(None) | Err(_) => return Err("the probe process was lost".to_owned()),
        }
    };
    match status.exit_status() {
        Some(0) => Ok(()),
        Some(code) => {
            let step = usize::try_from(code - 1)
                .ok()
                .and_then(|i| STEPS.get(i))
                .unwrap_or(&"the probe");
            Err(format!("the kernel refused {step}: {HINT}"))
        }
        None => Err("the probe process was killed".to_owned()),
    }
}

/// Whether [`probe`] succeeds.
pub fn available() -> bool {
    probe().is_ok()
}

/// In the worker executable, first thing, on its only thread: enters the namespaces `policy`
/// calls for and returns in the worker (PID 2 of the new PID namespace); the relay and init
/// this leaves behind never return (they exit as the worker does). Returns a note instead,
/// unchanged, when the kernel refuses and the policy accepts a weaker sandbox.
///
/// # Errors
///
/// When the kernel refuses (and weaker is not accepted), or a step after `unshare` fails.
pub fn enter(policy: &Policy) -> Result<Option<String>, SandboxError> {
    let host = rustix::process::getppid();
    // Before `unshare`: after it, this process's ids read as the overflow id until mapped.
    let mappings = mappings();
    // SAFETY: `unshare` without CLONE_FILES shares no descriptor table; this process has one
    // thread (it is called first thing in `main`), so no other thread sees the change.
    #[allow(unsafe_code)]
    if let Err(error) = unsafe { rustix::thread::unshare_unsafe(flags(policy)) } {
        let detail = format!("{}: {error} ({HINT})", STEPS[0]);
        if policy.accept_weaker {
            return Ok(Some(format!(
                "no namespaces (accepted weaker sandbox): {detail}; processes the plugin starts may outlive it"
            )));
        }
        return Err(setup(detail));
    }
    for (path, text) in mappings {
        let path = path.to_string_lossy();
        std::fs::write(&*path, &text).map_err(|e| setup(format!("writing {path}: {e}")))?;
    }
    // The host's death signal, again (a change of credentials may reset it), then whether the
    // host is still there (it may have died before).
    die_with_parent(host).map_err(setup)?;
    let flags = rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK;
    // init → relay: the worker's wait status.
    let (status_r, status_w) = rustix::pipe::pipe_with(flags).map_err(setup)?;
    // relay → init: never written; its end closing says the relay is gone.
    let (alive_r, alive_w) = rustix::pipe::pipe_with(flags).map_err(setup)?;
    match fork().map_err(setup)? {
        Some(init) => {
            drop((status_w, alive_r));
            relay(init, &status_r, alive_w)
        }
        None => {
            drop((status_r, alive_w));
            // PID 1: dies with the relay, and stops here if the relay is gone already.
            let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
            if relay_gone(&alive_r) {
                std::process::exit(1);
            }
            let _ = rustix::thread::set_name(c"runtimes-init");
            match fork().map_err(setup)? {
                Some(worker) => {
                    drop(alive_r);
                    init(worker, &status_w)
                }
                None => {
                    drop((status_w, alive_r));
                    let _ = rustix::thread::set_name(c"runtimes-worker");
                    drop_capabilities().map_err(setup)?;
                    Ok(None)
                }
            }
        }
    }
}

/// `PR_SET_PDEATHSIG(SIGKILL)`, and an error when the parent (`parent`) is gone already.
fn die_with_parent(parent: Option<Pid>) -> Result<(), String> {
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
        .map_err(|e| format!("PR_SET_PDEATHSIG: {e}"))?;
    if rustix::process::getppid() != parent {
        return Err("the host exited".to_owned());
    }
    Ok(())
}

/// Forks this (single-threaded) process: `Some(child)` in the parent, `None` in the child.
fn fork() -> Result<Option<Pid>, String> {
    // SAFETY: this process has one thread (the namespaces are entered first thing in `main`,
    // before any thread starts), so the child is a whole copy of it, free to allocate and to
    // run any code; each side owns its copy of every descriptor.
    #[allow(unsafe_code)]
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    Ok(Pid::from_raw(pid))
}

/// Points stdin and stdout at `/dev/null`: only the worker holds the protocol pipes.
fn let_go_of_protocol() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = rustix::stdio::dup2_stdin(&null);
        let _ = rustix::stdio::dup2_stdout(&null);
    }
}

/// Whether the relay's end of the `alive` pipe is closed (the relay is gone).
fn relay_gone(alive: &OwnedFd) -> bool {
    let mut byte = [0u8; 1];
    matches!(rustix::io::read(alive.as_fd(), &mut byte), Ok(0))
}

/// Waits for any child, every kind (`__WALL`), retrying interrupted waits.
fn wait_any(pid: Option<Pid>) -> Option<(Pid, i32)> {
    let options = WaitOptions::from_bits_retain(libc::__WALL as u32);
    loop {
        match rustix::process::waitpid(pid, options) {
            Ok(Some((pid, status))) => return Some((pid, status.as_raw())),
            Err(rustix::io::Errno::INTR) => {}
            Ok(None) | Err(_) => return None,
        }
    }
}

/// PID 1: reaps every child until the worker ends, hands its wait status to the relay and
/// exits (the kernel then kills whatever is left in the namespace).
fn init(worker: Pid, status_w: &OwnedFd) -> ! {
    let_go_of_protocol();
    loop {
        match wait_any(None) {
            Some((pid, status)) if pid == worker => {
                let _ = rustix::io::write(status_w.as_fd(), &status.to_ne_bytes());
                std::process::exit(0);
            }
            Some(_) => {}
            None => std::process::exit(1),
        }
    }
}

/// The process the host started: waits for init, then ends as the worker did.
fn relay(init: Pid, status_r: &OwnedFd, alive_w: OwnedFd) -> ! {
    let_go_of_protocol();
    let own = wait_any(Some(init)).map_or(libc::SIGKILL, |(_, status)| status);
    drop(alive_w);
    let mut bytes = [0u8; 4];
    let status = match rustix::io::read(status_r.as_fd(), &mut bytes) {
        Ok(4) => i32::from_ne_bytes(bytes),
        _ => own,
    };
    let status = std::process::ExitStatus::from_raw(status);
    if let Some(signal) = status.signal() {
        // SAFETY: signal(2) with SIG_DFL installs no handler: it only undoes the handlers the
        // Rust runtime installed (SIGSEGV, SIGBUS: stack overflow detection), so that the
        // signal below ends this process as it ended the worker.
        #[allow(unsafe_code)]
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
        }
        if let Some(signal) = Signal::from_named_raw(signal) {
            let _ = rustix::process::kill_process(rustix::process::getpid(), signal);
        }
        std::process::exit(128 + signal);
    }
    std::process::exit(status.code().unwrap_or(1));
}

/// Drops every capability the new user namespace gave: the bounding set (so a program started
/// later gains none), then the effective, permitted and inheritable sets.
fn drop_capabilities() -> Result<(), String> {
    use rustix::thread::{CapabilitySet, CapabilitySets};
    for bit in 0..64 {
        let capability = CapabilitySet::from_bits_retain(1 << bit);
        match rustix::thread::remove_capability_from_bounding_set(capability) {
            // Past the last capability this kernel knows.
            Err(rustix::io::Errno::INVAL) => break,
            Err(error) => return Err(format!("PR_CAPBSET_DROP({bit}): {error}")),
            Ok(()) => {}
        }
    }
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: CapabilitySet::empty(),
            permitted: CapabilitySet::empty(),
            inheritable: CapabilitySet::empty(),
        },
    )
    .map_err(|e| format!("capset: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_network_means_a_network_namespace() {
        assert!(flags(&Policy::default()).contains(UnshareFlags::NEWNET));
        assert!(
            !flags(&Policy::default().with_net(Net::Ports(vec![80])))
                .contains(UnshareFlags::NEWNET)
        );
        assert!(!flags(&Policy::default().with_net(Net::Any)).contains(UnshareFlags::NEWNET));
        assert!(flags(&Policy::default()).contains(UnshareFlags::NEWUSER | UnshareFlags::NEWPID));
    }

    #[test]
    fn the_probe_answers_and_names_a_refused_step() {
        // Whatever this kernel allows, the probe ends and says so.
        match probe() {
            Ok(()) => {}
            Err(reason) => assert!(
                reason.contains("refused") || reason.contains("probe"),
                "{reason}"
            ),
        }
    }
}
