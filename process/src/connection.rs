//! One worker process: spawning it, the handshake, the link turns and calls go through, and
//! the task that dispatches what it sends.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::{SinkExt, StreamExt as _};
use runtime_api::{ErrorKind, RuntimeError, RuntimeInfo, StreamItem, TurnOutput};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::io::lock;
use crate::options::LibraryFile;
use crate::options::Spec;
use crate::plugin_log as log_bridge;
use crate::protocol::{
    CheckedFile, HostMessage, LIBRARY_FD, MAX_FRAME, PROTOCOL_VERSION, Reply, WorkerMessage, codec,
    config_text, decode, encode, too_large,
};
use crate::spawn::{command, describe_exit, env_names, find_worker};
use crate::stderr::{lines_of, read_stderr};
use crate::supervision::crash_error;

/// How long the host waits for the relay of a namespaced worker whose protocol ended to end
/// on its own (it follows the worker within milliseconds), before killing it.
const RELAY_EXIT: Duration = Duration::from_secs(2);

pub(crate) type CallSink = oneshot::Sender<Result<Reply, RuntimeError>>;

/// What the host and a worker's tasks share about it.
pub(crate) struct WorkerShared {
    /// The worker's process id as the host sees it (what it says in its hello; in a PID
    /// namespace, not the process the host started).
    pub(crate) pid: u32,
    /// The process the host started (the worker, or the relay of a namespaced worker), leader
    /// of the process group that is killed.
    pub(crate) group: u32,
    pub(crate) generation: u64,
    /// Not yet reaped (so its process id is still its own).
    pub(crate) alive: AtomicBool,
    /// Still taking turns: false once it is being killed or has stopped talking.
    pub(crate) usable: AtomicBool,
    pub(crate) calls: Mutex<HashMap<u64, CallSink>>,
    /// Turns cancelled and not yet let go of by the plugin.
    pub(crate) cancelling: Mutex<HashSet<u64>>,
    pub(crate) pongs: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    /// Why the host killed it, when it did.
    pub(crate) kill_reason: Mutex<Option<String>>,
    /// The host stopped it for its own reasons (a turn that did not let go after a cancel or
    /// a timeout, a ping unanswered), not for a fault of the plugin's seen on the wire: not a
    /// crash for the failed mark.
    pub(crate) host_ordered: AtomicBool,
}

impl WorkerShared {
    /// Stops the worker for the host's own reasons (see `host_ordered`), saying why.
    pub(crate) fn stop(&self, reason: String) {
        if self.alive.load(Ordering::Acquire) && lock(&self.kill_reason).is_none() {
            self.host_ordered.store(true, Ordering::Release);
        }
        self.kill(reason);
    }

