//! The registry: [`Runtimes`], what is registered and how (plugins, built-ins, aliases,
//! hooks, levels). The name table is `names.rs`, resolution `resolve.rs`, discovery into it
//! `discovery.rs`.

use std::fmt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use runtime_api::host::RemoteRuntime;
use runtime_api::ids::id_problem;
use runtime_api::{Capabilities, Runtime};
use rustc_hash::FxHashMap;

use crate::LoaderOptions;
use crate::entry::{RuntimeEntry, RuntimeSource};
use crate::error::RegistryError;
use crate::handle::{Hooks, RuntimeHandle};
use crate::hooks::TurnHook;
use crate::isolation::Isolation;
use crate::library::PluginLibrary;
use crate::names::*;
use runtime_discovery::report::{DiscoveryReport, Rejection, Shadowed};

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
    pub(crate) state: RwLock<State>,
    pub(crate) hooks: Hooks,
    pub(crate) options: LoaderOptions,
    pub(crate) host_contract: u32,
    /// Held by [`Runtimes::rediscover`] from its scan to its merge.
    pub(crate) reloading: std::sync::Mutex<()>,
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
            hooks: Hooks::default(),
            options,
            host_contract: runtime_api::version::CONTRACT_VERSION,
            reloading: std::sync::Mutex::new(()),
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, State> {
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
            if state.provided_by(&declared.id, &library.real_path) {
                // Discovered again: the same file already provides it.
                registered_any = true;
                continue;
            }
            if state.runtimes.contains_key(&declared.id) || state.aliases.contains_key(&declared.id)
            {
                report.shadowed.push(Shadowed::new(
                    declared.id.clone(),
                    path.to_owned(),
                    kept_by(&state, &declared.id),
                ));
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
                config_schema_text: declared.config_schema_text.as_str().into(),
                permissions: serde_json::from_str(&declared.permissions_text)
                    .unwrap_or(serde_json::Value::Null),
                source: RuntimeSource::Plugin {
                    path: library.real_path.clone(),
                    plugin_name: library.manifest.plugin_name.clone(),
                },
            };
            state.add_runtime(Registered::new(
                entry,
                Factory::Plugin(Arc::clone(&library)),
            ));
            registered_any = true;
            for alias in &declared.aliases {
                if state.runtimes.contains_key(alias) || state.aliases.contains_key(alias) {
                    report.shadowed.push(Shadowed::new(
                        alias.clone(),
                        path.to_owned(),
                        kept_by(&state, alias),
                    ));
                } else {
                    state.add_alias(alias, &declared.id);
                }
            }
        }
        // Once per path, however often it was named (compared as bytes: cheap).
        let already = report
            .registered
            .iter()
            .any(|p| p.as_os_str() == path.as_os_str());
        if registered_any && !already {
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
            config_schema_text: R::CONFIG_SCHEMA.into(),
            permissions: serde_json::Value::Null,
            source: RuntimeSource::BuiltIn,
        };
        state.add_runtime(Registered::new(
            entry,
            Factory::BuiltIn(
                RemoteRuntime::in_process::<R>,
                RemoteRuntime::validate_in_process::<R>,
            ),
        ));
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
        // Every alias once, grouped by its target (not a scan of all aliases per runtime).
        let mut aliases: FxHashMap<&str, Vec<String>> = FxHashMap::default();
        for (alias, target) in &state.aliases {
            aliases
                .entry(target.as_str())
                .or_default()
                .push(alias.clone());
        }
        let mut entries: Vec<RuntimeEntry> = state
            .runtimes
            .values()
            .map(|registered| {
                let mut entry = registered.entry.clone();
                entry.aliases = aliases.remove(entry.id.as_str()).unwrap_or_default();
                entry.aliases.sort();
                entry
            })
            .collect();
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
        self.hooks.add(hook);
    }

    /// Waits until no runtime created by [`Runtimes::resolve`] still runs a turn inside its
    /// plugin (see [`RuntimeHandle::wait_idle`]); instances from [`Runtimes::new_instance`]
    /// are their owners' to wait for. Bound it with a timeout.
    pub async fn wait_idle(&self) {
        let created: Vec<RuntimeHandle> = self
            .read()
            .runtimes
            .values()
            .filter_map(|registered| registered.default_instance.get().cloned())
            .collect();
        for handle in created {
            if let Err(error) = handle.wait_idle().await {
                tracing::warn!(runtime = %handle.id(), %error, "could not wait for the runtime's turns to end");
            }
        }
    }

    /// Sets the isolation level of one runtime (given by id or alias), overriding the
    /// registry's ([`LoaderOptions::isolation`]) for handles resolved from now on.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Unknown`] when nothing has this name.
    pub fn set_isolation(&self, name: &str, isolation: Isolation) -> Result<(), RegistryError> {
        let state = self.read();
        let registered = state.lookup(name).ok_or_else(|| RegistryError::Unknown {
            name: name.to_owned(),
        })?;
        let code = Isolation::ALL
            .iter()
            .position(|level| *level == isolation)
            .map_or(0, |i| i as u8 + 1);
        registered.isolation.store(code, Ordering::Relaxed);
        Ok(())
    }
}
