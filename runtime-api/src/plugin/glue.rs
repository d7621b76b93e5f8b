//! The plugin side of the boundary, generated for every exported runtime.
//!
//! Every entry point here is a place where plugin code runs on behalf of the host, so every one
//! of them goes through [`guard`] (or a guarded future or stream): the runtime id is set for log
//! forwarding, the plugin's tokio runtime is entered where plugin code may need it, and a panic
//! is caught and returned as a `panicked` error. abi_stable would otherwise end the process
//! ("Attempted to panic across the ffi boundary"), and async-ffi aborts when a future's
//! destructor panics.
//!
//! A turn runs in one of two ways, as the host asks ([`AbiTurnOptions`]):
//! - *inline*: the author's future or stream is polled on the host's task, inside the plugin's
//!   scope: the fastest way, but a plugin that blocks its thread blocks the host's;
//! - *spawned*: it runs as a task on the plugin's own tokio runtime, and the host polls only a
//!   channel, so the host's timeouts and cancellation never wait on a plugin poll.
//!
//! Either way a turn is registered for cancellation by its execution id when it is started,
//! before the host gets it back, so `cancel(id)` right after starting a turn always reaches it.

use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RErr, ROk, RResult, RStr, RString, RVec};
use async_ffi::{FfiContext, FfiFuture, FfiPoll, FutureExt as _};
use futures::future::{AbortHandle, AbortRegistration, Abortable, Aborted};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt as _};
use pin_project_lite::pin_project;
use serde_json::Value;
use slab::Slab;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::scope::{Scope, TurnScope};
use crate::abi::{
    AbiDeltaStream, AbiDeltaStream_TO, AbiRuntime, AbiRuntime_TO, AbiRuntimeBox, AbiRuntimeEntry,
    AbiRuntimeError, AbiRuntimeInfo, AbiStreamItem, AbiStreamResult, AbiTurnOptions, AbiTurnOutput,
    AbiTurnRequest, AbiTurnStream, PluginModule, PluginModuleRef,
};
use crate::manifest::ConstRuntime;
use crate::{Capabilities, Runtime, RuntimeError, StreamItem, TurnOutput, TurnRequest};

/// Stream items that may wait between a spawned stream's task and the host, by default.
const DEFAULT_CHANNEL_CAPACITY: usize = 64;

/// Runs plugin code inside its [`Scope`], turning a panic into a `panicked` error. `tokio`
/// says whether the plugin's tokio runtime is entered (and started) for it.
pub(crate) fn guard<R>(
    runtime_id: &'static str,
    during: &str,
    tokio: bool,
    f: impl FnOnce() -> R,
) -> Result<R, RuntimeError> {
    let _scope = Scope::enter(runtime_id, tokio);
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let error = RuntimeError::from_panic(payload.as_ref(), during);
        // The payload's own destructor may panic too (rust-lang/rust#86027).
        let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
        error
    })
}

fn flatten<T, A>(
    result: Result<Result<T, RuntimeError>, RuntimeError>,
) -> RResult<A, AbiRuntimeError>
where
    T: Into<A>,
{
    match result {
        Ok(Ok(value)) => ROk(value.into()),
        Ok(Err(error)) | Err(error) => RErr(error.into()),
    }
}

fn cancelled_by_id() -> RuntimeError {
    RuntimeError::cancelled("the turn was cancelled by its execution id")
}

pin_project! {
    /// A plugin future that polls and drops inside its scope and turns a panic into an error.
    struct GuardedFuture<F> {
        #[pin]
        inner: Option<F>,
        runtime_id: &'static str,
        execution_id: Option<Arc<str>>,
    }

    impl<F> PinnedDrop for GuardedFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let mut inner = this.inner;
            // A finished turn released its future inside its last poll's scope.
            if inner.is_some() {
                let _ = guard(this.runtime_id, "a turn's destructor", true, || inner.set(None));
            }
        }
    }
}

