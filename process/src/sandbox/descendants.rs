//! No descendant outlives its worker. In a PID namespace ([`super::namespaces`]) the kernel
//! sees to it: when the namespace's init ends (with the worker, or with a host that died), every
//! process in it is killed. Without one (the kernel refused, and a weaker sandbox was
//! accepted), the worker is a child subreaper, so processes its plugin starts stay its
//! descendants even after `setsid` and a double fork; the worker ends them all when it exits,
//! and the host ends them all when it kills the worker; a worker killed because its host died
//! (`PR_SET_PDEATHSIG`) leaves them orphaned.

use rustix::process::{Pid, Signal};

/// The children of process `pid`, from `/proc/<pid>/task/*/children`.
fn children(pid: &str) -> Vec<Pid> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            found.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                    .filter_map(Pid::from_raw),
            );
        }
    }
    found
}

/// Makes this process the reaper of its orphaned descendants.
pub fn become_subreaper() {
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
}

/// In the worker: kills and reaps every descendant (orphans reparent to this subreaper as
/// their parents die, so rounds repeat until none is left).
pub fn end_own() {
    for _ in 0..64 {
        let found = children("self");
        if found.is_empty() {
            return;
        }
        for pid in &found {
            let _ = rustix::process::kill_process(*pid, Signal::KILL);
        }
        for pid in found {
            let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
        }
    }
}

/// In the host, before killing worker `worker`: kills every descendant of it (the worker,
/// still alive, adopts the orphans, so rounds repeat until none is left).
pub fn end_of(worker: Pid) {
    let mut rounds = 0;
    loop {
        let mut tree = Vec::new();
        let mut frontier = children(&worker.as_raw_nonzero().to_string());
        while let Some(pid) = frontier.pop() {
            frontier.extend(children(&pid.as_raw_nonzero().to_string()));
            tree.push(pid);
        }
        if tree.is_empty() || rounds == 64 {
            return;
        }
        for pid in tree {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
        rounds += 1;
    }
}
