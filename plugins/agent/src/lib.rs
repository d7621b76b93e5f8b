//! `agent`: a complete agent turn in one runtime. An OpenAI-compatible model runs in a tool
//! loop over MCP servers: the runtime calls the model, executes the tool calls it decides
//! through the MCP servers (the official Rust SDK, `rmcp`), feeds the results back, and repeats
//! until a final answer or `max_steps`.
//!
//! # Configuration
//!
//! The configuration is typed (`config::AgentConfig`, runtime-api's `typed-config`): the
//! schema in the manifest (`config.schema.json`, which the crate's tests keep equal to the
//! type), `validate_config` (every problem the schema finds: types, unknown keys, bounds; then
//! what it cannot say: a URL's scheme, a server's name, a variable's name) and the value `new`
//! builds from all follow from it. A `null` value is the same as an absent key.
//!
//! | key | meaning |
//! | --- | --- |
//! | `base_url` (required) | the model server's API base, e.g. `http://127.0.0.1:8080/v1` |
//! | `model` (required) | the model, unless a request names one |
//! | `api_key_env` | the *name* of the environment variable holding the key (`Authorization: Bearer`) |
//! | `headers`, `extra_body`, `max_tokens`, `include_usage` | as the `openai` runtime takes them |
//! | `connect_timeout_ms`, `read_timeout_ms`, `request_timeout_ms` | model HTTP timeouts (10 s, 300 s, none) |
//! | `mcp_servers` | a map from a server name to `{"command", "args", "env", "cwd"}` (stdio) or `{"url", "headers"}` (streamable HTTP, an http or https URL), as MCP clients write it; `"include_tools": [names]` offers only those tools of the server; `"type"` (or `"transport"`) may say `"stdio"` or `"http"`. At most 32 servers, each name 1 to 64 letters, digits, `_`, `-` or `.` |
//! | `request_mcp_servers` | whether requests may name MCP servers of their own (default false). Turning it on is code execution for whoever writes a request: a stdio server is a program run as the host's user |
//! | `max_steps` | the most model calls in a turn (default 10, at most 1000) |
//! | `tool_timeout_ms` | the longest one tool call may take (default 60 s); then it is cancelled and the model told |
//! | `startup_timeout_ms` | the longest a server may take to start and list its tools (default 30 s) |
//! | `tool_result_max_bytes` | the most bytes of one tool result (default 64 KiB, at most 16 MiB); a larger result is not cut but replaced by the named failure `tool_result_too_large`, fed back to the model so it can ask for less |
//! | `max_tool_calls_per_step` | the most tool calls one model response may decide (default 64, at most 10,000); more is the named error `too_many_tool_calls`, before any runs |
//! | `max_concurrent_tool_calls` | the most tool calls of one step run at a time (default 8, at most 256) |
//! | `model_response_max_bytes` | the most bytes of one model response's events (default 8 MiB; from 1 KiB to 256 MiB); more is the named error `model_response_too_large` |
//!
//! When `request_mcp_servers` is on, a request may name MCP servers of its own in
//! `TurnRequest.mcp_servers` (the same map); they are added to the configured ones for that
//! turn only, started in a pool of the turn and stopped (process group killed) when it ends.
//! A request never replaces a configured server: a name in both is the error
//! `request_mcp_server_name_taken`. Off (the default), a request naming servers gets
//! `request_mcp_servers_refused`. Its per-turn `config` may set `max_steps` and
//! `tool_timeout_ms`, only lower than the instance's (higher is `invalid_turn_config`). The request's execution context (agent,
//! organisation, user, session) tags the turn's logs.
//!
//! # Behaviour
//!
//! - **Servers** are started on first use, once per runtime instance (keyed by name and
//!   spec), and reused by every later turn; one that died is restarted before its next call.
//!   A stdio server runs in its own process group, killed with `SIGKILL` when the runtime is
//!   dropped. A server that cannot start ends the turn with a named error
//!   (`mcp_server_start`, `mcp_server_start_timeout`). An instance runs at most 32 distinct
//!   servers (`too_many_mcp_servers` past that).
//! - **Tools** keep their MCP names, unless two servers (or a server and a host tool) share
//!   one; then each is `server__tool`. Tools the host passes in the request are offered too;
//!   when the model calls one, the calls this runtime can run are run, and the turn ends with
//!   finish reason `tool_calls`, the host's calls in `tool_calls` and this turn's messages in
//!   `metadata.transcript` (append them to the history, then the host's results).
//! - **Tool failures** are fed back to the model as the tool's result (`error: …`) and the
//!   loop goes on: a tool error (`isError`), a timeout (the call is cancelled on the server),
//!   a server that died during the call, an unknown tool, arguments that are not an object,
//!   a result over `tool_result_max_bytes`. The stream's tool result delta names each in
//!   `metadata.error` (`tool_timeout`, `mcp_server_died`, `mcp_server_down`, `mcp_protocol`,
//!   `unknown_tool`, `bad_tool_arguments`, `tool_result_too_large`).
//! - **The stream**: text and thinking deltas as the model produces them (the text of
//!   successive steps separated by a blank line), each decided tool call whole (metadata
//!   `index`, `id`, `name`, `step`, `handled_by`: the server, `host` or `unknown`), each tool
//!   result (metadata `tool_call_id`, `name`, `ok`, `step`, `duration_ms`; content a preview
//!   of at most 512 bytes), then the final output: usage summed over every model call,
//!   `metadata.steps`, `metadata.tool_calls`.
//! - **Limits**: a model still calling tools after `max_steps` calls ends the turn with the
//!   named error `max_steps` (kind `max_steps`, the usage so far in its metadata); the calls
//!   of that last step are streamed but not run.
//!   Cancelling the turn drops the model response and cancels in-flight tool calls.

