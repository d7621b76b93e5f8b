//! The registry: ids, aliases, and fail-closed resolution. Discovery into it is in
//! `discovery.rs`.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use runtime_api::host::RemoteRuntime;
use runtime_api::ids::id_problem;
use runtime_api::{Capabilities, Runtime, RuntimeError, Value};
use rustc_hash::FxHashMap;
use semver::Version;

use crate::entry::{RuntimeEntry, RuntimeSource};
use crate::error::{Available, RegistryError, ResolveError};
use crate::handle::{Hooks, RuntimeHandle, no_hooks};
use crate::hooks::TurnHook;
use crate::library::PluginLibrary;
use crate::report::{DiscoveryReport, Rejection, Shadowed};
use crate::security::LoaderOptions;

type BuiltInFactory = fn(Value) -> Result<RemoteRuntime, RuntimeError>;

enum Factory {
    Plugin(Arc<PluginLibrary>),
    BuiltIn(BuiltInFactory),
}

struct Registered {
    entry: RuntimeEntry,
    factory: Factory,
    /// The instance with the default (`null`) configuration, created at the first resolve.
    default_instance: OnceLock<Result<RuntimeHandle, ResolveError>>,
}

#[derive(Default)]
struct State {
    /// id → runtime
    runtimes: FxHashMap<String, Arc<Registered>>,
    /// alias → id
    aliases: FxHashMap<String, String>,
    /// id or alias → runtime: what `resolve` looks up, in one probe.
    names: FxHashMap<String, Arc<Registered>>,
    /// name declared by a rejected candidate → why
    rejected: FxHashMap<String, Rejection>,
    report: DiscoveryReport,
}

impl State {
    fn lookup(&self, name: &str) -> Option<&Arc<Registered>> {
        self.names.get(name)
    }

    fn add_runtime(&mut self, registered: Registered) {
        let registered = Arc::new(registered);
        let id = registered.entry.id.clone();
        self.names.insert(id.clone(), Arc::clone(&registered));
        self.runtimes.insert(id, registered);
    }

    /// Points `alias` at the runtime `id` (which exists); returns the previous target.
    fn add_alias(&mut self, alias: &str, id: &str) -> Option<String> {
        if let Some(registered) = self.runtimes.get(id) {
            self.names.insert(alias.to_owned(), Arc::clone(registered));
        }
        self.aliases.insert(alias.to_owned(), id.to_owned())
    }

    fn remove_alias(&mut self, alias: &str) -> Option<String> {
        let target = self.aliases.remove(alias)?;
        self.names.remove(alias);
        Some(target)
    }

    /// Removes a runtime and its aliases; returns the aliases, or `None` if there was none.
    fn remove_runtime(&mut self, id: &str) -> Option<Vec<String>> {
        self.runtimes.remove(id)?;
        self.names.remove(id);
        let aliases = self.aliases_of(id);
        for alias in &aliases {
            self.remove_alias(alias);
        }
        Some(aliases)
    }

    fn aliases_of(&self, id: &str) -> Vec<String> {
        let mut aliases: Vec<String> = self
            .aliases
            .iter()
            .filter(|(_, target)| target.as_str() == id)
            .map(|(alias, _)| alias.clone())
            .collect();
        aliases.sort();
        aliases
    }

    fn entry(&self, registered: &Registered) -> RuntimeEntry {
        let mut entry = registered.entry.clone();
        entry.aliases = self.aliases_of(&entry.id);
        entry
    }

    /// What has a name, for messages.
    fn holder(&self, name: &str) -> Option<String> {
        if let Some(registered) = self.runtimes.get(name) {
            return Some(format!("a runtime from {}", registered.entry.source));
        }
        self.aliases
            .get(name)
            .map(|target| format!("an alias of `{target}`"))
    }

    fn not_found(&self, name: &str) -> ResolveError {
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
fn closest<'a>(name: &str, names: impl Iterator<Item = &'a String>) -> Option<String> {
    names
        .map(|candidate| (strsim::damerau_levenshtein(name, candidate), candidate))
        .filter(|(distance, candidate)| {
            *distance <= (name.len().max(candidate.len()) / 3).max(1)
                || (name.len() >= 3 && candidate.starts_with(name))
        })
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)))
        .map(|(_, candidate)| candidate.clone())
}

/// What `unregister` removed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unregistered {
    /// A runtime, with the aliases that pointed at it.
    Runtime {
        /// Its id.
        id: String,
        /// Its aliases, sorted.
        aliases: Vec<String>,
    },
    /// An alias only; its runtime stays.
    Alias {
        /// The alias.
        alias: String,
        /// The runtime it pointed at.
        target: String,
    },
}

