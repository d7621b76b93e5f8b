//! Graceful shutdown: a listener that reports the moment the server stops accepting
//! connections (axum drops its listener as soon as a graceful shutdown begins), from which
//! running turns get their grace period.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// A TCP listener that says when it is dropped, i.e. when new connections start being
/// refused.
#[derive(Debug)]
pub struct ClosingListener {
    inner: TcpListener,
    closed: Option<oneshot::Sender<()>>,
}

impl ClosingListener {
    /// Wraps a listener; the receiver completes when the listener is dropped.
    pub fn new(inner: TcpListener) -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (
            Self {
                inner,
                closed: Some(tx),
            },
            rx,
        )
    }
}

impl Drop for ClosingListener {
    fn drop(&mut self) {
        if let Some(closed) = self.closed.take() {
            let _ = closed.send(());
        }
    }
}

impl axum::serve::Listener for ClosingListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    fn accept(&mut self) -> impl Future<Output = (Self::Io, Self::Addr)> + Send {
        axum::serve::Listener::accept(&mut self.inner)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
