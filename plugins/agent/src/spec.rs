//! MCP server specs: the `mcp_servers` map MCP clients use (`{"command", "args", "env", "cwd"}`
//! for a stdio server, `{"url", "headers"}` for a streamable HTTP one, `include_tools` for
//! either), parsed so that every problem is reported at once. The configuration and a request's
//! per-turn servers are read with it; the pool of running servers is keyed by it.
//!
//! In the typed configuration the map is [`McpServers`]: its schema is derived from the two
//! forms ([`StdioServer`], [`HttpServer`]); what a schema cannot say (a server's name, a URL's
//! scheme, a variable's name) is found by [`ServerSpec::parse_map`], with its messages.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;

use openai_wire::{is_env_name, type_name};
use runtime_api::Value;
use runtime_api::config::Schema as ConfigSchema;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;

/// The most MCP servers one configuration or request may name, and one runtime instance may
/// run.
pub(crate) const MAX_SERVERS: usize = 32;

/// The `mcp_servers` key of the configuration: server names to their JSON, as given. serde
/// takes any object of them, so that a configuration that parses is checked by
/// [`McpServers::problems`] with [`ServerSpec::parse_map`]'s messages (its schema says the
/// rest), and [`ServerSpec::parse_map`] builds the specs, as it does for a request's servers.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct McpServers(serde_json::Map<String, Value>);

impl McpServers {
    /// The map as JSON.
    pub(crate) fn to_value(&self) -> Value {
        Value::Object(self.0.clone())
    }

    /// The problems the schema cannot say, in [`ServerSpec::parse_map`]'s words: a name that
    /// is not 1 to 64 letters, digits, `_`, `-` or `.`, and for each server the schema
    /// accepts, what parsing it finds (a URL that is not http or https, a variable name, a
    /// blank command). A server the schema refuses is left to its messages, so that no
    /// problem is said twice.
    pub(crate) fn problems(&self) -> Vec<String> {
        // The schema of one server is the map's, checked on a map of that server alone.
        let schema = ConfigSchema::from_value(runtime_api::config::schema_of::<McpServers>()).ok();
        let mut problems = Vec::new();
        for (name, spec) in &self.0 {
            if !valid_server_name(name) {
                problems.push(name_problem(name));
                continue;
            }
            let alone = Value::Object(serde_json::Map::from_iter([(name.clone(), spec.clone())]));
            let schema_accepts = schema
                .as_ref()
                .is_none_or(|schema| schema.problems(&alone).is_empty());
            if let (true, Err(more)) = (schema_accepts, ServerSpec::parse(name, spec)) {
                problems.extend(more);
            }
        }
        problems
    }
}

impl JsonSchema for McpServers {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "McpServers".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let server = generator.subschema_for::<McpServer>();
        json_schema!({
            "type": "object",
            "maxProperties": MAX_SERVERS,
            "additionalProperties": server,
        })
    }
}

/// One MCP server: a program (stdio) or a streamable HTTP endpoint.
// Only the schema of these types is used: the values are parsed by `ServerSpec::parse`.
#[allow(dead_code)]
#[derive(JsonSchema)]
#[serde(untagged)]
enum McpServer {
    Stdio(StdioServer),
    Http(HttpServer),
}

/// A program speaking MCP on its stdin and stdout.
#[allow(dead_code)]
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct StdioServer {
    /// "stdio", or absent.
    #[serde(default, rename = "type")]
    kind: Option<StdioKind>,
    /// Another name for `type`.
    #[serde(default)]
    transport: Option<StdioKind>,
    /// The program (looked up in PATH when it has no /).
    #[schemars(length(min = 1))]
    command: String,
    /// Its arguments.
    #[serde(default)]
    args: Option<Vec<String>>,
    /// Variables to set (the rest of the environment is inherited).
    #[serde(default)]
    env: Option<BTreeMap<String, String>>,
    /// Its working folder.
    #[serde(default)]
    #[schemars(length(min = 1))]
    cwd: Option<String>,
    /// Offer only these tools of the server.
    #[serde(default)]
    include_tools: Option<Vec<String>>,
}

