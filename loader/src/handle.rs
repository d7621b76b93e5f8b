//! The host's handle on a resolved runtime: turns, streams, cancellation, timeouts, hooks.

use std::fmt::{self, Write as _};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use runtime_api::host::{RemoteRuntime, RemoteStream};
use runtime_api::{
    Capabilities, RuntimeError, RuntimeInfo, StreamItem, TurnOutput, TurnRequest, Value,
};
use tracing::{Instrument as _, Span, field::Empty};

use crate::hooks::{TurnContext, TurnHook};

/// The hooks installed on a registry, shared with every handle it resolves.
pub(crate) type Hooks = Arc<RwLock<Arc<[Arc<dyn TurnHook>]>>>;

pub(crate) fn no_hooks() -> Hooks {
    Arc::new(RwLock::new(Arc::from(Vec::new())))
}

fn snapshot(hooks: &Hooks) -> Arc<[Arc<dyn TurnHook>]> {
    Arc::clone(&hooks.read().unwrap_or_else(PoisonError::into_inner))
}

/// Calls every hook, catching a panicking one so the turn goes on.
fn call_hooks(hooks: &[Arc<dyn TurnHook>], what: &str, f: impl Fn(&dyn TurnHook)) {
    for hook in hooks {
        if catch_unwind(AssertUnwindSafe(|| f(hook.as_ref()))).is_err() {
            tracing::error!(hook = what, "a turn hook panicked; the turn goes on");
        }
    }
}

struct Shared {
    id: String,
    capabilities: Capabilities,
    runtime: RemoteRuntime,
    hooks: Hooks,
}

/// A resolved runtime. Cheap to clone; clones share the runtime object.
///
/// Every turn gets an execution id (the request's, or a generated one), a `tracing` span
/// `turn` with the runtime id, execution id, finish reason and usage, and the registry's hooks.
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
/// let output = echo.run_turn(TurnRequest::new("hello")).await?;
/// assert_eq!(output.content, "hello");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RuntimeHandle {
    shared: Arc<Shared>,
    timeout: Option<Duration>,
}

impl fmt::Debug for RuntimeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeHandle")
            .field("id", &self.shared.id)
            .field("capabilities", &self.shared.capabilities)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `turn-<pid>-<n>`: unique within the process, and across processes in one log.
fn next_execution_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    static PREFIX: OnceLock<String> = OnceLock::new();
    let prefix = PREFIX.get_or_init(|| format!("turn-{}-", std::process::id()));
    let mut id = String::with_capacity(prefix.len() + 20);
    id.push_str(prefix);
    let _ = write!(id, "{}", NEXT.fetch_add(1, Ordering::Relaxed));
    id
}

fn timeout_error(timeout: Duration) -> RuntimeError {
    RuntimeError::timeout(format!("the turn did not finish within {timeout:?}"))
}

