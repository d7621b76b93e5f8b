//! Scanning the search path's folders: each folder listed (non-recursively, sorted by file
//! name), checked with every folder above it, its `plugins.lock` read, and each candidate file
//! put through the one admission pipeline. What passes is handed to the caller (the loader's
//! registry) with the open file that was checked; everything else lands in the report.

use std::path::{Path, PathBuf};

use crate::admission::{Admission, Admitted, Hashing, folder_of};
use crate::report::{DirReport, DirStatus, DiscoveryReport, RejectReason, Rejection};
use crate::search_path::{SearchDir, SearchPath, has_library_suffix};
use crate::security::{Pins, TrustOptions};

/// Where a scan hands each candidate's verdict: an admitted file (with the open file that was
/// checked) or its rejection, the path as found, and the report to add to.
pub type Take<'a> = dyn FnMut(Result<Admitted, Rejection>, &Path, &mut DiscoveryReport) + 'a;

/// Scans every directory of `search`; each candidate's verdict goes to `take` in search order
/// (an admitted file, or its rejection), and each directory's status to `report`.
pub fn scan_search_path(
    admission: &mut Admission,
    search: &SearchPath,
    report: &mut DiscoveryReport,
    take: &mut Take<'_>,
) {
    for dir in search.dirs() {
        scan_dir(admission, dir, report, take);
    }
}

/// Checks these library files, as a scan does for the files of a plugin folder (with the
/// `plugins.lock` of the folder each file is in); each verdict goes to `take`.
pub fn scan_files<P: AsRef<Path>>(
    admission: &mut Admission,
    files: &[P],
    report: &mut DiscoveryReport,
    take: &mut Take<'_>,
) {
    let trust = admission.options();
    for file in files {
        let path = file.as_ref();
        let pins = match folder_of(path).map(|f| Pins::read(&f, trust)) {
            Some(Err(reason)) => {
                let mut facts = admission.admit(path, None, None, Hashing::AsOptions);
                facts.verdict = facts.verdict.and(Err(reason));
                take(facts.into_result(), path, report);
                continue;
            }
            Some(Ok(pins)) => pins,
            None => None,
        };
        let facts = admission.admit(path, None, pins.as_ref(), Hashing::AsOptions);
        take(facts.into_result(), path, report);
    }
}

/// Runs the checks on one file, outside any folder (pins are a folder's): what a worker
/// process does before it loads the file it was given.
pub fn admit_file(
    options: impl Into<TrustOptions>,
    host: u32,
    path: &Path,
) -> Result<Admitted, Rejection> {
    Admission::new(options, host)
        .admit(path, None, None, Hashing::AsOptions)
        .into_result()
}

fn scan_dir(
    admission: &mut Admission,
    dir: &SearchDir,
    report: &mut DiscoveryReport,
    take: &mut Take<'_>,
) {
    let (status, listed) = list(admission, &dir.path);
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
        None => match Pins::read(&canonical, admission.options()) {
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
            take(facts.into_result(), &path, report);
        }
        return;
    }
    for path in files {
        let facts = admission.admit(&path, Some(&canonical), pins.as_ref(), Hashing::AsOptions);
        take(facts.into_result(), &path, report);
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
fn list(admission: &mut Admission, dir: &Path) -> (DirStatus, Option<Listed>) {
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
