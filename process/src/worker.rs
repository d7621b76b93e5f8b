//! The worker process: loads one plugin library, creates its runtime, serves turns.
//!
//! Started by a host at the *process* isolation level (see the `runtimes-worker` binary).
//! Stdin and stdout carry the protocol: they are moved to private descriptors at start, stdin
//! then reads `/dev/null` and stdout goes to stderr, so a plugin that prints cannot corrupt
//! the protocol. Everything the plugin writes to stderr reaches the host, which keeps the last
//! lines for crash reports. The worker exits when the host closes its end.
//!
//! Turns are polled inline on the worker's threads: when a cancelled turn's future has been
//! dropped, the worker says so ([`WorkerMessage::Ended`]); a plugin that blocks or spins
//! never lets that happen, and the host kills the worker after its grace period.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use futures::{FutureExt as _, SinkExt, StreamExt as _};
use runtime_api::host::{RemoteRuntime, TurnOptions};
use runtime_api::{RuntimeError, StreamItem, Value};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};

use crate::plugin_log::PLUGIN_LOG_TARGET;
use crate::protocol::{
    Call, CheckedFile, HostMessage, LogRecord, PROTOCOL_VERSION, Reply, WorkerMessage, codec,
    credit_cost, decode, worker_frame,
};

/// The library a worker serves, as the loader opened it (the worker executable is built by the
/// loader, the one crate that `dlopen`s; this crate only drives it).
pub trait WorkerLibrary: Send + Sync {
    /// The plugin's package name, from its checked manifest.
    fn plugin_name(&self) -> &str;
    /// The plugin's package version, from its checked manifest.
    fn plugin_version(&self) -> &str;
    /// The identity of the file loaded (device, inode, size, times), reported to the host.
    fn identity(&self) -> Option<runtime_discovery::security::Identity>;
    /// The sha256 of the file loaded, when a pin applied to it.
    fn sha256(&self) -> Option<String>;
    /// Creates runtime `id` with `config`; the outer error when the library cannot provide it.
    ///
    /// # Errors
    ///
    /// The library's refusal as text, or the factory's own error.
    fn instantiate(
        &self,
        id: &str,
        config: &Value,
    ) -> Result<Result<RemoteRuntime, RuntimeError>, String>;
    /// Every problem runtime `id` finds with `config`, without creating it.
    ///
    /// # Errors
    ///
    /// The library's refusal as text, or the entry point's own error.
    fn validate_config(
        &self,
        id: &str,
        config: &Value,
    ) -> Result<Result<Vec<String>, RuntimeError>, String>;
}

/// How a worker opens the library the host names: runs the admission checks on it (trust
/// relaxed when `allow_insecure`) and loads it, or says why not. With `checked`, the file
/// loaded is the descriptor the host handed over, verified against what the host checked.
pub type OpenLibrary = fn(
    path: &std::path::Path,
    allow_insecure: bool,
    checked: Option<&CheckedFile>,
) -> Result<Box<dyn WorkerLibrary>, String>;

/// Runs the worker; the whole of the `runtimes-worker` binary, given the loader's way to open
/// a library.
pub fn worker_main(open: OpenLibrary) -> ExitCode {
    let policy = match policy_from_args() {
        Ok(policy) => policy,
        Err(error) => {
            report(&format!("refused to run unsandboxed: {error}"));
            return ExitCode::from(2);
        }
    };
    // The namespaces first, while this process has one thread: this forks, and only the worker
    // (PID 2 of the new PID namespace) returns; the relay and init exit as the worker does.
    #[cfg(target_os = "linux")]
    let namespaced = match policy.as_ref().map(crate::sandbox::namespaces::enter) {
        Some(Ok(None)) => true,
        Some(Ok(Some(note))) => {
            report(&note);
            false
        }
        Some(Err(error)) => {
            report(&format!("refused to run unsandboxed: {error}"));
            return ExitCode::from(2);
        }
        None => false,
    };
    // The library the host handed over, if it did (before descriptor numbers are reused).
    let library =
        std::fs::File::open(format!("/proc/self/fd/{}", crate::protocol::LIBRARY_FD)).ok();
    let (input, output) = match take_protocol_descriptors() {
        Ok(fds) => fds,
        Err(error) => {
            report(&format!(
                "could not set up its descriptors: {error}. This program is started by a host at the process isolation level; it is not run by hand"
            ));
            return ExitCode::from(2);
        }
    };
    // The sandbox goes on now, on the only thread, before any other thread exists and before
    // the plugin is opened: every thread and process started later inherits it. In a PID
    // namespace, orphans go to its init, which reaps them; otherwise to this worker, which ends
    // them when it exits.
    #[cfg(target_os = "linux")]
    if !namespaced {
        crate::sandbox::descendants::become_subreaper();
    }
    if let Some(policy) = &policy
        && let Err(error) = enter_sandbox(policy, library.as_ref())
    {
        report(&format!("refused to run unsandboxed: {error}"));
        return ExitCode::from(2);
    }
    let subscriber = tracing_subscriber::registry().with(ForwardLayer);
    let _ = tracing::subscriber::set_global_default(subscriber);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .thread_name("runtimes-worker")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            report(&format!("could not start its async runtime: {error}"));
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(serve(input, output, open));
    // No process the plugin started outlives the worker.
    #[cfg(target_os = "linux")]
    crate::sandbox::descendants::end_own();
    // Plugin threads may still be blocked: leave without waiting for them.
    std::process::exit(code);
}

