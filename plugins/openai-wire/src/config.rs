//! The configuration keys every HTTP model runtime reads, parsed by hand so that validation
//! reports every problem at once (a serde derive stops at the first).
//!
//! A runtime with a typed configuration (runtime-api's `typed-config`) flattens
//! [`ServerKeys`] into its own configuration type and builds the [`ServerConfig`] with
//! [`ServerConfig::from_keys`], which also finds what the schema cannot say (a URL's scheme, a
//! header's bytes). A runtime that parses by hand uses one [`Fields`]: [`ServerConfig::parse`]
//! reads the shared keys, the runtime reads its own with the same [`Fields`], and
//! [`Fields::finish`] returns the configuration or every problem found.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use runtime_api::{RuntimeError, Value, json};
use schemars::JsonSchema;
use serde::Deserialize;

/// The keys [`ServerConfig::parse`] reads that every HTTP model runtime accepts.
pub const KEYS: [&str; 9] = [
    "base_url",
    "model",
    "api_key_env",
    "headers",
    "connect_timeout_ms",
    "read_timeout_ms",
    "request_timeout_ms",
    "max_tokens",
    "extra_body",
];

/// The key [`ServerConfig::parse`] reads that only Chat Completions runtimes accept.
pub const CHAT_KEYS: [&str; 1] = ["include_usage"];

/// The keys of [`KEYS`] as a configuration type: flatten it (`#[serde(flatten)]`) into a
/// runtime's own, typed configuration. Its doc comments are the keys' descriptions in the
/// schema; `null` is the same as an absent key.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ServerKeys {
    /// The API base, e.g. http://127.0.0.1:8080/v1.
    pub base_url: String,
    /// The model used when a request names none.
    #[schemars(length(min = 1))]
    pub model: String,
    /// The environment variable that holds the API key (the key itself never goes in the config).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Extra headers sent with every request.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Time to establish a connection, in milliseconds.
    #[serde(default)]
    #[schemars(range(min = 1), extend("default" = 10000))]
    pub connect_timeout_ms: Option<u64>,
    /// Longest wait for the next bytes of a response, in milliseconds.
    #[serde(default)]
    #[schemars(range(min = 1), extend("default" = 300000))]
    pub read_timeout_ms: Option<u64>,
    /// Longest time for a whole request, in milliseconds (default: none).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub request_timeout_ms: Option<u64>,
    /// The default max_tokens when a request sets none.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_tokens: Option<u32>,
    /// Keys merged into every request body.
    #[serde(default)]
    pub extra_body: Option<serde_json::Map<String, Value>>,
}

/// The default time to establish a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default longest wait for the next bytes of a response (a model on a CPU may take
/// minutes to read a long prompt before its first token).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(300);

/// The object of a runtime's configuration.
///
/// # Errors
///
/// One problem for `null` (naming what `runtime` needs at least) or for a value that is not an
/// object.
pub fn object<'a>(
    value: &'a Value,
    runtime: &str,
) -> Result<&'a serde_json::Map<String, Value>, Vec<String>> {
    match value {
        Value::Object(object) => Ok(object),
        Value::Null => Err(vec![format!(
            "the {runtime} runtime needs a configuration object with at least `base_url` and \
             `model`"
        )]),
        other => Err(vec![format!(
            "the configuration must be a JSON object, not {}",
            type_name(other)
        )]),
    }
}

/// The fields of a configuration object being parsed, and the problems found so far.
#[derive(Debug)]
pub struct Fields<'a> {
    object: &'a serde_json::Map<String, Value>,
    problems: Vec<String>,
}

impl<'a> Fields<'a> {
    /// Starts parsing `object`, with no problem found yet.
    pub fn new(object: &'a serde_json::Map<String, Value>) -> Self {
        Self {
            object,
            problems: Vec::new(),
        }
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.object.get(key)
    }

