//! A streamed Chat Completion, decoded chunk by chunk.

use std::collections::BTreeMap;

use runtime_api::{Delta, FinishReason, RuntimeError, ToolCall, TurnOutput, Usage, Value, json};

use super::response::{finish_reason, response_metadata, usage};
use crate::http;
use crate::sse::{self, StreamDecoder};
use crate::tools::parse_arguments;

/// A tool call being assembled from stream fragments.
#[derive(Debug, Default, Clone)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// The accumulator of a streamed Chat Completion: fed each chunk's JSON, it yields the deltas
/// and assembles the final [`TurnOutput`].
///
/// - text: `choices[0].delta.content`, appended and yielded as it comes;
/// - thinking: `delta.reasoning_content` (or `reasoning`);
/// - tool calls: fragments keyed by their `index`; `arguments` is appended, `id` and `name`
///   are set once and never appended (some servers repeat them in every chunk), and each is
///   announced once in a delta's metadata. A fragment without an `index` continues the last
///   call unless it brings a new id;
/// - usage: from whichever chunk carries a `usage` object (a trailing chunk with
///   `choices: []`, or the finish chunk); the last one wins;
/// - `choices: null` or absent is an empty list; an `error` object is a failed turn;
/// - complete only after `data: [DONE]`: a body that ends before it is a truncated turn.
#[derive(Debug, Default)]
pub struct OpenAiStreamState {
    content: String,
    thinking: String,
    calls: BTreeMap<usize, PartialCall>,
    usage: Option<Usage>,
    finish_reason: Option<FinishReason>,
    metadata: Value,
    done: bool,
}

impl OpenAiStreamState {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk (the JSON of one `data:` line).
    ///
    /// # Errors
    ///
    /// When the chunk is an error object.
    pub fn feed_chunk(&mut self, chunk: &Value) -> Result<Vec<Delta>, RuntimeError> {
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            return Err(http::stream_error_object(error));
        }
        if self.metadata.is_null() {
            self.metadata = response_metadata(chunk, "");
        }
        if chunk["usage"].is_object() {
            self.usage = Some(usage(&chunk["usage"]));
        }
        let mut deltas = Vec::new();
        let choices = chunk["choices"].as_array().map_or(&[][..], Vec::as_slice);
        for choice in choices {
            if choice["index"].as_u64().is_some_and(|i| i != 0) {
                continue; // only the first choice is a turn's answer
            }
            let delta = &choice["delta"];
            let reasoning = delta["reasoning_content"]
                .as_str()
                .or_else(|| delta["reasoning"].as_str());
            if let Some(text) = reasoning.filter(|t| !t.is_empty()) {
                self.thinking.push_str(text);
                deltas.push(Delta::thinking(text));
            }
            if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
                self.content.push_str(text);
                deltas.push(Delta::text(text));
            }
            if let Some(calls) = delta["tool_calls"].as_array() {
                for call in calls {
                    if let Some(delta) = self.feed_tool_call(call) {
                        deltas.push(delta);
                    }
                }
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                self.finish_reason = Some(finish_reason(reason));
            }
        }
        Ok(deltas)
    }

    fn feed_tool_call(&mut self, call: &Value) -> Option<Delta> {
        let id = call["id"].as_str().filter(|s| !s.is_empty());
        let index = match call["index"].as_u64().and_then(|i| usize::try_from(i).ok()) {
            Some(index) => index,
            None => {
                let last = self.calls.keys().next_back().copied();
                let is_new = id.is_some_and(|id| !self.calls.values().any(|c| c.id == id));
                match last {
                    Some(last) if !is_new => last,
                    Some(last) => last + 1,
                    None => 0,
                }
            }
        };
        let entry = self.calls.entry(index).or_default();
        let mut new_id = None;
        if let Some(id) = id {
            if entry.id.is_empty() {
                entry.id = id.to_owned();
                new_id = Some(id);
            }
        }
        let function = &call["function"];
        let mut new_name = None;
        if let Some(name) = function["name"].as_str().filter(|s| !s.is_empty()) {
            if entry.name.is_empty() {
                entry.name = name.to_owned();
                new_name = Some(name);
            }
        }
        let fragment = match &function["arguments"] {
            Value::String(text) => text.clone(),
            // Some servers send whole arguments as an object.
            Value::Object(_) if entry.arguments.is_empty() => function["arguments"].to_string(),
            _ => String::new(),
        };
        entry.arguments.push_str(&fragment);
        if new_id.is_none() && new_name.is_none() && fragment.is_empty() {
            return None;
        }
        Some(Delta::tool_call(index, new_id, new_name, fragment))
    }
}

