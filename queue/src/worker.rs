//! The worker: takes turn jobs from the job stream through the consumer group and runs them
//! with a local runtime registry.
//!
//! Longer than 700 lines on purpose: one job's whole life (take, start, run, publish, renew,
//! reclaim, cancel, dead-letter) reads top to bottom in one `impl`, next to the Redis steps it
//! fences; cut apart, each step would lose the invariants it shares with the others.
//!
//! One job's life in a worker: `XREADGROUP` (or `XAUTOCLAIM` of a job whose worker stopped
//! renewing it) → the start script (attempt counted, fence set, or a decision not to run:
//! already finished, cancelled, dead-lettered, lost) → the runtime's stream, published in
//! batches by the publish script (fenced, idempotent per batch) → the final item, published
//! in the same atomic step as the status, `XACK` and `XDEL` of the job.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt, stream::BoxStream};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamInfoConsumersReply,
    StreamReadOptions, StreamReadReply,
};
use runtime_api::{Capabilities, ErrorKind, RuntimeError, StreamItem, Value};
use runtime_loader::{RuntimeHandle, Runtimes};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::{LIMITS, QueueConfig, valid_execution_id};
use crate::conn::{connect, open, retry, transient};
use crate::error::QueueError;
use crate::policy::{JobPolicy, Refusal, RuntimeRules};
use crate::scripts;
use crate::wire::{Job, ResultEntry, RuntimeAdvert, WorkerAdvert, is_final, now_ms};

const BLOCK: Duration = LIMITS.worker_block;
const BATCH: usize = LIMITS.result_batch;
const INSTANCES: usize = LIMITS.worker_instances;

/// One (runtime, configuration)'s instance, once created.
type Instance = tokio::sync::OnceCell<RuntimeHandle>;
/// How often a worker renews its advert in `<prefix>:workers` ([`QueueLimits::advert_every`](crate::QueueLimits::advert_every)).
pub const ADVERT_EVERY: Duration = LIMITS.advert_every;
/// How long an advert holds without renewal ([`QueueLimits::advert_ttl`](crate::QueueLimits::advert_ttl)).
pub const ADVERT_TTL: Duration = LIMITS.advert_ttl;

/// Runs turn jobs from the queue; see the module docs.
pub struct Worker {
    runtimes: Arc<Runtimes>,
    config: QueueConfig,
    concurrency: usize,
    drain_for: Duration,
    policy: JobPolicy,
    reloads: Option<tokio::sync::mpsc::UnboundedReceiver<()>>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .field("concurrency", &self.concurrency)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// What a worker did, when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Jobs it took (read or reclaimed).
    pub taken: u64,
    /// Of them, reclaimed from other consumers.
    pub reclaimed: u64,
}

impl Worker {
    /// A worker over this registry (already discovered) for the queue `config` names. It runs
    /// 16 turns at a time unless told otherwise.
    pub fn new(runtimes: Arc<Runtimes>, config: QueueConfig) -> Self {
        Self {
            runtimes,
            config,
            concurrency: 16,
            drain_for: Duration::from_secs(30),
            policy: JobPolicy::default(),
            reloads: None,
        }
    }

    /// Discovers the plugins again each time `reloads` yields (a `SIGHUP` handler sends on
    /// it): jobs of a runtime whose file changed run on the new file from then on (at the
    /// process level in new workers; running jobs finish on the old one), and the worker's
    /// advert is renewed at once with what it now serves. See `Runtimes::rediscover`.
    pub fn with_reloads(mut self, reloads: tokio::sync::mpsc::UnboundedReceiver<()>) -> Self {
        self.reloads = Some(reloads);
        self
    }

    /// Fixes the configuration `runtime` (an id or alias) runs with: a job that carries no
    /// configuration gets this one, and a job's allowed keys
    /// ([`allow_job_config`](Self::allow_job_config)) go over it. Without it the runtime runs
    /// with its default configuration. Checked by the runtime when the worker starts.
    pub fn with_runtime_config(mut self, runtime: impl Into<String>, config: Value) -> Self {
        self.policy.fix(runtime.into(), config);
        self
    }

    /// Lets jobs set these configuration keys of `runtime` (an id or alias). `*` allows
    /// every key that names no program, URL, file, environment variable or secret
    /// ([`is_sensitive_key`](crate::is_sensitive_key)); such keys are allowed only by name.
    /// A job's configuration with any other key is refused with an `invalid_config` result
    /// naming the keys; nothing is started. By default no key is allowed.
    pub fn allow_job_config<I, S>(mut self, runtime: impl Into<String>, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.policy.allow(runtime.into(), keys);
        self
    }

