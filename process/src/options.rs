//! How workers are run ([`ProcessOptions`]) and what one is started for ([`Spec`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use runtime_api::Value;

/// The environment variable that sets how many workers serve each runtime instance.
pub const WORKER_POOL_ENV: &str = "AGENT_RUNTIMES_WORKERS";

/// The environment variable that limits each worker's address space, in bytes (suffixes `K`,
/// `M`, `G` allowed).
pub const WORKER_MEMORY_ENV: &str = "AGENT_RUNTIMES_WORKER_MEMORY";

/// The environment variable that caps the processes and threads of a worker's user while it
/// runs (`RLIMIT_NPROC`).
pub const WORKER_PROCESSES_ENV: &str = "AGENT_RUNTIMES_WORKER_PROCESSES";

/// How workers are run and supervised at the *process* isolation level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessOptions {
    /// The worker executable; when `None`, `AGENT_RUNTIMES_WORKER`, then `runtimes-worker`
    /// beside the current executable, then on `PATH`.
    pub worker: Option<&'static Path>,
    /// The most address space a worker may map (`RLIMIT_AS`), in bytes; an allocation beyond
    /// it fails and the worker dies with the allocation failure on its stderr.
    pub memory_limit: Option<u64>,
    /// How long a worker has to let go of a cancelled or timed-out turn, or to answer a ping,
    /// before it is killed.
    pub grace: Duration,
    /// How long a worker has to start, load its library and create its runtime.
    pub start_timeout: Duration,
    /// Worker processes per runtime instance (1 to 64): turns go to the least busy, so a
    /// stuck turn delays and risks only its own worker's turns.
    pub pool_size: usize,
    /// How long a call to a worker (`health`, `supports`, an extension, validating a
    /// configuration) may take before the worker is stopped and the call is a `timeout`.
    pub call_timeout: Duration,
    /// How many crashes within `crash_window` mark a runtime failed.
    pub max_crashes: u32,
    /// The window in which crashes are counted.
    pub crash_window: Duration,
    /// How long a runtime stays marked failed before it may be tried again (it can also be
    /// cleared at once: `Runtimes::clear_failed`).
    pub failed_for: Duration,
    /// The wait before the first restart after a crash; it doubles with every further crash
    /// before a turn succeeds again, up to 5 s.
    pub restart_backoff: Duration,
    /// How often a worker with turns in flight is pinged.
    pub ping_interval: Duration,
    /// Environment variables passed to every worker, besides those a configuration names
    /// (the string values of its keys ending in `_env`, such as `api_key_env`). Nothing else
    /// of the host's environment is passed.
    pub pass_env: &'static [&'static str],
    /// Run workers in the sandbox (Linux: `no_new_privs`, Landlock, seccomp, rlimits; see
    /// [`sandbox`](crate::sandbox)). On by default.
    pub sandbox: bool,
    /// Start workers even when the kernel lacks a mechanism the sandbox relies on (what is
    /// there is applied). Off by default: such a runtime is refused, naming what is missing.
    /// `AGENT_RUNTIMES_ACCEPT_WEAKER_SANDBOX=1` turns it on.
    pub accept_weaker_sandbox: bool,
    /// The cap on processes and threads of the worker's user while it runs
    /// (`RLIMIT_NPROC`; the kernel does not apply it to root).
    pub max_processes: Option<u64>,
    /// What the operator grants every worker, beyond what its runtime declares (read, write
    /// and run paths, network). Kept for the life of the process.
    pub grants: Option<&'static crate::sandbox::Policy>,
    /// What the operator grants the workers of one runtime (by id), beyond [`grants`](Self::grants)
    /// and what the runtime declares. Kept for the life of the process.
    pub runtime_grants: &'static [(String, crate::sandbox::Policy)],
    /// What the operator takes away from the workers of one runtime (by id, or `*` for every
    /// runtime), whatever the runtime declares and whatever is granted. Kept for the life of
    /// the process.
    pub runtime_denials: &'static [(String, crate::sandbox::Denial)],
}

