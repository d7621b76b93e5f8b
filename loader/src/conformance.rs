//! Conformance checks: the plugin contract run against a runtime, each check a pass or a fail
//! with the reason.
//!
//! [`check_file`] admits a plugin file as discovery would, then checks every runtime it
//! declares; [`check_handle`] checks one runtime a host already resolved. `runtimes check
//! --conformance FILE` prints the same checks, and a plugin author puts them in `cargo test`:
//!
//! ```no_run
//! use runtime_loader::conformance::{self, Options};
//!
//! # async fn demo() {
//! let library = conformance::built_library("shout_runtime").expect("cargo built the cdylib");
//! let report = conformance::check_file(&library, &serde_json::Value::Null, &Options::default()).await;
//! assert!(report.is_conformant(), "{report}");
//! # }
//! ```
//!
//! What is checked, for each runtime:
//!
//! | check | passes when |
//! |---|---|
//! | `admission` | the file is a plugin this host accepts (file only) |
//! | `config_schema` | the declared configuration schema, if any, is JSON and a schema (an object or a boolean) (file only) |
//! | `instance` | the runtime builds with the given configuration (file only) |
//! | `info` | what `info` returns agrees with the manifest: id, capabilities (and with a file: display name, description, version) |
//! | `health` | `health` answers `Ok` |
//! | `validate_config` | validating `null` and garbage returns a list of problems (or none), never a panic |
//! | `streaming` | a streaming runtime's text deltas concatenate to the final content, then exactly one final item; a runtime that does not declare streaming is refused by the host |
//! | `tools` | a runtime that declares tools accepts a turn with a tool; one that does not is refused by the host |
//! | `cancel` | a turn cancelled by its execution id right after it started ends (`cancelled`, or finished first), and the runtime serves the next turn |
//! | `drop_mid_stream` | a stream dropped after its first item (a turn dropped after its first poll) leaves the runtime serving the next turn |
//! | `timeout` | a turn with a 1 ms timeout ends (`timeout`, or finished first), and the runtime serves the next turn |
//! | `empty_prompt`, `unicode_prompt`, `large_prompt` | the turn answers, or fails cleanly: never a panic, a crash, an `internal` error or a hang |
//! | `concurrent_turns` | 100 turns at once all answer |
//!
//! Every check is bounded by [`Options::with_time_limit`]: one that does not finish in time
//! fails, saying so. The checks run one after another (a model server with one slot is not
//! flooded by two checks at once). Nothing here panics on what a plugin returns.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use runtime_api::manifest::{Manifest, ManifestRuntime};
use runtime_api::{
    Capabilities, DeltaKind, ErrorKind, RuntimeError, StreamItem, ToolDefinition, TurnRequest,
    Value, json,
};
use serde::Serialize;

use crate::{LoaderOptions, RuntimeHandle, Runtimes, inspect};

/// How the checks run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// The most time one check may take.
    pub time_limit: Duration,
    /// How many turns the `concurrent_turns` check starts at once.
    pub concurrent_turns: usize,
    /// The size of the `large_prompt` check's prompt, in bytes.
    pub large_prompt_bytes: usize,
    /// The `max_tokens` of every turn (keeps model-backed runtimes quick).
    pub max_tokens: u32,
    /// How [`check_file`] admits and loads the file.
    pub loader: LoaderOptions,
}

impl Default for Options {
    /// 60 s per check, 100 concurrent turns, a 1 MiB prompt, 16 tokens per answer, and the
    /// loader's options from the environment.
    fn default() -> Self {
        Self {
            time_limit: Duration::from_secs(60),
            concurrent_turns: 100,
            large_prompt_bytes: 1024 * 1024,
            max_tokens: 16,
            loader: LoaderOptions::default(),
        }
    }
}

impl Options {
    /// Sets the most time one check may take.
    pub fn with_time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = limit;
        self
    }

    /// Sets how many turns run at once in `concurrent_turns`.
    pub fn with_concurrent_turns(mut self, turns: usize) -> Self {
        self.concurrent_turns = turns;
        self
    }

    /// Sets the `large_prompt` check's prompt size.
    pub fn with_large_prompt_bytes(mut self, bytes: usize) -> Self {
        self.large_prompt_bytes = bytes;
        self
    }

    /// Sets every turn's `max_tokens`.
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    /// Sets how [`check_file`] admits and loads the file.
    pub fn with_loader_options(mut self, loader: LoaderOptions) -> Self {
        self.loader = loader;
        self
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verdict {
    /// The runtime honours this part of the contract; `detail` says what was seen.
    Pass {
        /// What was seen.
        detail: String,
    },
    /// It does not; `reason` says what was wrong.
    Fail {
        /// What was wrong.
        reason: String,
    },
    /// The check does not apply (for example: no configuration schema is declared). Not a
    /// failure.
    NotApplicable {
        /// Why it does not apply.
        reason: String,
    },
}

impl Verdict {
    fn pass(detail: impl Into<String>) -> Self {
        Verdict::Pass {
            detail: detail.into(),
        }
    }

    fn fail(reason: impl Into<String>) -> Self {
        Verdict::Fail {
            reason: reason.into(),
        }
    }

    /// Whether this is a failure.
    pub fn is_failure(&self) -> bool {
        matches!(self, Verdict::Fail { .. })
    }

    /// `pass`, `FAIL` or `n/a`.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass { .. } => "pass",
            Verdict::Fail { .. } => "FAIL",
            Verdict::NotApplicable { .. } => "n/a",
        }
    }

    /// The detail or the reason.
    pub fn text(&self) -> &str {
        match self {
            Verdict::Pass { detail } => detail,
            Verdict::Fail { reason } | Verdict::NotApplicable { reason } => reason,
        }
    }
}