#![forbid(unsafe_code)]

mod config;
mod error;
mod http_transport;
mod model;
mod servers;
mod spec;
mod turn;

use std::sync::Arc;

use futures::{Stream, StreamExt as _};
use runtime_api::config::TypedConfig;
use runtime_api::{Capabilities, Runtime, RuntimeError, StreamItem, TurnOutput, TurnRequest};

use config::AgentConfig;
pub use error::AgentError;

use servers::Pool;
use turn::Inner;

/// The `User-Agent` of the model requests.
const USER_AGENT: &str = concat!("agent-runtimes-agent/", env!("CARGO_PKG_VERSION"));

/// The `agent` runtime: an OpenAI-compatible model in a tool loop over MCP servers.
#[derive(Debug)]
pub struct AgentRuntime {
    inner: Arc<Inner>,
}

impl AgentRuntime {
    /// The process ids of the stdio MCP servers running now, by server name.
    pub fn server_pids(&self) -> Vec<(String, u32)> {
        self.inner.pool.pids()
    }
}

impl TypedConfig for AgentRuntime {
    type Config = AgentConfig;

    fn check_config(config: &AgentConfig) -> Vec<String> {
        config.problems()
    }

    fn from_config(config: AgentConfig) -> Result<Self, RuntimeError> {
        let config = config
            .build()
            .map_err(|problems| openai_wire::config::invalid_config(Self::ID, problems))?;
        let client = config.server.client(USER_AGENT)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                client,
                pool: Pool::default(),
            }),
        })
    }
}

impl Runtime for AgentRuntime {
    const ID: &'static str = "agent";
    const DISPLAY_NAME: &'static str = "Agent (tool loop over MCP)";
    const DESCRIPTION: &'static str = "An OpenAI-compatible model in a tool loop: runs the tool calls it decides through MCP servers until a final answer.";
    const CAPABILITIES: Capabilities = Capabilities::STREAMING
        .with(Capabilities::TOOLS)
        .with(Capabilities::HISTORY)
        .with(Capabilities::THINKING)
        .with(Capabilities::CONFIG_VALIDATION)
        .with(Capabilities::MCP);
    /// The model server, the MCP servers' URLs, their programs and working folders.
    const PERMISSIONS: &'static str = r#"{"net": ["{config:base_url}", "{config:mcp_servers.*.url}"], "run": ["{config:mcp_servers.*.command}"], "read": ["{config:mcp_servers.*.cwd}"]}"#;

    // CONFIG_SCHEMA (`config.schema.json`, kept equal to `AgentConfig` by the crate's tests),
    // validate_config and new, from `AgentConfig`.
    runtime_api::typed_config!("config.schema.json");

    async fn run_turn(&self, request: TurnRequest) -> Result<TurnOutput, RuntimeError> {
        let mut stream = turn::stream(self.inner.clone(), request);
        while let Some(item) = stream.next().await {
            if let StreamItem::Done(output) = item? {
                return Ok(output);
            }
        }
        Err(RuntimeError::internal("the turn ended without a result"))
    }

    fn stream_turn(
        self: Arc<Self>,
        request: TurnRequest,
    ) -> impl Stream<Item = Result<StreamItem, RuntimeError>> + Send + 'static {
        turn::stream(self.inner.clone(), request)
    }

    async fn health(&self) -> Result<String, RuntimeError> {
        let config = &self.inner.config;
        let servers = self
            .inner
            .pool
            .live(&config.mcp_servers, config.startup_timeout)
            .await?;
        let tools: usize = servers.iter().map(|s| s.tools.len()).sum();
        Ok(format!(
            "model {} at {}; {} MCP servers running with {tools} tools",
            config.server.model,
            config.server.base_url,
            servers.len()
        ))
    }
}

runtime_api::export_plugin!(AgentRuntime);
