//! MCP servers: their specs (the `mcp_servers` map MCP clients use), and the pool of running
//! servers of one runtime instance — started on first use, reused across turns, restarted when
//! they die, killed with their process group when the pool is dropped.
//!
//! A stdio server runs as a child process through rmcp's `TokioChildProcess` transport, in a
//! process group of its own (`process_group(0)`): `npx` and shell wrappers start grandchildren,
//! and killing only the direct child would leave them running. Its stderr is read into a
//! bounded tail (quoted in start errors) and logged at debug level, escaped.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::Duration;

use rmcp::ServiceExt as _;
use rmcp::model::{CallToolRequestParams, CallToolResult, Tool};
use rmcp::service::{Peer, RoleClient, RunningService, ServiceError};
use rmcp::transport::TokioChildProcess;
use runtime_api::Value;
use tokio::io::AsyncReadExt as _;
use tokio::sync::Mutex;

use crate::config::{MAX_SERVERS, type_name};
use crate::error::AgentError;

/// The most bytes of a server's stderr kept for error messages.
const STDERR_TAIL: usize = 2048;

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
                    if !crate::config::is_env_name(key) {
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

/// Kills a process group with `SIGKILL` when dropped, once (see plugins/command for why the
/// group id cannot be reused while the leader is unreaped).
#[derive(Debug)]
struct GroupGuard {
    #[cfg(unix)]
    pgid: Option<nix::unistd::Pid>,
}

impl GroupGuard {
    fn new(pid: Option<u32>) -> Self {
        #[cfg(unix)]
        {
            GroupGuard {
                pgid: pid
                    .and_then(|id| i32::try_from(id).ok())
                    .map(nix::unistd::Pid::from_raw),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = pid;
            GroupGuard {}
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pgid) = self.pgid.take() {
            use nix::errno::Errno;
            use nix::sys::signal::{Signal, killpg};
            match killpg(pgid, Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(error) => {
                    tracing::warn!(pgid = pgid.as_raw(), %error, "could not kill an MCP server's process group")
                }
            }
        }
    }
}

/// The end of a server's stderr.
#[derive(Debug, Default)]
struct Tail(SyncMutex<Vec<u8>>);

impl Tail {
    fn push(&self, bytes: &[u8]) {
        let mut tail = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tail.extend_from_slice(bytes);
        if tail.len() > STDERR_TAIL {
            let cut = tail.len() - STDERR_TAIL;
            tail.drain(..cut);
        }
    }

    /// The tail as text with control characters escaped.
    fn text(&self) -> String {
        let tail = self.0.lock().unwrap_or_else(|e| e.into_inner());
        escape(String::from_utf8_lossy(&tail).trim())
    }
}

/// Text with control characters (and only those) escaped, safe for a terminal.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A running server: the service (its transport owns the child), its tools, its group.
/// Field order matters: the group is killed first, then the service is dropped.
struct Connection {
    _group: GroupGuard,
    service: RunningService<RoleClient, ()>,
    tools: Arc<Vec<Tool>>,
    pid: Option<u32>,
}

impl Connection {
    fn is_alive(&self) -> bool {
        !self.service.is_closed() && !self.service.is_transport_closed()
    }
}

/// A live server as a turn uses it: its peer (to call tools) and its tools.
#[derive(Clone)]
pub(crate) struct Live {
    pub name: String,
    pub peer: Peer<RoleClient>,
    pub tools: Arc<Vec<Tool>>,
}

/// One named server of the pool.
struct Slot {
    name: String,
    spec: ServerSpec,
    connection: Mutex<Option<Connection>>,
    tail: Arc<Tail>,
}

impl Slot {
    /// The live server, started (or restarted, when it died) as needed.
    async fn live(&self, startup_timeout: Duration) -> Result<Live, AgentError> {
        let mut connection = self.connection.lock().await;
        if let Some(existing) = connection.as_ref() {
            if existing.is_alive() {
                return Ok(self.live_of(existing));
            }
            tracing::info!(server = %self.name, pid = ?existing.pid, "the MCP server died; restarting it");
            *connection = None;
        }
        let started = tokio::time::timeout(startup_timeout, self.start()).await;
        let started = match started {
            Ok(result) => result?,
            Err(_) => {
                return Err(AgentError::ServerStartTimeout {
                    server: self.name.clone(),
                    timeout_ms: u64::try_from(startup_timeout.as_millis()).unwrap_or(u64::MAX),
                    stderr: self.tail.text(),
                });
            }
        };
        let mut started = started;
        if let ServerSpec::Stdio {
            include_tools: Some(names),
            ..
        }
        | ServerSpec::Http {
            include_tools: Some(names),
            ..
        } = &self.spec
        {
            for name in names {
                if !started.tools.iter().any(|tool| tool.name == name.as_str()) {
                    tracing::warn!(server = %self.name, tool = %name, "`include_tools` names a tool the server does not have");
                }
            }
            let kept = started
                .tools
                .iter()
                .filter(|tool| names.iter().any(|name| tool.name == name.as_str()))
                .cloned()
                .collect();
            started.tools = Arc::new(kept);
        }
        let live = self.live_of(&started);
        *connection = Some(started);
        Ok(live)
    }

    fn live_of(&self, connection: &Connection) -> Live {
        Live {
            name: self.name.clone(),
            peer: connection.service.peer().clone(),
            tools: connection.tools.clone(),
        }
    }

    fn start_error(&self, reason: impl std::fmt::Display) -> AgentError {
        AgentError::ServerStart {
            server: self.name.clone(),
            reason: escape(&reason.to_string()),
            stderr: self.tail.text(),
        }
    }

    async fn start(&self) -> Result<Connection, AgentError> {
        match &self.spec {
            ServerSpec::Stdio {
                command,
                args,
                env,
                cwd,
                ..
            } => {
                let mut cmd = tokio::process::Command::new(command);
                cmd.args(args).envs(env).kill_on_drop(true);
                #[cfg(unix)]
                cmd.process_group(0);
                if let Some(cwd) = cwd {
                    cmd.current_dir(cwd);
                }
                let (transport, stderr) = TokioChildProcess::builder(cmd)
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|error| self.start_error(format_args!("`{command}`: {error}")))?;
                let pid = transport.id();
                let group = GroupGuard::new(pid);
                if let Some(mut stderr) = stderr {
                    let tail = self.tail.clone();
                    let name = self.name.clone();
                    tokio::spawn(async move {
                        let mut buffer = vec![0u8; 4096];
                        // Ends at EOF: when the server and every process holding its stderr exit.
                        while let Ok(n) = stderr.read(&mut buffer).await {
                            if n == 0 {
                                break;
                            }
                            tail.push(&buffer[..n]);
                            tracing::debug!(server = %name, stderr = %escape(&String::from_utf8_lossy(&buffer[..n])), "MCP server stderr");
                        }
                    });
                }
                tracing::debug!(server = %self.name, ?pid, "started an MCP server");
                let service = ().serve(transport).await.map_err(|error| self.start_error(error))?;
                let tools = service.list_all_tools().await.map_err(|error| {
                    self.start_error(format_args!("listing its tools failed: {error}"))
                })?;
                tracing::info!(server = %self.name, ?pid, tools = tools.len(), "the MCP server is ready");
                Ok(Connection {
                    _group: group,
                    service,
                    tools: Arc::new(tools),
                    pid,
                })
            }
            ServerSpec::Http { url, headers, .. } => crate::http_transport::connect(url, headers)
                .await
                .map_err(|reason| self.start_error(reason))
                .map(|(service, tools)| Connection {
                    _group: GroupGuard::new(None),
                    service,
                    tools: Arc::new(tools),
                    pid: None,
                }),
        }
    }
}

/// The MCP servers of one runtime instance, by name and spec.
#[derive(Default)]
pub(crate) struct Pool {
    slots: SyncMutex<HashMap<(String, ServerSpec), Arc<Slot>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Pool")
            .field(
                "servers",
                &slots.keys().map(|(name, _)| name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Pool {
    /// The live servers for these specs, each started on first use and reused after; started
    /// concurrently.
    ///
    /// # Errors
    ///
    /// The first server that could not start, or too many servers in the pool.
    pub(crate) async fn live(
        &self,
        specs: &BTreeMap<String, ServerSpec>,
        startup_timeout: Duration,
    ) -> Result<Vec<Live>, AgentError> {
        let slots = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let mut chosen = Vec::with_capacity(specs.len());
            for (name, spec) in specs {
                let key = (name.clone(), spec.clone());
                if !slots.contains_key(&key) && slots.len() >= MAX_SERVERS {
                    return Err(AgentError::TooManyServers {
                        running: slots.len(),
                        max: MAX_SERVERS,
                    });
                }
                let slot = slots
                    .entry(key)
                    .or_insert_with(|| {
                        Arc::new(Slot {
                            name: name.clone(),
                            spec: spec.clone(),
                            connection: Mutex::new(None),
                            tail: Arc::default(),
                        })
                    })
                    .clone();
                chosen.push(slot);
            }
            chosen
        };
        futures::future::try_join_all(slots.iter().map(|slot| slot.live(startup_timeout))).await
    }

    /// The live server `name` with this spec, restarted if it died.
    pub(crate) async fn restart_if_dead(
        &self,
        name: &str,
        spec: &ServerSpec,
        startup_timeout: Duration,
    ) -> Result<Live, AgentError> {
        let slot = {
            let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.get(&(name.to_owned(), spec.clone())).cloned()
        };
        match slot {
            Some(slot) => slot.live(startup_timeout).await,
            None => {
                let mut one = BTreeMap::new();
                one.insert(name.to_owned(), spec.clone());
                let mut live = self.live(&one, startup_timeout).await?;
                live.pop().ok_or_else(|| AgentError::ServerStart {
                    server: name.to_owned(),
                    reason: "it is not in the pool".into(),
                    stderr: String::new(),
                })
            }
        }
    }

    /// The pids of the stdio servers running now, by name (for tests and `health`).
    pub(crate) fn pids(&self) -> Vec<(String, u32)> {
        let slots: Vec<Arc<Slot>> = {
            let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.values().cloned().collect()
        };
        slots
            .iter()
            .filter_map(|slot| {
                let connection = slot.connection.try_lock().ok()?;
                let connection = connection.as_ref()?;
                Some((slot.name.clone(), connection.pid?))
            })
            .collect()
    }
}

/// Why a tool call failed; the text is fed back to the model as the tool's result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ToolFailure {
    #[error(
        "error: the tool `{tool}` did not answer within {timeout_ms} ms; the call was cancelled"
    )]
    Timeout { tool: String, timeout_ms: u64 },
    #[error(
        "error: the MCP server `{server}` stopped during the call ({reason}); it is restarted for the next call"
    )]
    ServerDied { server: String, reason: String },
    #[error("error: the MCP server `{server}` is not running and could not be restarted: {reason}")]
    ServerDown { server: String, reason: String },
    #[error("error: {message}")]
    Protocol { message: String },
    #[error("error: there is no tool named `{tool}`; the tools are: {available}")]
    UnknownTool { tool: String, available: String },
    #[error("error: the arguments of `{tool}` must be a JSON object: {reason}")]
    BadArguments { tool: String, reason: String },
}