/// The policy the host put on the command line (none: no sandbox was asked for).
fn policy_from_args() -> Result<Option<crate::sandbox::Policy>, crate::sandbox::SandboxError> {
    let mut args = std::env::args_os().skip(1);
    match (args.next(), args.next()) {
        (Some(flag), Some(json)) if flag == crate::sandbox::POLICY_ARG => json
            .to_str()
            .ok_or_else(|| "not UTF-8".to_owned())
            .and_then(|j| serde_json::from_str(j).map_err(|e| e.to_string()))
            .map(Some)
            .map_err(|detail| crate::sandbox::SandboxError::Policy { detail }),
        _ => Ok(None),
    }
}

/// Applies `policy` (no_new_privs, Landlock, seccomp) to this process.
fn enter_sandbox(
    policy: &crate::sandbox::Policy,
    library: Option<&std::fs::File>,
) -> Result<(), crate::sandbox::SandboxError> {
    for note in crate::sandbox::apply(policy, library)? {
        report(&note);
    }
    Ok(())
}

/// This process's id as the host sees it: `/proc` belongs to the host's PID namespace, so
/// `/proc/self` names the worker there even when it is PID 2 of its own.
fn host_visible_pid() -> u32 {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|p| p.parse().ok()))
        .unwrap_or_else(std::process::id)
}

#[allow(clippy::print_stderr)]
fn report(message: &str) {
    eprintln!("runtimes-worker: {message}");
}

/// Moves the protocol off stdin and stdout, onto descriptors no plugin code knows about.
fn take_protocol_descriptors() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    let input = rustix::io::fcntl_dupfd_cloexec(std::io::stdin(), 3)?;
    let output = rustix::io::fcntl_dupfd_cloexec(std::io::stdout(), 3)?;
    let null = std::fs::File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    rustix::stdio::dup2_stdout(std::io::stderr())?;
    Ok((input, output))
}

/// Where plugin log events go: to the host, in order with the turn's other messages.
static LOGS: OnceLock<Out> = OnceLock::new();
/// Log events queued and not yet written; beyond [`MAX_PENDING_LOGS`] they are dropped, so a
/// plugin that logs without end cannot grow the worker.
static PENDING_LOGS: AtomicUsize = AtomicUsize::new(0);
const MAX_PENDING_LOGS: usize = crate::limits::LIMITS.max_pending_logs;
/// Told when a refusal has been written, so the worker may exit.
static REFUSAL_WRITTEN: tokio::sync::Notify = tokio::sync::Notify::const_new();
/// The host's level (1 error … 5 trace, 0 off).
static LEVEL: AtomicU8 = AtomicU8::new(2);

fn set_level(level: u8) {
    if LEVEL.swap(level, Ordering::Relaxed) != level {
        tracing::callsite::rebuild_interest_cache();
    }
}

/// Hands the log bridge's re-emitted plugin events to the host.
struct ForwardLayer;

