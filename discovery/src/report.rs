//! What discovery found: the directories searched, the candidates rejected and why, and the
//! runtimes shadowed by an earlier provider.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::search_path::DirOrigin;

/// Why a plugin file was not registered, or failed when it was first loaded.
///
/// Every variant says what failed and what to do about it; the structured fields let a host
/// or the CLI show or serialise the same facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RejectReason {
    /// The path is a directory, a FIFO, a device, a socket or another non-file. Refused by its
    /// type before anything is read from it.
    #[error("it is {file_type}, not a regular file: only regular files are read")]
    NotAFile {
        /// What it is (`a directory`, `a FIFO`, `a character device`...).
        file_type: String,
    },
    /// The file could not be read, or a symlink could not be resolved.
    #[error("it cannot be read: {detail}")]
    Unreadable {
        /// The operating system's error.
        detail: String,
    },
    /// The file is not a shared library this platform can parse.
    #[error("it is not a shared library ({detail})")]
    NotALibrary {
        /// What the object parser said.
        detail: String,
    },
    /// The library does not export the agent-runtimes manifest.
    #[error(
        "it has no agent-runtimes manifest (no exported `AGENT_RUNTIMES_MANIFEST` symbol): it was not built with `runtime_api::export_plugin!`"
    )]
    NoManifest,
    /// The manifest could not be read.
    #[error("its manifest is malformed: {detail}")]
    MalformedManifest {
        /// What is wrong with it.
        detail: String,
    },
    /// The plugin was built against a runtime-api of another series.
    #[error("{message}")]
    ContractMismatch {
        /// The contract the plugin was built for (`0`: before contracts were versioned).
        plugin_contract: u32,
        /// The contract this host speaks.
        host_contract: u32,
        /// The runtime-api package version the plugin was built against.
        plugin_api: String,
        /// Both contracts and what to do, for people.
        message: String,
    },
    /// The manifest names an invalid id or alias.
    #[error("its manifest declares the invalid {what} `{name}`: {problem}")]
    InvalidName {
        /// `id` or `alias`.
        what: String,
        /// The name as written.
        name: String,
        /// Why it is invalid.
        problem: String,
    },
    /// The manifest declares a name twice (ids and aliases share one namespace).
    #[error("its manifest declares the name `{name}` twice")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// The manifest declares no runtime at all.
    #[error("its manifest declares no runtime")]
    NoRuntimes,
    /// The file, its folder or a folder above it could be changed by someone else.
    #[error(
        "{detail}; fix the permissions, or for development pass `--allow-insecure` (or set AGENT_RUNTIMES_ALLOW_INSECURE=1, or LoaderOptions::allow_insecure)"
    )]
    Insecure {
        /// Which permission is wrong.
        detail: String,
    },
    /// The file's hash differs from the one pinned for it.
    #[error(
        "its sha256 is {found}, but {lock_file} pins {expected}: reinstall the pinned file or update the pin"
    )]
    HashMismatch {
        /// The pinned hash.
        expected: String,
        /// The file's hash.
        found: String,
        /// The pin file.
        lock_file: PathBuf,
    },
    /// The folder's pin file could not be used, so none of its libraries is trusted.
    #[error(
        "the pin file {lock_file} cannot be used ({detail}): fix it, or remove it to stop pinning this folder"
    )]
    PinFile {
        /// The pin file.
        lock_file: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The file changed between the checks and the load: it was replaced, removed or modified.
    /// Nothing of the new file was run.
    #[error(
        "it changed after it was checked ({detail}): nothing of it was loaded; discover again (restart the host) to check the new file"
    )]
    Changed {
        /// What changed.
        detail: String,
    },
    /// The operating system could not load the library.
    #[error("the library could not be loaded: {detail}")]
    OpenFailed {
        /// The loader's error.
        detail: String,
    },
    /// abi_stable's load-time checks refused the library: its types do not match the host's.
    #[error(
        "its ABI does not match this host's runtime-api ({summary}): rebuild the plugin against this host's runtime-api"
    )]
    AbiMismatch {
        /// The actionable lines of abi_stable's report (the full text is logged at debug level).
        summary: String,
    },
    /// The manifest and the loaded module disagree.
    #[error(
        "its manifest and its code disagree on {field} (manifest: {manifest}, code: {module}): the file was altered or built wrongly; rebuild it"
    )]
    ManifestMismatch {
        /// What differs.
        field: String,
        /// The manifest's value.
        manifest: String,
        /// The module's value.
        module: String,
    },
    /// The plugin's root module failed or panicked while initialising.
    #[error("its initialisation failed: {detail}")]
    InitFailed {
        /// What failed.
        detail: String,
    },
}

