//! The one place the server turns a runtime name into something that runs turns: the *turn
//! backend*. Two kinds, chosen at start:
//!
//! - [`Backend::Local`]: the plugins of this process's registry. The runtimes named by
//!   `ServeConfig::instances` (`--config`) are created with their configuration at start,
//!   every other runtime with its default configuration on first use; the isolation level
//!   (`--isolate`) is set on the registry before, and every handle comes from [`open`].
//! - [`Backend::Queue`] (`--redis URL`): every turn is a job on the Redis queue, run by
//!   whichever `runtimes worker` takes it. The server loads no plugin: the runtimes it offers
//!   are those the live workers advertise (`<prefix>:workers`, renewed by their heartbeat),
//!   and `--config` configurations travel with each job. A client that goes away, a
//!   `--request-timeout` or the end of the grace period cancels the turn in the queue by its
//!   execution id; Redis out of reach for `--redis-wait` is an `unavailable` error (503).
//!
//! Routes see only [`Backend`] and [`TurnHandle`], never which kind they use. This module
//! also holds what routes and the event stream share about one turn, [`TurnItems`] and
//! [`Running`] (its permit and its metrics), so `sse` depends on it and never on `routes`.

// The loader's `ResolveError` is large by design (structured reasons, cold paths); see the
// same allowance in runtime-loader's lib.rs.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use runtime_api::{Capabilities, RuntimeError, StreamItem, TurnOutput, TurnRequest};
use runtime_loader::{Rediscovered, ResolveError, RuntimeHandle, Runtimes};
use runtime_queue::{QueueClient, QueueConfig, QueueError, QueueTurnStream};
use serde_json::{Value, json};
use tokio::sync::{OnceCell, OwnedSemaphorePermit};
use tokio_util::task::TaskTracker;

use crate::config::ConfigError;
use crate::metrics::{Outcome, TurnGuard};

/// A turn's items, from `stream_turn` or a single `run_turn` result.
pub type TurnItems = Pin<Box<dyn Stream<Item = Result<StreamItem, RuntimeError>> + Send>>;

/// A turn that holds one of the `max_concurrent` permits and is counted in the metrics.
#[derive(Debug)]
pub struct Running {
    guard: TurnGuard,
    _permit: OwnedSemaphorePermit,
}

impl Running {
    /// Starts counting a turn that holds `permit`.
    pub fn start(
        runtime: &str,
        stream: bool,
        execution_id: &str,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            guard: TurnGuard::start(runtime, stream, execution_id),
            _permit: permit,
        }
    }

    /// Records how the turn ended.
    pub fn finish(&mut self, outcome: Outcome) {
        self.guard.finish(outcome);
    }
}

/// Why a name gave no handle.
#[derive(Debug)]
#[non_exhaustive]
pub enum LookupError {
    /// No runtime has this name.
    NotFound,
    /// The runtime exists but could not be loaded or created (local only).
    NotLoaded(String),
    /// The backend could not be asked (Redis out of reach).
    Unavailable(RuntimeError),
}

/// A runtime the backend offers: its id and aliases.
#[derive(Debug, Clone)]
pub struct Offered {
    /// The id.
    pub id: String,
    /// Its aliases.
    pub aliases: Vec<String>,
}

impl Offered {
    /// Its id and aliases.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.id).chain(&self.aliases)
    }
}

/// Where the server's turns run.
#[derive(Debug)]
pub enum Backend {
    /// In this process, with its plugins.
    Local(Box<Local>),
    /// On the workers of a Redis queue.
    Queue(Box<Queue>),
}

/// The local backend: the registry and the `--config` instances.
#[derive(Debug)]
pub struct Local {
    /// Shared with the blocking threads that load plugins and run factories.
    runtimes: Arc<Runtimes>,
    /// The `--config` instances by every name of their runtime (replaced when a reload
    /// upgrades their runtime).
    configured: std::sync::RwLock<HashMap<String, RuntimeHandle>>,
    /// The `--config` instances as given, to create them again after an upgrade.
    instances: Vec<(String, Value)>,
    /// The level every runtime was set to (`--isolate`), for runtimes a reload adds.
    isolation: Option<runtime_loader::Isolation>,
    timeout: Duration,
}

