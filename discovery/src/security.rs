//! Refusing plugin files that someone else could have changed.
//!
//! Like OpenSSH's `StrictModes`: a plugin file and its folder must not be writable by group or
//! others, and must be owned by the current user or root; every folder above the plugin folder,
//! up to `/`, must be owned by the current user or root and must not be writable by group or
//! others unless it has the sticky bit (like `/tmp`, where nobody can rename or remove an entry
//! they do not own). An optional pin file, `plugins.lock` in a plugin folder, lists
//! `sha256  file-name` lines (the output of `sha256sum`); where it exists, every library in that
//! folder must be listed, and its hash is verified on the open file that is loaded.
//! `AGENT_RUNTIMES_ALLOW_INSECURE=1` (or [`TrustOptions::allow_insecure`]) turns the
//! permission checks off for development; it does not turn off pins, file types or the check
//! that the loaded file is the file that was checked.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};

use crate::file::describe_type;
pub use crate::file::{Identity, open_nonblocking};
use crate::report::RejectReason;

/// The name of the pin file in a plugin directory.
pub const LOCK_FILE: &str = "plugins.lock";

/// The largest pin file read (1 MiB: about 10,000 pins). A larger one refuses its folder.
pub const MAX_LOCK_FILE_SIZE: u64 = 1024 * 1024;

/// The environment variable that allows insecure plugin files and folders.
pub const ALLOW_INSECURE_ENV: &str = "AGENT_RUNTIMES_ALLOW_INSECURE";

/// How strict discovery is about who could have changed a plugin file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TrustOptions {
    /// Accept plugin files and folders writable by group or others, or owned by another user.
    pub allow_insecure: bool,
    /// Hash pinned libraries during discovery, so a pin mismatch is a discovery rejection
    /// (what `runtimes list --all` and `runtimes check` do). Off by default: a pinned library
    /// is then hashed once, from the open file, just before it is loaded, and discovery of many
    /// pinned libraries stays cheap. Either way the pin is verified on the file that is loaded.
    pub eager_pins: bool,
}

impl TrustOptions {
    /// Strict checks; pins verified at load.
    pub const STRICT: Self = Self {
        allow_insecure: false,
        eager_pins: false,
    };

    /// Strict unless `AGENT_RUNTIMES_ALLOW_INSECURE` is `1` or `true`.
    pub fn from_env() -> Self {
        let allow = std::env::var(ALLOW_INSECURE_ENV)
            .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
            .unwrap_or(false);
        Self::STRICT.with_allow_insecure(allow)
    }

    /// Sets whether insecure files and folders are allowed.
    pub fn with_allow_insecure(mut self, allow: bool) -> Self {
        self.allow_insecure = allow;
        self
    }

    /// Sets whether pinned libraries are hashed during discovery (see
    /// [`TrustOptions::eager_pins`]).
    pub fn with_eager_pins(mut self, eager: bool) -> Self {
        self.eager_pins = eager;
        self
    }
}

impl From<&TrustOptions> for TrustOptions {
    fn from(options: &TrustOptions) -> Self {
        *options
    }
}

/// Checks that `path` (a file or directory) cannot be changed by someone else. Follows
/// symlinks; checks `path` itself only (see [`check_folders`] for the folders above).
///
/// # Errors
///
/// [`RejectReason::Insecure`] naming the permission that is wrong.
pub fn check_permissions(
    path: &Path,
    options: impl Into<TrustOptions>,
) -> Result<(), RejectReason> {
    let options: TrustOptions = options.into();
    if options.allow_insecure {
        return Ok(());
    }
    let metadata = std::fs::metadata(path).map_err(|e| RejectReason::Unreadable {
        detail: format!("{}: {e}", path.display()),
    })?;
    check_metadata(path, &metadata, options)
}

/// [`check_permissions`] on metadata already read (for a file, read from the open file).
///
/// # Errors
///
/// [`RejectReason::Insecure`] naming the permission that is wrong.
#[cfg(unix)]
pub fn check_metadata(
    path: &Path,
    metadata: &Metadata,
    options: impl Into<TrustOptions>,
) -> Result<(), RejectReason> {
    use std::os::unix::fs::MetadataExt;
    let options: TrustOptions = options.into();
    if options.allow_insecure {
        return Ok(());
    }
    let mode = metadata.mode();
    let what = if metadata.is_dir() { "folder" } else { "file" };
    if mode & 0o022 != 0 {
        return Err(RejectReason::Insecure {
            detail: format!(
                "the {what} {} is writable by {} (mode {:o})",
                path.display(),
                writable_by(mode),
                mode & 0o7777
            ),
        });
    }
    check_owner(path, what, metadata.uid())
}

