//! What a server is asked to do: where it listens, the key clients send, its limits, the
//! runtime instances it creates at start, and where turns run.

// `ConfigError` holds the loader's `ResolveError`, large by design (structured reasons, cold
// paths); see the same allowance in runtime-loader's lib.rs.
#![allow(clippy::result_large_err)]

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};

use runtime_loader::{Isolation, ResolveError};
use runtime_queue::QueueError;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::limits::ServeLimits;

/// How a [`Server`](crate::Server) serves.
///
/// [`ServeConfig::default`] is `runtimes serve` without flags: loopback port 8700, no key,
/// [`ServeLimits::default`], the registry's own isolation levels, default configurations
/// only, turns run in this process.
///
/// ```
/// use runtime_serve::{ApiKey, ServeConfig};
///
/// let config = ServeConfig::default()
///     .with_addr(([127, 0, 0, 1], 0).into())
///     .with_api_key(ApiKey::new("secret").expect("not empty"))
///     .with_instance("openai", serde_json::json!({"model": "smollm2"}));
/// assert_eq!(config.instances.len(), 1);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeConfig {
    /// Where [`Server::bind`](crate::Server::bind) listens, and what the warning about
    /// listening beyond loopback names (`--addr`). Default: `127.0.0.1:8700`.
    pub addr: SocketAddr,
    /// The key every endpoint but `/healthz` requires as `Authorization: Bearer <key>`
    /// (`--api-key-env`). Default: none, no authentication.
    pub api_key: Option<ApiKey>,
    /// Sizes, counts and time bounds.
    pub limits: ServeLimits,
    /// The isolation level of every runtime of the registry (`--isolate` is
    /// [`Isolation::Process`]); `None` leaves each runtime's own. Not used with a queue
    /// backend: isolation is the workers' business.
    pub isolation: Option<Isolation>,
    /// Runtimes created with a configuration at start, by id or alias (`--config NAME=JSON`);
    /// the others get their default configuration on first use. With a queue backend the
    /// configurations travel with each job instead.
    pub instances: Vec<(String, Value)>,
    /// Send every turn to the workers of a Redis queue instead of running it in this process
    /// (`--redis`). Default: none.
    pub redis: Option<RedisBackend>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 8700)),
            api_key: None,
            limits: ServeLimits::default(),
            isolation: None,
            instances: Vec::new(),
            redis: None,
        }
    }
}

impl ServeConfig {
    /// Listens on `addr` (port 0 picks a free port).
    #[must_use]
    pub fn with_addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Requires this key.
    #[must_use]
    pub fn with_api_key(mut self, key: ApiKey) -> Self {
        self.api_key = Some(key);
        self
    }

    /// Uses these limits.
    #[must_use]
    pub fn with_limits(mut self, limits: ServeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Runs every runtime at this isolation level.
    #[must_use]
    pub fn with_isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = Some(isolation);
        self
    }

    /// Creates the runtime `name` (an id or alias) with `config` at start.
    #[must_use]
    pub fn with_instance(mut self, name: impl Into<String>, config: Value) -> Self {
        self.instances.push((name.into(), config));
        self
    }

    /// Runs turns on the workers of this Redis queue.
    #[must_use]
    pub fn with_redis(mut self, redis: RedisBackend) -> Self {
        self.redis = Some(redis);
        self
    }
}

/// The key clients must send. Only its SHA-256 is kept, so that keys of any length compare
/// in constant time; `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    digest: [u8; 32],
}

impl ApiKey {
    /// The key, or `None` if it is empty (an empty key would let every client in).
    pub fn new(key: impl AsRef<[u8]>) -> Option<Self> {
        let key = key.as_ref();
        (!key.is_empty()).then(|| Self {
            digest: digest(key),
        })
    }

    /// Whether `given` is the key, compared in constant time.
    pub fn matches(&self, given: &[u8]) -> bool {
        use subtle::ConstantTimeEq as _;
        bool::from(digest(given).ct_eq(&self.digest))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

/// The SHA-256 of a key.
fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

/// The Redis queue whose workers run the turns (`runtimes worker`). The server then loads
/// no plugin: the models it offers are the runtimes the live workers advertise.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisBackend {
    /// `redis://[[USER]:PASSWORD@]HOST:PORT[/DB]` (`--redis`); its `Debug` shows the
    /// password as `***`.
    pub url: String,
    /// The prefix of the queue's keys, as given to the workers (`--prefix`). Default:
    /// `runtimes`.
    pub prefix: String,
    /// The workers' consumer group, as given to the workers (`--group`). Default: `workers`.
    pub group: String,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &runtime_queue::redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("group", &self.group)
            .finish()
    }
}

impl RedisBackend {
    /// The queue at `url`, with the default prefix and group.
    pub fn new(url: impl Into<String>) -> Self {
        let defaults = runtime_queue::QueueConfig::default();
        Self {
            url: url.into(),
            prefix: defaults.prefix,
            group: defaults.group,
        }
    }

    /// Uses this key prefix.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Uses this consumer group.
    #[must_use]
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }
}

/// Why the runtime instances or the queue of a [`ServeConfig`] could not be set up.
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
    /// Two instances name the same runtime (by id or alias).
    #[error("--config: runtime `{name}` is configured twice")]
    Twice {
        /// The name configured twice.
        name: String,
    },
    /// The runtime is unknown, was refused, or refused the configuration.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The Redis URL is not one.
    #[error(transparent)]
    Queue(QueueError),
}

/// Parses one `--config NAME=JSON` argument into a runtime's name and configuration.
///
/// # Errors
///
/// [`ConfigError::Syntax`] without `=`, [`ConfigError::Json`] when the JSON does not parse.
pub fn parse_instance(given: &str) -> Result<(String, Value), ConfigError> {
    let Some((name, json)) = given.split_once('=') else {
        return Err(ConfigError::Syntax {
            given: given.escape_debug().to_string(),
        });
    };
    let config: Value = serde_json::from_str(json).map_err(|e| ConfigError::Json {
        name: name.escape_debug().to_string(),
        detail: e.to_string(),
    })?;
    Ok((name.to_owned(), config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_parse_or_say_why() {
        let (name, config) = parse_instance(r#"openai={"model": "m"}"#).unwrap();
        assert_eq!(name, "openai");
        assert_eq!(config["model"], "m");
        assert!(matches!(
            parse_instance("openai"),
            Err(ConfigError::Syntax { .. })
        ));
        assert!(matches!(
            parse_instance("openai={"),
            Err(ConfigError::Json { .. })
        ));
    }

    #[test]
    fn keys_match_only_themselves_and_never_show() {
        let key = ApiKey::new("secret").unwrap();
        assert!(key.matches(b"secret"));
        assert!(!key.matches(b"secret "));
        assert!(!key.matches(b""));
        assert!(ApiKey::new("").is_none());
        assert!(!format!("{key:?}").contains("secret"));
    }
}
