//! Resolution: a name to a handle at its isolation level, creating the runtime (in this
//! process or in a worker) the first time, failing closed.

use std::path::PathBuf;
use std::sync::{Arc, PoisonError};

use runtime_api::{RuntimeError, Value};

use crate::entry::RuntimeSource;
use crate::error::{RegistryError, ResolveError};
use crate::handle::{Backend, RuntimeHandle, Validator};
use crate::isolation::Isolation;
use crate::library::PluginLibrary;
use crate::names::*;
use crate::registry::Runtimes;
use runtime_discovery::report::RejectReason;
use runtime_process::{ProcessRuntime, Spec};

impl Runtimes {
    /// [`Runtimes::resolve`] for async hosts. The first resolve of a runtime loads its library
    /// and runs its factory (at the process level: starts its worker and waits for it), which
    /// can take seconds; that runs on tokio's blocking pool, so the caller's executor thread is
    /// never held. A runtime already created resolves at once, on the caller's thread.
    ///
    /// # Errors
    ///
    /// As [`Runtimes::resolve`]; [`ResolveError::Factory`] when the blocking task could not
    /// run (the runtime is shutting down).
    pub async fn resolve_async(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<RuntimeHandle, ResolveError> {
        if let Some(created) = self.created(name) {
            return Ok(created);
        }
        let runtimes = Arc::clone(self);
        let owned = name.to_owned();
        tokio::task::spawn_blocking(move || runtimes.resolve(&owned))
            .await
            .unwrap_or_else(|error| Err(Self::not_run(name, &error)))
    }

    /// [`Runtimes::new_instance`] for async hosts: loading and the factory run on tokio's
    /// blocking pool (see [`Runtimes::resolve_async`]).
    ///
    /// # Errors
    ///
    /// As [`Runtimes::new_instance`].
    pub async fn new_instance_async(
        self: &Arc<Self>,
        name: &str,
        config: &Value,
    ) -> Result<RuntimeHandle, ResolveError> {
        let runtimes = Arc::clone(self);
        let (owned, config) = (name.to_owned(), config.clone());
        tokio::task::spawn_blocking(move || runtimes.new_instance(&owned, &config))
            .await
            .unwrap_or_else(|error| Err(Self::not_run(name, &error)))
    }

    /// A blocking resolve that did not run (its task was cancelled or panicked).
    fn not_run(name: &str, error: &tokio::task::JoinError) -> ResolveError {
        ResolveError::Factory {
            id: name.to_owned(),
            error: RuntimeError::internal(format!("the resolve did not run: {error}")),
        }
    }

    /// The handle of a runtime already created at its level, if it is (no loading, no lock
    /// held for long).
    fn created(&self, name: &str) -> Option<RuntimeHandle> {
        let state = self.read();
        let registered = state.lookup(name)?;
        let level = self.level_of(registered);
        if !level.in_process() && registered.ledger.failed().is_some() {
            return None;
        }
        registered
            .instance_slot(level)
            .get()
            .map(|created| self.at_level(registered, created))
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

    /// The runtimes marked failed at the *process* level now (too many worker crashes), with
    /// why and how long each mark still holds, sorted by id.
    pub fn failed_marks(&self) -> Vec<FailedMark> {
        let state = self.read();
        let mut marks: Vec<FailedMark> = state
            .runtimes
            .values()
            .filter_map(|registered| {
                let (reason, expires_in) = registered.ledger.failed_mark()?;
                Some(FailedMark {
                    id: registered.entry.id.clone(),
                    reason,
                    expires_in,
                })
            })
            .collect();
        marks.sort_by(|a, b| a.id.cmp(&b.id));
        marks
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
                ProcessRuntime::validate_once(self.spec(library, id, config)?, config)
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

    /// What the workers of a runtime (by id or alias) created with `config` may do at the
    /// process level: what it declares (its manifest's `permissions`, with `config`'s values
    /// in place of its variables) and what the [`ProcessOptions`](crate::ProcessOptions)
    /// grant, less what they deny. This is exactly the policy its workers are started with,
    /// and what the kernel enforces. `None` when the options turn the sandbox off.
    ///
    /// # Errors
    ///
    /// [`ResolveError::NotFound`] as for [`Runtimes::resolve`];
    /// [`ResolveError::Factory`] with an `unavailable` error when a denial cannot be enforced
    /// (it lies inside a wider grant), which is also why its workers would not start.
    pub fn sandbox_policy(
        &self,
        name: &str,
        config: &Value,
    ) -> Result<Option<runtime_process::sandbox::Policy>, ResolveError> {
        let registered = self.find(name)?;
        let id = &registered.entry.id;
        let process = &self.options.process;
        if !process.sandbox {
            return Ok(None);
        }
        let declared = match &registered.factory {
            Factory::Plugin(library) => self.declared_policy(library, id, config),
            Factory::BuiltIn(..) => runtime_process::sandbox::Policy::default(),
        };
        let mut names = vec![id.as_str()];
        names.extend(registered.entry.aliases.iter().map(String::as_str));
        process
            .policy_for(&names, &declared)
            .map(Some)
            .map_err(|error| ResolveError::Factory {
                id: id.clone(),
                error: RuntimeError::unavailable(format!(
                    "runtime `{id}` cannot run at the process level: {error}"
                ))
                .with_metadata(serde_json::json!({"error": "sandbox_unenforceable"})),
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

    /// What runtime `id` of `library` declares it needs, with `config`.
    fn declared_policy(
        &self,
        library: &PluginLibrary,
        id: &str,
        config: &Value,
    ) -> runtime_process::sandbox::Policy {
        let declared = library
            .manifest
            .runtimes
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| serde_json::from_str(&r.permissions_text).ok())
            .unwrap_or(Value::Null);
        let folder = library
            .real_path
            .parent()
            .unwrap_or(std::path::Path::new("/"));
        crate::permissions::declared_policy(&declared, config, folder, id)
    }

    /// What a worker is started with for runtime `id` of `library`: the checked open file,
    /// re-verified now as an in-process load would be (so a file swapped, modified or failing
    /// its pin is refused here, with the same reason, and no worker starts).
    fn spec(
        &self,
        library: &PluginLibrary,
        id: &str,
        config: &Value,
    ) -> Result<Spec, ResolveError> {
        let checked = library
            .for_worker()
            .map_err(|reason| Self::rejected_at_load(library, id, reason))?;
        Ok(Spec::new(
            library.real_path.clone(),
            id.to_owned(),
            config.clone(),
            self.options.allow_insecure,
            self.options.process,
        )
        .with_checked(checked)
        .with_aliases(
            library
                .manifest
                .runtimes
                .iter()
                .find(|r| r.id == id)
                .map(|r| r.aliases.clone())
                .unwrap_or_default(),
        )
        .with_declared(&self.declared_policy(library, id, config)))
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
                let spec = self.spec(library, id, config)?;
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

/// A runtime marked failed at the process level ([`Runtimes::failed_marks`]): resolving it
/// fails with [`ResolveError::Failed`] until the mark expires or
/// [`Runtimes::clear_failed`] clears it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailedMark {
    /// The runtime's id.
    pub id: String,
    /// Why: how many crashes, in what window, and how the last one ended.
    pub reason: String,
    /// How long the mark still holds.
    pub expires_in: std::time::Duration,
}
