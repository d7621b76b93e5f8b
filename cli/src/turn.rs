//! `runtimes run` and `runtimes stream`.
//!
//! Model output on a terminal has its control characters escaped (`\x1b`, `\r`, `\u{9b}`...),
//! except newlines and tabs, so a model cannot clear the screen, move the cursor, rewrite a
//! line or set the window title. Piped, the text is written exactly as the runtime produced
//! it; `--json` escapes it as JSON does (and DEL and C1 controls as `\uXXXX`).

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use futures::{Stream, StreamExt};
use runtime_api::{DeltaKind, Message, RuntimeError, StreamItem, TurnRequest, Value};
use runtime_loader::{Isolation, RuntimeHandle, Runtimes};
use serde_json::json;

use crate::failure::Failure;
use crate::signals;
use crate::style::{Style, clean, clean_lines, json_text};

/// What `run` and `stream` take.
#[derive(Debug, Args)]
pub struct TurnArgs {
    /// The runtime's id or alias.
    pub(crate) name: String,
    /// The prompt.
    prompt: String,
    /// The system prompt.
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,
    /// The model, in the runtime's naming.
    #[arg(long, value_name = "MODEL")]
    model: Option<String>,
    /// The runtime's configuration (JSON).
    #[arg(long, value_name = "JSON")]
    config: Option<String>,
    /// A JSON file with the conversation history: an array of {"role", "content"} messages.
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
    /// End the turn after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub(crate) timeout: Option<f64>,
    /// Print JSON (for `stream`: one object per delta, then the result).
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) isolation: IsolationArgs,
}

impl TurnArgs {
    pub(crate) fn level(&self) -> Isolation {
        self.isolation.level()
    }
}

/// `--isolate` and `--isolation LEVEL` (or `AGENT_RUNTIMES_ISOLATION`): what every command
/// that runs turns takes.
#[derive(Debug, Clone, Args)]
pub struct IsolationArgs {
    /// Run plugins in worker processes (the same as `--isolation process`): a crash, an exit or
    /// a runaway allocation ends a worker, not this command.
    #[arg(long, conflicts_with = "isolation")]
    isolate: bool,
    /// How far plugins are kept from this command: `inline`, `threads` (the default) or
    /// `process`.
    #[arg(long, value_name = "LEVEL", env = "AGENT_RUNTIMES_ISOLATION")]
    isolation: Option<Isolation>,
}

impl IsolationArgs {
    /// The level asked for, or the default.
    pub(crate) fn level(&self) -> Isolation {
        self.chosen().unwrap_or_default()
    }

    /// The level asked for by a flag or the environment, if any.
    pub(crate) fn chosen(&self) -> Option<Isolation> {
        if self.isolate {
            Some(Isolation::Process)
        } else {
            self.isolation
        }
    }
}

/// The request and the runtime configuration the arguments describe.
pub(crate) fn request(args: &TurnArgs) -> Result<(TurnRequest, Value), Failure> {
    let config: Value = match &args.config {
        None => Value::Null,
        Some(text) => serde_json::from_str(text)
            .map_err(|e| Failure::Usage(format!("--config is not valid JSON: {e}")))?,
    };
    let mut request = TurnRequest::new(args.prompt.clone());
    request.system = args.system.clone();
    request.model = args.model.clone();
    if let Some(path) = &args.history {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::Usage(format!("--history {}: {e}", path.display())))?;
        let history: Vec<Message> = serde_json::from_str(&text).map_err(|e| {
            Failure::Usage(format!(
                "--history {}: expected a JSON array of {{\"role\", \"content\"}} messages: {e}",
                path.display()
            ))
        })?;
        request.history = history;
    }
    Ok((request, config))
}

/// `--timeout` as a duration.
pub(crate) fn timeout(args: &TurnArgs) -> Result<Option<Duration>, Failure> {
    match args.timeout {
        None => Ok(None),
        Some(secs) if secs.is_finite() && secs > 0.0 => Ok(Some(Duration::from_secs_f64(secs))),
        Some(secs) => Err(Failure::Usage(format!(
            "--timeout must be a positive number of seconds, not {secs}"
        ))),
    }
}

fn prepare(runtimes: &Runtimes, args: &TurnArgs) -> Result<(RuntimeHandle, TurnRequest), Failure> {
    let (request, config) = request(args)?;
    // An unknown name is reported by resolve below, with what is available.
    let _ = runtimes.set_isolation(&args.name, args.level());
    let handle = if config.is_null() {
        runtimes.resolve(&args.name)?
    } else {
        runtimes.new_instance(&args.name, &config)?
    };
    let handle = match timeout(args)? {
        None => handle,
        Some(limit) => handle.with_timeout(limit),
    };
    Ok((handle, request))
}

pub async fn run(runtimes: &Runtimes, args: TurnArgs, style: &Style) -> Result<(), Failure> {
    let (handle, request) = prepare(runtimes, &args)?;
    let turn = handle.run_turn(request);
    let output = tokio::select! {
        output = turn => output.map_err(Failure::Turn)?,
        () = signals::interrupt() => {
            return Err(Failure::Interrupted);
        }
    };
    if args.json {
        println!("{}", json_text(&json!(output), true));
    } else if style.stdout_terminal {
        println!("{}", clean_lines(&output.content));
    } else {
        println!("{}", output.content);
    }
    Ok(())
}