    /// Records a problem.
    pub fn problem(&mut self, problem: impl Into<String>) {
        self.problems.push(problem.into());
    }

    /// Records several problems.
    pub fn problems(&mut self, problems: impl IntoIterator<Item = String>) {
        self.problems.extend(problems);
    }

    /// Records a problem for every key not in `known`.
    pub fn unknown_keys(&mut self, known: &[&str]) {
        for key in self.object.keys() {
            if !known.contains(&key.as_str()) {
                self.problems.push(format!(
                    "unknown key `{key}`; known keys: {}",
                    known.join(", ")
                ));
            }
        }
    }

    /// A positive number of milliseconds; `None` when absent, `null` or invalid (a problem).
    pub fn millis(&mut self, key: &str) -> Option<Duration> {
        match self.object.get(key) {
            None | Some(Value::Null) => None,
            Some(value) => match value.as_u64() {
                Some(ms) if ms > 0 => Some(Duration::from_millis(ms)),
                _ => {
                    self.problems.push(format!(
                        "`{key}` must be a positive whole number of milliseconds"
                    ));
                    None
                }
            },
        }
    }

    /// A whole number from 1 to `max`; `None` when absent, `null` or invalid (a problem).
    pub fn positive(&mut self, key: &str, max: u64) -> Option<u64> {
        match self.object.get(key) {
            None | Some(Value::Null) => None,
            Some(value) => match value.as_u64() {
                Some(n) if n > 0 && n <= max => Some(n),
                _ => {
                    self.problems
                        .push(format!("`{key}` must be a whole number from 1 to {max}"));
                    None
                }
            },
        }
    }

    /// A whole number from 1 to `u32::MAX`, as [`Fields::positive`].
    pub fn positive_u32(&mut self, key: &str) -> Option<u32> {
        self.positive(key, u64::from(u32::MAX))
            .and_then(|n| u32::try_from(n).ok())
    }

    /// A boolean; `default` when absent, `null` or invalid (a problem).
    pub fn flag(&mut self, key: &str, default: bool) -> bool {
        match self.object.get(key) {
            None | Some(Value::Null) => default,
            Some(Value::Bool(flag)) => *flag,
            Some(other) => {
                self.problems.push(format!(
                    "`{key}` must be true or false, not {}",
                    type_name(other)
                ));
                default
            }
        }
    }

    /// `parsed` when no problem was found, else every problem.
    ///
    /// # Errors
    ///
    /// The problems found, in the order they were found.
    pub fn finish<T>(self, parsed: T) -> Result<T, Vec<String>> {
        if self.problems.is_empty() {
            Ok(parsed)
        } else {
            Err(self.problems)
        }
    }
}

/// What a runtime needs to reach a model server and the defaults of its requests: the
/// configuration keys in [`KEYS`] and [`CHAT_KEYS`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The API base, without a trailing slash, e.g. `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// The model used when a request names none.
    pub model: String,
    /// The name of the environment variable that holds the API key.
    pub api_key_env: Option<String>,
    /// Extra headers sent with every request (marked sensitive: never shown in `Debug`).
    pub headers: HeaderMap,
    /// The longest time to establish a connection.
    pub connect_timeout: Duration,
    /// The longest wait for the next bytes of a response.
    pub read_timeout: Duration,
    /// The longest time for a whole request, if limited.
    pub request_timeout: Option<Duration>,
    /// The default `max_tokens` when a request sets none.
    pub max_tokens: Option<u32>,
    /// Keys merged into every request body (provider-specific options).
    pub extra_body: serde_json::Map<String, Value>,
    /// Chat Completions: ask for usage in streams (`stream_options.include_usage`).
    pub include_usage: bool,
}

