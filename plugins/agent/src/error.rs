//! The named errors that end an agent turn, and how they cross the boundary as
//! [`RuntimeError`]s (kind, message, and the fields under `metadata`).

use runtime_api::{ErrorKind, RuntimeError, Usage, json};

/// Why an agent turn failed (as opposed to a tool failing, which is fed back to the model).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// An MCP server's program could not be started, or it ended or failed before it listed
    /// its tools.
    #[error(
        "the MCP server `{server}` could not start: {reason}{}; check its `command`, `args` and \
         `env` (or `url`)",
        stderr_suffix(stderr)
    )]
    ServerStart {
        /// The server's name in `mcp_servers`.
        server: String,
        /// What failed.
        reason: String,
        /// The end of what it wrote to stderr, escaped.
        stderr: String,
    },
    /// An MCP server did not finish its handshake and tool listing in time.
    #[error(
        "the MCP server `{server}` did not start within {timeout_ms} ms{}; raise \
         `startup_timeout_ms` if it is only slow",
        stderr_suffix(stderr)
    )]
    ServerStartTimeout {
        /// The server's name.
        server: String,
        /// The startup timeout.
        timeout_ms: u64,
        /// The end of what it wrote to stderr, escaped.
        stderr: String,
    },
    /// The model still asked for tools after `max_steps` model calls.
    #[error(
        "the model still called tools after {max_steps} steps (`max_steps`); raise `max_steps` \
         or make the task smaller"
    )]
    MaxSteps {
        /// The limit reached.
        max_steps: u32,
        /// The usage of every model call of the turn.
        usage: Usage,
    },
    /// A request named MCP servers, but the runtime's config does not set
    /// `request_mcp_servers: true` (the default: a request's server is a program to run).
    #[error(
        "this agent runtime does not accept MCP servers in requests (`request_mcp_servers` is \
         off: a request's server is a program run as the host's user); the operator names \
         servers in the runtime's config: {names:?}"
    )]
    RequestServersRefused {
        /// The servers the request named.
        names: Vec<String>,
    },
    /// A request named an MCP server the runtime's config already has: a request never
    /// replaces a configured server.
    #[error(
        "the request names MCP servers the runtime's config already has ({names:?}); a request \
         cannot replace them: give its servers other names"
    )]
    RequestServerNameTaken {
        /// The names given in both.
        names: Vec<String>,
    },
    /// The model decided more tool calls in one response than `max_tool_calls_per_step`.
    #[error(
        "the model decided more than {max} tool calls in one response (step {step}; \
         `max_tool_calls_per_step`); the turn was stopped before running any"
    )]
    TooManyToolCalls {
        /// The limit.
        max: usize,
        /// The step (model call) of the turn.
        step: u32,
    },
    /// A model response's events went over `model_response_max_bytes`.
    #[error(
        "the model's response went over {max_bytes} bytes (step {step}; \
         `model_response_max_bytes`); the response was dropped"
    )]
    ModelResponseTooLarge {
        /// The limit.
        max_bytes: usize,
        /// The step (model call) of the turn.
        step: u32,
    },
    /// The request's per-turn config or MCP servers are invalid.
    #[error("invalid per-turn configuration: {}", problems.join("; "))]
    InvalidTurnConfig {
        /// Every problem found.
        problems: Vec<String>,
    },
    /// More MCP servers are running in this runtime instance than it allows.
    #[error(
        "this runtime instance already runs {running} MCP servers (at most {max}); reuse server \
         names and specs across requests"
    )]
    TooManyServers {
        /// Servers running.
        running: usize,
        /// The limit.
        max: usize,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(" (its stderr ends with: {stderr})")
    }
}

impl AgentError {
    /// The error's name in metadata (`"error"`).
    pub fn name(&self) -> &'static str {
        match self {
            AgentError::ServerStart { .. } => "mcp_server_start",
            AgentError::ServerStartTimeout { .. } => "mcp_server_start_timeout",
            AgentError::MaxSteps { .. } => "max_steps",
            AgentError::RequestServersRefused { .. } => "request_mcp_servers_refused",
            AgentError::InvalidTurnConfig { .. } => "invalid_turn_config",
            AgentError::TooManyServers { .. } => "too_many_mcp_servers",
            AgentError::RequestServerNameTaken { .. } => "request_mcp_server_name_taken",
            AgentError::TooManyToolCalls { .. } => "too_many_tool_calls",
            AgentError::ModelResponseTooLarge { .. } => "model_response_too_large",
        }
    }
}

impl From<AgentError> for RuntimeError {
    fn from(error: AgentError) -> Self {
        let message = error.to_string();
        let name = error.name();
        let (kind, metadata) = match &error {
            AgentError::ServerStart { server, stderr, .. } => (
                ErrorKind::Unavailable,
                json!({ "mcp_server": server, "stderr": stderr }),
            ),
            AgentError::ServerStartTimeout {
                server,
                timeout_ms,
                stderr,
            } => (
                ErrorKind::Timeout,
                json!({ "mcp_server": server, "timeout_ms": timeout_ms, "stderr": stderr }),
            ),
            AgentError::MaxSteps { max_steps, usage } => (
                ErrorKind::Other("max_steps".into()),
                json!({ "max_steps": max_steps, "usage": usage }),
            ),
            AgentError::RequestServersRefused { names } => {
                (ErrorKind::Unsupported, json!({ "mcp_servers": names }))
            }
            AgentError::InvalidTurnConfig { problems } => {
                (ErrorKind::InvalidRequest, json!({ "problems": problems }))
            }
            AgentError::RequestServerNameTaken { names } => {
                (ErrorKind::InvalidRequest, json!({ "mcp_servers": names }))
            }
            AgentError::TooManyToolCalls { max, step } => (
                ErrorKind::Other("too_many_tool_calls".into()),
                json!({ "max": max, "step": step }),
            ),
            AgentError::ModelResponseTooLarge { max_bytes, step } => (
                ErrorKind::Other("model_response_too_large".into()),
                json!({ "max_bytes": max_bytes, "step": step }),
            ),
            AgentError::TooManyServers { running, max } => (
                ErrorKind::Unavailable,
                json!({ "running": running, "max": max }),
            ),
        };
        let mut metadata = metadata;
        metadata["error"] = json!(name);
        let retriable = matches!(
            error,
            AgentError::ServerStartTimeout { .. } | AgentError::TooManyServers { .. }
        );
        RuntimeError::new(kind, message)
            .with_retriable(retriable)
            .with_metadata(metadata)
    }
}
