//! The accept loop, bounded against hostile clients, and its graceful shutdown.
//!
//! Every connection holds a permit of a semaphore of [`ServeLimits::max_connections`]: at the
//! cap the loop stops accepting (the kernel's backlog holds the rest) instead of running out
//! of file descriptors. Each connection is served by hyper's HTTP/1 with a timer, so a client
//! that does not send a whole request head within [`ServeLimits::header_read_timeout`] (a
//! slow-header client, or a keep-alive connection idle between requests) is closed. When the
//! shutdown future resolves, the listener is closed at once (the moment reported on
//! `closed`, from which running turns get their grace period), and the loop waits for every
//! connection to end (hyper's graceful shutdown: idle connections close, running requests
//! finish).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};

use crate::limits::ServeLimits;

/// Whether an accept error concerns only the connection being accepted (the loop goes on at
/// once) rather than the process (out of descriptors: the loop pauses).
fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        error.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Serves `router` on `listener` until `shutdown` resolves; then closes the listener, says so
/// on `closed`, and returns once every connection has ended.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    closed: oneshot::Sender<()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.clamp(1, 1 << 20)));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                // Out of descriptors or memory: pause rather than spin, then try again.
                tracing::warn!(%error, "accepting a connection failed; retrying in 100 ms");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = closed.send(());
    graceful.shutdown().await;
}
