//! What a runtime says about itself.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Capabilities;

/// A runtime's description of itself, as its `info` call returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RuntimeInfo {
    /// The runtime's id.
    pub id: String,
    /// A name for people.
    pub display_name: String,
    /// What it is for.
    pub description: String,
    /// The version of the package that provides it.
    pub version: String,
    /// What it can do.
    pub capabilities: Capabilities,
    /// Free-form details (JSON), e.g. the configured model; `null` when absent.
    #[serde(default)]
    pub metadata: Value,
}