impl<F, T> Future for GuardedFuture<F>
where
    F: Future<Output = Result<T, RuntimeError>>,
{
    type Output = Result<T, RuntimeError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut inner = this.inner;
        if inner.is_none() {
            return Poll::Ready(Err(RuntimeError::internal(
                "the turn was polled after it finished",
            )));
        }
        let _turn = this.execution_id.as_ref().map(TurnScope::enter);
        // One scope for the poll and, when the turn is over, for releasing the author's
        // future: its destructor runs where its code ran.
        let polled = guard(this.runtime_id, "run_turn", true, || {
            let polled = match inner.as_mut().as_pin_mut() {
                Some(future) => future.poll(cx),
                None => Poll::Pending,
            };
            if polled.is_ready() {
                release(inner.as_mut());
            }
            polled
        });
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(result)) => Poll::Ready(result),
            Err(panicked) => {
                let _ = guard(this.runtime_id, "a turn's destructor", true, || {
                    inner.set(None)
                });
                Poll::Ready(Err(panicked))
            }
        }
    }
}

/// Drops a finished author's future inside the scope its code ran in. A panic in its
/// destructor is caught (the plugin's panic hook has logged it) and the turn's result stands.
fn release<F>(mut inner: Pin<&mut Option<F>>) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| inner.set(None))) {
        // The payload's own destructor may panic too (rust-lang/rust#86027).
        let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
    }
}

pin_project! {
    /// A stream that polls and drops inside its scope, turns a panic into a terminal error,
    /// ends after its final item or first error, and reports a turn cancelled by id as a
    /// `cancelled` error.
    struct GuardedStream<S> {
        #[pin]
        inner: Option<S>,
        runtime_id: &'static str,
        execution_id: Option<Arc<str>>,
        abort: Option<AbortHandle>,
    }

    impl<S> PinnedDrop for GuardedStream<S> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let mut inner = this.inner;
            // An ended stream released the author's stream inside its last poll's scope.
            if inner.is_some() {
                let _ = guard(this.runtime_id, "a stream's destructor", true, || {
                    inner.set(None)
                });
            }
        }
    }
}

impl<S> Stream for GuardedStream<S>
where
    S: Stream<Item = Result<StreamItem, RuntimeError>>,
{
    type Item = Result<StreamItem, RuntimeError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let mut inner = this.inner;
        let Some(stream) = inner.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        let _turn = this.execution_id.as_ref().map(TurnScope::enter);
        let polled = guard(this.runtime_id, "the stream's poll", true, || {
            stream.poll_next(cx)
        });
        let end_with = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(Some(Ok(item)))) => {
                if matches!(item, StreamItem::Done(_)) {
                    let _ = guard(this.runtime_id, "a stream's destructor", true, || {
                        inner.set(None)
                    });
                }
                return Poll::Ready(Some(Ok(item)));
            }
            Ok(Poll::Ready(Some(Err(error)))) => Some(error),
            Ok(Poll::Ready(None)) => this
                .abort
                .as_ref()
                .filter(|handle| handle.is_aborted())
                .map(|_| cancelled_by_id()),
            Err(panicked) => Some(panicked),
        };
        let _ = guard(this.runtime_id, "a stream's destructor", true, || {
            inner.set(None)
        });
        Poll::Ready(end_with.map(Err))
    }
}

impl<S> GuardedStream<S>
where
    S: Stream<Item = Result<StreamItem, RuntimeError>>,
{
    /// Polls up to `max` items inside one scope (entering it per item would cost more than
    /// a small delta), handing each to `push`. `Ready(true)` when the stream has ended
    /// (after its final item, its first error, a panic or its end), `Ready(false)` when the
    /// batch is full or the stream has nothing more ready, `Pending` when nothing was ready.
    fn poll_batch(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        max: usize,
        mut push: impl FnMut(Result<StreamItem, RuntimeError>),
    ) -> Poll<bool> {
        let this = self.project();
        let mut inner = this.inner;
        if inner.is_none() {
            return Poll::Ready(true);
        }
        let _turn = this.execution_id.as_ref().map(TurnScope::enter);
        let abort = this.abort.as_ref();
        let polled = guard(this.runtime_id, "the stream's poll", true, || {
            let Some(mut stream) = inner.as_mut().as_pin_mut() else {
                return Poll::Ready(true);
            };
            let mut added = 0;
            let ended = loop {
                match stream.as_mut().poll_next(cx) {
                    Poll::Pending if added == 0 => return Poll::Pending,
                    Poll::Pending => break false,
                    Poll::Ready(Some(Ok(item))) => {
                        let last = matches!(item, StreamItem::Done(_));
                        push(Ok(item));
                        added += 1;
                        if last {
                            break true;
                        }
                        if added >= max {
                            break false;
                        }
                    }
                    Poll::Ready(Some(Err(error))) => {
                        push(Err(error));
                        break true;
                    }
                    Poll::Ready(None) => {
                        if abort.is_some_and(AbortHandle::is_aborted) {
                            push(Err(cancelled_by_id()));
                        }
                        break true;
                    }
                }
            };
            if ended {
                // Released where its code ran.
                release(inner.as_mut());
            }
            Poll::Ready(ended)
        });
        match polled {
            Ok(polled) => polled,
            Err(panicked) => {
                push(Err(panicked));
                let _ = guard(this.runtime_id, "a stream's destructor", true, || {
                    inner.set(None)
                });
                Poll::Ready(true)
            }
        }
    }
}

