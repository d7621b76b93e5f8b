//! Errors of the registry and of resolution.

use std::fmt;
use std::path::PathBuf;

use runtime_api::RuntimeError;
use serde::Serialize;

use runtime_discovery::report::RejectReason;

/// A runtime that can be resolved, as a fail-closed error lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Available {
    /// The id.
    pub id: String,
    /// Its aliases, sorted.
    pub aliases: Vec<String>,
}

impl fmt::Display for Available {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)?;
        if !self.aliases.is_empty() {
            write!(f, " (alias {})", self.aliases.join(", "))?;
        }
        Ok(())
    }
}

/// Why `resolve` returned no runtime. Resolution fails closed: nothing is guessed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// No runtime or alias has this name.
    #[error("{}", not_found(name, available, suggestion.as_deref()))]
    NotFound {
        /// The name asked for.
        name: String,
        /// Every runtime that can be resolved, sorted by id.
        available: Vec<Available>,
        /// The closest id or alias, if one is close.
        suggestion: Option<String>,
    },
    /// A plugin declares this name but was refused, at discovery (its type, permissions, pin,
    /// manifest...) or when it was loaded (changed since discovery, ABI, manifest mismatch).
    /// The reason says what to do, and names `--allow-insecure` /
    /// `AGENT_RUNTIMES_ALLOW_INSECURE` when that is the way out.
    #[error("`{name}` is provided by {}, which was refused: {reason}", path.display())]
    Rejected {
        /// The name asked for.
        name: String,
        /// The library that declares it.
        path: PathBuf,
        /// Why it was rejected.
        reason: RejectReason,
    },
    /// At the *process* level: the runtime's workers crashed too often within the window
    /// ([`ProcessOptions::max_crashes`](crate::ProcessOptions)), so it is not started again
    /// until the mark expires ([`ProcessOptions::failed_for`](crate::ProcessOptions), 5
    /// minutes by default), [`Runtimes::clear_failed`](crate::Runtimes::clear_failed) or a
    /// restart. Workers the host stopped itself (a turn that did not let go of a cancel or a
    /// timeout, an unanswered ping) do not count.
    #[error("runtime `{name}` (plugin {}) is marked failed: {reason}. Fix or remove the plugin; `Runtimes::clear_failed` lets it be tried again", path.display())]
    Failed {
        /// The runtime's id.
        name: String,
        /// The library.
        path: PathBuf,
        /// The crashes, and how the last worker died.
        reason: String,
    },
    /// The runtime's factory refused the configuration, failed, or panicked.
    #[error("runtime `{id}` could not be created: {error}")]
    Factory {
        /// The runtime's id.
        id: String,
        /// The factory's error (kind `panicked` for a panic).
        error: RuntimeError,
    },
}

fn not_found(name: &str, available: &[Available], suggestion: Option<&str>) -> String {
    let mut text = format!("no runtime named `{name}`.");
    if let Some(suggestion) = suggestion {
        text.push_str(&format!(" Did you mean `{suggestion}`?"));
    }
    if available.is_empty() {
        text.push_str(
            " No runtime is installed: copy a plugin library into a plugin folder, or install one with `runtimes install <file>`.",
        );
    } else {
        let list: Vec<String> = available.iter().map(ToString::to_string).collect();
        text.push_str(&format!(" Available: {}.", list.join(", ")));
        text.push_str(" View all installed runtimes with `runtimes list --all`.");
    }
    text
}

/// Why a registry change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The name is not a valid id or alias.
    #[error("`{name}` is not a valid runtime name: {problem}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        problem: String,
    },
    /// The id is already taken by a runtime or an alias.
    #[error("`{name}` is already registered ({by}): unregister it first")]
    AlreadyRegistered {
        /// The name.
        name: String,
        /// What has it: `a runtime from <source>` or `an alias of <id>`.
        by: String,
    },
    /// An alias may not shadow an id.
    #[error("`{alias}` is the id of a runtime: an alias never shadows an id")]
    AliasShadowsId {
        /// The alias.
        alias: String,
    },
    /// The alias already points elsewhere; re-pointing it is explicit.
    #[error(
        "the alias `{alias}` already points at `{current}`: use repoint_alias to point it at `{requested}`"
    )]
    AliasTaken {
        /// The alias.
        alias: String,
        /// Its target now.
        current: String,
        /// The target asked for.
        requested: String,
    },
    /// The target of an alias (or the name to remove) does not exist.
    #[error("no runtime or alias named `{name}`")]
    Unknown {
        /// The name.
        name: String,
    },
}