    /// With another number of turns run at a time (at least 1).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// How long, once told to stop, it waits for its running turns (default 30 s); turns
    /// still running then are left to be reclaimed by other workers.
    pub fn with_drain_for(mut self, drain: Duration) -> Self {
        self.drain_for = drain;
        self
    }

    /// Runs until `shutdown` completes, then stops taking jobs and waits for its running
    /// turns (see [`with_drain_for`](Self::with_drain_for)).
    ///
    /// # Errors
    ///
    /// A URL that is not one, Redis unreachable at start or for longer than
    /// `reconnect_for` later, or a job stream this crate cannot use.
    pub async fn run(
        self,
        url: &str,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<WorkerStats, QueueError> {
        let rules = resolve_policy(&self.runtimes, self.policy)?;
        let client = open(url)?;
        let window = self.config.reconnect_for;
        let conn = connect(&client, url, Duration::ZERO, window).await?;
        let jobs_conn = connect(&client, url, BLOCK, window).await?;
        let cancels_conn = connect(&client, url, BLOCK, window).await?;
        let ids_key = self.config.ids_key();
        let number: u64 = retry("number this worker", window, || {
            let mut conn = conn.clone();
            let key = ids_key.clone();
            async move { conn.incr(key, 1).await }
        })
        .await?;
        let consumer = format!("w{number}-pid{}", std::process::id());
        let shared = Arc::new(Shared {
            config: self.config,
            runtimes: self.runtimes,
            conn,
            consumer,
            running: Mutex::default(),
            instances: Mutex::default(),
            rules,
        });
        shared.ensure_group().await?;
        // Advertised before it takes a job: "worker started" means fronts can see it.
        let advert = shared.advert(self.concurrency, now_ms());
        shared.advertise(&advert).await?;
        let advertiser = tokio::spawn(advertise_every(Arc::clone(&shared), advert.clone()));
        let reloader = self.reloads.map(|reloads| {
            tokio::spawn(reload_on(
                Arc::clone(&shared),
                reloads,
                self.concurrency,
                advert.started_ms,
            ))
        });
        tracing::info!(consumer = %shared.consumer, group = %shared.config.group, concurrency = self.concurrency, "worker started");

        let stop = CancellationToken::new();
        let watcher = {
            let stop = stop.clone();
            tokio::spawn(async move {
                shutdown.await;
                stop.cancel();
            })
        };
        let cancels = tokio::spawn(follow_cancels(Arc::clone(&shared), cancels_conn));
        let result = shared.take_jobs(jobs_conn, self.concurrency, &stop).await;
        watcher.abort();
        // It takes no more jobs: it no longer offers its runtimes.
        advertiser.abort();
        shared.withdraw().await;

        // Drain: wait for the running turns, then leave the group if nothing is pending.
        let semaphore = &result.as_ref().map(|(_, s)| Arc::clone(s)).ok();
        if let Some(semaphore) = semaphore {
            let all = u32::try_from(self.concurrency).unwrap_or(u32::MAX);
            if tokio::time::timeout(self.drain_for, semaphore.acquire_many(all))
                .await
                .is_err()
            {
                tracing::warn!(consumer = %shared.consumer, "running turns did not end within the drain time; they will be reclaimed by other workers");
            } else {
                shared.leave_group().await;
            }
        }
        cancels.abort();
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        tracing::info!(consumer = %shared.consumer, "worker stopped");
        result.map(|(stats, _)| stats)
    }
}

struct Shared {
    config: QueueConfig,
    runtimes: Arc<Runtimes>,
    conn: ConnectionManager,
    consumer: String,
    running: Mutex<HashMap<String, CancellationToken>>,
    /// Each (runtime, configuration)'s instance, created once on a blocking thread.
    instances: Mutex<HashMap<(String, String), Arc<Instance>>>,
    /// The operator's rules by runtime id.
    rules: HashMap<String, RuntimeRules>,
}

/// The operator's rules keyed by runtime id; every fixed configuration checked by its
/// runtime.
fn resolve_policy(
    runtimes: &Runtimes,
    policy: JobPolicy,
) -> Result<HashMap<String, RuntimeRules>, QueueError> {
    let mut by_id: HashMap<String, RuntimeRules> = HashMap::new();
    for (name, rules) in policy.rules {
        let Some(entry) = runtimes.get_entry(&name) else {
            return Err(QueueError::WorkerConfig {
                runtime: name,
                reason: format!(
                    "no such runtime is installed (installed: {})",
                    runtimes.list_names().join(", ")
                ),
            });
        };
        if let Some(fixed) = &rules.fixed {
            let problems = runtimes
                .validate_config(&entry.id, fixed)
                .map_err(|error| QueueError::WorkerConfig {
                    runtime: name.clone(),
                    reason: error.to_string(),
                })?;
            if !problems.is_empty() {
                return Err(QueueError::WorkerConfig {
                    runtime: name,
                    reason: problems.join("; "),
                });
            }
        }
        if by_id.insert(entry.id.clone(), rules).is_some() {
            return Err(QueueError::WorkerConfig {
                runtime: name,
                reason: format!(
                    "runtime `{}` is named twice (by its id and an alias?); name it once",
                    entry.id
                ),
            });
        }
    }
    Ok(by_id)
}

/// Who runs a job, and where it publishes.
struct JobContext {
    execution_id: String,
    entry: String,
    attempt: i64,
    inbox: Option<String>,
    status_key: String,
    items_key: String,
    published: u64,
}

impl Shared {
    async fn ensure_group(&self) -> Result<(), QueueError> {
        let (jobs, group) = (self.config.jobs_key(), self.config.group.clone());
        retry(
            "create the consumer group",
            self.config.reconnect_for,
            || {
                let mut conn = self.conn.clone();
                let (jobs, group) = (jobs.clone(), group.clone());
                async move {
                    // From the start of the stream: jobs submitted before any worker ran count.
                    match conn
                        .xgroup_create_mkstream::<_, _, _, ()>(&jobs, &group, "0")
                        .await
                    {
                        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
                        other => other,
                    }
                }
            },
        )
        .await
    }

