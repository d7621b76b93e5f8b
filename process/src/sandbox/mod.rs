//! The process level as a sandbox (Linux): what a worker may do, and the kernel mechanisms that
//! hold it to that.
//!
//! The host builds a [`Policy`] from what the runtime declares and what the operator grants,
//! and passes it to the worker on its command line. The worker applies it to itself on its
//! first thread, before any other thread exists and before the plugin library is opened, so
//! every thread and every descendant inherits it:
//! - new user, PID, IPC and (no network granted) network namespaces, entered first thing in
//!   the worker's `main` ([`namespaces`]): the worker is PID 2 under an init of ours, and no
//!   process the plugin starts outlives it, even when the host is SIGKILLed;
//! - rlimits (set between fork and exec, where the worker is spawned): address space, no core
//!   files, a process cap ([`rlimits`]);
//! - `no_new_privs`;
//! - Landlock ([`landlock`]): the filesystem limited to system libraries (read), the plugin
//!   file, `/proc/self`, a few devices and what is granted; TCP connect and bind denied except
//!   granted ports (ABI 4); signals and abstract unix sockets scoped to the sandbox (ABI 6), so
//!   the worker cannot signal its host;
//! - a seccomp filter ([`seccomp`]): `ptrace`, `process_vm_readv`/`writev`, `mount`, `bpf`,
//!   `keyctl`, `perf_event_open`, new namespaces, `io_uring` and more return `EPERM`.
//!
//! The host makes itself non-dumpable ([`protect_host`]), so no process of the same user can
//! read its memory or environment through `/proc`.
//!
//! Missing kernel support fails closed ([`check_support`]): the runtime is refused with what is
//! missing, unless the operator accepts a weaker sandbox ([`ProcessOptions::accept_weaker_sandbox`](crate::ProcessOptions::accept_weaker_sandbox)).

#[cfg(target_os = "linux")]
pub mod descendants;
#[cfg(target_os = "linux")]
pub mod landlock;
#[cfg(target_os = "linux")]
pub mod namespaces;
pub mod net;
pub mod rlimits;
#[cfg(target_os = "linux")]
pub mod seccomp;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What every worker may read besides its grants: what the dynamic loader, TLS and name
/// resolution need (never executed from: programs are granted one by one). Certificates, not
/// private keys: `/etc/ssl/private` and `/etc/pki/tls/private` stay out of reach.
pub const SYSTEM_READ: &[&str] = &[
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
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/pki/tls/certs",
    "/etc/pki/tls/cert.pem",
    "/etc/pki/ca-trust/extracted",
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

/// The command-line flag before the worker's policy (JSON).
pub const POLICY_ARG: &str = "--sandbox";

/// The environment variable that accepts a weaker sandbox than the grants rely on (`1`).
pub const ACCEPT_WEAKER_ENV: &str = "AGENT_RUNTIMES_ACCEPT_WEAKER_SANDBOX";

/// Network access granted to a worker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Net {
    /// No TCP connect or bind at all.
    #[default]
    None,
    /// TCP connect to these ports only (any host: Landlock filters by port, not by host).
    Ports(Vec<u16>),
    /// Any network access.
    Any,
}

/// What a worker may do beyond running its plugin: the grants the kernel enforces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Policy {
    /// Folders and files the worker may read (and list).
    pub read: Vec<PathBuf>,
    /// Folders and files the worker may read, write, create and remove in.
    pub write: Vec<PathBuf>,
    /// Programs the worker may start.
    pub run: Vec<PathBuf>,
    /// TCP access.
    pub net: Net,
    /// Name resolution with ports granted: UDP sockets may be opened (a DNS query goes over
    /// UDP; a seccomp filter cannot see where a datagram goes) and TCP port 53 is granted
    /// (answers too large for UDP). Set by network grants that name a host by its name.
    #[serde(default)]
    pub dns: bool,
    /// Environment variables passed to the worker (by name, from the host's environment).
    #[serde(default)]
    pub env: Vec<String>,
    /// The runtime's private temporary folder (`{tmp}` in what it declares), the worker's
    /// `TMPDIR`.
    #[serde(default)]
    pub tmp: Option<PathBuf>,
    /// Start even when the kernel lacks a mechanism (the worker applies what it has).
    pub accept_weaker: bool,
}

