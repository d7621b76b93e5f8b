//! The host's side of a worker: starting it, multiplexing turns over it, supervising it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::{SinkExt, Stream, StreamExt as _};
use runtime_api::{
    ErrorKind, RuntimeError, RuntimeInfo, StreamItem, TurnOutput, TurnRequest, Value,
};
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};

use super::ProcessOptions;
use super::protocol::{
    Call, HostMessage, PROTOCOL_VERSION, Reply, STREAM_WINDOW, WorkerMessage, codec, decode, encode,
};
use super::spawn::{command, describe_exit, env_names, find_worker};
use crate::plugin_log as log_bridge;

/// Stderr lines kept for a crash report.
const TAIL_LINES: usize = 12;
/// The longest stderr line kept, in characters.
const TAIL_LINE_CHARS: usize = 400;
/// The longest wait between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a worker is started for.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The library, as discovery resolved and checked it.
    pub library: PathBuf,
    pub runtime_id: String,
    pub config: Value,
    pub allow_insecure: bool,
    pub options: ProcessOptions,
}

/// The crashes of one registered runtime's workers, and whether it is marked failed.
#[derive(Debug, Default)]
pub struct CrashLedger {
    state: Mutex<LedgerState>,
}

#[derive(Debug, Default)]
struct LedgerState {
    crashes: VecDeque<Instant>,
    failed: Option<String>,
}

impl CrashLedger {
    /// Records a crash; returns how many fell in the window, and marks the runtime failed
    /// when there were too many.
    fn record(&self, options: &ProcessOptions, what: &str) -> u32 {
        let mut state = lock(&self.state);
        let now = Instant::now();
        state.crashes.push_back(now);
        while state
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > options.crash_window)
        {
            state.crashes.pop_front();
        }
        let count = u32::try_from(state.crashes.len()).unwrap_or(u32::MAX);
        if count >= options.max_crashes && state.failed.is_none() {
            state.failed = Some(format!(
                "its worker crashed {count} times within {:?}; the last time: {what}",
                options.crash_window
            ));
        }
        count
    }

    /// Why the runtime is marked failed, if it is.
    pub fn failed(&self) -> Option<String> {
        lock(&self.state).failed.clone()
    }

    /// Forgets the crashes: the runtime may be tried again.
    pub fn clear(&self) {
        *lock(&self.state) = LedgerState::default();
    }
}

/// Where a turn's results go.
enum Sink {
    Run(oneshot::Sender<Result<TurnOutput, RuntimeError>>),
    Stream(mpsc::UnboundedSender<Batch>),
}

/// What reaches a streamed turn.
enum Batch {
    Items(Vec<StreamItem>),
    Error(RuntimeError),
}

