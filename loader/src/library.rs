//! Loading a plugin library, once, at the first resolve of one of its runtimes.
//!
//! The file loaded is the file discovery checked: discovery keeps it open, and the load
//! re-verifies it (the open file unchanged, the same file still at its path, its owner and
//! mode, its pin hashed from the open file) and then opens *that open file* — through
//! `/proc/self/fd/N` on Linux, so a file swapped in at the path between the check and the
//! `dlopen` is never mapped and none of its code runs. Where `/proc` is unavailable the same
//! checks run immediately before the `dlopen` by path.
//!
//! abi_stable then checks its ABI header, the runtime-api version and the layout of every type
//! reachable from the root module, and runs the root module's constructor. We cross-check what
//! the code reports against the manifest that discovery read from the file; any difference is
//! a rejection. Libraries are never unloaded (abi_stable keeps them mapped for the life of the
//! process), so everything obtained from them stays valid.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use abi_stable::library::{LibHeader, LibraryError, RootModuleError};
use abi_stable::std_types::RStr;
use runtime_api::abi::{AbiRuntimeEntry, PluginModuleRef};
use runtime_api::host::RemoteRuntime;
use runtime_api::manifest::Manifest;
use runtime_api::{RuntimeError, Value};

use crate::LoaderOptions;
use crate::log_bridge;
use runtime_discovery::admission::{Admitted, Pin};
use runtime_discovery::report::RejectReason;
use runtime_discovery::security::{Identity, check_metadata, sha256_of};

/// A plugin library found by discovery: its manifest now, its code on first use.
#[derive(Debug)]
pub(crate) struct PluginLibrary {
    pub(crate) real_path: PathBuf,
    pub(crate) manifest: Manifest,
    /// The file discovery checked, open until it is loaded.
    checked: Mutex<Option<Checked>>,
    options: LoaderOptions,
    loaded: OnceLock<Result<LoadedLibrary, RejectReason>>,
}

/// The open file discovery checked, and what it was checked against.
#[derive(Debug)]
struct Checked {
    file: File,
    identity: Identity,
    pin: Option<Pin>,
    /// Checked by the host that handed it to this worker: its owner and mode were accepted
    /// there, and an unchanged identity (status-change time included) proves they still are.
    /// The worker does not check them again: in its user namespace, a file of root's reads as
    /// owned by the overflow user, like any user's it cannot map.
    by_host: bool,
}

/// What a loaded library provides.
struct LoadedLibrary {
    entries: Vec<AbiRuntimeEntry>,
    /// The identity of the file loaded (the checked one, verified unchanged).
    identity: Identity,
    /// Its sha256, when a pin applied (hashed from the open file before it was loaded).
    sha256: Option<String>,
}

impl std::fmt::Debug for LoadedLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedLibrary")
            .field("runtimes", &self.entries.len())
            .finish()
    }
}

impl PluginLibrary {
    pub(crate) fn new(admitted: Admitted, options: LoaderOptions) -> Self {
        Self {
            real_path: admitted.real_path,
            manifest: admitted.manifest,
            checked: Mutex::new(Some(Checked {
                file: admitted.file,
                identity: admitted.identity,
                pin: admitted.pin,
                by_host: false,
            })),
            options,
            loaded: OnceLock::new(),
        }
    }

