//! `agent_runtimes._native`: the loader (`runtime-loader`) as a Python extension module.
//!
//! The Python package `agent_runtimes` re-exports what is here and adds the exception classes
//! (`agent_runtimes._errors`), the command (`python -m agent_runtimes`) and the registry
//! adapters. Every turn runs on the tokio runtime of `pyo3-async-runtimes` with the GIL
//! released; the awaitables and iterators handed to Python own the Rust futures and streams,
//! so dropping them (a cancelled task, a closed iterator, a `KeyboardInterrupt` in a blocking
//! call) drops the turn, which the loader cancels inside the plugin.
//!
//! Longer than 700 lines for now: the registry class, its turn methods and the awaitables and
//! streams they return share the bridge's state; the next cut is the turn awaitables and
//! streams into a module of their own.
#![forbid(unsafe_code)]
// The loader's errors carry structured reasons and are returned on cold paths (as in the loader).
#![allow(clippy::result_large_err)]

mod convert;
mod errors;
mod logging;
mod types;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use futures::StreamExt;
use pyo3::exceptions::{PyStopAsyncIteration, PyStopIteration, PyValueError};
use pyo3::prelude::*;
use runtime_api::{RuntimeError, StreamItem, TurnOutput, TurnRequest};
use runtime_loader::{
    Isolation, LoaderOptions, RuntimeHandle, Runtimes, SearchPath, TurnContext, TurnHook,
};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::errors::{resolve_error, runtime_error};
use crate::types::{PyDelta, PyDiscoveryReport, PyRuntimeInfo, PyTurnOutput, PyTurnRequest};

/// How often a blocking call wakes to let Python handle signals (`KeyboardInterrupt`).
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// Awaitables handed to Python whose Rust future has not finished yet.
static IN_FLIGHT: AtomicU64 = AtomicU64::new(0);

/// `pyo3_async_runtimes::tokio::future_into_py`, counted in [`IN_FLIGHT`] so that the exit
/// hook can wait for the bridge's threads to deliver their results before the interpreter is
/// finalized (a thread that takes the GIL during finalization aborts the process:
/// PyO3/pyo3-async-runtimes#40).
fn into_py<'py, F, T>(py: Python<'py>, future: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    struct Counted;
    impl Drop for Counted {
        fn drop(&mut self) {
            IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
        }
    }
    IN_FLIGHT.fetch_add(1, Ordering::AcqRel);
    let counted = Counted;
    pyo3_async_runtimes::tokio::future_into_py(py, async move {
        let _counted = counted;
        future.await
    })
}

/// Called at interpreter exit (`atexit`): stops forwarding log events, then waits (GIL
/// released, at most `timeout` seconds) until no awaitable's result is still being delivered.
#[pyfunction]
#[pyo3(signature = (timeout=2.0))]
fn _shutdown(py: Python<'_>, timeout: f64) {
    logging::stop();
    let timeout = if timeout.is_finite() {
        timeout.clamp(0.0, 60.0)
    } else {
        2.0
    };
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(timeout);
    py.detach(|| {
        while IN_FLIGHT.load(Ordering::Acquire) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        // The last results' threads may still hold or wait for the GIL for a moment.
        std::thread::sleep(Duration::from_millis(20));
    });
}

/// A coroutine that calls `start(*args)` (which returns an asyncio future) on the running
/// loop and awaits it: `agent_runtimes._aio.awaitable`.
fn coroutine<'py>(
    py: Python<'py>,
    start: Bound<'py, PyAny>,
    args: Vec<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut all = vec![start];
    all.extend(args);
    PyModule::import(py, "agent_runtimes._aio")?
        .getattr("awaitable")?
        .call1(pyo3::types::PyTuple::new(py, all)?)
}

/// Counts turns as the loader's hooks see them.
#[derive(Default)]
struct Counts {
    started: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    timed_out: AtomicU64,
}