impl Default for ProcessOptions {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl ProcessOptions {
    /// The defaults: two workers per runtime, a 4 GiB address-space limit, the sandbox on, 1 s
    /// grace, 10 s to start, 30 s per call, failed after 5 crashes in a minute (for 5
    /// minutes), 100 ms first backoff, a ping every 5 s.
    pub const DEFAULT: Self = Self {
        worker: None,
        memory_limit: Some(crate::sandbox::rlimits::DEFAULT_MEMORY),
        grace: Duration::from_secs(1),
        start_timeout: Duration::from_secs(10),
        call_timeout: Duration::from_secs(30),
        pool_size: 2,
        max_crashes: 5,
        crash_window: Duration::from_secs(60),
        failed_for: Duration::from_secs(300),
        restart_backoff: Duration::from_millis(100),
        ping_interval: Duration::from_secs(5),
        pass_env: &[],
        sandbox: true,
        accept_weaker_sandbox: false,
        max_processes: Some(crate::sandbox::rlimits::DEFAULT_PROCESSES),
        grants: None,
        runtime_grants: &[],
        runtime_denials: &[],
    };

    /// The defaults, with the memory limit from `AGENT_RUNTIMES_WORKER_MEMORY`, the pool size
    /// from `AGENT_RUNTIMES_WORKERS`, the process cap from `AGENT_RUNTIMES_WORKER_PROCESSES`
    /// (an invalid value is logged and ignored) and `AGENT_RUNTIMES_ACCEPT_WEAKER_SANDBOX`.
    pub fn from_env() -> Self {
        let mut options = Self::DEFAULT;
        options.accept_weaker_sandbox = std::env::var(crate::sandbox::ACCEPT_WEAKER_ENV)
            .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        if let Ok(text) = std::env::var(WORKER_PROCESSES_ENV) {
            match text.trim().parse::<u64>() {
                Ok(count) => options.max_processes = Some(count),
                Err(_) => tracing::warn!(
                    "{WORKER_PROCESSES_ENV}={text:?} is not a number; the default cap applies"
                ),
            }
        }
        if let Ok(text) = std::env::var(WORKER_POOL_ENV) {
            match text.trim().parse::<usize>() {
                Ok(workers) if (1..=64).contains(&workers) => options.pool_size = workers,
                _ => tracing::warn!(
                    "{WORKER_POOL_ENV}={text:?} is not a number of workers from 1 to 64; using {}",
                    options.pool_size
                ),
            }
        }
        if let Ok(text) = std::env::var(WORKER_MEMORY_ENV) {
            match parse_size(&text) {
                Some(bytes) => options.memory_limit = Some(bytes),
                None => tracing::warn!(
                    "{WORKER_MEMORY_ENV}={text:?} is not a size (e.g. 512M); the default limit applies"
                ),
            }
        }
        options
    }

    /// Sets the worker executable. The path is kept for the life of the process.
    pub fn with_worker(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.worker = Some(Box::leak(path.into().into_boxed_path()));
        self
    }

    /// Sets the memory limit of each worker, in bytes.
    pub fn with_memory_limit(mut self, bytes: Option<u64>) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// Sets the grace period for cancelled turns and pings.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Sets how many crashes within `window` mark a runtime failed.
    pub fn with_crash_limit(mut self, max_crashes: u32, window: Duration) -> Self {
        self.max_crashes = max_crashes;
        self.crash_window = window;
        self
    }

    /// Sets how many worker processes serve each runtime instance (1 to 64).
    pub fn with_pool_size(mut self, workers: usize) -> Self {
        self.pool_size = workers.clamp(1, 64);
        self
    }

    /// Sets how long a call to a worker may take.
    pub fn with_call_timeout(mut self, limit: Duration) -> Self {
        self.call_timeout = limit;
        self
    }

    /// Sets how long a runtime stays marked failed.
    pub fn with_failed_for(mut self, duration: Duration) -> Self {
        self.failed_for = duration;
        self
    }

    /// Sets the first restart backoff.
    pub fn with_restart_backoff(mut self, backoff: Duration) -> Self {
        self.restart_backoff = backoff;
        self
    }