/// Permission checks are Unix-only; elsewhere the file system's ACLs apply.
#[cfg(not(unix))]
pub fn check_metadata(
    _path: &Path,
    _metadata: &Metadata,
    _options: impl Into<TrustOptions>,
) -> Result<(), RejectReason> {
    Ok(())
}

#[cfg(unix)]
fn writable_by(mode: u32) -> &'static str {
    if mode & 0o002 != 0 {
        "others"
    } else {
        "its group"
    }
}

#[cfg(unix)]
fn check_owner(path: &Path, what: &str, owner: u32) -> Result<(), RejectReason> {
    if owner == 0 {
        return Ok(());
    }
    let me = rustix::process::geteuid().as_raw();
    if owner != me {
        return Err(RejectReason::Insecure {
            detail: format!(
                "the {what} {} is owned by user {owner}, not by you ({me}) or root",
                path.display()
            ),
        });
    }
    Ok(())
}

/// Checks a plugin folder and every folder above it, up to `/`, as OpenSSH's `StrictModes`
/// does: the plugin folder as [`check_permissions`] does; each folder above it must be owned
/// by you or root and must not be writable by group or others unless it has the sticky bit
/// (in a sticky folder such as `/tmp` nobody can rename or remove an entry they do not own,
/// and the entry below it is checked in turn). `folder` should be a real path (symlinks
/// resolved); the first refused folder is named.
///
/// # Errors
///
/// [`RejectReason::Insecure`] naming the folder and what is wrong with it;
/// [`RejectReason::Unreadable`] when a folder's metadata cannot be read.
pub fn check_folders(folder: &Path, options: impl Into<TrustOptions>) -> Result<(), RejectReason> {
    let options: TrustOptions = options.into();
    if options.allow_insecure {
        return Ok(());
    }
    check_permissions(folder, options)?;
    for above in folder.ancestors().skip(1) {
        if above.as_os_str().is_empty() {
            break;
        }
        check_folder_above(above)?;
    }
    Ok(())
}

#[cfg(unix)]
fn check_folder_above(folder: &Path) -> Result<(), RejectReason> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(folder).map_err(|e| RejectReason::Unreadable {
        detail: format!("{}: {e}", folder.display()),
    })?;
    let mode = metadata.mode();
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(RejectReason::Insecure {
            detail: format!(
                "the folder {} is writable by {} without the sticky bit (mode {:o}), so they can replace what is inside it",
                folder.display(),
                writable_by(mode),
                mode & 0o7777
            ),
        });
    }
    check_owner(folder, "folder", metadata.uid())
}

#[cfg(not(unix))]
fn check_folder_above(_folder: &Path) -> Result<(), RejectReason> {
    Ok(())
}

/// The pins of one directory: file name → lower-case hex sha256.
#[derive(Debug, Clone, Default)]
pub struct Pins {
    lock_file: PathBuf,
    hashes: HashMap<String, String>,
}

impl Pins {
    /// Reads `dir/plugins.lock`; `Ok(None)` when there is none. Only a regular file of at most
    /// [`MAX_LOCK_FILE_SIZE`] bytes is read (a FIFO or a device is refused by its type, without
    /// blocking); unless insecure folders are allowed, it must not be writable by group or
    /// others and must be owned by you or root.
    ///
    /// # Errors
    ///
    /// [`RejectReason::PinFile`] saying what is wrong with it.
    pub fn read(
        dir: &Path,
        options: impl Into<TrustOptions>,
    ) -> Result<Option<Self>, RejectReason> {
        let options: TrustOptions = options.into();
        let lock_file = dir.join(LOCK_FILE);
        let problem = |detail: String| RejectReason::PinFile {
            lock_file: lock_file.clone(),
            detail,
        };
        let Some((file, metadata)) =
            open_regular(&lock_file).map_err(|e| problem(e.to_string()))?
        else {
            return Ok(None);
        };
        check_metadata(&lock_file, &metadata, options).map_err(|reason| match reason {
            RejectReason::Insecure { detail } => problem(detail),
            other => other,
        })?;
        let text = read_bounded(file, metadata.len()).map_err(problem)?;
        let mut hashes = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.splitn(2, char::is_whitespace);
            let (Some(hash), Some(name)) = (parts.next(), parts.next()) else {
                return Err(problem(format!(
                    "line {}: expected `<sha256>  <file name>`",
                    number + 1
                )));
            };
            let hash = hash.to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(problem(format!(
                    "line {}: `{}` is not a sha256",
                    number + 1,
                    hash.chars().take(80).collect::<String>()
                )));
            }
            let name = name.trim().trim_start_matches('*');
            hashes.insert(name.to_owned(), hash);
        }
        Ok(Some(Self { lock_file, hashes }))
    }

    /// The pin file.
    pub fn lock_file(&self) -> &Path {
        &self.lock_file
    }

    /// The hash pinned for a file name, if any.
    pub fn pinned(&self, file_name: &str) -> Option<&str> {
        self.hashes.get(file_name).map(String::as_str)
    }

    /// Checks a hash against the pin of a file name.
    ///
    /// # Errors
    ///
    /// [`RejectReason::HashMismatch`] when the hash differs or the file is not pinned.
    pub fn check_hash(&self, file_name: &str, found: &str) -> Result<(), RejectReason> {
        match self.hashes.get(file_name) {
            Some(expected) if expected == found => Ok(()),
            Some(expected) => Err(RejectReason::HashMismatch {
                expected: expected.clone(),
                found: found.to_owned(),
                lock_file: self.lock_file.clone(),
            }),
            None => Err(RejectReason::HashMismatch {
                expected: "(not pinned)".to_owned(),
                found: found.to_owned(),
                lock_file: self.lock_file.clone(),
            }),
        }
    }

    /// Checks the library at `path` against its pin (hashing the file).
    ///
    /// # Errors
    ///
    /// [`RejectReason::HashMismatch`] when the hash differs or the file is not pinned;
    /// [`RejectReason::Unreadable`] when it cannot be read.
    pub fn check(&self, path: &Path) -> Result<(), RejectReason> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let found = sha256_file(path).map_err(|e| RejectReason::Unreadable {
            detail: e.to_string(),
        })?;
        self.check_hash(&name, &found)
    }
}