impl ServerConfig {
    /// Reads the keys of [`KEYS`] and [`CHAT_KEYS`], recording their problems in `fields`.
    /// What is returned is meaningful only when no problem was recorded.
    pub fn parse(fields: &mut Fields<'_>) -> ServerConfig {
        let base_url = match fields.get("base_url") {
            None => {
                fields.problem("missing `base_url` (e.g. \"http://127.0.0.1:8080/v1\")");
                String::new()
            }
            Some(Value::String(text)) => match Url::parse(text) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {
                    text.trim_end_matches('/').to_owned()
                }
                Ok(url) => {
                    fields.problem(format!(
                        "`base_url` must be an http or https URL, not {}",
                        url.scheme()
                    ));
                    String::new()
                }
                Err(error) => {
                    fields.problem(format!("`base_url` is not a URL: {error}"));
                    String::new()
                }
            },
            Some(other) => {
                fields.problem(format!(
                    "`base_url` must be a string, not {}",
                    type_name(other)
                ));
                String::new()
            }
        };

        let model = match fields.get("model") {
            None => {
                fields.problem("missing `model`");
                String::new()
            }
            Some(Value::String(text)) if !text.trim().is_empty() => text.clone(),
            Some(Value::String(_)) => {
                fields.problem("`model` is empty");
                String::new()
            }
            Some(other) => {
                fields.problem(format!(
                    "`model` must be a string, not {}",
                    type_name(other)
                ));
                String::new()
            }
        };

