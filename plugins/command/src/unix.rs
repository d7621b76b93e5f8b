//! The Unix implementation: a process group per turn, pipes read line by line, `SIGKILL` to
//! the whole group on cancel, timeout and exit.

use std::collections::VecDeque;
use std::future::{Future, pending};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use runtime_api::{Delta, RuntimeError, StreamItem, TurnOutput, TurnRequest, json};
use runtime_text::{ByteTail, LineSplitter};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio::time::Instant;

use crate::{Config, PromptMode, StderrAs};

/// How long the pipes are still read after the program exited (and its group was killed):
/// long enough to drain what is buffered, short enough that a descendant which left the group
/// and kept a pipe open cannot hold the turn.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Kills a process group with `SIGKILL` when told to or when dropped, once.
///
/// The program is the leader of its own group (`process_group(0)`), so the group id is its
/// pid. While the leader is not yet reaped, or any member is alive, that id cannot be reused,
/// so the signal reaches only the program and its descendants. The one window where it could
/// reach another group is after the leader was reaped and every member exited; the guard
/// kills right after reaping, so that window is microseconds, against pid reuse that needs
/// the whole pid space to wrap.
#[derive(Debug)]
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            match killpg(pgid, Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(error) => {
                    tracing::warn!(pgid = pgid.as_raw(), %error, "could not kill the process group")
                }
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

type StdinWriter = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A running turn. Field order matters: dropping it kills the group first.
struct Running {
    group: GroupGuard,
    child: Child,
    config: Arc<Config>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    stdin: Option<StdinWriter>,
    out_lines: LineSplitter,
    err_lines: LineSplitter,
    tail: ByteTail,
    pending: VecDeque<Delta>,
    content: String,
    status: Option<ExitStatus>,
    deadline: Option<Instant>,
    drain_deadline: Option<Instant>,
}

enum State {
    NotStarted(Arc<Config>, Box<TurnRequest>),
    Running(Box<Running>),
    Finished,
}

enum Event {
    Stdout(io::Result<usize>),
    Stderr(io::Result<usize>),
    StdinDone,
    Exited(io::Result<ExitStatus>),
    TimedOut,
    DrainOver,
}

/// The stream of one turn. The program starts when the stream is first polled.
pub(crate) fn turn(
    config: Arc<Config>,
    request: TurnRequest,
) -> impl Stream<Item = Result<StreamItem, RuntimeError>> + Send + 'static {
    futures::stream::unfold(
        State::NotStarted(config, Box::new(request)),
        |state| async move {
            let mut running = match state {
                State::Finished => return None,
                State::NotStarted(config, request) => match Running::start(config, &request) {
                    Ok(running) => Box::new(running),
                    Err(error) => return Some((Err(error), State::Finished)),
                },
                State::Running(running) => running,
            };
            match running.next().await {
                Ok(Some(delta)) => Some((Ok(StreamItem::Delta(delta)), State::Running(running))),
                Ok(None) => {
                    let result = running.finish();
                    Some((result.map(StreamItem::Done), State::Finished))
                }
                Err(error) => Some((Err(error), State::Finished)),
            }
        },
    )
}

