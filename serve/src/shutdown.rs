//! The accept loop, bounded against hostile clients, and its graceful shutdown.
//!
//! Every connection holds a permit of a semaphore of [`ServeLimits::max_connections`]: at the
//! cap the loop accepts one client more, closes idle keep-alive connections to make room for
//! it, and accepts no other until it has a slot (the kernel's backlog holds the rest), so the
//! server never runs out of file descriptors. Each connection is served by hyper's HTTP/1 over a socket with two
//! read deadlines (`read_deadlines`): a client that does not send a whole request head within
//! [`ServeLimits::header_read_timeout`], or keeps a connection idle between requests longer
//! than [`ServeLimits::idle_timeout`], is closed. When the
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
use crate::read_deadlines::{ConnectionDeadlines, DeadlineIo, DeadlinedService, IdlePressure};

/// Whether an accept error concerns only the connection being accepted (the loop goes on at
/// once) rather than the process (out of descriptors: the loop pauses).
fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        error.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Descriptors kept free for everything but client connections (the listener, logs,
/// runtimes' files and sockets, worker processes' pipes).
const RESERVED_FDS: usize = 64;

/// The connection cap in force: `asked`, but below the process's descriptor limit (less
/// [`RESERVED_FDS`]) where that limit can be read (Linux's `/proc/self/limits`), so the
/// server never runs out of descriptors because of its clients.
fn connection_cap(asked: usize) -> usize {
    let soft_limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|line| line.starts_with("Max open files"))
                .and_then(|line| line.split_whitespace().nth(3))
                .and_then(|soft| soft.parse::<usize>().ok())
        });
    let cap = asked.clamp(1, 1 << 20);
    match soft_limit {
        Some(limit) if cap > limit.saturating_sub(RESERVED_FDS) => {
            let lowered = limit.saturating_sub(RESERVED_FDS).max(1);
            tracing::warn!(
                asked,
                lowered,
                descriptor_limit = limit,
                "the connection cap is above the descriptor limit; lowered"
            );
            lowered
        }
        _ => cap,
    }
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
    let permits = Arc::new(Semaphore::new(connection_cap(limits.max_connections)));
    let pressure = Arc::new(IdlePressure::default());
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Both read deadlines are kept by `DeadlineIo` (hyper has one timer for both).
        .header_read_timeout(None)
        .keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let free = Arc::clone(&permits).try_acquire_owned().ok();
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
        // Slots may have freed while the loop waited for this client.
        let free = free.or_else(|| Arc::clone(&permits).try_acquire_owned().ok());
        let permit = match free {
            Some(permit) => permit,
            None => {
                // At the cap with a client accepted (the one connection over the cap): idle
                // keep-alive connections close to make room, then it takes the first slot.
                pressure.client_waiting();
                let permit = tokio::select! {
                    permit = Arc::clone(&permits).acquire_owned() => permit,
                    () = &mut shutdown => break,
                };
                pressure.client_served();
                match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let deadlines = ConnectionDeadlines::new(
            limits.idle_timeout,
            limits.header_read_timeout,
            Arc::clone(&pressure),
        );
        let service = DeadlinedService {
            inner: TowerToHyperService::new(router.clone()),
            deadlines: deadlines.clone(),
        };
        let stream = TokioIo::new(DeadlineIo::new(stream, deadlines));
        let connection = graceful.watch(builder.serve_connection(stream, service));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_descriptor_limit() {
        assert_eq!(connection_cap(8), 8);
        assert!(connection_cap(0) >= 1);
        if std::fs::read_to_string("/proc/self/limits").is_ok() {
            // No process may have 2^20 descriptors and 64 to spare here.
            assert!(connection_cap(usize::MAX) < 1 << 20);
        }
    }
}
