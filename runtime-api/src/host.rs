//! The host side of the boundary: a runtime object from a plugin, called with the public
//! types.
//!
//! The loader wraps this with hooks, timeouts and capability checks; it is public so that a
//! host can also drive a runtime object it obtained another way.

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use abi_stable::std_types::{RResult, RStr};
use async_ffi::{ContextExt as _, FfiPoll};
use futures::Stream;
use serde_json::Value;

use crate::abi::{AbiRuntimeBox, AbiTurnStream, json_to_abi};
use crate::{RuntimeError, RuntimeInfo, StreamItem, TurnOutput, TurnRequest};

fn from_abi<A: Into<T>, T, E: Into<RuntimeError>>(
    result: RResult<A, E>,
) -> Result<T, RuntimeError> {
    result.into_result().map(Into::into).map_err(Into::into)
}

/// A runtime object from a plugin, with a typed async API.
pub struct RemoteRuntime {
    object: AbiRuntimeBox,
}

impl fmt::Debug for RemoteRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteRuntime").finish_non_exhaustive()
    }
}

impl RemoteRuntime {
    /// Wraps a runtime object.
    pub fn new(object: AbiRuntimeBox) -> Self {
        Self { object }
    }

    /// A runtime compiled into the host, wrapped exactly as a plugin's would be: panics are
    /// caught, turns are cancellable by id, and streams keep their contract.
    ///
    /// # Errors
    ///
    /// The runtime's constructor error, or `panicked`.
    pub fn in_process<R: crate::Runtime>(config: Value) -> Result<Self, RuntimeError> {
        crate::glue::in_process::<R>(config, "built-in").map(Self::new)
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

    /// Runs a turn. Dropping the future cancels it inside the plugin.
    pub fn run_turn(
        &self,
        request: TurnRequest,
    ) -> impl Future<Output = Result<TurnOutput, RuntimeError>> + Send + 'static + use<> {
        let future = self.object.run_turn(request.into());
        async move { from_abi(PanicSafe(future).await?) }
    }

    /// Starts a streamed turn. Dropping the stream cancels it inside the plugin.
    ///
    /// # Errors
    ///
    /// The runtime's error, or `panicked`, when the stream cannot be started.
    pub fn stream_turn(&self, request: TurnRequest) -> Result<RemoteStream, RuntimeError> {
        let stream =
            from_abi::<AbiTurnStream, AbiTurnStream, _>(self.object.stream_turn(request.into()))?;
        Ok(RemoteStream {
            stream: Some(Box::new(stream)),
            finished: false,
        })
    }

    /// Cancels the turns with this execution id; `true` if one was running.
    ///
    /// # Errors
    ///
    /// The runtime's error, or `panicked`.
    pub fn cancel(&self, execution_id: &str) -> Result<bool, RuntimeError> {
        from_abi(self.object.cancel(RStr::from_str(execution_id)))
    }

    /// The problems with a configuration; empty when valid.
    ///
    /// # Errors
    ///
    /// The runtime's error, or `panicked`.
    pub fn validate_config(&self, config: &Value) -> Result<Vec<String>, RuntimeError> {
        let config = json_to_abi(config);
        self.object
            .validate_config(config.as_rstr())
            .into_result()
            .map(|problems| problems.into_iter().map(|p| p.into_string()).collect())
            .map_err(Into::into)
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

/// A streamed turn from a plugin: deltas, then exactly one [`StreamItem::Done`].
///
/// The stream enforces its contract whatever the plugin does: it ends after the final item or
/// the first error, and a plugin stream that stops without a final item ends with an
/// `internal` error rather than silently.
pub struct RemoteStream {
    stream: Option<Box<AbiTurnStream>>,
    finished: bool,
}

impl fmt::Debug for RemoteStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteStream")
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl Stream for RemoteStream {
    type Item = Result<StreamItem, RuntimeError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(stream) = this.stream.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = cx.with_ffi_context(|cx| stream.poll_next(cx));
        let item = match polled {
            FfiPoll::Pending => return Poll::Pending,
            FfiPoll::Ready(item) => item.into_option().map(from_abi),
            FfiPoll::Panicked => Some(Err(RuntimeError::new(
                crate::ErrorKind::Panicked,
                "plugin code panicked while polling the stream",
            ))),
        };
        let item = match item {
            None => Some(Err(RuntimeError::internal(
                "the runtime's stream ended without a final result",
            ))),
            some => some,
        };
        if !matches!(item, Some(Ok(StreamItem::Delta(_)))) {
            // The final item or an error ends the turn: release the plugin's stream now.
            this.stream = None;
            this.finished = true;
        }
        Poll::Ready(item)
    }
}
