//! The server: set up from a [`ServeConfig`] (plugins discovered once, or none with a queue
//! backend: the workers' adverts say what is served), then serving on a listener until a
//! shutdown future resolves. From then on it accepts no connection and lets running turns
//! finish within the grace period; turns still running then are cancelled.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use runtime_loader::Runtimes;
use runtime_queue::QueueConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::backend::Backend;
use crate::config::{ConfigError, ServeConfig};
use crate::metrics::{self, MetricsError};
use crate::routes::{self, AppState};

/// Why a server could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A runtime instance, or the queue's URL, could not be set up.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The process-wide metrics recorder could not be installed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// [`Server::bind`] could not listen on the configured address.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("the server failed")]
    Serve(#[source] std::io::Error),
    /// [`Reloader::reload`] on a server whose turns run on a queue's workers (each worker
    /// reloads its own plugins).
    #[error(
        "this server runs turns on a queue's workers: reload the workers (SIGHUP to `runtimes worker`)"
    )]
    ReloadOnQueue,
    /// [`Reloader::reload`] after the server stopped.
    #[error("the server has stopped")]
    Stopped,
}

/// Discovers a running server's plugins again ([`Server::reloader`]).
#[derive(Debug, Clone)]
pub struct Reloader {
    /// Weak: a reloader kept past the server's end does not keep its runtimes (and their
    /// workers) alive.
    state: std::sync::Weak<AppState>,
}

impl Reloader {
    /// Scans the plugin folders again and upgrades what changed: new turns of a runtime whose
    /// file changed run on the new file (at the process level, in new workers), while turns
    /// already running finish on the old one; a runtime whose library this process has
    /// loaded (inline and threads levels) is kept and listed as needing a restart.
    ///
    /// # Errors
    ///
    /// [`ServeError::ReloadOnQueue`] with a queue backend; [`ServeError::Stopped`] once the
    /// server has stopped.
    pub async fn reload(&self) -> Result<runtime_loader::Rediscovered, ServeError> {
        let state = self.state.upgrade().ok_or(ServeError::Stopped)?;
        state
            .handles
            .reload()
            .await
            .ok_or(ServeError::ReloadOnQueue)
    }
}

/// What happens while a server shuts down, in order. [`Server::on_event`] chooses where
/// these go; by default they are logged (`tracing`, level info). Their `Display` is the line
/// `runtimes serve` prints on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServeEvent {
    /// The shutdown future resolved: no new connections; running turns get `grace` to
    /// finish.
    ShuttingDown {
        /// Turns running now.
        running: usize,
        /// The grace period.
        grace: Duration,
    },
    /// Every connection ended within the grace period: the server stopped.
    Stopped,
    /// The grace period is over: the turns still running are cancelled.
    GraceOver {
        /// Turns still running.
        running: usize,
    },
    /// Some cancelled turns were not released within `bound`; the server returns anyway.
    ReleaseTimedOut {
        /// [`ServeLimits::release_bound`](crate::ServeLimits::release_bound).
        bound: Duration,
    },
}

impl fmt::Display for ServeEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeEvent::ShuttingDown { running, grace } => write!(
                f,
                "shutting down: no new connections; {running} running turn(s) get {grace:?} to finish"
            ),
            ServeEvent::Stopped => f.write_str("stopped"),
            ServeEvent::GraceOver { running } => write!(
                f,
                "the grace period is over: cancelling {running} running turn(s)"
            ),
            ServeEvent::ReleaseTimedOut { bound } => {
                write!(f, "some turns did not end within {bound:?}; exiting anyway")
            }
        }
    }
}

/// Where [`ServeEvent`]s go.
type OnEvent = Arc<dyn Fn(&ServeEvent) + Send + Sync>;

/// A server ready to serve: its turn backend is set up and its metrics recorder installed.
///
/// ```no_run
/// # async fn host(runtimes: runtime_loader::Runtimes) -> Result<(), runtime_serve::ServeError> {
/// use runtime_serve::{ServeConfig, Server};
///
/// let server = Server::new(ServeConfig::default(), || runtimes).await?;
/// let listener = server.bind().await?;
/// let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// // Serves until `_stop` is used or dropped, then lets running turns finish.
/// server
///     .serve(listener, async move {
///         let _ = stopped.await;
///     })
///     .await
/// # }
/// ```
pub struct Server {
    state: Arc<AppState>,
    close: watch::Sender<bool>,
    addr: SocketAddr,
    on_event: OnEvent,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Sets up the turn backend `config` asks for and installs the process-wide Prometheus
    /// recorder that `GET /metrics` renders.
    ///
    /// Without [`ServeConfig::redis`], `registry` gives the runtimes to serve (called once,
    /// here: it usually discovers the plugins); [`ServeConfig::isolation`] is applied to
    /// each, and [`ServeConfig::instances`] are created now. With it, `registry` is not
    /// called: the queue is connected now if it can be, and on the first request that needs
    /// it otherwise.
    ///
    /// # Errors
    ///
    /// [`ServeError::Config`] when an instance cannot be created (an unknown runtime, one
    /// that was refused, a configuration refused, one name configured twice) or the queue's
    /// URL is not one; [`ServeError::Metrics`] when another metrics recorder is installed in
    /// the process (so one server per process).
    pub async fn new(
        config: ServeConfig,
        registry: impl FnOnce() -> Runtimes,
    ) -> Result<Self, ServeError> {
        if !config.addr.ip().is_loopback() {
            tracing::warn!(addr = %config.addr, "listening beyond loopback: anyone who can reach this address can run turns{}",
                if config.api_key.is_none() { " (and no --api-key-env is set)" } else { "" });
        }
        let handles = backend(registry, &config).await?;
        tracing::info!("turns run on {}", handles.describe());
        let metrics = metrics::install()?;
        let (close, closing) = watch::channel(false);
        let state = AppState::new(handles, config.api_key, config.limits, metrics, closing);
        Ok(Self {
            state: Arc::new(state),
            close,
            addr: config.addr,
            on_event: Arc::new(|event| tracing::info!("{event}")),
        })
    }

