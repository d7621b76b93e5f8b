//! The host's handle on a resolved runtime: turns, streams, cancellation, timeouts, hooks.
//!
//! About 700 lines: the handle and its two turn types share the hooks, the span and the
//! timeout, and read best together.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use runtime_api::host::{RemoteRuntime, RemoteStream, RemoteTurn};

use runtime_api::{
    Capabilities, RuntimeError, RuntimeInfo, StreamItem, TurnOutput, TurnRequest, Value,
};
use runtime_process::{ProcessRuntime, ProcessStream, ProcessTurn};
use tracing::{Span, field::Empty};

use crate::execution_id::ExecutionId;
use crate::hooks::{HookList, TurnContext, TurnHook, call_hooks};
use crate::isolation::Isolation;

/// The hooks installed on a registry, shared with every handle it resolves.
pub(crate) type Hooks = Arc<HookList>;

/// A turn's hooks (the registry's when it started) and what they are told about it.
struct Hooked {
    hooks: Arc<[Arc<dyn TurnHook>]>,
    context: TurnContext,
}

/// Checks a configuration for the runtime without creating it.
pub(crate) type Validator = Arc<dyn Fn(&Value) -> Result<Vec<String>, RuntimeError> + Send + Sync>;

/// Where a handle's runtime object lives.
pub(crate) enum Backend {
    /// Loaded in this process (*inline* and *threads*).
    InProcess(RemoteRuntime),
    /// In a worker process (*process*).
    Process(ProcessRuntime),
}

struct Shared {
    id: String,
    capabilities: Capabilities,
    runtime: Backend,
    hooks: Hooks,
    validator: Validator,
}

/// A resolved runtime. Cheap to clone; clones share the runtime object.
///
/// Every turn gets an execution id (the request's, or a generated one), a `tracing` span
/// `turn` with the runtime id, execution id, finish reason and usage, and the registry's hooks:
/// `before_turn` when it starts, then exactly one `after_turn` or `on_error`, however it ends
/// (finished, failed, refused, timed out, cancelled or dropped).
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use runtime_loader::{Runtimes, SearchPath};
/// use runtime_api::TurnRequest;
///
/// let runtimes = Runtimes::new();
/// runtimes.discover(&SearchPath::standard(["./plugins"]));
/// let echo = runtimes.resolve("parrot")?;
/// let turn = echo.run_turn(TurnRequest::new("hello"));
/// println!("running as {}", turn.execution_id());
/// let output = turn.await?;
/// assert_eq!(output.content, "hello");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RuntimeHandle {
    shared: Arc<Shared>,
    timeout: Option<Duration>,
    isolation: Isolation,
}

impl fmt::Debug for RuntimeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeHandle")
            .field("id", &self.shared.id)
            .field("capabilities", &self.shared.capabilities)
            .field("timeout", &self.timeout)
            .field("isolation", &self.isolation)
            .finish()
    }
}

fn timeout_error(timeout: Duration) -> RuntimeError {
    RuntimeError::timeout(format!("the turn did not finish within {timeout:?}"))
}

fn dropped_error() -> RuntimeError {
    RuntimeError::cancelled("the turn was dropped before it finished")
}

impl RuntimeHandle {
    pub(crate) fn new(
        id: String,
        capabilities: Capabilities,
        runtime: Backend,
        hooks: Hooks,
        validator: Validator,
        isolation: Isolation,
    ) -> Self {
        let isolation = match runtime {
            Backend::Process(_) => Isolation::Process,
            Backend::InProcess(_) if isolation == Isolation::Process => Isolation::Threads,
            Backend::InProcess(_) => isolation,
        };
        Self {
            shared: Arc::new(Shared {
                id,
                capabilities,
                runtime,
                hooks,
                validator,
            }),
            timeout: None,
            isolation,
        }
    }

    /// The runtime's id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// What the runtime declared it can do.
    pub fn capabilities(&self) -> Capabilities {
        self.shared.capabilities
    }

