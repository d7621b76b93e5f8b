//! One candidate file: what identifies a version of it, opening it without blocking, and what
//! kind of file it is. Shared by `inspect` and `security`.

use std::fs::{File, Metadata};
use std::path::Path;

/// What kind of file this is, in words (`a directory`, `a FIFO`...).
pub fn describe_type(metadata: &Metadata) -> String {
    let file_type = metadata.file_type();
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a FIFO".to_owned();
        }
        if file_type.is_char_device() {
            return "a character device".to_owned();
        }
        if file_type.is_block_device() {
            return "a block device".to_owned();
        }
        if file_type.is_socket() {
            return "a socket".to_owned();
        }
    }
    if file_type.is_dir() {
        "a directory".to_owned()
    } else if file_type.is_symlink() {
        "a symlink".to_owned()
    } else if file_type.is_file() {
        "a regular file".to_owned()
    } else {
        "not a file".to_owned()
    }
}

/// What identifies one version of a file: device, inode, size, modification and status-change
/// times. Any change to the file's content, owner or mode, or another file at its path,
/// changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    #[cfg(unix)]
    pub fn of(metadata: &Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: metadata.dev(),
            ino: metadata.ino(),
            size: metadata.size(),
            mtime: (metadata.mtime(), metadata.mtime_nsec()),
            ctime: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }

    #[cfg(not(unix))]
    pub fn of(metadata: &Metadata) -> Self {
        let mtime = metadata
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| (d.as_secs() as i64, i64::from(d.subsec_nanos())))
            .unwrap_or_default();
        Self {
            dev: 0,
            ino: 0,
            size: metadata.len(),
            mtime,
            ctime: mtime,
        }
    }

    /// Whether two metadata describe the same file (device and inode), whatever its content.
    pub fn same_file(&self, other: &Identity) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }

    /// What differs, in words, for a [`RejectReason::Changed`](crate::RejectReason::Changed).
    pub fn difference(&self, now: &Identity) -> String {
        if !self.same_file(now) {
            return format!(
                "another file is at its path now (device {} inode {} instead of device {} inode {})",
                now.dev, now.ino, self.dev, self.ino
            );
        }
        if self.size != now.size {
            return format!(
                "it was modified: its size went from {} to {} bytes",
                self.size, now.size
            );
        }
        if self.mtime != now.mtime {
            return "it was modified: its modification time changed".to_owned();
        }
        "its status changed (owner, mode or links: its change time moved)".to_owned()
    }
}

/// Opens a file for reading without blocking and without following a final symlink when
/// `nofollow`, and returns it with its metadata read from the open file.
pub fn open_nonblocking(path: &Path, nofollow: bool) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut flags = rustix::fs::OFlags::NONBLOCK;
        if nofollow {
            flags |= rustix::fs::OFlags::NOFOLLOW;
        }
        options.custom_flags(flags.bits() as i32);
    }
    #[cfg(not(unix))]
    let _ = nofollow;
    options.open(path)
}
