//! A streamed Messages response, decoded event by event.

use std::collections::BTreeMap;

use openai_wire::sse::{self, StreamDecoder};
use openai_wire::{http, parse_arguments};
use runtime_api::{Delta, FinishReason, RuntimeError, ToolCall, TurnOutput, Usage, Value, json};

use super::response::{finish_reason, merge_usage, metadata};

/// One content block of a streamed message.
#[derive(Debug)]
enum Block {
    Text,
    Thinking,
    ToolUse {
        /// The call's position among the message's tool calls (the delta `index`).
        ordinal: usize,
        id: String,
        name: String,
        json: String,
    },
    Other,
}

/// The accumulator of a streamed Messages response: fed each SSE event, it yields deltas and
/// assembles the final [`TurnOutput`].
///
/// Content blocks are tracked by their `index`; a `tool_use` block's `input_json_delta`
/// fragments are appended to that block, and its tool-call deltas are numbered by the call's
/// position among the tool calls (so they match [`TurnOutput::tool_calls`]). `message_start`
/// and `message_delta` carry usage and the stop reason; `ping` and unknown events are
/// ignored; an `error` event fails the turn; complete only after `message_stop`.
#[derive(Debug, Default)]
pub struct AnthropicStreamState {
    content: String,
    thinking: String,
    blocks: BTreeMap<u64, Block>,
    tool_count: usize,
    usage: Usage,
    stop_reason: Option<FinishReason>,
    metadata: Value,
    done: bool,
}

impl AnthropicStreamState {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one event: its SSE `event` name and its parsed data.
    ///
    /// # Errors
    ///
    /// When the event is an error.
    pub fn feed_event(&mut self, event: &str, data: &Value) -> Result<Vec<Delta>, RuntimeError> {
        // The SSE event name decides; servers that omit it put the same name in `type`.
        // (llama.cpp's `event: error` carries the error's own type in `type`.)
        let kind = if event != "message" && !event.is_empty() {
            event
        } else {
            data["type"].as_str().unwrap_or_default()
        };
        let mut deltas = Vec::new();
        match kind {
            "message_start" => {
                let message = &data["message"];
                self.metadata = metadata(message, "");
                merge_usage(&mut self.usage, &message["usage"]);
            }
            "content_block_start" => {
                let index = data["index"].as_u64().unwrap_or(0);
                let block = &data["content_block"];
                let started = match block["type"].as_str() {
                    Some("text") => {
                        if let Some(text) = block["text"].as_str().filter(|t| !t.is_empty()) {
                            self.content.push_str(text);
                            deltas.push(Delta::text(text));
                        }
                        Block::Text
                    }
                    Some("thinking") => {
                        if let Some(text) = block["thinking"].as_str().filter(|t| !t.is_empty()) {
                            self.thinking.push_str(text);
                            deltas.push(Delta::thinking(text));
                        }
                        Block::Thinking
                    }
                    Some("tool_use") => {
                        let ordinal = self.tool_count;
                        self.tool_count += 1;
                        let id = block["id"].as_str().unwrap_or_default().to_owned();
                        let name = block["name"].as_str().unwrap_or_default().to_owned();
                        // Anthropic starts with `input: {}` and streams the arguments; a
                        // server that sends them whole here is taken at its word.
                        let json = match &block["input"] {
                            Value::Object(map) if !map.is_empty() => block["input"].to_string(),
                            _ => String::new(),
                        };
                        deltas.push(Delta::tool_call(
                            ordinal,
                            Some(&id).filter(|s| !s.is_empty()).map(String::as_str),
                            Some(&name).filter(|s| !s.is_empty()).map(String::as_str),
                            json.clone(),
                        ));
                        Block::ToolUse {
                            ordinal,
                            id,
                            name,
                            json,
                        }
                    }
                    _ => Block::Other,
                };
                self.blocks.insert(index, started);
            }
            "content_block_delta" => {
                let index = data["index"].as_u64().unwrap_or(0);
                let delta = &data["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        if let Some(text) = delta["text"].as_str().filter(|t| !t.is_empty()) {
                            self.content.push_str(text);
                            deltas.push(Delta::text(text));
                        }
                    }
                    Some("thinking_delta") => {
                        if let Some(text) = delta["thinking"].as_str().filter(|t| !t.is_empty()) {
                            self.thinking.push_str(text);
                            deltas.push(Delta::thinking(text));
                        }
                    }
                    Some("input_json_delta") => {
                        let fragment = delta["partial_json"].as_str().unwrap_or_default();
                        if !self.blocks.contains_key(&index) {
                            // A fragment for a block that never started: keep it anyway.
                            let ordinal = self.tool_count;
                            self.tool_count += 1;
                            self.blocks.insert(
                                index,
                                Block::ToolUse {
                                    ordinal,
                                    id: String::new(),
                                    name: String::new(),
                                    json: String::new(),
                                },
                            );
                        }
                        if let Some(Block::ToolUse { ordinal, json, .. }) =
                            self.blocks.get_mut(&index)
                        {
                            if !fragment.is_empty() {
                                json.push_str(fragment);
                                deltas.push(Delta::tool_call(*ordinal, None, None, fragment));
                            }
                        }
                    }
                    // signature_delta, citations_delta and newer kinds carry no answer text.
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = data["delta"]["stop_reason"].as_str() {
                    self.stop_reason = Some(finish_reason(reason));
                }
                merge_usage(&mut self.usage, &data["usage"]);
            }
            "message_stop" => self.done = true,
            "error" => {
                let error = data.get("error").filter(|e| !e.is_null()).unwrap_or(data);
                return Err(http::stream_error_object(error));
            }
            "ping" | "content_block_stop" => {}
            other => tracing::trace!(event = other, "ignoring an unknown Anthropic event"),
        }
        Ok(deltas)
    }
}