/// The running turns of one runtime object, so `cancel(execution id)` can reach them; and how
/// many of its turns run as tasks on the plugin's runtime, so a host can wait until the plugin
/// has released them all (a task stopped by the host is dropped by the plugin's runtime shortly
/// after, on its own threads).
///
/// Registering and releasing a turn happen on every turn; cancelling by id is rare. So turns
/// sit in a slab (a turn's ticket is its slot: no hashing, no allocation once the slab has
/// grown) and `cancel` scans it.
#[derive(Default)]
struct Turns {
    running: Mutex<Slab<(Arc<str>, AbortHandle)>>,
    live_tasks: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Counts a task as live until the task (and the turn it runs) is dropped.
struct LiveTask(Arc<Turns>);

impl LiveTask {
    fn new(turns: &Arc<Turns>) -> Self {
        turns.live_tasks.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(turns))
    }
}

impl Drop for LiveTask {
    fn drop(&mut self) {
        if self.0.live_tasks.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The extension call that waits until no task of the runtime object is live.
pub(crate) const WAIT_IDLE: &str = "agent_runtimes.wait_idle";

impl Turns {
    /// Resolves once no task of this runtime object is live.
    async fn wait_idle(self: Arc<Self>) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.live_tasks.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Keeps a turn registered while it runs: its slot in [`Turns::running`].
struct TurnTicket {
    turns: Arc<Turns>,
    execution_id: Arc<str>,
    slot: usize,
}

/// A turn's registration for cancellation by id.
struct Registration {
    handle: AbortHandle,
    registration: AbortRegistration,
    ticket: TurnTicket,
}

impl Registration {
    fn execution_id(&self) -> Arc<str> {
        Arc::clone(&self.ticket.execution_id)
    }
}

impl Turns {
    /// Registers a turn; turns without an execution id cannot be cancelled by id.
    fn register(self: &Arc<Self>, execution_id: &str) -> Option<Registration> {
        if execution_id.is_empty() {
            return None;
        }
        let (handle, registration) = AbortHandle::new_pair();
        let execution_id: Arc<str> = Arc::from(execution_id);
        let slot = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((Arc::clone(&execution_id), handle.clone()));
        let ticket = TurnTicket {
            turns: Arc::clone(self),
            execution_id,
            slot,
        };
        Some(Registration {
            handle,
            registration,
            ticket,
        })
    }

    /// Aborts every running turn of `execution_id` (the same id may run more than once).
    fn cancel(&self, execution_id: &str) -> bool {
        let matching: Vec<AbortHandle> = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, (id, _))| &**id == execution_id)
            .map(|(_, (_, handle))| handle.clone())
            .collect();
        // Aborted outside the lock: an abort wakes the turn's task, which may end the turn
        // (and release its slot) before this returns.
        matching.iter().for_each(AbortHandle::abort);
        !matching.is_empty()
    }
}

impl Drop for TurnTicket {
    fn drop(&mut self) {
        let released = self
            .turns
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_remove(self.slot);
        // Dropped outside the lock: the abort handle and the id are the last references.
        drop(released);
    }
}

/// A task on the plugin's runtime, aborted when its handle is dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<Result<T, RuntimeError>> {
    type Output = Result<T, RuntimeError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.unwrap_or_else(|error| {
                Err(if error.is_panic() {
                    RuntimeError::new(
                        crate::ErrorKind::Panicked,
                        "plugin code panicked in the turn's task",
                    )
                } else {
                    RuntimeError::cancelled("the turn's task was stopped")
                })
            })
        })
    }
}

