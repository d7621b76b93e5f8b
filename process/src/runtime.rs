//! A runtime instance at the process level ([`ProcessRuntime`]): turns multiplexed by number
//! over its worker, started when needed, restarted after a backoff when it crashed.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use runtime_api::{
    ErrorKind, RuntimeError, RuntimeInfo, StreamItem, TurnOutput, TurnRequest, Value,
};
use tokio::sync::{mpsc, oneshot};

use crate::connection::{Link, LinkEvents, WorkerShared, call_on, ping, start_with};
use crate::io::lock;
use crate::options::Spec;
use crate::protocol::{Call, HostMessage, Reply, STREAM_WINDOW, config_text, credit_cost};
use crate::supervision::CrashLedger;
use crate::turn::{Batch, ProcessStream, ProcessTurn, TurnOwner};

/// Where a turn's results go.
pub(crate) enum Sink {
    Run(oneshot::Sender<Result<TurnOutput, RuntimeError>>),
    Stream(mpsc::UnboundedSender<Batch>),
}

impl Sink {
    pub(crate) fn fail(self, error: RuntimeError) {
        match self {
            Sink::Run(sender) => {
                let _ = sender.send(Err(error));
            }
            Sink::Stream(sender) => {
                let _ = sender.send(Batch::Error(error));
            }
        }
    }
}

/// A turn in flight.
pub(crate) struct Entry {
    pub(crate) execution_id: String,
    pub(crate) sink: Sink,
    /// The worker it was sent to; `None` until it is.
    pub(crate) generation: Option<u64>,
    /// Stream items the worker may still send.
    pub(crate) credit: u64,
}

#[derive(Default)]
pub(crate) struct Slot {
    /// The worker, while it takes turns.
    pub(crate) link: Option<Link>,
    /// Workers that take no new turns but finish the ones they have (one holds a turn its
    /// plugin did not let go of after a cancel or a timeout, yet answers its pings); each is
    /// stopped when its last turn ends.
    pub(crate) retiring: Vec<Link>,
    pub(crate) next_generation: u64,
    pub(crate) last_crash: Option<(Instant, RuntimeError)>,
}

pub(crate) struct Inner {
    /// Itself, for the tasks it spawns.
    pub(crate) me: Weak<Inner>,
    pub(crate) spec: Spec,
    pub(crate) ledger: Arc<CrashLedger>,
    pub(crate) next_turn: AtomicU64,
    pub(crate) next_call: AtomicU64,
    pub(crate) slot: Mutex<Slot>,
    pub(crate) table: Mutex<HashMap<u64, Entry>>,
    /// One start at a time.
    pub(crate) starting: tokio::sync::Mutex<()>,
    pub(crate) info: Mutex<Option<RuntimeInfo>>,
    /// Crashes since a turn last succeeded: the restart backoff doubles with each.
    pub(crate) consecutive_crashes: std::sync::atomic::AtomicU32,
}

impl Drop for Inner {
    /// The runtime is let go of: its worker and every process its plugin started end now,
    /// not when the worker notices its closed stdin (a host exiting right after would kill
    /// the worker first, through `PR_SET_PDEATHSIG`, and orphan what its plugin started).
    fn drop(&mut self) {
        let (link, retiring) = {
            let mut slot = crate::io::lock(&self.slot);
            (slot.link.take(), std::mem::take(&mut slot.retiring))
        };
        for link in link.into_iter().chain(retiring) {
            link.worker.kill("the runtime was let go of".to_owned());
        }
    }
}

/// A runtime instance served by a pool of worker processes ([`ProcessOptions::pool_size`]),
/// each restarted after a crash. Turns go to the least busy worker, so a turn that holds its
/// worker (a plugin that spins) delays and risks only the turns on that worker.
///
/// [`ProcessOptions::pool_size`]: crate::ProcessOptions::pool_size
pub struct ProcessRuntime {
    /// At least one; the first is started when the runtime is created, the others on the
    /// first turn sent to them.
    pub(crate) pool: Vec<Arc<Inner>>,
    /// Where the search for the least busy worker starts, so ties rotate.
    pub(crate) next: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for ProcessRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessRuntime")
            .field("runtime", &self.first().spec.runtime_id)
            .field("library", &self.first().spec.library)
            .field("workers", &self.pool.len())
            .finish_non_exhaustive()
    }
}