impl Policy {
    /// Adds `other`'s grants to these (the wider network access wins).
    pub fn extend(&mut self, other: &Policy) {
        self.read.extend(other.read.iter().cloned());
        self.write.extend(other.write.iter().cloned());
        self.run.extend(other.run.iter().cloned());
        self.env.extend(other.env.iter().cloned());
        self.net = match (std::mem::take(&mut self.net), &other.net) {
            (Net::Any, _) | (_, Net::Any) => Net::Any,
            (Net::Ports(mut mine), Net::Ports(theirs)) => {
                mine.extend(theirs);
                mine.sort_unstable();
                mine.dedup();
                Net::Ports(mine)
            }
            (Net::None, other) => other.clone(),
            (mine, Net::None) => mine,
        };
        self.accept_weaker |= other.accept_weaker;
        self.dns |= other.dns;
        if self.tmp.is_none() {
            self.tmp.clone_from(&other.tmp);
        }
    }

    /// Read grants.
    pub fn with_read(mut self, path: impl Into<PathBuf>) -> Self {
        self.read.push(path.into());
        self
    }

    /// Write grants.
    pub fn with_write(mut self, path: impl Into<PathBuf>) -> Self {
        self.write.push(path.into());
        self
    }

    /// Programs it may start.
    pub fn with_run(mut self, path: impl Into<PathBuf>) -> Self {
        self.run.push(path.into());
        self
    }

    /// Network access.
    pub fn with_net(mut self, net: Net) -> Self {
        self.net = net;
        self
    }

    /// Takes `denials` away from these grants: what is denied is never granted, whoever
    /// granted it (deny wins, as Deno's `--deny-*` flags do).
    ///
    /// # Errors
    ///
    /// [`SandboxError::Unenforceable`] when a denial lies inside a wider grant (a file in a
    /// granted folder, a port while any network is granted): Landlock grants whole folders and
    /// ports, and cannot make exceptions inside them.
    pub fn narrow(&mut self, denials: &[Denial]) -> Result<(), SandboxError> {
        for denial in denials {
            match denial {
                Denial::Read(None) => {
                    self.read.clear();
                    self.write.clear();
                    // Programs are granted with reading them.
                    self.run.clear();
                }
                Denial::Read(Some(denied)) => {
                    refuse_system(denied)?;
                    refuse_inside(denied, &self.read, "reading")?;
                    refuse_inside(denied, &self.write, "reading")?;
                    refuse_inside(denied, &self.run, "reading")?;
                    self.read.retain(|p| !covers(denied, p));
                    self.write.retain(|p| !covers(denied, p));
                    self.run.retain(|p| !covers(denied, p));
                }
                Denial::Write(None) => self.read.append(&mut self.write),
                Denial::Write(Some(denied)) => {
                    refuse_inside(denied, &self.write, "writing")?;
                    let (taken, kept) = std::mem::take(&mut self.write)
                        .into_iter()
                        .partition(|p| covers(denied, p));
                    self.write = kept;
                    // Reading what was writable stays granted.
                    self.read.extend::<Vec<PathBuf>>(taken);
                }
                Denial::Run(None) => self.run.clear(),
                Denial::Run(Some(denied)) => {
                    refuse_inside(denied, &self.run, "starting")?;
                    self.run.retain(|p| !covers(denied, p));
                }
                Denial::Net(None) => {
                    self.net = Net::None;
                    self.dns = false;
                }
                Denial::Dns => self.dns = false,
                Denial::Net(Some(port)) => match &mut self.net {
                    Net::Any => {
                        return Err(SandboxError::Unenforceable {
                            denied: format!("TCP port {port}"),
                            granted: "any network".to_owned(),
                        });
                    }
                    Net::Ports(ports) => {
                        ports.retain(|p| p != port);
                        if ports.is_empty() {
                            self.net = Net::None;
                        }
                        // Name resolution grants port 53 too.
                        if *port == net::DNS_PORT {
                            self.dns = false;
                        }
                    }
                    Net::None => {}
                },
                Denial::Env(None) => self.env.clear(),
                Denial::Env(Some(name)) => self.env.retain(|n| n != name),
            }
        }
        Ok(())
    }
}

