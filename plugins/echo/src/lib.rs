//! `echo`, the deterministic reference runtime: answers with the prompt, streams it word by
//! word, and counts whitespace-separated words as tokens. Config: `delay_ms` sleeps per turn
//! (per delta when streaming) on the plugin's tokio runtime.
//!
//! Copy it to start a runtime. (The tests' faults on demand live in the fixture plugin,
//! `tests/fixtures/fixture-plugin`, not here.)

#![forbid(unsafe_code)]

use std::{sync::Arc, time::Duration};

use futures::{Stream, StreamExt, stream};
use runtime_api::{Capabilities, Delta, Runtime, RuntimeError, StreamItem};
use runtime_api::{TurnOutput, TurnRequest, Usage, Value};

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    delay_ms: u64,
}

/// The echo runtime.
#[derive(Debug)]
pub struct Echo(Config);

impl Echo {
    /// Sleeps `delay_ms` (if any) on the plugin's tokio runtime.
    async fn pause(&self) {
        if self.0.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.0.delay_ms)).await;
        }
    }

    fn answer(request: &TurnRequest) -> TurnOutput {
        let words = |text: &String| text.split_whitespace().count() as u64;
        let context = request
            .history
            .iter()
            .map(|m| &m.content)
            .chain(&request.system);
        let input = words(&request.prompt) + context.map(words).sum::<u64>();
        let usage = Usage::new(input, words(&request.prompt));
        TurnOutput::new(request.prompt.clone()).with_usage(usage)
    }
}

/// The text cut after each run of whitespace: "a  b c" → ["a  ", "b ", "c"].
fn pieces(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for piece in text.split_inclusive(char::is_whitespace) {
        match out.last_mut() {
            Some(last) if piece.trim().is_empty() => last.push_str(piece),
            _ => out.push(piece.to_owned()),
        }
    }
    out
}

impl Runtime for Echo {
    const ID: &'static str = "echo";
    const DESCRIPTION: &'static str = "Answers with the prompt, streamed word by word.";
    const ALIASES: &'static [&'static str] = &["parrot"];
    const CAPABILITIES: Capabilities =
        Capabilities::STREAMING.with(Capabilities::CONFIG_VALIDATION);
    const CONFIG_SCHEMA: &'static str = r#"{"type": ["object", "null"], "additionalProperties": false, "properties": {
        "delay_ms": {"type": "integer", "minimum": 0, "default": 0, "description": "sleep this long per turn, and per delta when streaming"}}}"#;

    fn validate_config(config: &Value) -> Vec<String> {
        serde_json::from_value::<Option<Config>>(config.clone())
            .err()
            .map(|e| e.to_string())
            .into_iter()
            .collect()
    }

    fn new(config: Value) -> Result<Self, RuntimeError> {
        let config = serde_json::from_value::<Option<Config>>(config)
            .map_err(|e| RuntimeError::invalid_config(e.to_string()))?;
        Ok(Echo(config.unwrap_or_default()))
    }

    async fn run_turn(&self, request: TurnRequest) -> Result<TurnOutput, RuntimeError> {
        self.pause().await;
        Ok(Self::answer(&request))
    }

    fn stream_turn(
        self: Arc<Self>,
        request: TurnRequest,
    ) -> impl Stream<Item = Result<StreamItem, RuntimeError>> + Send + 'static {
        let done = StreamItem::Done(Self::answer(&request));
        stream::iter(pieces(&request.prompt))
            .then(move |piece| {
                let echo = Arc::clone(&self);
                async move {
                    echo.pause().await;
                    Ok(StreamItem::Delta(Delta::text(piece)))
                }
            })
            .chain(stream::once(async move { Ok(done) }))
    }

    async fn health(&self) -> Result<String, RuntimeError> {
        Ok("echoing".to_owned())
    }
}

runtime_api::export_plugin!(Echo);
