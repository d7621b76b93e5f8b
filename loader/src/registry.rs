//! The registry: ids, aliases, and fail-closed resolution. Discovery into it is in
//! `discovery.rs`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use runtime_api::host::RemoteRuntime;
use runtime_api::ids::id_problem;
use runtime_api::{Capabilities, Runtime, RuntimeError, Value};
use rustc_hash::FxHashMap;

use crate::LoaderOptions;
use crate::entry::{RuntimeEntry, RuntimeSource};
use crate::error::{Available, RegistryError, ResolveError};
use crate::handle::{Backend, Hooks, RuntimeHandle, Validator, no_hooks};
use crate::hooks::TurnHook;
use crate::isolation::Isolation;
use crate::library::PluginLibrary;
use runtime_discovery::report::{DiscoveryReport, RejectReason, Rejection, Shadowed};
use runtime_process::{CrashLedger, ProcessRuntime, Spec};

type BuiltInFactory = fn(Value) -> Result<RemoteRuntime, RuntimeError>;
type BuiltInValidator = fn(&Value) -> Result<Vec<String>, RuntimeError>;

enum Factory {
    Plugin(Arc<PluginLibrary>),
    BuiltIn(BuiltInFactory, BuiltInValidator),
}

struct Registered {
    entry: RuntimeEntry,
    factory: Factory,
    /// The instance with the default (`null`) configuration, kept once created. A failed
    /// creation is not kept: the next resolve tries again.
    default_instance: OnceLock<RuntimeHandle>,
    /// Serialises creating the default instance, so concurrent first resolves create one.
    creating: Mutex<()>,
    /// This runtime's isolation level (`Isolation as u8 + 1`), or 0 for the registry's.
    isolation: AtomicU8,
    /// The instance with the default configuration at the *process* level.
    process_instance: OnceLock<RuntimeHandle>,
    /// Its workers' crashes, and whether it is marked failed.
    ledger: Arc<CrashLedger>,
}

impl Registered {
    fn new(entry: RuntimeEntry, factory: Factory) -> Self {
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

    fn instance_slot(&self, level: Isolation) -> &OnceLock<RuntimeHandle> {
        if level.in_process() {
            &self.default_instance
        } else {
            &self.process_instance
        }
    }

    fn isolation(&self, default: Isolation) -> Isolation {
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

    /// Whether runtime `id` is registered from the library at `real_path`.
    fn provided_by(&self, id: &str, real_path: &Path) -> bool {
        self.runtimes.get(id).is_some_and(|registered| {
            matches!(&registered.factory, Factory::Plugin(library) if library.real_path == real_path)
        })
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
    pub(crate) host_contract: u32,
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
            host_contract: runtime_api::version::CONTRACT_VERSION,
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
        let mut hooks = self.hooks.write().unwrap_or_else(PoisonError::into_inner);
        let mut list: Vec<Arc<dyn TurnHook>> = hooks.iter().cloned().collect();
        list.push(hook);
        *hooks = Arc::from(list);
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

    /// Resolves a runtime by id or alias, with its default configuration. The first resolve
    /// of a plugin's runtime loads the library (abi_stable's checks, then the manifest
    /// cross-check) and creates the runtime; later resolves return the same runtime.
    ///
    /// A library refused at load stays refused (the file is what it is). A runtime whose
    /// creation failed (its factory returned an error, for example a backend it checks at
    /// start was down) is not kept: the next resolve tries to create it again.
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
                Some(registered) => {
                    let level = self.level_of(registered);
                    match registered.instance_slot(level).get() {
                        Some(created) if level.in_process() => {
                            return Ok(self.at_level(registered, created));
                        }
                        _ => Arc::clone(registered),
                    }
                }
                None => return Err(state.not_found(name)),
            }
        };
        let level = self.level_of(&registered);
        if !level.in_process() {
            self.check_not_failed(&registered)?;
        }
        let slot = registered.instance_slot(level);
        if let Some(created) = slot.get() {
            return Ok(self.at_level(&registered, created));
        }
        // First resolve: load and create outside the registry's lock, once at a time.
        let _creating = registered
            .creating
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(created) = slot.get() {
            return Ok(self.at_level(&registered, created));
        }
        let created = self.instantiate(&registered, &Value::Null, level)?;
        let created = slot.get_or_init(|| created);
        Ok(self.at_level(&registered, created))
    }

    /// The level a runtime's handles are resolved at: its own, or the registry's; a runtime
    /// compiled into the host never leaves the process.
    fn level_of(&self, registered: &Registered) -> Isolation {
        let level = registered.isolation(self.options.isolation);
        match (&registered.factory, level) {
            (Factory::BuiltIn(..), Isolation::Process) => Isolation::Threads,
            _ => level,
        }
    }

    fn check_not_failed(&self, registered: &Registered) -> Result<(), ResolveError> {
        match registered.ledger.failed() {
            None => Ok(()),
            Some(reason) => Err(ResolveError::Failed {
                name: registered.entry.id.clone(),
                path: match &registered.entry.source {
                    RuntimeSource::Plugin { path, .. } => path.clone(),
                    RuntimeSource::BuiltIn => PathBuf::new(),
                },
                reason,
            }),
        }
    }

