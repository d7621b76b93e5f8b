//! The runtime's configuration, parsed by hand so that validation reports every problem at
//! once (a serde derive stops at the first).

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use runtime_api::{RuntimeError, Value, json};

use crate::servers::ServerSpec;

/// Every key the configuration accepts.
pub(crate) const KEYS: [&str; 16] = [
    "base_url",
    "model",
    "api_key_env",
    "headers",
    "connect_timeout_ms",
    "read_timeout_ms",
    "request_timeout_ms",
    "max_tokens",
    "extra_body",
    "include_usage",
    "mcp_servers",
    "request_mcp_servers",
    "max_steps",
    "tool_timeout_ms",
    "startup_timeout_ms",
    "tool_result_max_bytes",
];

/// The keys a request's per-turn `config` may set.
pub(crate) const TURN_KEYS: [&str; 2] = ["max_steps", "tool_timeout_ms"];

/// The default time to establish a connection to the model server.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default longest wait for the next bytes of a model response.
pub(crate) const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(300);
/// The default most model calls in one turn.
pub(crate) const DEFAULT_MAX_STEPS: u32 = 10;
/// The most `max_steps` may be.
pub(crate) const MAX_MAX_STEPS: u64 = 1000;
/// The default longest a tool call may take.
pub(crate) const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// The default longest an MCP server may take to start and list its tools.
pub(crate) const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// The default most bytes of a tool result fed back to the model.
pub(crate) const DEFAULT_TOOL_RESULT_MAX_BYTES: usize = 64 * 1024;
/// The most MCP servers one configuration or request may name.
pub(crate) const MAX_SERVERS: usize = 32;

/// A parsed, valid configuration.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The API base, without a trailing slash, e.g. `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// The model used when a request names none.
    pub model: String,
    /// The name of the environment variable that holds the API key.
    pub api_key_env: Option<String>,
    /// Extra headers sent with every model request.
    pub headers: HeaderMap,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub request_timeout: Option<Duration>,
    /// The default `max_tokens` of a model call when a request sets none.
    pub max_tokens: Option<u32>,
    /// Keys merged into every model request body.
    pub extra_body: serde_json::Map<String, Value>,
    /// Ask for usage in streams with `stream_options.include_usage`.
    pub include_usage: bool,
    /// The MCP servers of every turn, by name.
    pub mcp_servers: BTreeMap<String, ServerSpec>,
    /// Whether a request may name MCP servers of its own.
    pub request_mcp_servers: bool,
    /// The most model calls in one turn.
    pub max_steps: u32,
    /// The longest one tool call may take.
    pub tool_timeout: Duration,
    /// The longest an MCP server may take to start and list its tools.
    pub startup_timeout: Duration,
    /// The most bytes of one tool result fed back to the model.
    pub tool_result_max_bytes: usize,
}

/// What one turn's request changes: its own limits and MCP servers.
#[derive(Debug, Clone, Default)]
pub(crate) struct TurnConfig {
    pub max_steps: Option<u32>,
    pub tool_timeout: Option<Duration>,
    pub mcp_servers: BTreeMap<String, ServerSpec>,
}

/// Collects the problems of one parse.
struct Parser<'a> {
    object: &'a serde_json::Map<String, Value>,
    problems: Vec<String>,
}