/// The most workers one runtime instance gets.
const MAX_POOL: usize = 64;

/// Runs `future` on the process level's runtime and waits for it on this thread (never
/// called from that runtime's own thread).
pub(crate) fn block_on<T: Send + 'static>(
    future: impl Future<Output = Result<T, RuntimeError>> + Send + 'static,
    limit: Duration,
) -> Result<T, RuntimeError> {
    let io = crate::io::io_runtime().map_err(RuntimeError::unavailable)?;
    let (done, wait) = std::sync::mpsc::sync_channel(1);
    // Not aborted when the wait gives up: the future may be starting a worker, whose failure
    // path (ending its process group and descendants, reading its stderr) must run; every
    // step of it has a deadline of its own, so it ends shortly after on its own.
    io.spawn(async move {
        let _ = done.send(future.await);
    });
    wait.recv_timeout(limit).unwrap_or_else(|_| {
        Err(RuntimeError::timeout(format!(
            "the worker did not answer within {limit:?}"
        )))
    })
}

impl ProcessRuntime {
    /// Starts a worker for `spec` and creates its runtime there; blocks until it is ready.
    pub fn create(spec: Spec, ledger: Arc<CrashLedger>) -> Result<Self, RuntimeError> {
        let limit = spec.options.start_timeout + spec.options.grace;
        let size = spec.options.pool_size.clamp(1, MAX_POOL);
        let pool: Vec<Arc<Inner>> = (0..size)
            .map(|_| {
                Arc::new_cyclic(|me| Inner {
                    me: me.clone(),
                    spec: spec.clone(),
                    ledger: Arc::clone(&ledger),
                    next_turn: AtomicU64::new(1),
                    next_call: AtomicU64::new(1),
                    slot: Mutex::default(),
                    table: Mutex::default(),
                    starting: tokio::sync::Mutex::new(()),
                    info: Mutex::new(None),
                    consecutive_crashes: std::sync::atomic::AtomicU32::new(0),
                })
            })
            .collect();
        // The first worker now: a library or configuration it refuses is this call's error.
        let starting = Arc::clone(&pool[0]);
        block_on(
            async move { starting.ensure_worker().await.map(|_| ()) },
            limit,
        )?;
        Ok(Self {
            pool,
            next: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// The first worker's runtime (started at creation).
    fn first(&self) -> &Arc<Inner> {
        &self.pool[0]
    }

    /// The worker with the fewest turns in flight (ties rotate).
    fn pick(&self) -> &Arc<Inner> {
        let size = self.pool.len();
        if size == 1 {
            return &self.pool[0];
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % size;
        let mut best = start;
        let mut least = usize::MAX;
        for offset in 0..size {
            let at = (start + offset) % size;
            let load = lock(&self.pool[at].table).len();
            if load < least {
                least = load;
                best = at;
            }
            if load == 0 {
                break;
            }
        }
        &self.pool[best]
    }

    /// Checks a configuration in a worker of its own.
    pub fn validate_once(spec: Spec, config: &Value) -> Result<Vec<String>, RuntimeError> {
        let limit = spec.options.start_timeout + spec.options.call_timeout + spec.options.grace;
        let config = config_text(config);
        block_on(
            async move {
                let runtime_id = spec.runtime_id.clone();
                let (link, _) = start_with(&spec, false, Weak::<Inner>::new(), 0).await?;
                let call = call_on(
                    &link,
                    |call| HostMessage::Validate {
                        call,
                        runtime: runtime_id,
                        config,
                    },
                    1,
                );
                // A worker that does not answer is stopped here, not left behind with the
                // caller gone (the one-off worker otherwise lives as long as this future).
                let reply = match tokio::time::timeout(spec.options.call_timeout, call).await {
                    Ok(reply) => reply,
                    Err(_) => {
                        let reason = format!(
                            "the host stopped it: it did not validate a configuration within {:?}",
                            spec.options.call_timeout
                        );
                        link.worker.stop(reason.clone());
                        Err(RuntimeError::timeout(reason))
                    }
                };
                match reply? {
                    Reply::Problems(problems) => Ok(problems),
                    _ => Err(RuntimeError::internal("the worker answered another call")),
                }
            },
            limit,
        )
    }

    /// What the runtime said about itself when its worker created it.
    pub fn info(&self) -> Result<RuntimeInfo, RuntimeError> {
        lock(&self.first().info)
            .clone()
            .ok_or_else(|| RuntimeError::internal("the runtime was never created"))
    }

    pub fn supports(&self, model: &str) -> Result<bool, RuntimeError> {
        let inner = Arc::clone(self.pick());
        let model = model.to_owned();
        let options = &inner.spec.options;
        let limit = options.start_timeout + options.call_timeout + options.grace;
        match block_on(
            async move { inner.call(Call::Supports { model }).await },
            limit,
        )? {
            Reply::Supports(yes) => Ok(yes),
            _ => Err(RuntimeError::internal("the worker answered another call")),
        }
    }

    /// Pings the worker (killing it when it does not answer within the grace period), then
    /// asks the runtime.
    pub fn health(&self) -> impl Future<Output = Result<String, RuntimeError>> + use<> {
        let inner = Arc::clone(self.pick());
        on_io(async move {
            let link = inner.ensure_worker().await?;
            ping(&link, inner.spec.options.grace).await?;
            match inner.call(Call::Health).await? {
                Reply::Health(text) => Ok(text),
                _ => Err(RuntimeError::internal("the worker answered another call")),
            }
        })
    }

    pub fn extension(
        &self,
        name: &str,
        payload: &Value,
    ) -> impl Future<Output = Result<Value, RuntimeError>> + use<> {
        let inner = Arc::clone(self.pick());
        let what = Call::Extension {
            name: name.to_owned(),
            payload: payload.to_string(),
        };
        on_io(async move {
            match inner.call(what).await? {
                Reply::Extension(text) => serde_json::from_str(&text)
                    .map_err(|e| RuntimeError::internal(format!("a malformed answer: {e}"))),
                _ => Err(RuntimeError::internal("the worker answered another call")),
            }
        })
    }

    /// Ends the turns with this execution id at once, and tells their workers.
    pub fn cancel(&self, execution_id: &str) -> bool {
        let mut found = false;
        for inner in &self.pool {
            let turns: Vec<u64> = lock(&inner.table)
                .iter()
                .filter(|(_, entry)| entry.execution_id == execution_id)
                .map(|(turn, _)| *turn)
                .collect();
            for turn in &turns {
                inner.abandon(
                    *turn,
                    Some(RuntimeError::cancelled(
                        "the turn was cancelled by its execution id",
                    )),
                );
            }
            found |= !turns.is_empty();
        }
        found
    }

    pub fn run_turn(&self, request: TurnRequest) -> ProcessTurn {
        let (sender, receiver) = oneshot::channel();
        let inner = self.pick();
        let turn = inner.begin(request, Sink::Run(sender), false);
        ProcessTurn {
            inner: Arc::clone(inner) as Arc<dyn TurnOwner>,
            turn,
            receiver,
            finished: false,
        }
    }

    pub fn stream_turn(&self, request: TurnRequest) -> ProcessStream {
        let (sender, receiver) = mpsc::unbounded_channel();
        let inner = self.pick();
        let turn = inner.begin(request, Sink::Stream(sender), true);
        ProcessStream {
            inner: Arc::clone(inner) as Arc<dyn TurnOwner>,
            turn,
            receiver,
            ready: VecDeque::new(),
            consumed: 0,
            finished: false,
        }
    }
}

/// Runs a future on the process level's runtime, from any executor.
pub(crate) fn on_io<T: Send + 'static>(
    future: impl Future<Output = Result<T, RuntimeError>> + Send + 'static,
) -> impl Future<Output = Result<T, RuntimeError>> {
    let spawned = crate::io::io_runtime().map(|io| io.spawn(future));
    async move {
        match spawned {
            Err(error) => Err(RuntimeError::unavailable(error)),
            Ok(task) => task.await.unwrap_or_else(|e| {
                Err(RuntimeError::internal(format!("a worker call failed: {e}")))
            }),
        }
    }
}

/// The most retiring workers one pool member keeps; past that the oldest is stopped (its
/// turns end `unavailable`, retriable), so plugins that never let go cannot pile up processes.
const MAX_RETIRING: usize = 4;

impl Slot {
    /// The link to the worker of `generation`, taking turns or retiring.
    pub(crate) fn link_for(&self, generation: u64) -> Option<Link> {
        self.link
            .iter()
            .chain(&self.retiring)
            .find(|l| l.worker.generation == generation)
            .cloned()
    }

    /// The worker, if it still takes turns.
    pub(crate) fn usable(&self) -> Option<Link> {
        self.link
            .clone()
            .filter(|l| l.worker.usable.load(Ordering::Acquire))
    }
}

impl Inner {
    /// Registers a turn and sends it: at once when a worker is up, else once one is.
    pub(crate) fn begin(self: &Arc<Self>, request: TurnRequest, sink: Sink, stream: bool) -> u64 {
        let turn = self.next_turn.fetch_add(1, Ordering::Relaxed);
        let level = tracing::level_filters::LevelFilter::current()
            .into_level()
            .map_or(0, |l| runtime_api::level_number(&l));
        let credit = if stream { STREAM_WINDOW } else { 0 };
        let mut entry = Entry {
            execution_id: request.execution_id.clone(),
            sink,
            generation: None,
            credit: u64::from(credit),
        };
        let message = HostMessage::Turn {
            turn,
            request,
            stream,
            credit,
            log_level: level,
        };
        // Fast path: a worker is up. The entry is registered under the slot's lock, so a
        // worker's death (which clears the slot first) always finds it.
        let slot = lock(&self.slot);
        if let Some(link) = slot.usable() {
            entry.generation = Some(link.worker.generation);
            lock(&self.table).insert(turn, entry);
            drop(slot);
            let _ = link.tx.send(message);
            return turn;
        }
        lock(&self.table).insert(turn, entry);
        drop(slot);
        let inner = Arc::clone(self);
        let started = crate::io::io_runtime().map(|io| {
            io.spawn(async move {
                let link = match inner.ensure_worker().await {
                    Ok(link) => link,
                    Err(error) => {
                        if let Some(entry) = lock(&inner.table).remove(&turn) {
                            entry.sink.fail(error);
                        }
                        return;
                    }
                };
                let slot = lock(&inner.slot);
                let current = slot
                    .link
                    .as_ref()
                    .is_some_and(|l| l.worker.generation == link.worker.generation);
                let mut table = lock(&inner.table);
                if !current {
                    let error = slot.last_crash.as_ref().map_or_else(
                        || RuntimeError::new(ErrorKind::Crashed, "the worker ended"),
                        |(_, e)| e.clone(),
                    );
                    if let Some(entry) = table.remove(&turn) {
                        entry.sink.fail(error);
                    }
                    return;
                }
                // Not there when the turn was dropped or cancelled meanwhile.
                if let Some(entry) = table.get_mut(&turn) {
                    entry.generation = Some(link.worker.generation);
                    drop(table);
                    drop(slot);
                    let _ = link.tx.send(message);
                }
            })
        });
        if let Err(error) = started
            && let Some(entry) = lock(&self.table).remove(&turn)
        {
            entry.sink.fail(RuntimeError::unavailable(error));
        }
        turn
    }

    /// Forgets a turn the host no longer waits for (dropped, timed out, cancelled), telling
    /// its worker; the worker is killed when the plugin does not let go within the grace.
    pub(crate) fn abandon(&self, turn: u64, error: Option<RuntimeError>) {
        let Some(entry) = lock(&self.table).remove(&turn) else {
            return;
        };
        let generation = entry.generation;
        if let Some(error) = error {
            entry.sink.fail(error);
        }
        let Some(generation) = generation else {
            return;
        };
        let Some(link) = lock(&self.slot).link_for(generation) else {
            return;
        };
        lock(&link.worker.cancelling).insert(turn);
        self.turn_ended(generation);
        if link.tx.send(HostMessage::Cancel { turn }).is_err() {
            return;
        }
        let grace = self.spec.options.grace;
        let execution_id = entry.execution_id;
        let me = self.me.clone();
        if let Ok(io) = crate::io::io_runtime() {
            io.spawn(async move {
                tokio::time::sleep(grace).await;
                let holding = || lock(&link.worker.cancelling).contains(&turn);
                if !holding() {
                    return;
                }
                // The plugin holds on to the turn. A worker that does not answer a ping is
                // killed (by `ping`); one that does serves its other turns to their end and
                // takes no new ones: no other turn pays for this one.
                if ping(&link, grace).await.is_err() || !holding() {
                    return;
                }
                let reason = format!(
                    "turn `{execution_id}` did not stop within {grace:?} of being cancelled or timing out (a plugin that blocks its thread or spins)"
                );
                match me.upgrade() {
                    Some(inner) => inner.retire(&link, &reason),
                    None => link.worker.stop(format!("the host killed it: {reason}")),
                }
            });
        }
    }

    /// Takes the worker of `link` out of service: it gets no new turns, finishes the ones it
    /// has, and is stopped after the last (at once when it has none).
    pub(crate) fn retire(&self, link: &Link, reason: &str) {
        let generation = link.worker.generation;
        let oldest = {
            let mut slot = lock(&self.slot);
            if slot
                .link
                .as_ref()
                .is_some_and(|l| l.worker.generation == generation)
            {
                slot.link = None;
                slot.retiring.push(link.clone());
            }
            (slot.retiring.len() > MAX_RETIRING).then(|| slot.retiring.remove(0))
        };
        tracing::warn!(
            runtime = %self.spec.runtime_id,
            pid = link.worker.pid,
            "worker retired: {reason}; it still answers, so its other turns finish first, and new turns go to a new worker"
        );
        if let Some(oldest) = oldest {
            oldest.worker.stop(format!(
                "the host stopped it: more than {MAX_RETIRING} workers of this runtime were retiring"
            ));
        }
        self.turn_ended(generation);
    }

    /// A turn of the worker of `generation` ended: a retiring worker with no turn left is
    /// stopped.
    pub(crate) fn turn_ended(&self, generation: u64) {
        let idle = {
            let mut slot = lock(&self.slot);
            let Some(at) = slot
                .retiring
                .iter()
                .position(|l| l.worker.generation == generation)
            else {
                return;
            };
            let busy = lock(&self.table)
                .values()
                .any(|e| e.generation == Some(generation));
            if busy {
                return;
            }
            slot.retiring.remove(at)
        };
        idle.worker.stop(
            "the host stopped it after its last turn: it was retired for a turn that did not let go after a cancel or a timeout"
                .to_owned(),
        );
    }

    /// Grants a streamed turn more credit.
    pub(crate) fn grant(&self, turn: u64, amount: u32) {
        let generation = {
            let mut table = lock(&self.table);
            let Some(entry) = table.get_mut(&turn) else {
                return;
            };
            entry.credit += u64::from(amount);
            entry.generation
        };
        let link = generation.and_then(|g| lock(&self.slot).link_for(g));
        if let Some(link) = link {
            let _ = link.tx.send(HostMessage::Credit { turn, amount });
        }
    }

    /// A call on the runtime, on a worker started if needed.
    pub(crate) async fn call(self: &Arc<Self>, what: Call) -> Result<Reply, RuntimeError> {
        let link = self.ensure_worker().await?;
        let number = self.next_call.fetch_add(1, Ordering::Relaxed);
        let limit = self.spec.options.call_timeout;
        // Every call has a deadline: a worker that does not answer in time is stopped (its
        // turns end with the reason), and the call is a `timeout`.
        match tokio::time::timeout(
            limit,
            call_on(&link, move |call| HostMessage::Call { call, what }, number),
        )
        .await
        {
            Ok(reply) => reply,
            Err(_) => {
                lock(&link.worker.calls).remove(&number);
                let reason = format!("the host stopped it: a call got no answer within {limit:?}");
                link.worker.stop(reason.clone());
                Err(RuntimeError::timeout(reason))
            }
        }
    }

    /// The running worker, or a new one (after the backoff) when there is none.
    pub(crate) async fn ensure_worker(self: &Arc<Self>) -> Result<Link, RuntimeError> {
        if let Some(link) = lock(&self.slot).usable() {
            return Ok(link);
        }
        let _starting = self.starting.lock().await;
        let last_crash = {
            let slot = lock(&self.slot);
            if let Some(link) = slot.usable() {
                return Ok(link);
            }
            slot.last_crash.as_ref().map(|(at, _)| *at)
        };
        if let Some(reason) = self.ledger.failed() {
            return Err(RuntimeError::new(
                ErrorKind::Crashed,
                format!(
                    "runtime `{}` (plugin {}) is marked failed: {reason}",
                    self.spec.runtime_id,
                    self.spec.library.display()
                ),
            )
            .with_retriable(false));
        }
        if let Some(at) = last_crash {
            let recent = self.consecutive_crashes.load(Ordering::Relaxed).max(1);
            let backoff = self
                .spec
                .options
                .restart_backoff
                .saturating_mul(1 << (recent - 1).min(16))
                .min(crate::limits::LIMITS.max_backoff);
            tokio::time::sleep_until((at + backoff).into()).await;
        }
        let generation = {
            let mut slot = lock(&self.slot);
            slot.next_generation += 1;
            slot.next_generation
        };
        let (link, info) =
            match start_with(&self.spec, true, Arc::downgrade(self), generation).await {
                Ok(started) => started,
                Err(error) => {
                    if error.kind == ErrorKind::Crashed {
                        self.ledger.record(&self.spec.options, &error.message);
                        lock(&self.slot).last_crash = Some((Instant::now(), error.clone()));
                    }
                    return Err(error);
                }
            };
        *lock(&self.info) = info;
        lock(&self.slot).link = Some(link.clone());
        Ok(link)
    }

    /// A worker died: every turn and call on it ends with `crashed`.
    pub(crate) fn worker_died(&self, worker: &WorkerShared, error: RuntimeError) {
        {
            let mut slot = lock(&self.slot);
            slot.retiring
                .retain(|l| l.worker.generation != worker.generation);
            // A retired worker's end does not delay the next start: another serves already.
            if slot
                .link
                .as_ref()
                .is_some_and(|l| l.worker.generation == worker.generation)
            {
                slot.link = None;
                slot.last_crash = Some((Instant::now(), error.clone()));
            } else if !worker.host_ordered.load(Ordering::Acquire) {
                slot.last_crash = Some((Instant::now(), error.clone()));
            }
        }
        // A worker the host stopped (a stuck turn's grace, a ping) is no crash of the plugin's.
        let count = if worker.host_ordered.load(Ordering::Acquire) {
            0
        } else {
            self.consecutive_crashes.fetch_add(1, Ordering::Relaxed);
            self.ledger.record(&self.spec.options, &error.message)
        };
        tracing::warn!(
            runtime = %self.spec.runtime_id,
            plugin = %self.spec.library.display(),
            crashes_in_window = count,
            "{}", error.message
        );
        let lost: Vec<Entry> = {
            let mut table = lock(&self.table);
            let turns: Vec<u64> = table
                .iter()
                .filter(|(_, e)| e.generation == Some(worker.generation))
                .map(|(t, _)| *t)
                .collect();
            turns.iter().filter_map(|t| table.remove(t)).collect()
        };
        // A worker the host stopped for one turn takes the others on it along: say so, and
        // that they may be retried (they did nothing wrong), rather than `crashed`.
        let error = if worker.host_ordered.load(Ordering::Acquire) {
            RuntimeError::unavailable(format!(
                "the turn's worker was stopped by the host, not for this turn's fault: {}; this turn may be retried",
                error.message
            ))
            .with_retriable(true)
            .with_metadata(error.metadata.clone())
        } else {
            error
        };
        for entry in lost {
            entry.sink.fail(error.clone());
        }
    }
}

/// Pings a worker with turns in flight; one that does not answer is killed. Holds no link
/// between pings, so letting go of the runtime closes the worker's stdin at once.
pub(crate) async fn pinger(inner: Weak<Inner>, generation: u64) {
    loop {
        let interval = match inner.upgrade() {
            Some(inner) => inner.spec.options.ping_interval,
            None => return,
        };
        tokio::time::sleep(interval).await;
        let (link, grace) = {
            let Some(inner) = inner.upgrade() else { return };
            // Retiring workers too: their remaining turns are still watched.
            let link = lock(&inner.slot)
                .link_for(generation)
                .filter(|l| l.worker.usable.load(Ordering::Acquire));
            let Some(link) = link else { return };
            let busy = lock(&inner.table)
                .values()
                .any(|e| e.generation == Some(generation));
            if !busy {
                continue;
            }
            (link, inner.spec.options.grace)
        };
        if ping(&link, grace).await.is_err() {
            return;
        }
    }
}

impl TurnOwner for Inner {
    fn abandon(&self, turn: u64) {
        Inner::abandon(self, turn, None);
    }

    fn grant(&self, turn: u64, amount: u32) {
        Inner::grant(self, turn, amount);
    }
}

impl LinkEvents for Inner {
    fn started(self: Arc<Self>, generation: u64) {
        tokio::spawn(pinger(Arc::downgrade(&self), generation));
    }

    fn items(&self, turn: u64, items: Vec<StreamItem>) -> bool {
        let mut table = lock(&self.table);
        let Some(entry) = table.get_mut(&turn) else {
            return true;
        };
        // Weighed as the worker must have weighed them: more than granted breaks the protocol.
        let count: u64 = items.iter().map(|i| u64::from(credit_cost(i))).sum();
        if count > entry.credit {
            return false;
        }
        entry.credit -= count;
        let done = items.iter().any(|i| matches!(i, StreamItem::Done(_)));
        if let Sink::Stream(sender) = &entry.sink {
            let _ = sender.send(Batch::Items(items));
        }
        if done {
            let generation = table.remove(&turn).and_then(|e| e.generation);
            drop(table);
            self.consecutive_crashes.store(0, Ordering::Relaxed);
            if let Some(generation) = generation {
                self.turn_ended(generation);
            }
        }
        true
    }

    fn finished(&self, turn: u64, result: Result<Option<TurnOutput>, RuntimeError>) {
        let Some(entry) = lock(&self.table).remove(&turn) else {
            return;
        };
        if let Some(generation) = entry.generation {
            self.turn_ended(generation);
        }
        match (entry.sink, result) {
            (Sink::Run(sender), Ok(Some(output))) => {
                self.consecutive_crashes.store(0, Ordering::Relaxed);
                let _ = sender.send(Ok(output));
            }
            (sink, Err(error)) => sink.fail(error),
            (sink, Ok(_)) => sink.fail(RuntimeError::internal(
                "the worker ended the turn without a result",
            )),
        }
    }

    fn died(&self, worker: &WorkerShared, error: RuntimeError) {
        self.worker_died(worker, error);
    }
}
