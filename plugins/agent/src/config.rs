//! The runtime's configuration, declared as a type ([`AgentConfig`]: openai-wire's
//! [`ServerKeys`], the MCP servers and the loop's limits). runtime-api's typed configuration
//! derives the manifest's schema from it (`config.schema.json`), checks a configuration against
//! it (every problem at once, bounds included) and hands the parsed value to the runtime, which
//! builds its [`Config`] with what the schema cannot say checked on the way (the model server's
//! URL and headers, the MCP servers' names, URLs and variables: [`crate::spec`]).
//!
//! A request's per-turn `config` ([`TurnConfig`]) is read by hand: it may set only two limits,
//! and only lower them.

use std::collections::BTreeMap;
use std::time::Duration;

use openai_wire::config::{Fields, ServerConfig, ServerKeys};
use openai_wire::type_name;
use runtime_api::Value;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::spec::{McpServers, ServerSpec};

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

/// The configuration of the `agent` runtime: the model server, the MCP servers, the limits.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "agent runtime configuration")]
pub struct AgentConfig {
    #[serde(flatten)]
    server: ServerKeys,
    /// Ask for usage in streams (stream_options.include_usage).
    #[serde(default)]
    #[schemars(extend("default" = true))]
    include_usage: Option<bool>,
    /// MCP servers by name (at most 32; a name is 1 to 64 of A-Z a-z 0-9 _ - .): {command, args, env, cwd} (stdio) or {url, headers} (streamable HTTP); include_tools limits the tools offered.
    #[serde(default)]
    mcp_servers: Option<McpServers>,
    /// Whether requests may name MCP servers of their own. On, whoever writes a request runs programs as this host's user: code execution.
    #[serde(default)]
    #[schemars(extend("default" = false))]
    request_mcp_servers: Option<bool>,
    /// The most model calls in one turn.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_MAX_STEPS), extend("default" = DEFAULT_MAX_STEPS))]
    max_steps: Option<u32>,
    /// The longest one tool call may take, in milliseconds; then it is cancelled and the model told.
    #[serde(default)]
    #[schemars(range(min = 1), extend("default" = 60_000))]
    tool_timeout_ms: Option<u64>,
    /// The longest an MCP server may take to start and list its tools, in milliseconds.
    #[serde(default)]
    #[schemars(range(min = 1), extend("default" = 30_000))]
    startup_timeout_ms: Option<u64>,
    /// The most bytes of one tool result fed back to the model; a larger one is the failure tool_result_too_large.
    #[serde(default)]
    #[schemars(range(min = 1, max = 16_777_216), extend("default" = DEFAULT_TOOL_RESULT_MAX_BYTES))]
    tool_result_max_bytes: Option<usize>,
    /// The most tool calls one model response may decide; more ends the turn (too_many_tool_calls).
    #[serde(default)]
    #[schemars(range(min = 1, max = 10_000), extend("default" = DEFAULT_MAX_TOOL_CALLS_PER_STEP))]
    max_tool_calls_per_step: Option<usize>,
    /// The most tool calls of one step run at a time.
    #[serde(default)]
    #[schemars(range(min = 1, max = 256), extend("default" = DEFAULT_MAX_CONCURRENT_TOOL_CALLS))]
    max_concurrent_tool_calls: Option<usize>,
    /// The most bytes of one model response's events; more ends the turn (model_response_too_large).
    #[serde(default)]
    #[schemars(
        range(min = 1024, max = 268_435_456),
        extend("default" = DEFAULT_MODEL_RESPONSE_MAX_BYTES)
    )]
    model_response_max_bytes: Option<usize>,
}

impl AgentConfig {
    /// The MCP servers, as JSON (`null` when none).
    fn servers_value(&self) -> Value {
        self.mcp_servers
            .as_ref()
            .map_or(Value::Null, McpServers::to_value)
    }

    /// The runtime's configuration, or every problem the schema cannot say.
    pub(crate) fn build(&self) -> Result<Config, Vec<String>> {
        let server = ServerConfig::from_keys(&self.server, self.include_usage);
        let mcp_servers = ServerSpec::parse_map(&self.servers_value());
        let (server, mcp_servers) = match (server, mcp_servers) {
            (Ok(server), Ok(servers)) => (server, servers),
            (server, servers) => {
                let mut problems = server.err().unwrap_or_default();
                problems.extend(servers.err().unwrap_or_default());
                return Err(problems);
            }
        };
        let millis = |ms: Option<u64>, default| ms.map_or(default, Duration::from_millis);
        Ok(Config {
            server,
            mcp_servers,
            // Off unless the operator turns it on: a request's stdio server is a program run
            // as this host's user.
            request_mcp_servers: self.request_mcp_servers.unwrap_or(false),
            max_steps: self.max_steps.unwrap_or(DEFAULT_MAX_STEPS),
            tool_timeout: millis(self.tool_timeout_ms, DEFAULT_TOOL_TIMEOUT),
            startup_timeout: millis(self.startup_timeout_ms, DEFAULT_STARTUP_TIMEOUT),
            tool_result_max_bytes: self
                .tool_result_max_bytes
                .unwrap_or(DEFAULT_TOOL_RESULT_MAX_BYTES),
            max_tool_calls_per_step: self
                .max_tool_calls_per_step
                .unwrap_or(DEFAULT_MAX_TOOL_CALLS_PER_STEP),
            max_concurrent_tool_calls: self
                .max_concurrent_tool_calls
                .unwrap_or(DEFAULT_MAX_CONCURRENT_TOOL_CALLS),
            model_response_max_bytes: self
                .model_response_max_bytes
                .unwrap_or(DEFAULT_MODEL_RESPONSE_MAX_BYTES),
        })
    }

