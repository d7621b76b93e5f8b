//! The name table: registered runtimes by id, aliases, and what a name that is not there
//! could have meant.

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use runtime_api::host::RemoteRuntime;
use runtime_api::{RuntimeError, Value};
use rustc_hash::FxHashMap;

use crate::entry::RuntimeEntry;
use crate::error::{Available, ResolveError};
use crate::handle::RuntimeHandle;
use crate::isolation::Isolation;
use crate::library::PluginLibrary;
use runtime_discovery::report::{DiscoveryReport, Rejection};
use runtime_process::CrashLedger;

pub(crate) type BuiltInFactory = fn(Value) -> Result<RemoteRuntime, RuntimeError>;
pub(crate) type BuiltInValidator = fn(&Value) -> Result<Vec<String>, RuntimeError>;

pub(crate) enum Factory {
    Plugin(Arc<PluginLibrary>),
    BuiltIn(BuiltInFactory, BuiltInValidator),
}

pub(crate) struct Registered {
    pub(crate) entry: RuntimeEntry,
    pub(crate) factory: Factory,
    /// The instance with the default (`null`) configuration, kept once created. A failed
    /// creation is not kept: the next resolve tries again.
    pub(crate) default_instance: OnceLock<RuntimeHandle>,
    /// Serialises creating the default instance, so concurrent first resolves create one.
    pub(crate) creating: Mutex<()>,
    /// This runtime's isolation level (`Isolation as u8 + 1`), or 0 for the registry's.
    pub(crate) isolation: AtomicU8,
    /// The instance with the default configuration at the *process* level.
    pub(crate) process_instance: OnceLock<RuntimeHandle>,
    /// Its workers' crashes, and whether it is marked failed.
    pub(crate) ledger: Arc<CrashLedger>,
}

impl Registered {
    pub(crate) fn new(entry: RuntimeEntry, factory: Factory) -> Self {
        Self {
            entry,
            factory,
            default_instance: OnceLock::new(),
            creating: Mutex::new(()),
            isolation: AtomicU8::new(0),
            process_instance: OnceLock::new(),
            ledger: Arc::default(),
        }
    }

    pub(crate) fn instance_slot(&self, level: Isolation) -> &OnceLock<RuntimeHandle> {
        if level.in_process() {
            &self.default_instance
        } else {
            &self.process_instance
        }
    }

    pub(crate) fn isolation(&self, default: Isolation) -> Isolation {
        match self.isolation.load(Ordering::Relaxed) {
            0 => default,
            n => Isolation::ALL
                .get(usize::from(n - 1))
                .copied()
                .unwrap_or(default),
        }
    }
}

#[derive(Default)]
pub(crate) struct State {
    /// id → runtime
    pub(crate) runtimes: FxHashMap<String, Arc<Registered>>,
    /// alias → id
    pub(crate) aliases: FxHashMap<String, String>,
    /// id or alias → runtime: what `resolve` looks up, in one probe.
    pub(crate) names: FxHashMap<String, Arc<Registered>>,
    /// name declared by a rejected candidate → why
    pub(crate) rejected: FxHashMap<String, Rejection>,
    pub(crate) report: DiscoveryReport,
    /// Every search path discovered, in order, for [`Runtimes::rediscover`](crate::Runtimes::rediscover).
    pub(crate) searched: Vec<runtime_discovery::SearchPath>,
    /// Every file discovered by name ([`Runtimes::discover_files`](crate::Runtimes::discover_files)), likewise.
    pub(crate) searched_files: Vec<std::path::PathBuf>,
}

impl State {
    pub(crate) fn lookup(&self, name: &str) -> Option<&Arc<Registered>> {
        self.names.get(name)
    }

    pub(crate) fn add_runtime(&mut self, registered: Registered) {
        self.insert(Arc::new(registered));
    }

    /// Adds a runtime, or replaces the one of its id: its id and every alias pointing at the
    /// id then resolve to it.
    pub(crate) fn insert(&mut self, registered: Arc<Registered>) {
        let id = registered.entry.id.clone();
        for alias in self.aliases_of(&id) {
            self.names.insert(alias, Arc::clone(&registered));
        }
        self.names.insert(id.clone(), Arc::clone(&registered));
        self.runtimes.insert(id, registered);
    }

