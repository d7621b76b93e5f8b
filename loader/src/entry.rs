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
    /// The JSON Schema of its configuration as declared (read from the manifest, without
    /// loading the library): kept as text, and parsed only when asked for, because listing
    /// many runtimes should not build every schema. See [`RuntimeEntry::config_schema`].
    #[serde(rename = "config_schema", serialize_with = "serialize_schema")]
    pub(crate) config_schema_text: std::sync::Arc<str>,
    /// What it declares it needs from the sandbox at the process level (its manifest's
    /// `permissions`); `null` when it declares nothing, and then nothing is granted but what
    /// the operator grants (`--allow-*`, [`ProcessOptions::with_grants`](crate::ProcessOptions::with_grants)).
    pub permissions: serde_json::Value,
    /// Where it comes from.
    pub source: RuntimeSource,
}

impl RuntimeEntry {
    /// The JSON Schema of the runtime's configuration, as it declares it; `None` when it
    /// declares none or the text is not JSON.
    pub fn config_schema(&self) -> Option<serde_json::Value> {
        parse_schema(&self.config_schema_text)
    }
}

fn parse_schema(text: &str) -> Option<serde_json::Value> {
    if text.trim().is_empty() {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// The schema in JSON output: the parsed schema, or `null`.
fn serialize_schema<S: serde::Serializer>(
    text: &std::sync::Arc<str>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&parse_schema(text), serializer)
}