    /// Every problem the schema cannot say, for `check_config`: the model server's keys' (an
    /// `api_key_env` that names an unset variable included, which [`AgentConfig::build`]
    /// tolerates: the variable is read at each turn), and the MCP servers' its schema does not
    /// already name.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = ServerConfig::problems_of_keys(&self.server);
        if let Some(servers) = &self.mcp_servers {
            problems.extend(servers.problems());
        }
        problems
    }
}

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
    use runtime_api::config::Schema;
    use runtime_api::{Runtime, json};

    use super::*;
    use crate::AgentRuntime;

    /// What `validate_config` finds.
    fn problems(value: &Value) -> Vec<String> {
        AgentRuntime::validate_config(value)
    }

    /// A configuration as `new` parses it; the error lists every problem.
    fn parse(value: &Value) -> Result<Config, Vec<String>> {
        let found = Schema::parse(AgentRuntime::CONFIG_SCHEMA)
            .unwrap()
            .problems(value);
        if !found.is_empty() {
            return Err(found);
        }
        let value = if value.is_null() {
            json!({})
        } else {
            value.clone()
        };
        serde_json::from_value::<AgentConfig>(value)
            .map_err(|e| vec![e.to_string()])?
            .build()
    }

    #[test]
    fn a_minimal_config_parses_with_defaults() {
        let config =
            parse(&json!({ "base_url": "http://127.0.0.1:8080/v1/", "model": "m" })).unwrap();
        assert_eq!(config.server.base_url, "http://127.0.0.1:8080/v1");
        assert!(config.server.include_usage);
        assert_eq!(config.max_steps, DEFAULT_MAX_STEPS);
        assert_eq!(config.tool_timeout, DEFAULT_TOOL_TIMEOUT);
        assert_eq!(config.startup_timeout, DEFAULT_STARTUP_TIMEOUT);
        assert!(!config.request_mcp_servers, "off unless turned on");
        assert_eq!(
            config.max_tool_calls_per_step,
            DEFAULT_MAX_TOOL_CALLS_PER_STEP
        );
        assert_eq!(
            config.max_concurrent_tool_calls,
            DEFAULT_MAX_CONCURRENT_TOOL_CALLS
        );
        assert_eq!(config.tool_result_max_bytes, DEFAULT_TOOL_RESULT_MAX_BYTES);
        assert_eq!(
            config.model_response_max_bytes,
            DEFAULT_MODEL_RESPONSE_MAX_BYTES
        );
        assert!(config.mcp_servers.is_empty());
        // `null` is the same as an absent key.
        let config = parse(&json!({ "base_url": "http://x/v1", "model": "m",
            "mcp_servers": null, "max_steps": null, "request_mcp_servers": null }))
        .unwrap();
        assert!(config.mcp_servers.is_empty());
        assert_eq!(config.max_steps, DEFAULT_MAX_STEPS);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let found = problems(&json!({
            "model": 3,
            "max_steps": 0,
            "tool_timeout_ms": "soon",
            "mcp_servers": { "fs": { "args": ["x"] }, "web": { "url": "ftp://x" } },
            "tempo": 1,
        }));
        let text = found.join("\n");
        assert!(text.contains("missing `base_url`"), "{text}");
        assert!(text.contains("`model` must be a string"), "{text}");
        assert!(text.contains("`max_steps`"), "{text}");
        assert!(text.contains("`tool_timeout_ms`"), "{text}");
        assert!(text.contains("unknown key `tempo`"), "{text}");
        assert!(
            text.contains(
                "`mcp_servers.fs` must be an object with `command` or an object with `url`"
            ),
            "{text}"
        );
        // `web` has the form of a server; that its URL is not http is found by parsing it,
        // which waits until serde can parse the configuration (here `model` is not a string).
        assert_eq!(found.len(), 6, "{text}");

        // Once it parses, the servers' problems come with the schema's, in parse_map's words,
        // each said once.
        let found = problems(&json!({
            "base_url": "http://x/v1",
            "model": "m",
            "max_steps": 0,
            "mcp_servers": {
                "fs": { "args": ["x"] },
                "web": { "url": "ftp://x" },
                "bad name": { "command": "x" },
                "vars": { "command": "x", "env": { "A B": "1" } },
                "old": { "url": "http://x/sse", "type": "sse" },
            },
        }));
        let text = found.join("\n");
        assert!(
            text.contains("`max_steps` must be a whole number from 1 to 1000, not 0"),
            "{text}"
        );
        assert!(
            text.contains("`mcp_servers.fs` must be an object with"),
            "{text}"
        );
        assert!(
            text.contains("`mcp_servers.old.type` must be one of"),
            "{text}"
        );
        assert!(
            text.contains("MCP server `web`: `url` must be http or https, not ftp"),
            "{text}"
        );
        assert!(
            text.contains("MCP server name \"bad name\" must be 1 to 64 letters"),
            "{text}"
        );
        assert!(
            text.contains("MCP server `vars`: `env` key \"A B\" is not a variable name"),
            "{text}"
        );
        assert_eq!(found.len(), 6, "{text}");
    }

    #[test]
    fn mcp_servers_are_bounded_and_checked_when_built() {
        let many: serde_json::Map<String, Value> = (0..33)
            .map(|i| (format!("s{i}"), json!({ "command": "x" })))
            .collect();
        let config = json!({ "base_url": "http://x/v1", "model": "m", "mcp_servers": many });
        assert_eq!(
            problems(&config),
            ["`mcp_servers` has 33 entries; at most 32"]
        );
        // `new` refuses what only parsing finds, with the same words.
        let config = json!({ "base_url": "http://x/v1", "model": "m",
            "mcp_servers": { "web": { "url": "ftp://x" } } });
        let error = AgentRuntime::new(config).unwrap_err();
        assert!(
            error
                .message
                .contains("MCP server `web`: `url` must be http or https, not ftp"),
            "{error}"
        );
        // Both forms, `include_tools` and `transport` (another name for `type`) parse.
        let config = parse(
            &json!({ "base_url": "http://x/v1", "model": "m", "mcp_servers": {
            "fs": { "command": "node", "args": ["a"], "env": { "A": "1" }, "cwd": "/tmp",
                    "include_tools": ["read"], "type": "stdio" },
            "web": { "url": "https://x/mcp", "headers": { "h": "v" }, "transport": "http" },
        } }),
        )
        .unwrap();
        assert_eq!(config.mcp_servers.len(), 2);
    }

    #[test]
    fn bounds_are_the_schema_s() {
        let base = || json!({ "base_url": "http://x/v1", "model": "m" });
        for (key, low, high) in [
            ("max_steps", 1, 1000),
            ("tool_result_max_bytes", 1, 16 * 1024 * 1024),
            ("max_tool_calls_per_step", 1, 10_000),
            ("max_concurrent_tool_calls", 1, 256),
            ("model_response_max_bytes", 1024, 256 * 1024 * 1024),
        ] {
            let mut config = base();
            config[key] = json!(high);
            assert!(parse(&config).is_ok(), "{key} {high}");
            for wrong in [low - 1, high + 1] {
                config[key] = json!(wrong);
                assert_eq!(
                    problems(&config),
                    [format!(
                        "`{key}` must be a whole number from {low} to {high}, not {wrong}"
                    )]
                );
            }
        }
        for key in ["tool_timeout_ms", "startup_timeout_ms"] {
            let mut config = base();
            config[key] = json!(0);
            assert_eq!(
                problems(&config),
                [format!(
                    "`{key}` must be a whole number of at least 1, not 0"
                )]
            );
        }
    }

    #[test]
    fn the_declared_schema_names_exactly_the_keys_read() {
        let schema: Value = serde_json::from_str(AgentRuntime::CONFIG_SCHEMA).unwrap();
        let mut declared: Vec<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        declared.sort_unstable();
        let own = [
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
        let mut keys: Vec<&str> = openai_wire::config::KEYS
            .iter()
            .chain(&openai_wire::config::CHAT_KEYS)
            .chain(&own)
            .copied()
            .collect();
        keys.sort_unstable();
        assert_eq!(declared, keys);
        assert_eq!(schema["required"], json!(["base_url", "model"]));
        assert_eq!(schema["additionalProperties"], json!(false));
        let servers = &schema["properties"]["mcp_servers"];
        assert_eq!(servers["maxProperties"], json!(crate::spec::MAX_SERVERS));
        assert_eq!(
            schema["properties"]["request_mcp_servers"]["default"],
            json!(false)
        );
    }

    #[test]
    fn null_config_says_what_is_needed() {
        let found = problems(&Value::Null);
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("`base_url` and `model`"));
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