/// A candidate file that was not registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Rejection {
    /// The file as found on the search path.
    pub path: PathBuf,
    /// The file after resolving symlinks, when that worked.
    pub real_path: Option<PathBuf>,
    /// The runtime ids its manifest declares, when it could be read.
    pub runtime_ids: Vec<String>,
    /// Why it was rejected.
    pub reason: RejectReason,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} was not loaded: {}", self.path.display(), self.reason)
    }
}

/// A runtime name provided by a later candidate while an earlier one already had it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Shadowed {
    /// The name (an id, or an alias that collided).
    pub name: String,
    /// The library whose provider was ignored.
    pub path: PathBuf,
    /// Who has the name: a library path, or `built-in`.
    pub kept: String,
}

impl Shadowed {
    /// `name`, provided by the library at `path`, shadowed by `kept`'s.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>, kept: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            path: path.into(),
            kept: kept.into(),
        }
    }
}

impl fmt::Display for Shadowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` in {} is shadowed by {}, found earlier in the search path",
            self.name,
            self.path.display(),
            self.kept
        )
    }
}

/// What happened to one directory of the search path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DirStatus {
    /// Scanned; this many candidate files.
    Scanned {
        /// Files with the library suffix.
        candidates: usize,
    },
    /// It does not exist (not an error: the per-user folder often does not).
    Missing,
    /// It exists but could not be listed, or is not a directory.
    Unreadable {
        /// Why.
        detail: String,
    },
    /// Refused by the permission checks.
    Insecure {
        /// Why.
        detail: String,
    },
}

impl fmt::Display for DirStatus {
    /// `2 candidate file(s)`, `does not exist`, `unreadable: …`, `refused: …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirStatus::Scanned { candidates } => write!(f, "{candidates} candidate file(s)"),
            DirStatus::Missing => f.write_str("does not exist"),
            DirStatus::Unreadable { detail } => write!(f, "unreadable: {detail}"),
            DirStatus::Insecure { detail } => write!(f, "refused: {detail}"),
        }
    }
}

/// One directory of the search path and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DirReport {
    /// The directory.
    pub path: PathBuf,
    /// Where it came from.
    pub origin: DirOrigin,
    /// What happened.
    #[serde(flatten)]
    pub status: DirStatus,
}

/// The outcome of a discovery pass: nothing is silent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DiscoveryReport {
    /// The directories searched, in order.
    pub dirs: Vec<DirReport>,
    /// The libraries registered (one or more runtimes each).
    pub registered: Vec<PathBuf>,
    /// The candidates rejected.
    pub rejected: Vec<Rejection>,
    /// The names shadowed by an earlier provider.
    pub shadowed: Vec<Shadowed>,
}

impl DiscoveryReport {
    /// Whether every candidate was registered without conflict.
    pub fn is_clean(&self) -> bool {
        self.rejected.is_empty() && self.shadowed.is_empty()
    }

    /// Logs the report through `tracing`: a warning per shadowed name (the host gets another
    /// provider than the one it may expect, and nothing else says so), an info event per
    /// rejection (resolving a name a rejected file declares fails with the same reason, so a
    /// warning would say it twice), a debug event per directory.
    pub fn log(&self) {
        for dir in &self.dirs {
            tracing::debug!(path = %dir.path.display(), origin = ?dir.origin, status = ?dir.status, "plugin directory");
        }
        for rejection in &self.rejected {
            tracing::info!(path = %rejection.path.display(), "{rejection}");
        }
        for shadowed in &self.shadowed {
            tracing::warn!(path = %shadowed.path.display(), "{shadowed}");
        }
    }

    /// Adds another pass's findings, skipping what is already recorded, so discovering the
    /// same folders again does not grow the kept report.
    pub fn merge(&mut self, other: DiscoveryReport) {
        fn add<T: PartialEq>(into: &mut Vec<T>, items: Vec<T>) {
            // A fresh registry's first report: nothing to compare against (a report's own
            // items are distinct), and comparing would cost the square of the plugins.
            if into.is_empty() {
                *into = items;
                return;
            }
            for item in items {
                if !into.contains(&item) {
                    into.push(item);
                }
            }
        }
        add(&mut self.dirs, other.dirs);
        add(&mut self.registered, other.registered);
        add(&mut self.rejected, other.rejected);
        add(&mut self.shadowed, other.shadowed);
    }
}

impl fmt::Display for DiscoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for dir in &self.dirs {
            writeln!(
                f,
                "searched {} ({}): {}",
                dir.path.display(),
                dir.origin,
                dir.status
            )?;
        }
        for path in &self.registered {
            writeln!(f, "registered {}", path.display())?;
        }
        for rejection in &self.rejected {
            writeln!(f, "rejected: {rejection}")?;
        }
        for shadowed in &self.shadowed {
            writeln!(f, "shadowed: {shadowed}")?;
        }
        Ok(())
    }
}
