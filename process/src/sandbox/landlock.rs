//! Landlock: the filesystem, TCP and scoping rules of a worker (the `landlock` crate, by
//! Landlock's author).
//!
//! Readable: system libraries and configuration the dynamic loader, TLS and name resolution
//! need, `/proc/self`, `/dev/null`, `/dev/zero`, `/dev/urandom`, the plugin file (through its
//! inherited descriptor) and what is granted. Writable: `/dev/null` and what is granted.
//! Executable: the granted programs and the dynamic loader they need. Rules name files, not
//! paths, so a symlink in a granted folder that leads outside it reaches nothing.

use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath,
    PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};

use super::{Mechanism, Net, Policy, SandboxError};

/// The ABI this sandbox is written for: filesystem, TCP and scoping.
const TARGET: ABI = ABI::V6;

/// The dynamic loaders a granted program may need (executed by the kernel with the program).
const LOADERS: &[&str] = &[
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/ld-linux-aarch64.so.1",
    "/lib/ld-linux-x86-64.so.2",
];

/// Whether this kernel provides `mechanism`: a ruleset that requires it can be created.
pub fn available(mechanism: Mechanism) -> bool {
    let ruleset = Ruleset::default().set_compatibility(CompatLevel::HardRequirement);
    let ruleset = match mechanism {
        Mechanism::LandlockFs => ruleset.handle_access(AccessFs::from_all(ABI::V1)),
        Mechanism::LandlockNet => ruleset.handle_access(AccessNet::from_all(ABI::V4)),
        Mechanism::LandlockScope => ruleset.scope(Scope::from_all(ABI::V6)),
        Mechanism::Seccomp | Mechanism::Namespaces => return false,
    };
    ruleset.and_then(|r| r.create()).is_ok()
}

fn setup(mechanism: Mechanism) -> impl Fn(landlock::RulesetError) -> SandboxError {
    move |e| SandboxError::Setup {
        mechanism,
        detail: e.to_string(),
    }
}

/// Restricts this thread (and every thread and process it starts from now on) to `policy`.
/// Returns notes on what could not be enforced when the policy accepts a weaker sandbox.
///
/// # Errors
///
/// When a rule the policy relies on cannot be enforced and weaker is not accepted.
pub fn restrict(
    policy: &Policy,
    library: Option<&std::fs::File>,
) -> Result<Vec<String>, SandboxError> {
    let level = if policy.accept_weaker {
        CompatLevel::BestEffort
    } else {
        CompatLevel::HardRequirement
    };
    let fs = setup(Mechanism::LandlockFs);
    let mut ruleset = Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::from_all(TARGET))
        .map_err(&fs)?
        .scope(Scope::from_all(TARGET))
        .map_err(setup(Mechanism::LandlockScope))?;
    if policy.net != Net::Any {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(TARGET))
            .map_err(setup(Mechanism::LandlockNet))?;
    }
    let mut created = ruleset.create().map_err(&fs)?;
    let read = AccessFs::from_read(TARGET);
    let write = AccessFs::from_all(TARGET) & !AccessFs::Execute;
    let file_read = AccessFs::from_file(TARGET) & read;
    for path in super::SYSTEM_READ {
        created = add_path(created, Path::new(path), read, Follow::Yes, &fs)?;
    }
    created = add_path(
        created,
        Path::new("/dev/null"),
        file_write(),
        Follow::Yes,
        &fs,
    )?;
    if let Some(file) = library {
        created = created
            .add_rule(PathBeneath::new(file, file_read))
            .map_err(&fs)?;
    }
    for path in &policy.read {
        created = add_path(created, path, read, Follow::No, &fs)?;
    }
    for path in &policy.write {
        created = add_path(created, path, write, Follow::No, &fs)?;
    }
    if !policy.run.is_empty() {
        let run = AccessFs::Execute | AccessFs::ReadFile;
        for path in policy.run.iter().map(PathBuf::as_path) {
            created = add_path(created, path, run, Follow::No, &fs)?;
        }
        for path in LOADERS {
            created = add_path(created, Path::new(path), run, Follow::Yes, &fs)?;
        }
    }
    if let Net::Ports(ports) = &policy.net {
        let dns = policy.dns.then_some(super::net::DNS_PORT);
        for port in ports.iter().chain(dns.as_ref()) {
            created = created
                .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
                .map_err(setup(Mechanism::LandlockNet))?;
        }
    }
    let status = created.restrict_self().map_err(&fs)?;
    let mut notes = Vec::new();
    match status.ruleset {
        RulesetStatus::FullyEnforced => {}
        RulesetStatus::PartiallyEnforced => {
            notes.push("Landlock is only partly enforced by this kernel".to_owned());
        }
        RulesetStatus::NotEnforced => {
            notes.push("Landlock is not enforced by this kernel".to_owned())
        }
    }
    Ok(notes)
}

fn file_write() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::WriteFile
}

/// A rule for `path` when it exists (a missing system path is skipped; a missing grant too:
/// nothing there to reach). Rules on a file keep only the rights that apply to files.
/// Whether a rule's path may pass through symlinks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Follow {
    /// System paths (root's: `/lib` and `/etc/resolv.conf` are often symlinks).
    Yes,
    /// Grants: the host resolved them (`ProcessOptions::policy_for`), so a symlink in one now
    /// was put there since, possibly by a plugin, to point a grant somewhere else.
    No,
}

fn add_path(
    created: landlock::RulesetCreated,
    path: &Path,
    access: BitFlags<AccessFs>,
    follow: Follow,
    fs: &impl Fn(landlock::RulesetError) -> SandboxError,
) -> Result<landlock::RulesetCreated, SandboxError> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let opened = match follow {
        Follow::Yes => PathFd::new(path).map(OwnedOrPath::Path).ok(),
        Follow::No => match rustix::fs::openat2(
            rustix::fs::CWD,
            path,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS,
        ) {
            Ok(fd) => Some(OwnedOrPath::Owned(fd)),
            Err(rustix::io::Errno::NOENT) => None,
            // Kernels before 5.6: the path as given (symlinks followed).
            Err(rustix::io::Errno::NOSYS) => PathFd::new(path).map(OwnedOrPath::Path).ok(),
            Err(error) => {
                return Err(SandboxError::Setup {
                    mechanism: Mechanism::LandlockFs,
                    detail: format!(
                        "the granted path {} cannot be opened without following a symlink ({error}): a symlink appeared in it after the host resolved it, so it is not granted",
                        path.display()
                    ),
                });
            }
        },
    };
    let Some(fd) = opened else {
        return Ok(created);
    };
    let is_dir = rustix::fs::fstat(&fd).is_ok_and(|stat| {
        rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Directory
    });
    let access = if is_dir {
        access
    } else {
        access & AccessFs::from_file(TARGET)
    };
    created.add_rule(PathBeneath::new(fd, access)).map_err(fs)
}

/// An opened rule path: by `openat2` or by the `landlock` crate.
enum OwnedOrPath {
    Owned(std::os::fd::OwnedFd),
    Path(PathFd),
}

impl std::os::fd::AsFd for OwnedOrPath {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            OwnedOrPath::Owned(fd) => fd.as_fd(),
            OwnedOrPath::Path(fd) => fd.as_fd(),
        }
    }
}