impl Local {
    fn configured_handle(&self, name: &str) -> Option<RuntimeHandle> {
        self.configured
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Discovers the plugins again (see `Runtimes::rediscover`), then creates the `--config`
    /// instances of upgraded runtimes again, so their new turns go to the new file too.
    async fn reload(&self) -> Rediscovered {
        let runtimes = Arc::clone(&self.runtimes);
        let isolation = self.isolation;
        let outcome = tokio::task::spawn_blocking(move || match isolation {
            Some(level) => runtimes.rediscover_at(level),
            None => runtimes.rediscover(),
        })
        .await
        .unwrap_or_default();
        if !outcome.removed.is_empty() {
            // A removed runtime's configured instance goes too: its names answer 404.
            self.configured
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|_, handle| !outcome.removed.iter().any(|id| id == handle.id()));
        }
        for (name, config) in &self.instances {
            let Some(entry) = self.runtimes.get_entry(name) else {
                continue;
            };
            if !outcome.upgraded.contains(&entry.id) {
                continue;
            }
            match self.runtimes.new_instance_async(name, config).await {
                Ok(handle) => {
                    let mut configured = self
                        .configured
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    for name in std::iter::once(&entry.id).chain(&entry.aliases) {
                        if configured.contains_key(name) {
                            configured.insert(name.clone(), handle.clone());
                        }
                    }
                }
                Err(error) => tracing::error!(
                    runtime = %name,
                    %error,
                    "the upgraded runtime's configured instance could not be created; the old one keeps serving"
                ),
            }
        }
        outcome
    }
}