    /// A handle that reloads this server's plugins while it serves (for a `SIGHUP` handler);
    /// `POST /v1/runtimes/reload` does the same for a client with the API key.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            state: Arc::downgrade(&self.state),
        }
    }

    /// Sends the shutdown events to `on_event` instead of the logs.
    #[must_use]
    pub fn on_event(mut self, on_event: impl Fn(&ServeEvent) + Send + Sync + 'static) -> Self {
        self.on_event = Arc::new(on_event);
        self
    }

    /// Listens on [`ServeConfig::addr`].
    ///
    /// # Errors
    ///
    /// [`ServeError::Bind`].
    pub async fn bind(&self) -> Result<TcpListener, ServeError> {
        TcpListener::bind(self.addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: self.addr,
                source,
            })
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting connections and
    /// gives running turns [`ServeLimits::shutdown_grace`](crate::ServeLimits) to finish.
    /// Returns when every connection has ended, or once the grace period is over: then every
    /// running turn is dropped (which cancels it inside its plugin, or in the queue), and the
    /// server waits up to [`ServeLimits::release_bound`](crate::ServeLimits) for them to be
    /// released.
    ///
    /// # Errors
    ///
    /// [`ServeError::Serve`] when serving fails.
    pub async fn serve<F>(self, listener: TcpListener, shutdown: F) -> Result<(), ServeError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Server {
            state,
            close,
            on_event,
            ..
        } = self;
        let limits = state.limits;
        let (closed_tx, closed) = tokio::sync::oneshot::channel();
        let server = crate::shutdown::serve(
            listener,
            routes::router(Arc::clone(&state)),
            limits,
            shutdown,
            closed_tx,
        );
        let grace_state = Arc::clone(&state);
        let grace_events = Arc::clone(&on_event);
        let grace_over = async move {
            let state = grace_state;
            if closed.await.is_err() {
                std::future::pending::<()>().await;
            }
            grace_events(&ServeEvent::ShuttingDown {
                running: state.running(),
                grace: limits.shutdown_grace,
            });
            tokio::time::sleep(limits.shutdown_grace).await;
            state.running()
        };
        let mut server = std::pin::pin!(server);
        tokio::select! {
            () = &mut server => {
                on_event(&ServeEvent::Stopped);
            }
            running = grace_over => {
                on_event(&ServeEvent::GraceOver { running });
                // Drop every running turn, then give the plugins a moment to release them on
                // their own threads (their cleanup: child processes, connections), bounded.
                let _ = close.send(true);
                let released = async {
                    let _ = state.turns.acquire_many(limits.max_concurrent).await;
                    state.handles.wait_idle().await;
                    // And their connections: each cancelled turn's answer (a 503, or a
                    // stream's `unavailable` event) is written before the server returns.
                    (&mut server).await;
                };
                if tokio::time::timeout(limits.release_bound, released).await.is_err() {
                    on_event(&ServeEvent::ReleaseTimedOut { bound: limits.release_bound });
                }
            }
        }
        Ok(())
    }
}

/// The turn backend `config` asks for: the Redis queue's workers with
/// [`ServeConfig::redis`], otherwise the plugins of the registry `registry` gives.
async fn backend(
    registry: impl FnOnce() -> Runtimes,
    config: &ServeConfig,
) -> Result<Backend, ConfigError> {
    let timeout = config.limits.request_timeout;
    if let Some(redis) = &config.redis {
        let queue = QueueConfig::default()
            .with_prefix(&redis.prefix)
            .with_group(&redis.group)
            .with_reconnect_for(config.limits.redis_wait);
        return Backend::queue(&redis.url, queue, &config.instances, timeout).await;
    }
    let runtimes = registry();
    if let Some(isolation) = config.isolation {
        // Every runtime at that level (a supervised worker process of its own for `Process`).
        for entry in runtimes.list_runtimes() {
            let _ = runtimes.set_isolation(&entry.id, isolation);
        }
    }
    let report = runtimes.report();
    let available = runtimes.list_runtimes();
    tracing::info!(
        runtimes = available.len(),
        rejected = report.rejected.len(),
        shadowed = report.shadowed.len(),
        "plugins discovered"
    );
    if available.is_empty() {
        tracing::warn!("no runtime is installed: every chat completion will answer 404");
    }
    let mut backend = Backend::local(runtimes, &config.instances, timeout)?;
    if let Some(isolation) = config.isolation {
        backend.set_reload_isolation(isolation);
    }
    Ok(backend)
}