impl StreamDecoder for OpenAiStreamState {
    fn feed(&mut self, _event: &str, data: &str) -> Result<Vec<Delta>, RuntimeError> {
        if self.done {
            return Ok(Vec::new());
        }
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(Vec::new());
        }
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let chunk: Value = serde_json::from_str(data).map_err(|error| {
            RuntimeError::unavailable(format!(
                "the stream sent a chunk that is not JSON ({error}): {}",
                http::truncate(data, 256)
            ))
            .with_metadata(json!({ "during": "stream" }))
        })?;
        self.feed_chunk(&chunk)
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn finish(&mut self) -> Result<TurnOutput, RuntimeError> {
        if !self.done {
            return Err(RuntimeError::unavailable(
                "the stream ended without `data: [DONE]`: the answer is truncated",
            )
            .with_metadata(json!({ "during": "stream", "truncated": true })));
        }
        let tool_calls = std::mem::take(&mut self.calls)
            .into_iter()
            .map(|(index, call)| {
                let id = if call.id.is_empty() {
                    format!("call_{index}")
                } else {
                    call.id
                };
                ToolCall::new(id, call.name, parse_arguments(&call.arguments))
            })
            .collect();
        let mut output = TurnOutput::new(std::mem::take(&mut self.content))
            .with_tool_calls(tool_calls)
            .with_usage(self.usage.unwrap_or_default())
            .with_finish_reason(self.finish_reason.clone().unwrap_or_default());
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
    use crate::sse::replay;

    fn text_of(items: &[Result<StreamItem, RuntimeError>]) -> String {
        items
            .iter()
            .filter_map(|i| match i {
                Ok(StreamItem::Delta(d)) if d.kind == DeltaKind::Text => Some(d.content.as_str()),
                _ => None,
            })
            .collect()
    }

    fn done(items: &[Result<StreamItem, RuntimeError>]) -> &TurnOutput {
        match items.last() {
            Some(Ok(StreamItem::Done(output))) => output,
            other => panic!("the stream did not end with Done: {other:?}"),
        }
    }

    #[tokio::test]
    async fn text_streams_with_usage_from_the_trailing_chunk() {
        let sse: &[&[u8]] = &[
            b"data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":null}]}\n\n",
            b"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n",
            b"data: [DONE]\n\n",
        ];
        let items = replay(sse, OpenAiStreamState::new()).await;
        assert_eq!(text_of(&items), "Hello");
        let output = done(&items);
        assert_eq!(output.content, "Hello");
        assert_eq!(output.finish_reason, FinishReason::Stop);
        assert_eq!(output.usage, Usage::new(5, 2));
        assert_eq!(output.metadata["model"], "m");
    }

    #[tokio::test]
    async fn crlf_no_space_comments_multiline_and_split_utf8() {
        let sse: &[&[u8]] = &[
            b": keep-alive\r\n\r\n",
            b"data:{\"choices\":[{\"delta\":{\"content\":\"caf\xc3",
            b"\xa9 \"}}]}\r\n\r\n",
            // One JSON document spread over two `data:` lines (joined with a newline).
            b"data: {\"choices\":[{\"delta\":\ndata: {\"content\":\"ok\"},\"finish_reason\":\"stop\"}],\r\n",
            b"data: \"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\r\n\r\n",
            b"data: [DONE]\r",
            b"\n\r\n",
        ];
        let items = replay(sse, OpenAiStreamState::new()).await;
        assert_eq!(text_of(&items), "café ok");
        let output = done(&items);
        assert_eq!(output.content, "café ok");
        // Usage from the finish chunk; the total is computed when absent.
        assert_eq!(output.usage.total_tokens, 3);
    }

    #[tokio::test]
    async fn choices_null_and_missing_are_empty() {
        let sse: &[&[u8]] = &[
            b"data: {\"choices\":null}\n\n",
            b"data: {\"object\":\"chat.completion.chunk\"}\n\n",
            b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"},\"finish_reason\":\"length\"}]}\n\n",
            b"data: [DONE]\n\n",
        ];
        let items = replay(sse, OpenAiStreamState::new()).await;
        let output = done(&items);
        assert_eq!(output.content, "x");
        assert_eq!(output.finish_reason, FinishReason::Length);
        assert!(output.usage.is_empty());
    }

    #[tokio::test]
    async fn tool_call_fragments_assemble_by_index_with_ids_and_names_set_once() {
        let sse: &[&[u8]] = &[
            // Two parallel calls, interleaved; the server repeats id and name in every chunk.
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}}]}\n\n",
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"{\\\"tz\\\"\"}}]}}]}\n\n",
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\"}}]}}]}\n\n",
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"function\":{\"name\":\"get_weather\",\"arguments\":\" \\\"Paris\\\"}\"}}]}}]}\n\n",
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\": \\\"UTC\\\"}\"}}]}}]}\n\n",
            b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            b"data: [DONE]\n\n",
        ];
        let items = replay(sse, OpenAiStreamState::new()).await;
        let deltas: Vec<&Delta> = items
            .iter()
            .filter_map(|i| match i {
                Ok(StreamItem::Delta(d)) => Some(d),
                _ => None,
            })
            .collect();
        assert!(deltas.iter().all(|d| d.kind == DeltaKind::ToolCall));
        // id and name announced exactly once per call, in its first delta.
        let announced: Vec<(u64, &str)> = deltas
            .iter()
            .filter_map(|d| Some((d.metadata["index"].as_u64()?, d.metadata["name"].as_str()?)))
            .collect();
        assert_eq!(announced, [(0, "get_weather"), (1, "get_time")]);
        assert_eq!(
            deltas
                .iter()
                .filter(|d| d.metadata.get("id").is_some())
                .count(),
            2
        );
        let output = done(&items);
        assert_eq!(output.finish_reason, FinishReason::ToolCalls);
        assert_eq!(output.tool_calls.len(), 2);
        assert_eq!(output.tool_calls[0].id, "call_a");
        assert_eq!(output.tool_calls[0].name, "get_weather");
        assert_eq!(output.tool_calls[0].arguments, json!({ "city": "Paris" }));
        assert_eq!(output.tool_calls[1].name, "get_time");
        assert_eq!(output.tool_calls[1].arguments, json!({ "tz": "UTC" }));
        assert_eq!(output.content, "");
    }

    #[tokio::test]
    async fn whole_tool_calls_in_one_chunk_and_missing_indexes() {
        let sse: &[&[u8]] = &[
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[",
            b"{\"id\":\"a\",\"function\":{\"name\":\"one\",\"arguments\":\"{}\"}},",
            b"{\"id\":\"b\",\"function\":{\"name\":\"two\",\"arguments\":{\"x\":1}}}",
            b"]},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n",
        ];
        let items = replay(sse, OpenAiStreamState::new()).await;
        let output = done(&items);
        let names: Vec<&str> = output.tool_calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["one", "two"]);
        assert_eq!(output.tool_calls[0].arguments, json!({}));
        assert_eq!(output.tool_calls[1].arguments, json!({ "x": 1 }));
    }

    #[tokio::test]
    async fn invalid_arguments_arrive_as_a_string() {
        let sse: &[&[u8]] = &[
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"f\",\"arguments\":\"{oops\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
            b"data: [DONE]\n\n",
        ];
        let items = replay(sse, OpenAiStreamState::new()).await;
        let output = done(&items);
        assert_eq!(output.tool_calls[0].arguments, json!("{oops"));
        assert_eq!(output.tool_calls[0].id, "call_0");
    }

    #[tokio::test]
    async fn reasoning_content_is_thinking() {
        let sse: &[&[u8]] = &[
            b"data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"hmm\"}}]}\n\n",
            b"data: {\"choices\":[{\"delta\":{\"content\":\"42\"},\"finish_reason\":\"stop\"}]}\n\n",
            b"data: [DONE]\n\n",
        ];
        let items = replay(sse, OpenAiStreamState::new()).await;
        let Ok(StreamItem::Delta(first)) = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(first.kind, DeltaKind::Thinking);
        assert_eq!(text_of(&items), "42");
        assert_eq!(done(&items).metadata["thinking"], "hmm");
    }

    #[tokio::test]
    async fn an_error_object_mid_stream_is_an_error() {
        let sse: &[&[u8]] = &[
            b"data: {\"choices\":[{\"delta\":{\"content\":\"par\"}}]}\n\n",
            b"data: {\"error\":{\"code\":500,\"message\":\"Failed to parse input\",\"type\":\"server_error\"}}\n\n",
        ];
        let items = replay(sse, OpenAiStreamState::new()).await;
        assert_eq!(text_of(&items), "par");
        let Some(Err(error)) = items.last() else {
            panic!("{items:?}")
        };
        assert_eq!(error.kind, ErrorKind::Unavailable);
        assert!(error.message.contains("Failed to parse input"));
        assert_eq!(error.metadata["status"], 500);
    }

    #[tokio::test]
    async fn a_stream_without_done_is_truncated_not_finished() {
        let sse: &[&[u8]] = &[
            b"data: {\"choices\":[{\"delta\":{\"content\":\"half\"},\"finish_reason\":\"stop\"}]}\n\n",
        ];
        let items = replay(sse, OpenAiStreamState::new()).await;
        let Some(Err(error)) = items.last() else {
            panic!("{items:?}")
        };
        assert_eq!(error.kind, ErrorKind::Unavailable);
        assert_eq!(error.metadata["truncated"], true);
        assert!(error.message.contains("[DONE]"));
    }

    #[tokio::test]
    async fn a_chunk_that_is_not_json_is_an_error() {
        let items = replay(&[b"data: {nope\n\n"], OpenAiStreamState::new()).await;
        assert!(matches!(items.last(), Some(Err(e)) if e.message.contains("not JSON")));
    }
}
