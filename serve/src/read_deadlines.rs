//! A connection's two read deadlines, kept apart the way Go's `IdleTimeout` and
//! `ReadHeaderTimeout` are (hyper has one timer for both):
//!
//! - **idle**: a keep-alive connection with no request running and no byte of the next one
//!   received is closed after [`ServeLimits::idle_timeout`], counted from the end of its last
//!   response;
//! - **head**: once the first byte of a request arrives (or from the accept, for a
//!   connection's first request), its whole head must arrive within
//!   [`ServeLimits::header_read_timeout`].
//!
//! While a request runs (from its head to the end of its response body) neither applies: the
//! body has its own deadline ([`ServeLimits::body_timeout`]) and a turn its own
//! ([`ServeLimits::request_timeout`]). [`DeadlineIo`] wraps the socket and fails a read with
//! `TimedOut` when a deadline passes, which ends the connection; [`RequestGuard`] marks a
//! request running, from the service's call until its response body is dropped.
//!
//! Idle keep-alive connections are a cache, not a reservation: while a client waits for a
//! connection slot at [`ServeLimits::max_connections`], [`IdlePressure`] closes every
//! connection idle for a second or more (and each that reaches a second idle), so keep-alive
//! never starves new clients.
//!
//! [`ServeLimits::idle_timeout`]: crate::ServeLimits::idle_timeout
//! [`ServeLimits::header_read_timeout`]: crate::ServeLimits::header_read_timeout
//! [`ServeLimits::body_timeout`]: crate::ServeLimits::body_timeout
//! [`ServeLimits::request_timeout`]: crate::ServeLimits::request_timeout
//! [`ServeLimits::max_connections`]: crate::ServeLimits::max_connections

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::Body;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// How long a connection must have been idle before a waiting client's pressure closes it.
const PRESSURE_GRACE: Duration = Duration::from_secs(1);

/// Whether a client waits for a connection slot; while one does, idle connections close
/// (once idle for [`PRESSURE_GRACE`]).
#[derive(Debug, Default)]
pub(crate) struct IdlePressure {
    current: Mutex<CancellationToken>,
}

impl IdlePressure {
    fn current(&self) -> MutexGuard<'_, CancellationToken> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A client waits for a slot: idle connections close, now and as they become idle.
    pub(crate) fn client_waiting(&self) {
        self.current().cancel();
    }

    /// The waiting client has its slot: idle connections stay open again.
    pub(crate) fn client_served(&self) {
        let mut current = self.current();
        if current.is_cancelled() {
            *current = CancellationToken::new();
        }
    }

    fn signal(&self) -> WaitForCancellationFutureOwned {
        self.current().clone().cancelled_owned()
    }

    /// Whether a client waits now (not: waited when an idle connection last looked).
    fn waiting(&self) -> bool {
        self.current().is_cancelled()
    }
}

/// Where a connection stands between requests.
#[derive(Debug)]
struct Phase {
    /// Requests whose response has not ended (more than one only when a client pipelines).
    running: usize,
    /// When the connection last became idle (its accept, or the end of its last response).
    idle_since: Instant,
    /// Whether the connection has not served a request yet (its first head is bounded from
    /// the accept by the head deadline, not the idle one).
    fresh: bool,
    /// When the first byte after `idle_since` arrived, if one has.
    head_started: Option<Instant>,
    /// The reader to wake when the connection becomes idle, so it arms the idle deadline.
    reader: Option<Waker>,
}

/// One connection's deadlines, shared by its socket wrapper and its request guards.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionDeadlines {
    phase: Arc<Mutex<Phase>>,
    pressure: Arc<IdlePressure>,
    idle_timeout: Duration,
    header_read_timeout: Duration,
}

