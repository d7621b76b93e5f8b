//! The turn futures of the process level: a turn's output ([`ProcessTurn`]) and a streamed
//! turn ([`ProcessStream`]); dropping either cancels the turn in its worker.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use runtime_api::{RuntimeError, StreamItem, TurnOutput};
use tokio::sync::{mpsc, oneshot};

use crate::protocol::{STREAM_WINDOW, credit_cost};

/// What a turn future needs of the runtime it belongs to (the runtime's turn table).
pub(crate) trait TurnOwner: Send + Sync {
    /// Forgets a turn the host no longer waits for, telling its worker.
    fn abandon(&self, turn: u64);
    /// Grants a streamed turn more credit.
    fn grant(&self, turn: u64, amount: u32);
}

/// What reaches a streamed turn.
pub(crate) enum Batch {
    Items(Vec<StreamItem>),
    Error(RuntimeError),
}

/// A turn on a worker: a future of its output. Dropping it cancels the turn in the worker.
pub struct ProcessTurn {
    pub(crate) inner: Arc<dyn TurnOwner>,
    pub(crate) turn: u64,
    pub(crate) receiver: oneshot::Receiver<Result<TurnOutput, RuntimeError>>,
    pub(crate) finished: bool,
}

impl std::fmt::Debug for ProcessTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessTurn")
            .field("turn", &self.turn)
            .finish_non_exhaustive()
    }
}

impl Future for ProcessTurn {
    type Output = Result<TurnOutput, RuntimeError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let polled = Pin::new(&mut self.receiver).poll(cx);
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                self.finished = true;
                Poll::Ready(result.unwrap_or_else(|_| {
                    Err(RuntimeError::internal("the turn's worker link was lost"))
                }))
            }
        }
    }
}

impl Drop for ProcessTurn {
    fn drop(&mut self) {
        if !self.finished {
            self.inner.abandon(self.turn);
        }
    }
}

/// A streamed turn on a worker. Dropping it cancels the turn in the worker.
pub struct ProcessStream {
    pub(crate) inner: Arc<dyn TurnOwner>,
    pub(crate) turn: u64,
    pub(crate) receiver: mpsc::UnboundedReceiver<Batch>,
    pub(crate) ready: VecDeque<StreamItem>,
    /// Credit units handed out since credit was last granted.
    pub(crate) consumed: u32,
    pub(crate) finished: bool,
}

impl std::fmt::Debug for ProcessStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessStream")
            .field("turn", &self.turn)
            .finish_non_exhaustive()
    }
}

impl Stream for ProcessStream {
    type Item = Result<StreamItem, RuntimeError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        if this.ready.is_empty() {
            match this.receiver.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(RuntimeError::internal(
                        "the turn's worker link was lost",
                    ))));
                }
                Poll::Ready(Some(Batch::Error(error))) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(Some(Batch::Items(items))) => this.ready.extend(items),
            }
        }
        let Some(item) = this.ready.pop_front() else {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        };
        if matches!(item, StreamItem::Done(_)) {
            this.finished = true;
        } else {
            this.consumed += credit_cost(&item);
            if this.consumed >= STREAM_WINDOW / 2 {
                let amount = std::mem::take(&mut this.consumed);
                this.inner.grant(this.turn, amount);
            }
        }
        Poll::Ready(Some(Ok(item)))
    }
}

impl Drop for ProcessStream {
    fn drop(&mut self) {
        if !self.finished {
            self.inner.abandon(self.turn);
        }
    }
}
