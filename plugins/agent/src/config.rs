//! The runtime's configuration, parsed by hand so that validation reports every problem at
//! once (a serde derive stops at the first). The model server's keys are openai-wire's
//! [`ServerConfig`]; the MCP servers' are [`crate::spec`]'s.

use std::collections::BTreeMap;
use std::time::Duration;

use openai_wire::config::{self, Fields, ServerConfig};
use openai_wire::type_name;
use runtime_api::{RuntimeError, Value};

use crate::spec::ServerSpec;

/// The keys of the runtime's own, after the model server's ([`config::KEYS`] and
/// [`config::CHAT_KEYS`]).
const OWN_KEYS: [&str; 9] = [
    "mcp_servers",
    "request_mcp_servers",
    "max_steps",
    "tool_timeout_ms",
    "startup_timeout_ms",
    "tool_result_max_bytes",
    "max_tool_calls_per_step",
    "max_concurrent_tool_calls",
    "model_response_max_bytes",
];

/// Every key the configuration accepts.
pub(crate) fn keys() -> Vec<&'static str> {
    config::KEYS
        .iter()
        .chain(&config::CHAT_KEYS)
        .chain(&OWN_KEYS)
        .copied()
        .collect()
}

/// The keys a request's per-turn `config` may set.
pub(crate) const TURN_KEYS: [&str; 2] = ["max_steps", "tool_timeout_ms"];

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
/// The default most tool calls one model response may decide.
pub(crate) const DEFAULT_MAX_TOOL_CALLS_PER_STEP: usize = 64;
/// The default most tool calls of one step run at a time.
pub(crate) const DEFAULT_MAX_CONCURRENT_TOOL_CALLS: usize = 8;
/// The default most bytes of one model response's events.
pub(crate) const DEFAULT_MODEL_RESPONSE_MAX_BYTES: usize = 8 * 1024 * 1024;

/// A parsed, valid configuration.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The model server: its base URL, model, key, headers, timeouts and request defaults.
    pub server: ServerConfig,
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
    /// The most tool calls one model response may decide.
    pub max_tool_calls_per_step: usize,
    /// The most tool calls of one step run at a time.
    pub max_concurrent_tool_calls: usize,
    /// The most bytes of one model response's events.
    pub model_response_max_bytes: usize,
}

/// What one turn's request changes: its own limits and MCP servers.
#[derive(Debug, Clone, Default)]
pub(crate) struct TurnConfig {
    pub max_steps: Option<u32>,
    pub tool_timeout: Option<Duration>,
    pub mcp_servers: BTreeMap<String, ServerSpec>,
}

/// The MCP servers of `value` (`null` is none); their problems go to `fields`.
fn servers(fields: &mut Fields<'_>, value: &Value) -> BTreeMap<String, ServerSpec> {
    ServerSpec::parse_map(value).unwrap_or_else(|problems| {
        fields.problems(problems);
        BTreeMap::new()
    })
}