impl ConnectionDeadlines {
    /// The deadlines of a connection accepted now.
    pub(crate) fn new(
        idle_timeout: Duration,
        header_read_timeout: Duration,
        pressure: Arc<IdlePressure>,
    ) -> Self {
        Self {
            pressure,
            phase: Arc::new(Mutex::new(Phase {
                running: 0,
                idle_since: Instant::now(),
                fresh: true,
                head_started: None,
                reader: None,
            })),
            idle_timeout,
            header_read_timeout,
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        // The lock guards plain fields no panic can leave half-written.
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks a request running until the returned guard is dropped.
    pub(crate) fn request(&self) -> RequestGuard {
        self.phase().running += 1;
        RequestGuard {
            deadlines: self.clone(),
        }
    }

    /// The deadline in force now, if any (none while a request runs).
    fn deadline(phase: &Phase, idle: Duration, head: Duration) -> Option<Instant> {
        if phase.running > 0 {
            return None;
        }
        if phase.fresh {
            // A connection's first head is bounded from the accept, bytes or not.
            return phase.idle_since.checked_add(head);
        }
        match phase.head_started {
            Some(started) => started.checked_add(head),
            None => phase.idle_since.checked_add(idle),
        }
    }
}

/// A running request; dropping it (when its response body has been sent or abandoned) makes
/// the connection idle once no other request runs.
#[derive(Debug)]
pub(crate) struct RequestGuard {
    deadlines: ConnectionDeadlines,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let mut phase = self.deadlines.phase();
        phase.running = phase.running.saturating_sub(1);
        if phase.running == 0 {
            phase.idle_since = Instant::now();
            phase.fresh = false;
            phase.head_started = None;
            if let Some(reader) = phase.reader.take() {
                reader.wake();
            }
        }
    }
}

/// A socket whose reads fail with `TimedOut` once the connection's idle or head deadline
/// passes.
pub(crate) struct DeadlineIo<S> {
    inner: S,
    deadlines: ConnectionDeadlines,
    timer: Pin<Box<Sleep>>,
    /// While idle: resolves when a client waits for a slot.
    pressure: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// A write or flush is waiting for the client to read: the connection is busy.
    writing: bool,
}

impl<S> DeadlineIo<S> {
    pub(crate) fn new(inner: S, deadlines: ConnectionDeadlines) -> Self {
        let far = Instant::now() + Duration::from_secs(86_400);
        Self {
            inner,
            deadlines,
            timer: Box::pin(tokio::time::sleep_until(far)),
            pressure: None,
            writing: false,
        }
    }
}

fn timed_out(which: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the connection passed its {which} deadline"),
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for DeadlineIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        let (idle, head) = (
            this.deadlines.idle_timeout,
            this.deadlines.header_read_timeout,
        );
        let mut phase = this.deadlines.phase();
        match read {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && phase.running == 0 && phase.head_started.is_none()
                {
                    phase.head_started = Some(Instant::now());
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                let deadline = ConnectionDeadlines::deadline(&phase, idle, head);
                // A response still being written (a slow reader) is no idle connection.
                let deadline = if this.writing { None } else { deadline };
                let Some(deadline) = deadline else {
                    // Woken by the last request's guard when the connection becomes idle.
                    phase.reader = Some(cx.waker().clone());
                    this.pressure = None;
                    return Poll::Pending;
                };
                let idle_now = phase.head_started.is_none() && !phase.fresh;
                let idle_since = phase.idle_since;
                drop(phase);
                let mut deadline = deadline;
                let mut which = if idle_now { "idle" } else { "request head" };
                if idle_now && !this.writing {
                    let shared = &this.deadlines.pressure;
                    let pressure = this
                        .pressure
                        .get_or_insert_with(|| Box::pin(shared.signal()));
                    let mut fired = pressure.as_mut().poll(cx).is_ready();
                    if fired && !shared.waiting() {
                        // An earlier client's wait, over now: watch for the next one.
                        let next = this.pressure.insert(Box::pin(shared.signal()));
                        fired = next.as_mut().poll(cx).is_ready();
                    }
                    if fired {
                        // Closing a connection its client is about to reuse loses that
                        // request; one idle for a moment is much less likely to be.
                        let close_at = idle_since + PRESSURE_GRACE;
                        if Instant::now() >= close_at {
                            return Poll::Ready(Err(timed_out(
                                "idle (a new client needs its slot)",
                            )));
                        }
                        if close_at < deadline {
                            deadline = close_at;
                            which = "idle (a new client needs its slot)";
                        }
                    }
                } else {
                    this.pressure = None;
                }
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(timed_out(which))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(result.is_pending());
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(result.is_pending());
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.note_write(result.is_pending());
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S> DeadlineIo<S> {
    /// Records whether the last write waits for the client; once it no longer does, the
    /// connection's idle time counts from now.
    fn note_write(&mut self, pending: bool) {
        if self.writing && !pending {
            let mut phase = self.deadlines.phase();
            if phase.running == 0 && phase.head_started.is_none() {
                phase.idle_since = Instant::now();
            }
            // A reader parked without a deadline while the write waited arms one now.
            if let Some(reader) = phase.reader.take() {
                reader.wake();
            }
        }
        self.writing = pending;
    }
}

/// The router as a connection's service: each request marked running until its response
/// body ends or is dropped.
pub(crate) struct DeadlinedService<S> {
    pub(crate) inner: S,
    pub(crate) deadlines: ConnectionDeadlines,
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl<S> hyper::service::Service<Request<Incoming>> for DeadlinedService<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let guard = self.deadlines.request();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| {
                Body::new(GuardedBody {
                    body,
                    _guard: guard,
                })
            }))
        })
    }
}

/// A response body that holds its request's guard until it is dropped.
struct GuardedBody {
    body: Body,
    _guard: RequestGuard,
}

