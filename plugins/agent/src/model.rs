//! One model call: a streamed Chat Completions request to an OpenAI-compatible server, through
//! the client the `openai` runtime uses too (openai-wire): its text and thinking deltas are
//! sent on as they arrive, and the step's result is its text, the tool calls it decided, its
//! usage and finish reason.
//!
//! A stream that ends without `data: [DONE]` is an error (`unavailable`, `truncated: true`),
//! not an answer. HTTP failures map as in the `openai` runtime: 401/403 `authentication`, 429
//! `rate_limited`, 408/504 `timeout`, other 4xx `invalid_request`, 5xx and connection failures
//! `unavailable`.
//!
//! A response is bounded ([`ResponseLimits`]): more event bytes than `model_response_max_bytes`
//! is the named error `model_response_too_large`, more tool calls than
//! `max_tool_calls_per_step` is `too_many_tool_calls`; either stops reading at once.

use std::collections::HashSet;
use std::pin::pin;

use futures::StreamExt as _;
use openai_wire::http::Request;
use openai_wire::{OpenAiStreamState, ServerConfig, StreamDecoder, sse};
use reqwest::Method;
use reqwest::header::AUTHORIZATION;
use runtime_api::{
    Delta, DeltaKind, FinishReason, RuntimeError, StreamItem, ToolCall, TurnOutput, Usage, Value,
};
use tokio::sync::mpsc;

use crate::error::AgentError;

/// The bounds of one model response.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResponseLimits {
    /// The most distinct tool calls it may decide.
    pub max_tool_calls: usize,
    /// The most bytes of its events' data.
    pub max_bytes: usize,
    /// The step of the turn, for the errors.
    pub step: u32,
}

/// A decoder that stops a response at its limits: past `max_bytes` of event data, or past
/// `max_tool_calls` distinct tool calls, the response is dropped with a named error, before
/// any call runs and without reading the rest.
struct Limited {
    inner: OpenAiStreamState,
    limits: ResponseLimits,
    bytes: usize,
    calls: HashSet<u64>,
}

impl StreamDecoder for Limited {
    fn feed(&mut self, event: &str, data: &str) -> Result<Vec<Delta>, RuntimeError> {
        self.bytes = self.bytes.saturating_add(event.len() + data.len());
        if self.bytes > self.limits.max_bytes {
            return Err(AgentError::ModelResponseTooLarge {
                max_bytes: self.limits.max_bytes,
                step: self.limits.step,
            }
            .into());
        }
        let deltas = self.inner.feed(event, data)?;
        for delta in &deltas {
            if delta.kind == DeltaKind::ToolCall {
                self.calls
                    .insert(delta.metadata["index"].as_u64().unwrap_or(u64::MAX));
                if self.calls.len() > self.limits.max_tool_calls {
                    return Err(AgentError::TooManyToolCalls {
                        max: self.limits.max_tool_calls,
                        step: self.limits.step,
                    }
                    .into());
                }
            }
        }
        Ok(deltas)
    }

    fn is_done(&self) -> bool {
        self.inner.is_done()
    }

    fn finish(&mut self) -> Result<TurnOutput, RuntimeError> {
        self.inner.finish()
    }
}

/// What one model call decided.
#[derive(Debug, Default)]
pub(crate) struct Step {
    pub content: String,
    pub thinking: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub model: Option<String>,
    /// Whether the `lead` text was sent before this step's first text.
    pub lead_sent: bool,
}

impl Step {
    fn new(output: TurnOutput, lead_sent: bool) -> Step {
        let text = |key: &str| output.metadata[key].as_str().map(str::to_owned);
        Step {
            thinking: text("thinking").unwrap_or_default(),
            model: text("model"),
            content: output.content,
            tool_calls: output.tool_calls,
            finish_reason: output.finish_reason,
            usage: output.usage,
            lead_sent,
        }
    }
}

/// Posts `body` (a streamed Chat Completions request) and decodes the stream; text and
/// thinking deltas go to `deltas` as they arrive, the text preceded by `lead` (a separator
/// from the text of earlier steps) when there is any.
///
/// # Errors
///
/// A [`RuntimeError`] for a transport failure, an HTTP error, an error object in the stream, or
/// a truncated stream.
pub(crate) async fn call(
    client: &reqwest::Client,
    config: &ServerConfig,
    body: &Value,
    deltas: &mpsc::Sender<Delta>,
    mut lead: Option<&str>,
    limits: ResponseLimits,
) -> Result<Step, RuntimeError> {
    let url = format!("{}/chat/completions", config.base_url);
    let mut request =
        Request::new(Method::POST, url, &config.headers).json(body, "text/event-stream")?;
    if let Some(bearer) = config.bearer()? {
        request = request.header(AUTHORIZATION, bearer);
    }
    tracing::debug!(url = %request.url(), model = %body["model"], "calling the model");
    let client = client.clone();
    let start = async move { request.send(&client).await };
    let decoder = Limited {
        inner: OpenAiStreamState::new(),
        limits,
        bytes: 0,
        calls: HashSet::new(),
    };
    let too_large = AgentError::ModelResponseTooLarge {
        max_bytes: limits.max_bytes,
        step: limits.step,
    }
    .into();
    let mut items = pin!(sse::drive_bounded(
        start,
        decoder,
        limits.max_bytes,
        too_large
    ));
    let mut lead_sent = false;
    while let Some(item) = items.next().await {
        let delta = match item? {
            StreamItem::Done(output) => return Ok(Step::new(output, lead_sent)),
            StreamItem::Delta(delta) => delta,
            _ => continue,
        };
        match delta.kind {
            DeltaKind::Text => {
                if let Some(lead) = lead.take() {
                    lead_sent = true;
                    let _ = deltas.send(Delta::text(lead)).await;
                }
                let _ = deltas.send(delta).await;
            }
            DeltaKind::Thinking => {
                let _ = deltas.send(delta).await;
            }
            // Tool calls are streamed whole by the loop, once decided.
            _ => {}
        }
    }
    Err(RuntimeError::internal(
        "the model's stream ended without a result",
    ))
}