/// The queue backend (its `Debug` shows no password).
pub struct Queue {
    url: String,
    config: QueueConfig,
    client: OnceCell<QueueClient>,
    configs: HashMap<String, Value>,
    timeout: Duration,
    /// Cancels sent for turns that were dropped, awaited before the server exits.
    cancels: TaskTracker,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("url", &runtime_queue::redact_url(&self.url))
            .field("config", &self.config)
            .field("configs", &self.configs.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Creates (or, for the default configuration, finds) a runtime's handle. Every local handle
/// the server uses comes from here: wire isolation levels in this function.
fn open(
    runtimes: &Runtimes,
    name: &str,
    config: Option<&Value>,
) -> Result<RuntimeHandle, ResolveError> {
    match config {
        None => runtimes.resolve(name),
        Some(config) => runtimes.new_instance(name, config),
    }
}

/// The error a client gets when the queue cannot be reached.
fn unavailable(error: &QueueError) -> RuntimeError {
    RuntimeError::unavailable(format!("the turn queue is unavailable: {error}"))
}

impl Backend {
    /// The local backend over `runtimes`: creates the runtimes named by `instances` with
    /// their configurations; turns end with a `timeout` error after `timeout`.
    pub fn local(
        runtimes: Runtimes,
        instances: &[(String, Value)],
        timeout: Duration,
    ) -> Result<Self, ConfigError> {
        let mut configured = HashMap::new();
        for (name, config) in instances {
            let handle = open(&runtimes, name, Some(config))?;
            let names: Vec<String> = match runtimes.get_entry(handle.id()) {
                Some(entry) => std::iter::once(entry.id).chain(entry.aliases).collect(),
                None => vec![handle.id().to_owned()],
            };
            for name in names {
                if configured.insert(name.clone(), handle.clone()).is_some() {
                    return Err(ConfigError::Twice { name });
                }
            }
        }
        Ok(Backend::Local(Box::new(Local {
            runtimes: Arc::new(runtimes),
            configured: std::sync::RwLock::new(configured),
            instances: instances.to_vec(),
            isolation: None,
            timeout,
        })))
    }

    /// The queue backend for the Redis at `url`. It connects now if it can; if Redis is out
    /// of reach it starts anyway and connects on the first request that needs it (until then
    /// requests are answered 503). `config.reconnect_for` bounds every wait for Redis.
    ///
    /// # Errors
    ///
    /// Two instances of one name, or a URL that is not one.
    pub async fn queue(
        url: &str,
        config: QueueConfig,
        instances: &[(String, Value)],
        timeout: Duration,
    ) -> Result<Self, ConfigError> {
        let mut by_name = HashMap::new();
        for (name, value) in instances {
            if by_name.insert(name.clone(), value.clone()).is_some() {
                return Err(ConfigError::Twice { name: name.clone() });
            }
        }
        let client = OnceCell::new();
        match QueueClient::connect(url, config.clone()).await {
            Ok(connected) => {
                let _ = client.set(connected);
            }
            Err(error @ QueueError::Url { .. }) => return Err(ConfigError::Queue(error)),
            Err(error) => tracing::warn!(
                "{}; serving anyway: requests are answered 503 until it is reachable",
                error.to_string().escape_debug()
            ),
        }
        Ok(Backend::Queue(Box::new(Queue {
            url: url.to_owned(),
            config,
            client,
            configs: by_name,
            timeout,
            cancels: TaskTracker::new(),
        })))
    }

    /// What the logs call it.
    pub fn describe(&self) -> String {
        match self {
            Backend::Local(_) => "the plugins of this process".to_owned(),
            Backend::Queue(queue) => format!(
                "the workers of the Redis queue `{}` (group `{}`)",
                queue.config.prefix.escape_debug(),
                queue.config.group.escape_debug()
            ),
        }
    }

    /// Every runtime offered, sorted by id.
    ///
    /// # Errors
    ///
    /// Redis out of reach.
    pub async fn offered(&self) -> Result<Vec<Offered>, RuntimeError> {
        match self {
            Backend::Local(local) => Ok(local
                .runtimes
                .list_runtimes()
                .into_iter()
                .map(|entry| Offered {
                    id: entry.id,
                    aliases: entry.aliases,
                })
                .collect()),
            Backend::Queue(queue) => Ok(queue
                .client()
                .await?
                .runtimes()
                .await
                .map_err(|e| unavailable(&e))?
                .into_iter()
                .map(|runtime| Offered {
                    id: runtime.id,
                    aliases: runtime.aliases,
                })
                .collect()),
        }
    }

    /// The body of `GET /v1/runtimes`.
    ///
    /// # Errors
    ///
    /// Redis out of reach.
    pub async fn describe_runtimes(&self) -> Result<Value, RuntimeError> {
        match self {
            Backend::Local(local) => {
                let report = local.runtimes.report();
                let failed: Vec<Value> = local
                    .runtimes
                    .failed_marks()
                    .into_iter()
                    .map(|mark| {
                        json!({
                            "id": mark.id,
                            "reason": mark.reason,
                            "expires_in_s": mark.expires_in.as_secs(),
                        })
                    })
                    .collect();
                Ok(json!({
                    "runtimes": local.runtimes.list_runtimes(),
                    "rejected": report.rejected,
                    "shadowed": report.shadowed,
                    "failed": failed,
                }))
            }
            Backend::Queue(queue) => {
                let client = queue.client().await?;
                let workers = client.workers().await.map_err(|e| unavailable(&e))?;
                let backlog = client.backlog().await.map_err(|e| unavailable(&e))?;
                let runtimes = client.runtimes().await.map_err(|e| unavailable(&e))?;
                let workers: Vec<Value> = workers
                    .iter()
                    .map(|w| {
                        json!({
                            "consumer": w.consumer,
                            "concurrency": w.concurrency,
                            "runtimes": w.runtimes.iter().map(|r| &r.id).collect::<Vec<_>>(),
                            "started_ms": w.started_ms,
                            "expires_ms": w.expires_ms,
                        })
                    })
                    .collect();
                Ok(json!({
                    "runtimes": runtimes,
                    "workers": workers,
                    "backlog": {"jobs": backlog.jobs, "pending": backlog.pending, "dead": backlog.dead},
                }))
            }
        }
    }

    /// Sets the level runtimes a reload adds get (the level `--isolate` gave every runtime).
    pub(crate) fn set_reload_isolation(&mut self, isolation: runtime_loader::Isolation) {
        if let Backend::Local(local) = self {
            local.isolation = Some(isolation);
        }
    }

    /// Discovers the plugins again and upgrades what changed (local); `None` with a queue,
    /// whose workers reload on their own.
    pub async fn reload(&self) -> Option<Rediscovered> {
        match self {
            Backend::Local(local) => Some(local.reload().await),
            Backend::Queue(_) => None,
        }
    }

    /// The ids of the runtimes marked failed at the process level (none with a queue: each
    /// worker keeps its own marks).
    pub fn failed_ids(&self) -> Vec<String> {
        match self {
            Backend::Local(local) => local
                .runtimes
                .failed_marks()
                .into_iter()
                .map(|mark| mark.id)
                .collect(),
            Backend::Queue(_) => Vec::new(),
        }
    }

    /// Clears the failed mark of the runtime named `name`: `Ok(true)` if it was marked,
    /// `Err(None)` if nothing has that name, `Err(Some(why))` if this backend keeps no marks.
    pub fn clear_failed(&self, name: &str) -> Result<bool, Option<&'static str>> {
        match self {
            Backend::Local(local) => local.runtimes.clear_failed(name).map_err(|_| None),
            Backend::Queue(_) => Err(Some(
                "with --redis, each queue worker keeps its own failed marks; they expire on \
                 their own, or restart the worker",
            )),
        }
    }

    /// A handle for the runtime named `name` (an id or alias).
    ///
    /// # Errors
    ///
    /// No such runtime, one that cannot be loaded, or Redis out of reach.
    pub async fn get(&self, name: &str) -> Result<TurnHandle, LookupError> {
        match self {
            Backend::Local(local) => {
                // A first use loads the plugin and runs its factory (at the process level,
                // starts a worker): on a blocking thread, never on the server's async ones.
                let configured = local.configured_handle(name);
                let handle = match configured {
                    Some(handle) => Ok(handle),
                    None => local.runtimes.resolve_async(name).await,
                };
                match handle {
                    Ok(handle) => Ok(TurnHandle::Local(handle.with_timeout(local.timeout))),
                    Err(ResolveError::NotFound { .. }) => Err(LookupError::NotFound),
                    Err(other) => Err(LookupError::NotLoaded(other.to_string())),
                }
            }
            Backend::Queue(queue) => {
                let client = queue.client().await.map_err(LookupError::Unavailable)?;
                let runtimes = client
                    .runtimes()
                    .await
                    .map_err(|e| LookupError::Unavailable(unavailable(&e)))?;
                let Some(runtime) = runtimes.into_iter().find(|r| r.answers_to(name)) else {
                    return Err(LookupError::NotFound);
                };
                let config = std::iter::once(&runtime.id)
                    .chain(&runtime.aliases)
                    .find_map(|n| queue.configs.get(n))
                    .cloned()
                    .unwrap_or(Value::Null);
                Ok(TurnHandle::Queued(Queued {
                    client: client.clone(),
                    id: runtime.id,
                    config,
                    timeout: queue.timeout,
                    cancels: queue.cancels.clone(),
                }))
            }
        }
    }

    /// Waits until no turn of the runtimes served still runs inside its plugin (local), or
    /// until the cancels of dropped turns have reached the queue.
    pub async fn wait_idle(&self) {
        match self {
            Backend::Local(local) => {
                local.runtimes.wait_idle().await;
                let configured: Vec<RuntimeHandle> = local
                    .configured
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .values()
                    .cloned()
                    .collect();
                for handle in &configured {
                    let _ = handle.wait_idle().await;
                }
            }
            Backend::Queue(queue) => {
                queue.cancels.close();
                queue.cancels.wait().await;
            }
        }
    }
}

impl Queue {
    /// The client, connecting first if the server started while Redis was out of reach.
    async fn client(&self) -> Result<&QueueClient, RuntimeError> {
        self.client
            .get_or_try_init(|| QueueClient::connect(&self.url, self.config.clone()))
            .await
            .map_err(|e| unavailable(&e))
    }
}

/// A runtime ready to run turns, here or on the queue's workers.
#[derive(Debug)]
pub enum TurnHandle {
    /// A local runtime.
    Local(RuntimeHandle),
    /// A runtime the queue's workers run.
    Queued(Queued),
}

/// A runtime the queue's workers run.
#[derive(Debug)]
pub struct Queued {
    client: QueueClient,
    id: String,
    config: Value,
    timeout: Duration,
    cancels: TaskTracker,
}

impl TurnHandle {
    /// The runtime's id.
    pub fn id(&self) -> &str {
        match self {
            TurnHandle::Local(handle) => handle.id(),
            TurnHandle::Queued(queued) => &queued.id,
        }
    }