        let api_key_env = match fields.get("api_key_env") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) if is_env_name(name) => Some(name.clone()),
            Some(Value::String(name)) => {
                fields.problem(format!(
                    "`api_key_env` must name an environment variable (letters, digits, `_`), \
                     not {name:?}; put the key in that variable, never in the config"
                ));
                None
            }
            Some(other) => {
                fields.problem(format!(
                    "`api_key_env` must be a string, not {}",
                    type_name(other)
                ));
                None
            }
        };

        let headers = headers(fields);
        let connect_timeout = fields
            .millis("connect_timeout_ms")
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let read_timeout = fields
            .millis("read_timeout_ms")
            .unwrap_or(DEFAULT_READ_TIMEOUT);
        let request_timeout = fields.millis("request_timeout_ms");
        let max_tokens = fields.positive_u32("max_tokens");

        let extra_body = match fields.get("extra_body") {
            None | Some(Value::Null) => serde_json::Map::new(),
            Some(Value::Object(map)) => map.clone(),
            Some(other) => {
                fields.problem(format!(
                    "`extra_body` must be an object, not {}",
                    type_name(other)
                ));
                serde_json::Map::new()
            }
        };
        let include_usage = fields.flag("include_usage", true);

        ServerConfig {
            base_url,
            model,
            api_key_env,
            headers,
            connect_timeout,
            read_timeout,
            request_timeout,
            max_tokens,
            extra_body,
            include_usage,
        }
    }

    /// Builds the configuration from its typed keys (and the Chat Completions key
    /// `include_usage`, default true).
    ///
    /// # Errors
    ///
    /// Every problem the schema of [`ServerKeys`] cannot say: a `base_url` that is not an
    /// http or https URL, a blank `model`, an `api_key_env` that cannot name a variable,
    /// headers that are not valid.
    pub fn from_keys(
        keys: &ServerKeys,
        include_usage: Option<bool>,
    ) -> Result<ServerConfig, Vec<String>> {
        let mut problems = Vec::new();
        let base_url = match Url::parse(&keys.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {
                keys.base_url.trim_end_matches('/').to_owned()
            }
            Ok(url) => {
                problems.push(format!(
                    "`base_url` must be an http or https URL, not {}",
                    url.scheme()
                ));
                String::new()
            }
            Err(error) => {
                problems.push(format!("`base_url` is not a URL: {error}"));
                String::new()
            }
        };
        if keys.model.trim().is_empty() {
            problems.push("`model` is empty".to_owned());
        }
        if let Some(name) = keys.api_key_env.as_ref().filter(|n| !is_env_name(n)) {
            problems.push(format!(
                "`api_key_env` must name an environment variable (letters, digits, `_`), not \
                 {name:?}; put the key in that variable, never in the config"
            ));
        }
        let mut headers = HeaderMap::new();
        for (name, text) in keys.headers.iter().flatten() {
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(text),
            ) {
                (Ok(name), Ok(mut value)) => {
                    // Extra headers may carry credentials: never shown in Debug output.
                    value.set_sensitive(true);
                    headers.insert(name, value);
                }
                (Err(_), _) => problems.push(format!("`{name}` is not a valid header name")),
                (_, Err(_)) => problems.push(format!("the value of header `{name}` is not valid")),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(ServerConfig {
            base_url,
            model: keys.model.clone(),
            api_key_env: keys.api_key_env.clone(),
            headers,
            connect_timeout: keys
                .connect_timeout_ms
                .map_or(DEFAULT_CONNECT_TIMEOUT, Duration::from_millis),
            read_timeout: keys
                .read_timeout_ms
                .map_or(DEFAULT_READ_TIMEOUT, Duration::from_millis),
            request_timeout: keys.request_timeout_ms.map(Duration::from_millis),
            max_tokens: keys.max_tokens,
            extra_body: keys.extra_body.clone().unwrap_or_default(),
            include_usage: include_usage.unwrap_or(true),
        })
    }

    /// Every problem of [`ServerConfig::from_keys`] and [`ServerConfig::key_problems`]: what a
    /// typed runtime's `check_config` reports about these keys.
    pub fn problems_of_keys(keys: &ServerKeys) -> Vec<String> {
        match ServerConfig::from_keys(keys, None) {
            Ok(config) => config.key_problems(),
            Err(problems) => problems,
        }
    }

    /// The problem of a configuration that parsed but names, in `api_key_env`, a variable that
    /// is not set (the variable is read at each turn, so parsing tolerates it).
    pub fn key_problems(&self) -> Vec<String> {
        self.api_key_env
            .iter()
            .filter(|name| std::env::var_os(name).is_none_or(|v| v.is_empty()))
            .map(|name| {
                format!("`api_key_env` names the environment variable {name}, which is not set")
            })
            .collect()
    }

    /// The API key from the environment variable the config names, if it names one; marked
    /// sensitive.
    ///
    /// # Errors
    ///
    /// `invalid_config` when the variable is unset or empty, or holds characters not allowed
    /// in a header (its value is never shown).
    pub fn api_key(&self) -> Result<Option<HeaderValue>, RuntimeError> {
        let Some(name) = &self.api_key_env else {
            return Ok(None);
        };
        let key = std::env::var(name).unwrap_or_default();
        if key.is_empty() {
            return Err(RuntimeError::invalid_config(format!(
                "the environment variable {name} named by `api_key_env` is not set"
            )));
        }
        let mut value = HeaderValue::from_str(key.trim()).map_err(|_| {
            RuntimeError::invalid_config(format!(
                "the environment variable {name} holds characters not allowed in a header"
            ))
        })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    /// The `Authorization: Bearer <key>` value, when the config names a key variable.
    ///
    /// # Errors
    ///
    /// As [`ServerConfig::api_key`].
    pub fn bearer(&self) -> Result<Option<HeaderValue>, RuntimeError> {
        let Some(key) = self.api_key()? else {
            return Ok(None);
        };
        let mut value = HeaderValue::from_bytes(&[b"Bearer ", key.as_bytes()].concat())
            .map_err(|_| RuntimeError::invalid_config("the API key is not header-safe"))?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    /// The HTTP client of one runtime instance, so its connections pool across turns.
    ///
    /// # Errors
    ///
    /// `internal` when reqwest cannot build it (no TLS roots, say).
    pub fn client(&self, user_agent: &str) -> Result<reqwest::Client, RuntimeError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.read_timeout)
            // Pooling stays on: against a remote provider it saves a TLS handshake per turn. A
            // server may close a kept-alive connection right after a response (llama-server
            // does so after every streamed one); hyper notices most such closes before it
            // reuses the connection, and the rare close that races with the next request is
            // retried once by `http::Request::send` (only when no response byte arrived). A
            // short idle timeout keeps that race narrow for servers that close idle
            // connections on their own timer.
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(user_agent);
        if let Some(timeout) = self.request_timeout {
            builder = builder.timeout(timeout);
        }
        builder.build().map_err(|error| {
            RuntimeError::internal(format!("could not build the HTTP client: {error}"))
        })
    }
}