/// One check and its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Check {
    /// The runtime checked; `None` for a check of the file itself.
    pub runtime: Option<String>,
    /// The check's name, e.g. `streaming` (the table in this module's documentation).
    pub name: &'static str,
    /// Its outcome.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// How long it took.
    #[serde(rename = "elapsed_ms", serialize_with = "millis")]
    pub elapsed: Duration,
}

fn millis<S: serde::Serializer>(elapsed: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

/// Every check run against a file or a handle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// The file checked, for [`check_file`].
    pub file: Option<PathBuf>,
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether no check failed (and at least one ran).
    pub fn is_conformant(&self) -> bool {
        !self.checks.is_empty() && !self.checks.iter().any(|c| c.verdict.is_failure())
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.verdict.is_failure())
    }

    /// The check `name` of `runtime` (`None`: of the file).
    pub fn get(&self, runtime: Option<&str>, name: &str) -> Option<&Check> {
        self.checks
            .iter()
            .find(|c| c.runtime.as_deref() == runtime && c.name == name)
    }
}

/// Plugin text with control characters (and the bidirectional-text and line-separator
/// characters that reorder or break a line) escaped, so it cannot drive a terminal.
fn escaped(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control()
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
            {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

impl fmt::Display for Report {
    /// One line per check: `pass  echo  streaming: …`. Plugin text is escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for check in &self.checks {
            writeln!(
                f,
                "{:<4}  {}  {}: {}",
                check.verdict.label(),
                escaped(check.runtime.as_deref().unwrap_or("(file)")),
                check.name,
                escaped(check.verdict.text())
            )?;
        }
        let failed = self.failures().count();
        write!(
            f,
            "{failed} of {} checks failed{}",
            self.checks.len(),
            if self.checks.is_empty() {
                " (none ran)"
            } else {
                ""
            }
        )
    }
}

/// Where cargo put the `cdylib` of package `crate_name` (`-` or `_`) for the test running
/// now: next to the test executable (`target/<profile>/deps`) or one folder up. For a plugin
/// crate's own `cargo test`, which builds the library before its integration tests.
pub fn built_library(crate_name: &str) -> Option<PathBuf> {
    let file = format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        crate_name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    );
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    [Some(deps), deps.parent()]
        .into_iter()
        .flatten()
        .map(|dir| dir.join(&file))
        .find(|candidate| candidate.is_file())
}

/// Admits the plugin file at `path` as discovery would, then runs every check against each
/// runtime it declares, built with `config`. Never fails: a file that cannot be checked is a
/// failed `admission` check.
pub async fn check_file(path: &Path, config: &Value, options: &Options) -> Report {
    let mut report = Report {
        file: Some(path.to_owned()),
        checks: Vec::new(),
    };
    let started = Instant::now();
    let manifest = match inspect::real_file(path).and_then(|real| inspect::read_manifest(&real)) {
        Ok(manifest) => manifest,
        Err(reason) => {
            report
                .checks
                .push(file_check(started, Verdict::fail(reason.to_string())));
            return report;
        }
    };
    let runtimes = Runtimes::with_options(options.loader);
    let discovered = runtimes.discover_files(&[path]);
    if let Some(rejection) = discovered.rejected.first() {
        report.checks.push(file_check(
            started,
            Verdict::fail(rejection.reason.to_string()),
        ));
        return report;
    }
    report.checks.push(file_check(
        started,
        Verdict::pass(format!(
            "plugin {} {}: {} runtime(s), contract {}, runtime-api {}",
            manifest.plugin_name,
            manifest.plugin_version,
            manifest.runtimes.len(),
            manifest.contract,
            manifest.api_version
        )),
    ));
    for declared in &manifest.runtimes {
        let id = declared.id.as_str();
        let mut record = |name, started, verdict| {
            report.checks.push(Check {
                runtime: Some(id.to_owned()),
                name,
                verdict,
                elapsed: Instant::now().saturating_duration_since(started),
            });
        };
        let started = Instant::now();
        record("config_schema", started, schema_verdict(declared));
        let started = Instant::now();
        let handle = match runtimes.new_instance(id, config) {
            Ok(handle) => {
                record(
                    "instance",
                    started,
                    Verdict::pass("built with the configuration"),
                );
                handle
            }
            Err(error) => {
                record(
                    "instance",
                    started,
                    Verdict::fail(format!(
                        "{error} (the remaining checks of this runtime did not run)"
                    )),
                );
                continue;
            }
        };
        let declared = Declared {
            runtime: declared,
            manifest: &manifest,
        };
        report
            .checks
            .extend(run_checks(&handle, Some(declared), options).await);
    }
    report
}

