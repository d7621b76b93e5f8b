//! The host side of the boundary: a runtime object from a plugin, called with the public
//! types.
//!
//! The loader wraps this with hooks, timeouts and capability checks; it is public so that a
//! host can also drive a runtime object it obtained another way.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use abi_stable::std_types::{RResult, RStr, RVec};
use async_ffi::{ContextExt as _, FfiFuture, FfiPoll};
use futures::Stream;
use serde_json::Value;

pub use crate::abi::AbiTurnOptions as TurnOptions;
use crate::abi::{AbiRuntimeBox, AbiRuntimeError, AbiStreamResult, AbiTurnOutput, AbiTurnStream};
use crate::convert::{json_from_abi, json_to_abi};
use crate::handoff::Handoff;
use crate::plugin::direct::{DirectRuntime, DirectTurn};
use crate::{RuntimeError, RuntimeInfo, StreamItem, TurnOutput, TurnRequest};

fn from_abi<A: Into<T>, T, E: Into<RuntimeError>>(
    result: RResult<A, E>,
) -> Result<T, RuntimeError> {
    result.into_result().map(Into::into).map_err(Into::into)
}

/// A runtime object from a plugin, with a typed async API.
pub struct RemoteRuntime {
    object: AbiRuntimeBox,
    /// How long the host waits on its thread for its spawned turns (see `handoff`).
    handoff: Arc<Handoff>,
    /// For a runtime compiled into the host: its inline turns without the boundary's types.
    direct: Option<Arc<dyn DirectRuntime>>,
}

impl fmt::Debug for RemoteRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteRuntime").finish_non_exhaustive()
    }
}

impl RemoteRuntime {
    /// Wraps a runtime object.
    pub fn new(object: AbiRuntimeBox) -> Self {
        Self {
            object,
            handoff: Arc::default(),
            direct: None,
        }
    }

    /// A runtime compiled into the host, wrapped as a plugin's would be: panics are caught,
    /// turns are cancellable by id, and streams keep their contract. Its inline turns skip
    /// the conversions to the boundary's types (there is no boundary to cross), with the same
    /// guarantees.
    ///
    /// # Errors
    ///
    /// The runtime's constructor error, or `panicked`.
    pub fn in_process<R: crate::Runtime>(config: Value) -> Result<Self, RuntimeError> {
        let (object, direct) = crate::glue::in_process::<R>(config, "built-in")?;
        Ok(Self {
            object,
            handoff: Arc::default(),
            direct: Some(direct),
        })
    }

    /// Every problem with a configuration of a runtime compiled into the host, as a plugin's
    /// entry would report them; empty when it is valid.
    ///
    /// # Errors
    ///
    /// `panicked` when the runtime's validation panicked.
    pub fn validate_in_process<R: crate::Runtime>(
        config: &Value,
    ) -> Result<Vec<String>, RuntimeError> {
        crate::glue::in_process_problems::<R>(config)
    }

    /// What the runtime says about itself.
    ///
    /// # Errors
    ///
    /// The runtime's error, or `panicked`.
    pub fn info(&self) -> Result<RuntimeInfo, RuntimeError> {
        from_abi(self.object.info())
    }

    /// Whether the runtime serves this model.
    ///
    /// # Errors
    ///
    /// The runtime's error, or `panicked`.
    pub fn supports(&self, model: &str) -> Result<bool, RuntimeError> {
        from_abi(self.object.supports(RStr::from_str(model)))
    }

    /// Starts a turn: it is registered for [`RemoteRuntime::cancel`] before this returns.
    /// Dropping the future cancels it inside the plugin. `options` say whether it runs
    /// inline or as a task on the plugin's runtime.
    #[inline]
    pub fn run_turn(&self, request: TurnRequest, options: TurnOptions) -> RemoteTurn {
        let turn = match &self.direct {
            Some(direct) if !options.spawned() => Turn::Direct(direct.run_turn(request)),
            _ => {
                let future = PanicSafe(self.object.run_turn(request.into(), options));
                if options.spawned() {
                    Turn::Spawned {
                        future,
                        handoff: Arc::clone(&self.handoff),
                        first_pending: None,
                    }
                } else {
                    Turn::Boundary(future)
                }
            }
        };
        RemoteTurn { turn }
    }