/// A streamable HTTP endpoint.
#[allow(dead_code)]
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct HttpServer {
    /// "http" (or "streamable_http", "streamable-http"), or absent.
    #[serde(default, rename = "type")]
    kind: Option<HttpKind>,
    /// Another name for `type`.
    #[serde(default)]
    transport: Option<HttpKind>,
    /// The endpoint, an http or https URL.
    #[schemars(extend("format" = "uri"))]
    url: String,
    /// Headers sent with every request to it.
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    /// Offer only these tools of the server.
    #[serde(default)]
    include_tools: Option<Vec<String>>,
}

#[allow(dead_code)]
#[derive(JsonSchema)]
enum StdioKind {
    #[serde(rename = "stdio")]
    Stdio,
}

#[allow(dead_code)]
#[derive(JsonSchema)]
enum HttpKind {
    #[serde(rename = "http")]
    Http,
    #[serde(rename = "streamable_http")]
    StreamableHttp,
    #[serde(rename = "streamable-http")]
    StreamableHttpDash,
}

/// How one MCP server is reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ServerSpec {
    /// A program speaking MCP on its stdin and stdout.
    Stdio {
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
        cwd: Option<PathBuf>,
        include_tools: Option<Vec<String>>,
    },
    /// A streamable HTTP endpoint.
    Http {
        url: String,
        headers: BTreeMap<String, String>,
        include_tools: Option<Vec<String>>,
    },
}

/// A server name: what MCP clients accept as a key, kept short and printable.
fn valid_server_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn name_problem(name: &str) -> String {
    format!("MCP server name {name:?} must be 1 to 64 letters, digits, `_`, `-` or `.`")
}

fn string_list(value: Option<&Value>, what: &str, problems: &mut Vec<String>) -> Vec<String> {
    match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| match item {
                Value::String(text) => Some(text.clone()),
                other => {
                    problems.push(format!(
                        "{what} must hold strings, not {}",
                        type_name(other)
                    ));
                    None
                }
            })
            .collect(),
        Some(other) => {
            problems.push(format!(
                "{what} must be an array of strings, not {}",
                type_name(other)
            ));
            Vec::new()
        }
    }
}

fn string_map(
    value: Option<&Value>,
    what: &str,
    problems: &mut Vec<String>,
) -> BTreeMap<String, String> {
    match value {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(map)) => map
            .iter()
            .filter_map(|(key, value)| match value {
                Value::String(text) => Some((key.clone(), text.clone())),
                other => {
                    problems.push(format!(
                        "{what} `{key}` must be a string, not {}",
                        type_name(other)
                    ));
                    None
                }
            })
            .collect(),
        Some(other) => {
            problems.push(format!(
                "{what} must be an object of strings, not {}",
                type_name(other)
            ));
            BTreeMap::new()
        }
    }
}

impl ServerSpec {
    /// Parses an `mcp_servers` map (`null` is empty); the error lists every problem.
    pub(crate) fn parse_map(value: &Value) -> Result<BTreeMap<String, ServerSpec>, Vec<String>> {
        let map = match value {
            Value::Null => return Ok(BTreeMap::new()),
            Value::Object(map) => map,
            other => {
                return Err(vec![format!(
                    "`mcp_servers` must be an object from server names to servers, not {}",
                    type_name(other)
                )]);
            }
        };
        let mut problems = Vec::new();
        if map.len() > MAX_SERVERS {
            problems.push(format!(
                "`mcp_servers` names {} servers; at most {MAX_SERVERS}",
                map.len()
            ));
        }
        let mut servers = BTreeMap::new();
        for (name, spec) in map {
            if !valid_server_name(name) {
                problems.push(name_problem(name));
                continue;
            }
            match ServerSpec::parse(name, spec) {
                Ok(spec) => {
                    servers.insert(name.clone(), spec);
                }
                Err(more) => problems.extend(more),
            }
        }
        if problems.is_empty() {
            Ok(servers)
        } else {
            Err(problems)
        }
    }

