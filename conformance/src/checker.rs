//! The checks themselves, one method each, run against a resolved handle through the public
//! host API only, each bounded in time.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;
use runtime_api::{
    Capabilities, DeltaKind, ErrorKind, RuntimeError, StreamItem, ToolDefinition, TurnRequest,
    Value, json,
};
use runtime_loader::RuntimeHandle;

use crate::Declared;
use crate::report::{Check, Options, Verdict};

/// Runs one check within the time limit.
pub(crate) async fn bounded(
    runtime: &str,
    name: &'static str,
    limit: Duration,
    check: impl Future<Output = Verdict>,
) -> Check {
    let started = Instant::now();
    let verdict = tokio::time::timeout(limit, check)
        .await
        .unwrap_or_else(|_| Verdict::fail(format!("did not finish within {limit:?}")));
    tracing::debug!(
        runtime,
        check = name,
        verdict = verdict.label(),
        "conformance check"
    );
    Check {
        runtime: Some(runtime.to_owned()),
        name,
        verdict,
        elapsed: Instant::now().saturating_duration_since(started),
    }
}

fn describe(error: &RuntimeError) -> String {
    format!("({}) {}", error.kind, error.message)
}

/// The prompt of the streaming check: several lines and words, and text beyond ASCII.
const STREAM_PROMPT: &str =
    "Count from one to five in words, one per line.\nOne two three: héllo, 世界 👋🏽\n";

/// The prompt of the Unicode check: accents, CJK, right-to-left text, combining marks, emoji
/// sequences, a tab and a newline.
const UNICODE_PROMPT: &str =
    "Réponds: 你好, мир, שָׁלוֹם, مرحبا, e\u{301}, 👩🏽\u{200d}💻 ∑ x² ≠ ∞\tend\nℵ₀ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢";

struct Checker<'a> {
    handle: &'a RuntimeHandle,
    options: &'a Options,
}