    /// Starts a streamed turn, registered for [`RemoteRuntime::cancel`] before this returns.
    /// Dropping the stream cancels it inside the plugin.
    ///
    /// # Errors
    ///
    /// The runtime's error, or `panicked`, when the stream cannot be started.
    pub fn stream_turn(
        &self,
        request: TurnRequest,
        options: TurnOptions,
    ) -> Result<RemoteStream, RuntimeError> {
        let stream = from_abi::<AbiTurnStream, AbiTurnStream, _>(
            self.object.stream_turn(request.into(), options),
        )?;
        Ok(RemoteStream {
            stream: Some(Box::new(stream)),
            ready: VecDeque::new(),
            scratch: RVec::new(),
            ended: false,
            finished: false,
        })
    }

    /// Waits until none of this runtime object's turns is still running as a task on the
    /// plugin's runtime. A turn the host stopped (dropped, timed out, cancelled) at the
    /// *threads* level is released by the plugin's runtime on its own threads shortly after;
    /// a host about to exit waits here so the plugin's cleanup (its destructors: closing
    /// connections, killing child processes) runs first. Bound the wait: a plugin that blocks
    /// its thread may never become idle.
    ///
    /// # Errors
    ///
    /// The runtime's error, or `panicked`.
    pub fn wait_idle(
        &self,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send + 'static + use<> {
        let waited = self.extension(crate::glue::WAIT_IDLE, &Value::Null);
        async move { waited.await.map(|_| ()) }
    }

    /// A named call added within the contract (see [`crate::version`]).
    ///
    /// # Errors
    ///
    /// `unsupported` when the runtime does not know `name`; the call's own error.
    pub fn extension(
        &self,
        name: &str,
        payload: &Value,
    ) -> impl Future<Output = Result<Value, RuntimeError>> + Send + 'static + use<> {
        let payload = json_to_abi(payload);
        let future = self
            .object
            .extension(RStr::from_str(name), payload.as_rstr());
        async move {
            PanicSafe(future)
                .await?
                .into_result()
                .map(json_from_abi)
                .map_err(Into::into)
        }
    }

    /// Cancels the turns with this execution id; `true` if one was running.
    ///
    /// # Errors
    ///
    /// The runtime's error, or `panicked`.
    pub fn cancel(&self, execution_id: &str) -> Result<bool, RuntimeError> {
        from_abi(self.object.cancel(RStr::from_str(execution_id)))
    }

    /// Checks that the runtime can serve turns.
    pub fn health(
        &self,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send + 'static + use<> {
        let future = self.object.health();
        async move {
            PanicSafe(future)
                .await?
                .into_result()
                .map(|s| s.into_string())
                .map_err(Into::into)
        }
    }
}

/// A turn started on a plugin's runtime object: a future of its output. Dropping it cancels
/// the turn inside the plugin.
pub struct RemoteTurn {
    turn: Turn,
}

/// How a turn is polled: through the boundary, or directly (an inline turn of a runtime
/// compiled into the host).
enum Turn {
    Boundary(BoundaryTurn),
    /// Spawned on the plugin's runtime: at its first poll the host may wait for it briefly.
    Spawned {
        future: BoundaryTurn,
        handoff: Arc<Handoff>,
        /// When its first poll found it pending.
        first_pending: Option<Instant>,
    },
    Direct(DirectTurn),
}

type BoundaryTurn = PanicSafe<FfiFuture<RResult<AbiTurnOutput, AbiRuntimeError>>>;

impl fmt::Debug for RemoteTurn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteTurn").finish_non_exhaustive()
    }
}