/// Runs the checks that need no file against a runtime a host already resolved.
pub async fn check_handle(handle: &RuntimeHandle, options: &Options) -> Report {
    Report {
        file: None,
        checks: run_checks(handle, None, options).await,
    }
}

fn file_check(started: Instant, verdict: Verdict) -> Check {
    Check {
        runtime: None,
        name: "admission",
        verdict,
        elapsed: Instant::now().saturating_duration_since(started),
    }
}

/// What the file says about the runtime.
#[derive(Clone, Copy)]
struct Declared<'a> {
    runtime: &'a ManifestRuntime,
    manifest: &'a Manifest,
}

const SCHEMA_TYPES: [&str; 7] = [
    "null", "boolean", "object", "array", "number", "string", "integer",
];

fn schema_verdict(declared: &ManifestRuntime) -> Verdict {
    let schema = match declared.config_schema() {
        None => {
            return Verdict::NotApplicable {
                reason: "no configuration schema declared".to_owned(),
            };
        }
        Some(Err(error)) => {
            return Verdict::fail(format!(
                "the declared configuration schema is not JSON: {error}"
            ));
        }
        Some(Ok(schema)) => schema,
    };
    let Value::Object(keys) = &schema else {
        return match schema {
            Value::Bool(_) => Verdict::pass("a boolean schema"),
            other => Verdict::fail(format!(
                "a JSON Schema is an object or a boolean, the declared one is {}",
                json_type(&other)
            )),
        };
    };
    let type_ok = |name: &Value| name.as_str().is_some_and(|n| SCHEMA_TYPES.contains(&n));
    match keys.get("type") {
        Some(Value::Array(names)) if !names.iter().all(type_ok) => Verdict::fail(format!(
            "the schema's `type` names an unknown type (known: {})",
            SCHEMA_TYPES.join(", ")
        )),
        Some(name @ Value::String(_)) if !type_ok(name) => Verdict::fail(format!(
            "the schema's `type` is {name}, not one of {}",
            SCHEMA_TYPES.join(", ")
        )),
        Some(Value::Array(_) | Value::String(_)) | None => Verdict::pass(format!(
            "valid JSON, {} top-level propert{}",
            keys.get("properties")
                .and_then(Value::as_object)
                .map_or(0, |p| p.len()),
            if keys
                .get("properties")
                .and_then(Value::as_object)
                .is_some_and(|p| p.len() == 1)
            {
                "y"
            } else {
                "ies"
            }
        )),
        Some(other) => Verdict::fail(format!(
            "the schema's `type` is {}, not a type name or a list of them",
            json_type(other)
        )),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Runs one check within the time limit.
async fn bounded(
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
fn large_prompt(bytes: usize) -> String {
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

async fn run_checks(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(schema: &str) -> ManifestRuntime {
        serde_json::from_value(json!({
            "id": "x", "display_name": "x", "description": "", "aliases": [],
            "capabilities": [], "config_schema": schema
        }))
        .unwrap()
    }

    #[test]
    fn schemas_are_json_objects_or_booleans_with_known_types() {
        let verdict = |schema: &str| schema_verdict(&runtime(schema));
        assert!(matches!(verdict(""), Verdict::NotApplicable { .. }));
        assert!(matches!(verdict("true"), Verdict::Pass { .. }));
        assert!(matches!(
            verdict(r#"{"type": ["object", "null"], "properties": {"a": {}}}"#),
            Verdict::Pass { .. }
        ));
        for (bad, says) in [
            ("{\"type\": ", "not JSON"),
            ("[1]", "an array"),
            (r#"{"type": "dict"}"#, "\"dict\""),
            (r#"{"type": ["object", "map"]}"#, "unknown type"),
            (r#"{"type": 3}"#, "a number"),
        ] {
            let verdict = verdict(bad);
            assert!(
                verdict.is_failure() && verdict.text().contains(says),
                "{bad}: {verdict:?}"
            );
        }
    }

    #[test]
    fn the_report_escapes_plugin_text_and_counts_failures() {
        let report = Report {
            file: None,
            checks: vec![Check {
                runtime: Some("evil\u{1b}[2J\u{202e}".to_owned()),
                name: "health",
                verdict: Verdict::fail("bad\u{7}\nnews"),
                elapsed: Duration::ZERO,
            }],
        };
        let text = report.to_string();
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text}"
        );
        assert!(
            text.contains("FAIL  evil\\u{1b}[2J\\u{202e}  health: bad\\u{7}\\nnews"),
            "{text}"
        );
        assert!(text.ends_with("1 of 1 checks failed"), "{text}");
        assert!(!report.is_conformant());
        assert!(!Report::default().is_conformant());
    }

    #[test]
    fn the_large_prompt_has_the_size_asked_for() {
        for bytes in [0, 1, 1000, 1024 * 1024] {
            let prompt = large_prompt(bytes);
            assert!(prompt.len() <= bytes && prompt.len() + 4 > bytes, "{bytes}");
        }
    }
}