    /// The per-turn timeout of this handle, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The isolation level this handle's turns run at.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// A handle on the same runtime whose turns end with a `timeout` error after `timeout`.
    /// The timed-out turn is dropped, which cancels it inside the plugin. At the *threads*
    /// level the error comes on time even if the plugin blocks its thread.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout: Some(timeout),
            ..self.clone()
        }
    }

    /// A handle on the same runtime object whose turns run at `isolation`: *inline* and
    /// *threads* switch freely. The runtime object cannot move between the host and a worker
    /// process: to run a runtime at the *process* level (or to bring it back), set its level
    /// with [`Runtimes::set_isolation`](crate::Runtimes::set_isolation) (or
    /// [`LoaderOptions::isolation`](crate::LoaderOptions)) and resolve it again. Asked to
    /// cross, this returns the handle unchanged and logs a warning; [`RuntimeHandle::isolation`]
    /// always tells the level in force.
    pub fn with_isolation(&self, isolation: Isolation) -> Self {
        if isolation.in_process() != self.isolation.in_process() {
            tracing::warn!(
                runtime = %self.shared.id,
                "a handle at the {} level cannot switch to the {isolation} level: resolve the runtime again after Runtimes::set_isolation",
                self.isolation
            );
            return self.clone();
        }
        Self {
            isolation,
            ..self.clone()
        }
    }

    /// What the runtime says about itself.
    ///
    /// # Errors
    ///
    /// The runtime's error, or `panicked`.
    pub fn info(&self) -> Result<RuntimeInfo, RuntimeError> {
        match &self.shared.runtime {
            Backend::InProcess(runtime) => runtime.info(),
            Backend::Process(runtime) => runtime.info(),
        }
    }

    /// Whether the runtime serves this model.
    ///
    /// # Errors
    ///
    /// The runtime's error, or `panicked`.
    /// At the *process* level this asks the worker and waits for its answer.
    pub fn supports(&self, model: &str) -> Result<bool, RuntimeError> {
        match &self.shared.runtime {
            Backend::InProcess(runtime) => runtime.supports(model),
            Backend::Process(runtime) => runtime.supports(model),
        }
    }

    /// Every problem with a configuration for this runtime; empty when it is valid.
    ///
    /// # Errors
    ///
    /// `panicked` when the runtime's validation panicked.
    pub fn validate_config(&self, config: &Value) -> Result<Vec<String>, RuntimeError> {
        (self.shared.validator)(config)
    }

    /// Checks that the runtime can serve turns.
    ///
    /// # Errors
    ///
    /// Why it cannot.
    ///
    /// At the *process* level the worker is pinged first, and killed when it does not answer
    /// within the grace period.
    pub async fn health(&self) -> Result<String, RuntimeError> {
        match &self.shared.runtime {
            Backend::InProcess(runtime) => runtime.health().await,
            Backend::Process(runtime) => runtime.health().await,
        }
    }

    /// Waits until none of this runtime object's turns still runs inside the plugin: at the
    /// *threads* level a stopped turn is released by the plugin's own threads shortly after it
    /// is dropped. A host about to exit calls this (with a bound: a blocked plugin may never be
    /// idle) so that plugins' cleanup runs first.
    ///
    /// # Errors
    ///
    /// The runtime's error, or `panicked`.
    pub async fn wait_idle(&self) -> Result<(), RuntimeError> {
        match &self.shared.runtime {
            Backend::InProcess(runtime) => runtime.wait_idle().await,
            // A worker ends what it runs when its turns are dropped, and dies with the host.
            Backend::Process(_) => Ok(()),
        }
    }

    /// A named call the runtime offers beyond turns (see `runtime_api::version`).
    ///
    /// # Errors
    ///
    /// `unsupported` when the runtime has no such call; the call's own error.
    pub async fn extension(&self, name: &str, payload: &Value) -> Result<Value, RuntimeError> {
        match &self.shared.runtime {
            Backend::InProcess(runtime) => runtime.extension(name, payload).await,
            Backend::Process(runtime) => runtime.extension(name, payload).await,
        }
    }

    /// Cancels the running turns with this execution id (they end with a `cancelled` error);
    /// `true` if one was running. A turn is registered when it is started, so cancelling
    /// right after `run_turn` or `stream_turn` returns always reaches it.
    ///
    /// # Errors
    ///
    /// The runtime's error, or `panicked`.
    ///
    /// At the *process* level the turns end at once; the worker is told, and killed when the
    /// plugin does not let go of them within the grace period.
    pub fn cancel(&self, execution_id: &str) -> Result<bool, RuntimeError> {
        match &self.shared.runtime {
            Backend::InProcess(runtime) => runtime.cancel(execution_id),
            Backend::Process(runtime) => Ok(runtime.cancel(execution_id)),
        }
    }

    fn refuse_undeclared(&self, request: &TurnRequest, streamed: bool) -> Result<(), RuntimeError> {
        let caps = self.shared.capabilities;
        let missing = if streamed && !caps.contains(Capabilities::STREAMING) {
            Some((
                "streaming",
                "STREAMING",
                " and implement `Runtime::stream_turn` (the default answers in one piece)",
            ))
        } else if !request.tools.is_empty() && !caps.contains(Capabilities::TOOLS) {
            Some((
                "tools",
                "TOOLS",
                " and offer `request.tools` to the model in `Runtime::run_turn` (and `stream_turn`), answering with `TurnOutput::tool_calls`",
            ))
        } else if !request.mcp_servers.is_null() && !caps.contains(Capabilities::MCP) {
            Some((
                "mcp",
                "MCP",
                " and use `request.mcp_servers` in `Runtime::run_turn` (and `stream_turn`)",
            ))
        } else {
            None
        };
        match missing {
            None => Ok(()),
            Some((capability, constant, also)) => Err(RuntimeError::unsupported(format!(
                "runtime `{}` does not declare the `{capability}` capability (it declares: {}); use a runtime that does. If you maintain this runtime: add `Capabilities::{constant}` to its `CAPABILITIES`{also}",
                self.shared.id,
                if caps.is_empty() {
                    "none".to_owned()
                } else {
                    caps.to_string()
                }
            ))),
        }
    }

    /// The registry's hooks and what they are told about a turn, when any hook is installed:
    /// turns are hot, and without hooks they do no hook work.
    fn hooked(&self, request: &TurnRequest, streamed: bool) -> Option<Hooked> {
        let hooks = self.shared.hooks.snapshot()?;
        Some(Hooked {
            hooks,
            context: TurnContext {
                runtime_id: self.shared.id.clone(),
                execution_id: request.execution_id.clone(),
                streamed,
            },
        })
    }

    /// Gives the turn an execution id if it has none (returning the id the turn keeps), and
    /// opens its span (nothing is recorded when no subscriber wants it).
    fn start(&self, request: &mut TurnRequest, streamed: bool) -> (ExecutionId, Span) {
        let execution_id = if request.execution_id.is_empty() {
            let (text, generated) = ExecutionId::generate();
            request.execution_id = text;
            generated
        } else {
            ExecutionId::new(&request.execution_id)
        };
        let span = tracing::info_span!(
            "turn",
            runtime = %self.shared.id,
            execution_id = %request.execution_id,
            streamed,
            isolation = self.isolation.as_str(),
            finish_reason = Empty,
            input_tokens = Empty,
            output_tokens = Empty,
            error = Empty,
        );
        (execution_id, span)
    }

    /// Starts one turn: it is registered for [`RuntimeHandle::cancel`] before this returns.
    /// Await the returned [`Turn`] for its output; dropping it cancels the turn inside the
    /// plugin.
    ///
    /// The turn ends with the runtime's error; `unsupported` when the request uses tools or
    /// MCP servers the runtime does not declare; `timeout` when the handle's timeout passes;
    /// `cancelled` after [`RuntimeHandle::cancel`]; `panicked` when plugin code panicked.
    pub fn run_turn(&self, mut request: TurnRequest) -> Turn {
        let (execution_id, span) = self.start(&mut request, false);
        let hooked = self.hooked(&request, false);
        if let Some(Hooked { hooks, context }) = &hooked {
            call_hooks(hooks, "before_turn", |h| h.before_turn(context, &request));
        }
        let state = match self.refuse_undeclared(&request, false) {
            Err(refused) => TurnState::Refused(refused),
            Ok(()) => {
                let _entered = span.enter();
                match &self.shared.runtime {
                    Backend::InProcess(runtime) => {
                        TurnState::Local(runtime.run_turn(request, self.isolation.turn_options()))
                    }
                    Backend::Process(runtime) => TurnState::Process(runtime.run_turn(request)),
                }
            }
        };
        Turn {
            execution_id,
            state,
            timeout: self.timeout,
            sleep: None,
            span,
            hooked,
        }
    }

    /// Starts one turn as a stream: deltas, then exactly one [`StreamItem::Done`]; or an
    /// error as the last item. It is registered for [`RuntimeHandle::cancel`] before this
    /// returns. Dropping the stream cancels the turn inside the plugin.
    ///
    /// A runtime that does not declare `streaming` yields one `unsupported` error: the host
    /// never silently falls back to a single delta.
    pub fn stream_turn(&self, mut request: TurnRequest) -> TurnStream {
        let (execution_id, span) = self.start(&mut request, true);
        let hooked = self.hooked(&request, true);
        if let Some(Hooked { hooks, context }) = &hooked {
            call_hooks(hooks, "before_turn", |h| h.before_turn(context, &request));
        }
        let started = self.refuse_undeclared(&request, true).and_then(|()| {
            let _entered = span.enter();
            match &self.shared.runtime {
                Backend::InProcess(runtime) => runtime
                    .stream_turn(request, self.isolation.turn_options())
                    .map(Streaming::Local),
                Backend::Process(runtime) => Ok(Streaming::Process(runtime.stream_turn(request))),
            }
        });
        let (inner, pending_error) = match started {
            Ok(stream) => (Some(stream), None),
            Err(error) => (None, Some(error)),
        };
        TurnStream {
            execution_id,
            inner,
            pending_error,
            timeout: self.timeout,
            sleep: None,
            span,
            hooked,
            finished: false,
        }
    }
}