    /// The worker's library: the file its host checked, inherited as descriptor
    /// `checked.fd`, to be verified against what the host checked (identity, pin, the same
    /// file still at `real_path`; owner and mode through the identity) when it is loaded.
    ///
    /// # Errors
    ///
    /// `unreadable` when the descriptor cannot be reopened, or the manifest's reason.
    pub(crate) fn inherited(
        real_path: &Path,
        checked: &runtime_process::protocol::CheckedFile,
        options: LoaderOptions,
    ) -> Result<Self, RejectReason> {
        let unreadable = |e: std::io::Error| RejectReason::Unreadable {
            detail: format!("the library descriptor the host passed: {e}"),
        };
        let file = File::open(format!("/proc/self/fd/{}", checked.fd)).map_err(unreadable)?;
        let metadata = file.metadata().map_err(unreadable)?;
        let manifest = runtime_discovery::inspect::read_manifest_from_file(&file, metadata.len())?;
        let mut library = Self::new(
            Admitted {
                real_path: real_path.to_owned(),
                file,
                identity: checked.identity,
                manifest,
                pin: checked.pin.clone(),
            },
            options,
        );
        if let Some(held) = library
            .checked
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            held.by_host = true;
        }
        Ok(library)
    }

    /// The checked open file for a worker at the process level, re-verified now as a load
    /// is (the same file at its path, unchanged, owner and mode, its pin).
    ///
    /// # Errors
    ///
    /// `changed`, `hash_mismatch`, `insecure` or `unreadable`, as an in-process load.
    pub(crate) fn for_worker(&self) -> Result<runtime_process::LibraryFile, RejectReason> {
        let held = self.checked.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(checked) = held.as_ref() else {
            return Err(RejectReason::Changed {
                detail: "the checked file is no longer open".to_owned(),
            });
        };
        verify(&self.real_path, checked, &self.options)?;
        let file = checked
            .file
            .try_clone()
            .map_err(|e| RejectReason::Unreadable {
                detail: e.to_string(),
            })?;
        Ok(runtime_process::LibraryFile::new(
            file,
            checked.identity,
            checked.pin.clone(),
            self.manifest.plugin_name.clone(),
            self.manifest.plugin_version.clone(),
        ))
    }

    /// The identity of the file this library stands for: the one checked at discovery, or
    /// the one loaded.
    pub(crate) fn identity(&self) -> Option<Identity> {
        if let Some(identity) = self.loaded_identity() {
            return Some(identity);
        }
        self.checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|checked| checked.identity)
    }

    /// Whether this process has loaded the library (it is never unloaded).
    pub(crate) fn is_loaded(&self) -> bool {
        self.loaded.get().is_some_and(Result::is_ok)
    }

    /// The identity of the loaded file, once loaded.
    pub(crate) fn loaded_identity(&self) -> Option<Identity> {
        self.loaded.get()?.as_ref().ok().map(|l| l.identity)
    }

    /// The sha256 of the loaded file, when a pin applied.
    pub(crate) fn loaded_sha256(&self) -> Option<String> {
        self.loaded.get()?.as_ref().ok()?.sha256.clone()
    }

    /// The root-module entry of runtime `id`, loading the library first if needed.
    fn entry(&self, id: &str) -> Result<&AbiRuntimeEntry, RejectReason> {
        let loaded = self
            .loaded
            .get_or_init(|| {
                // A duplicate: the held file stays open for the workers of the process level,
                // which inherit it.
                let checked = self
                    .checked
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                    .and_then(|c| {
                        Some(Checked {
                            file: c.file.try_clone().ok()?,
                            identity: c.identity,
                            pin: c.pin.clone(),
                            by_host: c.by_host,
                        })
                    });
                let loaded = match checked {
                    Some(checked) => load(&self.real_path, checked, &self.manifest, &self.options),
                    None => Err(RejectReason::Changed {
                        detail: "the checked file is no longer open".to_owned(),
                    }),
                };
                if let Err(reason) = &loaded {
                    // The caller gets the reason as its error; a warning would say it twice.
                    tracing::debug!(path = %self.real_path.display(), "plugin library rejected at load: {reason}");
                }
                loaded
            })
            .as_ref()
            .map_err(Clone::clone)?;
        loaded
            .entries
            .iter()
            .find(|e| e.id.as_str() == id)
            .ok_or_else(|| RejectReason::ManifestMismatch {
                field: "runtimes".to_owned(),
                manifest: id.to_owned(),
                module: "(absent)".to_owned(),
            })
    }

    /// Loads the library now (a worker process does, to refuse a bad file before any turn).
    pub(crate) fn load_now(&self) -> Result<(), RejectReason> {
        match self.manifest.runtimes.first() {
            Some(first) => self.entry(&first.id).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Creates runtime `id` with `config`, loading the library first if needed.
    pub(crate) fn instantiate(
        &self,
        id: &str,
        config: &Value,
    ) -> Result<Result<RemoteRuntime, RuntimeError>, RejectReason> {
        let entry = self.entry(id)?;
        let config = config_text(config);
        Ok((entry.factory)(RStr::from_str(&config))
            .into_result()
            .map(RemoteRuntime::new)
            .map_err(RuntimeError::from))
    }

    /// Every problem runtime `id` finds with `config`, without creating it; loads the library
    /// first if needed.
    pub(crate) fn validate_config(
        &self,
        id: &str,
        config: &Value,
    ) -> Result<Result<Vec<String>, RuntimeError>, RejectReason> {
        let entry = self.entry(id)?;
        let config = config_text(config);
        Ok((entry.validate_config)(RStr::from_str(&config))
            .into_result()
            .map(|problems| problems.into_iter().map(|p| p.into_string()).collect())
            .map_err(RuntimeError::from))
    }
}

/// A configuration as it crosses: JSON text, `""` for `null`.
fn config_text(config: &Value) -> String {
    if config.is_null() {
        String::new()
    } else {
        config.to_string()
    }
}

/// Re-verifies the checked file just before it is loaded: the open file unchanged since
/// discovery, the same file still at its path, its owner and mode, its pin (hashed now, from
/// the open file). Returns the hash when a pin applied.
fn verify(
    real_path: &Path,
    checked: &Checked,
    options: &LoaderOptions,
) -> Result<Option<String>, RejectReason> {
    let unreadable = |e: std::io::Error| RejectReason::Unreadable {
        detail: e.to_string(),
    };
    // First what is at the path now (a replaced or removed file also changes the status of
    // the one held open), then the open file itself.
    match std::fs::symlink_metadata(real_path) {
        Ok(at_path) => {
            let at_path = Identity::of(&at_path);
            if !at_path.same_file(&checked.identity) {
                return Err(RejectReason::Changed {
                    detail: format!(
                        "it was replaced after discovery: {}",
                        checked.identity.difference(&at_path)
                    ),
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RejectReason::Changed {
                detail: "it was removed after discovery".to_owned(),
            });
        }
        Err(e) => return Err(unreadable(e)),
    }
    let metadata = checked.file.metadata().map_err(unreadable)?;
    let now = Identity::of(&metadata);
    if now != checked.identity {
        return Err(RejectReason::Changed {
            detail: format!("after discovery, {}", checked.identity.difference(&now)),
        });
    }
    if !checked.by_host {
        check_metadata(real_path, &metadata, options)?;
    }
    let Some(pin) = &checked.pin else {
        return Ok(None);
    };
    let found = sha256_of(&checked.file).map_err(unreadable)?;
    pin.verify(&found)?;
    // The hash was read from the open file; it must not have changed meanwhile.
    let after = checked.file.metadata().map_err(unreadable)?;
    if Identity::of(&after) != checked.identity {
        return Err(RejectReason::Changed {
            detail: "it was modified while it was being hashed".to_owned(),
        });
    }
    Ok(Some(found))
}

/// The path that names the open file itself, when the platform has one: `/proc/self/fd/N`
/// (checked to lead to the same file). `None` where `/proc` is not mounted.
#[cfg(target_os = "linux")]
fn path_of_open_file(file: &File, identity: &Identity) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let through = std::fs::metadata(&path).ok()?;
    Identity::of(&through).same_file(identity).then_some(path)
}

#[cfg(not(target_os = "linux"))]
fn path_of_open_file(_file: &File, _identity: &Identity) -> Option<PathBuf> {
    None
}

/// Maps a library into the process, runs its initialisers (ELF constructors, C++ static
/// initialisers, Rust `.init_array` entries) and finds its root-module header under
/// `root_symbol` (the name its manifest declares). This is the one place where the host runs
/// code from a plugin file before abi_stable has checked anything. The library is never
/// unloaded: everything obtained from it stays valid for the life of the process.
///
/// # Safety
///
/// Opening a library runs its code with the host's privileges, and reading `root_symbol`
/// trusts that the symbol is the `LibHeader` static that `export_plugin!` declares. Call it
/// only on a file that passed every admission check, naming that same file (for example
/// `/proc/self/fd/N` of the descriptor that was checked), with the root symbol its checked
/// manifest declares ([`runtime_api::manifest::is_root_symbol`]).
///
/// # Errors
///
/// abi_stable's [`LibraryError`]: the file could not be opened, has no such symbol, or its
/// ABI header is not abi_stable's.
#[allow(unsafe_code)]
unsafe fn dlopen(path: &Path, root_symbol: &str) -> Result<&'static LibHeader, LibraryError> {
    use abi_stable::library::{AbiHeaderRef, RawLibrary};
    let raw = RawLibrary::load_at(path)?;
    let mut symbol = root_symbol.as_bytes().to_vec();
    symbol.push(0);
    // SAFETY: the export macro declares `root_symbol` as a `LibHeader` static, whose first
    // field is its `AbiHeader`; reading the symbol as an `AbiHeaderRef` (a reference to that
    // header) is what abi_stable's own `abi_header_from_raw_library` does for the symbol its
    // attribute exports. `upgrade` then checks the header before anything else is read. The
    // caller vouches for the file (this function's `# Safety`).
    let header: AbiHeaderRef = unsafe { *raw.get::<AbiHeaderRef>(&symbol)? };
    // Never unloaded: the header and everything reached from it point into the library.
    std::mem::forget(raw);
    header.upgrade()
}

fn load(
    real_path: &Path,
    checked: Checked,
    manifest: &Manifest,
    options: &LoaderOptions,
) -> Result<LoadedLibrary, RejectReason> {
    let started = std::time::Instant::now();
    let sha256 = verify(real_path, &checked, options)?;
    let identity = checked.identity;
    // A duplicate of the checked file whose number is never closed or reused once the library
    // is mapped: the dynamic loader remembers libraries by the name they were opened with.
    let dup = checked
        .file
        .try_clone()
        .map_err(|e| RejectReason::Unreadable {
            detail: e.to_string(),
        })?;
    let header = match path_of_open_file(&dup, &checked.identity) {
        Some(fd_path) => {
            // SAFETY: `fd_path` names the open file every admission check read, verified
            // unchanged just above; `root_symbol` is the checked manifest's.
            #[allow(unsafe_code)]
            let header = unsafe { dlopen(&fd_path, &manifest.root_symbol) };
            if header.is_ok() || !matches!(header, Err(LibraryError::OpenError { .. })) {
                std::mem::forget(dup);
            }
            header.map_err(|e| library_error(real_path, Some(&fd_path), e))?
        }
        None => {
            // No name for the open file: verify once more, as close to the dlopen as possible.
            verify(real_path, &checked, options)?;
            // SAFETY: the file at `real_path` was verified to be the checked one just above;
            // `root_symbol` is the checked manifest's.
            #[allow(unsafe_code)]
            let header = unsafe { dlopen(real_path, &manifest.root_symbol) };
            header.map_err(|e| library_error(real_path, None, e))?
        }
    };
    drop(checked);
    let module = header
        .init_root_module::<PluginModuleRef>()
        .map_err(|e| library_error(real_path, None, e))?;
    let entries = module.runtimes()()
        .into_result()
        .map_err(|e| RejectReason::InitFailed {
            detail: RuntimeError::from(e).to_string(),
        })?;
    cross_check(manifest, module, &entries)?;
    module.install_log_sink()(log_bridge::sink_for(&manifest.plugin_name));
    tracing::debug!(
        path = %real_path.display(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "loaded plugin library"
    );
    Ok(LoadedLibrary {
        entries: entries.into_iter().collect(),
        identity,
        sha256,
    })
}

fn mismatch(field: &str, manifest: impl ToString, module: impl ToString) -> RejectReason {
    RejectReason::ManifestMismatch {
        field: field.to_owned(),
        manifest: manifest.to_string(),
        module: module.to_string(),
    }
}

fn cross_check(
    manifest: &Manifest,
    module: PluginModuleRef,
    entries: &[AbiRuntimeEntry],
) -> Result<(), RejectReason> {
    if manifest.contract != module.contract() {
        return Err(mismatch(
            "the contract version",
            manifest.contract,
            module.contract(),
        ));
    }
    let pairs = [
        (
            "the runtime-api version",
            &manifest.api_version,
            module.api_version(),
        ),
        (
            "the plugin name",
            &manifest.plugin_name,
            module.plugin_name(),
        ),
        (
            "the plugin version",
            &manifest.plugin_version,
            module.plugin_version(),
        ),
    ];
    for (field, in_manifest, in_module) in pairs {
        if in_manifest.as_str() != in_module.as_str() {
            return Err(mismatch(field, in_manifest, in_module));
        }
    }
    let ids = |m: Vec<&str>| m.join(", ");
    let manifest_ids: Vec<&str> = manifest.runtimes.iter().map(|r| r.id.as_str()).collect();
    let module_ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    if manifest_ids != module_ids {
        return Err(mismatch(
            "the runtime ids",
            ids(manifest_ids),
            ids(module_ids),
        ));
    }
    for (declared, entry) in manifest.runtimes.iter().zip(entries) {
        let aliases: Vec<&str> = entry.aliases.iter().map(|a| a.as_str()).collect();
        let declared_aliases: Vec<&str> = declared.aliases.iter().map(String::as_str).collect();
        if declared_aliases != aliases {
            return Err(mismatch(
                &format!("the aliases of `{}`", declared.id),
                ids(declared_aliases),
                ids(aliases),
            ));
        }
        if declared.capabilities != entry.capabilities {
            return Err(mismatch(
                &format!("the capabilities of `{}`", declared.id),
                declared.capabilities,
                entry.capabilities,
            ));
        }
        if declared.config_schema_text != entry.config_schema.as_str() {
            return Err(mismatch(
                &format!("the configuration schema of `{}`", declared.id),
                &declared.config_schema_text,
                entry.config_schema.as_str(),
            ));
        }
        if declared.display_name != entry.display_name.as_str()
            || declared.description != entry.description.as_str()
        {
            return Err(mismatch(
                &format!("the description of `{}`", declared.id),
                &declared.display_name,
                entry.display_name.as_str(),
            ));
        }
    }
    Ok(())
}

/// Turns abi_stable's error into a rejection, keeping its actionable lines for people and the
/// whole text (often ~900 lines for a layout mismatch) at debug level.
fn library_error(path: &Path, opened_as: Option<&Path>, error: LibraryError) -> RejectReason {
    let mut full = error.to_string();
    if let Some(opened_as) = opened_as {
        full = full.replace(
            &opened_as.display().to_string(),
            &path.display().to_string(),
        );
    }
    tracing::debug!(path = %path.display(), error = %full, "abi_stable refused a plugin library");
    match error {
        LibraryError::OpenError { err, .. } => RejectReason::OpenFailed {
            detail: match opened_as {
                Some(opened_as) => err.to_string().replace(
                    &opened_as.display().to_string(),
                    &path.display().to_string(),
                ),
                None => err.to_string(),
            },
        },
        LibraryError::GetSymbolError { .. } | LibraryError::InvalidAbiHeader(_) => {
            RejectReason::AbiMismatch {
                summary: "it has no compatible abi_stable header".to_owned(),
            }
        }
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => {
            let contract = |v: &abi_stable::sabi_types::VersionNumber| v.major;
            RejectReason::ContractMismatch {
                plugin_contract: contract(&actual_version),
                host_contract: contract(&expected_version),
                plugin_api: String::new(),
                message: format!(
                    "its root module speaks plugin contract {}, this host speaks contract {}: rebuild the plugin against a runtime-api release of contract {}",
                    actual_version.major, expected_version.major, expected_version.major
                ),
            }
        }
        LibraryError::RootModule { err, .. } => RejectReason::InitFailed {
            detail: match err {
                RootModuleError::Unwound => "its root module panicked".to_owned(),
                RootModuleError::Returned(e) => e.to_string(),
            },
        },
        _ => RejectReason::AbiMismatch {
            summary: actionable_lines(&full),
        },
    }
}

/// The lines of an abi_stable report that say what differs: those starting with `Error:`.
pub(crate) fn actionable_lines(full: &str) -> String {
    let mut seen = std::collections::HashSet::new();
    let mut lines: Vec<&str> = full
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Error:") && seen.insert(*l))
        .collect();
    if lines.is_empty() {
        lines = full
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .take(3)
            .collect();
    }
    const MAX_LINES: usize = 6;
    let extra = lines.len().saturating_sub(MAX_LINES);
    let mut summary = lines
        .into_iter()
        .take(MAX_LINES)
        .collect::<Vec<_>>()
        .join("; ");
    if extra > 0 {
        summary.push_str(&format!(
            "; and {extra} more (run with debug logs for the full report)"
        ));
    }
    summary
}