/// Reads the text of a pin file (for `runtimes install`): `Ok(None)` when there is none. The
/// same rules as [`Pins::read`]: a regular file, at most [`MAX_LOCK_FILE_SIZE`] bytes.
///
/// # Errors
///
/// What is wrong with it, in words.
pub fn read_lock_text(lock_file: &Path) -> Result<Option<String>, String> {
    match open_regular(lock_file).map_err(|e| e.to_string())? {
        None => Ok(None),
        Some((file, metadata)) => read_bounded(file, metadata.len()).map(Some),
    }
}

fn read_bounded(file: File, size: u64) -> Result<String, String> {
    if size > MAX_LOCK_FILE_SIZE {
        return Err(format!(
            "it is {size} bytes, more than the {MAX_LOCK_FILE_SIZE} bytes a pin file may have"
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_LOCK_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_LOCK_FILE_SIZE {
        return Err(format!(
            "it grew past the {MAX_LOCK_FILE_SIZE} bytes a pin file may have"
        ));
    }
    String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_owned())
}

/// Opens `path` if it is a regular file (following symlinks): its type is checked before it
/// is opened, so opening a FIFO or a device never blocks or has side effects, and again on the
/// open file. `Ok(None)` when it does not exist.
fn open_regular(path: &Path) -> std::io::Result<Option<(File, Metadata)>> {
    let not_regular = |metadata: &Metadata| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is {}, not a regular file", describe_type(metadata)),
        )
    };
    match std::fs::metadata(path) {
        Ok(metadata) if !metadata.is_file() => return Err(not_regular(&metadata)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    let file = open_nonblocking(path, false)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(not_regular(&metadata));
    }
    Ok(Some((file, metadata)))
}

/// The lower-case hex sha256 of a regular file. A FIFO, a device or a socket is refused by its
/// type before anything is read.
///
/// # Errors
///
/// The I/O error reading it, or `InvalidInput` when it is not a regular file.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    match open_regular(path)? {
        Some((file, _)) => sha256_of(&file),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} does not exist", path.display()),
        )),
    }
}