impl RuntimeHandle {
    pub(crate) fn new(
        id: String,
        capabilities: Capabilities,
        runtime: RemoteRuntime,
        hooks: Hooks,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                id,
                capabilities,
                runtime,
                hooks,
            }),
            timeout: None,
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

    /// A handle on the same runtime whose turns end with a `timeout` error after `timeout`.
    /// The timed-out turn is dropped, which cancels it inside the plugin.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            timeout: Some(timeout),
        }
    }

    /// What the runtime says about itself.
    ///
    /// # Errors
    ///
    /// The runtime's error, or `panicked`.
    pub fn info(&self) -> Result<RuntimeInfo, RuntimeError> {
        self.shared.runtime.info()
    }

    /// Whether the runtime serves this model.
    ///
    /// # Errors
    ///
    /// The runtime's error, or `panicked`.
    pub fn supports(&self, model: &str) -> Result<bool, RuntimeError> {
        self.shared.runtime.supports(model)
    }

    /// The problems with a configuration for this runtime; empty when it is valid.
    ///
    /// # Errors
    ///
    /// The runtime's error, or `panicked`.
    pub fn validate_config(&self, config: &Value) -> Result<Vec<String>, RuntimeError> {
        self.shared.runtime.validate_config(config)
    }

    /// Checks that the runtime can serve turns.
    ///
    /// # Errors
    ///
    /// Why it cannot.
    pub async fn health(&self) -> Result<String, RuntimeError> {
        self.shared.runtime.health().await
    }

    /// Cancels the running turns with this execution id (they end with a `cancelled` error);
    /// `true` if one was running.
    ///
    /// # Errors
    ///
    /// The runtime's error, or `panicked`.
    pub fn cancel(&self, execution_id: &str) -> Result<bool, RuntimeError> {
        self.shared.runtime.cancel(execution_id)
    }

    fn refuse_undeclared(&self, request: &TurnRequest, streamed: bool) -> Result<(), RuntimeError> {
        let caps = self.shared.capabilities;
        let missing = if streamed && !caps.contains(Capabilities::STREAMING) {
            Some("streaming")
        } else if !request.tools.is_empty() && !caps.contains(Capabilities::TOOLS) {
            Some("tools")
        } else {
            None
        };
        match missing {
            None => Ok(()),
            Some(capability) => Err(RuntimeError::unsupported(format!(
                "runtime `{}` does not declare the `{capability}` capability (it declares: {}); use a runtime that does",
                self.shared.id,
                if caps.is_empty() {
                    "none".to_owned()
                } else {
                    caps.to_string()
                }
            ))),
        }
    }

    /// What hooks are told about a turn.
    fn context(&self, request: &TurnRequest, streamed: bool) -> TurnContext {
        TurnContext {
            runtime_id: self.shared.id.clone(),
            execution_id: request.execution_id.clone(),
            streamed,
        }
    }

    /// Gives the turn an execution id if it has none, and opens its span.
    fn start(&self, request: &mut TurnRequest, streamed: bool) -> Span {
        if request.execution_id.is_empty() {
            request.execution_id = next_execution_id();
        }
        tracing::info_span!(
            "turn",
            runtime = %self.shared.id,
            execution_id = %request.execution_id,
            streamed,
            finish_reason = Empty,
            input_tokens = Empty,
            output_tokens = Empty,
            error = Empty,
        )
    }

    /// Runs one turn. Dropping the returned future cancels the turn inside the plugin.
    ///
    /// # Errors
    ///
    /// The runtime's error; `unsupported` when the request uses tools the runtime does not
    /// declare; `timeout` when the handle's timeout passes; `panicked` when plugin code
    /// panicked.
    pub fn run_turn(
        &self,
        mut request: TurnRequest,
    ) -> impl Future<Output = Result<TurnOutput, RuntimeError>> + Send + 'static + use<> {
        let span = self.start(&mut request, false);
        let hooks = snapshot(&self.shared.hooks);
        let refused = self.refuse_undeclared(&request, false);
        // Turns are hot: what hooks are told is only built when there are hooks.
        let context = (!hooks.is_empty()).then(|| self.context(&request, false));
        if let Some(context) = &context {
            call_hooks(&hooks, "before_turn", |h| h.before_turn(context, &request));
        }
        let turn = refused.map(|()| self.shared.runtime.run_turn(request));
        let timeout = self.timeout;
        let span_for_result = span.clone();
        async move {
            let result = match turn {
                Err(refused) => Err(refused),
                Ok(turn) => match timeout {
                    None => turn.await,
                    Some(limit) => tokio::time::timeout(limit, turn)
                        .await
                        .unwrap_or_else(|_| Err(timeout_error(limit))),
                },
            };
            finish(&span_for_result, &hooks, context.as_ref(), result.as_ref());
            result
        }
        .instrument(span)
    }

    /// Runs one turn as a stream: deltas, then exactly one [`StreamItem::Done`]; or an error
    /// as the last item. Dropping the stream cancels the turn inside the plugin.
    ///
    /// A runtime that does not declare `streaming` yields one `unsupported` error: the host
    /// never silently falls back to a single delta.
    pub fn stream_turn(&self, mut request: TurnRequest) -> TurnStream {
        let span = self.start(&mut request, true);
        let context = self.context(&request, true);
        let hooks = snapshot(&self.shared.hooks);
        call_hooks(&hooks, "before_turn", |h| h.before_turn(&context, &request));
        let started = self.refuse_undeclared(&request, true).and_then(|()| {
            let _entered = span.enter();
            self.shared.runtime.stream_turn(request)
        });
        let (inner, pending_error) = match started {
            Ok(stream) => (Some(stream), None),
            Err(error) => (None, Some(error)),
        };
        TurnStream {
            inner,
            pending_error,
            deadline: self.timeout.map(|t| (t, Box::pin(tokio::time::sleep(t)))),
            span,
            hooks,
            context,
            finished: false,
        }
    }
}

/// Records the outcome in the turn's span and calls the hooks.
fn finish(
    span: &Span,
    hooks: &[Arc<dyn TurnHook>],
    context: Option<&TurnContext>,
    result: Result<&TurnOutput, &RuntimeError>,
) {
    match result {
        Ok(output) => {
            span.record("finish_reason", output.finish_reason.as_str());
            span.record("input_tokens", output.usage.input_tokens);
            span.record("output_tokens", output.usage.output_tokens);
            if let Some(context) = context {
                call_hooks(hooks, "after_turn", |h| h.after_turn(context, output));
            }
        }
        Err(error) => {
            span.record("error", tracing::field::display(error));
            if let Some(context) = context {
                call_hooks(hooks, "on_error", |h| h.on_error(context, error));
            }
        }
    }
}

/// A streamed turn, from [`RuntimeHandle::stream_turn`].
pub struct TurnStream {
    inner: Option<RemoteStream>,
    pending_error: Option<RuntimeError>,
    deadline: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
    span: Span,
    hooks: Arc<[Arc<dyn TurnHook>]>,
    context: TurnContext,
    finished: bool,
}

impl fmt::Debug for TurnStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnStream")
            .field("context", &self.context)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl TurnStream {
    /// The turn's execution id, for [`RuntimeHandle::cancel`].
    pub fn execution_id(&self) -> &str {
        &self.context.execution_id
    }

    fn end(&mut self, result: Result<&TurnOutput, &RuntimeError>) {
        self.finished = true;
        self.inner = None;
        self.deadline = None;
        finish(&self.span, &self.hooks, Some(&self.context), result);
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
        if let Some((limit, sleep)) = this.deadline.as_mut() {
            if sleep.as_mut().poll(cx).is_ready() {
                let error = timeout_error(*limit);
                this.end(Err(&error));
                return Poll::Ready(Some(Err(error)));
            }
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
                this.finished = true;
                Poll::Ready(None)
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