impl<S: Subscriber> Layer<S> for ForwardLayer {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        metadata.target() == PLUGIN_LOG_TARGET
            && runtime_api::level_number(metadata.level()) <= LEVEL.load(Ordering::Relaxed)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        use tracing::level_filters::LevelFilter;
        Some(match LEVEL.load(Ordering::Relaxed) {
            0 => LevelFilter::OFF,
            1 => LevelFilter::ERROR,
            2 => LevelFilter::WARN,
            3 => LevelFilter::INFO,
            4 => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        })
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut record = LogRecord {
            level: runtime_api::level_number(event.metadata().level()),
            ..LogRecord::default()
        };
        event.record(&mut RecordVisitor(&mut record));
        if let Some(logs) = LOGS.get()
            && PENDING_LOGS.fetch_add(1, Ordering::Relaxed) < MAX_PENDING_LOGS
        {
            let _ = logs.send(WorkerMessage::Log(record));
        } else {
            PENDING_LOGS.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

struct RecordVisitor<'a>(&'a mut LogRecord);

impl Visit for RecordVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let slot = match field.name() {
            "plugin" => &mut self.0.plugin,
            "runtime" => &mut self.0.runtime,
            "execution_id" => &mut self.0.execution_id,
            "plugin_target" => &mut self.0.plugin_target,
            "fields" => &mut self.0.fields,
            "message" => &mut self.0.message,
            _ => return,
        };
        value.clone_into(slot);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.message = format!("{value:?}");
        } else {
            self.record_str(field, &format!("{value:?}"));
        }
    }
}

type Out = mpsc::UnboundedSender<WorkerMessage>;

/// What the worker serves: its runtime, once created.
struct State {
    open: OpenLibrary,
    library: Option<Arc<dyn WorkerLibrary>>,
    runtime: Option<Result<Arc<RemoteRuntime>, RuntimeError>>,
    runtime_id: String,
    /// Running turns: number → how to stop it.
    turns: Arc<Mutex<HashMap<u64, TurnControl>>>,
}

struct TurnControl {
    cancel: Option<oneshot::Sender<()>>,
    credit: Option<Arc<Semaphore>>,
}

async fn serve(
    input: std::os::fd::OwnedFd,
    output: std::os::fd::OwnedFd,
    open: OpenLibrary,
) -> i32 {
    let (reader, writer) = match (
        tokio::net::unix::pipe::Receiver::from_owned_fd(input),
        tokio::net::unix::pipe::Sender::from_owned_fd(output),
    ) {
        (Ok(reader), Ok(writer)) => (reader, writer),
        (Err(error), _) | (_, Err(error)) => {
            report(&format!("the protocol descriptors are not pipes: {error}"));
            return 2;
        }
    };
    let mut frames = FramedRead::new(reader, codec());
    let mut sink = FramedWrite::new(writer, codec());
    let (out, mut outgoing) = mpsc::unbounded_channel::<WorkerMessage>();
    let _ = LOGS.set(out.clone());
    tokio::spawn(async move {
        while let Some(message) = outgoing.recv().await {
            let mut refused = false;
            let mut next = Some(message);
            // Everything queued goes in one write.
            while let Some(message) = next.take() {
                match &message {
                    WorkerMessage::Log(_) => {
                        PENDING_LOGS.fetch_sub(1, Ordering::Relaxed);
                    }
                    WorkerMessage::Refused { .. } => refused = true,
                    _ => {}
                }
                // Too large to cross: its turn or call ends with a named error instead.
                if let Some(frame) = worker_frame(message)
                    && sink.feed(frame).await.is_err()
                {
                    return;
                }
                next = outgoing.try_recv().ok();
            }
            if SinkExt::<bytes::Bytes>::flush(&mut sink).await.is_err() {
                return;
            }
            if refused {
                REFUSAL_WRITTEN.notify_one();
            }
        }
    });
    let _ = out.send(WorkerMessage::Hello {
        protocol: PROTOCOL_VERSION,
        pid: host_visible_pid(),
    });
    let mut state = State {
        open,
        library: None,
        runtime: None,
        runtime_id: String::new(),
        turns: Arc::default(),
    };
    while let Some(frame) = frames.next().await {
        let message = match frame.map_err(|e| e.to_string()).and_then(|f| decode(&f)) {
            Ok(message) => message,
            Err(error) => {
                report(&format!("the host sent {error}; stopping"));
                return 2;
            }
        };
        if let Some(code) = handle(&mut state, message, &out) {
            // The refusal is written before the worker exits.
            let _ = tokio::time::timeout(
                std::time::Duration::from_millis(500),
                REFUSAL_WRITTEN.notified(),
            )
            .await;
            return code;
        }
    }
    // The host closed its end (it ended, or let go of this worker).
    0
}

fn config_value(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).unwrap_or(Value::Null)
    }
}