/// The lower-case hex sha256 of an open file's whole content, read from its start whatever
/// the file position.
///
/// # Errors
///
/// The I/O error reading it.
pub fn sha256_of(file: &File) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut offset = 0u64;
    loop {
        let read = read_at(file, &mut buffer, offset)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        offset += read as u64;
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(unix)]
fn read_at(file: &File, buffer: &mut [u8], offset: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    loop {
        match file.read_at(buffer, offset) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

#[cfg(not(unix))]
fn read_at(mut file: &File, buffer: &mut [u8], offset: u64) -> std::io::Result<usize> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read(buffer)
}

/// Hashes already computed in this process, by file identity: a pinned library is hashed
/// once per version however often it is discovered or checked.
static HASHES: Mutex<Option<HashMap<Identity, String>>> = Mutex::new(None);

/// The most identities remembered; the cache is emptied when full.
const MAX_CACHED_HASHES: usize = 4096;

/// The sha256 of an open file whose identity (read from the same open file) is `identity`,
/// from the cache when this version of the file was hashed before.
pub fn sha256_cached(file: &File, identity: Identity) -> std::io::Result<String> {
    if let Some(hash) = HASHES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .and_then(|m| m.get(&identity))
    {
        return Ok(hash.clone());
    }
    let hash = sha256_of(file)?;
    // Remember it only if the file did not change while it was read.
    if file.metadata().map(|m| Identity::of(&m)).ok() == Some(identity) {
        let mut cache = HASHES.lock().unwrap_or_else(PoisonError::into_inner);
        let map = cache.get_or_insert_with(HashMap::new);
        if map.len() >= MAX_CACHED_HASHES {
            map.clear();
        }
        map.insert(identity, hash.clone());
    }
    Ok(hash)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn folders_above_may_be_sticky_but_not_open_to_others() {
        let root = tempfile::tempdir().unwrap();
        let parent = root.path().join("parent");
        let plugins = parent.join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        mode(&plugins, 0o755);
        let plugins = plugins.canonicalize().unwrap();
        mode(&parent, 0o1777);
        assert_eq!(check_folders(&plugins, TrustOptions::STRICT), Ok(()));
        mode(&parent, 0o777);
        let Err(RejectReason::Insecure { detail }) = check_folders(&plugins, TrustOptions::STRICT)
        else {
            panic!("a parent writable by others without the sticky bit must be refused");
        };
        assert!(
            detail.starts_with(&format!(
                "the folder {} is writable by others without the sticky bit",
                parent.canonicalize().unwrap().display()
            )),
            "{detail}"
        );
        let relaxed = TrustOptions::STRICT.with_allow_insecure(true);
        assert_eq!(check_folders(&plugins, relaxed), Ok(()));
        // The plugin folder itself may not be open to others, sticky or not.
        mode(&parent, 0o755);
        mode(&plugins, 0o1777);
        assert!(matches!(
            check_folders(&plugins, TrustOptions::STRICT),
            Err(RejectReason::Insecure { .. })
        ));
    }

    #[test]
    fn pin_files_are_bounded_and_strict() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(LOCK_FILE);
        assert!(
            Pins::read(dir.path(), TrustOptions::STRICT)
                .unwrap()
                .is_none()
        );
        let hash = "a".repeat(64);
        std::fs::write(&lock, format!("# pins\n{hash}  *libx.so\n")).unwrap();
        mode(&lock, 0o644);
        let pins = Pins::read(dir.path(), TrustOptions::STRICT)
            .unwrap()
            .unwrap();
        assert_eq!(pins.pinned("libx.so"), Some(hash.as_str()));
        assert!(pins.check_hash("libx.so", &hash).is_ok());
        assert!(matches!(
            pins.check_hash("liby.so", &hash),
            Err(RejectReason::HashMismatch { expected, .. }) if expected == "(not pinned)"
        ));
        mode(&lock, 0o666);
        assert!(matches!(
            Pins::read(dir.path(), TrustOptions::STRICT),
            Err(RejectReason::PinFile { detail, .. }) if detail.contains("writable by others")
        ));
        mode(&lock, 0o644);
        std::fs::write(&lock, "not-a-hash  libx.so\n").unwrap();
        assert!(matches!(
            Pins::read(dir.path(), TrustOptions::STRICT),
            Err(RejectReason::PinFile { detail, .. }) if detail.contains("line 1")
        ));
        std::fs::write(&lock, vec![b'#'; MAX_LOCK_FILE_SIZE as usize + 1]).unwrap();
        assert!(matches!(
            Pins::read(dir.path(), TrustOptions::STRICT),
            Err(RejectReason::PinFile { detail, .. }) if detail.contains("more than")
        ));
        std::fs::remove_file(&lock).unwrap();
        std::fs::create_dir(&lock).unwrap();
        assert!(matches!(
            Pins::read(dir.path(), TrustOptions::STRICT),
            Err(RejectReason::PinFile { detail, .. }) if detail.contains("a directory")
        ));
    }

    #[test]
    fn identity_says_what_changed() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"one").unwrap();
        let before = Identity::of(&std::fs::metadata(&path).unwrap());
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"two")
            .unwrap();
        let after = Identity::of(&std::fs::metadata(&path).unwrap());
        assert!(before.same_file(&after));
        assert_eq!(
            before.difference(&after),
            "it was modified: its size went from 3 to 6 bytes"
        );
        let other = dir.path().join("g");
        std::fs::write(&other, b"one").unwrap();
        let other = Identity::of(&std::fs::metadata(&other).unwrap());
        assert!(!before.same_file(&other));
        assert!(
            before
                .difference(&other)
                .starts_with("another file is at its path")
        );
    }

    #[test]
    fn hashing_reads_the_whole_open_file_from_its_start() {
        use std::io::Read as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 200_000]).unwrap();
        let mut file = File::open(&path).unwrap();
        let mut skip = [0u8; 1000];
        file.read_exact(&mut skip).unwrap();
        assert_eq!(sha256_of(&file).unwrap(), sha256_file(&path).unwrap());
        assert!(sha256_file(Path::new("/dev/zero")).is_err());
    }
}