/// A short name of the program for messages.
fn label(config: &Config) -> String {
    let text = if config.shell {
        format!("/bin/sh -c {:?}", config.program)
    } else {
        config.program.clone()
    };
    let mut end = text.len().min(120);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

impl Running {
    fn start(config: Arc<Config>, request: &TurnRequest) -> Result<Running, RuntimeError> {
        let mut args = config.args.clone();
        if config.prompt_mode == PromptMode::Arg {
            args.push(request.prompt.clone());
        }
        let mut command = if config.shell {
            let mut command = Command::new("/bin/sh");
            // `$0` is a name; the args become `$1`, `$2`, ….
            command
                .arg("-c")
                .arg(&config.program)
                .arg("command-runtime");
            command
        } else {
            Command::new(&config.program)
        };
        command
            .args(&args)
            .envs(&config.env)
            .env("AGENT_RUNTIMES_EXECUTION_ID", &request.execution_id)
            .stdin(if config.prompt_mode == PromptMode::Stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        if let Some(model) = &request.model {
            command.env("AGENT_RUNTIMES_MODEL", model);
        }
        if let Some(cwd) = &config.cwd {
            command.current_dir(cwd);
        }
        let mut child = command.spawn().map_err(|error| {
            let message = format!("could not start `{}`: {error}", label(&config));
            match error.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => {
                    RuntimeError::invalid_config(message)
                }
                _ => RuntimeError::internal(message),
            }
        })?;
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        let group = GroupGuard { pgid };
        tracing::debug!(program = %label(&config), pid = ?pgid, "started the program");

        let stdin = child.stdin.take().map(|mut pipe| {
            let prompt = request.prompt.clone().into_bytes();
            let writer: StdinWriter = Box::pin(async move {
                // A program that does not read its stdin makes this fail; that is its choice.
                if let Err(error) = pipe.write_all(&prompt).await {
                    tracing::debug!(%error, "the program did not take the whole prompt");
                }
                let _ = pipe.shutdown().await;
            });
            writer
        });
        Ok(Running {
            group,
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            child,
            stdin,
            out_lines: LineSplitter::default(),
            err_lines: LineSplitter::default(),
            tail: ByteTail::default(),
            pending: VecDeque::new(),
            content: String::new(),
            status: None,
            deadline: config
                .timeout_ms
                .map(|ms| Instant::now() + Duration::from_millis(ms)),
            drain_deadline: None,
            config,
        })
    }

    /// The next delta; `None` when the program exited and its output is read.
    async fn next(&mut self) -> Result<Option<Delta>, RuntimeError> {
        loop {
            if let Some(delta) = self.pending.pop_front() {
                return Ok(Some(delta));
            }
            if self.stdout.is_none() && self.stderr.is_none() && self.status.is_some() {
                return Ok(None);
            }
            let mut out_buf = [0u8; 8192];
            let mut err_buf = [0u8; 8192];
            let event = {
                let Running {
                    child,
                    stdout,
                    stderr,
                    stdin,
                    status,
                    deadline,
                    drain_deadline,
                    ..
                } = self;
                tokio::select! {
                    read = read_some(stdout.as_mut(), &mut out_buf) => Event::Stdout(read),
                    read = read_some(stderr.as_mut(), &mut err_buf) => Event::Stderr(read),
                    () = write_stdin(stdin) => Event::StdinDone,
                    exited = child.wait(), if status.is_none() => Event::Exited(exited),
                    () = sleep_until(*deadline) => Event::TimedOut,
                    () = sleep_until(*drain_deadline) => Event::DrainOver,
                }
            };
            match event {
                Event::Stdout(Ok(n)) if n > 0 => {
                    let lines = self.out_lines.push(&out_buf[..n]);
                    self.text(lines);
                }
                Event::Stdout(_) => {
                    self.stdout = None;
                    let rest = self.out_lines.finish();
                    self.text(rest);
                }
                Event::Stderr(Ok(n)) if n > 0 => {
                    self.tail.push(&err_buf[..n]);
                    let lines = self.err_lines.push(&err_buf[..n]);
                    self.thinking(lines);
                }
                Event::Stderr(_) => {
                    self.stderr = None;
                    let rest = self.err_lines.finish();
                    self.thinking(rest);
                }
                Event::StdinDone => self.stdin = None,
                Event::Exited(Ok(status)) => {
                    self.status = Some(status);
                    self.stdin = None;
                    // The program finished in time; only the bounded drain is left.
                    self.deadline = None;
                    // Whatever the program left running in its group goes with it; its
                    // buffered output stays readable in the pipes.
                    self.group.kill();
                    self.drain_deadline = Some(Instant::now() + DRAIN_AFTER_EXIT);
                }
                Event::Exited(Err(error)) => {
                    return Err(RuntimeError::internal(format!(
                        "could not wait for `{}`: {error}",
                        label(&self.config)
                    )));
                }
                Event::DrainOver => {
                    tracing::debug!("a descendant kept the program's pipes open; not waiting");
                    self.stdout = None;
                    self.stderr = None;
                    let rest = self.out_lines.finish();
                    self.text(rest);
                }
                Event::TimedOut => return Err(self.time_out().await),
            }
        }
    }

    fn text(&mut self, lines: impl IntoIterator<Item = String>) {
        for line in lines {
            self.content.push_str(&line);
            self.pending.push_back(Delta::text(line));
        }
    }

    fn thinking(&mut self, lines: impl IntoIterator<Item = String>) {
        if self.config.stderr_as == StderrAs::Thinking {
            self.pending.extend(lines.into_iter().map(Delta::thinking));
        }
    }

    /// Kills the group, reaps the program and says how long it was allowed.
    async fn time_out(&mut self) -> RuntimeError {
        self.group.kill();
        // After SIGKILL the wait is short; bounded all the same.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let ms = self.config.timeout_ms.unwrap_or_default();
        let tail = self.tail.text();
        let mut message = format!(
            "`{}` ran longer than {ms} ms and was killed",
            label(&self.config)
        );
        if !tail.is_empty() {
            message.push_str("; stderr: ");
            message.push_str(&tail);
        }
        RuntimeError::timeout(message)
            .with_metadata(json!({ "timeout_ms": ms, "stderr_tail": tail }))
    }

    /// The result once the program exited and its output was read.
    fn finish(&mut self) -> Result<TurnOutput, RuntimeError> {
        let status = self
            .status
            .ok_or_else(|| RuntimeError::internal("the program's status is unknown"))?;
        let content = std::mem::take(&mut self.content);
        if status.success() {
            return Ok(TurnOutput::new(content).with_metadata(json!({ "exit_code": 0 })));
        }
        let tail = self.tail.text();
        let what = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => format!("was killed by signal {signal}"),
            (None, None) => "failed".to_owned(),
        };
        let mut message = format!("`{}` {what}", label(&self.config));
        if !tail.is_empty() {
            message.push_str(": ");
            message.push_str(&tail);
        }
        Err(RuntimeError::internal(message).with_metadata(json!({
            "exit_code": status.code(),
            "signal": status.signal(),
            "stderr_tail": tail,
        })))
    }
}

/// Reads from a pipe, or waits forever when it is closed.
async fn read_some<R: AsyncRead + Unpin>(
    pipe: Option<&mut R>,
    buf: &mut [u8],
) -> io::Result<usize> {
    match pipe {
        Some(pipe) => pipe.read(buf).await,
        None => pending().await,
    }
}

/// Drives the stdin writer, or waits forever when there is none.
async fn write_stdin(writer: &mut Option<StdinWriter>) {
    match writer {
        Some(writer) => writer.as_mut().await,
        None => pending().await,
    }
}

/// Sleeps until the instant, or forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => pending().await,
    }
}