impl hyper::body::Body for GuardedBody {
    type Data = <Body as hyper::body::Body>::Data;
    type Error = <Body as hyper::body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    const IDLE: Duration = Duration::from_secs(60);
    const HEAD: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn a_fresh_connection_gets_the_head_deadline() {
        let (_client, server) = duplex(64);
        let mut io = DeadlineIo::new(server, ConnectionDeadlines::new(IDLE, HEAD, Arc::default()));
        let started = Instant::now();
        let error = io.read(&mut [0; 8]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), HEAD);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_gets_the_idle_deadline_from_its_last_response() {
        let (mut client, server) = duplex(64);
        let deadlines = ConnectionDeadlines::new(IDLE, HEAD, Arc::default());
        let mut io = DeadlineIo::new(server, deadlines.clone());
        client.write_all(b"GET").await.unwrap();
        assert_eq!(io.read(&mut [0; 8]).await.unwrap(), 3);
        let request = deadlines.request();
        // No deadline while the request runs: a long turn keeps its connection.
        tokio::time::sleep(IDLE * 3).await;
        drop(request);
        let idle_from = Instant::now();
        let error = io.read(&mut [0; 8]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(idle_from.elapsed(), IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_byte_of_a_request_starts_the_head_deadline() {
        let (mut client, server) = duplex(64);
        let deadlines = ConnectionDeadlines::new(IDLE, HEAD, Arc::default());
        let mut io = DeadlineIo::new(server, deadlines.clone());
        drop(deadlines.request());
        tokio::time::sleep(IDLE / 2).await;
        client.write_all(b"G").await.unwrap();
        assert_eq!(io.read(&mut [0; 8]).await.unwrap(), 1);
        let head_from = Instant::now();
        let error = io.read(&mut [0; 8]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(head_from.elapsed(), HEAD);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_client_closes_idle_connections_but_not_busy_ones() {
        let pressure = Arc::new(IdlePressure::default());
        let (_idle_client, idle_server) = duplex(64);
        let idle = ConnectionDeadlines::new(IDLE, HEAD, Arc::clone(&pressure));
        drop(idle.request());
        let mut idle_io = DeadlineIo::new(idle_server, idle);
        let (_busy_client, busy_server) = duplex(64);
        let busy = ConnectionDeadlines::new(IDLE, HEAD, Arc::clone(&pressure));
        let running = busy.request();
        let mut busy_io = DeadlineIo::new(busy_server, busy);
        let idle_reader = tokio::spawn(async move { idle_io.read(&mut [0; 8]).await });
        let busy_reader = tokio::spawn(async move { busy_io.read(&mut [0; 8]).await });
        tokio::task::yield_now().await;
        let started = Instant::now();
        pressure.client_waiting();
        let error = idle_reader.await.unwrap().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(
            started.elapsed() < IDLE,
            "closed at once, not at the idle deadline"
        );
        assert!(!busy_reader.is_finished());
        // A connection becoming idle while a client still waits closes at once too.
        drop(running);
        let error = busy_reader.await.unwrap().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < IDLE);
        pressure.client_served();
        assert!(!pressure.current().is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn pressure_that_ended_closes_nothing_more() {
        let pressure = Arc::new(IdlePressure::default());
        let (_client, server) = duplex(64);
        let idle = ConnectionDeadlines::new(IDLE, HEAD, Arc::clone(&pressure));
        drop(idle.request());
        let mut io = DeadlineIo::new(server, idle);
        let started = Instant::now();
        let reader = tokio::spawn(async move { io.read(&mut [0; 8]).await });
        tokio::task::yield_now().await;
        pressure.client_waiting();
        tokio::task::yield_now().await;
        // The waiting client got its slot before the grace was over.
        pressure.client_served();
        let error = reader.await.unwrap().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            started.elapsed(),
            IDLE,
            "closed at the idle deadline, not the grace"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_still_being_written_is_not_idle() {
        let (mut client, server) = duplex(8);
        let deadlines = ConnectionDeadlines::new(IDLE, HEAD, Arc::default());
        drop(deadlines.request());
        let (mut reads, mut writes) = tokio::io::split(DeadlineIo::new(server, deadlines));
        let writer = tokio::spawn(async move { writes.write_all(&[1; 64]).await });
        let reader = tokio::spawn(async move { reads.read(&mut [0; 8]).await });
        tokio::time::sleep(IDLE * 3).await;
        assert!(
            !reader.is_finished(),
            "the client has not read the response yet"
        );
        let mut response = [0; 64];
        client.read_exact(&mut response).await.unwrap();
        writer.await.unwrap().unwrap();
        let written = Instant::now();
        let error = reader.await.unwrap().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(written.elapsed(), IDLE, "idle from the end of the write");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_waiting_during_a_request_is_woken_to_arm_the_idle_deadline() {
        let (_client, server) = duplex(64);
        let deadlines = ConnectionDeadlines::new(IDLE, HEAD, Arc::default());
        let request = deadlines.request();
        let mut io = DeadlineIo::new(server, deadlines.clone());
        let reader = tokio::spawn(async move { io.read(&mut [0; 8]).await });
        tokio::time::sleep(HEAD * 2).await;
        assert!(!reader.is_finished(), "no deadline while a request runs");
        drop(request);
        let error = reader.await.unwrap().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