/// Handles one message; `Some(code)` to stop.
fn handle(state: &mut State, message: HostMessage, out: &Out) -> Option<i32> {
    match message {
        HostMessage::Start {
            protocol,
            library,
            allow_insecure,
            log_level,
            checked,
        } => {
            set_level(log_level);
            if protocol != PROTOCOL_VERSION {
                let _ = out.send(WorkerMessage::Refused {
                    reason: format!(
                        "the host speaks worker protocol {protocol}, this worker {PROTOCOL_VERSION}: use the runtimes-worker of the host's runtime-loader version"
                    ),
                });
                return Some(2);
            }
            match (state.open)(&library, allow_insecure, checked.as_ref()) {
                Ok(library) => {
                    let _ = out.send(WorkerMessage::Ready {
                        plugin_name: library.plugin_name().to_owned(),
                        plugin_version: library.plugin_version().to_owned(),
                        identity: library.identity(),
                        sha256: library.sha256(),
                    });
                    state.library = Some(Arc::from(library));
                }
                Err(reason) => {
                    let _ = out.send(WorkerMessage::Refused { reason });
                    return Some(3);
                }
            }
        }
        HostMessage::Create { runtime, config } => {
            let created = match &state.library {
                None => Err(RuntimeError::internal("no library was loaded")),
                Some(library) => match library.instantiate(&runtime, &config_value(&config)) {
                    Err(reason) => Err(RuntimeError::internal(reason)),
                    Ok(created) => created,
                },
            };
            let created = created.map(Arc::new);
            let result = created
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|runtime| runtime.info());
            state.runtime_id = runtime;
            state.runtime = Some(created);
            let _ = out.send(WorkerMessage::Created { result });
        }
        HostMessage::Validate {
            call,
            runtime,
            config,
        } => {
            let result = match &state.library {
                None => Err(RuntimeError::internal("no library was loaded")),
                Some(library) => library
                    .validate_config(&runtime, &config_value(&config))
                    .unwrap_or_else(|reason| Err(RuntimeError::internal(reason))),
            };
            let _ = out.send(WorkerMessage::Reply {
                call,
                result: result.map(Reply::Problems),
            });
        }
        HostMessage::Turn {
            turn,
            request,
            stream,
            credit,
            log_level,
        } => {
            set_level(log_level);
            let runtime = match &state.runtime {
                Some(Ok(runtime)) => Arc::clone(runtime),
                Some(Err(error)) => {
                    let _ = out.send(WorkerMessage::Finished {
                        turn,
                        result: Err(error.clone()),
                    });
                    return None;
                }
                None => {
                    let _ = out.send(WorkerMessage::Finished {
                        turn,
                        result: Err(RuntimeError::internal("no runtime was created")),
                    });
                    return None;
                }
            };
            let (cancel, cancelled) = oneshot::channel();
            let credit = stream.then(|| Arc::new(Semaphore::new(credit as usize)));
            state
                .turns
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    turn,
                    TurnControl {
                        cancel: Some(cancel),
                        credit: credit.clone(),
                    },
                );
            let turns = Arc::clone(&state.turns);
            let out = out.clone();
            tokio::spawn(async move {
                let was_cancelled = match credit {
                    None => run_turn(turn, &runtime, request, cancelled, &out).await,
                    Some(credit) => {
                        run_stream(turn, &runtime, request, credit, cancelled, &out).await
                    }
                };
                turns
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&turn);
                if was_cancelled {
                    let _ = out.send(WorkerMessage::Ended { turn });
                }
            });
        }
        HostMessage::Credit { turn, amount } => {
            let turns = state.turns.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(credit) = turns.get(&turn).and_then(|t| t.credit.as_ref()) {
                credit.add_permits(amount.min(1 << 20) as usize);
            }
        }
        HostMessage::Cancel { turn } => {
            let control = state
                .turns
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_mut(&turn)
                .and_then(|t| t.cancel.take());
            // The turn's task says `Ended` once it has dropped the plugin's future.
            let reached = control.is_some_and(|cancel| cancel.send(()).is_ok());
            if !reached {
                let _ = out.send(WorkerMessage::Ended { turn });
            }
        }
        HostMessage::Call { call, what } => {
            let runtime = match &state.runtime {
                Some(Ok(runtime)) => Arc::clone(runtime),
                _ => {
                    let _ = out.send(WorkerMessage::Reply {
                        call,
                        result: Err(RuntimeError::internal("no runtime was created")),
                    });
                    return None;
                }
            };
            let out = out.clone();
            match what {
                Call::Supports { model } => {
                    let _ = out.send(WorkerMessage::Reply {
                        call,
                        result: runtime.supports(&model).map(Reply::Supports),
                    });
                }
                Call::Health => {
                    tokio::spawn(async move {
                        let result = runtime.health().await.map(Reply::Health);
                        let _ = out.send(WorkerMessage::Reply { call, result });
                    });
                }
                Call::Extension { name, payload } => {
                    tokio::spawn(async move {
                        let result = runtime
                            .extension(&name, &config_value(&payload))
                            .await
                            .map(|v| Reply::Extension(v.to_string()));
                        let _ = out.send(WorkerMessage::Reply { call, result });
                    });
                }
            }
        }
        HostMessage::Ping { seq } => {
            let _ = out.send(WorkerMessage::Pong { seq });
        }
    }
    None
}

