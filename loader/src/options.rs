//! [`LoaderOptions`]: how strict discovery is, and how runtimes are run.

use runtime_discovery::security::{ALLOW_INSECURE_ENV, TrustOptions};

/// How strict discovery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoaderOptions {
    /// Load plugin files and folders writable by group or others, or owned by another user.
    pub allow_insecure: bool,
    /// The isolation level of every runtime, unless one is set per runtime
    /// ([`Runtimes::set_isolation`](crate::Runtimes::set_isolation)).
    pub isolation: crate::Isolation,
    /// Hash pinned libraries during discovery, so a pin mismatch is a discovery rejection
    /// (what `runtimes list --all` and `runtimes check` do). Off by default: a pinned library
    /// is then hashed once, from the open file, just before it is loaded, and discovery of many
    /// pinned libraries stays cheap. Either way the pin is verified on the file that is loaded.
    pub eager_pins: bool,
    /// How workers are run at the *process* level.
    pub process: crate::ProcessOptions,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        Self::from_env()
    }
}

impl LoaderOptions {
    /// Strict checks; pins verified at load.
    pub const STRICT: Self = Self {
        allow_insecure: false,
        isolation: crate::Isolation::Threads,
        eager_pins: false,
        process: crate::ProcessOptions::DEFAULT,
    };

    /// Strict unless `AGENT_RUNTIMES_ALLOW_INSECURE` is `1` or `true`; the isolation level
    /// from `AGENT_RUNTIMES_ISOLATION` (default *threads*).
    pub fn from_env() -> Self {
        let allow = std::env::var(ALLOW_INSECURE_ENV)
            .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
            .unwrap_or(false);
        Self {
            isolation: crate::Isolation::from_env(),
            process: crate::ProcessOptions::from_env(),
            ..Self::STRICT.with_allow_insecure(allow)
        }
    }

    /// Sets the isolation level of every runtime.
    pub fn with_isolation(mut self, isolation: crate::Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// Sets how workers are run at the *process* level.
    pub fn with_process(mut self, process: crate::ProcessOptions) -> Self {
        self.process = process;
        self
    }

    /// Sets whether insecure files and folders are allowed.
    pub fn with_allow_insecure(mut self, allow: bool) -> Self {
        self.allow_insecure = allow;
        self
    }

    /// Sets whether pinned libraries are hashed during discovery (see
    /// [`LoaderOptions::eager_pins`]).
    pub fn with_eager_pins(mut self, eager: bool) -> Self {
        self.eager_pins = eager;
        self
    }
}

impl LoaderOptions {
    /// The trust checks of these options, as discovery takes them.
    pub fn trust(&self) -> TrustOptions {
        TrustOptions::STRICT
            .with_allow_insecure(self.allow_insecure)
            .with_eager_pins(self.eager_pins)
    }
}

impl From<&LoaderOptions> for TrustOptions {
    fn from(options: &LoaderOptions) -> Self {
        options.trust()
    }
}
