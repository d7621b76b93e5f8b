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

/// System folders read (never executed from: programs are granted one by one).
const SYSTEM_READ: &[&str] = &[
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/lib",
    "/lib64",
    "/usr/share/zoneinfo",
    "/usr/share/ca-certificates",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/host.conf",
    "/etc/services",
    "/etc/localtime",
    "/dev/zero",
    "/dev/urandom",
    "/dev/random",
    "/proc/self",
];

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
    for path in SYSTEM_READ {
        created = add_path(created, Path::new(path), read, &fs)?;
    }
    created = add_path(created, Path::new("/dev/null"), file_write(), &fs)?;
    if let Some(file) = library {
        created = created
            .add_rule(PathBeneath::new(file, file_read))
            .map_err(&fs)?;
    }
    for path in &policy.read {
        created = add_path(created, path, read, &fs)?;
    }
    for path in &policy.write {
        created = add_path(created, path, write, &fs)?;
    }
    if !policy.run.is_empty() {
        let run = AccessFs::Execute | AccessFs::ReadFile;
        for path in policy.run.iter().map(PathBuf::as_path) {
            created = add_path(created, path, run, &fs)?;
        }
        for path in LOADERS {
            created = add_path(created, Path::new(path), run, &fs)?;
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
fn add_path(
    created: landlock::RulesetCreated,
    path: &Path,
    access: BitFlags<AccessFs>,
    fs: &impl Fn(landlock::RulesetError) -> SandboxError,
) -> Result<landlock::RulesetCreated, SandboxError> {
    let Ok(fd) = PathFd::new(path) else {
        return Ok(created);
    };
    let access = if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        access
    } else {
        access & AccessFs::from_file(TARGET)
    };
    created.add_rule(PathBeneath::new(fd, access)).map_err(fs)
}
