//! Reading a plugin's embedded manifest by parsing the file: no `dlopen`, no plugin code.
//!
//! The file is read lazily through `object`'s `ReadCache` (headers, the export table and the
//! manifest's 8 KiB), so listing stays cheap however large the libraries are, and every read is
//! bounded by the file's size.

use std::fs::File;
use std::path::{Path, PathBuf};

use object::read::ReadCache;
use object::{Object, ObjectKind, ObjectSection, ReadRef};
use runtime_api::manifest::{EMBED_SIZE, MANIFEST_SYMBOL, Manifest};

use crate::report::RejectReason;

/// A candidate file whose manifest was read.
#[derive(Debug, Clone)]
pub struct Inspected {
    /// The file after resolving symlinks.
    pub real_path: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

/// Resolves a candidate's real path, checking that it is a regular file.
///
/// # Errors
///
/// [`RejectReason::Unreadable`] for a dangling symlink, a loop or a permission error;
/// [`RejectReason::NotAFile`] for a directory or a device.
pub fn real_file(path: &Path) -> Result<PathBuf, RejectReason> {
    let real = std::fs::canonicalize(path).map_err(|e| RejectReason::Unreadable {
        detail: e.to_string(),
    })?;
    let metadata = std::fs::metadata(&real).map_err(|e| RejectReason::Unreadable {
        detail: e.to_string(),
    })?;
    if !metadata.is_file() {
        return Err(RejectReason::NotAFile);
    }
    Ok(real)
}

/// Reads the embedded manifest of the library at `real_path`.
///
/// # Errors
///
/// The [`RejectReason`] that says what is wrong with the file.
pub fn read_manifest(real_path: &Path) -> Result<Manifest, RejectReason> {
    let file = File::open(real_path).map_err(|e| RejectReason::Unreadable {
        detail: e.to_string(),
    })?;
    let cache = ReadCache::new(file);
    manifest_from(&cache)
}

/// Reads the embedded manifest of a library held in memory. Never panics, whatever the bytes;
/// this is what the fuzz targets exercise.
///
/// # Errors
///
/// The [`RejectReason`] that says what is wrong with the bytes.
pub fn read_manifest_from_bytes(bytes: &[u8]) -> Result<Manifest, RejectReason> {
    manifest_from(bytes)
}

fn manifest_from<'data, R: ReadRef<'data>>(data: R) -> Result<Manifest, RejectReason> {
    let object = object::File::parse(data).map_err(|e| RejectReason::NotALibrary {
        detail: e.to_string(),
    })?;
    match object.kind() {
        // A position-independent executable is `ET_DYN` too; it has a program interpreter.
        ObjectKind::Dynamic if object.section_by_name(".interp").is_some() => {
            return Err(RejectReason::NotALibrary {
                detail: "it is an executable (it has a program interpreter)".to_owned(),
            });
        }
        ObjectKind::Dynamic => {}
        ObjectKind::Executable => {
            return Err(RejectReason::NotALibrary {
                detail: "it is an executable".to_owned(),
            });
        }
        other => {
            return Err(RejectReason::NotALibrary {
                detail: format!("its object kind is {other:?}"),
            });
        }
    }
    let exports = object.exports().map_err(|e| RejectReason::NotALibrary {
        detail: format!("its export table is unreadable: {e}"),
    })?;
    let symbol = exports
        .iter()
        .find(|e| {
            let name = e.name();
            name == MANIFEST_SYMBOL.as_bytes()
                || name.strip_prefix(b"_") == Some(MANIFEST_SYMBOL.as_bytes())
        })
        .ok_or(RejectReason::NoManifest)?;
    let address = symbol.address();
    let bytes = object
        .sections()
        .find_map(|section| {
            let start = section.address();
            let end = start.checked_add(section.size())?;
            if address < start || address >= end {
                return None;
            }
            let (file_offset, file_size) = section.file_range()?;
            let within = address - start;
            let available = file_size.checked_sub(within)?;
            let len = available.min(EMBED_SIZE as u64);
            let offset = file_offset.checked_add(within)?;
            data.read_bytes_at(offset, len).ok()
        })
        .ok_or_else(|| RejectReason::MalformedManifest {
            detail: "the manifest symbol points outside the file's data".to_owned(),
        })?;
    Manifest::from_embedded(bytes).map_err(|e| RejectReason::MalformedManifest {
        detail: e.to_string(),
    })
}

/// Resolves and reads a candidate.
///
/// # Errors
///
/// The [`RejectReason`] that says what is wrong with the file.
pub fn inspect(path: &Path) -> Result<Inspected, (Option<PathBuf>, RejectReason)> {
    let real_path = real_file(path).map_err(|reason| (None, reason))?;
    match read_manifest(&real_path) {
        Ok(manifest) => Ok(Inspected {
            real_path,
            manifest,
        }),
        Err(reason) => Err((Some(real_path), reason)),
    }
}