impl Checker<'_> {
    fn request(&self, prompt: impl Into<String>) -> TurnRequest {
        TurnRequest::new(prompt)
            .with_max_tokens(self.options.max_tokens)
            .with_temperature(0.0)
    }

    fn declares(&self, capability: Capabilities) -> bool {
        self.handle.capabilities().contains(capability)
    }

    /// A plain turn that must answer: after a cancel, a drop or a timeout, the runtime still
    /// serves turns.
    async fn next_turn_answers(&self, after: &str) -> Result<(), String> {
        self.handle
            .run_turn(self.request("Are you still there?"))
            .await
            .map(drop)
            .map_err(|e| format!("{after}, the next turn failed {}", describe(&e)))
    }

    async fn info(&self, declared: Option<Declared<'_>>) -> Verdict {
        let handle = self.handle.clone();
        let info = match off_thread(move || handle.info()).await {
            Ok(Ok(info)) => info,
            Ok(Err(error)) => return Verdict::fail(format!("`info` failed {}", describe(&error))),
            Err(reason) => return Verdict::fail(reason),
        };
        let mut differences = Vec::new();
        let mut compare = |what: &str, said: &str, declared: &str| {
            if said != declared {
                differences.push(format!(
                    "{what}: `info` says {said:?}, the manifest {declared:?}"
                ));
            }
        };
        compare("id", &info.id, self.handle.id());
        compare(
            "capabilities",
            &info.capabilities.to_string(),
            &self.handle.capabilities().to_string(),
        );
        if let Some(declared) = declared {
            compare(
                "display name",
                &info.display_name,
                &declared.runtime.display_name,
            );
            compare(
                "description",
                &info.description,
                &declared.runtime.description,
            );
            compare("version", &info.version, &declared.manifest.plugin_version);
        }
        if differences.is_empty() {
            Verdict::pass(format!(
                "`info` agrees with the manifest ({} {}, {})",
                info.id, info.version, info.capabilities
            ))
        } else {
            Verdict::fail(differences.join("; "))
        }
    }

    async fn health(&self) -> Verdict {
        // `health` is polled on the caller's thread: a plugin that blocks in it blocks that.
        let handle = self.handle.clone();
        match off_thread(move || futures::executor::block_on(handle.health())).await {
            Ok(Ok(status)) => Verdict::pass(format!("healthy: {status}")),
            Ok(Err(error)) => Verdict::fail(format!("`health` failed {}", describe(&error))),
            Err(reason) => Verdict::fail(reason),
        }
    }

    async fn validate_config(&self) -> Verdict {
        let deep = (0..64).fold(json!("bottom"), |inner, _| json!([inner]));
        let cases = [
            ("null", Value::Null),
            ("a string", json!("garbage")),
            ("a number", json!(-1.5e300)),
            ("an array", json!([1, "two", null, {"three": 3}])),
            ("nested arrays", deep),
            (
                "an object of odd keys",
                json!({"": null, "\u{1b}[2J": [true], "base_url": 42, "model": {"x": []}, "πρόγραμμα": "?"}),
            ),
        ];
        let mut seen = Vec::new();
        for (label, config) in cases {
            let handle = self.handle.clone();
            match off_thread(move || handle.validate_config(&config)).await {
                Err(reason) => return Verdict::fail(format!("validating {label}: {reason}")),
                Ok(Ok(problems)) => seen.push(format!("{label}: {}", problems.len())),
                Ok(Err(error)) => {
                    return Verdict::fail(format!(
                        "validating {label} failed {} instead of listing problems",
                        describe(&error)
                    ));
                }
            }
        }
        Verdict::pass(format!("problems found: {}", seen.join(", ")))
    }

    async fn streaming(&self) -> Verdict {
        let items: Vec<_> = self
            .handle
            .stream_turn(self.request(STREAM_PROMPT))
            .collect()
            .await;
        if !self.declares(Capabilities::STREAMING) {
            return match items.as_slice() {
                [Err(error)] if error.kind == ErrorKind::Unsupported => {
                    Verdict::pass("not declared: the host refuses to stream it (`unsupported`)")
                }
                _ => Verdict::fail(format!(
                    "not declared, yet streaming it gave {} item(s) instead of one `unsupported` error",
                    items.len()
                )),
            };
        }
        let mut text = String::new();
        let mut text_deltas = 0_usize;
        let mut other_deltas = 0_usize;
        let mut finals = Vec::new();
        for (index, item) in items.iter().enumerate() {
            match item {
                Err(error) => {
                    return Verdict::fail(format!(
                        "the stream failed at item {index} {}",
                        describe(error)
                    ));
                }
                Ok(StreamItem::Delta(delta)) => {
                    if !finals.is_empty() {
                        return Verdict::fail(format!(
                            "a delta came after the final item (item {index})"
                        ));
                    }
                    if delta.kind == DeltaKind::Text {
                        text.push_str(&delta.content);
                        text_deltas += 1;
                    } else {
                        other_deltas += 1;
                    }
                }
                Ok(StreamItem::Done(output)) => finals.push(output),
                Ok(_) => other_deltas += 1,
            }
        }
        let [output] = finals.as_slice() else {
            return Verdict::fail(format!(
                "{} final items, expected exactly one",
                finals.len()
            ));
        };
        if text != output.content {
            let same = text
                .char_indices()
                .zip(output.content.chars())
                .find(|((_, a), b)| a != b)
                .map_or(text.len().min(output.content.len()), |((at, _), _)| at);
            return Verdict::fail(format!(
                "the {text_deltas} text delta(s) concatenate to {} bytes, but the final content is {} bytes; from byte {same} the deltas say {:?}, the final content {:?}",
                text.len(),
                output.content.len(),
                clip(&text[same..]),
                clip(&output.content[same..]),
            ));
        }
        let words = output.content.split_whitespace().count();
        if text_deltas == 1 && words > 1 {
            return Verdict::fail(format!(
                "declares `streaming` but sent the whole answer ({words} words) as one delta"
            ));
        }
        Verdict::pass(format!(
            "{text_deltas} text delta(s) ({other_deltas} other) concatenate to the final content ({} bytes), then one final item",
            output.content.len()
        ))
    }

    async fn tools(&self) -> Verdict {
        let tool = ToolDefinition::new(
            "get_time",
            "Returns the current time in UTC.",
            json!({"type": "object", "properties": {}}),
        );
        let request = self
            .request("What time is it? Call the tool if you need it.")
            .with_tools(vec![tool]);
        let result = self.handle.run_turn(request).await;
        match (self.declares(Capabilities::TOOLS), result) {
            (false, Err(error)) if error.kind == ErrorKind::Unsupported => {
                Verdict::pass("not declared: the host refuses a turn with tools (`unsupported`)")
            }
            (false, other) => Verdict::fail(format!(
                "not declared, yet a turn with tools ended {} instead of `unsupported`",
                match other {
                    Ok(_) => "with an answer".to_owned(),
                    Err(error) => describe(&error),
                }
            )),
            (true, Ok(output)) => Verdict::pass(format!(
                "declared: a turn with a tool answered ({} tool call(s))",
                output.tool_calls.len()
            )),
            (true, Err(error)) => Verdict::fail(format!(
                "declares `tools`, but a turn with a tool failed {}",
                describe(&error)
            )),
        }
    }

    async fn cancel(&self) -> Verdict {
        let turn = self.handle.run_turn(self.request(STREAM_PROMPT));
        let execution_id = turn.execution_id().to_owned();
        let (handle, id) = (self.handle.clone(), execution_id.clone());
        let cancelled = match off_thread(move || handle.cancel(&id)).await {
            Err(reason) => return Verdict::fail(format!("cancel({execution_id:?}): {reason}")),
            Ok(Ok(cancelled)) => cancelled,
            Ok(Err(error)) => {
                return Verdict::fail(format!(
                    "cancel({execution_id:?}) failed {}",
                    describe(&error)
                ));
            }
        };
        let ended = match turn.await {
            Err(error) if error.kind == ErrorKind::Cancelled => "ended with `cancelled`",
            Ok(_) => "finished before the cancel reached it",
            Err(error) => {
                return Verdict::fail(format!(
                    "the cancelled turn ended {} instead of `cancelled`",
                    describe(&error)
                ));
            }
        };
        if let Err(reason) = self.next_turn_answers("after a cancel").await {
            return Verdict::fail(reason);
        }
        Verdict::pass(format!(
            "cancel returned {cancelled}; the turn {ended}; the next turn answered"
        ))
    }

    async fn drop_mid_stream(&self) -> Verdict {
        let what = if self.declares(Capabilities::STREAMING) {
            let mut stream = self.handle.stream_turn(self.request(STREAM_PROMPT));
            match stream.next().await {
                Some(Err(error)) => {
                    return Verdict::fail(format!(
                        "the stream's first item was an error {}",
                        describe(&error)
                    ));
                }
                None => return Verdict::fail("the stream ended without an item"),
                Some(Ok(_)) => {}
            }
            drop(stream);
            "stream dropped after its first item"
        } else {
            let mut turn = std::pin::pin!(self.handle.run_turn(self.request(STREAM_PROMPT)));
            let _ = futures::poll!(turn.as_mut());
            "turn dropped after its first poll"
        };
        match self.next_turn_answers("after a drop").await {
            Ok(()) => Verdict::pass(format!("{what}; the next turn answered")),
            Err(reason) => Verdict::fail(reason),
        }
    }

    async fn timeout(&self) -> Verdict {
        let limit = Duration::from_millis(1);
        let ended = match self
            .handle
            .with_timeout(limit)
            .run_turn(self.request(STREAM_PROMPT))
            .await
        {
            Err(error) if error.kind == ErrorKind::Timeout => "ended with `timeout`",
            Ok(_) => "finished within it",
            Err(error) => {
                return Verdict::fail(format!(
                    "a turn with a {limit:?} timeout ended {} instead of `timeout`",
                    describe(&error)
                ));
            }
        };
        match self.next_turn_answers("after a timeout").await {
            Ok(()) => Verdict::pass(format!(
                "a turn with a {limit:?} timeout {ended}; the next turn answered"
            )),
            Err(reason) => Verdict::fail(reason),
        }
    }

    async fn prompt(&self, prompt: String) -> Verdict {
        let bytes = prompt.len();
        match self.handle.run_turn(self.request(prompt)).await {
            Ok(output) => Verdict::pass(format!(
                "a {bytes}-byte prompt answered ({} bytes)",
                output.content.len()
            )),
            Err(error)
                if matches!(
                    error.kind,
                    ErrorKind::Panicked | ErrorKind::Crashed | ErrorKind::Internal
                ) =>
            {
                Verdict::fail(format!("a {bytes}-byte prompt failed {}", describe(&error)))
            }
            Err(error) => Verdict::pass(format!(
                "a {bytes}-byte prompt was refused cleanly {}",
                describe(&error)
            )),
        }
    }

    async fn concurrent_turns(&self) -> Verdict {
        let count = self.options.concurrent_turns;
        let started = Instant::now();
        let turns = (0..count).map(|i| {
            self.handle
                .run_turn(self.request(format!("Turn {i}: say ok.")))
        });
        let results = futures::future::join_all(turns).await;
        let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        match failed.first() {
            None => Verdict::pass(format!(
                "{count} turns at once all answered in {:?}",
                started.elapsed()
            )),
            Some(first) => Verdict::fail(format!(
                "{} of {count} turns at once failed; the first {}",
                failed.len(),
                describe(first)
            )),
        }
    }
}