/// One thing an operator takes away from a runtime's workers, whatever the runtime declares
/// and whatever else grants it ([`Policy::narrow`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Denial {
    /// Reading (and writing) this file or folder and everything under it; every path when
    /// `None`.
    Read(Option<PathBuf>),
    /// Writing this file or folder and everything under it (reading what was writable stays
    /// granted); every path when `None`.
    Write(Option<PathBuf>),
    /// Starting this program (or those under this folder); every program when `None`.
    Run(Option<PathBuf>),
    /// TCP to this port; all network access when `None`.
    Net(Option<u16>),
    /// Name resolution: UDP sockets and TCP port 53 (hosts must then be named by address).
    Dns,
    /// Receiving this environment variable; every variable when `None`.
    Env(Option<String>),
}

impl Denial {
    /// Every kind of access: what `RUNTIME=all` denies.
    pub fn everything() -> Vec<Denial> {
        vec![
            Denial::Read(None),
            Denial::Write(None),
            Denial::Run(None),
            Denial::Net(None),
            Denial::Env(None),
        ]
    }

    /// Whether these denials keep the environment variable `name` from a worker.
    pub fn denies_env(denials: &[Denial], name: &str) -> bool {
        denials
            .iter()
            .any(|d| matches!(d, Denial::Env(None)) || *d == Denial::Env(Some(name.to_owned())))
    }
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, value) = match self {
            Denial::Read(p) => ("read", p.as_ref().map(|p| p.display().to_string())),
            Denial::Write(p) => ("write", p.as_ref().map(|p| p.display().to_string())),
            Denial::Run(p) => ("run", p.as_ref().map(|p| p.display().to_string())),
            Denial::Net(port) => ("net", port.map(|p| p.to_string())),
            Denial::Dns => ("net", Some("dns".to_owned())),
            Denial::Env(name) => ("env", name.clone()),
        };
        match value {
            Some(value) => write!(f, "{kind}:{value}"),
            None => f.write_str(kind),
        }
    }
}

/// The path as the kernel will resolve it: absolute, with symlinks followed in the longest
/// part that exists (the rest appended as given, `..` and `.` removed), so a denial and a
/// grant naming one folder by two names still meet, and a denial of a file not yet created
/// still meets the folder it will be created in.
pub fn resolved(path: &std::path::Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            let mut out = real;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return lexical(&out);
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return lexical(&absolute),
        }
    }
}

/// `path` with `.` and `..` components removed lexically.
fn lexical(path: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Refuses a denial of reading inside or over what every worker reads ([`SYSTEM_READ`]):
/// those are granted whole, and the loader needs them.
fn refuse_system(denied: &std::path::Path) -> Result<(), SandboxError> {
    let denied = resolved(denied);
    match SYSTEM_READ
        .iter()
        .map(std::path::Path::new)
        .find(|system| denied.starts_with(system) || system.starts_with(&denied))
    {
        Some(system) => Err(SandboxError::Unenforceable {
            denied: format!("reading {}", denied.display()),
            granted: format!(
                "reading {} (every worker reads it: the dynamic loader, TLS or name resolution need it)",
                system.display()
            ),
        }),
        None => Ok(()),
    }
}

/// Whether denying `denied` takes away the grant `granted` (the same path or one under it).
fn covers(denied: &std::path::Path, granted: &std::path::Path) -> bool {
    resolved(granted).starts_with(resolved(denied))
}

/// Refuses a denial strictly inside one of `grants`: the kernel cannot except it.
fn refuse_inside(
    denied: &std::path::Path,
    grants: &[PathBuf],
    what: &str,
) -> Result<(), SandboxError> {
    match grants
        .iter()
        .find(|granted| !covers(denied, granted) && resolved(denied).starts_with(resolved(granted)))
    {
        Some(granted) => Err(SandboxError::Unenforceable {
            denied: format!("{what} {}", denied.display()),
            granted: format!("{what} {}", granted.display()),
        }),
        None => Ok(()),
    }
}

/// A kernel mechanism of the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mechanism {
    /// Landlock filesystem rules (ABI 1).
    LandlockFs,
    /// Landlock TCP rules (ABI 4).
    LandlockNet,
    /// Landlock signal and abstract-socket scoping (ABI 6).
    LandlockScope,
    /// seccomp filters.
    Seccomp,
    /// Unprivileged user, PID, IPC and network namespaces.
    Namespaces,
}

impl Mechanism {
    /// Every mechanism, in the order `runtimes check --sandbox` lists them.
    pub const ALL: [Mechanism; 5] = [
        Mechanism::LandlockFs,
        Mechanism::LandlockNet,
        Mechanism::LandlockScope,
        Mechanism::Seccomp,
        Mechanism::Namespaces,
    ];