    fn at_level(&self, registered: &Registered, handle: &RuntimeHandle) -> RuntimeHandle {
        let level = self.level_of(registered);
        if handle.isolation() == level {
            handle.clone()
        } else {
            handle.with_isolation(level)
        }
    }

    /// Forgets the crashes of a runtime marked failed at the *process* level, so it may be
    /// resolved and run again; `true` if it was marked failed.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Unknown`] when nothing has this name.
    pub fn clear_failed(&self, name: &str) -> Result<bool, RegistryError> {
        let registered = self.find(name).map_err(|_| RegistryError::Unknown {
            name: name.to_owned(),
        })?;
        let was = registered.ledger.failed().is_some();
        registered.ledger.clear();
        Ok(was)
    }

    /// Creates a new instance of a runtime (by id or alias) with `config`, apart from the
    /// shared one [`Runtimes::resolve`] returns. Each call builds a fresh runtime object.
    ///
    /// # Errors
    ///
    /// As [`Runtimes::resolve`]; [`ResolveError::Factory`] carries an `invalid_config` error
    /// listing every problem when the configuration is refused.
    pub fn new_instance(&self, name: &str, config: &Value) -> Result<RuntimeHandle, ResolveError> {
        let registered = self.find(name)?;
        let level = self.level_of(&registered);
        if !level.in_process() {
            self.check_not_failed(&registered)?;
        }
        let handle = self.instantiate(&registered, config, level)?;
        Ok(self.at_level(&registered, &handle))
    }

    /// Every problem the runtime (by id or alias) finds with `config`, without creating a
    /// runtime object: empty when it is valid. A plugin's library is loaded to ask it.
    ///
    /// # Errors
    ///
    /// [`ResolveError::NotFound`] or [`ResolveError::Rejected`] as for
    /// [`Runtimes::resolve`]; [`ResolveError::Factory`] when the validation itself failed
    /// (it panicked).
    pub fn validate_config(&self, name: &str, config: &Value) -> Result<Vec<String>, ResolveError> {
        let registered = self.find(name)?;
        let id = &registered.entry.id;
        let checked = match &registered.factory {
            Factory::BuiltIn(_, validate) => validate(config),
            Factory::Plugin(library) if !self.level_of(&registered).in_process() => {
                ProcessRuntime::validate_once(self.spec(library, id, config), config)
            }
            Factory::Plugin(library) => library
                .validate_config(id, config)
                .map_err(|reason| Self::rejected_at_load(library, id, reason))?,
        };
        checked.map_err(|error| ResolveError::Factory {
            id: id.clone(),
            error,
        })
    }

    fn find(&self, name: &str) -> Result<Arc<Registered>, ResolveError> {
        let state = self.read();
        match state.lookup(name) {
            Some(registered) => Ok(Arc::clone(registered)),
            None => Err(state.not_found(name)),
        }
    }

    fn rejected_at_load(library: &PluginLibrary, id: &str, reason: RejectReason) -> ResolveError {
        ResolveError::Rejected {
            name: id.to_owned(),
            path: library.real_path.clone(),
            reason,
        }
    }

    /// What a worker is started with for runtime `id` of `library`.
    fn spec(&self, library: &PluginLibrary, id: &str, config: &Value) -> Spec {
        Spec {
            library: library.real_path.clone(),
            runtime_id: id.to_owned(),
            config: config.clone(),
            allow_insecure: self.options.allow_insecure,
            options: self.options.process,
        }
    }

    fn instantiate(
        &self,
        registered: &Registered,
        config: &Value,
        level: Isolation,
    ) -> Result<RuntimeHandle, ResolveError> {
        let id = &registered.entry.id;
        let (created, validator): (Result<Backend, RuntimeError>, Validator) = match &registered
            .factory
        {
            Factory::BuiltIn(factory, validate) => {
                let validate = *validate;
                (
                    factory(config.clone()).map(Backend::InProcess),
                    Arc::new(validate),
                )
            }
            Factory::Plugin(library) if !level.in_process() => {
                let spec = self.spec(library, id, config);
                let created = ProcessRuntime::create(spec.clone(), Arc::clone(&registered.ledger));
                let validator: Validator = Arc::new(move |config: &Value| {
                    ProcessRuntime::validate_once(spec.clone(), config)
                });
                (created.map(Backend::Process), validator)
            }
            Factory::Plugin(library) => {
                let created = library
                    .instantiate(id, config)
                    .map_err(|reason| Self::rejected_at_load(library, id, reason))?;
                let library = Arc::clone(library);
                let runtime_id = id.clone();
                let validator: Validator = Arc::new(move |config: &Value| {
                    library
                        .validate_config(&runtime_id, config)
                        .unwrap_or_else(|reason| {
                            Err(RuntimeError::internal(format!(
                                "the plugin library was refused: {reason}"
                            )))
                        })
                });
                (created.map(Backend::InProcess), validator)
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
            validator,
            level,
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