    /// This worker's advert, valid for [`ADVERT_TTL`] from now.
    fn advert(&self, concurrency: usize, started_ms: u64) -> WorkerAdvert {
        WorkerAdvert {
            v: crate::wire::FORMAT_VERSION,
            consumer: self.consumer.clone(),
            concurrency: concurrency as u64,
            runtimes: self
                .runtimes
                .list_runtimes()
                .iter()
                .map(RuntimeAdvert::of)
                .collect(),
            started_ms,
            expires_ms: now_ms() + ADVERT_TTL.as_millis() as u64,
        }
    }

    /// Writes (or renews) the advert, removing expired adverts of other workers.
    async fn advertise(&self, advert: &WorkerAdvert) -> Result<(), QueueError> {
        let key = self.config.workers_key();
        let text = advert.encode();
        let ttl_ms = ADVERT_TTL.as_millis() as u64;
        retry("advertise the worker", self.config.reconnect_for, || {
            let mut conn = self.conn.clone();
            let mut invocation = scripts::ADVERTISE.prepare_invoke();
            invocation
                .key(&key)
                .arg(&self.consumer)
                .arg(&text)
                .arg(now_ms())
                .arg(ttl_ms);
            async move { invocation.invoke_async::<i64>(&mut conn).await }
        })
        .await
        .map(drop)
    }

    /// Removes the advert (the worker stops taking jobs).
    async fn withdraw(&self) {
        let mut conn = self.conn.clone();
        let removed: Result<i64, _> = conn.hdel(self.config.workers_key(), &self.consumer).await;
        if let Err(error) = removed {
            tracing::debug!(%error, "could not withdraw the worker's advert; it expires on its own");
        }
    }

    async fn leave_group(&self) {
        let mut conn = self.conn.clone();
        let removed: Result<i64, _> = conn
            .xgroup_delconsumer(self.config.jobs_key(), &self.config.group, &self.consumer)
            .await;
        if let Err(error) = removed {
            tracing::debug!(%error, "could not leave the consumer group");
        }
    }