/// Starts a task on the plugin's runtime, counted live in `turns` until it is dropped, or says
/// why it cannot.
fn spawn<F>(turns: &Arc<Turns>, future: F) -> Result<AbortOnDrop<F::Output>, RuntimeError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handle = crate::plugin::runtime::handle().ok_or_else(|| {
        RuntimeError::unavailable("the plugin's tokio runtime could not be started")
    })?;
    let live = LiveTask::new(turns);
    Ok(AbortOnDrop(handle.spawn(async move {
        let _live = live;
        future.await
    })))
}

pin_project! {
    /// A turn's future as the host polls it: ended early with `cancelled` when the turn is
    /// cancelled by id, and registered for that while it runs. One flat future, so the
    /// author's (often large) future is not moved from state to state. The turn is released
    /// as soon as it ends (a spawned turn's task is stopped then, not when the host drops
    /// this), and a poll after the end is an error.
    struct CancellableTurn<F> {
        #[pin]
        turn: Option<Abortable<F>>,
        ticket: Option<TurnTicket>,
    }
}

impl<F> CancellableTurn<F> {
    fn new(turn: F, registration: Option<Registration>) -> Self {
        let (registration, ticket) = match registration {
            Some(Registration {
                registration,
                ticket,
                ..
            }) => (registration, Some(ticket)),
            // Nothing can cancel it by id: an unregistered pair that is never aborted.
            None => (AbortHandle::new_pair().1, None),
        };
        CancellableTurn {
            turn: Some(Abortable::new(turn, registration)),
            ticket,
        }
    }
}

impl<F> Future for CancellableTurn<F>
where
    F: Future<Output = Result<TurnOutput, RuntimeError>>,
{
    type Output = RResult<AbiTurnOutput, AbiRuntimeError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(turn) = this.turn.as_mut().as_pin_mut() else {
            return Poll::Ready(RErr(
                RuntimeError::internal("the turn was polled after it finished").into(),
            ));
        };
        let result = match turn.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(result)) => result,
            Poll::Ready(Err(Aborted)) => Err(cancelled_by_id()),
        };
        // Released now: the author's future (dropped inside its scope by `GuardedFuture`), or
        // the spawned task, then the registration.
        this.turn.set(None);
        this.ticket.take();
        Poll::Ready(flatten(Ok(result)))
    }
}

/// An author's runtime wrapped as an [`AbiRuntime`].
struct Glue<T: Runtime> {
    /// Dropped by hand in `Drop`, inside a guard: the author's destructor may panic, and this
    /// drop runs inside abi_stable's `extern "C"` destructor, where a panic would abort.
    runtime: ManuallyDrop<Arc<T>>,
    plugin_version: &'static str,
    turns: Arc<Turns>,
}

fn parse_config(config: RStr<'_>) -> Result<Value, RuntimeError> {
    if config.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(config.as_str()).map_err(|e| {
        RuntimeError::invalid_config(format!("the configuration is not valid JSON: {e}"))
    })
}

impl<T: Runtime> Drop for Glue<T> {
    fn drop(&mut self) {
        let runtime = &mut self.runtime;
        let _ = guard(T::ID, "the runtime's destructor", true, || {
            // SAFETY: `runtime` is dropped exactly once, here, and `self` is never used again.
            unsafe { ManuallyDrop::drop(runtime) }
        });
    }
}

type AuthorStream = BoxStream<'static, Result<StreamItem, RuntimeError>>;

impl<T: Runtime> Glue<T> {
    /// The author's stream for a request, built inside the scope.
    fn author_stream(runtime: Arc<T>, request: TurnRequest) -> Result<AuthorStream, RuntimeError> {
        guard(T::ID, "stream_turn", true, || -> AuthorStream {
            Box::pin(runtime.stream_turn(request))
        })
    }

