//! `echo`, the deterministic reference runtime: answers with the prompt, streams it word by
//! word, and counts whitespace-separated words as tokens. Config: `delay_ms` sleeps per turn
//! (per delta when streaming) on the plugin's tokio runtime; for tests, `fail_with` (an error
//! kind) fails every turn and `panic_in` panics in `factory`, `run_turn`, `stream`, `cancel`,
//! `validate_config`, `health` or `drop`.

#![forbid(unsafe_code)]

use std::{sync::Arc, time::Duration};

use futures::{Stream, StreamExt, stream};
use runtime_api::{Capabilities, Delta, ErrorKind, Runtime, RuntimeError, StreamItem};
use runtime_api::{TurnOutput, TurnRequest, Usage, Value};

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    delay_ms: u64,
    fail_with: Option<String>,
    panic_in: Option<String>,
}

/// The echo runtime.
#[derive(Debug)]
pub struct Echo(Config);

impl Echo {
    /// Panics, or fails, where the config says so.
    fn obey(&self, entry: &str) -> Result<(), RuntimeError> {
        if self.0.panic_in.as_deref() == Some(entry) {
            panic!("echo was told to panic in {entry}");
        }
        let fail = |kind: &String| RuntimeError::new(ErrorKind::from(kind.clone()), "told to fail");
        self.0.fail_with.as_ref().map(fail).map_or(Ok(()), Err)
    }

    /// Sleeps `delay_ms` (if any) on the plugin's tokio runtime, then obeys.
    async fn step(&self, entry: &str) -> Result<(), RuntimeError> {
        if self.0.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.0.delay_ms)).await;
        }
        self.obey(entry)
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
        "delay_ms": {"type": "integer", "minimum": 0, "default": 0, "description": "sleep this long per turn, and per delta when streaming"},
        "fail_with": {"type": "string", "description": "tests: fail every turn with this error kind"},
        "panic_in": {"type": "string", "description": "tests: panic in factory, run_turn, stream, cancel, validate_config, health or drop"}}}"#;

    fn validate_config(config: &Value) -> Vec<String> {
        let parsed = serde_json::from_value::<Option<Config>>(config.clone());
        if let Ok(Some(Config {
            panic_in: Some(entry),
            ..
        })) = &parsed
        {
            if entry == "validate_config" {
                panic!("echo was told to panic in validate_config");
            }
        }
        parsed.err().map(|e| e.to_string()).into_iter().collect()
    }

    fn new(config: Value) -> Result<Self, RuntimeError> {
        let config = serde_json::from_value::<Option<Config>>(config)
            .map_err(|e| RuntimeError::invalid_config(e.to_string()))?;
        let echo = Echo(config.unwrap_or_default());
        let _ = echo.obey("factory");
        Ok(echo)
    }

    async fn run_turn(&self, request: TurnRequest) -> Result<TurnOutput, RuntimeError> {
        self.step("run_turn").await.map(|()| Self::answer(&request))
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
                    echo.step("stream")
                        .await
                        .map(|()| StreamItem::Delta(Delta::text(piece)))
                }
            })
            .chain(stream::once(async move { Ok(done) }))
    }

    fn cancel(&self, _execution_id: &str) -> bool {
        self.obey("cancel").is_err()
    }

    async fn health(&self) -> Result<String, RuntimeError> {
        self.obey("health").map(|()| "echoing".to_owned())
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.obey("drop");
    }
}

runtime_api::export_plugin!(Echo);
