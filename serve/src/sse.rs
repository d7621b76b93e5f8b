//! A streamed turn as OpenAI's server-sent events: a first chunk with the role, a chunk per
//! text, reasoning or tool-call delta, a chunk with the finish reason, the usage chunk when
//! `stream_options.include_usage` is set, then `data: [DONE]`.
//!
//! The event stream owns the turn: when the client disconnects, hyper drops the response
//! body, which drops the turn, which cancels it inside the plugin. An error after the first
//! chunk arrives as `data: {"error": {...}}` (what OpenAI's SDKs raise on), then `[DONE]`.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::Event;
use futures::{Stream, StreamExt};
use runtime_api::{DeltaKind, RuntimeError, StreamItem, TurnOutput};
use serde::Serialize;

use crate::backend::{Running, TurnItems};
use crate::error::ApiError;
use crate::metrics::{self, Outcome};
use crate::translate::{arguments_text, finish_reason, usage};
use crate::wire::{ChatChunk, ChunkChoice, ChunkDelta, ChunkFunction, ChunkToolCall};

/// What every chunk of one response shares.
#[derive(Debug)]
pub struct ChunkContext {
    /// `chatcmpl-<execution id>`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The model as the client named it.
    pub model: String,
    /// The runtime's id.
    pub runtime: String,
    /// Send the usage chunk.
    pub include_usage: bool,
}

struct State {
    turn: TurnItems,
    context: ChunkContext,
    running: Running,
    pending: VecDeque<Event>,
    saw_text: bool,
    saw_tool_calls: bool,
    finished: bool,
}

fn data(value: &impl Serialize) -> Event {
    match serde_json::to_string(value) {
        Ok(text) => Event::default().data(text),
        Err(error) => {
            tracing::error!(%error, "a chunk could not be serialised");
            Event::default().comment("unserialisable chunk")
        }
    }
}

impl State {
    fn chunk(&self, delta: ChunkDelta, finish: Option<&'static str>) -> Event {
        data(&ChatChunk {
            id: &self.context.id,
            object: "chat.completion.chunk",
            created: self.context.created,
            model: &self.context.model,
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish,
                logprobs: None,
            }],
            usage: None,
        })
    }

    fn push(&mut self, delta: ChunkDelta) {
        let event = self.chunk(delta, None);
        self.pending.push_back(event);
    }

    fn on_item(&mut self, item: Option<Result<StreamItem, RuntimeError>>) {
        match item {
            Some(Ok(StreamItem::Delta(delta))) => match delta.kind {
                DeltaKind::Text => {
                    self.saw_text = true;
                    self.push(ChunkDelta {
                        content: Some(delta.content),
                        ..ChunkDelta::default()
                    });
                }
                DeltaKind::Thinking => self.push(ChunkDelta {
                    reasoning_content: Some(delta.content),
                    ..ChunkDelta::default()
                }),
                DeltaKind::ToolCall => {
                    self.saw_tool_calls = true;
                    let meta = &delta.metadata;
                    let id = meta["id"].as_str().map(str::to_owned);
                    let call = ChunkToolCall {
                        index: meta["index"].as_u64().unwrap_or(0),
                        kind: id.is_some().then_some("function"),
                        id,
                        function: ChunkFunction {
                            name: meta["name"].as_str().map(str::to_owned),
                            arguments: delta.content,
                        },
                    };
                    self.push(ChunkDelta {
                        tool_calls: vec![call],
                        ..ChunkDelta::default()
                    });
                }
                DeltaKind::Error => tracing::warn!(
                    runtime = %self.context.runtime,
                    message = %delta.content.escape_debug(),
                    "the runtime reported a non-fatal error"
                ),
                _ => {}
            },
            Some(Ok(StreamItem::Done(output))) => self.on_done(output),
            Some(Ok(_)) => {}
            Some(Err(error)) => self.on_error(error),
            None => self.on_error(RuntimeError::internal(
                "the runtime's stream ended without a final result",
            )),
        }
    }

    fn on_done(&mut self, output: TurnOutput) {
        if !self.saw_text && !output.content.is_empty() {
            self.push(ChunkDelta {
                content: Some(output.content.clone()),
                ..ChunkDelta::default()
            });
        }
        if !self.saw_tool_calls && !output.tool_calls.is_empty() {
            let calls = output
                .tool_calls
                .iter()
                .enumerate()
                .map(|(index, call)| ChunkToolCall {
                    index: index as u64,
                    id: Some(call.id.clone()),
                    kind: Some("function"),
                    function: ChunkFunction {
                        name: Some(call.name.clone()),
                        arguments: arguments_text(&call.arguments),
                    },
                })
                .collect();
            self.push(ChunkDelta {
                tool_calls: calls,
                ..ChunkDelta::default()
            });
        }
        let has_tools = self.saw_tool_calls || !output.tool_calls.is_empty();
        let finish = self.chunk(
            ChunkDelta::default(),
            Some(finish_reason(&output.finish_reason, has_tools)),
        );
        self.pending.push_back(finish);
        if self.context.include_usage {
            self.pending.push_back(data(&ChatChunk {
                id: &self.context.id,
                object: "chat.completion.chunk",
                created: self.context.created,
                model: &self.context.model,
                choices: Vec::new(),
                usage: Some(usage(&output.usage)),
            }));
        }
        self.end(Outcome::Ok);
    }

    fn on_error(&mut self, error: RuntimeError) {
        let error = ApiError::Runtime {
            runtime: self.context.runtime.clone(),
            error,
        };
        tracing::warn!(runtime = %self.context.runtime, "streamed turn failed: {}", error.to_string().escape_debug());
        metrics::error(&error.metric_kind());
        self.pending.push_back(data(&error.public_body().0));
        self.end(Outcome::Error);
    }

    fn end(&mut self, outcome: Outcome) {
        self.running.finish(outcome);
        self.pending.push_back(Event::default().data("[DONE]"));
        self.finished = true;
    }
}

/// The events of a streamed turn whose first item was already taken (to answer an early
/// error with a status code instead of a stream).
pub fn events(
    first: StreamItem,
    turn: TurnItems,
    context: ChunkContext,
    running: Running,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let mut state = State {
        turn,
        context,
        running,
        pending: VecDeque::new(),
        saw_text: false,
        saw_tool_calls: false,
        finished: false,
    };
    state.push(ChunkDelta {
        role: Some("assistant"),
        content: Some(String::new()),
        ..ChunkDelta::default()
    });
    state.on_item(Some(Ok(first)));
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.pending.pop_front() {
                return Some((Ok(event), state));
            }
            if state.finished {
                return None;
            }
            let item = state.turn.next().await;
            state.on_item(item);
        }
    })
}