    /// Points `alias` at the runtime `id` (which exists); returns the previous target.
    pub(crate) fn add_alias(&mut self, alias: &str, id: &str) -> Option<String> {
        if let Some(registered) = self.runtimes.get(id) {
            self.names.insert(alias.to_owned(), Arc::clone(registered));
        }
        self.aliases.insert(alias.to_owned(), id.to_owned())
    }

    pub(crate) fn remove_alias(&mut self, alias: &str) -> Option<String> {
        let target = self.aliases.remove(alias)?;
        self.names.remove(alias);
        Some(target)
    }

    /// Removes a runtime and its aliases; returns the aliases, or `None` if there was none.
    pub(crate) fn remove_runtime(&mut self, id: &str) -> Option<Vec<String>> {
        self.runtimes.remove(id)?;
        self.names.remove(id);
        let aliases = self.aliases_of(id);
        for alias in &aliases {
            self.remove_alias(alias);
        }
        Some(aliases)
    }

    pub(crate) fn aliases_of(&self, id: &str) -> Vec<String> {
        let mut aliases: Vec<String> = self
            .aliases
            .iter()
            .filter(|(_, target)| target.as_str() == id)
            .map(|(alias, _)| alias.clone())
            .collect();
        aliases.sort();
        aliases
    }

    pub(crate) fn entry(&self, registered: &Registered) -> RuntimeEntry {
        let mut entry = registered.entry.clone();
        entry.aliases = self.aliases_of(&entry.id);
        entry
    }

    /// Whether runtime `id` is registered from the library at `real_path`.
    pub(crate) fn provided_by(&self, id: &str, real_path: &Path) -> bool {
        self.runtimes.get(id).is_some_and(|registered| {
            matches!(&registered.factory, Factory::Plugin(library) if library.real_path == real_path)
        })
    }

    /// What has a name, for messages.
    pub(crate) fn holder(&self, name: &str) -> Option<String> {
        if let Some(registered) = self.runtimes.get(name) {
            return Some(format!("a runtime from {}", registered.entry.source));
        }
        self.aliases
            .get(name)
            .map(|target| format!("an alias of `{target}`"))
    }

    pub(crate) fn not_found(&self, name: &str) -> ResolveError {
        if let Some(rejection) = self.rejected.get(name) {
            return ResolveError::Rejected {
                name: name.to_owned(),
                path: rejection.path.clone(),
                reason: rejection.reason.clone(),
            };
        }
        let mut available: Vec<Available> = self
            .runtimes
            .keys()
            .map(|id| Available {
                id: id.clone(),
                aliases: self.aliases_of(id),
            })
            .collect();
        available.sort_by(|a, b| a.id.cmp(&b.id));
        let names = self.runtimes.keys().chain(self.aliases.keys());
        ResolveError::NotFound {
            name: name.to_owned(),
            suggestion: closest(name, names),
            available,
        }
    }
}

/// The closest name, if one is close enough to be a likely typo.
pub(crate) fn closest<'a>(name: &str, names: impl Iterator<Item = &'a String>) -> Option<String> {
    names
        .map(|candidate| (strsim::damerau_levenshtein(name, candidate), candidate))
        .filter(|(distance, candidate)| {
            *distance <= (name.len().max(candidate.len()) / 3).max(1)
                || (name.len() >= 3 && candidate.starts_with(name))
        })
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)))
        .map(|(_, candidate)| candidate.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(crate) fn suggestions_are_close_names_only() {
        let names: Vec<String> = ["echo", "parrot", "openai", "anthropic", "claude"]
            .map(String::from)
            .to_vec();
        let suggest = |n: &str| closest(n, names.iter());
        assert_eq!(suggest("ecko").as_deref(), Some("echo"));
        assert_eq!(suggest("echoo").as_deref(), Some("echo"));
        assert_eq!(suggest("open").as_deref(), Some("openai"));
        assert_eq!(suggest("claud").as_deref(), Some("claude"));
        assert_eq!(suggest("zzzzzz"), None);
        assert_eq!(suggest("x"), None);
    }
}