/// Runs one turn; `true` when it was cancelled (its future is dropped by then).
async fn run_turn(
    turn: u64,
    runtime: &RemoteRuntime,
    request: runtime_api::TurnRequest,
    cancelled: oneshot::Receiver<()>,
    out: &Out,
) -> bool {
    let future = runtime.run_turn(request, TurnOptions::INLINE);
    tokio::select! {
        result = future => {
            let _ = out.send(WorkerMessage::Finished { turn, result: result.map(Some) });
            false
        }
        _ = cancelled => true,
    }
}

/// Streams one turn within the host's credit; `true` when it was cancelled.
async fn run_stream(
    turn: u64,
    runtime: &RemoteRuntime,
    request: runtime_api::TurnRequest,
    credit: Arc<Semaphore>,
    mut cancelled: oneshot::Receiver<()>,
    out: &Out,
) -> bool {
    let mut stream = match runtime.stream_turn(request, TurnOptions::INLINE) {
        Ok(stream) => stream,
        Err(error) => {
            let _ = out.send(WorkerMessage::Finished {
                turn,
                result: Err(error),
            });
            return false;
        }
    };
    loop {
        // Wait for a unit of credit (every item costs one), then for the first item, then for
        // the rest of its cost; take what else is ready within the credit left.
        let permit = tokio::select! {
            permit = credit.acquire() => permit,
            _ = &mut cancelled => return true,
        };
        let Ok(permit) = permit else { return false };
        permit.forget();
        let first = tokio::select! {
            item = stream.next() => item,
            _ = &mut cancelled => return true,
        };
        if let Some(Ok(item)) = &first {
            let more = credit_cost(item) - 1;
            if more > 0 {
                let permits = tokio::select! {
                    permits = credit.acquire_many(more) => permits,
                    _ = &mut cancelled => return true,
                };
                let Ok(permits) = permits else { return false };
                permits.forget();
            }
        }
        let mut items = Vec::new();
        let mut next = first;
        loop {
            match next {
                None => {
                    let _ = out.send(WorkerMessage::Finished {
                        turn,
                        result: Err(RuntimeError::internal(
                            "the runtime's stream ended without a final result",
                        )),
                    });
                    return false;
                }
                Some(Err(error)) => {
                    if !items.is_empty() {
                        let _ = out.send(WorkerMessage::Items { turn, items });
                    }
                    let _ = out.send(WorkerMessage::Finished {
                        turn,
                        result: Err(error),
                    });
                    return false;
                }
                Some(Ok(item)) => {
                    let done = matches!(item, StreamItem::Done(_));
                    items.push(item);
                    if done {
                        let _ = out.send(WorkerMessage::Items { turn, items });
                        return false;
                    }
                }
            }
            // Another item only if one is ready now and its whole cost is in the credit left.
            if credit.available_permits() == 0 {
                break;
            }
            match stream.next().now_or_never() {
                Some(Some(Ok(item))) => {
                    match credit.try_acquire_many(credit_cost(&item)) {
                        Ok(permits) => permits.forget(),
                        Err(_) => {
                            // Not enough credit for it: send what is batched, then this one
                            // once the credit comes.
                            let _ = out.send(WorkerMessage::Items { turn, items });
                            items = Vec::new();
                            let permits = tokio::select! {
                                permits = credit.acquire_many(credit_cost(&item)) => permits,
                                _ = &mut cancelled => return true,
                            };
                            let Ok(permits) = permits else { return false };
                            permits.forget();
                        }
                    }
                    next = Some(Ok(item));
                }
                Some(other) => next = other,
                None => break,
            }
        }
        let _ = out.send(WorkerMessage::Items { turn, items });
    }
}