impl StreamDecoder for AnthropicStreamState {
    fn feed(&mut self, event: &str, data: &str) -> Result<Vec<Delta>, RuntimeError> {
        if self.done || data.trim().is_empty() {
            return Ok(Vec::new());
        }
        let value: Value = serde_json::from_str(data).map_err(|error| {
            RuntimeError::unavailable(format!(
                "the stream sent an event that is not JSON ({error}): {}",
                http::truncate(data, 256)
            ))
            .with_metadata(json!({ "during": "stream" }))
        })?;
        self.feed_event(event, &value)
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn finish(&mut self) -> Result<TurnOutput, RuntimeError> {
        if !self.done {
            return Err(RuntimeError::unavailable(
                "the stream ended without `message_stop`: the answer is truncated",
            )
            .with_metadata(json!({ "during": "stream", "truncated": true })));
        }
        let mut calls: Vec<(usize, ToolCall)> = std::mem::take(&mut self.blocks)
            .into_values()
            .filter_map(|block| match block {
                Block::ToolUse {
                    ordinal,
                    id,
                    name,
                    json,
                } => Some((ordinal, ToolCall::new(id, name, parse_arguments(&json)))),
                _ => None,
            })
            .collect();
        calls.sort_by_key(|(ordinal, _)| *ordinal);
        let mut output = TurnOutput::new(std::mem::take(&mut self.content))
            .with_tool_calls(calls.into_iter().map(|(_, call)| call).collect())
            .with_usage(self.usage)
            .with_finish_reason(self.stop_reason.clone().unwrap_or_default());
        output.metadata = sse::output_metadata(
            std::mem::take(&mut self.metadata),
            std::mem::take(&mut self.thinking),
        );
        Ok(output)
    }
}

#[cfg(test)]
mod tests {
    use runtime_api::{DeltaKind, ErrorKind, StreamItem};

    use super::*;
    use openai_wire::sse::replay;

    fn done(items: &[Result<StreamItem, RuntimeError>]) -> &TurnOutput {
        match items.last() {
            Some(Ok(StreamItem::Done(output))) => output,
            other => panic!("the stream did not end with Done: {other:?}"),
        }
    }

