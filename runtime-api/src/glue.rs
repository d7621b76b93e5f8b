//! The plugin side of the boundary, generated for every exported runtime.
//!
//! Every entry point here is a place where plugin code runs on behalf of the host, so every one
//! of them goes through [`guard`] (or a guarded future or stream): the plugin's tokio runtime is
//! entered, the runtime id is set for log forwarding, and a panic is caught and returned as a
//! `panicked` error. abi_stable would otherwise end the process ("Attempted to panic across the
//! ffi boundary"), and async-ffi aborts when a future's destructor panics.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RErr, ROk, RResult, RStr, RString, RVec};
use async_ffi::{FfiContext, FfiFuture, FfiPoll, FutureExt as _};
use futures::Stream;
use futures::future::{AbortHandle, AbortRegistration, Abortable};
use futures::stream::BoxStream;
use pin_project_lite::pin_project;
use serde_json::Value;
use tokio::runtime::EnterGuard;

use crate::abi::{
    AbiDeltaStream, AbiDeltaStream_TO, AbiRuntime, AbiRuntime_TO, AbiRuntimeBox, AbiRuntimeEntry,
    AbiRuntimeError, AbiRuntimeInfo, AbiStreamItem, AbiTurnOutput, AbiTurnRequest, AbiTurnStream,
    PluginModule, PluginModuleRef,
};
use crate::manifest::ConstRuntime;
use crate::{Capabilities, Runtime, RuntimeError, StreamItem, TurnRequest, plugin_runtime};

thread_local! {
    static CURRENT_RUNTIME: Cell<&'static str> = const { Cell::new("") };
}

/// The id of the runtime whose code runs on this thread right now, or `""`.
pub(crate) fn current_runtime_id() -> &'static str {
    CURRENT_RUNTIME.with(Cell::get)
}

/// What is in force while plugin code runs: the plugin's tokio runtime and the runtime id.
struct Scope {
    previous: &'static str,
    _runtime: Option<EnterGuard<'static>>,
}

impl Scope {
    fn enter(runtime_id: &'static str) -> Self {
        let previous = CURRENT_RUNTIME.with(|c| c.replace(runtime_id));
        Scope {
            previous,
            _runtime: plugin_runtime::enter(),
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        CURRENT_RUNTIME.with(|c| c.set(self.previous));
    }
}

/// Runs plugin code inside its [`Scope`], turning a panic into a `panicked` error.
pub(crate) fn guard<R>(
    runtime_id: &'static str,
    during: &str,
    f: impl FnOnce() -> R,
) -> Result<R, RuntimeError> {
    let _scope = Scope::enter(runtime_id);
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

pin_project! {
    /// A plugin future that polls and drops inside its scope and turns a panic into an error.
    struct GuardedFuture<F> {
        #[pin]
        inner: Option<F>,
        runtime_id: &'static str,
    }

    impl<F> PinnedDrop for GuardedFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let mut inner = this.inner;
            let _ = guard(this.runtime_id, "a turn's destructor", || inner.set(None));
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
        let Some(future) = inner.as_mut().as_pin_mut() else {
            return Poll::Ready(Err(RuntimeError::internal(
                "the turn was polled after it finished",
            )));
        };
        match guard(this.runtime_id, "run_turn", || future.poll(cx)) {
            Ok(poll) => poll,
            Err(panicked) => {
                let _ = guard(this.runtime_id, "a turn's destructor", || inner.set(None));
                Poll::Ready(Err(panicked))
            }
        }
    }
}

pin_project! {
    /// A plugin stream that polls and drops inside its scope, turns a panic into a terminal
    /// error, and reports a cancelled turn as a `cancelled` error.
    struct GuardedStream<S> {
        #[pin]
        inner: Option<S>,
        runtime_id: &'static str,
        abort: Option<AbortHandle>,
    }

    impl<S> PinnedDrop for GuardedStream<S> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let mut inner = this.inner;
            let _ = guard(this.runtime_id, "a stream's destructor", || inner.set(None));
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
        let polled = guard(this.runtime_id, "the stream's poll", || {
            stream.poll_next(cx)
        });
        let end_with = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(Some(Ok(item)))) => {
                if matches!(item, StreamItem::Done(_)) {
                    let _ = guard(this.runtime_id, "a stream's destructor", || inner.set(None));
                }
                return Poll::Ready(Some(Ok(item)));
            }
            Ok(Poll::Ready(Some(Err(error)))) => Some(error),
            Ok(Poll::Ready(None)) => this
                .abort
                .as_ref()
                .filter(|handle| handle.is_aborted())
                .map(|_| RuntimeError::cancelled("the turn was cancelled by its execution id")),
            Err(panicked) => Some(panicked),
        };
        let _ = guard(this.runtime_id, "a stream's destructor", || inner.set(None));
        Poll::Ready(end_with.map(Err))
    }
}

