//! Manifests already read in this process, by file identity (device, inode, size, mtime and
//! ctime, read from the open file): listing the same plugins again (a fresh registry,
//! `runtimes list`, a host's rescan) reads no manifest whose file has not changed. A file
//! swapped in under the same name, rewritten or touched has another identity, so it is read
//! again; the checks on the file itself (type, owner, mode, folders, pins) run every time.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex, PoisonError};

use runtime_api::manifest::Manifest;

use crate::file::Identity;
use crate::inspect::read_manifest_from_file;
use crate::report::RejectReason;

/// The manifests read so far, by the identity of the file version they were read from.
static MANIFESTS: Mutex<Option<HashMap<Identity, Arc<Manifest>>>> = Mutex::new(None);

/// The most file versions remembered; the cache is emptied when full.
const MAX_CACHED_MANIFESTS: usize = 4096;

/// The manifest of an open file of `len` bytes whose identity (read from the same open file)
/// is `identity`: from the cache when this version of the file was read before.
///
/// # Errors
///
/// The [`RejectReason`] that says what is wrong with the file (never cached: a file that
/// could not be read is read again next time).
pub(crate) fn manifest_cached(
    file: &File,
    identity: Identity,
    len: u64,
) -> Result<Manifest, RejectReason> {
    if let Some(manifest) = lookup(identity) {
        return Ok(Manifest::clone(&manifest));
    }
    let manifest = read_manifest_from_file(file, len)?;
    // Remembered only if the file did not change while it was read.
    if file.metadata().map(|m| Identity::of(&m)).ok() == Some(identity) {
        let mut cache = MANIFESTS.lock().unwrap_or_else(PoisonError::into_inner);
        let map = cache.get_or_insert_with(HashMap::new);
        if map.len() >= MAX_CACHED_MANIFESTS {
            map.clear();
        }
        map.insert(identity, Arc::new(manifest.clone()));
    }
    Ok(manifest)
}

fn lookup(identity: Identity) -> Option<Arc<Manifest>> {
    MANIFESTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .and_then(|map| map.get(&identity))
        .cloned()
}
