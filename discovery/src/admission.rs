//! The one admission pipeline: what a candidate file passes before anything it declares is
//! registered. Discovery, `runtimes list`, `runtimes check` and `runtimes install` all use it,
//! so they give the same verdict, with the same reason, for the same file.
//!
//! In order, on one open file:
//!
//! 1. its type, from its metadata before it is opened (a FIFO, a device or a socket is refused
//!    without being opened), then again on the open file (opened without following a final
//!    symlink and without blocking);
//! 2. its owner and mode, read from the open file, and every folder above it up to `/`
//!    ([`check_folders`]);
//! 3. its pin, when its folder has a `plugins.lock`: it must be listed; its hash is computed
//!    from the open file now ([`TrustOptions::eager_pins`], `runtimes check`) or just before it
//!    is loaded;
//! 4. its manifest, read from the open file (reading a manifest runs no code; a file version
//!    read before in this process, by file identity, is not read again), then the
//!    manifest checks (runtime-api version, ids).
//!
//! A file refused for its permissions or its pin still reports the ids its manifest declares,
//! so asking for one of them says why it is not available. The open file is kept with the
//! registered library and is what gets loaded (see `library.rs`).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use runtime_api::manifest::Manifest;

use crate::checks::check_manifest;
use crate::inspect::{self, Opened};
use crate::manifest_cache::manifest_cached;
use crate::report::{RejectReason, Rejection};
use crate::security::{Identity, Pins, TrustOptions, check_folders, check_metadata, sha256_cached};

/// A pin that the loaded file must match.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pin {
    /// The pinned sha256.
    pub expected: String,
    /// The file name it is pinned under.
    pub name: String,
    /// The pin file.
    pub lock_file: PathBuf,
}

impl Pin {
    pub fn verify(&self, found: &str) -> Result<(), RejectReason> {
        if self.expected == found {
            Ok(())
        } else {
            Err(RejectReason::HashMismatch {
                expected: self.expected.clone(),
                found: found.to_owned(),
                lock_file: self.lock_file.clone(),
            })
        }
    }
}

/// A candidate that passed every check, with the open file that was checked.
#[derive(Debug)]
pub struct Admitted {
    /// The file after resolving symlinks.
    pub real_path: PathBuf,
    /// The open file every check read.
    pub file: File,
    /// Its identity when it was checked.
    pub identity: Identity,
    /// Its manifest.
    pub manifest: Manifest,
    /// The pin it must match when it is loaded.
    pub pin: Option<Pin>,
}

/// Whether a pinned file is hashed during admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hashing {
    /// Only when it is pinned and eager pins are on.
    AsOptions,
    /// Always (for `runtimes check`, which prints the hash).
    Always,
}

/// Everything admission learnt about one candidate.
#[derive(Debug)]
pub struct Facts {
    pub path: PathBuf,
    pub real_path: Option<PathBuf>,
    pub opened: Option<(File, Identity)>,
    pub manifest: Option<Manifest>,
    pub sha256: Option<String>,
    pub pin: Option<Pin>,
    pub verdict: Result<(), RejectReason>,
}

impl Facts {
    fn ids(&self) -> Vec<String> {
        self.manifest
            .iter()
            .flat_map(|m| &m.runtimes)
            .flat_map(|r| std::iter::once(&r.id).chain(&r.aliases))
            .cloned()
            .collect()
    }

    /// The registry's view: admitted, or a rejection with the declared ids.
    pub fn into_result(self) -> Result<Admitted, Rejection> {
        let ids = self.ids();
        match (self.verdict, self.real_path, self.opened, self.manifest) {
            (Ok(()), Some(real_path), Some((file, identity)), Some(manifest)) => Ok(Admitted {
                real_path,
                file,
                identity,
                manifest,
                pin: self.pin,
            }),
            (verdict, real_path, ..) => Err(Rejection {
                path: self.path,
                real_path,
                runtime_ids: ids,
                reason: verdict.err().unwrap_or(RejectReason::Unreadable {
                    detail: "it could not be checked".to_owned(),
                }),
            }),
        }
    }
}

/// One admission pass: the options, the host's contract version, and the folders already
/// checked (a plugin folder is checked once however many files it holds).
#[derive(Debug)]
pub struct Admission {
    options: TrustOptions,
    host: u32,
    folders: HashMap<PathBuf, Result<(), RejectReason>>,
}

impl Admission {
    /// A pass with these options, for a host of contract version `host`.
    pub fn new(options: impl Into<TrustOptions>, host: u32) -> Self {
        Self {
            options: options.into(),
            host,
            folders: HashMap::new(),
        }
    }

    /// The trust options of this pass.
    pub fn options(&self) -> TrustOptions {
        self.options
    }

    /// Checks a folder (a real path) and every folder above it, once per pass.
    pub fn check_folder(&mut self, folder: &Path) -> Result<(), RejectReason> {
        if let Some(verdict) = self.folders.get(folder) {
            return verdict.clone();
        }
        let verdict = check_folders(folder, self.options);
        self.folders.insert(folder.to_owned(), verdict.clone());
        verdict
    }