/// The `invalid_config` error of `Runtime::new` for a configuration with these problems.
pub fn invalid_config(runtime: &str, problems: Vec<String>) -> RuntimeError {
    RuntimeError::invalid_config(format!(
        "invalid {runtime} configuration: {}",
        problems.join("; ")
    ))
    .with_metadata(json!({ "problems": problems }))
}

/// The `headers` key: an object of strings, each a valid header, all marked sensitive.
fn headers(fields: &mut Fields<'_>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    match fields.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                let Some(text) = value.as_str() else {
                    fields.problem(format!(
                        "header `{name}` must have a string value, not {}",
                        type_name(value)
                    ));
                    continue;
                };
                match (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(text),
                ) {
                    (Ok(name), Ok(mut value)) => {
                        // Extra headers may carry credentials: never shown in Debug output.
                        value.set_sensitive(true);
                        headers.insert(name, value);
                    }
                    (Err(_), _) => fields.problem(format!("`{name}` is not a valid header name")),
                    (_, Err(_)) => {
                        fields.problem(format!("the value of header `{name}` is not valid"));
                    }
                }
            }
        }
        Some(other) => fields.problem(format!(
            "`headers` must be an object of strings, not {}",
            type_name(other)
        )),
    }
    headers
}

/// Whether `name` can name an environment variable: letters, digits and `_`, not starting
/// with a digit.
pub fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A JSON value's type for a message: `null`, `a boolean`, `a number`, `a string`, `an array`,
/// `an object`.
pub use runtime_api::json_type_name as type_name;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &Value) -> Result<ServerConfig, Vec<String>> {
        let mut fields = Fields::new(object(value, "test")?);
        let config = ServerConfig::parse(&mut fields);
        fields.finish(config)
    }

    #[test]
    fn the_shared_keys_parse_with_defaults() {
        let config =
            parse(&json!({ "base_url": "http://127.0.0.1:8080/v1/", "model": "m" })).unwrap();
        assert_eq!(config.base_url, "http://127.0.0.1:8080/v1");
        assert_eq!(config.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(config.read_timeout, DEFAULT_READ_TIMEOUT);
        assert!(config.include_usage);
        assert!(config.api_key_env.is_none());
        assert!(config.bearer().unwrap().is_none());
    }

    #[test]
    fn every_problem_of_the_shared_keys_is_reported() {
        let problems = parse(&json!({
            "base_url": "ftp://x", "model": "", "api_key_env": "a key", "headers": { "x": 1 },
            "read_timeout_ms": 0, "max_tokens": 0, "extra_body": [], "include_usage": "yes",
        }))
        .unwrap_err();
        assert_eq!(problems.len(), 8, "{problems:?}");
        assert!(problems[0].contains("http or https"), "{problems:?}");
        assert!(
            problems[5].contains("`max_tokens` must be a whole number from 1 to"),
            "{problems:?}"
        );
        assert_eq!(
            object(&Value::Null, "x").unwrap_err(),
            ["the x runtime needs a configuration object with at least `base_url` and `model`"]
        );
        assert!(object(&json!([]), "x").unwrap_err()[0].contains("not an array"));
    }

    #[test]
    fn environment_names() {
        assert!(is_env_name("OPENAI_API_KEY"));
        assert!(!is_env_name("1KEY"));
        assert!(!is_env_name("sk-123"));
        assert!(!is_env_name(""));
    }
}