    fn stream_inline(&self, request: TurnRequest) -> Result<StreamGlue, RuntimeError> {
        let registered = self.turns.register(&request.execution_id);
        let execution_id = registered.as_ref().map(Registration::execution_id);
        let stream = Self::author_stream(Arc::clone(&*self.runtime), request)?;
        let (stream, abort, ticket): (AuthorStream, _, _) = match registered {
            None => (stream, None, None),
            Some(r) => (
                Box::pin(Abortable::new(stream, r.registration)),
                Some(r.handle),
                Some(r.ticket),
            ),
        };
        Ok(StreamGlue {
            stream: Box::pin(GuardedStream {
                inner: Some(stream),
                runtime_id: T::ID,
                execution_id,
                abort,
            }),
            _task: None,
            _ticket: ticket,
        })
    }

    fn stream_spawned(
        &self,
        request: TurnRequest,
        capacity: usize,
    ) -> Result<StreamGlue, RuntimeError> {
        let registered = self.turns.register(&request.execution_id);
        let execution_id = registered.as_ref().map(Registration::execution_id);
        let runtime = Arc::clone(&*self.runtime);
        let (sender, mut receiver) = mpsc::channel(capacity.max(1));
        let pump = async move {
            let stream = match Self::author_stream(runtime, request) {
                Ok(stream) => stream,
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return Ok(());
                }
            };
            let mut stream = GuardedStream {
                inner: Some(stream),
                runtime_id: T::ID,
                execution_id,
                abort: None,
            };
            // Sending waits for room: a plugin that produces faster than the host reads is
            // held back here, not buffered without bound.
            while let Some(item) = stream.next().await {
                if sender.send(item).await.is_err() {
                    break;
                }
            }
            Ok::<(), RuntimeError>(())
        };
        let task = spawn(&self.turns, pump)?;
        let received: AuthorStream =
            Box::pin(futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)));
        let (stream, abort, ticket): (AuthorStream, _, _) = match registered {
            None => (received, None, None),
            Some(r) => (
                Box::pin(Abortable::new(received, r.registration)),
                Some(r.handle),
                Some(r.ticket),
            ),
        };
        Ok(StreamGlue {
            stream: Box::pin(GuardedStream {
                inner: Some(stream),
                runtime_id: T::ID,
                execution_id: None,
                abort,
            }),
            _task: Some(task),
            _ticket: ticket,
        })
    }
}

impl<T: Runtime> AbiRuntime for Glue<T> {
    fn info(&self) -> RResult<AbiRuntimeInfo, AbiRuntimeError> {
        flatten(guard(T::ID, "info", false, || {
            let mut info = self.runtime.info();
            if info.version.is_empty() {
                info.version = self.plugin_version.to_owned();
            }
            info.capabilities = info.capabilities.with(Capabilities::CANCELLATION);
            Ok(info)
        }))
    }

    fn supports(&self, model: RStr<'_>) -> RResult<bool, AbiRuntimeError> {
        flatten(guard(T::ID, "supports", false, || {
            Ok(self.runtime.supports(model.as_str()))
        }))
    }

    fn run_turn(
        &self,
        request: AbiTurnRequest,
        options: AbiTurnOptions,
    ) -> FfiFuture<RResult<AbiTurnOutput, AbiRuntimeError>> {
        crate::logging::refresh_level();
        let request = TurnRequest::from(request);
        let registered = self.turns.register(&request.execution_id);
        let runtime = Arc::clone(&*self.runtime);
        // The author's future is created at its first poll, inside the scope.
        let guarded = GuardedFuture {
            inner: Some(async move { runtime.run_turn(request).await }),
            runtime_id: T::ID,
            execution_id: registered.as_ref().map(Registration::execution_id),
        };
        if options.spawned() {
            match spawn(&self.turns, guarded) {
                Ok(task) => CancellableTurn::new(task, registered).into_ffi(),
                Err(error) => async move { RErr(error.into()) }.into_ffi(),
            }
        } else {
            CancellableTurn::new(guarded, registered).into_ffi()
        }
    }

    fn stream_turn(
        &self,
        request: AbiTurnRequest,
        options: AbiTurnOptions,
    ) -> RResult<AbiTurnStream, AbiRuntimeError> {
        crate::logging::refresh_level();
        let request = TurnRequest::from(request);
        let glue = if options.spawned() {
            let capacity = match options.channel_capacity {
                0 => DEFAULT_CHANNEL_CAPACITY,
                n => n as usize,
            };
            self.stream_spawned(request, capacity)
        } else {
            self.stream_inline(request)
        };
        match glue {
            Ok(glue) => ROk(AbiDeltaStream_TO::from_value(glue, TD_Opaque)),
            Err(error) => RErr(error.into()),
        }
    }