/// The turns running under one execution id: (ticket, abort handle).
type Running = Vec<(u64, AbortHandle)>;

/// The running turns of one runtime object, by execution id, so `cancel` can reach them.
#[derive(Default)]
struct Turns {
    running: Mutex<HashMap<Arc<str>, Running>>,
    next_ticket: AtomicU64,
}

/// Keeps a turn registered while it runs.
struct TurnTicket {
    turns: Arc<Turns>,
    execution_id: Arc<str>,
    ticket: u64,
}

impl Turns {
    /// Registers a turn; turns without an execution id cannot be cancelled by id.
    fn register(
        self: &Arc<Self>,
        execution_id: &str,
    ) -> Option<(AbortHandle, AbortRegistration, TurnTicket)> {
        if execution_id.is_empty() {
            return None;
        }
        let (handle, registration) = AbortHandle::new_pair();
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let execution_id: Arc<str> = Arc::from(execution_id);
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(Arc::clone(&execution_id))
            .or_default()
            .push((ticket, handle.clone()));
        let ticket = TurnTicket {
            turns: Arc::clone(self),
            execution_id,
            ticket,
        };
        Some((handle, registration, ticket))
    }

    fn cancel(&self, execution_id: &str) -> bool {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        match running.get(execution_id) {
            Some(turns) => {
                turns.iter().for_each(|(_, handle)| handle.abort());
                !turns.is_empty()
            }
            None => false,
        }
    }
}

impl Drop for TurnTicket {
    fn drop(&mut self) {
        let mut running = self
            .turns
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(turns) = running.get_mut(&self.execution_id) {
            turns.retain(|(ticket, _)| *ticket != self.ticket);
            if turns.is_empty() {
                running.remove(&self.execution_id);
            }
        }
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
        let _ = guard(T::ID, "the runtime's destructor", || {
            // SAFETY: `runtime` is dropped exactly once, here, and `self` is never used again.
            unsafe { ManuallyDrop::drop(runtime) }
        });
    }
}

impl<T: Runtime> AbiRuntime for Glue<T> {
    fn info(&self) -> RResult<AbiRuntimeInfo, AbiRuntimeError> {
        flatten(guard(T::ID, "info", || {
            let mut info = self.runtime.info();
            if info.version.is_empty() {
                info.version = self.plugin_version.to_owned();
            }
            info.capabilities = info.capabilities.with(Capabilities::CANCELLATION);
            Ok(info)
        }))
    }

    fn supports(&self, model: RStr<'_>) -> RResult<bool, AbiRuntimeError> {
        flatten(guard(T::ID, "supports", || {
            Ok(self.runtime.supports(model.as_str()))
        }))
    }

    fn run_turn(
        &self,
        request: AbiTurnRequest,
    ) -> FfiFuture<RResult<AbiTurnOutput, AbiRuntimeError>> {
        crate::logging::refresh_level();
        let runtime = Arc::clone(&*self.runtime);
        let turns = Arc::clone(&self.turns);
        let turn = async move {
            let request = TurnRequest::from(request);
            match turns.register(&request.execution_id) {
                None => runtime.run_turn(request).await,
                Some((_handle, registration, _ticket)) => {
                    Abortable::new(runtime.run_turn(request), registration)
                        .await
                        .unwrap_or_else(|_| {
                            Err(RuntimeError::cancelled(
                                "the turn was cancelled by its execution id",
                            ))
                        })
                }
            }
        };
        let guarded = GuardedFuture {
            inner: Some(turn),
            runtime_id: T::ID,
        };
        async move { flatten::<_, AbiTurnOutput>(Ok(guarded.await)) }.into_ffi()
    }