/// The registry of agent runtimes: plugins discovered on a search path and runtimes compiled
/// into the host, by id and alias.
///
/// Ids and aliases share one namespace and an alias never shadows an id. Discovery reads
/// manifests only; a library is loaded at the first resolve of one of its runtimes, and never
/// unloaded. Resolution fails closed. All methods take `&self` and are safe to call from many
/// tasks at once; share the registry in an `Arc`.
///
/// # Examples
///
/// ```no_run
/// use runtime_loader::{Runtimes, SearchPath};
///
/// let runtimes = Runtimes::new();
/// let report = runtimes.discover(&SearchPath::standard(["./plugins"]));
/// print!("{report}");
/// for entry in runtimes.list_runtimes() {
///     println!("{} {:?} {}", entry.id, entry.aliases, entry.source);
/// }
/// ```
pub struct Runtimes {
    state: RwLock<State>,
    hooks: Hooks,
    pub(crate) options: LoaderOptions,
    pub(crate) host_version: Version,
}

impl fmt::Debug for Runtimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.read();
        f.debug_struct("Runtimes")
            .field("runtimes", &state.runtimes.len())
            .field("aliases", &state.aliases.len())
            .field("options", &self.options)
            .finish()
    }
}

impl Default for Runtimes {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtimes {
    /// An empty registry with options from the environment ([`LoaderOptions::from_env`]).
    pub fn new() -> Self {
        Self::with_options(LoaderOptions::from_env())
    }