    fn deltas(items: &[Result<StreamItem, RuntimeError>]) -> Vec<&Delta> {
        items
            .iter()
            .filter_map(|i| match i {
                Ok(StreamItem::Delta(d)) => Some(d),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_recorded_stream_with_thinking_text_tools_ping_and_usage() {
        let sse: &[&[u8]] = &[
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
            b"event: ping\ndata: {\"type\": \"ping\"}\n\n",
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Let me see.\"}}\n\n",
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"abc\"}}\n\n",
            b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            b"event: content_block_start\r\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\r\n\r\n",
            b"event: content_block_delta\ndata:{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Checking \xe2\x80",
            b"\x94 \"}}\n\n",
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \\\"Par\"}}\n\n",
            b": a comment\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"is\\\"}\"}}\n\n",
            b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}\n\n",
            b"event: brand_new_event\ndata: {\"type\":\"brand_new_event\"}\n\n",
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}\n\n",
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ];
        let items = replay(sse, AnthropicStreamState::new()).await;
        let deltas = deltas(&items);
        let kinds: Vec<DeltaKind> = deltas.iter().map(|d| d.kind).collect();
        assert_eq!(
            kinds,
            [
                DeltaKind::Thinking,
                DeltaKind::Text,
                DeltaKind::ToolCall,
                DeltaKind::ToolCall,
                DeltaKind::ToolCall
            ]
        );
        assert_eq!(deltas[2].metadata["name"], "get_weather");
        assert_eq!(deltas[2].metadata["index"], 0);
        assert!(deltas[3].metadata.get("name").is_none());
        let output = done(&items);
        assert_eq!(output.content, "Checking — ");
        assert_eq!(output.finish_reason, FinishReason::ToolCalls);
        assert_eq!(output.tool_calls.len(), 1);
        assert_eq!(output.tool_calls[0].id, "toolu_1");
        assert_eq!(output.tool_calls[0].arguments, json!({ "city": "Paris" }));
        assert_eq!(output.usage, Usage::new(25, 42));
        assert_eq!(output.metadata["thinking"], "Let me see.");
        assert_eq!(output.metadata["id"], "msg_1");
    }

    #[tokio::test]
    async fn two_tool_calls_are_numbered_by_call_not_by_block() {
        let sse: &[&[u8]] = &[
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3}}}\n\n",
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"a\",\"name\":\"one\",\"input\":{}}}\n\n",
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"b\",\"name\":\"two\",\"input\":{\"whole\":true}}}\n\n",
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":9}}\n\n",
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ];
        let items = replay(sse, AnthropicStreamState::new()).await;
        let output = done(&items);
        let names: Vec<&str> = output.tool_calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["one", "two"]);
        assert_eq!(output.tool_calls[0].arguments, json!({}));
        assert_eq!(output.tool_calls[1].arguments, json!({ "whole": true }));
        let indexes: Vec<u64> = deltas(&items)
            .iter()
            .map(|d| d.metadata["index"].as_u64().unwrap())
            .collect();
        assert_eq!(indexes, [0, 1]);
    }

    #[tokio::test]
    async fn overloaded_error_mid_stream_is_a_retriable_error() {
        let sse: &[&[u8]] = &[
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3}}}\n\n",
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            b"event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n",
        ];
        let items = replay(sse, AnthropicStreamState::new()).await;
        let Some(Err(error)) = items.last() else {
            panic!("{items:?}")
        };
        assert_eq!(error.kind, ErrorKind::Unavailable);
        assert!(error.retriable);
        assert!(error.message.contains("Overloaded"));
        assert_eq!(error.metadata["type"], "overloaded_error");
    }

    #[tokio::test]
    async fn llama_cpp_error_events_are_errors_too() {
        let sse: &[&[u8]] =
            &[b"event: error\ndata: {\"code\":500,\"message\":\"boom\",\"type\":\"server_error\"}\n\n"];
        let items = replay(sse, AnthropicStreamState::new()).await;
        let Some(Err(error)) = items.last() else {
            panic!("{items:?}")
        };
        assert!(error.message.contains("boom"));
        assert_eq!(error.metadata["status"], 500);
    }

    #[tokio::test]
    async fn a_stream_without_message_stop_is_truncated() {
        let sse: &[&[u8]] = &[
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n",
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}\n\n",
        ];
        let items = replay(sse, AnthropicStreamState::new()).await;
        let Some(Err(error)) = items.last() else {
            panic!("{items:?}")
        };
        assert!(error.message.contains("message_stop"));
        assert_eq!(error.metadata["truncated"], true);
    }
}