impl TurnHook for Counts {
    fn before_turn(&self, _turn: &TurnContext, _request: &TurnRequest) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    fn after_turn(&self, _turn: &TurnContext, _output: &TurnOutput) {
        self.completed.fetch_add(1, Ordering::Relaxed);
    }

    fn on_error(&self, _turn: &TurnContext, error: &RuntimeError) {
        let counter = match error.kind.as_str() {
            "cancelled" => &self.cancelled,
            "timeout" => &self.timed_out,
            _ => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Seconds from Python as a `Duration`; `None` stays `None`.
fn duration(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(seconds) if seconds.is_finite() && seconds > 0.0 => {
            Duration::try_from_secs_f64(seconds)
                .map(Some)
                .map_err(|e| PyValueError::new_err(format!("timeout: {e}")))
        }
        Some(seconds) => Err(PyValueError::new_err(format!(
            "timeout must be a positive number of seconds, not {seconds}"
        ))),
    }
}

fn isolation(name: &str) -> PyResult<Isolation> {
    name.parse::<Isolation>()
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Runs a future to completion on the shared tokio runtime with the GIL released, waking every
/// [`SIGNAL_POLL`] to run Python's signal handlers: an exception there (`KeyboardInterrupt`)
/// drops the future, which cancels the turn.
fn block_on<T: Send>(
    py: Python<'_>,
    mut future: Pin<Box<dyn Future<Output = T> + Send + '_>>,
) -> PyResult<T> {
    if tokio::runtime::Handle::try_current().is_ok() {
        // Python code running on one of the runtime's own threads (a log handler...): a
        // blocking call there would deadlock, and tokio refuses it with a panic.
        return Err(pyo3::exceptions::PyRuntimeError::new_err(
            "a blocking agent_runtimes call cannot run on the package's own runtime threads: await the async form",
        ));
    }
    let runtime = pyo3_async_runtimes::tokio::get_runtime();
    loop {
        let polled = py.detach(|| {
            runtime.block_on(async { tokio::time::timeout(SIGNAL_POLL, future.as_mut()).await })
        });
        match polled {
            Ok(value) => return Ok(value),
            Err(_elapsed) => py.check_signals()?,
        }
    }
}

/// A registry of agent runtimes: the plugin folders searched, what was found there, and the
/// runtimes resolved from it.
///
/// `Runtimes(plugin_dirs=None, isolation=None, allow_insecure=None, standard_dirs=True)`
/// searches `plugin_dirs` in order, then (with `standard_dirs`) the folders of
/// `AGENT_RUNTIMES_PATH` and the user's plugin folder, exactly as the `runtimes` command does.
/// Discovery reads the libraries' manifests only (no plugin code runs) and happens once here;
/// `discover()` scans again. `isolation` is `"inline"`, `"threads"` (the default) or
/// `"process"`; `None` takes `AGENT_RUNTIMES_ISOLATION`.
#[pyclass(name = "Runtimes", module = "agent_runtimes", frozen)]
struct PyRuntimes {
    inner: Arc<Runtimes>,
    search: SearchPath,
    counts: Arc<Counts>,
}

impl PyRuntimes {
    fn handle(&self, py: Python<'_>, name: &str, timeout: Option<f64>) -> PyResult<RuntimeHandle> {
        let timeout = duration(timeout)?;
        let handle = py
            .detach(|| self.inner.resolve(name))
            .map_err(|e| resolve_error(py, &e))?;
        Ok(match timeout {
            Some(timeout) => handle.with_timeout(timeout),
            None => handle,
        })
    }
}

#[pymethods]
impl PyRuntimes {
    #[new]
    #[pyo3(signature = (plugin_dirs=None, isolation=None, allow_insecure=None, standard_dirs=true))]
    fn new(
        py: Python<'_>,
        plugin_dirs: Option<Vec<PathBuf>>,
        isolation: Option<&str>,
        allow_insecure: Option<bool>,
        standard_dirs: bool,
    ) -> PyResult<Self> {
        logging::refresh_level(py);
        let mut options = LoaderOptions::from_env();
        if let Some(level) = isolation {
            options = options.with_isolation(crate::isolation(level)?);
        }
        if let Some(allow) = allow_insecure {
            options = options.with_allow_insecure(allow);
        }
        let dirs = plugin_dirs.unwrap_or_default();
        let search = if standard_dirs {
            SearchPath::standard(dirs)
        } else {
            dirs.into_iter()
                .fold(SearchPath::empty(), |search, dir| search.with_dir(dir))
        };
        let inner = Arc::new(Runtimes::with_options(options));
        let counts = Arc::new(Counts::default());
        inner.add_hook(counts.clone());
        py.detach(|| inner.discover(&search));
        Ok(Self {
            inner,
            search,
            counts,
        })
    }

    /// Scans the plugin folders again and registers what is new; returns this pass's report
    /// (folders searched, files refused and why, names shadowed). No plugin code runs.
    fn discover(&self, py: Python<'_>) -> PyDiscoveryReport {
        let report = py.detach(|| self.inner.discover(&self.search));
        PyDiscoveryReport::from(&report)
    }

    /// The report of every discovery pass of this registry.
    fn report(&self) -> PyDiscoveryReport {
        PyDiscoveryReport::from(&self.inner.report())
    }

    /// Every runtime that can be resolved, sorted by id.
    fn list(&self) -> Vec<PyRuntimeInfo> {
        self.inner
            .list_runtimes()
            .iter()
            .map(PyRuntimeInfo::from)
            .collect()
    }

    /// The ids of the runtimes that can be resolved (their aliases are on `list()`).
    fn names(&self) -> Vec<String> {
        self.inner.list_names()
    }

    /// The runtime with this id or alias, or `None`. Reads the manifest only: nothing is loaded.
    fn info(&self, name: &str) -> Option<PyRuntimeInfo> {
        self.inner.get_entry(name).as_ref().map(PyRuntimeInfo::from)
    }

    /// Whether `name` is the id or an alias of a registered runtime.
    fn __contains__(&self, name: &str) -> bool {
        self.inner.is_registered(name)
    }

    /// The runtime `name` (an id or an alias), loaded and created on first use.
    ///
    /// Fails closed: an unknown name raises `NotFound` (with the closest name and what is
    /// available), a refused plugin `Rejected` with the reason, a runtime whose workers kept
    /// crashing `Failed`, and a factory's error its own kind.
    #[pyo3(signature = (name, timeout=None))]
    fn resolve(&self, py: Python<'_>, name: &str, timeout: Option<f64>) -> PyResult<PyRuntime> {
        Ok(PyRuntime {
            handle: self.handle(py, name, timeout)?,
        })
    }

    /// A new instance of runtime `name` created with `config` (a JSON-like value), beside the
    /// shared one `resolve` returns.
    #[pyo3(signature = (name, config=None, timeout=None))]
    fn new_instance(
        &self,
        py: Python<'_>,
        name: &str,
        config: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<PyRuntime> {
        let config = config
            .map(convert::to_json)
            .transpose()?
            .unwrap_or_default();
        let timeout = duration(timeout)?;
        let handle = py
            .detach(|| self.inner.new_instance(name, &config))
            .map_err(|e| resolve_error(py, &e))?;
        let handle = match timeout {
            Some(timeout) => handle.with_timeout(timeout),
            None => handle,
        };
        Ok(PyRuntime { handle })
    }

    /// The problems of `config` for runtime `name` (an empty list when it is valid), checked
    /// without creating the runtime.
    fn validate_config(
        &self,
        py: Python<'_>,
        name: &str,
        config: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<String>> {
        let config = convert::to_json(config)?;
        py.detach(|| self.inner.validate_config(name, &config))
            .map_err(|e| resolve_error(py, &e))
    }

    /// Sets the isolation level (`"inline"`, `"threads"` or `"process"`) of runtime `name`
    /// before it is first resolved.
    fn set_isolation(&self, name: &str, level: &str) -> PyResult<()> {
        self.inner
            .set_isolation(name, isolation(level)?)
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// Runs one turn of runtime `name` and returns an awaitable of its `TurnOutput`.
    ///
    /// `request` is a prompt (`str`) or a `TurnRequest`; `timeout` in seconds ends the turn
    /// with `Timeout`. Cancelling the awaiting task cancels the turn inside the plugin.
    #[pyo3(signature = (name, request, timeout=None))]
    fn run_turn<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        request: &Bound<'py, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let runtime = Bound::new(py, self.resolve(py, name, timeout)?)?;
        coroutine(py, runtime.getattr("_start_turn")?, vec![request.clone()])
    }

    /// `run_turn`, blocking the calling thread (with the GIL released) until the turn ends.
    /// Ctrl-C cancels the turn and raises `KeyboardInterrupt`.
    #[pyo3(signature = (name, request, timeout=None))]
    fn run_turn_blocking(
        &self,
        py: Python<'_>,
        name: &str,
        request: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<PyTurnOutput> {
        self.resolve(py, name, timeout)?
            .run_turn_blocking(py, request, None)
    }

    /// Streams one turn of runtime `name`: returns a `TurnStream`, an async (and blocking)
    /// iterator of `Delta`s whose `output` is the final `TurnOutput` once it is exhausted.
    #[pyo3(signature = (name, request, timeout=None))]
    fn stream_turn(
        &self,
        py: Python<'_>,
        name: &str,
        request: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<PyTurnStream> {
        self.resolve(py, name, timeout)?.stream_turn(request, None)
    }

    /// Turn counts since this registry was created, as its hooks saw them: `started`,
    /// `completed`, `failed`, `cancelled`, `timed_out`.
    fn turn_counts(&self) -> std::collections::BTreeMap<&'static str, u64> {
        let c = &self.counts;
        [
            ("started", &c.started),
            ("completed", &c.completed),
            ("failed", &c.failed),
            ("cancelled", &c.cancelled),
            ("timed_out", &c.timed_out),
        ]
        .into_iter()
        .map(|(name, n)| (name, n.load(Ordering::Relaxed)))
        .collect()
    }

    /// Waits (blocking, up to `timeout` seconds) until no turn of the resolved runtimes still
    /// runs inside a plugin; `True` when idle. A host about to exit calls this.
    #[pyo3(signature = (timeout=5.0))]
    fn wait_idle(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let limit = duration(Some(timeout))?.unwrap_or_default();
        let inner = self.inner.clone();
        block_on(
            py,
            Box::pin(async move { tokio::time::timeout(limit, inner.wait_idle()).await.is_ok() }),
        )
    }

    fn __repr__(&self) -> String {
        format!("<Runtimes {}>", self.inner.list_names().join(", "))
    }
}

/// One runtime, resolved: what `Runtimes.resolve` returns. Cheap to keep; every call goes to
/// the same runtime object.
#[pyclass(name = "Runtime", module = "agent_runtimes", frozen)]
struct PyRuntime {
    handle: RuntimeHandle,
}

impl PyRuntime {
    fn timed(&self, timeout: Option<f64>) -> PyResult<RuntimeHandle> {
        Ok(match duration(timeout)? {
            Some(timeout) => self.handle.with_timeout(timeout),
            None => self.handle.clone(),
        })
    }
}

#[pymethods]
impl PyRuntime {
    /// The runtime's id.
    #[getter]
    fn id(&self) -> String {
        self.handle.id().to_owned()
    }

    /// The isolation level it runs at: `"inline"`, `"threads"` or `"process"`.
    #[getter]
    fn isolation(&self) -> &'static str {
        self.handle.isolation().as_str()
    }

    /// Its capabilities' names (`"streaming"`, `"tools"`...).
    #[getter]
    fn capabilities(&self) -> Vec<String> {
        self.handle.capabilities().names()
    }

    /// The turn timeout in seconds of this handle, or `None`.
    #[getter]
    fn timeout(&self) -> Option<f64> {
        self.handle.timeout().map(|d| d.as_secs_f64())
    }

    /// The same runtime with a turn timeout of `timeout` seconds.
    fn with_timeout(&self, timeout: f64) -> PyResult<PyRuntime> {
        Ok(PyRuntime {
            handle: self.timed(Some(timeout))?,
        })
    }

    /// The runtime's own description of itself (`id`, `display_name`, `description`,
    /// `version`, `capabilities`, `metadata`) as a dict.
    fn describe(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let info = self.handle.info().map_err(|e| runtime_error(py, &e))?;
        let value = serde_json::json!({
            "id": info.id,
            "display_name": info.display_name,
            "description": info.description,
            "version": info.version,
            "capabilities": info.capabilities.names(),
            "metadata": info.metadata,
        });
        convert::to_py(py, &value)
    }

    /// Whether the runtime serves `model`.
    fn supports(&self, py: Python<'_>, model: &str) -> PyResult<bool> {
        self.handle
            .supports(model)
            .map_err(|e| runtime_error(py, &e))
    }

    /// The problems of `config` for this runtime (empty when valid).
    fn validate_config(&self, py: Python<'_>, config: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
        let config = convert::to_json(config)?;
        self.handle
            .validate_config(&config)
            .map_err(|e| runtime_error(py, &e))
    }

    /// An awaitable of the runtime's health text; raises its error when it cannot serve.
    fn health<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        coroutine(slf.py(), slf.getattr("_start_health")?, vec![])
    }

    /// The asyncio future of `health` (needs a running loop).
    fn _start_health<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let handle = self.handle.clone();
        into_py(py, async move {
            handle
                .health()
                .await
                .map_err(|e| Python::attach(|py| runtime_error(py, &e)))
        })
    }

    /// Cancels the running turns with this execution id; `True` if one was running.
    fn cancel(&self, py: Python<'_>, execution_id: &str) -> PyResult<bool> {
        self.handle
            .cancel(execution_id)
            .map_err(|e| runtime_error(py, &e))
    }

    /// An awaitable of the `TurnOutput` of one turn (`request`: a prompt or a `TurnRequest`).
    /// Cancelling the awaiting task cancels the turn inside the plugin.
    #[pyo3(signature = (request, timeout=None))]
    fn run_turn<'py>(
        slf: &Bound<'py, Self>,
        request: &Bound<'py, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let timeout = pyo3::IntoPyObjectExt::into_bound_py_any(timeout, py)?;
        coroutine(
            py,
            slf.getattr("_start_turn")?,
            vec![request.clone(), timeout],
        )
    }

    /// The asyncio future of a turn (needs a running loop): what `run_turn` awaits.
    #[pyo3(signature = (request, timeout=None))]
    fn _start_turn<'py>(
        &self,
        py: Python<'py>,
        request: &Bound<'py, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let request = PyTurnRequest::take(request)?;
        let mut turn = Box::pin(self.timed(timeout)?.run_turn(request));
        // A turn that is ready at once (the inline level, a runtime that does not wait) is
        // answered here, without the bridge's two thread hops: polled once, inside the
        // runtime's context, with a waker that does nothing (the next poll, if any, brings the
        // bridge's own).
        let first = {
            let _context = pyo3_async_runtimes::tokio::get_runtime().enter();
            let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
            turn.as_mut().poll(&mut cx)
        };
        if let std::task::Poll::Ready(result) = first {
            let future = PyModule::import(py, "asyncio")?
                .call_method0("get_running_loop")?
                .call_method0("create_future")?;
            match result {
                Ok(output) => future.call_method1("set_result", (PyTurnOutput::from(output),))?,
                Err(e) => {
                    future.call_method1("set_exception", (runtime_error(py, &e).into_value(py),))?
                }
            };
            return Ok(future);
        }
        into_py(py, async move {
            match turn.await {
                Ok(output) => Ok(PyTurnOutput::from(output)),
                Err(e) => Err(Python::attach(|py| runtime_error(py, &e))),
            }
        })
    }

    /// One turn, blocking the calling thread with the GIL released. Ctrl-C cancels it.
    #[pyo3(signature = (request, timeout=None))]
    fn run_turn_blocking(
        &self,
        py: Python<'_>,
        request: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<PyTurnOutput> {
        let request = PyTurnRequest::take(request)?;
        let handle = self.timed(timeout)?;
        let result = block_on(py, Box::pin(async move { handle.run_turn(request).await }))?;
        result
            .map(PyTurnOutput::from)
            .map_err(|e| runtime_error(py, &e))
    }

    /// A `TurnStream` of one turn: iterate it with `async for` (or `for`) to get `Delta`s.
    #[pyo3(signature = (request, timeout=None))]
    fn stream_turn(
        &self,
        request: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<PyTurnStream> {
        let request = PyTurnRequest::take(request)?;
        let stream = self.timed(timeout)?.stream_turn(request);
        Ok(PyTurnStream::new(stream))
    }

    fn __repr__(&self) -> String {
        format!(
            "<Runtime {} ({})>",
            self.handle.id(),
            self.handle.isolation().as_str()
        )
    }
}

type Slot = Arc<Mutex<Option<runtime_loader::TurnStream>>>;

/// A streamed turn: an async iterator (`async for delta in stream`) and a blocking iterator
/// (`for delta in stream`) of `Delta`s. Once exhausted, `output` holds the final `TurnOutput`.
/// Closing it (`aclose()`, `close()`, leaving `async with`), cancelling the task that awaits
/// it, or dropping it cancels the turn inside the plugin.
#[pyclass(name = "TurnStream", module = "agent_runtimes", frozen)]
struct PyTurnStream {
    slot: Slot,
    /// Set by `close`/`aclose`: ends an item being awaited at once.
    closed: tokio::sync::watch::Sender<bool>,
    output: Arc<StdMutex<Option<TurnOutput>>>,
    execution_id: String,
}

/// The stream's slot, locked while one item is awaited: if the awaiting future is dropped
/// before the item arrives (its task was cancelled), the stream is dropped too, which cancels
/// the turn.
struct Pending {
    guard: OwnedMutexGuard<Option<runtime_loader::TurnStream>>,
    settled: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.settled {
            *self.guard = None;
        }
    }
}

/// What one step of a stream gives.
enum Step {
    Delta(runtime_api::Delta),
    End,
    Failed(RuntimeError),
}

async fn next_step(
    slot: Slot,
    output: Arc<StdMutex<Option<TurnOutput>>>,
    mut closed: tokio::sync::watch::Receiver<bool>,
) -> Step {
    let mut pending = Pending {
        guard: slot.lock_owned().await,
        settled: false,
    };
    let step = loop {
        let Some(stream) = pending.guard.as_mut() else {
            break Step::End;
        };
        let item = tokio::select! {
            item = stream.next() => item,
            _ = closed.wait_for(|closed| *closed) => None,
        };
        match item {
            Some(Ok(StreamItem::Delta(delta))) => break Step::Delta(delta),
            Some(Ok(StreamItem::Done(done))) => {
                *output.lock().unwrap_or_else(|e| e.into_inner()) = Some(done);
                *pending.guard = None;
                break Step::End;
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => {
                *pending.guard = None;
                break Step::Failed(error);
            }
            None => {
                *pending.guard = None;
                break Step::End;
            }
        }
    };
    pending.settled = true;
    step
}

impl PyTurnStream {
    fn new(stream: runtime_loader::TurnStream) -> Self {
        Self {
            execution_id: stream.execution_id().to_owned(),
            slot: Arc::new(Mutex::new(Some(stream))),
            closed: tokio::sync::watch::channel(false).0,
            output: Arc::new(StdMutex::new(None)),
        }
    }
}

#[pymethods]
impl PyTurnStream {
    /// The turn's execution id (for `Runtime.cancel`).
    #[getter]
    fn execution_id(&self) -> String {
        self.execution_id.clone()
    }

    /// The final `TurnOutput` once the stream is exhausted; `None` before, or when it failed
    /// or was closed.
    #[getter]
    fn output(&self) -> Option<PyTurnOutput> {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .map(PyTurnOutput::from)
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (slot, output) = (self.slot.clone(), self.output.clone());
        let closed = self.closed.subscribe();
        into_py(py, async move {
            match next_step(slot, output, closed).await {
                Step::Delta(delta) => Ok(PyDelta::from(delta)),
                Step::End => Err(PyStopAsyncIteration::new_err(())),
                Step::Failed(e) => Err(Python::attach(|py| runtime_error(py, &e))),
            }
        })
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<PyDelta> {
        let (slot, output) = (self.slot.clone(), self.output.clone());
        let closed = self.closed.subscribe();
        match block_on(py, Box::pin(next_step(slot, output, closed)))? {
            Step::Delta(delta) => Ok(PyDelta::from(delta)),
            Step::End => Err(PyStopIteration::new_err(())),
            Step::Failed(e) => Err(runtime_error(py, &e)),
        }
    }

    /// Stops the turn (it is cancelled inside the plugin) if it still runs. Blocking form.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.closed.send_replace(true);
        let slot = self.slot.clone();
        block_on(py, Box::pin(async move { *slot.lock().await = None }))
    }

    /// An awaitable that stops the turn if it still runs.
    fn aclose<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.closed.send_replace(true);
        let slot = self.slot.clone();
        into_py(py, async move {
            *slot.lock().await = None;
            Ok(())
        })
    }

    fn __aenter__(slf: Py<Self>, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        into_py(py, async move { Ok(slf) })
    }

    #[pyo3(signature = (*_args))]
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _args: &Bound<'py, pyo3::types::PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.aclose(py)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<()> {
        self.close(py)
    }

    fn __repr__(&self) -> String {
        format!("<TurnStream {}>", self.execution_id)
    }
}

/// Escapes the control characters of `text` that a terminal would act on, as the `runtimes`
/// command does (`\x1b`, `\r`, C1 controls...); newlines are kept when `keep_newlines`.
#[pyfunction]
#[pyo3(signature = (text, keep_newlines=true))]
fn clean(text: &str, keep_newlines: bool) -> String {
    if keep_newlines {
        runtime_text::clean_lines(text).into_owned()
    } else {
        runtime_text::clean(text).into_owned()
    }
}

/// The package's native module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyRuntimes>()?;
    m.add_class::<PyRuntime>()?;
    m.add_class::<PyTurnStream>()?;
    m.add_class::<PyTurnRequest>()?;
    m.add_class::<PyTurnOutput>()?;
    m.add_class::<PyDelta>()?;
    m.add_class::<types::PyUsage>()?;
    m.add_class::<types::PyToolCall>()?;
    m.add_class::<PyRuntimeInfo>()?;
    m.add_class::<PyDiscoveryReport>()?;
    m.add_class::<types::PyRejection>()?;
    m.add_class::<types::PyShadowed>()?;
    m.add_class::<types::PyDirReport>()?;
    m.add_function(wrap_pyfunction!(clean, m)?)?;
    m.add_function(wrap_pyfunction!(_shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(logging::refresh_log_level, m)?)?;
    m.add_function(wrap_pyfunction!(logging::install_log_bridge, m)?)?;
    m.add("CONTRACT_VERSION", runtime_api::version::CONTRACT_VERSION)?;
    Ok(())
}