    /// Sets how often a busy worker is pinged.
    pub fn with_ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Turns the sandbox on or off.
    pub fn with_sandbox(mut self, on: bool) -> Self {
        self.sandbox = on;
        self
    }

    /// Accepts (or not) a weaker sandbox than the grants rely on.
    pub fn with_accept_weaker_sandbox(mut self, accept: bool) -> Self {
        self.accept_weaker_sandbox = accept;
        self
    }

    /// Grants every worker these paths and this network access, beyond what its runtime
    /// declares. The grants are kept for the life of the process.
    pub fn with_grants(mut self, grants: crate::sandbox::Policy) -> Self {
        self.grants = Some(Box::leak(Box::new(grants)));
        self
    }

    /// Grants the workers of each named runtime (by id) these paths, programs, network
    /// access and variables, beyond [`with_grants`](Self::with_grants) and what the runtime
    /// declares. The grants are kept for the life of the process.
    pub fn with_runtime_grants(mut self, grants: Vec<(String, crate::sandbox::Policy)>) -> Self {
        self.runtime_grants = Box::leak(grants.into_boxed_slice());
        self
    }

    /// What the operator grants the workers of a runtime named by any of `names` (its id and
    /// its aliases): the grants for every worker, and those for that runtime.
    pub fn grants_for(&self, names: &[&str]) -> crate::sandbox::Policy {
        let mut policy = self.grants.cloned().unwrap_or_default();
        for (name, grants) in self.runtime_grants {
            if names.contains(&name.as_str()) {
                policy.extend(grants);
            }
        }
        policy
    }

    /// Takes from the workers of each named runtime (by id, or `*` for every runtime) what is
    /// denied, whatever the runtime declares and whatever is granted: deny wins. The denials
    /// are kept for the life of the process.
    pub fn with_runtime_denials(mut self, denials: Vec<(String, crate::sandbox::Denial)>) -> Self {
        self.runtime_denials = Box::leak(denials.into_boxed_slice());
        self
    }

    /// What the operator denies the workers of a runtime named by any of `names` (its id and
    /// its aliases), with what is denied to every runtime (`*`).
    pub fn denials_for(&self, names: &[&str]) -> Vec<crate::sandbox::Denial> {
        self.runtime_denials
            .iter()
            .filter(|(name, _)| name == "*" || names.contains(&name.as_str()))
            .map(|(_, denial)| denial.clone())
            .collect()
    }

    /// What the workers of a runtime get when it declares `declared`: what it declares and
    /// what is granted, less what is denied, to any of `names` (its id and its aliases). This
    /// is exactly what the kernel enforces (environment variables that its configuration
    /// names aside). Paths come back resolved (absolute, symlinks followed): the worker opens
    /// them refusing symlinks, so a path changed into a symlink since is not followed.
    ///
    /// # Errors
    ///
    /// [`SandboxError::Unenforceable`](crate::sandbox::SandboxError::Unenforceable) when a
    /// denial lies inside a wider grant.
    pub fn policy_for(
        &self,
        names: &[&str],
        declared: &crate::sandbox::Policy,
    ) -> Result<crate::sandbox::Policy, crate::sandbox::SandboxError> {
        let mut policy = self.grants_for(names);
        policy.extend(declared);
        policy.accept_weaker |= self.accept_weaker_sandbox;
        policy.narrow(&self.denials_for(names))?;
        for path in policy
            .read
            .iter_mut()
            .chain(policy.write.iter_mut())
            .chain(policy.run.iter_mut())
        {
            *path = crate::sandbox::resolved(path);
        }
        Ok(policy)
    }

    /// Sets the process cap (`RLIMIT_NPROC`).
    pub fn with_max_processes(mut self, max: Option<u64>) -> Self {
        self.max_processes = max;
        self
    }

    /// Sets the environment variables passed to every worker.
    pub fn with_pass_env(mut self, names: &'static [&'static str]) -> Self {
        self.pass_env = names;
        self
    }
}

/// `512M`, `1G`, `65536`.
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_uppercase()),
        _ => (text, 'B'),
    };
    let number: u64 = digits.trim().parse().ok()?;
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return None,
    };
    number.checked_mul(1 << shift)
}