    fn stream_turn(&self, request: AbiTurnRequest) -> RResult<AbiTurnStream, AbiRuntimeError> {
        crate::logging::refresh_level();
        flatten(guard(T::ID, "stream_turn", || {
            let request = TurnRequest::from(request);
            let registered = self.turns.register(&request.execution_id);
            let stream = Arc::clone(&*self.runtime).stream_turn(request);
            let (stream, abort, ticket): (AuthorStream, _, _) = match registered {
                None => (Box::pin(stream), None, None),
                Some((handle, registration, ticket)) => (
                    Box::pin(Abortable::new(stream, registration)),
                    Some(handle),
                    Some(ticket),
                ),
            };
            let glue = StreamGlue {
                stream: Box::pin(GuardedStream {
                    inner: Some(stream),
                    runtime_id: T::ID,
                    abort,
                }),
                _ticket: ticket,
            };
            Ok(AbiDeltaStream_TO::from_value(glue, TD_Opaque))
        }))
    }

    fn cancel(&self, execution_id: RStr<'_>) -> RResult<bool, AbiRuntimeError> {
        flatten(guard(T::ID, "cancel", || {
            let ended = self.turns.cancel(execution_id.as_str());
            let released = self.runtime.cancel(execution_id.as_str());
            Ok(ended || released)
        }))
    }

    fn validate_config(&self, config: RStr<'_>) -> RResult<RVec<RString>, AbiRuntimeError> {
        flatten(guard(T::ID, "validate_config", || {
            let problems = match parse_config(config) {
                Ok(config) => self.runtime.validate_config(&config),
                Err(error) => vec![error.message],
            };
            Ok(problems.into_iter().map(RString::from).collect::<RVec<_>>())
        }))
    }

    fn health(&self) -> FfiFuture<RResult<RString, AbiRuntimeError>> {
        let runtime = Arc::clone(&*self.runtime);
        let guarded = GuardedFuture {
            inner: Some(async move { runtime.health().await }),
            runtime_id: T::ID,
        };
        async move { flatten::<_, RString>(Ok(guarded.await)) }.into_ffi()
    }
}

type AuthorStream = BoxStream<'static, Result<StreamItem, RuntimeError>>;

/// A guarded stream as an [`AbiDeltaStream`].
struct StreamGlue {
    stream: Pin<Box<GuardedStream<AuthorStream>>>,
    _ticket: Option<TurnTicket>,
}

impl AbiDeltaStream for StreamGlue {
    fn poll_next(
        &mut self,
        cx: &mut FfiContext<'_>,
    ) -> FfiPoll<abi_stable::std_types::ROption<RResult<AbiStreamItem, AbiRuntimeError>>> {
        let polled = cx.with_context(|cx| self.stream.as_mut().poll_next(cx));
        match polled {
            Poll::Pending => FfiPoll::Pending,
            Poll::Ready(item) => FfiPoll::Ready(
                item.map(|item| match item {
                    Ok(item) => ROk(AbiStreamItem::from(item)),
                    Err(error) => RErr(AbiRuntimeError::from(error)),
                })
                .into(),
            ),
        }
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
        factory: factory::<P, T>,
    }
}

extern "C" fn factory<P: PluginDefinition, T: Runtime>(
    config: RStr<'_>,
) -> RResult<AbiRuntimeBox, AbiRuntimeError> {
    flatten(guard(T::ID, "the factory", || {
        build::<T>(parse_config(config)?, P::VERSION)
    }))
}

/// Builds a runtime object with its glue; a panic in `T::new` is the caller's to catch.
fn build<T: Runtime>(config: Value, version: &'static str) -> Result<AbiRuntimeBox, RuntimeError> {
    let glue = Glue {
        runtime: ManuallyDrop::new(Arc::new(T::new(config)?)),
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
    guard(T::ID, "the factory", || build::<T>(config, version))?
}

extern "C" fn runtimes<P: PluginDefinition>() -> RResult<RVec<AbiRuntimeEntry>, AbiRuntimeError> {
    flatten(guard("", "the runtime list", || {
        Ok(P::entries().into_iter().collect::<RVec<_>>())
    }))
}

/// Builds a plugin's root module.
#[doc(hidden)]
pub fn root_module<P: PluginDefinition>() -> PluginModuleRef {
    use abi_stable::prefix_type::PrefixTypeTrait;
    PluginModule {
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
