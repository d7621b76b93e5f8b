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
//! - *spawned*: it runs on the plugin's threads (polled first by the plugin's front thread,
//!   then as a task on the plugin's own tokio runtime, see `front.rs`), and the host polls
//!   only its result, so the host's timeouts and cancellation never wait on a plugin poll.
//!
//! Either way a turn is registered for cancellation by its execution id when it is started,
//! before the host gets it back, so `cancel(id)` right after starting a turn always reaches it.

use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RErr, ROk, RResult, RStr, RString, RVec};
use async_ffi::{FfiContext, FfiFuture, FfiPoll, FutureExt as _};
use futures::StreamExt as _;
use futures::stream::BoxStream;
use pin_project_lite::pin_project;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::abi::{
    AbiDeltaStream, AbiDeltaStream_TO, AbiRuntime, AbiRuntime_TO, AbiRuntimeBox, AbiRuntimeEntry,
    AbiRuntimeError, AbiRuntimeInfo, AbiStreamItem, AbiStreamResult, AbiTurnOptions, AbiTurnOutput,
    AbiTurnRequest, AbiTurnStream, PluginModule, PluginModuleRef,
};
use crate::manifest::ConstRuntime;
use crate::{Capabilities, Runtime, RuntimeError, StreamItem, TurnOutput, TurnRequest};

/// Stream items that may wait between a spawned stream's task and the host, by default.
const DEFAULT_CHANNEL_CAPACITY: usize = 64;

use super::direct::{Direct, DirectRuntime};
use super::front::spawn_turn;
use super::guarded::{GuardedFuture, GuardedStream, flatten, guard};
use super::turn_id::TurnId;
pub(crate) use super::turns::WAIT_IDLE;
use super::turns::{AbortOnDrop, CancellableTurn, TurnTicket, Turns, spawn};

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
        let ticket = self.turns.register(&request.execution_id);
        let execution_id = scope_id(ticket.as_ref(), &request.execution_id);
        let stream = Self::author_stream(Arc::clone(&*self.runtime), request)?;
        Ok(StreamGlue {
            stream: Box::pin(GuardedStream {
                inner: Some(stream),
                runtime_id: T::ID,
                execution_id,
                ticket,
            }),
            _task: None,
        })
    }

    fn stream_spawned(
        &self,
        request: TurnRequest,
        capacity: usize,
    ) -> Result<StreamGlue, RuntimeError> {
        let ticket = self.turns.register(&request.execution_id);
        let execution_id = scope_id(ticket.as_ref(), &request.execution_id);
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
                ticket: None,
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
        Ok(StreamGlue {
            stream: Box::pin(GuardedStream {
                inner: Some(received),
                runtime_id: T::ID,
                execution_id: None,
                ticket,
            }),
            _task: Some(task),
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
        let (guarded, ticket) = start_turn(&self.runtime, &self.turns, request);
        if options.spawned() {
            match spawn_turn(&self.turns, guarded) {
                Ok(task) => ToAbi {
                    turn: CancellableTurn::new(task, ticket),
                }
                .into_ffi(),
                Err(error) => async move { RErr(error.into()) }.into_ffi(),
            }
        } else {
            ToAbi {
                turn: CancellableTurn::new(guarded, ticket),
            }
            .into_ffi()
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

/// The execution id a turn's scope sets for its plugin code, when the turn is registered
/// (it has an id) and its events are forwarded.
fn scope_id(ticket: Option<&TurnTicket>, execution_id: &str) -> Option<TurnId> {
    ticket
        .filter(|_| crate::logging::forwarding())
        .map(|_| TurnId::new(execution_id))
}

/// Registers a turn for cancellation by id and wraps the author's future, which is created
/// at its first poll, inside the scope. Inlined: the future is large (the author's future
/// holds the request), and built where it is boxed it is not copied on the way.
#[inline(always)]
pub(super) fn start_turn<T: Runtime>(
    runtime: &Arc<T>,
    turns: &Arc<Turns>,
    request: TurnRequest,
) -> (
    GuardedFuture<impl Future<Output = Result<TurnOutput, RuntimeError>> + Send + 'static>,
    Option<TurnTicket>,
) {
    let ticket = turns.register(&request.execution_id);
    let execution_id = scope_id(ticket.as_ref(), &request.execution_id);
    let runtime = Arc::clone(runtime);
    let guarded = GuardedFuture {
        inner: Some(async move { runtime.run_turn(request).await }),
        runtime_id: T::ID,
        execution_id,
    };
    (guarded, ticket)
}

pin_project! {
    /// A turn's result in the boundary's types.
    struct ToAbi<F> {
        #[pin]
        turn: F,
    }
}

impl<F> Future for ToAbi<F>
where
    F: Future<Output = Result<TurnOutput, RuntimeError>>,
{
    type Output = RResult<AbiTurnOutput, AbiRuntimeError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project()
            .turn
            .poll(cx)
            .map(|result| flatten(Ok(result)))
    }
}

/// A guarded stream as an [`AbiDeltaStream`].
struct StreamGlue {
    stream: Pin<Box<GuardedStream<AuthorStream>>>,
    /// The task producing the items, when the turn runs spawned; aborted on drop.
    _task: Option<AbortOnDrop<Result<(), RuntimeError>>>,
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
        permissions: T::PERMISSIONS,
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
    let (runtime, turns) = build_runtime::<T>(config)?;
    Ok(glue_object(runtime, turns, version))
}

/// The runtime object of a runtime and its running turns.
fn glue_object<T: Runtime>(
    runtime: Arc<T>,
    turns: Arc<Turns>,
    version: &'static str,
) -> AbiRuntimeBox {
    let glue = Glue {
        runtime: ManuallyDrop::new(runtime),
        plugin_version: version,
        turns,
    };
    AbiRuntime_TO::from_value(glue, TD_Opaque)
}

/// Checks the configuration, then builds the author's runtime; a panic in the author's code
/// is the caller's to catch.
fn build_runtime<T: Runtime>(
    config: Result<Value, RuntimeError>,
) -> Result<(Arc<T>, Arc<Turns>), RuntimeError> {
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
    Ok((Arc::new(T::new(config?)?), Arc::default()))
}

/// Builds a runtime compiled into the host as the same runtime object a plugin's factory
/// returns, so it gets the same guarantees (panics caught, cancellation by id, stream
/// contract), and its direct side for inline turns, sharing its running turns. `version` is
/// what its `info` reports when the runtime leaves it empty.
pub(crate) fn in_process<T: Runtime>(
    config: Value,
    version: &'static str,
) -> Result<(AbiRuntimeBox, Arc<dyn DirectRuntime>), RuntimeError> {
    let (runtime, turns) = guard(T::ID, "the factory", false, || {
        build_runtime::<T>(Ok(config))
    })??;
    let direct: Arc<dyn DirectRuntime> =
        Arc::new(Direct::new(Arc::clone(&runtime), Arc::clone(&turns)));
    Ok((glue_object(runtime, turns, version), direct))
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