    /// Its name and what it enforces, in words.
    pub fn describe(self) -> &'static str {
        match self {
            Mechanism::LandlockFs => {
                "Landlock filesystem rules (ABI 1): reads and writes limited to grants"
            }
            Mechanism::LandlockNet => {
                "Landlock TCP rules (ABI 4): connect and bind limited to granted ports"
            }
            Mechanism::LandlockScope => {
                "Landlock scoping (ABI 6): no signals or abstract unix sockets outside the sandbox (the host cannot be killed)"
            }
            Mechanism::Seccomp => {
                "seccomp filter: no ptrace, process_vm_*, mount, bpf, keyctl, perf_event_open, namespaces, io_uring"
            }
            Mechanism::Namespaces => {
                "user, PID, IPC and network namespaces (unprivileged): nothing the plugin starts outlives its worker, even a SIGKILLed host's; no network interface but a down loopback unless network is granted"
            }
        }
    }
}

/// Why a sandbox could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The kernel lacks mechanisms the sandbox relies on.
    #[error(
        "this kernel lacks what the process-level sandbox relies on: {}; accept a weaker sandbox explicitly with --accept-weaker-sandbox, {ACCEPT_WEAKER_ENV}=1 or ProcessOptions::accept_weaker_sandbox",
        missing.iter().map(|m| m.describe()).collect::<Vec<_>>().join("; ")
    )]
    Missing {
        /// What is missing.
        missing: Vec<Mechanism>,
    },
    /// Setting up one mechanism failed.
    #[error("could not set up {mechanism:?}: {detail}")]
    Setup {
        /// The mechanism.
        mechanism: Mechanism,
        /// The system's error.
        detail: String,
    },
    /// A denial lies inside a wider grant, which the kernel cannot enforce.
    #[error(
        "cannot deny {denied} while {granted} is granted: the kernel grants whole folders and ports, with no exceptions inside them; deny the wider grant itself, or grant narrower paths or ports instead"
    )]
    Unenforceable {
        /// What was denied.
        denied: String,
        /// The wider grant it lies in.
        granted: String,
    },
    /// The policy on the worker's command line could not be read.
    #[error("the sandbox policy could not be read: {detail}")]
    Policy {
        /// Why.
        detail: String,
    },
}

/// Which mechanisms this kernel provides (probed once).
#[cfg(target_os = "linux")]
pub fn support() -> &'static [(Mechanism, bool)] {
    static SUPPORT: std::sync::OnceLock<Vec<(Mechanism, bool)>> = std::sync::OnceLock::new();
    SUPPORT.get_or_init(|| {
        Mechanism::ALL
            .iter()
            .map(|&m| {
                let has = match m {
                    Mechanism::Seccomp => seccomp::available(),
                    Mechanism::Namespaces => namespaces::available(),
                    other => landlock::available(other),
                };
                (m, has)
            })
            .collect()
    })
}

/// Which mechanisms this kernel provides: none off Linux.
#[cfg(not(target_os = "linux"))]
pub fn support() -> &'static [(Mechanism, bool)] {
    &[
        (Mechanism::LandlockFs, false),
        (Mechanism::LandlockNet, false),
        (Mechanism::LandlockScope, false),
        (Mechanism::Seccomp, false),
        (Mechanism::Namespaces, false),
    ]
}

/// The mechanisms `policy` relies on that this kernel lacks; an error unless the policy
/// accepts a weaker sandbox.
///
/// # Errors
///
/// [`SandboxError::Missing`], naming them.
pub fn check_support(policy: &Policy) -> Result<(), SandboxError> {
    check_against(support(), policy)
}

fn check_against(support: &[(Mechanism, bool)], policy: &Policy) -> Result<(), SandboxError> {
    let missing: Vec<Mechanism> = support
        .iter()
        .filter(|(m, has)| !has && (*m != Mechanism::LandlockNet || policy.net != Net::Any))
        .map(|(m, _)| *m)
        .collect();
    if missing.is_empty() || policy.accept_weaker {
        Ok(())
    } else {
        Err(SandboxError::Missing { missing })
    }
}

