//! Discovery: scanning the search path's folders and registering what passes admission.
//!
//! No plugin code runs here. Each folder is listed (non-recursively, sorted by file name),
//! checked with every folder above it, its `plugins.lock` read, and each candidate file goes
//! through the one admission pipeline (`admission.rs`). What passes is registered with the
//! open file that was checked; everything else lands in the report with its reason.

use std::path::{Path, PathBuf};

use crate::admission::{Admission, Hashing, folder_of};
use crate::library::PluginLibrary;
use crate::registry::Runtimes;
use crate::report::{DirReport, DirStatus, DiscoveryReport, RejectReason, Rejection};
use crate::search_path::{SearchDir, SearchPath, has_library_suffix};
use crate::security::Pins;

impl Runtimes {
    /// Scans every directory of `search` and registers the runtimes of every plugin that
    /// passes the checks. No plugin code runs. Nothing is silent: the returned report (also
    /// kept, see [`Runtimes::report`], and logged through `tracing`) lists every directory,
    /// every rejected candidate with its reason, and every shadowed name.
    ///
    /// Each registered library keeps the file that was checked open, and that file is what
    /// the first resolve loads; a file replaced, removed or modified after discovery is refused
    /// then with [`RejectReason::Changed`].
    pub fn discover(&self, search: &SearchPath) -> DiscoveryReport {
        let mut report = DiscoveryReport::default();
        let mut admission = Admission::new(&self.options, self.host_contract);
        for dir in search.dirs() {
            self.discover_dir(&mut admission, dir, &mut report);
        }
        self.record(report)
    }

    /// Checks and registers these library files, as discovery does for the files of a
    /// plugin folder (with the `plugins.lock` of the folder each file is in). Used to try a
    /// file before installing it.
    pub fn discover_files<P: AsRef<Path>>(&self, files: &[P]) -> DiscoveryReport {
        let mut report = DiscoveryReport::default();
        let mut admission = Admission::new(&self.options, self.host_contract);
        for file in files {
            let path = file.as_ref();
            let pins = match folder_of(path).map(|f| Pins::read(&f, &self.options)) {
                Some(Err(reason)) => {
                    let mut facts = admission.admit(path, None, None, Hashing::AsOptions);
                    facts.verdict = facts.verdict.and(Err(reason));
                    self.take(facts.into_result(), path, &mut report);
                    continue;
                }
                Some(Ok(pins)) => pins,
                None => None,
            };
            let facts = admission.admit(path, None, pins.as_ref(), Hashing::AsOptions);
            self.take(facts.into_result(), path, &mut report);
        }
        self.record(report)
    }

    fn take(
        &self,
        result: Result<crate::admission::Admitted, Rejection>,
        path: &Path,
        report: &mut DiscoveryReport,
    ) {
        match result {
            Ok(admitted) => {
                let library = PluginLibrary::new(admitted, self.options);
                self.register_library(path, library, report);
            }
            Err(rejection) => report.rejected.push(rejection),
        }
    }

    fn discover_dir(
        &self,
        admission: &mut Admission<'_>,
        dir: &SearchDir,
        report: &mut DiscoveryReport,
    ) {
        let (status, listed) = scan(admission, &dir.path);
        report.dirs.push(DirReport {
            path: dir.path.clone(),
            origin: dir.origin,
            status,
        });
        let Some(Listed {
            files,
            canonical,
            refused,
        }) = listed
        else {
            return;
        };
        let (pins, refused) = match refused {
            Some(reason) => (None, Some(reason)),
            None => match Pins::read(&canonical, &self.options) {
                Ok(pins) => (pins, None),
                Err(reason) => (None, Some(reason)),
            },
        };
        if let Some(reason) = refused {
            // A refused folder (its permissions, a folder above it, or a pin file that cannot
            // be used) registers nothing; each file still says which ids it declares, so
            // asking for one of them says why it is not available.
            for path in files {
                let mut facts = admission.admit(&path, Some(&canonical), None, Hashing::AsOptions);
                facts.verdict = facts.verdict.and(Err(reason.clone()));
                facts.opened = None;
                self.take(facts.into_result(), &path, report);
            }
            return;
        }
        for path in files {
            let facts = admission.admit(&path, Some(&canonical), pins.as_ref(), Hashing::AsOptions);
            self.take(facts.into_result(), &path, report);
        }
    }
}

/// The candidate files of a folder that could be listed.
struct Listed {
    files: Vec<PathBuf>,
    /// The folder's real path.
    canonical: PathBuf,
    /// Why the folder is refused, when it is.
    refused: Option<RejectReason>,
}

/// Lists the candidate files of one directory (sorted by file name, non-recursive) and checks
/// it and every folder above it.
fn scan(admission: &mut Admission<'_>, dir: &Path) -> (DirStatus, Option<Listed>) {
    let unreadable = |e: std::io::Error| DirStatus::Unreadable {
        detail: e.to_string(),
    };
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (DirStatus::Missing, None),
        Err(e) => return (unreadable(e), None),
    };
    let canonical = match std::fs::canonicalize(dir) {
        Ok(canonical) => canonical,
        Err(e) => return (unreadable(e), None),
    };
    let mut files: Vec<PathBuf> = read
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| has_library_suffix(path))
        .collect();
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    let (status, refused) = match admission.check_folder(&canonical) {
        Ok(()) => (
            DirStatus::Scanned {
                candidates: files.len(),
            },
            None,
        ),
        Err(RejectReason::Unreadable { detail }) => {
            return (DirStatus::Unreadable { detail }, None);
        }
        Err(reason) => (
            DirStatus::Insecure {
                detail: reason.to_string(),
            },
            Some(reason),
        ),
    };
    (
        status,
        Some(Listed {
            files,
            canonical,
            refused,
        }),
    )
}
