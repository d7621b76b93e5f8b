//! The client side: submit turns, read their results as a stream, cancel them, ask their
//! status, and see the backlog.
//!
//! Longer than 700 lines on purpose: submitting, reading results and cancelling share the
//! inbox reader and the result cursor, which read best in one place.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use redis::streams::{StreamReadOptions, StreamReadReply};
use runtime_api::{RuntimeError, StreamItem, TurnRequest, Value};
use tokio::sync::Notify;

use crate::config::{QueueConfig, valid_execution_id};
use crate::conn::{connect, open, retry};
use crate::error::QueueError;
use crate::scripts;
use crate::wire::{Job, ResultEntry, RuntimeAdvert, WorkerAdvert, is_final, now_ms};

const INBOX_BLOCK: Duration = crate::config::LIMITS.inbox_block;

/// A turn's state in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TurnStatus {
    /// Submitted; no worker has taken it yet.
    Queued,
    /// A worker runs it.
    Running,
    /// It ended with a final output.
    Complete,
    /// It ended with an error (its runtime's, `worker_lost`, or dead-lettered).
    Error,
    /// It was cancelled.
    Cancelled,
}

impl TurnStatus {
    /// The name stored in Redis and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            TurnStatus::Queued => "queued",
            TurnStatus::Running => "running",
            TurnStatus::Complete => "complete",
            TurnStatus::Error => "error",
            TurnStatus::Cancelled => "cancelled",
        }
    }

    /// The status for a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "queued" => TurnStatus::Queued,
            "running" => TurnStatus::Running,
            "complete" => TurnStatus::Complete,
            "error" => TurnStatus::Error,
            "cancelled" => TurnStatus::Cancelled,
            _ => return None,
        })
    }

    /// Whether the turn has ended.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            TurnStatus::Complete | TurnStatus::Error | TurnStatus::Cancelled
        )
    }
}

impl fmt::Display for TurnStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the status hash of a turn says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TurnState {
    /// Where it is.
    pub status: TurnStatus,
    /// The runtime asked for.
    pub runtime: String,
    /// How many times a worker took it.
    pub attempts: u32,
    /// The consumer that took it last, if any.
    pub worker: Option<String>,
    /// The error's text, for `error` and `cancelled`.
    pub error: Option<String>,
    /// When it was submitted (Unix ms).
    pub submitted_ms: u64,
    /// When it last changed (Unix ms).
    pub updated_ms: u64,
}

/// What [`QueueClient::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelOutcome {
    /// No turn has this execution id (never submitted, or expired).
    Unknown,
    /// It was queued: it ended now with a `cancelled` error and will not run.
    Cancelled,
    /// It runs: its worker was told and cancels it in the runtime.
    Signalled,
    /// It had already finished with this status.
    Finished(TurnStatus),
}

/// The size of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backlog {
    /// Jobs in the job stream: waiting, or taken and not finished.
    pub jobs: u64,
    /// Jobs taken by a worker and not yet finished (the group's pending entries).
    pub pending: u64,
    /// Entries in the dead-letter stream.
    pub dead: u64,
}

type Waiters = Arc<Mutex<HashMap<String, Arc<Notify>>>>;

struct Inner {
    config: QueueConfig,
    conn: ConnectionManager,
    client_no: u64,
    inbox: String,
    counter: AtomicU64,
    waiters: Waiters,
    reader: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Submits turns to the queue and reads their results. Cheap to clone; one set of
/// connections (reconnecting after a Redis restart) per client.
#[derive(Clone)]
pub struct QueueClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for QueueClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueClient")
            .field("prefix", &self.inner.config.prefix)
            .field("client", &self.inner.client_no)
            .finish_non_exhaustive()
    }
}