    /// A new execution id, unique within the server and across its restarts (local), or
    /// across every client of the queue (queued: it includes the number Redis gave this
    /// server's client, since the id is the queue's idempotency key).
    pub fn new_execution_id(&self, started: u64) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        match self {
            TurnHandle::Local(_) => format!("serve-{started:x}-{}-{n}", std::process::id()),
            TurnHandle::Queued(queued) => {
                format!("serve-q{}-{started:x}-{n}", queued.client.number())
            }
        }
    }

    /// One turn's final output. Dropping the future cancels the turn.
    pub fn run(
        &self,
        request: TurnRequest,
    ) -> BoxFuture<'static, Result<TurnOutput, RuntimeError>> {
        match self {
            TurnHandle::Local(handle) => handle.run_turn(request).boxed(),
            TurnHandle::Queued(queued) => {
                let mut items = queued.stream(request);
                async move {
                    while let Some(item) = items.next().await {
                        match item {
                            Ok(StreamItem::Done(output)) => return Ok(output),
                            Ok(_) => {}
                            Err(error) => return Err(error),
                        }
                    }
                    Err(RuntimeError::internal(
                        "the turn's results ended without a final result",
                    ))
                }
                .boxed()
            }
        }
    }

    /// One turn's items: deltas, then the final output (a runtime that does not stream gives
    /// the final output only). Dropping the stream cancels the turn.
    pub fn stream(&self, request: TurnRequest) -> TurnItems {
        match self {
            TurnHandle::Local(handle) => {
                if handle.capabilities().contains(Capabilities::STREAMING) {
                    Box::pin(handle.stream_turn(request))
                } else {
                    Box::pin(
                        futures::stream::once(handle.run_turn(request))
                            .map(|r| r.map(StreamItem::Done)),
                    )
                }
            }
            TurnHandle::Queued(queued) => Box::pin(queued.stream(request)),
        }
    }
}