impl Parser<'_> {
    fn millis(&mut self, key: &str) -> Option<Duration> {
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

    fn positive(&mut self, key: &str, max: u64) -> Option<u64> {
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

    fn flag(&mut self, key: &str, default: bool) -> bool {
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

    fn servers(&mut self, key: &str) -> BTreeMap<String, ServerSpec> {
        match self.object.get(key) {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(value) => match ServerSpec::parse_map(value) {
                Ok(servers) => servers,
                Err(problems) => {
                    self.problems.extend(problems);
                    BTreeMap::new()
                }
            },
        }
    }

    fn unknown_keys(&mut self, known: &[&str]) {
        for key in self.object.keys() {
            if !known.contains(&key.as_str()) {
                self.problems.push(format!(
                    "unknown key `{key}`; known keys: {}",
                    known.join(", ")
                ));
            }
        }
    }
}

impl Config {
    /// Parses a configuration; the error lists every problem found.
    pub(crate) fn parse(value: &Value) -> Result<Config, Vec<String>> {
        let object = match value {
            Value::Object(object) => object,
            Value::Null => {
                return Err(vec![
                    "the agent runtime needs a configuration object with at least `base_url` \
                     and `model`"
                        .into(),
                ]);
            }
            other => {
                return Err(vec![format!(
                    "the configuration must be a JSON object, not {}",
                    type_name(other)
                )]);
            }
        };
        let mut p = Parser {
            object,
            problems: Vec::new(),
        };
        p.unknown_keys(&KEYS);

        let base_url = match object.get("base_url") {
            None => {
                p.problems
                    .push("missing `base_url` (e.g. \"http://127.0.0.1:8080/v1\")".into());
                String::new()
            }
            Some(Value::String(text)) => match Url::parse(text) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {
                    text.trim_end_matches('/').to_owned()
                }
                Ok(url) => {
                    p.problems.push(format!(
                        "`base_url` must be an http or https URL, not {}",
                        url.scheme()
                    ));
                    String::new()
                }
                Err(error) => {
                    p.problems.push(format!("`base_url` is not a URL: {error}"));
                    String::new()
                }
            },
            Some(other) => {
                p.problems.push(format!(
                    "`base_url` must be a string, not {}",
                    type_name(other)
                ));
                String::new()
            }
        };

        let model = match object.get("model") {
            None => {
                p.problems.push("missing `model`".into());
                String::new()
            }
            Some(Value::String(text)) if !text.trim().is_empty() => text.clone(),
            Some(Value::String(_)) => {
                p.problems.push("`model` is empty".into());
                String::new()
            }
            Some(other) => {
                p.problems.push(format!(
                    "`model` must be a string, not {}",
                    type_name(other)
                ));
                String::new()
            }
        };

        let api_key_env = match object.get("api_key_env") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) if is_env_name(name) => Some(name.clone()),
            Some(Value::String(name)) => {
                p.problems.push(format!(
                    "`api_key_env` must name an environment variable (letters, digits, `_`), \
                     not {name:?}; put the key in that variable, never in the config"
                ));
                None
            }
            Some(other) => {
                p.problems.push(format!(
                    "`api_key_env` must be a string, not {}",
                    type_name(other)
                ));
                None
            }
        };

        let mut headers = HeaderMap::new();
        match object.get("headers") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (name, value) in map {
                    let Some(text) = value.as_str() else {
                        p.problems.push(format!(
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
                        (Err(_), _) => p
                            .problems
                            .push(format!("`{name}` is not a valid header name")),
                        (_, Err(_)) => p
                            .problems
                            .push(format!("the value of header `{name}` is not valid")),
                    }
                }
            }
            Some(other) => p.problems.push(format!(
                "`headers` must be an object of strings, not {}",
                type_name(other)
            )),
        }

        let connect_timeout = p
            .millis("connect_timeout_ms")
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let read_timeout = p.millis("read_timeout_ms").unwrap_or(DEFAULT_READ_TIMEOUT);
        let request_timeout = p.millis("request_timeout_ms");
        let tool_timeout = p.millis("tool_timeout_ms").unwrap_or(DEFAULT_TOOL_TIMEOUT);
        let startup_timeout = p
            .millis("startup_timeout_ms")
            .unwrap_or(DEFAULT_STARTUP_TIMEOUT);
        let max_tokens = p
            .positive("max_tokens", u64::from(u32::MAX))
            .and_then(|n| u32::try_from(n).ok());
        let max_steps = p
            .positive("max_steps", MAX_MAX_STEPS)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(DEFAULT_MAX_STEPS);
        let tool_result_max_bytes = p
            .positive("tool_result_max_bytes", 16 * 1024 * 1024)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(DEFAULT_TOOL_RESULT_MAX_BYTES);

        let extra_body = match object.get("extra_body") {
            None | Some(Value::Null) => serde_json::Map::new(),
            Some(Value::Object(map)) => map.clone(),
            Some(other) => {
                p.problems.push(format!(
                    "`extra_body` must be an object, not {}",
                    type_name(other)
                ));
                serde_json::Map::new()
            }
        };
        let include_usage = p.flag("include_usage", true);
        let request_mcp_servers = p.flag("request_mcp_servers", true);
        let mcp_servers = p.servers("mcp_servers");

        if p.problems.is_empty() {
            Ok(Config {
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
                mcp_servers,
                request_mcp_servers,
                max_steps,
                tool_timeout,
                startup_timeout,
                tool_result_max_bytes,
            })
        } else {
            Err(p.problems)
        }
    }

    /// Every problem with a configuration, including an `api_key_env` that names an unset
    /// variable (which [`Config::parse`] tolerates: the variable is read at each turn).
    pub(crate) fn problems(value: &Value) -> Vec<String> {
        match Config::parse(value) {
            Err(problems) => problems,
            Ok(config) => config
                .api_key_env
                .iter()
                .filter(|name| std::env::var_os(name).is_none_or(|v| v.is_empty()))
                .map(|name| {
                    format!("`api_key_env` names the environment variable {name}, which is not set")
                })
                .collect(),
        }
    }

    /// Parses a configuration for `Runtime::new`.
    pub(crate) fn for_runtime(value: &Value) -> Result<Config, RuntimeError> {
        Config::parse(value).map_err(|problems| {
            RuntimeError::invalid_config(format!(
                "invalid agent configuration: {}",
                problems.join("; ")
            ))
            .with_metadata(json!({ "problems": problems }))
        })
    }

    /// The API key from the environment variable the config names, if it names one.
    ///
    /// # Errors
    ///
    /// `invalid_config` when the variable is unset or empty (its value is never shown).
    pub(crate) fn api_key(&self) -> Result<Option<HeaderValue>, RuntimeError> {
        let Some(name) = &self.api_key_env else {
            return Ok(None);
        };
        let key = std::env::var(name).unwrap_or_default();
        if key.is_empty() {
            return Err(RuntimeError::invalid_config(format!(
                "the environment variable {name} named by `api_key_env` is not set"
            )));
        }
        let mut value = HeaderValue::from_str(&format!("Bearer {}", key.trim())).map_err(|_| {
            RuntimeError::invalid_config(format!(
                "the environment variable {name} holds characters not allowed in a header"
            ))
        })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

impl TurnConfig {
    /// Parses a request's per-turn `config` (`null` or an object of [`TURN_KEYS`]) and its
    /// MCP servers (`TurnRequest.mcp_servers`).
    pub(crate) fn parse(config: &Value, mcp_servers: &Value) -> Result<TurnConfig, Vec<String>> {
        let empty = serde_json::Map::new();
        let object = match config {
            Value::Null => &empty,
            Value::Object(object) => object,
            other => {
                return Err(vec![format!(
                    "the per-turn config must be a JSON object, not {}",
                    type_name(other)
                )]);
            }
        };
        let mut p = Parser {
            object,
            problems: Vec::new(),
        };
        p.unknown_keys(&TURN_KEYS);
        let max_steps = p
            .positive("max_steps", MAX_MAX_STEPS)
            .and_then(|n| u32::try_from(n).ok());
        let tool_timeout = p.millis("tool_timeout_ms");
        let servers = match ServerSpec::parse_map(mcp_servers) {
            Ok(servers) => servers,
            Err(problems) => {
                p.problems.extend(problems);
                BTreeMap::new()
            }
        };
        if p.problems.is_empty() {
            Ok(TurnConfig {
                max_steps,
                tool_timeout,
                mcp_servers: servers,
            })
        } else {
            Err(p.problems)
        }
    }
}

/// Builds the HTTP client of one runtime instance, so its connections pool across turns.
pub(crate) fn build_client(config: &Config) -> Result<reqwest::Client, RuntimeError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .read_timeout(config.read_timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("agent-runtimes-agent/", env!("CARGO_PKG_VERSION")));
    if let Some(timeout) = config.request_timeout {
        builder = builder.timeout(timeout);
    }
    builder.build().map_err(|error| {
        RuntimeError::internal(format!("could not build the HTTP client: {error}"))
    })
}

