//! What a host asks a runtime to do in one turn.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ExecutionContext, ToolCall};

open_enum! {
    /// The author of a message in the conversation history.
    ///
    /// Unknown roles (from a newer host or plugin) are kept as [`Role::Other`].
    pub enum Role {
        /// A role this version of runtime-api does not know.
        Other(String);
        /// Instructions for the model.
        System = "system",
        /// The human (or calling agent).
        User = "user",
        /// The model.
        Assistant = "assistant",
        /// The result of a tool call.
        Tool = "tool",
    }
}

/// One message of the conversation history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    #[serde(default)]
    pub content: String,
    /// For a [`Role::Tool`] message: the id of the tool call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For a [`Role::Assistant`] message: the tool calls it made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

impl Message {
    /// A message with a role and text.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_call_id: None,
            tool_calls: Vec::new(),
        }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }

    /// An assistant message that made tool calls.
    pub fn assistant_tool_calls(tool_calls: Vec<ToolCall>) -> Self {
        Self {
            tool_calls,
            ..Self::new(Role::Assistant, "")
        }
    }

    /// The result of the tool call `tool_call_id`.
    pub fn tool_result(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(tool_call_id.into()),
            ..Self::new(Role::Tool, content)
        }
    }
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolDefinition {
    /// The name the model calls it by.
    pub name: String,
    /// What it does, for the model.
    #[serde(default)]
    pub description: String,
    /// The JSON schema of its arguments.
    #[serde(default)]
    pub parameters: Value,
}

impl ToolDefinition {
    /// A tool with a name, a description and a JSON schema for its arguments.
    pub fn new(name: impl Into<String>, description: impl Into<String>, parameters: Value) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            parameters,
        }
    }
}

/// Sampling options; `None` leaves the runtime's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Sampling {
    /// The most tokens to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// The sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Sequences that end generation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
}

/// One turn's input: a prompt and everything around it.
///
/// # Examples
///
/// ```
/// use runtime_api::{Message, TurnRequest};
///
/// let request = TurnRequest::new("What is 2 + 2?")
///     .with_system("Answer briefly.")
///     .with_history(vec![Message::user("Hi"), Message::assistant("Hello!")])
///     .with_max_tokens(32);
/// assert_eq!(request.sampling.max_tokens, Some(32));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TurnRequest {
    /// The new user prompt.
    pub prompt: String,
    /// The system prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The model to use, in the runtime's own naming.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Earlier messages, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Message>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDefinition>,
    /// Sampling options.
    #[serde(default)]
    pub sampling: Sampling,
    /// Per-turn runtime configuration (JSON); `null` when absent.
    #[serde(default)]
    pub config: Value,
    /// The id that `cancel` uses to reach this turn. The host fills it in when empty.
    #[serde(default)]
    pub execution_id: String,
    /// Who the turn runs for: agent, organisation, user, session, environment.
    #[serde(default, skip_serializing_if = "ExecutionContext::is_empty")]
    pub context: ExecutionContext,
    /// MCP servers the runtime may call tools on for this turn, in the shape MCP clients use:
    /// a map from a server name to `{"command", "args", "env"}` (stdio) or `{"url"}`
    /// (streamable HTTP); `null` when absent. Only runtimes that declare
    /// [`Capabilities::MCP`](crate::Capabilities::MCP) accept it; the host refuses it for
    /// the others.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub mcp_servers: Value,
    /// Free-form metadata (JSON); `null` when absent.
    #[serde(default)]
    pub metadata: Value,
}

impl TurnRequest {
    /// A request with just a prompt.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            ..Self::default()
        }
    }

    /// Sets the system prompt.
    pub fn with_system(mut self, system: impl Into<String>) -> Self {
        self.system = Some(system.into());
        self
    }

    /// Sets the model.
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Sets the conversation history.
    pub fn with_history(mut self, history: Vec<Message>) -> Self {
        self.history = history;
        self
    }

    /// Sets the tools.
    pub fn with_tools(mut self, tools: Vec<ToolDefinition>) -> Self {
        self.tools = tools;
        self
    }

    /// Sets the most tokens to generate.
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.sampling.max_tokens = Some(max_tokens);
        self
    }

    /// Sets the temperature.
    pub fn with_temperature(mut self, temperature: f64) -> Self {
        self.sampling.temperature = Some(temperature);
        self
    }

    /// Sets the per-turn configuration.
    pub fn with_config(mut self, config: Value) -> Self {
        self.config = config;
        self
    }

    /// Sets the execution id.
    pub fn with_execution_id(mut self, execution_id: impl Into<String>) -> Self {
        self.execution_id = execution_id.into();
        self
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets who the turn runs for.
    pub fn with_context(mut self, context: ExecutionContext) -> Self {
        self.context = context;
        self
    }

    /// Sets the MCP servers (a map from name to `{"command", "args", "env"}` or `{"url"}`).
    pub fn with_mcp_servers(mut self, mcp_servers: Value) -> Self {
        self.mcp_servers = mcp_servers;
        self
    }
}