impl Future for RemoteTurn {
    type Output = Result<TurnOutput, RuntimeError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.turn {
            Turn::Boundary(future) => Pin::new(future)
                .poll(cx)
                .map(|polled| polled.and_then(from_abi)),
            Turn::Spawned {
                future,
                handoff,
                first_pending,
            } => {
                let mut future = Pin::new(future);
                let polled = match future.as_mut().poll(cx) {
                    Poll::Ready(polled) => {
                        if let Some(since) = first_pending {
                            handoff.ready_later(since.elapsed() <= crate::handoff::SPIN);
                        }
                        polled
                    }
                    Poll::Pending if first_pending.is_none() => {
                        *first_pending = Some(Instant::now());
                        // Only a check of the result: the plugin's code runs on its threads.
                        let waited = handoff.wait(|| match future.as_mut().poll(cx) {
                            Poll::Ready(polled) => Some(polled),
                            Poll::Pending => None,
                        });
                        match waited {
                            Some(polled) => polled,
                            None => return Poll::Pending,
                        }
                    }
                    Poll::Pending => return Poll::Pending,
                };
                Poll::Ready(polled.and_then(from_abi))
            }
            // Guarded inside: plugin code is polled in its scope with panics caught.
            Turn::Direct(future) => future.as_mut().poll(cx),
        }
    }
}

/// Polls an `FfiFuture` and reports a panic it signals (`FfiPoll::Panicked`, from a plugin
/// not built with our glue) as a `panicked` error instead of panicking in the host.
struct PanicSafe<F>(F);

impl<F: Future + Unpin> Future for PanicSafe<F> {
    type Output = Result<F::Output, RuntimeError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(poll) => poll.map(Ok),
            Err(payload) => Poll::Ready(Err(RuntimeError::from_panic(payload.as_ref(), "a turn"))),
        }
    }
}

/// The most stream items taken from a plugin in one poll.
const BATCH: u32 = 64;

/// A streamed turn from a plugin: deltas, then exactly one [`StreamItem::Done`].
///
/// The stream enforces its contract whatever the plugin does: it ends after the final item or
/// the first error, and a plugin stream that stops without a final item ends with an
/// `internal` error rather than silently. Items ready together cross the boundary in one poll.
pub struct RemoteStream {
    stream: Option<Box<AbiTurnStream>>,
    /// Items taken from the plugin, not yet handed out.
    ready: VecDeque<Result<StreamItem, RuntimeError>>,
    /// Reused for every poll, so a batch costs no allocation once warm.
    scratch: RVec<AbiStreamResult>,
    /// The plugin said nothing follows what was taken.
    ended: bool,
    finished: bool,
}

impl fmt::Debug for RemoteStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteStream")
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl RemoteStream {
    /// Takes the next batch from the plugin into `ready`; `Pending` when nothing is ready.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(stream) = self.stream.as_mut() else {
            self.ended = true;
            return Poll::Ready(());
        };
        let scratch = &mut self.scratch;
        let polled = cx.with_ffi_context(|cx| stream.poll_batch(cx, scratch, BATCH));
        match polled {
            FfiPoll::Pending => return Poll::Pending,
            FfiPoll::Ready(ended) => self.ended = ended,
            FfiPoll::Panicked => {
                self.scratch.clear();
                self.ready.push_back(Err(RuntimeError::new(
                    crate::ErrorKind::Panicked,
                    "plugin code panicked while polling the stream",
                )));
                self.ended = true;
                return Poll::Ready(());
            }
        }
        self.ready.extend(self.scratch.drain(..).map(from_abi));
        Poll::Ready(())
    }
}

impl Stream for RemoteStream {
    type Item = Result<StreamItem, RuntimeError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        if this.ready.is_empty() && !this.ended {
            if this.fill(cx).is_pending() {
                return Poll::Pending;
            }
            if this.ready.is_empty() && !this.ended {
                // The plugin said "more may follow" with nothing ready: let others run.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        let item = this.ready.pop_front().unwrap_or_else(|| {
            Err(RuntimeError::internal(
                "the runtime's stream ended without a final result",
            ))
        });
        if !matches!(item, Ok(StreamItem::Delta(_))) {
            // The final item or an error ends the turn: release the plugin's stream now.
            this.stream = None;
            this.ready.clear();
            this.finished = true;
        }
        Poll::Ready(Some(item))
    }
}
