//! Discovering again while serving ([`Runtimes::rediscover`]): a plugin file upgraded in
//! place (or moved, added, removed) changes what new resolves get; turns already running
//! finish on what they started with.
//!
//! At the process level this is an upgrade without a restart: the old runtime's workers serve
//! their running turns (each turn holds its worker's runtime) and stop when the last one ends,
//! while new turns start workers of the new file. A library this process has loaded itself
//! (the inline and threads levels) is never unloaded, so its runtime is kept and reported as
//! needing a restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use runtime_discovery::DiscoveryReport;

use crate::names::{Factory, Registered, State};
use crate::registry::Runtimes;

/// What [`Runtimes::rediscover`] changed.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Rediscovered {
    /// Runtimes whose file changed: new resolves get the new file's runtime.
    pub upgraded: Vec<String>,
    /// Runtimes found for the first time.
    pub added: Vec<String>,
    /// Runtimes whose file is gone: no longer resolved (running turns finish).
    pub removed: Vec<String>,
    /// Runtimes whose file changed or went, but whose library this process has loaded (the
    /// inline and threads levels): kept as they are until the host restarts.
    pub restart_needed: Vec<RestartNeeded>,
    /// The new scan's report (it replaces the registry's).
    pub report: DiscoveryReport,
}

impl Rediscovered {
    /// Whether anything changed.
    pub fn changed(&self) -> bool {
        !(self.upgraded.is_empty() && self.added.is_empty() && self.removed.is_empty())
    }
}

/// A runtime whose new file cannot take over without a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestartNeeded {
    /// The runtime's id.
    pub id: String,
    /// The library loaded in this process.
    pub loaded: PathBuf,
    /// The file now providing it, or `None` when it is gone.
    pub found: Option<PathBuf>,
}

impl Runtimes {
    /// Scans every folder that [`Runtimes::discover`] scanned again, with the same checks,
    /// and brings the registry up to date: a runtime whose plugin file changed (another file
    /// at its path, another path) is replaced for new resolves, new runtimes are added, and
    /// runtimes whose file is gone are removed. No plugin code runs.
    ///
    /// Handles already resolved keep working, and turns running on them finish where they
    /// started. At the process level that makes an upgrade without a restart: the next
    /// resolve starts workers of the new file. A runtime whose library this process loaded
    /// itself (inline and threads levels) is kept, and listed in
    /// [`Rediscovered::restart_needed`]. Runtimes compiled into the host, and aliases added
    /// with [`Runtimes::add_alias`], are left as they are. Reloads are serialised: one
    /// scans and merges before the next begins.
    pub fn rediscover(&self) -> Rediscovered {
        self.rediscover_with(None)
    }

    /// As [`Runtimes::rediscover`], and the runtimes it adds get `isolation` before anything
    /// can resolve them (a host that set every runtime's level, as `runtimes serve --isolate`
    /// does, keeps that true of runtimes that appear later).
    pub fn rediscover_at(&self, isolation: crate::Isolation) -> Rediscovered {
        self.rediscover_with(Some(isolation))
    }

    fn rediscover_with(&self, isolation: Option<crate::Isolation>) -> Rediscovered {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (searched, files) = {
            let state = self.read();
            (state.searched.clone(), state.searched_files.clone())
        };
        let fresh = Runtimes {
            state: Default::default(),
            hooks: Default::default(),
            options: self.options,
            host_contract: self.host_contract,
            reloading: Default::default(),
        };
        for search in &searched {
            fresh.discover(search);
        }
        if !files.is_empty() {
            fresh.discover_files(&files);
        }
        let level_code = isolation.map(|level| {
            crate::Isolation::ALL
                .iter()
                .position(|l| *l == level)
                .map_or(0, |i| i as u8 + 1)
        });
        let fresh = fresh
            .state
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut outcome = Rediscovered {
            report: fresh.report.clone(),
            ..Rediscovered::default()
        };
        let mut state = self.write();
        let mut ids: Vec<&String> = fresh.runtimes.keys().collect();
        ids.sort();
        for id in ids {
            let new = &fresh.runtimes[id];
            let Factory::Plugin(new_library) = &new.factory else {
                continue;
            };
            let Some(old) = state.runtimes.get(id).cloned() else {
                if !state.aliases.contains_key(id) {
                    if let Some(code) = level_code {
                        new.isolation.store(code, Ordering::Relaxed);
                    }
                    state.insert(Arc::clone(new));
                    add_declared_aliases(&mut state, &fresh, id);
                    outcome.added.push(id.clone());
                }
                continue;
            };
            let Factory::Plugin(old_library) = &old.factory else {
                continue;
            };
            if old_library.real_path == new_library.real_path
                && old_library.identity() == new_library.identity()
            {
                continue;
            }
            if old_library.is_loaded() {
                outcome.restart_needed.push(RestartNeeded {
                    id: id.clone(),
                    loaded: old_library.real_path.clone(),
                    found: Some(new_library.real_path.clone()),
                });
                continue;
            }
            new.isolation
                .store(old.isolation.load(Ordering::Relaxed), Ordering::Relaxed);
            state.insert(Arc::clone(new));
            add_declared_aliases(&mut state, &fresh, id);
            outcome.upgraded.push(id.clone());
        }
        let mut gone: Vec<(String, Arc<Registered>)> = state
            .runtimes
            .iter()
            .filter(|(id, registered)| {
                matches!(registered.factory, Factory::Plugin(_))
                    && !fresh.runtimes.contains_key(*id)
            })
            .map(|(id, registered)| (id.clone(), Arc::clone(registered)))
            .collect();
        gone.sort_by(|a, b| a.0.cmp(&b.0));
        for (id, registered) in gone {
            let Factory::Plugin(library) = &registered.factory else {
                continue;
            };
            if library.is_loaded() {
                outcome.restart_needed.push(RestartNeeded {
                    id,
                    loaded: library.real_path.clone(),
                    found: None,
                });
            } else {
                state.remove_runtime(&id);
                outcome.removed.push(id);
            }
        }
        state.report = fresh.report;
        state.rejected = fresh.rejected;
        drop(state);
        for needed in &outcome.restart_needed {
            tracing::warn!(
                runtime = %needed.id,
                loaded = %needed.loaded.display(),
                "the runtime's plugin file changed, but its library is loaded in this process (inline or threads level) and is never unloaded: restart to use the new file"
            );
        }
        if outcome.changed() {
            tracing::info!(
                upgraded = ?outcome.upgraded,
                added = ?outcome.added,
                removed = ?outcome.removed,
                "plugins discovered again"
            );
        }
        outcome
    }
}

/// Points the aliases the new file declares for `id` at it, where the name is free (or
/// already points at `id`).
fn add_declared_aliases(state: &mut State, fresh: &State, id: &str) {
    for alias in fresh.aliases_of(id) {
        let free = !state.runtimes.contains_key(&alias)
            && state.aliases.get(&alias).is_none_or(|target| target == id);
        if free {
            state.add_alias(&alias, id);
        }
    }
}
