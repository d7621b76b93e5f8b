//! MCP servers: the pool of running servers of one runtime instance (keyed by name and
//! [`ServerSpec`]) — started on first use, reused across turns, restarted when they die, killed
//! with their process group when the pool is dropped — and tool calls on them.
//!
//! A stdio server runs as a child process through rmcp's `TokioChildProcess` transport, in a
//! process group of its own (`process_group(0)`): `npx` and shell wrappers start grandchildren,
//! and killing only the direct child would leave them running. Its stderr is read into a
//! bounded tail (quoted in start errors) and logged at debug level, escaped (`runtime_text::clean`).

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::Duration;

use rmcp::ServiceExt as _;
use rmcp::model::{CallToolRequestParams, CallToolResult, Tool};
use rmcp::service::{Peer, RoleClient, RunningService, ServiceError};
use rmcp::transport::TokioChildProcess;
use runtime_api::Value;
use runtime_text::{ByteTail, clean};
use tokio::io::AsyncReadExt as _;
use tokio::sync::Mutex;

use crate::error::AgentError;
use crate::spec::{MAX_SERVERS, ServerSpec};

/// How long a server that failed to start gets to finish writing its stderr, for the error.
const STDERR_AFTER_EXIT: Duration = Duration::from_millis(500);

/// The most bytes of a server's stderr kept for error messages.
const STDERR_TAIL: usize = 2048;

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

/// The end of a server's stderr, shared by the task reading it and the start errors quoting it.
#[derive(Debug)]
struct Tail(SyncMutex<ByteTail>);

impl Default for Tail {
    fn default() -> Self {
        Tail(SyncMutex::new(ByteTail::new(STDERR_TAIL)))
    }
}

impl Tail {
    fn push(&self, bytes: &[u8]) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(bytes);
    }

    /// The tail as text with control characters escaped.
    fn text(&self) -> String {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clean_text()
    }
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
            reason: clean(&reason.to_string()).into_owned(),
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
                let mut reader = None;
                if let Some(mut stderr) = stderr {
                    let tail = self.tail.clone();
                    let name = self.name.clone();
                    reader = Some(tokio::spawn(async move {
                        let mut buffer = vec![0u8; 4096];
                        // Ends at EOF: when the server and every process holding its stderr exit.
                        while let Ok(n) = stderr.read(&mut buffer).await {
                            if n == 0 {
                                break;
                            }
                            tail.push(&buffer[..n]);
                            tracing::debug!(server = %name, stderr = %clean(&String::from_utf8_lossy(&buffer[..n])), "MCP server stderr");
                        }
                    }));
                }
                tracing::debug!(server = %self.name, ?pid, "started an MCP server");
                let service = match ().serve(transport).await {
                    Ok(service) => service,
                    Err(error) => {
                        // A server that failed its handshake has usually exited saying why:
                        // its stderr to its end (briefly bounded) goes into the error.
                        if let Some(reader) = reader {
                            let _ = tokio::time::timeout(STDERR_AFTER_EXIT, reader).await;
                        }
                        return Err(self.start_error(error));
                    }
                };
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
    #[error(
        "error: the result of `{tool}` is {bytes} bytes, more than this runtime takes ({max}, its tool_result_max_bytes); ask for less"
    )]
    ResultTooLarge {
        tool: String,
        bytes: usize,
        max: usize,
    },
}

impl ToolFailure {
    /// The failure's name, for the stream's tool result delta (`metadata.error`).
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "tool_timeout",
            Self::ServerDied { .. } => "mcp_server_died",
            Self::ServerDown { .. } => "mcp_server_down",
            Self::Protocol { .. } => "mcp_protocol",
            Self::UnknownTool { .. } => "unknown_tool",
            Self::BadArguments { .. } => "bad_tool_arguments",
            Self::ResultTooLarge { .. } => "tool_result_too_large",
        }
    }
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
            message: clean(&error.message).into_owned(),
        }),
        Ok(Err(error @ (ServiceError::TransportClosed | ServiceError::TransportSend(_)))) => {
            Err(ToolFailure::ServerDied {
                server: live.name.clone(),
                reason: clean(&error.to_string()).into_owned(),
            })
        }
        Ok(Err(error)) => Err(ToolFailure::Protocol {
            message: clean(&error.to_string()).into_owned(),
        }),
    }
}

/// A tool result as text for the model: text blocks as they are, other blocks as JSON,
/// structured content when there is nothing else; a result over `max` bytes is the named
/// failure `tool_result_too_large` (never cut silently: the model would take part of an
/// answer for the whole).
pub(crate) fn result_text(
    result: &CallToolResult,
    tool: &str,
    max: usize,
) -> Result<String, ToolFailure> {
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
    let bytes = parts.iter().map(String::len).sum::<usize>() + parts.len().saturating_sub(1);
    if bytes > max {
        return Err(ToolFailure::ResultTooLarge {
            tool: clean(&truncate_owned(tool.to_owned(), 64)).into_owned(),
            bytes,
            max,
        });
    }
    Ok(parts.join("\n"))
}

/// The text cut to at most `max` bytes at a character boundary, with `…` when cut.
pub(crate) fn truncate_owned(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}