/// What a worker is started for.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Spec {
    /// The library, as discovery resolved and checked it.
    pub library: PathBuf,
    /// The runtime the worker creates.
    pub runtime_id: String,
    /// Its configuration.
    pub config: Value,
    /// Whether the worker's own admission checks accept insecure files.
    pub allow_insecure: bool,
    /// How the worker is run and supervised.
    pub options: ProcessOptions,
    /// The open file the host checked, which every worker of this spec inherits and loads.
    pub checked: Option<LibraryFile>,
    /// What the worker may do, enforced by the kernel; `None` when the sandbox is off.
    pub policy: Option<crate::sandbox::Policy>,
    /// Why no worker may start: the operator's denials cannot be enforced.
    pub refused: Option<crate::sandbox::SandboxError>,
    /// The runtime's aliases: grants and denials given to one of them apply too.
    pub aliases: Vec<String>,
}

/// The host's checked open library file, handed to each worker (see
/// [`CheckedFile`](crate::protocol::CheckedFile)), and what the worker must report back.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LibraryFile {
    /// The open file every admission check read.
    pub file: std::sync::Arc<std::fs::File>,
    /// Its identity when it was checked.
    pub identity: runtime_discovery::security::Identity,
    /// The pin that applies to it, if any.
    pub pin: Option<runtime_discovery::admission::Pin>,
    /// The plugin name and version its checked manifest declares; the worker must report
    /// the same.
    pub plugin_name: String,
    /// See `plugin_name`.
    pub plugin_version: String,
}

impl LibraryFile {
    /// The checked `file`, its `identity`, `pin`, and the plugin its manifest declares.
    pub fn new(
        file: std::fs::File,
        identity: runtime_discovery::security::Identity,
        pin: Option<runtime_discovery::admission::Pin>,
        plugin_name: String,
        plugin_version: String,
    ) -> Self {
        Self {
            file: std::sync::Arc::new(file),
            identity,
            pin,
            plugin_name,
            plugin_version,
        }
    }
}

impl Spec {
    /// A worker for runtime `runtime_id` of `library`, created with `config`.
    pub fn new(
        library: PathBuf,
        runtime_id: String,
        config: Value,
        allow_insecure: bool,
        options: ProcessOptions,
    ) -> Self {
        Self {
            library,
            config,
            allow_insecure,
            options,
            checked: None,
            policy: None,
            refused: None,
            aliases: Vec::new(),
            runtime_id,
        }
        .with_declared(&crate::sandbox::Policy::default())
    }

    /// Sets the runtime's aliases (call before [`with_declared`](Self::with_declared)): grants
    /// and denials given to an alias apply to the runtime.
    pub fn with_aliases(mut self, aliases: Vec<String>) -> Self {
        self.aliases = aliases;
        self
    }

    /// The runtime's id and aliases: what grants and denials name it by.
    fn names(&self) -> Vec<&str> {
        std::iter::once(self.runtime_id.as_str())
            .chain(self.aliases.iter().map(String::as_str))
            .collect()
    }

    /// The environment variables denied to this worker are not passed, whoever names them.
    pub fn passes_env(&self, name: &str) -> bool {
        !crate::sandbox::Denial::denies_env(&self.options.denials_for(&self.names()), name)
    }

    /// Sets what the runtime declares: the worker may do that and what the operator grants,
    /// less what the operator denies ([`ProcessOptions::policy_for`]). Nothing changes when the
    /// options turn the sandbox off. Denials that cannot be enforced leave the spec
    /// [`refused`](Self::refused): no worker starts.
    pub fn with_declared(mut self, declared: &crate::sandbox::Policy) -> Self {
        if self.options.sandbox {
            let result = self.options.policy_for(&self.names(), declared);
            match result {
                Ok(policy) => {
                    self.policy = Some(policy);
                    self.refused = None;
                }
                Err(error) => self.refused = Some(error),
            }
        }
        self
    }

    /// Hands every worker the host's checked open file (see [`LibraryFile`]).
    pub fn with_checked(mut self, checked: LibraryFile) -> Self {
        self.checked = Some(checked);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("5X"), None);
    }
}