    /// Runs every check on one candidate. `canonical_dir` is the real path of the plugin
    /// folder it was found in, when it was found by scanning one; `pins` that folder's pins.
    pub fn admit(
        &mut self,
        path: &Path,
        canonical_dir: Option<&Path>,
        pins: Option<&Pins>,
        hashing: Hashing,
    ) -> Facts {
        let mut facts = Facts {
            path: path.to_owned(),
            real_path: None,
            opened: None,
            manifest: None,
            sha256: None,
            pin: None,
            verdict: Ok(()),
        };
        let Opened {
            real_path,
            file,
            metadata,
        } = match inspect::open_candidate(path, canonical_dir) {
            Ok(opened) => opened,
            Err((real_path, reason)) => {
                facts.real_path = real_path;
                facts.verdict = Err(reason);
                return facts;
            }
        };
        let identity = Identity::of(&metadata);
        facts.real_path = Some(real_path.clone());
        // Owner and mode of the open file, then its folder and every folder above it.
        let mut verdict = check_metadata(&real_path, &metadata, self.options);
        if let (Ok(()), Some(folder)) = (&verdict, real_path.parent()) {
            verdict = self.check_folder(folder);
        }
        // The pin: listed, and hashed now or at load.
        let wants_hash = hashing == Hashing::Always || (self.options.eager_pins && pins.is_some());
        if wants_hash || (pins.is_some() && verdict.is_ok()) {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let pinned = pins.and_then(|p| p.pinned(&name).map(|h| (p, h)));
            let must_hash = wants_hash || (pins.is_some() && pinned.is_none());
            if must_hash {
                match sha256_cached(&file, identity) {
                    Ok(hash) => facts.sha256 = Some(hash),
                    Err(e) => {
                        verdict = verdict.and(Err(RejectReason::Unreadable {
                            detail: e.to_string(),
                        }))
                    }
                }
            }
            if let Some(pins) = pins {
                match (pinned, &facts.sha256) {
                    (Some((pins, expected)), found) => {
                        let pin = Pin {
                            expected: expected.to_owned(),
                            name: name.clone(),
                            lock_file: pins.lock_file().to_owned(),
                        };
                        if let Some(found) = found {
                            verdict = verdict.and_then(|()| pin.verify(found));
                        }
                        facts.pin = Some(pin);
                    }
                    (None, Some(found)) => {
                        verdict = verdict.and_then(|()| pins.check_hash(&name, found));
                    }
                    (None, None) => {}
                }
            }
        }
        // The manifest, from the same open file (or from the cache, when this version of the
        // file was read before): read even when the file was refused above, so the ids it
        // declares can say why they are not available.
        match manifest_cached(&file, identity, metadata.len()) {
            Ok(manifest) => {
                verdict = verdict.and_then(|()| check_manifest(&manifest, self.host));
                facts.manifest = Some(manifest);
            }
            Err(reason) => verdict = verdict.and(Err(reason)),
        }
        facts.verdict = verdict;
        facts.opened = Some((file, identity));
        facts
    }
}

/// The real path of the folder a file is in, as found (not where a symlink leads): the folder
/// whose `plugins.lock` applies to it.
pub fn folder_of(path: &Path) -> Option<PathBuf> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::canonicalize(parent).ok()
}

/// Which pins `check_file` applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PinPolicy {
    /// The `plugins.lock` of the folder the file is in, as discovery would apply it.
    FolderLock,
    /// None (for a file about to be copied elsewhere and pinned there).
    Ignore,
}

/// The verdict of the admission pipeline on one file, as `runtimes check` reports it.
#[derive(Debug)]
#[non_exhaustive]
pub struct FileCheck {
    /// The file as given.
    pub path: PathBuf,
    /// The file after resolving symlinks, when that worked.
    pub real_path: Option<PathBuf>,
    /// Its manifest, when it could be read (even if the file was refused).
    pub manifest: Option<Manifest>,
    /// Its sha256, computed from the open file that was checked.
    pub sha256: Option<String>,
    /// `Ok` when discovery would register it; otherwise why not.
    pub verdict: Result<(), RejectReason>,
    file: Option<File>,
}

impl FileCheck {
    /// The open file every check read, when it was opened: copy or load this, not the path.
    pub fn file(&self) -> Option<&File> {
        self.file.as_ref()
    }

    /// The runtime ids and aliases its manifest declares.
    pub fn declared_names(&self) -> Vec<String> {
        self.manifest
            .iter()
            .flat_map(|m| &m.runtimes)
            .flat_map(|r| std::iter::once(&r.id).chain(&r.aliases))
            .cloned()
            .collect()
    }
}

/// Runs the admission pipeline on one file, as discovery would if it found the file in its
/// folder: type, owner and mode, every folder above it, the `plugins.lock` of the folder it is
/// in (with [`PinPolicy::FolderLock`]), the manifest checks. The file is always hashed. Runs no plugin
/// code.
pub fn check_file(path: &Path, options: impl Into<TrustOptions>, pins: PinPolicy) -> FileCheck {
    let options: TrustOptions = options.into();
    let mut admission = Admission::new(options, runtime_api::version::CONTRACT_VERSION);
    let folder_pins = match pins {
        PinPolicy::Ignore => Ok(None),
        PinPolicy::FolderLock => match folder_of(path) {
            Some(folder) => Pins::read(&folder, options),
            None => Ok(None),
        },
    };
    let (pins, pin_problem) = match folder_pins {
        Ok(pins) => (pins, None),
        Err(reason) => (None, Some(reason)),
    };
    let facts = admission.admit(path, None, pins.as_ref(), Hashing::Always);
    let verdict = match pin_problem {
        Some(reason) if facts.verdict.is_ok() => Err(reason),
        _ => facts.verdict,
    };
    FileCheck {
        path: facts.path,
        real_path: facts.real_path,
        manifest: facts.manifest,
        sha256: facts.sha256,
        verdict,
        file: facts.opened.map(|(file, _)| file),
    }
}