    fn parse(name: &str, value: &Value) -> Result<ServerSpec, Vec<String>> {
        let Value::Object(object) = value else {
            return Err(vec![format!(
                "MCP server `{name}` must be an object with `command` (stdio) or `url` (HTTP), \
                 not {}",
                type_name(value)
            )]);
        };
        let mut problems = Vec::new();
        let prefix = format!("MCP server `{name}`:");
        let kind = match object.get("type").or_else(|| object.get("transport")) {
            None | Some(Value::Null) => None,
            Some(Value::String(kind)) => Some(kind.as_str()),
            Some(other) => {
                problems.push(format!(
                    "{prefix} `type` must be a string, not {}",
                    type_name(other)
                ));
                None
            }
        };
        let known: &[&str] = match (object.get("url"), kind) {
            (Some(_), _) | (None, Some("http" | "streamable_http" | "streamable-http")) => {
                &["type", "transport", "url", "headers", "include_tools"]
            }
            _ => &[
                "type",
                "transport",
                "command",
                "args",
                "env",
                "cwd",
                "include_tools",
            ],
        };
        for key in object.keys() {
            if !known.contains(&key.as_str()) {
                problems.push(format!(
                    "{prefix} unknown key `{key}`; known keys: {}",
                    known.join(", ")
                ));
            }
        }
        let include_tools = match object.get("include_tools") {
            None | Some(Value::Null) => None,
            some => Some(string_list(
                some,
                &format!("{prefix} `include_tools`"),
                &mut problems,
            )),
        };
        let spec = match (object.get("command"), object.get("url"), kind) {
            (_, _, Some("sse")) => {
                problems.push(format!(
                    "{prefix} the old HTTP+SSE transport is not supported; use streamable HTTP \
                     (`type: \"http\"`) or stdio"
                ));
                None
            }
            (Some(_), Some(_), _) => {
                problems.push(format!("{prefix} give either `command` or `url`, not both"));
                None
            }
            (Some(command), None, None | Some("stdio")) => {
                let command = match command {
                    Value::String(text) if !text.trim().is_empty() => text.clone(),
                    other => {
                        problems.push(format!(
                            "{prefix} `command` must be a non-empty string, not {}",
                            type_name(other)
                        ));
                        String::new()
                    }
                };
                let args = string_list(
                    object.get("args"),
                    &format!("{prefix} `args`"),
                    &mut problems,
                );
                let env = string_map(object.get("env"), &format!("{prefix} `env`"), &mut problems);
                for key in env.keys() {
                    if !is_env_name(key) {
                        problems.push(format!("{prefix} `env` key {key:?} is not a variable name"));
                    }
                }
                let cwd = match object.get("cwd") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(text)) if !text.is_empty() => Some(PathBuf::from(text)),
                    Some(other) => {
                        problems.push(format!(
                            "{prefix} `cwd` must be a non-empty string, not {}",
                            type_name(other)
                        ));
                        None
                    }
                };
                Some(ServerSpec::Stdio {
                    command,
                    args,
                    env,
                    cwd,
                    include_tools,
                })
            }
            (None, Some(url), None | Some("http" | "streamable_http" | "streamable-http")) => {
                let url = match url {
                    Value::String(text) => match reqwest::Url::parse(text) {
                        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => text.clone(),
                        Ok(parsed) => {
                            problems.push(format!(
                                "{prefix} `url` must be http or https, not {}",
                                parsed.scheme()
                            ));
                            String::new()
                        }
                        Err(error) => {
                            problems.push(format!("{prefix} `url` is not a URL: {error}"));
                            String::new()
                        }
                    },
                    other => {
                        problems.push(format!(
                            "{prefix} `url` must be a string, not {}",
                            type_name(other)
                        ));
                        String::new()
                    }
                };
                let headers = string_map(
                    object.get("headers"),
                    &format!("{prefix} header"),
                    &mut problems,
                );
                Some(ServerSpec::Http {
                    url,
                    headers,
                    include_tools,
                })
            }
            (_, _, Some(other))
                if !matches!(
                    other,
                    "stdio" | "http" | "streamable_http" | "streamable-http"
                ) =>
            {
                problems.push(format!(
                    "{prefix} unknown `type` {other:?}; use \"stdio\" or \"http\""
                ));
                None
            }
            _ => {
                problems.push(format!(
                    "{prefix} needs `command` (a stdio server) or `url` (a streamable HTTP server)"
                ));
                None
            }
        };
        match spec {
            Some(spec) if problems.is_empty() => Ok(spec),
            _ => Err(problems),
        }
    }
}