/// Calls a tool on a live server with a timeout; dropping the future cancels the call (rmcp
/// sends `notifications/cancelled`).
pub(crate) async fn call_tool(
    live: &Live,
    tool: &str,
    arguments: serde_json::Map<String, Value>,
    timeout: Duration,
) -> Result<CallToolResult, ToolFailure> {
    let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
    match tokio::time::timeout(timeout, live.peer.call_tool(params)).await {
        Err(_) => Err(ToolFailure::Timeout {
            tool: tool.to_owned(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }),
        Ok(Ok(result)) => Ok(result),
        Ok(Err(ServiceError::McpError(error))) => Err(ToolFailure::Protocol {
            message: escape(&error.message),
        }),
        Ok(Err(error @ (ServiceError::TransportClosed | ServiceError::TransportSend(_)))) => {
            Err(ToolFailure::ServerDied {
                server: live.name.clone(),
                reason: escape(&error.to_string()),
            })
        }
        Ok(Err(error)) => Err(ToolFailure::Protocol {
            message: escape(&error.to_string()),
        }),
    }
}

/// A tool result as text for the model: text blocks as they are, other blocks as JSON,
/// structured content when there is nothing else; cut to `max` bytes.
pub(crate) fn result_text(result: &CallToolResult, max: usize) -> String {
    let mut parts: Vec<String> = result
        .content
        .iter()
        .map(|block| match block.as_text() {
            Some(text) => text.text.clone(),
            None => serde_json::to_string(block).unwrap_or_default(),
        })
        .collect();
    if parts.is_empty()
        && let Some(structured) = &result.structured_content
    {
        parts.push(structured.to_string());
    }
    let text = parts.join("\n");
    crate::truncate_owned(text, max)
}