    /// An empty registry with these options.
    pub fn with_options(options: LoaderOptions) -> Self {
        Self {
            state: RwLock::new(State::default()),
            hooks: no_hooks(),
            options,
            host_version: runtime_api::version::api_version(),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps a pass's report and the names its rejected candidates declared.
    pub(crate) fn record(&self, report: DiscoveryReport) -> DiscoveryReport {
        let mut state = self.write();
        for rejection in &report.rejected {
            for name in &rejection.runtime_ids {
                state
                    .rejected
                    .entry(name.clone())
                    .or_insert_with(|| rejection.clone());
            }
        }
        state.report.merge(report.clone());
        drop(state);
        report.log();
        report
    }

    pub(crate) fn register_library(
        &self,
        path: &Path,
        library: PluginLibrary,
        report: &mut DiscoveryReport,
    ) {
        let library = Arc::new(library);
        let kept_by = |state: &State, name: &str| state.holder(name).unwrap_or_default();
        let mut state = self.write();
        let mut registered_any = false;
        for declared in &library.manifest.runtimes {
            if state.runtimes.contains_key(&declared.id) || state.aliases.contains_key(&declared.id)
            {
                report.shadowed.push(Shadowed {
                    name: declared.id.clone(),
                    path: path.to_owned(),
                    kept: kept_by(&state, &declared.id),
                });
                continue;
            }
            let entry = RuntimeEntry {
                id: declared.id.clone(),
                display_name: declared.display_name.clone(),
                description: declared.description.clone(),
                version: library.manifest.plugin_version.clone(),
                api_version: library.manifest.api_version.clone(),
                aliases: Vec::new(),
                capabilities: declared.capabilities,
                source: RuntimeSource::Plugin {
                    path: library.real_path.clone(),
                    plugin_name: library.manifest.plugin_name.clone(),
                },
            };
            state.add_runtime(Registered {
                entry,
                factory: Factory::Plugin(Arc::clone(&library)),
                default_instance: OnceLock::new(),
            });
            registered_any = true;
            for alias in &declared.aliases {
                if state.runtimes.contains_key(alias) || state.aliases.contains_key(alias) {
                    report.shadowed.push(Shadowed {
                        name: alias.clone(),
                        path: path.to_owned(),
                        kept: kept_by(&state, alias),
                    });
                } else {
                    state.add_alias(alias, &declared.id);
                }
            }
        }
        if registered_any {
            report.registered.push(path.to_owned());
        }
    }

    /// The report of every discovery pass since the registry was created or cleared.
    pub fn report(&self) -> DiscoveryReport {
        self.read().report.clone()
    }

    /// Registers a runtime compiled into the host, exactly as a plugin's runtime is
    /// registered: by its id and aliases, created at the first resolve, with the same
    /// guarantees (panics caught, cancellation by id).
    ///
    /// # Errors
    ///
    /// [`RegistryError::InvalidName`] for an invalid id or alias;
    /// [`RegistryError::AlreadyRegistered`] when a name is taken.
    pub fn register<R: Runtime>(&self) -> Result<(), RegistryError> {
        let names = std::iter::once(R::ID).chain(R::ALIASES.iter().copied());
        for name in names.clone() {
            if let Some(problem) = id_problem(name) {
                return Err(RegistryError::InvalidName {
                    name: name.to_owned(),
                    problem,
                });
            }
        }
        let mut state = self.write();
        for name in names {
            if let Some(by) = state.holder(name) {
                return Err(RegistryError::AlreadyRegistered {
                    name: name.to_owned(),
                    by,
                });
            }
        }
        let entry = RuntimeEntry {
            id: R::ID.to_owned(),
            display_name: R::DISPLAY_NAME.to_owned(),
            description: R::DESCRIPTION.to_owned(),
            version: String::new(),
            api_version: runtime_api::version::API_VERSION_STR.to_owned(),
            aliases: Vec::new(),
            capabilities: R::CAPABILITIES.with(Capabilities::CANCELLATION),
            source: RuntimeSource::BuiltIn,
        };
        state.add_runtime(Registered {
            entry,
            factory: Factory::BuiltIn(RemoteRuntime::in_process::<R>),
            default_instance: OnceLock::new(),
        });
        for alias in R::ALIASES {
            state.add_alias(alias, R::ID);
        }
        state.rejected.remove(R::ID);
        Ok(())
    }

    /// Removes a runtime (with its aliases) or, given an alias, only that alias.
    ///
    /// Handles already resolved keep working.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Unknown`] when nothing has this name.
    pub fn unregister(&self, name: &str) -> Result<Unregistered, RegistryError> {
        let mut state = self.write();
        if let Some(aliases) = state.remove_runtime(name) {
            return Ok(Unregistered::Runtime {
                id: name.to_owned(),
                aliases,
            });
        }
        match state.remove_alias(name) {
            Some(target) => Ok(Unregistered::Alias {
                alias: name.to_owned(),
                target,
            }),
            None => Err(RegistryError::Unknown {
                name: name.to_owned(),
            }),
        }
    }

    /// Whether a runtime id or alias resolves to a registered runtime.
    pub fn is_registered(&self, name: &str) -> bool {
        self.read().lookup(name).is_some()
    }

    /// Every registered runtime, sorted by id, with its aliases.
    pub fn list_runtimes(&self) -> Vec<RuntimeEntry> {
        let state = self.read();
        let mut entries: Vec<RuntimeEntry> =
            state.runtimes.values().map(|r| state.entry(r)).collect();
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        entries
    }

    /// Every registered runtime id, sorted.
    pub fn list_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().runtimes.keys().cloned().collect();
        names.sort();
        names
    }

    /// The entry of the runtime with this id or alias.
    pub fn get_entry(&self, name: &str) -> Option<RuntimeEntry> {
        let state = self.read();
        state.lookup(name).map(|r| state.entry(r))
    }

    /// Why a name declared by a rejected candidate is not registered, if it is one.
    pub fn rejection(&self, name: &str) -> Option<Rejection> {
        self.read().rejected.get(name).cloned()
    }

    /// Adds an alias for an existing runtime (given by id or alias).
    ///
    /// # Errors
    ///
    /// [`RegistryError::InvalidName`], [`RegistryError::Unknown`] (no such target),
    /// [`RegistryError::AliasShadowsId`] (the alias is an id), or
    /// [`RegistryError::AliasTaken`] (it already points elsewhere: see
    /// [`Runtimes::repoint_alias`]). Adding an alias that already points at the target is a
    /// no-op.
    pub fn add_alias(&self, alias: &str, target: &str) -> Result<(), RegistryError> {
        self.set_alias(alias, target, false).map(|_| ())
    }

    /// Points an alias at a runtime, replacing its current target; returns the previous one.
    ///
    /// # Errors
    ///
    /// As [`Runtimes::add_alias`], except that an alias pointing elsewhere is re-pointed.
    pub fn repoint_alias(
        &self,
        alias: &str,
        target: &str,
    ) -> Result<Option<String>, RegistryError> {
        self.set_alias(alias, target, true)
    }

    fn set_alias(
        &self,
        alias: &str,
        target: &str,
        repoint: bool,
    ) -> Result<Option<String>, RegistryError> {
        if let Some(problem) = id_problem(alias) {
            return Err(RegistryError::InvalidName {
                name: alias.to_owned(),
                problem,
            });
        }
        let mut state = self.write();
        let target_id = match state.lookup(target) {
            Some(registered) => registered.entry.id.clone(),
            None => {
                return Err(RegistryError::Unknown {
                    name: target.to_owned(),
                });
            }
        };
        if state.runtimes.contains_key(alias) {
            return Err(RegistryError::AliasShadowsId {
                alias: alias.to_owned(),
            });
        }
        match state.aliases.get(alias) {
            Some(current) if *current == target_id => return Ok(Some(target_id)),
            Some(current) if !repoint => {
                return Err(RegistryError::AliasTaken {
                    alias: alias.to_owned(),
                    current: current.clone(),
                    requested: target_id,
                });
            }
            _ => {}
        }
        Ok(state.add_alias(alias, &target_id))
    }

    /// Removes an alias; returns the runtime it pointed at.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Unknown`] when there is no such alias (an id is not an alias: use
    /// [`Runtimes::unregister`]).
    pub fn remove_alias(&self, alias: &str) -> Result<String, RegistryError> {
        self.write()
            .remove_alias(alias)
            .ok_or_else(|| RegistryError::Unknown {
                name: alias.to_owned(),
            })
    }

    /// Removes every runtime, alias, rejection and report. Handles already resolved keep
    /// working, and loaded libraries stay loaded.
    pub fn clear(&self) {
        *self.write() = State::default();
    }

    /// Installs a hook called around every turn of every handle this registry resolves
    /// (including handles resolved before).
    pub fn add_hook(&self, hook: Arc<dyn TurnHook>) {
        let mut hooks = self.hooks.write().unwrap_or_else(PoisonError::into_inner);
        let mut list: Vec<Arc<dyn TurnHook>> = hooks.iter().cloned().collect();
        list.push(hook);
        *hooks = Arc::from(list);
    }

    /// Resolves a runtime by id or alias, with its default configuration. The first resolve
    /// of a plugin's runtime loads the library (abi_stable's checks, then the manifest
    /// cross-check) and creates the runtime; later resolves return the same runtime.
    ///
    /// # Errors
    ///
    /// [`ResolveError::NotFound`] naming what is available and the closest name;
    /// [`ResolveError::Rejected`] saying why a plugin that declares the name was not loaded;
    /// [`ResolveError::Factory`] when the runtime could not be created.
    pub fn resolve(&self, name: &str) -> Result<RuntimeHandle, ResolveError> {
        // Fast path: the runtime exists and was created already; one read lock, one clone.
        let registered = {
            let state = self.read();
            match state.lookup(name) {
                Some(registered) => match registered.default_instance.get() {
                    Some(created) => return created.clone(),
                    None => Arc::clone(registered),
                },
                None => return Err(state.not_found(name)),
            }
        };
        // First resolve: load and create outside the lock, once.
        registered
            .default_instance
            .get_or_init(|| self.instantiate(&registered, &Value::Null))
            .clone()
    }

    /// Resolves a runtime by id or alias and creates a new instance of it with `config`.
    ///
    /// # Errors
    ///
    /// As [`Runtimes::resolve`].
    pub fn resolve_with_config(
        &self,
        name: &str,
        config: &Value,
    ) -> Result<RuntimeHandle, ResolveError> {
        let registered = self.find(name)?;
        self.instantiate(&registered, config)
    }

    fn find(&self, name: &str) -> Result<Arc<Registered>, ResolveError> {
        let state = self.read();
        match state.lookup(name) {
            Some(registered) => Ok(Arc::clone(registered)),
            None => Err(state.not_found(name)),
        }
    }

    fn instantiate(
        &self,
        registered: &Registered,
        config: &Value,
    ) -> Result<RuntimeHandle, ResolveError> {
        let id = &registered.entry.id;
        let created = match &registered.factory {
            Factory::BuiltIn(factory) => factory(config.clone()),
            Factory::Plugin(library) => {
                let first_load = !library.is_loaded();
                let created = library.instantiate(id, config);
                match created {
                    Ok(created) => created,
                    Err(reason) => {
                        if first_load {
                            tracing::warn!(path = %library.real_path.display(), runtime = %id, "plugin library rejected at load: {reason}");
                        }
                        return Err(ResolveError::Rejected {
                            name: id.clone(),
                            path: library.real_path.clone(),
                            reason,
                        });
                    }
                }
            }
        };
        let runtime = created.map_err(|error| ResolveError::Factory {
            id: id.clone(),
            error,
        })?;
        Ok(RuntimeHandle::new(
            id.clone(),
            registered.entry.capabilities,
            runtime,
            Arc::clone(&self.hooks),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_close_names_only() {
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