/// The private temporary folder of runtime `runtime_id` (`{tmp}` in what a runtime
/// declares): `$TMPDIR/agent-runtimes-<uid>/<runtime id>`, created mode 0700 and checked to be
/// a folder of this user that no one else may enter (not a symlink another user planted).
///
/// # Errors
///
/// [`SandboxError::Policy`] when it cannot be created or fails the checks.
#[cfg(unix)]
pub fn private_tmp(runtime_id: &str) -> Result<PathBuf, SandboxError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let me = rustix::process::geteuid().as_raw();
    let safe: String = runtime_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let base = std::env::temp_dir().join(format!("agent-runtimes-{me}"));
    let folder = base.join(safe.trim_start_matches('.'));
    for dir in [&base, &folder] {
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(SandboxError::Policy {
                    detail: format!("the private temporary folder {}: {e}", dir.display()),
                });
            }
        }
        let meta = std::fs::symlink_metadata(dir).map_err(|e| SandboxError::Policy {
            detail: format!("the private temporary folder {}: {e}", dir.display()),
        })?;
        if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o077 != 0 {
            return Err(SandboxError::Policy {
                detail: format!(
                    "the private temporary folder {} is not a folder of this user (uid {me}) closed to others: remove it, or set TMPDIR elsewhere",
                    dir.display()
                ),
            });
        }
    }
    Ok(folder)
}

/// Makes this (host) process non-dumpable: no process of the same user can then read its
/// memory, environment or descriptors through `/proc/<pid>`, nor `ptrace` it. Called once when
/// a host starts its first worker.
pub fn protect_host() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if let Err(error) = rustix::process::set_dumpable_behavior(
                rustix::process::DumpableBehavior::NotDumpable,
            ) {
                tracing::warn!("could not make the host non-dumpable: {error}");
            }
        });
    }
}

/// In the worker, on its only thread, before the plugin is opened: `no_new_privs`, Landlock,
/// seccomp. `library` is the inherited plugin file, which stays readable.
///
/// # Errors
///
/// A mechanism the policy relies on that cannot be applied (unless the policy accepts a
/// weaker sandbox).
#[cfg(target_os = "linux")]
pub fn apply(
    policy: &Policy,
    library: Option<&std::fs::File>,
) -> Result<Vec<String>, SandboxError> {
    let mut notes = Vec::new();
    rustix::thread::set_no_new_privs(true).map_err(|e| SandboxError::Setup {
        mechanism: Mechanism::Seccomp,
        detail: format!("no_new_privs: {e}"),
    })?;
    notes.extend(landlock::restrict(policy, library)?);
    seccomp::install(policy)?;
    Ok(notes)
}