impl Config {
    /// Parses a configuration; the error lists every problem found.
    pub(crate) fn parse(value: &Value) -> Result<Config, Vec<String>> {
        let mut fields = Fields::new(config::object(value, "agent")?);
        fields.unknown_keys(&keys());
        let server = ServerConfig::parse(&mut fields);
        let tool_timeout = fields
            .millis("tool_timeout_ms")
            .unwrap_or(DEFAULT_TOOL_TIMEOUT);
        let startup_timeout = fields
            .millis("startup_timeout_ms")
            .unwrap_or(DEFAULT_STARTUP_TIMEOUT);
        let max_steps = fields
            .positive("max_steps", MAX_MAX_STEPS)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(DEFAULT_MAX_STEPS);
        let tool_result_max_bytes = fields
            .positive("tool_result_max_bytes", 16 * 1024 * 1024)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(DEFAULT_TOOL_RESULT_MAX_BYTES);
        let size = |fields: &mut Fields<'_>, key: &str, max: u64, default: usize| {
            fields
                .positive(key, max)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(default)
        };
        let max_tool_calls_per_step = size(
            &mut fields,
            "max_tool_calls_per_step",
            10_000,
            DEFAULT_MAX_TOOL_CALLS_PER_STEP,
        );
        let max_concurrent_tool_calls = size(
            &mut fields,
            "max_concurrent_tool_calls",
            256,
            DEFAULT_MAX_CONCURRENT_TOOL_CALLS,
        );
        let model_response_max_bytes = size(
            &mut fields,
            "model_response_max_bytes",
            256 * 1024 * 1024,
            DEFAULT_MODEL_RESPONSE_MAX_BYTES,
        )
        .max(1024);
        // Off unless the operator turns it on: a request's stdio server is a program run as
        // this host's user.
        let request_mcp_servers = fields.flag("request_mcp_servers", false);
        let mcp_servers = fields.get("mcp_servers").unwrap_or(&Value::Null);
        let mcp_servers = servers(&mut fields, mcp_servers);
        fields.finish(Config {
            server,
            mcp_servers,
            request_mcp_servers,
            max_steps,
            tool_timeout,
            startup_timeout,
            tool_result_max_bytes,
            max_tool_calls_per_step,
            max_concurrent_tool_calls,
            model_response_max_bytes,
        })
    }

    /// Every problem with a configuration, including an `api_key_env` that names an unset
    /// variable (which [`Config::parse`] tolerates: the variable is read at each turn).
    pub(crate) fn problems(value: &Value) -> Vec<String> {
        match Config::parse(value) {
            Err(problems) => problems,
            Ok(config) => config.server.key_problems(),
        }
    }

    /// Parses a configuration for `Runtime::new`.
    pub(crate) fn for_runtime(value: &Value) -> Result<Config, RuntimeError> {
        Config::parse(value).map_err(|problems| config::invalid_config("agent", problems))
    }
}

impl TurnConfig {
    /// Every way this turn's limits would go above the instance's: a request may only lower
    /// them.
    pub(crate) fn raises(&self, config: &Config) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(steps) = self.max_steps.filter(|s| *s > config.max_steps) {
            problems.push(format!(
                "`max_steps` {steps} is above this runtime's {}: a request may only lower it",
                config.max_steps
            ));
        }
        if let Some(timeout) = self.tool_timeout.filter(|t| *t > config.tool_timeout) {
            problems.push(format!(
                "`tool_timeout_ms` {} is above this runtime's {}: a request may only lower it",
                timeout.as_millis(),
                config.tool_timeout.as_millis()
            ));
        }
        problems
    }

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
        let mut fields = Fields::new(object);
        fields.unknown_keys(&TURN_KEYS);
        let max_steps = fields
            .positive("max_steps", MAX_MAX_STEPS)
            .and_then(|n| u32::try_from(n).ok());
        let tool_timeout = fields.millis("tool_timeout_ms");
        let mcp_servers = servers(&mut fields, mcp_servers);
        fields.finish(TurnConfig {
            max_steps,
            tool_timeout,
            mcp_servers,
        })
    }
}

#[cfg(test)]
mod tests {
    use runtime_api::json;

    use super::*;

    #[test]
    fn a_minimal_config_parses_with_defaults() {
        let config =
            Config::parse(&json!({ "base_url": "http://127.0.0.1:8080/v1/", "model": "m" }))
                .unwrap();
        assert_eq!(config.server.base_url, "http://127.0.0.1:8080/v1");
        assert_eq!(config.max_steps, DEFAULT_MAX_STEPS);
        assert_eq!(config.tool_timeout, DEFAULT_TOOL_TIMEOUT);
        assert!(!config.request_mcp_servers, "off unless turned on");
        assert_eq!(
            config.max_tool_calls_per_step,
            DEFAULT_MAX_TOOL_CALLS_PER_STEP
        );
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
        let mut keys = keys();
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
