//! MCP server specs: the `mcp_servers` map MCP clients use (`{"command", "args", "env", "cwd"}`
//! for a stdio server, `{"url", "headers"}` for a streamable HTTP one, `include_tools` for
//! either), parsed so that every problem is reported at once. The configuration and a request's
//! per-turn servers are read with it; the pool of running servers is keyed by it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use openai_wire::{is_env_name, type_name};
use runtime_api::Value;

/// The most MCP servers one configuration or request may name, and one runtime instance may
/// run.
pub(crate) const MAX_SERVERS: usize = 32;

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
                problems.push(format!(
                    "MCP server name {name:?} must be 1 to 64 letters, digits, `_`, `-` or `.`"
                ));
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