/// Records the outcome in the turn's span and calls the hooks.
fn finish(span: &Span, hooked: Option<&Hooked>, result: Result<&TurnOutput, &RuntimeError>) {
    match result {
        Ok(output) => {
            span.record("finish_reason", output.finish_reason.as_str());
            span.record("input_tokens", output.usage.input_tokens);
            span.record("output_tokens", output.usage.output_tokens);
            if let Some(Hooked { hooks, context }) = hooked {
                call_hooks(hooks, "after_turn", |h| h.after_turn(context, output));
            }
        }
        Err(error) => {
            span.record("error", tracing::field::display(error));
            if let Some(Hooked { hooks, context }) = hooked {
                call_hooks(hooks, "on_error", |h| h.on_error(context, error));
            }
        }
    }
}

/// Whether the turn's deadline has passed; starts the clock at the first poll.
fn deadline_passed(
    timeout: Option<Duration>,
    sleep: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    cx: &mut Context<'_>,
) -> Option<RuntimeError> {
    let limit = timeout?;
    let sleep = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
    sleep
        .as_mut()
        .poll(cx)
        .is_ready()
        .then(|| timeout_error(limit))
}

/// A stream in flight, in this process or in a worker.
enum Streaming {
    Local(RemoteStream),
    Process(ProcessStream),
}

