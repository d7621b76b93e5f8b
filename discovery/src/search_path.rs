//! Where plugins are looked for.
//!
//! In order: directories given through the API, then each entry of `AGENT_RUNTIMES_PATH`
//! (split like `PATH`), then the per-user folder (`$XDG_DATA_HOME/agent-runtimes/plugins`,
//! i.e. `~/.local/share/agent-runtimes/plugins` on Linux; the platform's data directory
//! elsewhere). The current directory is never searched unless named. Each directory is scanned
//! non-recursively for files with the platform's shared-library suffix, in sorted file-name
//! order.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The environment variable holding extra plugin directories.
pub const PATH_ENV: &str = "AGENT_RUNTIMES_PATH";

/// The file-name suffix of a plugin library on this platform (`.so`, `.dylib`, `.dll`).
pub const LIBRARY_SUFFIX: &str = std::env::consts::DLL_SUFFIX;

/// Where a directory of the search path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DirOrigin {
    /// Given through the API (or `--plugin-dir`).
    Explicit,
    /// An entry of `AGENT_RUNTIMES_PATH`.
    Environment,
    /// The per-user plugin folder.
    User,
}

impl fmt::Display for DirOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DirOrigin::Explicit => "given explicitly",
            DirOrigin::Environment => PATH_ENV,
            DirOrigin::User => "per-user folder",
        })
    }
}

/// One directory of the search path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SearchDir {
    /// The directory.
    pub path: PathBuf,
    /// Where it came from.
    pub origin: DirOrigin,
}

/// The ordered list of directories searched for plugins.
///
/// # Examples
///
/// ```
/// use runtime_discovery::SearchPath;
///
/// // Only the directories named here: no environment, no per-user folder.
/// let path = SearchPath::empty().with_dir("/opt/my-host/plugins");
/// assert_eq!(path.dirs().len(), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchPath {
    dirs: Vec<SearchDir>,
}

impl SearchPath {
    /// A search path with no directory.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The standard search path: `dirs` first, then `AGENT_RUNTIMES_PATH`, then the per-user
    /// folder.
    pub fn standard<I, P>(dirs: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        let mut path = Self::empty();
        for dir in dirs {
            path = path.with_dir(dir);
        }
        path.with_env_value(std::env::var_os(PATH_ENV))
            .with_user_dir(user_plugin_dir())
    }

    /// Adds a directory given explicitly.
    pub fn with_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.push(dir.into(), DirOrigin::Explicit);
        self
    }

    /// Adds the entries of a `AGENT_RUNTIMES_PATH`-style value (empty entries are skipped:
    /// they would otherwise mean the current directory).
    pub fn with_env_value(mut self, value: Option<OsString>) -> Self {
        if let Some(value) = value {
            for dir in std::env::split_paths(&value) {
                if !dir.as_os_str().is_empty() {
                    self.push(dir, DirOrigin::Environment);
                }
            }
        }
        self
    }

    /// Adds the per-user folder, if there is one.
    pub fn with_user_dir(mut self, dir: Option<PathBuf>) -> Self {
        if let Some(dir) = dir {
            self.push(dir, DirOrigin::User);
        }
        self
    }

    fn push(&mut self, path: PathBuf, origin: DirOrigin) {
        // A directory named twice is searched once, at its first place.
        if !self.dirs.iter().any(|d| d.path == path) {
            self.dirs.push(SearchDir { path, origin });
        }
    }

    /// The directories, in search order.
    pub fn dirs(&self) -> &[SearchDir] {
        &self.dirs
    }
}

/// The per-user plugin folder: `<data dir>/agent-runtimes/plugins`.
pub fn user_plugin_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("agent-runtimes").join("plugins"))
}

/// Whether a file name has the platform's library suffix.
pub fn has_library_suffix(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.len() > LIBRARY_SUFFIX.len() && n.ends_with(LIBRARY_SUFFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_explicit_then_env_then_user_and_duplicates_collapse() {
        let env = std::env::join_paths(["/env/a", "", "/explicit", "/env/b"]).unwrap();
        let path = SearchPath::empty()
            .with_dir("/explicit")
            .with_env_value(Some(env))
            .with_user_dir(Some("/home/u/.local/share/agent-runtimes/plugins".into()));
        let got: Vec<_> = path
            .dirs()
            .iter()
            .map(|d| (d.path.to_str().unwrap(), d.origin))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/explicit", DirOrigin::Explicit),
                ("/env/a", DirOrigin::Environment),
                ("/env/b", DirOrigin::Environment),
                (
                    "/home/u/.local/share/agent-runtimes/plugins",
                    DirOrigin::User
                ),
            ]
        );
    }

    #[test]
    fn suffix() {
        let lib = format!("libx{LIBRARY_SUFFIX}");
        assert!(has_library_suffix(Path::new(&lib)));
        assert!(!has_library_suffix(Path::new(LIBRARY_SUFFIX)));
        assert!(!has_library_suffix(Path::new("libx.txt")));
    }
}
