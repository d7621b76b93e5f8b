//! Plugin code run inside its scope with panics caught: [`guard`] for calls, [`GuardedFuture`]
//! and [`GuardedStream`] for a turn's future and stream (their destructors too).

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use abi_stable::std_types::{RErr, ROk, RResult};
use futures::Stream;
use pin_project_lite::pin_project;

use super::scope::{Scope, TurnScope};
use super::turn_id::TurnId;
use super::turns::TurnTicket;
use crate::abi::AbiRuntimeError;
use crate::{RuntimeError, StreamItem};

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

pub(super) fn flatten<T, A>(
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

pub(super) fn cancelled_by_id() -> RuntimeError {
    RuntimeError::cancelled("the turn was cancelled by its execution id")
}

pin_project! {
    /// A plugin future that polls and drops inside its scope and turns a panic into an error.
    pub(super) struct GuardedFuture<F> {
        #[pin]
        pub(super) inner: Option<F>,
        pub(super) runtime_id: &'static str,
        pub(super) execution_id: Option<TurnId>,
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
pub(super) fn release<F>(mut inner: Pin<&mut Option<F>>) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| inner.set(None))) {
        // The payload's own destructor may panic too (rust-lang/rust#86027).
        let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
    }
}

pin_project! {
    /// A stream that polls and drops inside its scope, turns a panic into a terminal error,
    /// ends after its final item or first error, and ends a turn cancelled by id (its
    /// `ticket`) with a `cancelled` error.
    pub(super) struct GuardedStream<S> {
        #[pin]
        pub(super) inner: Option<S>,
        pub(super) runtime_id: &'static str,
        pub(super) execution_id: Option<TurnId>,
        pub(super) ticket: Option<TurnTicket>,
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
        let end_with = if this.ticket.as_mut().is_some_and(TurnTicket::cancelled) {
            Some(cancelled_by_id())
        } else {
            let _turn = this.execution_id.as_ref().map(TurnScope::enter);
            let polled = guard(this.runtime_id, "the stream's poll", true, || {
                stream.poll_next(cx)
            });
            match polled {
                Ok(Poll::Pending) => {
                    let waker = cx.waker();
                    if !this
                        .ticket
                        .as_mut()
                        .is_some_and(|ticket| ticket.cancelled_or_wake(waker))
                    {
                        return Poll::Pending;
                    }
                    Some(cancelled_by_id())
                }
                Ok(Poll::Ready(Some(Ok(item)))) => {
                    if matches!(item, StreamItem::Done(_)) {
                        let _ = guard(this.runtime_id, "a stream's destructor", true, || {
                            inner.set(None)
                        });
                    }
                    return Poll::Ready(Some(Ok(item)));
                }
                Ok(Poll::Ready(Some(Err(error)))) => Some(error),
                Ok(Poll::Ready(None)) => None,
                Err(panicked) => Some(panicked),
            }
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
    pub(super) fn poll_batch(
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
        if this.ticket.as_mut().is_some_and(TurnTicket::cancelled) {
            push(Err(cancelled_by_id()));
            let _ = guard(this.runtime_id, "a stream's destructor", true, || {
                inner.set(None)
            });
            return Poll::Ready(true);
        }
        let turn_scope = this.execution_id.as_ref().map(TurnScope::enter);
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
                    Poll::Ready(None) => break true,
                }
            };
            if ended {
                // Released where its code ran.
                release(inner.as_mut());
            }
            Poll::Ready(ended)
        });
        drop(turn_scope);
        let polled = match polled {
            Ok(Poll::Pending) => {
                let waker = cx.waker();
                if !this
                    .ticket
                    .as_mut()
                    .is_some_and(|ticket| ticket.cancelled_or_wake(waker))
                {
                    return Poll::Pending;
                }
                push(Err(cancelled_by_id()));
                let _ = guard(this.runtime_id, "a stream's destructor", true, || {
                    inner.set(None)
                });
                return Poll::Ready(true);
            }
            polled => polled,
        };
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
