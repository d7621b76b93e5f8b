//! What the registry knows about a runtime before (and without) loading it.

use std::fmt;
use std::path::PathBuf;

use runtime_api::Capabilities;
use serde::Serialize;

/// Where a registered runtime comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RuntimeSource {
    /// A plugin library on the search path.
    Plugin {
        /// The library, symlinks resolved.
        path: PathBuf,
        /// The plugin package's name.
        plugin_name: String,
    },
    /// A runtime compiled into the host and registered through the API.
    BuiltIn,
}

impl fmt::Display for RuntimeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeSource::Plugin { path, .. } => write!(f, "{}", path.display()),
            RuntimeSource::BuiltIn => f.write_str("built-in"),
        }
    }
}

/// A registered runtime, as `list_runtimes` and `get_entry` describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RuntimeEntry {
    /// The runtime's id.
    pub id: String,
    /// A name for people.
    pub display_name: String,
    /// What it is for.
    pub description: String,
    /// The version of the package that provides it.
    pub version: String,
    /// The runtime-api version it was built against.
    pub api_version: String,
    /// The aliases that point at it, sorted.
    pub aliases: Vec<String>,
    /// What it can do.
    pub capabilities: Capabilities,
    /// The JSON Schema of its configuration, as it declares it (read from the manifest,
    /// without loading the library); `None` when it declares none or the text is not JSON.
    pub config_schema: Option<serde_json::Value>,
    /// Where it comes from.
    pub source: RuntimeSource,
}