impl Stream for Streaming {
    type Item = Result<StreamItem, RuntimeError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            Streaming::Local(stream) => Pin::new(stream).poll_next(cx),
            Streaming::Process(stream) => Pin::new(stream).poll_next(cx),
        }
    }
}

/// Where a turn is: in flight in this process or in a worker, refused before it started, or
/// over. One enum, so a turn is one future whatever its level.
enum TurnState {
    Local(RemoteTurn),
    Process(ProcessTurn),
    Refused(RuntimeError),
    Finished,
}

/// A running turn, from [`RuntimeHandle::run_turn`]: a future of its output that knows its
/// execution id. Dropping it before it finishes cancels the turn inside the plugin.
#[must_use = "a turn does nothing unless awaited, and dropping it cancels it"]
pub struct Turn {
    execution_id: ExecutionId,
    state: TurnState,
    timeout: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    span: Span,
    hooked: Option<Hooked>,
}

impl fmt::Debug for Turn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Turn")
            .field("execution_id", &self.execution_id)
            .field("finished", &matches!(self.state, TurnState::Finished))
            .finish_non_exhaustive()
    }
}

impl Turn {
    /// The turn's execution id, for [`RuntimeHandle::cancel`].
    pub fn execution_id(&self) -> &str {
        self.execution_id.as_str()
    }

