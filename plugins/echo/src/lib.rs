//! `echo`, the deterministic reference runtime: answers with the prompt, streams it word by
//! word, and counts whitespace-separated words as tokens. Config: `delay_ms` sleeps per turn
//! (per delta when streaming) on the plugin's tokio runtime.
//!
//! Its configuration is typed ([`Config`]): the schema in the manifest (`config.schema.json`,
//! which the crate's tests keep current), `validate_config` and the value `new` gets all
//! follow from that one type.
//!
//! Copy it to start a runtime. (The tests' faults on demand live in the fixture plugin,
//! `tests/fixtures/fixture-plugin`, not here.)

#![forbid(unsafe_code)]

use std::{sync::Arc, time::Duration};

use futures::{Stream, StreamExt, stream};
use runtime_api::config::TypedConfig;
use runtime_api::{Capabilities, Delta, Runtime, RuntimeError, StreamItem};
use runtime_api::{TurnOutput, TurnRequest, Usage};

/// The configuration of the echo runtime; every key is optional (`null` is all defaults).
#[derive(Debug, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(title = "echo runtime configuration")]
pub struct Config {
    /// Sleep this long per turn, and per delta when streaming.
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

/// The text cut after each run of whitespace: "a  b c" → "a  ", "b ", "c". Cut as the
/// stream is read, so a long prompt is not copied into pieces all at once.
#[derive(Debug)]
struct Pieces {
    text: String,
    at: usize,
}

impl Iterator for Pieces {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let rest = self.text.get(self.at..).filter(|rest| !rest.is_empty())?;
        let word = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let end = rest[word..]
            .find(|c: char| !c.is_whitespace())
            .map_or(rest.len(), |spaces| word + spaces);
        self.at += end;
        Some(rest[..end].to_owned())
    }
}

impl TypedConfig for Echo {
    type Config = Config;

    fn from_config(config: Config) -> Result<Self, RuntimeError> {
        Ok(Echo(config))
    }
}

impl Runtime for Echo {
    const ID: &'static str = "echo";
    const DESCRIPTION: &'static str = "Answers with the prompt, streamed word by word.";
    const ALIASES: &'static [&'static str] = &["parrot"];
    const CAPABILITIES: Capabilities =
        Capabilities::STREAMING.with(Capabilities::CONFIG_VALIDATION);
    // CONFIG_SCHEMA, validate_config and new, from `Config`.
    runtime_api::typed_config!("config.schema.json");

    async fn run_turn(&self, request: TurnRequest) -> Result<TurnOutput, RuntimeError> {
        self.pause().await;
        Ok(Self::answer(&request))
    }

    fn stream_turn(
        self: Arc<Self>,
        request: TurnRequest,
    ) -> impl Stream<Item = Result<StreamItem, RuntimeError>> + Send + 'static {
        let done = StreamItem::Done(Self::answer(&request));
        let pieces = Pieces {
            text: request.prompt,
            at: 0,
        };
        if self.0.delay_ms == 0 {
            // Nothing to wait for: every item is ready at once, so a plain iterator serves.
            let deltas = pieces
                .into_iter()
                .map(|piece| Ok(StreamItem::Delta(Delta::text(piece))));
            return stream::iter(deltas.chain(std::iter::once(Ok(done)))).left_stream();
        }
        stream::iter(pieces)
            .then(move |piece| {
                let echo = Arc::clone(&self);
                async move {
                    echo.pause().await;
                    Ok(StreamItem::Delta(Delta::text(piece)))
                }
            })
            .chain(stream::once(async move { Ok(done) }))
            .right_stream()
    }

    async fn health(&self) -> Result<String, RuntimeError> {
        Ok("echoing".to_owned())
    }
}

runtime_api::export_plugin!(Echo);

#[cfg(test)]
mod tests {
    use super::Pieces;

    fn cut(text: &str) -> Vec<String> {
        Pieces {
            text: text.to_owned(),
            at: 0,
        }
        .collect()
    }

    #[test]
    fn pieces_end_after_each_run_of_whitespace() {
        assert_eq!(cut("a  b c"), ["a  ", "b ", "c"]);
        assert_eq!(cut("  a\tb\n"), ["  ", "a\t", "b\n"]);
        assert_eq!(cut("héllo wörld "), ["héllo ", "wörld "]);
        assert!(cut("").is_empty());
        assert_eq!(cut("a  b c").concat(), "a  b c");
    }
}