impl Queued {
    fn stream(&self, request: TurnRequest) -> QueuedTurn {
        let client = self.client.clone();
        let (runtime, config) = (self.id.clone(), self.config.clone());
        let execution_id = request.execution_id.clone();
        let submit = {
            let client = client.clone();
            async move {
                let id = client.submit_with_config(&runtime, config, request).await?;
                Ok(client.results(&id))
            }
            .boxed()
        };
        QueuedTurn {
            client,
            execution_id,
            submit: Some(submit),
            results: None,
            deadline: Box::pin(tokio::time::sleep(self.timeout)),
            timeout: self.timeout,
            done: false,
            cancels: self.cancels.clone(),
        }
    }
}

/// A turn on the queue: submitted when first polled, then its results. It ends with a
/// `timeout` error after the request timeout; ended early (timeout, dropped), it is
/// cancelled in the queue by its execution id.
struct QueuedTurn {
    client: QueueClient,
    execution_id: String,
    submit: Option<BoxFuture<'static, Result<QueueTurnStream, QueueError>>>,
    results: Option<QueueTurnStream>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    done: bool,
    cancels: TaskTracker,
}

impl QueuedTurn {
    /// Stops following the turn and cancels it in the queue, in a task the server awaits
    /// before it exits.
    fn cancel(&mut self) {
        self.done = true;
        self.submit = None;
        let id = self.execution_id.clone();
        let cancel: BoxFuture<'static, _> = match self.results.take() {
            Some(results) => results.cancel().boxed(),
            None => {
                let client = self.client.clone();
                let id = id.clone();
                async move { client.cancel(&id).await }.boxed()
            }
        };
        let task = self.cancels.track_future(async move {
            match cancel.await {
                Ok(outcome) => {
                    tracing::debug!(execution_id = %id, ?outcome, "queued turn cancelled")
                }
                Err(error) => tracing::warn!(
                    execution_id = %id,
                    "could not cancel a queued turn: {}",
                    error.to_string().escape_debug()
                ),
            }
        });
        // A runtime is there in every handler; while the process exits there may be none
        // (then the turn expires in the queue, or runs to its end unread).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(task);
        }
    }
}

impl Stream for QueuedTurn {
    type Item = Result<StreamItem, RuntimeError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.cancel();
            return Poll::Ready(Some(Err(RuntimeError::timeout(format!(
                "the turn did not finish within {:?} (--request-timeout); it was cancelled in the queue",
                this.timeout
            )))));
        }
        if let Some(submit) = this.submit.as_mut() {
            match submit.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(results)) => {
                    this.submit = None;
                    this.results = Some(results);
                }
                Poll::Ready(Err(error)) => {
                    // It may have been queued before Redis went away: cancel to be sure.
                    this.cancel();
                    return Poll::Ready(Some(Err(unavailable(&error))));
                }
            }
        }
        let Some(results) = this.results.as_mut() else {
            this.done = true;
            return Poll::Ready(None);
        };
        match results.poll_next_unpin(cx) {
            Poll::Ready(Some(item)) => {
                if !matches!(item, Ok(StreamItem::Delta(_))) {
                    this.done = true;
                }
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for QueuedTurn {
    fn drop(&mut self) {
        if !self.done {
            // The client went away, or the grace period is over.
            self.cancel();
        }
    }
}