/// Off Linux there is no sandbox: refused unless accepted.
///
/// # Errors
///
/// [`SandboxError::Missing`] unless the policy accepts a weaker sandbox.
#[cfg(not(target_os = "linux"))]
pub fn apply(
    policy: &Policy,
    _library: Option<&std::fs::File>,
) -> Result<Vec<String>, SandboxError> {
    check_support(policy).map(|()| vec!["no sandbox on this platform".to_owned()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_mechanism_refuses_unless_weaker_is_accepted() {
        let kernel = [
            (Mechanism::LandlockFs, true),
            (Mechanism::LandlockNet, false),
            (Mechanism::LandlockScope, false),
            (Mechanism::Seccomp, true),
        ];
        let error = check_against(&kernel, &Policy::default()).unwrap_err();
        assert_eq!(
            error,
            SandboxError::Missing {
                missing: vec![Mechanism::LandlockNet, Mechanism::LandlockScope]
            }
        );
        let text = error.to_string();
        assert!(
            text.contains("Landlock TCP rules (ABI 4)") && text.contains("--accept-weaker-sandbox"),
            "{text}"
        );
        // Network `any` does not rely on Landlock's TCP rules.
        let any = Policy::default().with_net(Net::Any);
        assert_eq!(
            check_against(&kernel, &any),
            Err(SandboxError::Missing {
                missing: vec![Mechanism::LandlockScope]
            })
        );
        let weaker = Policy {
            accept_weaker: true,
            ..Policy::default()
        };
        assert_eq!(check_against(&kernel, &weaker), Ok(()));
        // Unprivileged user namespaces turned off: refused, whatever the network.
        let no_namespaces = [
            (Mechanism::LandlockFs, true),
            (Mechanism::LandlockNet, true),
            (Mechanism::LandlockScope, true),
            (Mechanism::Seccomp, true),
            (Mechanism::Namespaces, false),
        ];
        let error = check_against(&no_namespaces, &any).unwrap_err();
        assert_eq!(
            error,
            SandboxError::Missing {
                missing: vec![Mechanism::Namespaces]
            }
        );
        assert!(error.to_string().contains("PID"), "{error}");
        assert_eq!(check_against(&no_namespaces, &weaker), Ok(()));
    }

    #[test]
    fn denials_take_away_whatever_granted_it_and_refuse_what_the_kernel_cannot_except() {
        let mut granted = Policy::default()
            .with_read("/srv/docs")
            .with_write("/srv/out")
            .with_write("/srv/cache")
            .with_run("/usr/bin/node")
            .with_net(Net::Ports(vec![443, 8080]));
        granted.env = vec!["KEY".to_owned(), "PATH".to_owned()];
        granted.dns = true;
        let mut policy = granted.clone();
        policy
            .narrow(&[
                Denial::Write(Some("/srv/out".into())),
                Denial::Read(Some("/srv/cache".into())),
                Denial::Net(Some(8080)),
                Denial::Env(Some("KEY".to_owned())),
                Denial::Dns,
            ])
            .unwrap();
        // Denied writing, still readable; denied reading, gone from both lists.
        assert_eq!(
            policy.read,
            [PathBuf::from("/srv/docs"), PathBuf::from("/srv/out")]
        );
        assert!(policy.write.is_empty());
        assert_eq!(policy.net, Net::Ports(vec![443]));
        assert_eq!(policy.env, ["PATH"]);
        assert!(!policy.dns);
        assert_eq!(policy.run, [PathBuf::from("/usr/bin/node")]);
        // A folder and what is under it.
        let mut policy = granted.clone();
        policy.narrow(&[Denial::Read(Some("/srv".into()))]).unwrap();
        assert!(policy.read.is_empty() && policy.write.is_empty());
        // Everything.
        let mut policy = granted.clone();
        policy.narrow(&Denial::everything()).unwrap();
        assert_eq!(policy, Policy::default(), "{policy:?}");
        // Inside a wider grant: refused, naming both.
        let error = granted
            .clone()
            .narrow(&[Denial::Read(Some("/srv/docs/private".into()))])
            .unwrap_err();
        assert_eq!(
            error,
            SandboxError::Unenforceable {
                denied: "reading /srv/docs/private".to_owned(),
                granted: "reading /srv/docs".to_owned(),
            }
        );
        let error = Policy::default()
            .with_net(Net::Any)
            .narrow(&[Denial::Net(Some(22))])
            .unwrap_err();
        assert!(error.to_string().contains("any network"), "{error}");
        // What every worker reads cannot be denied, nor anything inside it.
        for system in ["/etc/ssl/certs/private.pem", "/usr", "/etc/hosts"] {
            let error = Policy::default()
                .narrow(&[Denial::Read(Some(system.into()))])
                .unwrap_err();
            assert!(
                error.to_string().contains("every worker reads it"),
                "{error}"
            );
        }
        // Denying port 53 ends name resolution; denying reading a program's folder, the program.
        let mut policy = granted.clone();
        policy
            .narrow(&[
                Denial::Net(Some(net::DNS_PORT)),
                Denial::Read(Some("/usr/bin".into())),
            ])
            .unwrap();
        assert!(!policy.dns);
        assert!(policy.run.is_empty(), "{policy:?}");
        // A relative denial, or one through `..`, meets the absolute grant.
        let here = std::env::current_dir().unwrap();
        let mut policy = Policy::default().with_read(here.join("docs"));
        policy
            .narrow(&[Denial::Read(Some("./x/../docs".into()))])
            .unwrap();
        assert!(policy.read.is_empty(), "{policy:?}");
    }

    #[test]
    fn grants_add_up_and_the_wider_network_wins() {
        let mut policy = Policy::default().with_net(Net::Ports(vec![443]));
        policy.extend(
            &Policy::default()
                .with_net(Net::Ports(vec![80, 443]))
                .with_read("/a"),
        );
        assert_eq!(policy.net, Net::Ports(vec![80, 443]));
        assert_eq!(policy.read, [PathBuf::from("/a")]);
        policy.extend(&Policy::default().with_net(Net::Any));
        assert_eq!(policy.net, Net::Any);
    }
}