impl Sink {
    fn fail(self, error: RuntimeError) {
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
struct Entry {
    execution_id: String,
    sink: Sink,
    /// The worker it was sent to; `None` until it is.
    generation: Option<u64>,
    /// Stream items the worker may still send.
    credit: u64,
}

type CallSink = oneshot::Sender<Result<Reply, RuntimeError>>;

/// What the host and a worker's tasks share about it.
struct WorkerShared {
    pid: u32,
    generation: u64,
    /// Not yet reaped (so its process id is still its own).
    alive: AtomicBool,
    /// Still taking turns: false once it is being killed or has stopped talking.
    usable: AtomicBool,
    calls: Mutex<HashMap<u64, CallSink>>,
    /// Turns cancelled and not yet let go of by the plugin.
    cancelling: Mutex<HashSet<u64>>,
    pongs: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    /// Why the host killed it, when it did.
    kill_reason: Mutex<Option<String>>,
}

impl WorkerShared {
    /// Kills the worker's process group, saying why (the first reason is kept).
    fn kill(&self, reason: String) {
        self.usable.store(false, Ordering::Release);
        if !self.alive.load(Ordering::Acquire) {
            return;
        }
        lock(&self.kill_reason).get_or_insert(reason);
        #[cfg(unix)]
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// A running worker: where to send messages.
#[derive(Clone)]
struct Link {
    tx: mpsc::UnboundedSender<HostMessage>,
    worker: Arc<WorkerShared>,
}

#[derive(Default)]
struct Slot {
    /// The worker, while it takes turns.
    link: Option<Link>,
    next_generation: u64,
    last_crash: Option<(Instant, RuntimeError)>,
}

struct Inner {
    spec: Spec,
    ledger: Arc<CrashLedger>,
    next_turn: AtomicU64,
    next_call: AtomicU64,
    slot: Mutex<Slot>,
    table: Mutex<HashMap<u64, Entry>>,
    /// One start at a time.
    starting: tokio::sync::Mutex<()>,
    info: Mutex<Option<RuntimeInfo>>,
    /// Crashes since a turn last succeeded: the restart backoff doubles with each.
    consecutive_crashes: std::sync::atomic::AtomicU32,
}

/// A runtime instance served by a worker process, restarted after a crash.
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ProcessRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessRuntime")
            .field("runtime", &self.inner.spec.runtime_id)
            .field("library", &self.inner.spec.library)
            .finish_non_exhaustive()
    }
}

/// Runs `future` on the process level's runtime and waits for it on this thread (never
/// called from that runtime's own thread).
fn block_on<T: Send + 'static>(
    future: impl Future<Output = Result<T, RuntimeError>> + Send + 'static,
    limit: Duration,
) -> Result<T, RuntimeError> {
    let io = super::io_runtime().map_err(RuntimeError::unavailable)?;
    let (done, wait) = std::sync::mpsc::sync_channel(1);
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
        let inner = Arc::new(Inner {
            spec,
            ledger,
            next_turn: AtomicU64::new(1),
            next_call: AtomicU64::new(1),
            slot: Mutex::default(),
            table: Mutex::default(),
            starting: tokio::sync::Mutex::new(()),
            info: Mutex::new(None),
            consecutive_crashes: std::sync::atomic::AtomicU32::new(0),
        });
        let starting = Arc::clone(&inner);
        block_on(
            async move { starting.ensure_worker().await.map(|_| ()) },
            limit,
        )?;
        Ok(Self { inner })
    }