pub async fn stream(runtimes: &Runtimes, args: TurnArgs, style: &Style) -> Result<(), Failure> {
    let (handle, request) = prepare(runtimes, &args)?;
    print_stream(handle.stream_turn(request), args.json, style).await
}

/// Prints a turn's items as they arrive (`runtimes stream`, `runtimes submit`); Ctrl-C drops
/// the stream, which cancels the turn.
pub(crate) async fn print_stream(
    mut stream: impl Stream<Item = Result<StreamItem, RuntimeError>> + Unpin,
    json: bool,
    style: &Style,
) -> Result<(), Failure> {
    let mut stdout = LineTracker {
        inner: std::io::stdout().lock(),
        line_open: false,
    };
    let mut in_thinking = false;
    let mut in_tool_call = false;
    // One listener for the whole stream: a Ctrl-C that arrives while an item is being printed
    // is seen by the next `select!` (a listener made afresh per item would miss it).
    let ctrl_c = signals::interrupt();
    tokio::pin!(ctrl_c);
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            () = &mut ctrl_c => {
                // Dropping the stream cancels the turn inside the plugin.
                drop(stream);
                end_partial_line(&mut stdout);
                return Err(Failure::Interrupted);
            }
        };
        let Some(item) = item else { break };
        let item = item.map_err(|error| {
            end_partial_line(&mut stdout);
            Failure::Turn(error)
        })?;
        if json {
            let line = match &item {
                StreamItem::Delta(delta) => json!({"type": "delta", "delta": delta}),
                StreamItem::Done(output) => json!({"type": "done", "output": output}),
                _ => json!({"type": "unknown"}),
            };
            let _ = writeln!(stdout, "{}", json_text(&line, false));
        } else {
            match &item {
                StreamItem::Delta(delta) if delta.kind == DeltaKind::Text => {
                    if in_tool_call {
                        progress(&mut stdout, style, "\n");
                        in_tool_call = false;
                    }
                    if in_thinking {
                        let _ = write!(stdout, "\n\n");
                        in_thinking = false;
                    }
                    if style.stdout_terminal {
                        let _ = write!(stdout, "{}", clean_lines(&delta.content));
                    } else {
                        let _ = write!(stdout, "{}", delta.content);
                    }
                }
                // Thinking and tool-call fragments are set apart on a terminal; piped stdout
                // carries the answer only.
                StreamItem::Delta(delta)
                    if delta.kind == DeltaKind::Thinking && style.stdout_terminal =>
                {
                    if !in_thinking {
                        let _ = write!(stdout, "{}", style.dim("[thinking] "));
                        in_thinking = true;
                    }
                    let _ = write!(stdout, "{}", style.dim(&clean_lines(&delta.content)));
                }
                // Tool calls (whole or in fragments) and tool results, as they happen: on a
                // terminal dim on stdout, else on stderr, so piped stdout carries the answer.
                StreamItem::Delta(delta) if delta.kind == DeltaKind::ToolCall => {
                    let text = clean(&delta.content).into_owned();
                    let line = match delta.metadata["name"].as_str() {
                        Some(name) => format!("\n[tool call] {} {text}", clean(name)),
                        None => text,
                    };
                    progress(&mut stdout, style, &line);
                    in_tool_call = true;
                }
                StreamItem::Delta(delta) if delta.kind == DeltaKind::ToolResult => {
                    let name = clean(delta.metadata["name"].as_str().unwrap_or("?")).into_owned();
                    let verdict = if delta.metadata["ok"] == json!(true) {
                        "ok"
                    } else {
                        "error"
                    };
                    let lead = if in_tool_call { "\n" } else { "" };
                    let line = format!(
                        "{lead}[tool result] {name} {verdict}: {}\n",
                        clean(&one_line(&delta.content, 200))
                    );
                    progress(&mut stdout, style, &line);
                    in_tool_call = false;
                }
                StreamItem::Done(output) => {
                    let _ = writeln!(stdout);
                    for call in &output.tool_calls {
                        let _ = writeln!(
                            stdout,
                            "tool call {} {}({})",
                            clean(&call.id),
                            clean(&call.name),
                            clean(&call.arguments.to_string())
                        );
                    }
                }
                _ => {}
            }
        }
        let _ = stdout.flush();
    }
    Ok(())
}

/// A writer that knows whether the last line it wrote is unfinished.
struct LineTracker<W> {
    inner: W,
    line_open: bool,
}

impl<W: std::io::Write> std::io::Write for LineTracker<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        if let Some(last) = buf[..written].last() {
            self.line_open = *last != b'\n';
        }
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Ends the text a failed stream left mid-line, so the error starts on a line of its own; a
/// stream that printed nothing, or whole lines (as `--json` does), gets no blank line.
fn end_partial_line<W: std::io::Write>(stdout: &mut LineTracker<W>) {
    if stdout.line_open {
        let _ = writeln!(stdout);
        let _ = stdout.flush();
    }
}

/// Tool activity: dim on stdout when it is a terminal, else plain on stderr.
fn progress(stdout: &mut impl std::io::Write, style: &Style, text: &str) {
    if style.stdout_terminal {
        let _ = write!(stdout, "{}", style.dim(text));
    } else {
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "{text}");
        let _ = stderr.flush();
    }
}

/// The first `max` characters of a text, with `…` when cut (newlines are escaped later).
fn one_line(text: &str, max: usize) -> String {
    let mut out: String = text.trim().chars().take(max).collect();
    if text.trim().chars().count() > max {
        out.push('…');
    }
    out
}
