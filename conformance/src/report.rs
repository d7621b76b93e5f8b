//! What the checks report: [`Options`] in, a [`Report`] of [`Check`]s with their [`Verdict`]s
//! out. Plugin text in a report is escaped when it is shown.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use runtime_loader::LoaderOptions;
use runtime_text::clean;
use serde::Serialize;

/// How the checks run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// The most time one check may take.
    pub time_limit: Duration,
    /// How many turns the `concurrent_turns` check starts at once.
    pub concurrent_turns: usize,
    /// The size of the `large_prompt` check's prompt, in bytes.
    pub large_prompt_bytes: usize,
    /// The `max_tokens` of every turn (keeps model-backed runtimes quick).
    pub max_tokens: u32,
    /// How [`check_file`](crate::check_file) admits and loads the file.
    pub loader: LoaderOptions,
}

impl Default for Options {
    /// 60 s per check, 100 concurrent turns, a 1 MiB prompt, 16 tokens per answer, and the
    /// loader's options from the environment.
    fn default() -> Self {
        Self {
            time_limit: Duration::from_secs(60),
            concurrent_turns: 100,
            large_prompt_bytes: 1024 * 1024,
            max_tokens: 16,
            loader: LoaderOptions::default(),
        }
    }
}

impl Options {
    /// Sets the most time one check may take.
    pub fn with_time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = limit;
        self
    }

    /// Sets how many turns run at once in `concurrent_turns`.
    pub fn with_concurrent_turns(mut self, turns: usize) -> Self {
        self.concurrent_turns = turns;
        self
    }

    /// Sets the `large_prompt` check's prompt size.
    pub fn with_large_prompt_bytes(mut self, bytes: usize) -> Self {
        self.large_prompt_bytes = bytes;
        self
    }

    /// Sets every turn's `max_tokens`.
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    /// Sets how [`check_file`](crate::check_file) admits and loads the file.
    pub fn with_loader_options(mut self, loader: LoaderOptions) -> Self {
        self.loader = loader;
        self
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verdict {
    /// The runtime honours this part of the contract; `detail` says what was seen.
    Pass {
        /// What was seen.
        detail: String,
    },
    /// It does not; `reason` says what was wrong.
    Fail {
        /// What was wrong.
        reason: String,
    },
    /// The check does not apply (for example: no configuration schema is declared). Not a
    /// failure.
    NotApplicable {
        /// Why it does not apply.
        reason: String,
    },
}

impl Verdict {
    pub(crate) fn pass(detail: impl Into<String>) -> Self {
        Verdict::Pass {
            detail: detail.into(),
        }
    }

    pub(crate) fn fail(reason: impl Into<String>) -> Self {
        Verdict::Fail {
            reason: reason.into(),
        }
    }

    /// Whether this is a failure.
    pub fn is_failure(&self) -> bool {
        matches!(self, Verdict::Fail { .. })
    }

    /// `pass`, `FAIL` or `n/a`.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass { .. } => "pass",
            Verdict::Fail { .. } => "FAIL",
            Verdict::NotApplicable { .. } => "n/a",
        }
    }

    /// The detail or the reason.
    pub fn text(&self) -> &str {
        match self {
            Verdict::Pass { detail } => detail,
            Verdict::Fail { reason } | Verdict::NotApplicable { reason } => reason,
        }
    }
}

/// One check and its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Check {
    /// The runtime checked; `None` for a check of the file itself.
    pub runtime: Option<String>,
    /// The check's name, e.g. `streaming` (the table in this module's documentation).
    pub name: &'static str,
    /// Its outcome.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// How long it took.
    #[serde(rename = "elapsed_ms", serialize_with = "millis")]
    pub elapsed: Duration,
}

fn millis<S: serde::Serializer>(elapsed: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

/// Every check run against a file or a handle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// The file checked, for [`check_file`](crate::check_file).
    pub file: Option<PathBuf>,
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether no check failed (and at least one ran).
    pub fn is_conformant(&self) -> bool {
        !self.checks.is_empty() && !self.checks.iter().any(|c| c.verdict.is_failure())
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.verdict.is_failure())
    }

    /// The check `name` of `runtime` (`None`: of the file).
    pub fn get(&self, runtime: Option<&str>, name: &str) -> Option<&Check> {
        self.checks
            .iter()
            .find(|c| c.runtime.as_deref() == runtime && c.name == name)
    }
}

impl fmt::Display for Report {
    /// One line per check: `pass  echo  streaming: …`. Plugin text is escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for check in &self.checks {
            writeln!(
                f,
                "{:<4}  {}  {}: {}",
                check.verdict.label(),
                clean(check.runtime.as_deref().unwrap_or("(file)")),
                check.name,
                clean(check.verdict.text())
            )?;
        }
        let failed = self.failures().count();
        write!(
            f,
            "{failed} of {} checks failed{}",
            self.checks.len(),
            if self.checks.is_empty() {
                " (none ran)"
            } else {
                ""
            }
        )
    }
}