    /// The loop that takes jobs while slots are free.
    async fn take_jobs(
        self: &Arc<Self>,
        mut jobs_conn: ConnectionManager,
        concurrency: usize,
        stop: &CancellationToken,
    ) -> Result<(WorkerStats, Arc<Semaphore>), QueueError> {
        let semaphore = Arc::new(Semaphore::new(concurrency));
        let mut stats = WorkerStats::default();
        let reclaim_every = self.config.visibility_timeout / 2;
        let mut last_reclaim: Option<Instant> = None;
        let mut last_sweep = Instant::now();
        let mut failing_since: Option<Instant> = None;
        let options = |count: usize| {
            StreamReadOptions::default()
                .group(&self.config.group, &self.consumer)
                .block(BLOCK.as_millis() as usize)
                .count(count)
        };
        let jobs_key = self.config.jobs_key();
        while !stop.is_cancelled() {
            let first = tokio::select! {
                permit = Arc::clone(&semaphore).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                () = stop.cancelled() => break,
            };
            let mut permits = vec![first];
            while permits.len() < 256 {
                match Arc::clone(&semaphore).try_acquire_owned() {
                    Ok(permit) => permits.push(permit),
                    Err(_) => break,
                }
            }
            if last_reclaim.is_none_or(|at| at.elapsed() >= reclaim_every) {
                last_reclaim = Some(Instant::now());
                for entry in self.reclaim(permits.len()).await {
                    stats.taken += 1;
                    stats.reclaimed += 1;
                    if let Some(permit) = permits.pop() {
                        let shared = Arc::clone(self);
                        tokio::spawn(async move {
                            shared.process(entry).await;
                            drop(permit);
                        });
                    }
                }
                if last_sweep.elapsed() >= self.config.visibility_timeout * 10 {
                    last_sweep = Instant::now();
                    self.sweep_consumers().await;
                }
            }
            if permits.is_empty() {
                continue;
            }
            let read: Result<Option<StreamReadReply>, _> = jobs_conn
                .xread_options(&[&jobs_key], &[">"], &options(permits.len()))
                .await;
            match read {
                Ok(reply) => {
                    failing_since = None;
                    for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                        stats.taken += 1;
                        let Some(permit) = permits.pop() else { break };
                        let shared = Arc::clone(self);
                        tokio::spawn(async move {
                            shared.process(entry).await;
                            drop(permit);
                        });
                    }
                }
                Err(error) if error.code() == Some("NOGROUP") => {
                    tracing::warn!(
                        "the consumer group is gone (Redis restarted without its data?); creating it again"
                    );
                    self.ensure_group().await?;
                }
                Err(error) if transient(&error) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > self.config.reconnect_for {
                        return Err(QueueError::Unreachable {
                            operation: "read jobs",
                            waited: since.elapsed(),
                            source: error,
                        });
                    }
                    tracing::debug!(%error, "reading jobs failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(source) => {
                    return Err(QueueError::Redis {
                        operation: "read jobs",
                        source,
                    });
                }
            }
        }
        Ok((stats, semaphore))
    }

    /// Takes jobs whose consumer has not renewed them within the visibility timeout.
    async fn reclaim(&self, count: usize) -> Vec<StreamId> {
        let mut conn = self.conn.clone();
        let claimed: Result<StreamAutoClaimReply, _> = conn
            .xautoclaim_options(
                self.config.jobs_key(),
                &self.config.group,
                &self.consumer,
                self.config.visibility_ms() as usize,
                "0-0",
                StreamAutoClaimOptions::default().count(count),
            )
            .await;
        match claimed {
            Ok(reply) => {
                if !reply.deleted_ids.is_empty() {
                    // Redis 7 drops these from the pending list itself.
                    tracing::debug!(
                        count = reply.deleted_ids.len(),
                        "pending jobs were deleted from the stream"
                    );
                }
                if !reply.claimed.is_empty() {
                    tracing::info!(count = reply.claimed.len(), consumer = %self.consumer, "reclaimed jobs of a consumer that stopped renewing them");
                }
                reply.claimed
            }
            Err(error) => {
                tracing::debug!(%error, "reclaiming jobs failed; trying again later");
                Vec::new()
            }
        }
    }

    /// Removes consumers that hold nothing and have been idle for ten visibility timeouts
    /// (workers that died), so the group's consumer list does not grow without bound.
    async fn sweep_consumers(&self) {
        let mut conn = self.conn.clone();
        let consumers: Result<StreamInfoConsumersReply, _> = conn
            .xinfo_consumers(self.config.jobs_key(), &self.config.group)
            .await;
        let idle_limit = (self.config.visibility_ms() * 10) as usize;
        for consumer in consumers.map(|r| r.consumers).unwrap_or_default() {
            if consumer.pending == 0 && consumer.idle > idle_limit && consumer.name != self.consumer
            {
                let _: Result<i64, _> = conn
                    .xgroup_delconsumer(self.config.jobs_key(), &self.config.group, &consumer.name)
                    .await;
            }
        }
    }