    fn cancel(&self, execution_id: RStr<'_>) -> RResult<bool, AbiRuntimeError> {
        flatten(guard(T::ID, "cancel", false, || {
            let ended = self.turns.cancel(execution_id.as_str());
            let released = self.runtime.cancel(execution_id.as_str());
            Ok(ended || released)
        }))
    }

    fn health(&self) -> FfiFuture<RResult<RString, AbiRuntimeError>> {
        let runtime = Arc::clone(&*self.runtime);
        let guarded = GuardedFuture {
            inner: Some(async move { runtime.health().await }),
            runtime_id: T::ID,
            execution_id: None,
        };
        async move { flatten::<_, RString>(Ok(guarded.await)) }.into_ffi()
    }

    fn extension(
        &self,
        name: RStr<'_>,
        payload: RStr<'_>,
    ) -> FfiFuture<RResult<RString, AbiRuntimeError>> {
        if name.as_str() == WAIT_IDLE {
            let turns = Arc::clone(&self.turns);
            return async move {
                turns.wait_idle().await;
                ROk(RString::new())
            }
            .into_ffi();
        }
        let runtime = Arc::clone(&*self.runtime);
        let name = name.as_str().to_owned();
        let payload = parse_config(payload);
        let guarded = GuardedFuture {
            inner: Some(async move { runtime.extension(&name, payload?).await }),
            runtime_id: T::ID,
            execution_id: None,
        };
        async move {
            match guarded.await {
                Ok(value) => ROk(crate::convert::json_to_abi(&value)),
                Err(error) => RErr(error.into()),
            }
        }
        .into_ffi()
    }
}

/// A guarded stream as an [`AbiDeltaStream`].
struct StreamGlue {
    stream: Pin<Box<GuardedStream<AuthorStream>>>,
    /// The task producing the items, when the turn runs spawned; aborted on drop.
    _task: Option<AbortOnDrop<Result<(), RuntimeError>>>,
    _ticket: Option<TurnTicket>,
}

impl AbiDeltaStream for StreamGlue {
    fn poll_batch(
        &mut self,
        cx: &mut FfiContext<'_>,
        out: &mut RVec<AbiStreamResult>,
        max: u32,
    ) -> FfiPoll<bool> {
        let max = max.max(1) as usize;
        cx.with_context(|cx| {
            let polled = self.stream.as_mut().poll_batch(cx, max, |item| {
                out.push(match item {
                    Ok(item) => ROk(AbiStreamItem::from(item)),
                    Err(error) => RErr(AbiRuntimeError::from(error)),
                });
            });
            match polled {
                Poll::Pending => FfiPoll::Pending,
                Poll::Ready(ended) => FfiPoll::Ready(ended),
            }
        })
    }
}

/// What the export macro declares about a plugin crate.
#[doc(hidden)]
pub trait PluginDefinition: 'static {
    /// The plugin package's name.
    const NAME: &'static str;
    /// The plugin package's version.
    const VERSION: &'static str;
    /// The runtime entries, in declaration order.
    fn entries() -> Vec<AbiRuntimeEntry>;
}

/// The compile-time description of a runtime, for the embedded manifest.
#[doc(hidden)]
pub const fn const_runtime<T: Runtime>() -> ConstRuntime {
    assert!(
        crate::ids::is_valid_id(T::ID),
        "a runtime id must be lower-case [a-z0-9][a-z0-9._-]{{0,63}}"
    );
    let mut i = 0;
    while i < T::ALIASES.len() {
        assert!(
            crate::ids::is_valid_id(T::ALIASES[i]),
            "a runtime alias must be lower-case [a-z0-9][a-z0-9._-]{{0,63}}"
        );
        i += 1;
    }
    ConstRuntime {
        id: T::ID,
        display_name: T::DISPLAY_NAME,
        description: T::DESCRIPTION,
        aliases: T::ALIASES,
        capabilities: T::CAPABILITIES.with(Capabilities::CANCELLATION),
        config_schema: T::CONFIG_SCHEMA,
    }
}

