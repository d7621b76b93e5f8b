//! One model call: a streamed Chat Completions request to an OpenAI-compatible server, through
//! the client the `openai` runtime uses too (openai-wire): its text and thinking deltas are
//! sent on as they arrive, and the step's result is its text, the tool calls it decided, its
//! usage and finish reason.
//!
//! A stream that ends without `data: [DONE]` is an error (`unavailable`, `truncated: true`),
//! not an answer. HTTP failures map as in the `openai` runtime: 401/403 `authentication`, 429
//! `rate_limited`, 408/504 `timeout`, other 4xx `invalid_request`, 5xx and connection failures
//! `unavailable`.

use std::pin::pin;

use futures::StreamExt as _;
use openai_wire::http::Request;
use openai_wire::{OpenAiStreamState, ServerConfig, sse};
use reqwest::Method;
use reqwest::header::AUTHORIZATION;
use runtime_api::{
    Delta, DeltaKind, FinishReason, RuntimeError, StreamItem, ToolCall, TurnOutput, Usage, Value,
};
use tokio::sync::mpsc;

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
    let mut items = pin!(sse::drive(start, OpenAiStreamState::new()));
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