    /// Checks a configuration in a worker of its own.
    pub fn validate_once(spec: Spec, config: &Value) -> Result<Vec<String>, RuntimeError> {
        let limit = spec.options.start_timeout + spec.options.grace;
        let config = config_text(config);
        block_on(
            async move {
                let runtime_id = spec.runtime_id.clone();
                let link = start(&spec, false, Weak::new()).await?;
                let reply = call_on(
                    &link,
                    |call| HostMessage::Validate {
                        call,
                        runtime: runtime_id,
                        config,
                    },
                    1,
                )
                .await;
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
        lock(&self.inner.info)
            .clone()
            .ok_or_else(|| RuntimeError::internal("the runtime was never created"))
    }

    pub fn supports(&self, model: &str) -> Result<bool, RuntimeError> {
        let inner = Arc::clone(&self.inner);
        let model = model.to_owned();
        let limit = self.inner.spec.options.start_timeout + self.inner.spec.options.grace;
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
        let inner = Arc::clone(&self.inner);
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
        let inner = Arc::clone(&self.inner);
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

    /// Ends the turns with this execution id at once, and tells the worker.
    pub fn cancel(&self, execution_id: &str) -> bool {
        let turns: Vec<u64> = lock(&self.inner.table)
            .iter()
            .filter(|(_, entry)| entry.execution_id == execution_id)
            .map(|(turn, _)| *turn)
            .collect();
        for turn in &turns {
            self.inner.abandon(
                *turn,
                Some(RuntimeError::cancelled(
                    "the turn was cancelled by its execution id",
                )),
            );
        }
        !turns.is_empty()
    }

    pub fn run_turn(&self, request: TurnRequest) -> ProcessTurn {
        let (sender, receiver) = oneshot::channel();
        let turn = self.inner.begin(request, Sink::Run(sender), false);
        ProcessTurn {
            inner: Arc::clone(&self.inner),
            turn,
            receiver,
            finished: false,
        }
    }

    pub fn stream_turn(&self, request: TurnRequest) -> ProcessStream {
        let (sender, receiver) = mpsc::unbounded_channel();
        let turn = self.inner.begin(request, Sink::Stream(sender), true);
        ProcessStream {
            inner: Arc::clone(&self.inner),
            turn,
            receiver,
            ready: VecDeque::new(),
            consumed: 0,
            finished: false,
        }
    }
}

/// Runs a future on the process level's runtime, from any executor.
fn on_io<T: Send + 'static>(
    future: impl Future<Output = Result<T, RuntimeError>> + Send + 'static,
) -> impl Future<Output = Result<T, RuntimeError>> {
    let spawned = super::io_runtime().map(|io| io.spawn(future));
    async move {
        match spawned {
            Err(error) => Err(RuntimeError::unavailable(error)),
            Ok(task) => task.await.unwrap_or_else(|e| {
                Err(RuntimeError::internal(format!("a worker call failed: {e}")))
            }),
        }
    }
}

fn config_text(config: &Value) -> String {
    if config.is_null() {
        String::new()
    } else {
        config.to_string()
    }
}

impl Slot {
    /// The worker, if it still takes turns.
    fn usable(&self) -> Option<Link> {
        self.link
            .clone()
            .filter(|l| l.worker.usable.load(Ordering::Acquire))
    }
}

impl Inner {
    /// Registers a turn and sends it: at once when a worker is up, else once one is.
    fn begin(self: &Arc<Self>, request: TurnRequest, sink: Sink, stream: bool) -> u64 {
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
        let started = super::io_runtime().map(|io| {
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
    fn abandon(&self, turn: u64, error: Option<RuntimeError>) {
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
        let link = lock(&self.slot).link.clone();
        let Some(link) = link.filter(|l| l.worker.generation == generation) else {
            return;
        };
        lock(&link.worker.cancelling).insert(turn);
        if link.tx.send(HostMessage::Cancel { turn }).is_err() {
            return;
        }
        let grace = self.spec.options.grace;
        let execution_id = entry.execution_id;
        let worker = link.worker;
        if let Ok(io) = super::io_runtime() {
            io.spawn(async move {
                tokio::time::sleep(grace).await;
                if lock(&worker.cancelling).contains(&turn) {
                    worker.kill(format!(
                        "the host killed it: turn `{execution_id}` did not stop within {grace:?} of being cancelled or timing out (a plugin that blocks its thread or spins)"
                    ));
                }
            });
        }
    }

    /// Grants a streamed turn more credit.
    fn grant(&self, turn: u64, amount: u32) {
        let generation = {
            let mut table = lock(&self.table);
            let Some(entry) = table.get_mut(&turn) else {
                return;
            };
            entry.credit += u64::from(amount);
            entry.generation
        };
        let link = lock(&self.slot).link.clone();
        if let Some(link) = link.filter(|l| Some(l.worker.generation) == generation) {
            let _ = link.tx.send(HostMessage::Credit { turn, amount });
        }
    }

    /// A call on the runtime, on a worker started if needed.
    async fn call(self: &Arc<Self>, what: Call) -> Result<Reply, RuntimeError> {
        let link = self.ensure_worker().await?;
        let number = self.next_call.fetch_add(1, Ordering::Relaxed);
        call_on(&link, move |call| HostMessage::Call { call, what }, number).await
    }

    /// The running worker, or a new one (after the backoff) when there is none.
    async fn ensure_worker(self: &Arc<Self>) -> Result<Link, RuntimeError> {
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
                .min(MAX_BACKOFF);
            tokio::time::sleep_until((at + backoff).into()).await;
        }
        let generation = {
            let mut slot = lock(&self.slot);
            slot.next_generation += 1;
            slot.next_generation
        };
        let (link, info) =
            match start_generation(&self.spec, generation, Arc::downgrade(self)).await {
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
    fn worker_died(&self, worker: &WorkerShared, error: RuntimeError) {
        {
            let mut slot = lock(&self.slot);
            if slot
                .link
                .as_ref()
                .is_some_and(|l| l.worker.generation == worker.generation)
            {
                slot.link = None;
            }
            slot.last_crash = Some((Instant::now(), error.clone()));
        }
        let count = self.ledger.record(&self.spec.options, &error.message);
        self.consecutive_crashes.fetch_add(1, Ordering::Relaxed);
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
        for entry in lost {
            entry.sink.fail(error.clone());
        }
    }
}

/// Sends a call and waits for its answer (or the worker's death).
async fn call_on(
    link: &Link,
    message: impl FnOnce(u64) -> HostMessage,
    number: u64,
) -> Result<Reply, RuntimeError> {
    let (sender, receiver) = oneshot::channel();
    lock(&link.worker.calls).insert(number, sender);
    if link.tx.send(message(number)).is_err() {
        lock(&link.worker.calls).remove(&number);
        return Err(RuntimeError::new(ErrorKind::Crashed, "the worker ended"));
    }
    receiver
        .await
        .unwrap_or_else(|_| Err(RuntimeError::new(ErrorKind::Crashed, "the worker ended")))
}

/// Pings a worker; kills it when it does not answer within `grace`.
async fn ping(link: &Link, grace: Duration) -> Result<(), RuntimeError> {
    static SEQ: AtomicU64 = AtomicU64::new(1);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let (sender, receiver) = oneshot::channel();
    lock(&link.worker.pongs).insert(seq, sender);
    let _ = link.tx.send(HostMessage::Ping { seq });
    match tokio::time::timeout(grace, receiver).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(RuntimeError::new(ErrorKind::Crashed, "the worker ended")),
        Err(_) => {
            lock(&link.worker.pongs).remove(&seq);
            let reason = format!("the host killed it: it did not answer a ping within {grace:?}");
            link.worker.kill(reason.clone());
            Err(RuntimeError::new(ErrorKind::Crashed, reason))
        }
    }
}

async fn start_generation(
    spec: &Spec,
    generation: u64,
    inner: Weak<Inner>,
) -> Result<(Link, Option<RuntimeInfo>), RuntimeError> {
    let (link, info) = start_with(spec, true, inner, generation).await?;
    Ok((link, info))
}

/// Starts a one-off worker (no runtime created); it exits when the link is dropped.
async fn start(spec: &Spec, create: bool, inner: Weak<Inner>) -> Result<Link, RuntimeError> {
    let (link, _) = start_with(spec, create, inner, 0).await?;
    Ok(link)
}

/// Keeps the last lines of a worker's stderr.
type Tail = Arc<Mutex<VecDeque<String>>>;

/// A line from a plugin, safe for a terminal: control characters escaped, length capped.
fn clean_line(line: &str) -> String {
    let mut clean = String::with_capacity(line.len().min(TAIL_LINE_CHARS));
    for c in line.chars().take(TAIL_LINE_CHARS) {
        if c.is_control() {
            clean.extend(c.escape_default());
        } else {
            clean.push(c);
        }
    }
    clean
}

/// How a worker ended, with its stderr's last lines, as a `crashed` error.
fn crash_error(spec: &Spec, pid: u32, how: &str, tail: &[String]) -> RuntimeError {
    let mut message = format!(
        "the worker of runtime `{}` (plugin {}, pid {pid}) {how}",
        spec.runtime_id,
        spec.library.display()
    );
    if !tail.is_empty() {
        message.push_str("; the last lines of its stderr:");
        for line in tail {
            message.push_str("\n  ");
            message.push_str(line);
        }
    }
    RuntimeError::new(ErrorKind::Crashed, message).with_metadata(serde_json::json!({
        "plugin": spec.library.display().to_string(),
        "runtime": spec.runtime_id,
        "pid": pid,
        "how": how,
        "stderr": tail,
    }))
}

async fn start_with(
    spec: &Spec,
    create: bool,
    inner: Weak<Inner>,
    generation: u64,
) -> Result<(Link, Option<RuntimeInfo>), RuntimeError> {
    let options = &spec.options;
    let worker_path = find_worker(options).map_err(RuntimeError::unavailable)?;
    let mut names = Vec::new();
    env_names(&spec.config, &mut names);
    let mut child = command(&worker_path, options, &names)
        .spawn()
        .map_err(|e| {
            RuntimeError::unavailable(format!(
                "could not start the worker {}: {e}",
                worker_path.display()
            ))
        })?;
    let pid = child.id().unwrap_or(0);
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(RuntimeError::internal("the worker's pipes were not set up"));
    };
    let tail: Tail = Arc::default();
    let stderr_task = {
        let tail = Arc::clone(&tail);
        let runtime = spec.runtime_id.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let line = clean_line(&line);
                tracing::debug!(target: "agent_runtimes::worker", runtime = %runtime, pid, "{line}");
                let mut tail = lock(&tail);
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        })
    };
    let mut frames = FramedRead::new(stdout, codec());
    let mut sink = FramedWrite::new(stdin, codec());
    let level = tracing::level_filters::LevelFilter::current()
        .into_level()
        .map_or(0, |l| runtime_api::level_number(&l));
    let mut opening = vec![HostMessage::Start {
        protocol: PROTOCOL_VERSION,
        library: spec.library.clone(),
        allow_insecure: spec.allow_insecure,
        log_level: level,
    }];
    if create {
        opening.push(HostMessage::Create {
            runtime: spec.runtime_id.clone(),
            config: config_text(&spec.config),
        });
    }
    let handshake = async {
        for message in &opening {
            let frame = encode(message).map_err(RuntimeError::internal)?;
            sink.feed(frame)
                .await
                .map_err(|e| e.to_string())
                .map_err(RuntimeError::internal)?;
        }
        SinkExt::<bytes::Bytes>::flush(&mut sink)
            .await
            .map_err(|e| RuntimeError::internal(e.to_string()))?;
        let mut ready = false;
        loop {
            let Some(frame) = frames.next().await else {
                return Ok(Err(()));
            };
            let frame = frame.map_err(|e| RuntimeError::internal(e.to_string()))?;
            match decode::<WorkerMessage>(&frame).map_err(RuntimeError::internal)? {
                WorkerMessage::Hello { protocol, .. } if protocol != PROTOCOL_VERSION => {
                    return Err(RuntimeError::internal(format!(
                        "the worker {} speaks protocol {protocol}, this host {PROTOCOL_VERSION}: install the runtimes-worker of this runtime-loader version",
                        worker_path.display()
                    )));
                }
                WorkerMessage::Hello { .. } | WorkerMessage::Log(_) => {}
                WorkerMessage::Refused { reason } => {
                    return Err(RuntimeError::internal(format!(
                        "the worker refused the plugin library {}: {reason}",
                        spec.library.display()
                    )));
                }
                WorkerMessage::Ready { .. } => {
                    ready = true;
                    if !create {
                        return Ok(Ok(None));
                    }
                }
                WorkerMessage::Created { result } if ready => {
                    return result.map(|i| Ok(Some(i)));
                }
                other => {
                    return Err(RuntimeError::internal(format!(
                        "the worker broke the protocol at start: {other:?}"
                    )));
                }
            }
        }
    };
    let outcome = tokio::time::timeout(options.start_timeout, handshake).await;
    let info = match outcome {
        Ok(Ok(Ok(info))) => info,
        failed => {
            let _ = child.start_kill();
            let status = child.wait().await;
            let _ = tokio::time::timeout(Duration::from_secs(1), stderr_task).await;
            let tail: Vec<String> = lock(&tail).iter().cloned().collect();
            return Err(match failed {
                Ok(Ok(Err(()))) => {
                    let how = status.map_or_else(|e| format!("ended ({e})"), describe_exit);
                    crash_error(spec, pid, &format!("{how} while starting"), &tail)
                }
                Ok(Err(error)) => {
                    let mut error = error;
                    if !tail.is_empty() {
                        error
                            .message
                            .push_str(&format!("; its stderr: {}", tail.join(" | ")));
                    }
                    error
                }
                Err(_) => RuntimeError::unavailable(format!(
                    "the worker of runtime `{}` did not start within {:?}",
                    spec.runtime_id, options.start_timeout
                )),
                Ok(Ok(Ok(_))) => RuntimeError::internal("unreachable"),
            });
        }
    };
    let worker = Arc::new(WorkerShared {
        pid,
        generation,
        alive: AtomicBool::new(true),
        usable: AtomicBool::new(true),
        calls: Mutex::default(),
        cancelling: Mutex::default(),
        pongs: Mutex::default(),
        kill_reason: Mutex::default(),
    });
    let (tx, mut outgoing) = mpsc::unbounded_channel::<HostMessage>();
    tokio::spawn(async move {
        while let Some(message) = outgoing.recv().await {
            let Ok(frame) = encode(&message) else {
                continue;
            };
            if sink.feed(frame).await.is_err() {
                return;
            }
            while let Ok(message) = outgoing.try_recv() {
                let Ok(frame) = encode(&message) else {
                    continue;
                };
                if sink.feed(frame).await.is_err() {
                    return;
                }
            }
            if SinkExt::<bytes::Bytes>::flush(&mut sink).await.is_err() {
                return;
            }
        }
        // Every sender is gone: closing stdin tells the worker to exit.
    });
    let link = Link {
        tx,
        worker: Arc::clone(&worker),
    };
    let spec = spec.clone();
    if inner.upgrade().is_some() {
        tokio::spawn(pinger(inner.clone(), generation));
    }
    tokio::spawn(async move {
        read_worker(&mut frames, &inner, &worker).await;
        worker.usable.store(false, Ordering::Release);
        // The worker closed its end, broke the protocol, or died: make sure it is gone.
        worker.kill(String::new());
        let status = child.wait().await;
        worker.alive.store(false, Ordering::Release);
        let _ = tokio::time::timeout(Duration::from_secs(1), stderr_task).await;
        let Some(inner) = inner.upgrade() else {
            // The runtime was let go of: its worker ending is no crash.
            return;
        };
        let how = status.map_or_else(|e| format!("ended ({e})"), describe_exit);
        let how = if how.starts_with("killed") {
            format!("was {how}")
        } else {
            how
        };
        let how = match lock(&worker.kill_reason).as_deref() {
            Some(reason) if !reason.is_empty() => format!("{how} ({reason})"),
            _ => how,
        };
        let tail: Vec<String> = lock(&tail).iter().cloned().collect();
        let error = crash_error(&spec, pid, &how, &tail);
        let calls: Vec<CallSink> = lock(&worker.calls).drain().map(|(_, c)| c).collect();
        for sender in calls {
            let _ = sender.send(Err(error.clone()));
        }
        lock(&worker.pongs).clear();
        inner.worker_died(&worker, error);
    });
    Ok((link, info))
}

/// Dispatches a worker's messages until it stops sending.
async fn read_worker<R: tokio::io::AsyncRead + Unpin>(
    frames: &mut FramedRead<R, tokio_util::codec::LengthDelimitedCodec>,
    inner: &Weak<Inner>,
    worker: &WorkerShared,
) {
    while let Some(frame) = frames.next().await {
        let message = match frame
            .map_err(|e| e.to_string())
            .and_then(|f| decode::<WorkerMessage>(&f))
        {
            Ok(message) => message,
            Err(error) => {
                worker.kill(format!(
                    "the host killed it: it broke the protocol ({error})"
                ));
                return;
            }
        };
        match message {
            WorkerMessage::Items { turn, items } => {
                let Some(inner) = inner.upgrade() else {
                    continue;
                };
                let mut table = lock(&inner.table);
                let Some(entry) = table.get_mut(&turn) else {
                    continue;
                };
                let count = items.len() as u64;
                if count > entry.credit {
                    drop(table);
                    worker.kill(
                        "the host killed it: it sent more stream items than it was granted"
                            .to_owned(),
                    );
                    return;
                }
                entry.credit -= count;
                let done = items.iter().any(|i| matches!(i, StreamItem::Done(_)));
                if let Sink::Stream(sender) = &entry.sink {
                    let _ = sender.send(Batch::Items(items));
                }
                if done {
                    table.remove(&turn);
                    inner.consecutive_crashes.store(0, Ordering::Relaxed);
                }
            }
            WorkerMessage::Finished { turn, result } => {
                let Some(inner) = inner.upgrade() else {
                    continue;
                };
                let Some(entry) = lock(&inner.table).remove(&turn) else {
                    continue;
                };
                match (entry.sink, result) {
                    (Sink::Run(sender), Ok(Some(output))) => {
                        inner.consecutive_crashes.store(0, Ordering::Relaxed);
                        let _ = sender.send(Ok(output));
                    }
                    (sink, Err(error)) => sink.fail(error),
                    (sink, Ok(_)) => sink.fail(RuntimeError::internal(
                        "the worker ended the turn without a result",
                    )),
                }
            }
            WorkerMessage::Ended { turn } => {
                lock(&worker.cancelling).remove(&turn);
            }
            WorkerMessage::Reply { call, result } => {
                if let Some(sender) = lock(&worker.calls).remove(&call) {
                    let _ = sender.send(result);
                }
            }
            WorkerMessage::Pong { seq } => {
                if let Some(sender) = lock(&worker.pongs).remove(&seq) {
                    let _ = sender.send(());
                }
            }
            WorkerMessage::Log(record) => log_bridge::emit(
                record.level,
                &record.plugin,
                &record.runtime,
                &record.execution_id,
                &record.plugin_target,
                &record.fields,
                &record.message,
            ),
            WorkerMessage::Hello { .. }
            | WorkerMessage::Ready { .. }
            | WorkerMessage::Refused { .. }
            | WorkerMessage::Created { .. } => {}
        }
    }
}

/// Pings a worker with turns in flight; one that does not answer is killed. Holds no link
/// between pings, so letting go of the runtime closes the worker's stdin at once.
async fn pinger(inner: Weak<Inner>, generation: u64) {
    loop {
        let interval = match inner.upgrade() {
            Some(inner) => inner.spec.options.ping_interval,
            None => return,
        };
        tokio::time::sleep(interval).await;
        let (link, grace) = {
            let Some(inner) = inner.upgrade() else { return };
            let link = lock(&inner.slot)
                .usable()
                .filter(|l| l.worker.generation == generation);
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

/// A turn on a worker: a future of its output. Dropping it cancels the turn in the worker.
pub struct ProcessTurn {
    inner: Arc<Inner>,
    turn: u64,
    receiver: oneshot::Receiver<Result<TurnOutput, RuntimeError>>,
    finished: bool,
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
            self.inner.abandon(self.turn, None);
        }
    }
}

/// A streamed turn on a worker. Dropping it cancels the turn in the worker.
pub struct ProcessStream {
    inner: Arc<Inner>,
    turn: u64,
    receiver: mpsc::UnboundedReceiver<Batch>,
    ready: VecDeque<StreamItem>,
    /// Items handed out since credit was last granted.
    consumed: u32,
    finished: bool,
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
            this.consumed += 1;
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
            self.inner.abandon(self.turn, None);
        }
    }
}
