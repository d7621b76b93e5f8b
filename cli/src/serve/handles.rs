//! The one place the server turns a runtime name into a [`RuntimeHandle`]: the runtimes named
//! by `--config` are created with their configuration at start, every other runtime with its
//! default configuration on first use. An isolation level (`--isolate`) applies in [`open`].

// The loader's `ResolveError` is large by design (structured reasons, cold paths); see the
// same allowance in runtime-loader's lib.rs.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::time::Duration;

use runtime_loader::{ResolveError, RuntimeHandle, Runtimes};
use serde_json::Value;

/// Why a `--config` could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Not `NAME=JSON`.
    #[error("--config {given}: expected NAME=JSON")]
    Syntax {
        /// The argument, escaped.
        given: String,
    },
    /// The JSON does not parse.
    #[error("--config {name}: the configuration is not valid JSON: {detail}")]
    Json {
        /// The runtime named.
        name: String,
        /// What the parser said.
        detail: String,
    },
    /// Two `--config` name the same runtime (by id or alias).
    #[error("--config: runtime `{name}` is configured twice")]
    Twice {
        /// The name configured twice.
        name: String,
    },
    /// The runtime is unknown, was refused, or refused the configuration.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
}

/// The handles the server runs turns on.
#[derive(Debug)]
pub struct Handles {
    runtimes: Runtimes,
    configured: HashMap<String, RuntimeHandle>,
    timeout: Duration,
}

/// Creates (or, for the default configuration, finds) a runtime's handle. Every handle the
/// server uses comes from here: wire isolation levels in this function.
fn open(
    runtimes: &Runtimes,
    name: &str,
    config: Option<&Value>,
) -> Result<RuntimeHandle, ResolveError> {
    match config {
        None => runtimes.resolve(name),
        Some(config) => runtimes.new_instance(name, config),
    }
}

impl Handles {
    /// Waits until no turn of the runtimes served still runs inside its plugin.
    pub async fn wait_idle(&self) {
        self.runtimes.wait_idle().await;
        for handle in self.configured.values() {
            let _ = handle.wait_idle().await;
        }
    }

    /// Creates the runtimes named by `configs` (`NAME=JSON` each); turns end with a `timeout`
    /// error after `timeout`.
    pub fn new(
        runtimes: Runtimes,
        configs: &[String],
        timeout: Duration,
    ) -> Result<Self, ConfigError> {
        let mut configured = HashMap::new();
        for given in configs {
            let Some((name, json)) = given.split_once('=') else {
                return Err(ConfigError::Syntax {
                    given: given.escape_debug().to_string(),
                });
            };
            let config: Value = serde_json::from_str(json).map_err(|e| ConfigError::Json {
                name: name.escape_debug().to_string(),
                detail: e.to_string(),
            })?;
            let handle = open(&runtimes, name, Some(&config))?;
            let names: Vec<String> = match runtimes.get_entry(handle.id()) {
                Some(entry) => std::iter::once(entry.id).chain(entry.aliases).collect(),
                None => vec![handle.id().to_owned()],
            };
            for name in names {
                if configured.insert(name.clone(), handle.clone()).is_some() {
                    return Err(ConfigError::Twice { name });
                }
            }
        }
        Ok(Self {
            runtimes,
            configured,
            timeout,
        })
    }

    /// The registry.
    pub fn runtimes(&self) -> &Runtimes {
        &self.runtimes
    }

    /// The handle of a runtime, by id or alias.
    ///
    /// # Errors
    ///
    /// As [`Runtimes::resolve`].
    pub fn get(&self, name: &str) -> Result<RuntimeHandle, ResolveError> {
        let handle = match self.configured.get(name) {
            Some(handle) => handle.clone(),
            None => open(&self.runtimes, name, None)?,
        };
        Ok(handle.with_timeout(self.timeout))
    }
}