    fn end(
        &mut self,
        result: Result<TurnOutput, RuntimeError>,
    ) -> Result<TurnOutput, RuntimeError> {
        self.state = TurnState::Finished;
        self.sleep = None;
        finish(&self.span, self.hooked.as_ref(), result.as_ref());
        result
    }
}

/// Polls a turn in flight: the deadline first (a result that arrives after it is a timeout),
/// then the turn inside the turn's span. `None` while it is pending.
fn poll_running(
    timeout: Option<Duration>,
    sleep: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    span: &Span,
    turn: Pin<&mut impl Future<Output = Result<TurnOutput, RuntimeError>>>,
    cx: &mut Context<'_>,
) -> Option<Result<TurnOutput, RuntimeError>> {
    if let Some(error) = deadline_passed(timeout, sleep, cx) {
        return Some(Err(error));
    }
    let _entered = span.enter();
    match turn.poll(cx) {
        Poll::Pending => None,
        Poll::Ready(result) => Some(result),
    }
}

impl Future for Turn {
    type Output = Result<TurnOutput, RuntimeError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let ready = match &mut this.state {
            TurnState::Finished => {
                return Poll::Ready(Err(RuntimeError::internal(
                    "the turn was polled after it finished",
                )));
            }
            TurnState::Refused(_) => {
                let TurnState::Refused(error) =
                    std::mem::replace(&mut this.state, TurnState::Finished)
                else {
                    return Poll::Pending;
                };
                return Poll::Ready(this.end(Err(error)));
            }
            TurnState::Local(turn) => poll_running(
                this.timeout,
                &mut this.sleep,
                &this.span,
                Pin::new(turn),
                cx,
            ),
            TurnState::Process(turn) => poll_running(
                this.timeout,
                &mut this.sleep,
                &this.span,
                Pin::new(turn),
                cx,
            ),
        };
        // Ended: `end` drops the turn, which cancels it inside the plugin if it still runs
        // (a timeout).
        match ready {
            None => Poll::Pending,
            Some(result) => Poll::Ready(this.end(result)),
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if !matches!(self.state, TurnState::Finished) {
            let error = dropped_error();
            finish(&self.span, self.hooked.as_ref(), Err(&error));
        }
    }
}

/// A streamed turn, from [`RuntimeHandle::stream_turn`].
pub struct TurnStream {
    execution_id: ExecutionId,
    inner: Option<Streaming>,
    pending_error: Option<RuntimeError>,
    timeout: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    span: Span,
    hooked: Option<Hooked>,
    finished: bool,
}

impl fmt::Debug for TurnStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnStream")
            .field("execution_id", &self.execution_id)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl TurnStream {
    /// The turn's execution id, for [`RuntimeHandle::cancel`].
    pub fn execution_id(&self) -> &str {
        self.execution_id.as_str()
    }

    fn end(&mut self, result: Result<&TurnOutput, &RuntimeError>) {
        self.finished = true;
        self.inner = None;
        self.sleep = None;
        finish(&self.span, self.hooked.as_ref(), result);
    }
}

impl Stream for TurnStream {
    type Item = Result<StreamItem, RuntimeError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        if let Some(error) = this.pending_error.take() {
            this.end(Err(&error));
            return Poll::Ready(Some(Err(error)));
        }
        if let Some(error) = deadline_passed(this.timeout, &mut this.sleep, cx) {
            this.end(Err(&error));
            return Poll::Ready(Some(Err(error)));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = {
            let _entered = this.span.enter();
            Pin::new(inner).poll_next(cx)
        };
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                // RemoteStream always ends with a final item or an error first.
                let error = RuntimeError::internal("the stream ended without a final result");
                this.end(Err(&error));
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(Some(item)) => {
                match &item {
                    Ok(StreamItem::Done(output)) => this.end(Ok(output)),
                    Err(error) => this.end(Err(error)),
                    Ok(_) => {}
                }
                Poll::Ready(Some(item))
            }
        }
    }
}

impl Drop for TurnStream {
    fn drop(&mut self) {
        if !self.finished {
            let error = dropped_error();
            finish(&self.span, self.hooked.as_ref(), Err(&error));
        }
    }
}