/// The root-module entry of a runtime.
#[doc(hidden)]
pub fn entry<P: PluginDefinition, T: Runtime>() -> AbiRuntimeEntry {
    let described = const_runtime::<T>();
    AbiRuntimeEntry {
        id: described.id.into(),
        display_name: described.display_name.into(),
        description: described.description.into(),
        aliases: described
            .aliases
            .iter()
            .map(|a| RString::from(*a))
            .collect(),
        capabilities: described.capabilities,
        config_schema: described.config_schema.into(),
        validate_config: validate_config::<T>,
        factory: factory::<P, T>,
    }
}

/// Every problem with a configuration: not JSON, or what the runtime finds.
fn problems<T: Runtime>(config: &Result<Value, RuntimeError>) -> Vec<String> {
    match config {
        Ok(config) => T::validate_config(config),
        Err(error) => vec![error.message.clone()],
    }
}

extern "C" fn validate_config<T: Runtime>(
    config: RStr<'_>,
) -> RResult<RVec<RString>, AbiRuntimeError> {
    flatten(guard(T::ID, "validate_config", false, || {
        let found = problems::<T>(&parse_config(config));
        Ok(found.into_iter().map(RString::from).collect::<RVec<_>>())
    }))
}

extern "C" fn factory<P: PluginDefinition, T: Runtime>(
    config: RStr<'_>,
) -> RResult<AbiRuntimeBox, AbiRuntimeError> {
    flatten(guard(T::ID, "the factory", false, || {
        build::<T>(parse_config(config), P::VERSION)
    }))
}

/// Checks the configuration, then builds a runtime object with its glue; a panic in the
/// author's code is the caller's to catch.
fn build<T: Runtime>(
    config: Result<Value, RuntimeError>,
    version: &'static str,
) -> Result<AbiRuntimeBox, RuntimeError> {
    let found = problems::<T>(&config);
    if !found.is_empty() {
        return Err(RuntimeError::invalid_config(format!(
            "the configuration of `{}` has {} problem{}: {}",
            T::ID,
            found.len(),
            if found.len() == 1 { "" } else { "s" },
            found.join("; ")
        ))
        .with_metadata(serde_json::json!({ "problems": found })));
    }
    let glue = Glue {
        runtime: ManuallyDrop::new(Arc::new(T::new(config?)?)),
        plugin_version: version,
        turns: Arc::default(),
    };
    Ok(AbiRuntime_TO::from_value(glue, TD_Opaque))
}

/// Builds a runtime compiled into the host as the same runtime object a plugin's factory
/// returns, so it gets the same guarantees (panics caught, cancellation by id, stream
/// contract). `version` is what its `info` reports when the runtime leaves it empty.
pub(crate) fn in_process<T: Runtime>(
    config: Value,
    version: &'static str,
) -> Result<AbiRuntimeBox, RuntimeError> {
    guard(T::ID, "the factory", false, || {
        build::<T>(Ok(config), version)
    })?
}

/// Every problem with a configuration of a runtime compiled into the host.
pub(crate) fn in_process_problems<T: Runtime>(config: &Value) -> Result<Vec<String>, RuntimeError> {
    guard(T::ID, "validate_config", false, || {
        T::validate_config(config)
    })
}

extern "C" fn runtimes<P: PluginDefinition>() -> RResult<RVec<AbiRuntimeEntry>, AbiRuntimeError> {
    flatten(guard("", "the runtime list", false, || {
        Ok(P::entries().into_iter().collect::<RVec<_>>())
    }))
}

/// Builds a plugin's root module.
#[doc(hidden)]
pub fn root_module<P: PluginDefinition>() -> PluginModuleRef {
    use abi_stable::prefix_type::PrefixTypeTrait;
    PluginModule {
        contract: crate::version::CONTRACT_VERSION,
        api_version: RStr::from_str(crate::version::API_VERSION_STR),
        plugin_name: RStr::from_str(P::NAME),
        plugin_version: RStr::from_str(P::VERSION),
        runtimes: runtimes::<P>,
        install_log_sink: crate::logging::install_log_sink,
    }
    .leak_into_prefix()
}

/// The function abi_stable's loader calls to get the root module.
#[doc(hidden)]
pub extern "C" fn root_module_loader<P: PluginDefinition>() -> abi_stable::library::RootModuleResult
{
    abi_stable::library::__call_root_module_loader(root_module::<P>)
}
