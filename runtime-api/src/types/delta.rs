//! The typed pieces of a streamed turn.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::RuntimeError;
use crate::TurnOutput;

/// The kind of a [`Delta`].
///
/// Crosses the boundary as a small integer code; a code this version does not know arrives
/// as [`DeltaKind::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeltaKind {
    /// A piece of the answer's text.
    Text,
    /// A piece of a tool call: `metadata` holds `index` and, once, `id` and `name`;
    /// `content` holds a fragment of the JSON arguments.
    ToolCall,
    /// A piece of the model's reasoning, not part of the answer.
    Thinking,
    /// A non-fatal error reported during the stream (a fatal one ends the stream as `Err`).
    Error,
    /// The result of a tool the runtime executed itself (an agent runtime's tool loop):
    /// `metadata` holds `tool_call_id`, `name` and `ok`; `content` a bounded preview.
    ToolResult,
    /// A kind from a newer runtime-api.
    Unknown,
}

impl DeltaKind {
    /// The kind's code on the boundary.
    pub const fn code(self) -> u32 {
        match self {
            DeltaKind::Text => 1,
            DeltaKind::ToolCall => 2,
            DeltaKind::Thinking => 3,
            DeltaKind::Error => 4,
            DeltaKind::ToolResult => 5,
            DeltaKind::Unknown => 0,
        }
    }

    /// The kind with this code.
    pub const fn from_code(code: u32) -> Self {
        match code {
            1 => DeltaKind::Text,
            2 => DeltaKind::ToolCall,
            3 => DeltaKind::Thinking,
            4 => DeltaKind::Error,
            5 => DeltaKind::ToolResult,
            _ => DeltaKind::Unknown,
        }
    }
}

/// One typed piece of a streamed turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Delta {
    /// What the piece is.
    pub kind: DeltaKind,
    /// Its text.
    pub content: String,
    /// Structured extras (JSON); `null` when absent.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub metadata: Value,
}

impl Delta {
    /// A delta of any kind.
    pub fn new(kind: DeltaKind, content: impl Into<String>) -> Self {
        Self {
            kind,
            content: content.into(),
            metadata: Value::Null,
        }
    }

    /// A piece of answer text.
    pub fn text(content: impl Into<String>) -> Self {
        Self::new(DeltaKind::Text, content)
    }

    /// A piece of reasoning.
    pub fn thinking(content: impl Into<String>) -> Self {
        Self::new(DeltaKind::Thinking, content)
    }

    /// A piece of the tool call at `index`: `id` and `name` are given once (in its first
    /// piece), `arguments` is the next fragment of its JSON arguments.
    pub fn tool_call(
        index: usize,
        id: Option<&str>,
        name: Option<&str>,
        arguments: impl Into<String>,
    ) -> Self {
        let mut metadata = json!({ "index": index });
        if let Some(id) = id {
            metadata["id"] = json!(id);
        }
        if let Some(name) = name {
            metadata["name"] = json!(name);
        }
        Self {
            kind: DeltaKind::ToolCall,
            content: arguments.into(),
            metadata,
        }
    }

    /// A non-fatal error notice.
    pub fn error(error: &RuntimeError) -> Self {
        Self {
            kind: DeltaKind::Error,
            content: error.message.clone(),
            metadata: json!({ "kind": error.kind.as_str(), "retriable": error.retriable }),
        }
    }

    /// The result of a tool call the runtime executed itself: `ok` is false when the tool
    /// failed; `preview` is a bounded excerpt of its output, for people watching the turn.
    pub fn tool_result(
        tool_call_id: &str,
        name: &str,
        ok: bool,
        preview: impl Into<String>,
    ) -> Self {
        Self {
            kind: DeltaKind::ToolResult,
            content: preview.into(),
            metadata: json!({ "tool_call_id": tool_call_id, "name": name, "ok": ok }),
        }
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }
}

/// One item of a streamed turn: deltas, then exactly one [`StreamItem::Done`] last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum StreamItem {
    /// A piece of output.
    Delta(Delta),
    /// The final result: the whole content, tool calls, usage and finish reason.
    Done(TurnOutput),
}