pub(crate) fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_config_parses_with_defaults() {
        let config =
            Config::parse(&json!({ "base_url": "http://127.0.0.1:8080/v1/", "model": "m" }))
                .unwrap();
        assert_eq!(config.base_url, "http://127.0.0.1:8080/v1");
        assert_eq!(config.max_steps, DEFAULT_MAX_STEPS);
        assert_eq!(config.tool_timeout, DEFAULT_TOOL_TIMEOUT);
        assert!(config.request_mcp_servers);
        assert!(config.mcp_servers.is_empty());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let problems = Config::problems(&json!({
            "model": 3,
            "max_steps": 0,
            "tool_timeout_ms": "soon",
            "mcp_servers": { "fs": { "args": ["x"] }, "web": { "url": "ftp://x" } },
            "tempo": 1,
        }));
        let text = problems.join("\n");
        assert!(text.contains("missing `base_url`"), "{text}");
        assert!(text.contains("`model` must be a string"), "{text}");
        assert!(text.contains("`max_steps`"), "{text}");
        assert!(text.contains("`tool_timeout_ms`"), "{text}");
        assert!(text.contains("unknown key `tempo`"), "{text}");
        assert!(text.contains("MCP server `fs`"), "{text}");
        assert!(text.contains("MCP server `web`"), "{text}");
        assert_eq!(problems.len(), 7, "{text}");
    }

    #[test]
    fn the_declared_schema_names_exactly_the_keys_read() {
        let schema: Value = serde_json::from_str(include_str!("config.schema.json")).unwrap();
        let mut declared: Vec<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        declared.sort_unstable();
        let mut keys = KEYS.to_vec();
        keys.sort_unstable();
        assert_eq!(declared, keys);
        assert_eq!(schema["required"], json!(["base_url", "model"]));
    }

    #[test]
    fn null_config_says_what_is_needed() {
        let problems = Config::problems(&Value::Null);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("`base_url` and `model`"));
    }

    #[test]
    fn turn_config_takes_limits_and_the_request_servers() {
        let turn = TurnConfig::parse(
            &json!({ "max_steps": 3 }),
            &json!({ "a": { "command": "x" }, "b": { "command": "y", "args": ["1"] } }),
        )
        .unwrap();
        assert_eq!(turn.max_steps, Some(3));
        assert_eq!(turn.mcp_servers.keys().collect::<Vec<_>>(), ["a", "b"]);
        let problems = TurnConfig::parse(&json!({ "model": "x" }), &Value::Null).unwrap_err();
        assert!(problems[0].contains("unknown key `model`"), "{problems:?}");
    }
}