/// A prompt of at most `bytes` bytes (and more than `bytes - 4`), in lines, not all ASCII.
pub(crate) fn large_prompt(bytes: usize) -> String {
    let line = "All work and no play makes a large prompt. Ünïcödé too: 世界.\n";
    let mut prompt = line.repeat(bytes / line.len() + 1);
    let mut end = bytes.min(prompt.len());
    while !prompt.is_char_boundary(end) {
        end -= 1;
    }
    prompt.truncate(end);
    prompt
}

/// Runs a call that may block its thread (a synchronous plugin call, or a plugin future polled
/// on the caller's thread) on a thread of its own, so that the check's time limit holds even
/// when the plugin never returns. Such a thread is left behind, blocked; the check fails.
async fn off_thread<T: Send + 'static>(
    call: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("conformance-call".to_owned())
        .spawn(move || {
            let _ = done.send(call());
        })
        .map_err(|e| format!("could not start a thread for the call: {e}"))?;
    result
        .await
        .map_err(|_| "the call panicked in the host".to_owned())
}

/// The first 80 characters of a text.
fn clip(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(80).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

/// Every check, in order, against one resolved runtime.
pub(crate) async fn run_checks(
    handle: &RuntimeHandle,
    declared: Option<Declared<'_>>,
    options: &Options,
) -> Vec<Check> {
    let checker = Checker { handle, options };
    let id = handle.id();
    let limit = options.time_limit;
    let mut checks = Vec::new();
    checks.push(bounded(id, "info", limit, checker.info(declared)).await);
    checks.push(bounded(id, "health", limit, checker.health()).await);
    checks.push(bounded(id, "validate_config", limit, checker.validate_config()).await);
    checks.push(bounded(id, "streaming", limit, checker.streaming()).await);
    checks.push(bounded(id, "tools", limit, checker.tools()).await);
    checks.push(bounded(id, "cancel", limit, checker.cancel()).await);
    checks.push(bounded(id, "drop_mid_stream", limit, checker.drop_mid_stream()).await);
    checks.push(bounded(id, "timeout", limit, checker.timeout()).await);
    checks.push(bounded(id, "empty_prompt", limit, checker.prompt(String::new())).await);
    checks.push(
        bounded(
            id,
            "unicode_prompt",
            limit,
            checker.prompt(UNICODE_PROMPT.to_owned()),
        )
        .await,
    );
    let large = large_prompt(options.large_prompt_bytes);
    checks.push(bounded(id, "large_prompt", limit, checker.prompt(large)).await);
    checks.push(bounded(id, "concurrent_turns", limit, checker.concurrent_turns()).await);
    checks
}