    /// One job, from its stream entry to its acknowledgement.
    async fn process(self: Arc<Self>, entry: StreamId) {
        let text = entry.get::<String>("job");
        let job = match text.as_deref().map(Job::decode) {
            Some(Ok(job)) => Ok(job),
            Some(Err(reason)) => Err(reason),
            None => Err("the entry has no `job` field".to_owned()),
        };
        let execution_id = match &job {
            Ok(job) => Some(job.request.execution_id.clone()),
            Err(_) => text
                .as_deref()
                .and_then(|t| serde_json::from_str::<Value>(t).ok())
                .and_then(|v| v["request"]["execution_id"].as_str().map(str::to_owned)),
        }
        .filter(|id| valid_execution_id(id));
        let Some(execution_id) = execution_id else {
            let reason = match &job {
                Ok(_) => "the job's execution id cannot be a key".to_owned(),
                Err(reason) => reason.clone(),
            };
            self.dead_letter_unreadable(&entry.id, text.as_deref().unwrap_or(""), &reason)
                .await;
            return;
        };
        let (runtime, inbox) = match &job {
            Ok(job) => (
                job.runtime.clone(),
                job.notify
                    .clone()
                    .filter(|key| self.config.is_inbox_key(key)),
            ),
            Err(_) => ("?".to_owned(), None),
        };
        let status_key = self.config.status_key(&execution_id);
        let items_key = self.config.items_key(&execution_id);
        let started: Result<(String, i64, String), QueueError> =
            retry("start a job", self.config.reconnect_for, || {
                let mut conn = self.conn.clone();
                let mut invocation = scripts::START.prepare_invoke();
                invocation
                    .key(&status_key)
                    .key(&items_key)
                    .arg(&self.consumer)
                    .arg(self.config.max_attempts)
                    .arg(self.config.ttl_secs())
                    .arg(now_ms())
                    .arg(&runtime)
                    .arg(&entry.id);
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await;
        let (decision, attempt, previous) = match started {
            Ok(started) => started,
            Err(error) => {
                // Left pending: reclaimed after the visibility timeout.
                tracing::warn!(%error, execution_id, "could not start a job");
                return;
            }
        };
        let mut context = JobContext {
            execution_id,
            entry: entry.id.clone(),
            attempt,
            inbox,
            status_key,
            items_key,
            published: 0,
        };
        let lost_error = |what: String| {
            RuntimeError::new(ErrorKind::WorkerLost, what)
                .with_metadata(json!({"attempts": attempt, "last_worker": previous}))
        };
        match decision.as_str() {
            "skip" => {
                tracing::debug!(execution_id = %context.execution_id, status = %previous, "job already finished; acknowledged");
                self.acknowledge(&entry.id).await;
            }
            "cancelled" => {
                let error = RuntimeError::cancelled("cancelled before it started");
                self.finish(&mut context, Err(error), None).await;
            }
            "dead" => {
                let reason = format!(
                    "dead-lettered: taken {} times without finishing (max_attempts = {}); the last worker to take it before this one was `{previous}`. The job may kill the workers that run it",
                    attempt - 1,
                    self.config.max_attempts
                );
                tracing::error!(execution_id = %context.execution_id, %reason, "poison job");
                let letter = json!({
                    "execution_id": context.execution_id,
                    "runtime": runtime,
                    "reason": reason,
                    "attempts": attempt - 1,
                    "last_worker": previous,
                    "entry": entry.id,
                    "job": letter_payload(text.as_deref().unwrap_or_default()),
                    "dead_ms": now_ms(),
                })
                .to_string();
                self.finish(&mut context, Err(lost_error(reason)), Some(letter))
                    .await;
                self.trim_dead_letters().await;
            }
            "lost" => {
                let error = lost_error(format!(
                    "worker `{previous}` stopped while running this turn after publishing part of its result; not retried, since the submitter already has part of it"
                ));
                self.finish(&mut context, Err(error), None).await;
            }
            "run" => match job {
                Err(reason) => {
                    let error =
                        RuntimeError::invalid_request(format!("the job cannot be read: {reason}"));
                    self.finish(&mut context, Err(error), None).await;
                }
                Ok(job) => self.run(&mut context, job).await,
            },
            other => {
                tracing::error!(decision = other, "unexpected answer of the start script");
            }
        }
    }

    /// The handle for a runtime and configuration. A first use loads the plugin and runs its
    /// factory on a blocking thread, so other jobs go on meanwhile; concurrent first uses of
    /// one instance wait for the same creation.
    async fn handle(&self, runtime: &str, config: &Value) -> Result<RuntimeHandle, RuntimeError> {
        let key = (runtime.to_owned(), config.to_string());
        let cell = {
            let mut instances = self
                .instances
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if instances.len() >= INSTANCES && !instances.contains_key(&key) {
                instances.clear();
            }
            Arc::clone(instances.entry(key).or_default())
        };
        let created = cell
            .get_or_try_init(|| async {
                if config.is_null() {
                    self.runtimes.resolve_async(runtime).await
                } else {
                    self.runtimes.new_instance_async(runtime, config).await
                }
            })
            .await;
        created.cloned().map_err(|error| {
            // Marked, so a submitter can tell "no such runtime" (a usage error) from a failure.
            let unknown = matches!(error, runtime_loader::ResolveError::NotFound { .. });
            RuntimeError::invalid_request(format!("worker `{}`: {error}", self.consumer))
                .with_metadata(json!({
                    "worker": self.consumer,
                    "runtime": runtime,
                    "unknown_runtime": unknown,
                }))
        })
    }

    /// The configuration a job runs with under the operator's rules, or the `invalid_config`
    /// error naming what was refused.
    fn job_config(&self, runtime: &str, config: &Value) -> Result<Value, RuntimeError> {
        let Some(entry) = self.runtimes.get_entry(runtime) else {
            // Unknown: `handle` says which runtimes this worker has.
            return Ok(Value::Null);
        };
        let default = RuntimeRules::default();
        let rules = self.rules.get(&entry.id).unwrap_or(&default);
        rules.effective(config).map_err(|refusal| {
            let (message, keys) = match refusal {
                Refusal::NotAnObject => (
                    format!(
                        "worker `{}` refused the job's configuration for runtime `{}`: it is not a JSON object",
                        self.consumer, entry.id
                    ),
                    Vec::new(),
                ),
                Refusal::Keys(keys) => (
                    format!(
                        "worker `{}` refused the job's configuration for runtime `{}`: {} not allowed from a job (the worker's operator fixes the configuration with `--config {}=JSON` and allows keys with `--allow-job-config {}=KEY,...`)",
                        self.consumer,
                        entry.id,
                        keys.iter()
                            .map(|k| format!("`{}`", k.escape_debug()))
                            .collect::<Vec<_>>()
                            .join(", ")
                            + if keys.len() == 1 { " is" } else { " are" },
                        entry.id,
                        entry.id
                    ),
                    keys,
                ),
            };
            RuntimeError::new(ErrorKind::InvalidConfig, message).with_metadata(json!({
                "worker": self.consumer,
                "runtime": entry.id,
                "refused_keys": keys,
            }))
        })
    }

    async fn run(&self, context: &mut JobContext, job: Job) {
        let config = match self.job_config(&job.runtime, &job.config) {
            Ok(config) => config,
            Err(error) => {
                tracing::warn!(execution_id = %context.execution_id, runtime = %job.runtime, %error, "job configuration refused");
                self.finish(context, Err(error), None).await;
                return;
            }
        };
        let handle = match self.handle(&job.runtime, &config).await {
            Ok(handle) => handle,
            Err(error) => {
                tracing::warn!(execution_id = %context.execution_id, runtime = %job.runtime, "job for a runtime this worker cannot run");
                self.finish(context, Err(error), None).await;
                return;
            }
        };
        let id = context.execution_id.clone();
        let token = CancellationToken::new();
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), token.clone());
        let stream: BoxStream<'static, Result<StreamItem, RuntimeError>> =
            if handle.capabilities().contains(Capabilities::STREAMING) {
                handle.stream_turn(job.request).boxed()
            } else {
                let turn = handle.run_turn(job.request);
                futures::stream::once(turn.map(|r| r.map(StreamItem::Done))).boxed()
            };
        let mut chunks = stream.ready_chunks(BATCH);
        // First renewal one period from now (an interval's immediate first tick still waits
        // for the timer wheel, about a millisecond per turn).
        let period = self.config.visibility_timeout / 3;
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let mut cancel_sent = false;
        loop {
            tokio::select! {
                chunk = chunks.next() => {
                    let Some(chunk) = chunk else {
                        let error = RuntimeError::internal("the turn's stream ended without a final result");
                        self.finish(context, Err(error), None).await;
                        break;
                    };
                    let mut batch = Vec::with_capacity(chunk.len());
                    let mut last = None;
                    for item in chunk {
                        if is_final(&item) {
                            last = Some(item);
                            break;
                        }
                        batch.push(ResultEntry::encode(&item));
                    }
                    if !batch.is_empty() && !self.publish(context, &batch, None, None).await {
                        break;
                    }
                    if let Some(last) = last {
                        self.finish(context, last, None).await;
                        break;
                    }
                }
                () = token.cancelled(), if !cancel_sent => {
                    cancel_sent = true;
                    if let Err(error) = handle.cancel(&id) {
                        tracing::warn!(%error, execution_id = %id, "the runtime's cancel failed");
                    }
                }
                _ = heartbeat.tick() => {
                    match self.heartbeat(context).await {
                        Some(0) => {
                            tracing::warn!(execution_id = %id, "this worker no longer owns the job (reclaimed after the visibility timeout); dropping the turn");
                            break;
                        }
                        Some(2) => token.cancel(),
                        _ => {}
                    }
                }
            }
        }
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    async fn heartbeat(&self, context: &JobContext) -> Option<i64> {
        let jobs_key = self.config.jobs_key();
        let renewed: Result<i64, _> =
            retry("renew a job", self.config.visibility_timeout / 3, || {
                let mut conn = self.conn.clone();
                let mut invocation = scripts::HEARTBEAT.prepare_invoke();
                invocation
                    .key(&context.status_key)
                    .key(&jobs_key)
                    .arg(&self.consumer)
                    .arg(context.attempt)
                    .arg(&self.config.group)
                    .arg(&context.entry);
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await;
        renewed.ok()
    }

    /// Publishes the final item with the turn's status, and acknowledges the job.
    async fn finish(
        &self,
        context: &mut JobContext,
        last: Result<StreamItem, RuntimeError>,
        dead_letter: Option<String>,
    ) {
        let status = match &last {
            Ok(_) => ("complete", String::new()),
            Err(error) if error.kind == ErrorKind::Cancelled => ("cancelled", error.to_string()),
            Err(error) => ("error", error.to_string()),
        };
        let items = [ResultEntry::encode(&last)];
        self.publish(context, &items, Some(status), dead_letter)
            .await;
    }

    /// Publishes items of the current attempt; `false` when the worker no longer owns the
    /// job or Redis stayed away.
    async fn publish(
        &self,
        context: &mut JobContext,
        items: &[String],
        status: Option<(&str, String)>,
        dead_letter: Option<String>,
    ) -> bool {
        let keys = [
            context.status_key.clone(),
            context.items_key.clone(),
            self.config.jobs_key(),
            context
                .inbox
                .clone()
                .unwrap_or_else(|| format!("{}:no-inbox", self.config.prefix)),
            self.config.dead_key(),
        ];
        let (final_status, error_text) = status.unwrap_or(("", String::new()));
        let published: Result<i64, _> = retry("publish results", self.config.reconnect_for, || {
            let mut conn = self.conn.clone();
            let mut invocation = scripts::PUBLISH.prepare_invoke();
            for key in &keys {
                invocation.key(key);
            }
            invocation
                .arg(&self.consumer)
                .arg(context.attempt)
                .arg(self.config.ttl_secs())
                .arg(now_ms())
                .arg(&self.config.group)
                .arg(&context.entry)
                .arg(context.published)
                .arg(final_status)
                .arg(&error_text)
                .arg(u8::from(context.inbox.is_some()))
                .arg(&context.execution_id)
                .arg(dead_letter.as_deref().unwrap_or(""));
            for item in items {
                invocation.arg(item);
            }
            async move { invocation.invoke_async(&mut conn).await }
        })
        .await;
        match published {
            Ok(1) => {
                context.published += items.len() as u64;
                true
            }
            Ok(_) => {
                tracing::warn!(execution_id = %context.execution_id, "not published: another worker owns this job now");
                false
            }
            Err(error) => {
                tracing::error!(%error, execution_id = %context.execution_id, "could not publish results; the job will be reclaimed");
                false
            }
        }
    }

    /// Acknowledges and deletes a job that needs nothing more.
    async fn acknowledge(&self, entry: &str) {
        let jobs = self.config.jobs_key();
        let done: Result<(), _> = retry("acknowledge a job", self.config.reconnect_for, || {
            let mut conn = self.conn.clone();
            let mut pipe = redis::pipe();
            pipe.atomic()
                .xack(&jobs, &self.config.group, &[entry])
                .ignore()
                .xdel(&jobs, &[entry])
                .ignore();
            async move { pipe.query_async(&mut conn).await }
        })
        .await;
        if let Err(error) = done {
            tracing::warn!(%error, entry, "could not acknowledge a job");
        }
    }

    /// A job without a usable execution id: no one can be told, so it goes to the dead
    /// letters with the reason.
    async fn dead_letter_unreadable(&self, entry: &str, text: &str, reason: &str) {
        tracing::error!(entry, reason, "unreadable job dead-lettered");
        let (jobs, dead) = (self.config.jobs_key(), self.config.dead_key());
        let letter = json!({"entry": entry, "reason": reason, "job": letter_payload(text), "dead_ms": now_ms()})
            .to_string();
        let done: Result<(), _> = retry("dead-letter a job", self.config.reconnect_for, || {
            let mut conn = self.conn.clone();
            let mut cmd_dead = redis::cmd("XADD");
            cmd_dead
                .arg(&dead)
                .arg("MAXLEN")
                .arg("~")
                .arg(LIMITS.dead_letters)
                .arg("*")
                .arg("id")
                .arg("")
                .arg("letter")
                .arg(&letter);
            let mut pipe = redis::pipe();
            pipe.atomic()
                .add_command(cmd_dead)
                .ignore()
                .xack(&jobs, &self.config.group, &[entry])
                .ignore()
                .xdel(&jobs, &[entry])
                .ignore();
            async move { pipe.query_async(&mut conn).await }
        })
        .await;
        if let Err(error) = done {
            tracing::warn!(%error, entry, "could not dead-letter a job");
        }
        self.trim_dead_letters().await;
    }

    /// Drops dead letters older than [`QueueLimits::dead_letter_ttl`](crate::QueueLimits)
    /// (best effort: the next dead letter tries again).
    async fn trim_dead_letters(&self) {
        let oldest = now_ms().saturating_sub(LIMITS.dead_letter_ttl.as_millis() as u64);
        let mut conn = self.conn.clone();
        let trimmed: Result<i64, _> = redis::cmd("XTRIM")
            .arg(self.config.dead_key())
            .arg("MINID")
            .arg("~")
            .arg(format!("{oldest}-0"))
            .query_async(&mut conn)
            .await;
        if let Err(error) = trimmed {
            tracing::debug!(%error, "could not trim old dead letters");
        }
    }
}

/// A job as its dead letter keeps it: its first
/// [`QueueLimits::dead_letter_job_bytes`](crate::QueueLimits) (cut at a character boundary),
/// its whole size and its SHA-256, so a letter is bounded whatever the job's size.
fn letter_payload(text: &str) -> serde_json::Value {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text.as_bytes());
    let sha256: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut cut = text.len().min(LIMITS.dead_letter_job_bytes);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    json!({
        "text": &text[..cut],
        "truncated": cut < text.len(),
        "bytes": text.len(),
        "sha256": sha256,
    })
}

/// Renews the worker's advert every [`ADVERT_EVERY`] (the registry is read again, so the
/// list follows the worker's runtimes).
async fn advertise_every(shared: Arc<Shared>, mut advert: WorkerAdvert) {
    let mut ticks =
        tokio::time::interval_at(tokio::time::Instant::now() + ADVERT_EVERY, ADVERT_EVERY);
    loop {
        ticks.tick().await;
        advert = shared.advert(advert.concurrency as usize, advert.started_ms);
        if let Err(error) = shared.advertise(&advert).await {
            tracing::warn!(%error, "could not renew the worker's advert; fronts may stop offering its runtimes until Redis is back");
        }
    }
}

/// Discovers the plugins again at each message on `reloads`; instances of the runtimes that
/// changed are forgotten (the next job creates them from the new file) and the advert is
/// renewed at once.
async fn reload_on(
    shared: Arc<Shared>,
    mut reloads: tokio::sync::mpsc::UnboundedReceiver<()>,
    concurrency: usize,
    started_ms: u64,
) {
    while reloads.recv().await.is_some() {
        let runtimes = Arc::clone(&shared.runtimes);
        let Ok(outcome) = tokio::task::spawn_blocking(move || runtimes.rediscover()).await else {
            continue;
        };
        let changed: Vec<&String> = outcome.upgraded.iter().chain(&outcome.removed).collect();
        shared
            .instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            // Kept only while its name still resolves to a runtime that did not change (an
            // alias of a removed runtime resolves to nothing).
            .retain(|(runtime, _), _| {
                shared
                    .runtimes
                    .get_entry(runtime)
                    .is_some_and(|entry| !changed.contains(&&entry.id))
            });
        let restart: Vec<&String> = outcome.restart_needed.iter().map(|r| &r.id).collect();
        tracing::info!(
            consumer = %shared.consumer,
            upgraded = ?outcome.upgraded,
            added = ?outcome.added,
            removed = ?outcome.removed,
            restart_needed = ?restart,
            "reloaded"
        );
        let advert = shared.advert(concurrency, started_ms);
        if let Err(error) = shared.advertise(&advert).await {
            tracing::warn!(%error, "could not renew the worker's advert after a reload");
        }
    }
}

/// Follows the stream of cancel requests and cancels the turns this worker runs.
async fn follow_cancels(shared: Arc<Shared>, mut conn: ConnectionManager) {
    let key = shared.config.cancels_key();
    let mut last = "0-0".to_owned();
    let options = StreamReadOptions::default()
        .block(BLOCK.as_millis() as usize)
        .count(256);
    loop {
        let read: Result<Option<StreamReadReply>, _> =
            conn.xread_options(&[&key], &[&last], &options).await;
        match read {
            Ok(reply) => {
                for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                    if let Some(id) = entry.get::<String>("id") {
                        let running = shared
                            .running
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner);
                        if let Some(token) = running.get(&id) {
                            tracing::info!(execution_id = %id, "cancel requested");
                            token.cancel();
                        }
                    }
                    last = entry.id;
                }
            }
            Err(error) => {
                tracing::debug!(%error, "reading cancel requests failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