impl QueueClient {
    /// Connects to Redis at `url` (`redis://default:PASSWORD@127.0.0.1:6379`, `rediss://` for
    /// TLS; without a password in the URL, [`PASSWORD_ENV`](crate::PASSWORD_ENV) gives one).
    ///
    /// # Errors
    ///
    /// A URL that is not one, or Redis unreachable for `config.reconnect_for`.
    pub async fn connect(url: &str, config: QueueConfig) -> Result<Self, QueueError> {
        let client = open(url)?;
        let window = config.reconnect_for;
        let conn = connect(&client, url, Duration::ZERO, window).await?;
        let ids_key = config.ids_key();
        let client_no: u64 = retry("number this client", window, || {
            let mut conn = conn.clone();
            let key = ids_key.clone();
            async move { conn.incr(key, 1).await }
        })
        .await?;
        let inbox = config.inbox_key(client_no);
        let reader_conn = connect(&client, url, INBOX_BLOCK, window).await?;
        let waiters: Waiters = Arc::default();
        let reader = tokio::spawn(read_inbox(reader_conn, inbox.clone(), Arc::clone(&waiters)))
            .abort_handle();
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                conn,
                client_no,
                inbox,
                counter: AtomicU64::new(0),
                waiters,
                reader,
            }),
        })
    }

    /// The number Redis gave this client: unique among the clients and workers of the
    /// queue, so it makes execution ids unique across processes and hosts.
    pub fn number(&self) -> u64 {
        self.inner.client_no
    }

    /// The queue's settings.
    pub fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    /// Submits a turn for `runtime` (an id or alias the workers resolve) and returns its
    /// execution id: the request's own, or a new one. Submitting an execution id that was
    /// already submitted (and has not expired) enqueues nothing and returns the id: its
    /// results are the first submission's.
    ///
    /// # Errors
    ///
    /// An execution id that cannot be a key, or Redis unreachable.
    pub async fn submit(&self, runtime: &str, request: TurnRequest) -> Result<String, QueueError> {
        self.submit_with_config(runtime, Value::Null, request).await
    }

    /// [`submit`](Self::submit) for a runtime instance made with this configuration.
    ///
    /// # Errors
    ///
    /// As for [`submit`](Self::submit).
    pub async fn submit_with_config(
        &self,
        runtime: &str,
        config: Value,
        mut request: TurnRequest,
    ) -> Result<String, QueueError> {
        if request.execution_id.is_empty() {
            let n = self.inner.counter.fetch_add(1, Ordering::Relaxed);
            request.execution_id = format!("q{}-{n}", self.inner.client_no);
        }
        let id = request.execution_id.clone();
        if !valid_execution_id(&id) {
            return Err(QueueError::InvalidExecutionId { id });
        }
        let mut job = Job::new(runtime, config, request);
        job.notify = Some(self.inner.inbox.clone());
        let text = job.encode();
        let config = &self.inner.config;
        let (status_key, jobs_key) = (config.status_key(&id), config.jobs_key());
        let (enqueued, detail): (i64, String) =
            retry("submit a turn", config.reconnect_for, || {
                let mut conn = self.inner.conn.clone();
                let mut invocation = scripts::SUBMIT.prepare_invoke();
                invocation
                    .key(&status_key)
                    .key(&jobs_key)
                    .arg(&text)
                    .arg(runtime)
                    .arg(config.ttl_secs())
                    .arg(now_ms());
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        if enqueued == 1 {
            tracing::debug!(execution_id = %id, runtime, entry = %detail, "turn queued");
        } else {
            tracing::debug!(execution_id = %id, status = %detail, "execution id already submitted; not queued again");
        }
        Ok(id)
    }

    /// Submits a turn and streams its results: the same items as a local `TurnStream`
    /// (deltas, then one final output, or an error as the last item). A runtime without the
    /// streaming capability gives its final output only.
    ///
    /// # Errors
    ///
    /// As for [`submit`](Self::submit).
    pub async fn stream_turn(
        &self,
        runtime: &str,
        request: TurnRequest,
    ) -> Result<QueueTurnStream, QueueError> {
        let id = self.submit(runtime, request).await?;
        Ok(self.results(&id))
    }

    /// The results of a submitted turn, from the first (any client may read them, as long as
    /// they have not expired). Dropping the stream before its last item cancels the turn.
    pub fn results(&self, execution_id: &str) -> QueueTurnStream {
        let notify = Arc::new(Notify::new());
        self.inner
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(execution_id.to_owned(), Arc::clone(&notify));
        let finished = Arc::new(AtomicBool::new(false));
        let reader = ResultReader {
            client: self.clone(),
            items_key: self.inner.config.items_key(execution_id),
            status_key: self.inner.config.status_key(execution_id),
            execution_id: execution_id.to_owned(),
            read: 0,
            seen: None,
            buffer: VecDeque::new(),
            notify,
            done: false,
            finished: Arc::clone(&finished),
        };
        let inner = futures::stream::unfold(reader, |mut reader| async move {
            let item = reader.next().await?;
            Some((item, reader))
        });
        QueueTurnStream {
            execution_id: execution_id.to_owned(),
            client: self.clone(),
            inner: Box::pin(inner),
            finished,
        }
    }

    /// Cancels a turn wherever it is: a queued turn ends at once (it will not run), a running
    /// one is cancelled in its runtime by the worker that runs it.
    ///
    /// # Errors
    ///
    /// An execution id that cannot be a key, or Redis unreachable.
    pub async fn cancel(&self, execution_id: &str) -> Result<CancelOutcome, QueueError> {
        if !valid_execution_id(execution_id) {
            return Err(QueueError::InvalidExecutionId {
                id: execution_id.to_owned(),
            });
        }
        let config = &self.inner.config;
        let item = ResultEntry::encode(&Err(RuntimeError::cancelled(
            "cancelled before a worker took it",
        )));
        let (status_key, items_key, cancels_key) = (
            config.status_key(execution_id),
            config.items_key(execution_id),
            config.cancels_key(),
        );
        let answer: String = retry("cancel a turn", config.reconnect_for, || {
            let mut conn = self.inner.conn.clone();
            let mut invocation = scripts::CANCEL.prepare_invoke();
            invocation
                .key(&status_key)
                .key(&items_key)
                .key(&cancels_key)
                .arg(&item)
                .arg(config.ttl_secs())
                .arg(now_ms())
                .arg(execution_id);
            async move { invocation.invoke_async(&mut conn).await }
        })
        .await?;
        let outcome = match answer.as_str() {
            "unknown" => CancelOutcome::Unknown,
            "cancelled" => CancelOutcome::Cancelled,
            "signalled" => CancelOutcome::Signalled,
            other => match TurnStatus::parse(other) {
                Some(status) => CancelOutcome::Finished(status),
                None => {
                    return Err(QueueError::Unexpected {
                        operation: "cancel a turn",
                        detail: format!("status {other:?}"),
                    });
                }
            },
        };
        if outcome == CancelOutcome::Cancelled {
            self.wake(execution_id);
        }
        Ok(outcome)
    }

    /// A turn's status; `None` when no turn has this execution id (never submitted, or
    /// expired).
    ///
    /// # Errors
    ///
    /// Redis unreachable, or a status hash this crate did not write.
    pub async fn status(&self, execution_id: &str) -> Result<Option<TurnState>, QueueError> {
        let key = self.inner.config.status_key(execution_id);
        let fields: HashMap<String, String> = retry(
            "read a turn's status",
            self.inner.config.reconnect_for,
            || {
                let mut conn = self.inner.conn.clone();
                let key = key.clone();
                async move { conn.hgetall(key).await }
            },
        )
        .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let text = fields.get("status").map(String::as_str).unwrap_or("");
        let status = TurnStatus::parse(text).ok_or_else(|| QueueError::Unexpected {
            operation: "read a turn's status",
            detail: format!("status {text:?} in {key}"),
        })?;
        let number = |name: &str| fields.get(name).and_then(|v| v.parse::<u64>().ok());
        Ok(Some(TurnState {
            status,
            runtime: fields.get("runtime").cloned().unwrap_or_default(),
            attempts: number("attempts").unwrap_or(0) as u32,
            worker: fields.get("worker").cloned(),
            error: fields.get("error").cloned(),
            submitted_ms: number("submitted_ms").unwrap_or(0),
            updated_ms: number("updated_ms").unwrap_or(0),
        }))
    }

    /// How many jobs wait or run, and how many were dead-lettered.
    ///
    /// # Errors
    ///
    /// Redis unreachable.
    pub async fn backlog(&self) -> Result<Backlog, QueueError> {
        let config = &self.inner.config;
        let (jobs, dead): (u64, u64) = retry("measure the backlog", config.reconnect_for, || {
            let mut conn = self.inner.conn.clone();
            let mut pipe = redis::pipe();
            pipe.xlen(config.jobs_key()).xlen(config.dead_key());
            async move { pipe.query_async(&mut conn).await }
        })
        .await?;
        let pending: u64 = retry("measure the backlog", config.reconnect_for, || {
            let mut conn = self.inner.conn.clone();
            let mut cmd = redis::cmd("XPENDING");
            cmd.arg(config.jobs_key()).arg(&config.group);
            async move {
                match cmd.query_async::<redis::Value>(&mut conn).await {
                    Ok(redis::Value::Array(items)) => match items.first() {
                        Some(redis::Value::Int(n)) => Ok(*n as u64),
                        _ => Ok(0),
                    },
                    Ok(_) => Ok(0),
                    // No group yet: no worker ever started, nothing pending.
                    Err(e) if e.code() == Some("NOGROUP") => Ok(0),
                    Err(e) => Err(e),
                }
            }
        })
        .await?;
        Ok(Backlog {
            jobs,
            pending,
            dead,
        })
    }

    /// The live workers' adverts (see [`WorkerAdvert`]), sorted by consumer name: adverts
    /// past their expiry and adverts this build cannot read are left out.
    ///
    /// # Errors
    ///
    /// Redis unreachable.
    pub async fn workers(&self) -> Result<Vec<WorkerAdvert>, QueueError> {
        let config = &self.inner.config;
        let key = config.workers_key();
        let fields: HashMap<String, String> =
            retry("read the workers' adverts", config.reconnect_for, || {
                let mut conn = self.inner.conn.clone();
                let key = key.clone();
                async move { conn.hgetall(key).await }
            })
            .await?;
        let now = now_ms();
        let mut adverts: Vec<WorkerAdvert> = fields
            .into_iter()
            .filter_map(|(consumer, text)| match WorkerAdvert::decode(&text) {
                Ok(advert) => Some(advert),
                Err(reason) => {
                    tracing::debug!(consumer = %consumer.escape_debug(), %reason, "an advert this build cannot read");
                    None
                }
            })
            .filter(|advert| advert.expires_ms >= now)
            .collect();
        adverts.sort_by(|a, b| a.consumer.cmp(&b.consumer));
        Ok(adverts)
    }

    /// Every runtime some live worker serves, sorted by id: one advert per id (the first
    /// worker's, in consumer order, when workers disagree).
    ///
    /// # Errors
    ///
    /// Redis unreachable.
    pub async fn runtimes(&self) -> Result<Vec<RuntimeAdvert>, QueueError> {
        let mut runtimes: Vec<RuntimeAdvert> = Vec::new();
        for worker in self.workers().await? {
            for runtime in worker.runtimes {
                if !runtimes.iter().any(|known| known.id == runtime.id) {
                    runtimes.push(runtime);
                }
            }
        }
        runtimes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(runtimes)
    }

    fn wake(&self, execution_id: &str) {
        let waiters = self
            .inner
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(notify) = waiters.get(execution_id) {
            notify.notify_one();
        }
    }

    fn forget(&self, execution_id: &str) {
        self.inner
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(execution_id);
    }
}

/// Follows the client's inbox (execution ids whose results grew) and wakes their readers.
/// After an error (Redis away), every reader is woken once it is back: wake-ups may have been
/// lost.
async fn read_inbox(mut conn: ConnectionManager, inbox: String, waiters: Waiters) {
    let mut last = "0-0".to_owned();
    let mut failing = false;
    let options = StreamReadOptions::default()
        .block(INBOX_BLOCK.as_millis() as usize)
        .count(1024);
    loop {
        let read: Result<Option<StreamReadReply>, _> =
            conn.xread_options(&[&inbox], &[&last], &options).await;
        match read {
            Ok(reply) => {
                let waiters = waiters.lock().unwrap_or_else(PoisonError::into_inner);
                if failing {
                    failing = false;
                    waiters.values().for_each(|n| n.notify_one());
                }
                for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                    if let Some(id) = entry.get::<String>("id")
                        && let Some(notify) = waiters.get(&id)
                    {
                        notify.notify_one();
                    }
                    last = entry.id;
                }
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "queue client: lost the inbox connection; reconnecting");
                }
                failing = true;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one turn's result list.
struct ResultReader {
    client: QueueClient,
    items_key: String,
    status_key: String,
    execution_id: String,
    /// How many results were read.
    read: usize,
    /// When the turn was last seen in Redis (a result read, or its status there).
    seen: Option<std::time::Instant>,
    buffer: VecDeque<Result<StreamItem, RuntimeError>>,
    notify: Arc<Notify>,
    done: bool,
    finished: Arc<AtomicBool>,
}

impl ResultReader {
    async fn next(&mut self) -> Option<Result<StreamItem, RuntimeError>> {
        // While nothing arrives, look every 250 ms doubling to 5 s (wake-ups come sooner).
        let mut idle = Duration::from_millis(250);
        loop {
            if let Some(item) = self.buffer.pop_front() {
                if is_final(&item) {
                    self.done = true;
                    self.buffer.clear();
                    self.finished.store(true, Ordering::Release);
                }
                return Some(item);
            }
            if self.done {
                return None;
            }
            let start = self.read as isize;
            let window = self.client.inner.config.reconnect_for;
            let read: Result<Vec<String>, QueueError> =
                retry("read a turn's results", window, || {
                    let mut conn = self.client.inner.conn.clone();
                    let key = self.items_key.clone();
                    async move { conn.lrange(key, start, start + 255).await }
                })
                .await;
            match read {
                Err(error) => {
                    return Some(Err(self.end(RuntimeError::unavailable(error.to_string()))));
                }
                Ok(texts) if !texts.is_empty() => {
                    self.read += texts.len();
                    self.seen = Some(std::time::Instant::now());
                    self.buffer
                        .extend(texts.iter().map(|text| ResultEntry::decode(text)));
                    continue;
                }
                Ok(_) => {}
            }
            if tokio::time::timeout(idle, self.notify.notified())
                .await
                .is_err()
            {
                idle = (idle * 2).min(Duration::from_secs(5));
                // Nothing for a while: is the turn still there?
                let exists: Result<bool, QueueError> =
                    retry("read a turn's status", window, || {
                        let mut conn = self.client.inner.conn.clone();
                        let key = self.status_key.clone();
                        async move { conn.exists(key).await }
                    })
                    .await;
                let ttl = self.client.inner.config.result_ttl;
                match exists {
                    Ok(true) => self.seen = Some(std::time::Instant::now()),
                    // Seen less than a result TTL ago, gone now: not an expiry. Redis lost
                    // the turn's keys (restarted without its data, flushed, or evicted them).
                    Ok(false) if self.seen.is_some_and(|seen| seen.elapsed() < ttl) => {
                        return Some(Err(self.end(
                            RuntimeError::unavailable(format!(
                                "Redis lost turn `{}`: its status and results are gone although they were there {:.0?} ago and keys live {ttl:?} (Redis restarted without its data, was flushed, or evicted them: run it with persistence and `maxmemory-policy noeviction`); the turn may or may not have run, submit it again under a new execution id to run it",
                                self.execution_id,
                                self.seen.map(|seen| seen.elapsed()).unwrap_or_default()
                            ))
                            .with_metadata(serde_json::json!({
                                "error": "queue_lost_turn",
                                "execution_id": self.execution_id,
                                "results_read": self.read,
                            })),
                        )));
                    }
                    Ok(false) if self.read == 0 => {
                        return Some(Err(self.end(RuntimeError::invalid_request(format!(
                            "no turn has execution id `{}` in the queue: it was never submitted, or its results expired (result TTL {:?})",
                            self.execution_id, self.client.inner.config.result_ttl
                        )))));
                    }
                    Ok(false) => {
                        return Some(Err(self.end(
                            RuntimeError::unavailable(format!(
                                "the results of turn `{}` expired (result TTL {ttl:?}) before they were read to the end",
                                self.execution_id
                            ))
                            .with_retriable(false)
                            .with_metadata(serde_json::json!({
                                "error": "results_expired",
                                "execution_id": self.execution_id,
                                "results_read": self.read,
                            })),
                        )));
                    }
                    Err(error) => {
                        return Some(Err(self.end(RuntimeError::unavailable(error.to_string()))));
                    }
                }
            }
        }
    }

    fn end(&mut self, error: RuntimeError) -> RuntimeError {
        self.done = true;
        self.finished.store(true, Ordering::Release);
        error
    }
}

/// A queued turn's results: `Result<StreamItem, RuntimeError>` items, like a local
/// `TurnStream` (deltas, then one final output, or an error as the last item). Dropping it
/// before its last item cancels the turn.
pub struct QueueTurnStream {
    execution_id: String,
    client: QueueClient,
    inner: Pin<Box<dyn Stream<Item = Result<StreamItem, RuntimeError>> + Send>>,
    finished: Arc<AtomicBool>,
}

impl fmt::Debug for QueueTurnStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueTurnStream")
            .field("execution_id", &self.execution_id)
            .field("finished", &self.finished.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl QueueTurnStream {
    /// The turn's execution id, for [`QueueClient::cancel`] and [`QueueClient::status`].
    pub fn execution_id(&self) -> &str {
        &self.execution_id
    }

    /// Whether the stream gave its last item.
    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Stops reading and cancels the turn (as dropping the stream does, but awaitable, with
    /// the outcome). A turn that already ended is left as it is.
    ///
    /// # Errors
    ///
    /// As for [`QueueClient::cancel`].
    pub fn cancel(
        self,
    ) -> impl Future<Output = Result<CancelOutcome, QueueError>> + Send + 'static {
        // Disarm the cancel-on-drop: this cancel is the one.
        let finished = self.finished.swap(true, Ordering::AcqRel);
        let client = self.client.clone();
        let id = self.execution_id.clone();
        drop(self);
        async move {
            if finished {
                return Ok(match client.status(&id).await? {
                    Some(state) => CancelOutcome::Finished(state.status),
                    None => CancelOutcome::Unknown,
                });
            }
            client.cancel(&id).await
        }
    }
}

impl Stream for QueueTurnStream {
    type Item = Result<StreamItem, RuntimeError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl Drop for QueueTurnStream {
    fn drop(&mut self) {
        self.client.forget(&self.execution_id);
        if self.finished.load(Ordering::Acquire) {
            return;
        }
        // Dropped before its end: cancel, as dropping a local turn stream does.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            let id = self.execution_id.clone();
            runtime.spawn(async move {
                if let Err(error) = client.cancel(&id).await {
                    tracing::warn!(execution_id = %id, %error, "could not cancel a dropped queued turn");
                }
            });
        }
    }
}