    /// Kills the worker's process group, saying why (the first reason is kept).
    pub(crate) fn kill(&self, reason: String) {
        self.usable.store(false, Ordering::Release);
        if !self.alive.load(Ordering::Acquire) {
            return;
        }
        lock(&self.kill_reason).get_or_insert(reason);
        #[cfg(unix)]
        if let Some(pid) = rustix::process::Pid::from_raw(self.group as i32) {
            #[cfg(target_os = "linux")]
            crate::sandbox::descendants::end_of(pid);
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// A running worker: where to send messages.
#[derive(Clone)]
pub(crate) struct Link {
    pub(crate) tx: mpsc::UnboundedSender<HostMessage>,
    pub(crate) worker: Arc<WorkerShared>,
}

/// Sends a call and waits for its answer (or the worker's death).
pub(crate) async fn call_on(
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
pub(crate) async fn ping(link: &Link, grace: Duration) -> Result<(), RuntimeError> {
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
            link.worker.stop(reason.clone());
            Err(RuntimeError::new(ErrorKind::Crashed, reason))
        }
    }
}

/// What a worker's link reports to the runtime it serves (its turn table), so this module
/// needs nothing of the runtime's.
pub(crate) trait LinkEvents: Send + Sync {
    /// A new worker is up: supervise it.
    fn started(self: Arc<Self>, generation: u64);
    /// Stream items for a turn; `false` when the worker sent more than it was granted.
    fn items(&self, turn: u64, items: Vec<StreamItem>) -> bool;
    /// A turn's result.
    fn finished(&self, turn: u64, result: Result<Option<TurnOutput>, RuntimeError>);
    /// The worker is gone: every turn and call on it ends with `error`.
    fn died(&self, worker: &WorkerShared, error: RuntimeError);
}

/// What a worker reports it loaded must be what the host checked: the same plugin, the same
/// file (device, inode, size, times) and, when pinned, the pinned hash.
fn check_ready(
    spec: &Spec,
    checked: &LibraryFile,
    plugin_name: &str,
    plugin_version: &str,
    identity: Option<runtime_discovery::security::Identity>,
    sha256: Option<String>,
) -> Result<(), RuntimeError> {
    let refuse = |what: String| {
        Err(RuntimeError::internal(format!(
            "the worker loaded something other than the checked plugin library {}: {what}",
            spec.library.display()
        ))
        .with_metadata(serde_json::json!({"reject": "changed"})))
    };
    if plugin_name != checked.plugin_name || plugin_version != checked.plugin_version {
        return refuse(format!(
            "it reports plugin {} {}, the checked manifest declares {} {}",
            runtime_text::clean(plugin_name),
            runtime_text::clean(plugin_version),
            runtime_text::clean(&checked.plugin_name),
            runtime_text::clean(&checked.plugin_version)
        ));
    }
    match identity {
        Some(identity) if identity == checked.identity => {}
        Some(identity) => return refuse(checked.identity.difference(&identity)),
        None => return refuse("it did not say which file it loaded".to_owned()),
    }
    if let Some(pin) = &checked.pin {
        match sha256 {
            Some(found) if found == pin.expected => {}
            Some(found) => {
                return refuse(format!(
                    "its sha256 is {}, pinned {}",
                    runtime_text::clean(&found),
                    pin.expected
                ));
            }
            None => return refuse("it did not hash the pinned file".to_owned()),
        }
    }
    Ok(())
}

/// Starts a worker, loads its library and, when `create`, creates its runtime; reports to
/// `events` (nothing when it is gone or was never there: a one-off worker).
pub(crate) async fn start_with<E: LinkEvents + 'static>(
    spec: &Spec,
    create: bool,
    inner: Weak<E>,
    generation: u64,
) -> Result<(Link, Option<RuntimeInfo>), RuntimeError> {
    let options = &spec.options;
    let worker_path = find_worker(options).map_err(RuntimeError::unavailable)?;
    if let Some(error) = &spec.refused {
        return Err(RuntimeError::unavailable(format!(
            "runtime `{}` cannot run at the process level: {error}",
            spec.runtime_id
        ))
        .with_metadata(serde_json::json!({"error": "sandbox_unenforceable"})));
    }
    // Fail closed: a spec whose sandbox is on but has no policy (its fields are public) starts
    // no worker.
    if spec.options.sandbox && spec.policy.is_none() {
        return Err(RuntimeError::internal(format!(
            "runtime `{}`: the sandbox is on but the worker has no policy",
            spec.runtime_id
        )));
    }
    let mut names = Vec::new();
    env_names(&spec.config, &mut names);
    if let Some(policy) = &spec.policy {
        names.extend(policy.env.iter().cloned());
    }
    names.extend(options.pass_env.iter().map(|name| (*name).to_owned()));
    names.retain(|name| spec.passes_env(name));
    // Every name is in `names` now, denials applied.
    let options = &crate::options::ProcessOptions {
        pass_env: &[],
        ..*options
    };
    let library_fd = spec.checked.as_ref().map(|c| {
        use std::os::fd::AsRawFd;
        c.file.as_raw_fd()
    });
    if let Some(policy) = &spec.policy {
        crate::sandbox::check_support(policy).map_err(|e| {
            RuntimeError::unavailable(format!(
                "runtime `{}` cannot run at the process level: {e}",
                spec.runtime_id
            ))
            .with_metadata(serde_json::json!({"error": "sandbox_unsupported"}))
        })?;
        crate::sandbox::protect_host();
    }
    let mut child = command(
        &worker_path,
        options,
        &names,
        library_fd,
        spec.policy.as_ref(),
    )
    .map_err(RuntimeError::internal)?
    .spawn()
    .map_err(|e| {
        RuntimeError::unavailable(format!(
            "could not start the worker {}: {e}",
            worker_path.display()
        ))
    })?;
    let pid = child.id().unwrap_or(0);
    // The worker's own pid, from its hello (the same as `pid` unless it is namespaced).
    let worker_pid = std::sync::atomic::AtomicU32::new(pid);
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(RuntimeError::internal("the worker's pipes were not set up"));
    };
    let (tail, stderr_task) = read_stderr(stderr, spec.runtime_id.clone(), pid);
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
        checked: spec.checked.as_ref().map(|c| CheckedFile {
            fd: LIBRARY_FD,
            identity: c.identity,
            pin: c.pin.clone(),
        }),
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
                WorkerMessage::Hello { pid, .. } => {
                    worker_pid.store(pid, Ordering::Relaxed);
                }
                WorkerMessage::Log(_) => {}
                WorkerMessage::Refused { reason } => {
                    return Err(RuntimeError::internal(format!(
                        "the worker refused the plugin library {}: {reason}",
                        spec.library.display()
                    )));
                }
                WorkerMessage::Ready {
                    plugin_name,
                    plugin_version,
                    identity,
                    sha256,
                } => {
                    if let Some(checked) = &spec.checked {
                        check_ready(
                            spec,
                            checked,
                            &plugin_name,
                            &plugin_version,
                            identity,
                            sha256,
                        )?;
                    }
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
            // A namespaced worker that ended: its relay ends as it did, a moment later.
            let namespaced = worker_pid.load(Ordering::Relaxed) != pid;
            let mut status = None;
            if namespaced && matches!(failed, Ok(Ok(Err(())))) {
                status = tokio::time::timeout(RELAY_EXIT, child.wait()).await.ok();
            }
            let status = match status {
                Some(status) => status,
                None => {
                    // The worker's whole group and what its plugin started, not only its own
                    // pid: a library's constructors run before the handshake ends.
                    #[cfg(unix)]
                    if let Some(group) = rustix::process::Pid::from_raw(pid as i32) {
                        #[cfg(target_os = "linux")]
                        crate::sandbox::descendants::end_of(group);
                        let _ = rustix::process::kill_process_group(
                            group,
                            rustix::process::Signal::KILL,
                        );
                    }
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            finish_or_abort(stderr_task, Duration::from_secs(1)).await;
            let tail = lines_of(&tail);
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
    let group = pid;
    let pid = worker_pid.into_inner();
    let worker = Arc::new(WorkerShared {
        pid,
        group,
        generation,
        alive: AtomicBool::new(true),
        usable: AtomicBool::new(true),
        calls: Mutex::default(),
        cancelling: Mutex::default(),
        pongs: Mutex::default(),
        kill_reason: Mutex::default(),
        host_ordered: AtomicBool::new(false),
    });
    let (tx, mut outgoing) = mpsc::unbounded_channel::<HostMessage>();
    {
        let events = inner.clone();
        let worker = Arc::clone(&worker);
        tokio::spawn(async move {
            while let Some(message) = outgoing.recv().await {
                let mut next = Some(message);
                // Everything queued goes in one write.
                while let Some(message) = next.take() {
                    if let Some(frame) = host_frame(&message, &events, &worker)
                        && sink.feed(frame).await.is_err()
                    {
                        return;
                    }
                    next = outgoing.try_recv().ok();
                }
                if SinkExt::<bytes::Bytes>::flush(&mut sink).await.is_err() {
                    return;
                }
            }
            // Every sender is gone: closing stdin tells the worker to exit.
        });
    }
    let link = Link {
        tx,
        worker: Arc::clone(&worker),
    };
    let spec = spec.clone();
    if let Some(events) = inner.upgrade() {
        events.started(generation);
    }
    tokio::spawn(async move {
        read_worker(&mut frames, &inner, &worker).await;
        worker.usable.store(false, Ordering::Release);
        // A namespaced worker that ended: its relay ends as it did (exit code or signal), a
        // moment later, and everything else in its namespace with its init. Not killed, so
        // that its crash is not reported as a SIGKILL.
        let mut status = None;
        if worker.pid != worker.group && lock(&worker.kill_reason).is_none() {
            status = tokio::time::timeout(RELAY_EXIT, child.wait()).await.ok();
        }
        let status = match status {
            Some(status) => status,
            None => {
                // The worker closed its end, broke the protocol, or died: make sure it is gone.
                worker.kill(String::new());
                child.wait().await
            }
        };
        worker.alive.store(false, Ordering::Release);
        finish_or_abort(stderr_task, Duration::from_secs(1)).await;
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
        let tail = lines_of(&tail);
        let error = crash_error(&spec, pid, &how, &tail);
        let calls: Vec<CallSink> = lock(&worker.calls).drain().map(|(_, c)| c).collect();
        for sender in calls {
            let _ = sender.send(Err(error.clone()));
        }
        lock(&worker.pongs).clear();
        inner.died(&worker, error);
    });
    Ok((link, info))
}

/// A message for the worker as a frame, or `None` when it is too large to cross: then the
/// turn or call it carries ends at once with a named error, and the worker is not touched.
fn host_frame<E: LinkEvents>(
    message: &HostMessage,
    events: &Weak<E>,
    worker: &WorkerShared,
) -> Option<bytes::Bytes> {
    let frame = encode(message).ok()?;
    if frame.len() <= MAX_FRAME {
        return Some(frame);
    }
    match message {
        HostMessage::Turn { turn, .. } => {
            if let Some(events) = events.upgrade() {
                events.finished(*turn, Err(too_large("the turn's request", frame.len())));
            }
        }
        HostMessage::Call { call, .. } | HostMessage::Validate { call, .. } => {
            if let Some(sender) = lock(&worker.calls).remove(call) {
                let _ = sender.send(Err(too_large("the call", frame.len())));
            }
        }
        _ => {}
    }
    None
}

/// Dispatches a worker's messages until it stops sending.
pub(crate) async fn read_worker<R: tokio::io::AsyncRead + Unpin, E: LinkEvents>(
    frames: &mut FramedRead<R, tokio_util::codec::LengthDelimitedCodec>,
    inner: &Weak<E>,
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
                let Some(events) = inner.upgrade() else {
                    continue;
                };
                if !events.items(turn, items) {
                    worker.kill(
                        "the host killed it: it sent more stream items than it was granted"
                            .to_owned(),
                    );
                    return;
                }
            }
            WorkerMessage::Finished { turn, result } => {
                if let Some(events) = inner.upgrade() {
                    events.finished(turn, result);
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

/// Waits up to `limit` for `task` to end (a dead worker's stderr to be read to its end); then
/// aborts it, so a descendant still holding the pipe open cannot keep the task alive.
async fn finish_or_abort(mut task: tokio::task::JoinHandle<()>, limit: Duration) {
    if tokio::time::timeout(limit, &mut task).await.is_err() {
        task.abort();
    }
}
