//! Refusing plugin files that someone else could have changed.
//!
//! Like OpenSSH's `StrictModes`: a plugin file, and the directory it is in, must not be
//! writable by group or others, and must be owned by the current user or root. An optional pin
//! file, `plugins.lock` in a plugin directory, lists `sha256  file-name` lines (the output of
//! `sha256sum`); where it exists, every library in that directory must be listed with its hash.
//! `AGENT_RUNTIMES_ALLOW_INSECURE=1` (or [`LoaderOptions::allow_insecure`]) turns the
//! permission checks off for development; it does not turn off pins.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::report::RejectReason;

/// The name of the pin file in a plugin directory.
pub const LOCK_FILE: &str = "plugins.lock";

/// The environment variable that allows insecure plugin files and folders.
pub const ALLOW_INSECURE_ENV: &str = "AGENT_RUNTIMES_ALLOW_INSECURE";

/// How strict discovery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoaderOptions {
    /// Load plugin files and folders writable by group or others, or owned by another user.
    pub allow_insecure: bool,
    /// The isolation level of every runtime, unless one is set per runtime
    /// ([`Runtimes::set_isolation`](crate::Runtimes::set_isolation)).
    pub isolation: crate::Isolation,
    /// How workers are run at the *process* level.
    pub process: crate::ProcessOptions,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        Self::from_env()
    }
}

impl LoaderOptions {
    /// Strict checks.
    pub const STRICT: Self = Self {
        allow_insecure: false,
        isolation: crate::Isolation::Threads,
        process: crate::ProcessOptions::DEFAULT,
    };

    /// Strict unless `AGENT_RUNTIMES_ALLOW_INSECURE` is `1` or `true`; the isolation level
    /// from `AGENT_RUNTIMES_ISOLATION` (default *threads*).
    pub fn from_env() -> Self {
        let allow = std::env::var(ALLOW_INSECURE_ENV)
            .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
            .unwrap_or(false);
        Self {
            allow_insecure: allow,
            isolation: crate::Isolation::from_env(),
            process: crate::ProcessOptions::from_env(),
        }
    }

    /// Sets the isolation level of every runtime.
    pub fn with_isolation(mut self, isolation: crate::Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// Sets how workers are run at the *process* level.
    pub fn with_process(mut self, process: crate::ProcessOptions) -> Self {
        self.process = process;
        self
    }

    /// Sets whether insecure files and folders are allowed.
    pub fn with_allow_insecure(mut self, allow: bool) -> Self {
        self.allow_insecure = allow;
        self
    }
}

/// Checks that `path` (a file or directory) cannot be changed by someone else.
///
/// # Errors
///
/// [`RejectReason::Insecure`] naming the permission that is wrong.
pub fn check_permissions(path: &Path, options: &LoaderOptions) -> Result<(), RejectReason> {
    if options.allow_insecure {
        return Ok(());
    }
    let metadata = std::fs::metadata(path).map_err(|e| RejectReason::Unreadable {
        detail: e.to_string(),
    })?;
    check_metadata(path, &metadata, options)
}

/// [`check_permissions`] on metadata already read.
///
/// # Errors
///
/// [`RejectReason::Insecure`] naming the permission that is wrong.
#[cfg(unix)]
pub fn check_metadata(
    path: &Path,
    metadata: &std::fs::Metadata,
    options: &LoaderOptions,
) -> Result<(), RejectReason> {
    use std::os::unix::fs::MetadataExt;
    if options.allow_insecure {
        return Ok(());
    }
    let mode = metadata.mode();
    let what = if metadata.is_dir() {
        "directory"
    } else {
        "file"
    };
    if mode & 0o022 != 0 {
        let by = if mode & 0o002 != 0 {
            "others"
        } else {
            "its group"
        };
        return Err(RejectReason::Insecure {
            detail: format!(
                "the {what} {} is writable by {by} (mode {:o})",
                path.display(),
                mode & 0o7777
            ),
        });
    }
    let owner = metadata.uid();
    let me = rustix::process::geteuid().as_raw();
    if owner != me && owner != 0 {
        return Err(RejectReason::Insecure {
            detail: format!(
                "the {what} {} is owned by user {owner}, not by you ({me}) or root",
                path.display()
            ),
        });
    }
    Ok(())
}

/// Permission checks are Unix-only; elsewhere the file system's ACLs apply.
#[cfg(not(unix))]
pub fn check_metadata(
    _path: &Path,
    _metadata: &std::fs::Metadata,
    _options: &LoaderOptions,
) -> Result<(), RejectReason> {
    Ok(())
}

/// The pins of one directory: file name → lower-case hex sha256.
#[derive(Debug, Clone, Default)]
pub struct Pins {
    lock_file: PathBuf,
    hashes: HashMap<String, String>,
}

impl Pins {
    /// Reads `dir/plugins.lock`; `Ok(None)` when there is none.
    ///
    /// # Errors
    ///
    /// [`RejectReason::MalformedManifest`]-style detail as a string when a line is malformed
    /// or the file cannot be read.
    pub fn read(dir: &Path) -> Result<Option<Self>, String> {
        let lock_file = dir.join(LOCK_FILE);
        let text = match std::fs::read_to_string(&lock_file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", lock_file.display())),
        };
        let mut hashes = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.splitn(2, char::is_whitespace);
            let (Some(hash), Some(name)) = (parts.next(), parts.next()) else {
                return Err(format!(
                    "{} line {}: expected `<sha256>  <file name>`",
                    lock_file.display(),
                    number + 1
                ));
            };
            let hash = hash.to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "{} line {}: `{hash}` is not a sha256",
                    lock_file.display(),
                    number + 1
                ));
            }
            let name = name.trim().trim_start_matches('*');
            hashes.insert(name.to_owned(), hash);
        }
        Ok(Some(Self { lock_file, hashes }))
    }

    /// Checks a library against its pin.
    ///
    /// # Errors
    ///
    /// [`RejectReason::HashMismatch`] when the hash differs or the file is not pinned.
    pub fn check(&self, path: &Path) -> Result<(), RejectReason> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let found = sha256_file(path).map_err(|e| RejectReason::Unreadable {
            detail: e.to_string(),
        })?;
        match self.hashes.get(&name) {
            Some(expected) if *expected == found => Ok(()),
            Some(expected) => Err(RejectReason::HashMismatch {
                expected: expected.clone(),
                found,
                lock_file: self.lock_file.clone(),
            }),
            None => Err(RejectReason::HashMismatch {
                expected: "(not pinned)".to_owned(),
                found,
                lock_file: self.lock_file.clone(),
            }),
        }
    }
}

/// The lower-case hex sha256 of a file.
///
/// # Errors
///
/// The I/O error reading it.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
