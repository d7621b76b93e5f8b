//! What a turn produces.

use std::ops::{Add, AddAssign};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A call the model made to a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolCall {
    /// The id that the tool result refers back to.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, as JSON. Arguments that were not valid JSON arrive as a JSON string.
    pub arguments: Value,
}

impl ToolCall {
    /// A tool call.
    pub fn new(id: impl Into<String>, name: impl Into<String>, arguments: Value) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            arguments,
        }
    }
}

/// Token counts of a turn. Zero means "not reported".
///
/// Usage is additive, so a host can sum it over turns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Usage {
    /// Prompt tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Generated tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Input plus output, as the runtime reports it.
    #[serde(default)]
    pub total_tokens: u64,
    /// Input tokens read from a prompt cache.
    #[serde(default)]
    pub cache_read_tokens: u64,
    /// Input tokens written to a prompt cache.
    #[serde(default)]
    pub cache_write_tokens: u64,
    /// Tokens spent on reasoning.
    #[serde(default)]
    pub reasoning_tokens: u64,
}

impl Usage {
    /// Usage with input and output counts; the total is their sum.
    pub fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Self {
            input_tokens,
            output_tokens,
            total_tokens: input_tokens + output_tokens,
            ..Self::default()
        }
    }

    /// Whether nothing was reported.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl Add for Usage {
    type Output = Usage;

    fn add(mut self, other: Usage) -> Usage {
        self += other;
        self
    }
}

impl AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.total_tokens += other.total_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
    }
}

open_enum! {
    /// Why a turn ended.
    ///
    /// Crosses the boundary as a small code, with the text for [`FinishReason::Other`]; a code
    /// this version does not know arrives as `Other` with its text.
    pub enum FinishReason {
        /// Any other reason, as the runtime named it.
        Other(String);
        /// The model finished its answer.
        Stop = "stop",
        /// The token limit was reached.
        Length = "length",
        /// The model called tools and waits for their results.
        ToolCalls = "tool_calls",
        /// A content filter stopped the answer.
        ContentFilter = "content_filter",
        /// The turn was cancelled.
        Cancelled = "cancelled",
        /// The turn ended in an error.
        Error = "error",
    }
}

impl Default for FinishReason {
    /// [`FinishReason::Stop`].
    fn default() -> Self {
        FinishReason::Stop
    }
}

impl FinishReason {
    /// The reason's code on the boundary; `0` for [`FinishReason::Other`].
    pub const fn code(&self) -> u32 {
        match self {
            FinishReason::Stop => 1,
            FinishReason::Length => 2,
            FinishReason::ToolCalls => 3,
            FinishReason::ContentFilter => 4,
            FinishReason::Cancelled => 5,
            FinishReason::Error => 6,
            FinishReason::Other(_) => 0,
        }
    }

    /// The reason with this code, or `Other(text)` for a code this version does not know.
    pub fn from_code(code: u32, text: String) -> Self {
        match code {
            1 => FinishReason::Stop,
            2 => FinishReason::Length,
            3 => FinishReason::ToolCalls,
            4 => FinishReason::ContentFilter,
            5 => FinishReason::Cancelled,
            6 => FinishReason::Error,
            _ => FinishReason::from(text),
        }
    }
}

/// The result of a turn.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TurnOutput {
    /// The answer's text.
    pub content: String,
    /// Tools the model called.
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    /// Token counts.
    #[serde(default)]
    pub usage: Usage,
    /// Why the turn ended.
    #[serde(default)]
    pub finish_reason: FinishReason,
    /// Free-form metadata (JSON); `null` when absent.
    #[serde(default)]
    pub metadata: Value,
}

impl TurnOutput {
    /// An output with text that finished normally.
    pub fn new(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            ..Self::default()
        }
    }

    /// Sets the usage.
    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = usage;
        self
    }

    /// Sets the finish reason.
    pub fn with_finish_reason(mut self, finish_reason: FinishReason) -> Self {
        self.finish_reason = finish_reason;
        self
    }

    /// Sets the tool calls.
    pub fn with_tool_calls(mut self, tool_calls: Vec<ToolCall>) -> Self {
        self.tool_calls = tool_calls;
        self
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }
}
