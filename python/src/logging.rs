//! `tracing` events (the loader's and the plugins', which the loader forwards with target
//! `runtime_loader::PLUGIN_LOG_TARGET`) into Python's `logging`, on the logger
//! `agent_runtimes`.
//!
//! The GIL is taken only for events at or above the logger's level, which is cached here:
//! `refresh_log_level()` (called by `Runtimes()` and available to the user) reads it again.

use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use pyo3::prelude::*;
use pyo3::types::PyDict;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// The logger's effective level as Python numbers it (`logging.WARNING` until read).
static THRESHOLD: AtomicU8 = AtomicU8::new(30);

/// Set at interpreter exit: no event is forwarded after it.
static STOPPED: AtomicBool = AtomicBool::new(false);

/// Stops forwarding events (the interpreter is exiting).
pub fn stop() {
    STOPPED.store(true, Ordering::Release);
}

/// The logger events go to.
const LOGGER: &str = "agent_runtimes";

fn python_level(level: &Level) -> u8 {
    match *level {
        Level::TRACE => 5,
        Level::DEBUG => 10,
        Level::INFO => 20,
        Level::WARN => 30,
        Level::ERROR => 40,
    }
}

/// Reads the effective level of `logging.getLogger("agent_runtimes")` again, so that events
/// at a level newly enabled reach it. Returns that level.
#[pyfunction]
pub fn refresh_log_level(py: Python<'_>) -> PyResult<u8> {
    let level: u32 = PyModule::import(py, "logging")?
        .call_method1("getLogger", (LOGGER,))?
        .call_method0("getEffectiveLevel")?
        .extract()?;
    let level = u8::try_from(level.min(255)).unwrap_or(u8::MAX);
    THRESHOLD.store(level, Ordering::Relaxed);
    Ok(level)
}

/// `refresh_log_level` for callers that cannot fail.
pub fn refresh_level(py: Python<'_>) {
    let _ = refresh_log_level(py);
}

/// Installs the bridge as the process's `tracing` subscriber; `False` when one was already
/// installed (by this or another extension).
#[pyfunction]
pub fn install_log_bridge(py: Python<'_>) -> bool {
    refresh_level(py);
    let subscriber = tracing_subscriber::registry().with(PythonLogging);
    tracing::subscriber::set_global_default(subscriber).is_ok()
}

struct PythonLogging;

#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.rest.push((field.name().to_owned(), value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.rest
                .push((field.name().to_owned(), format!("{value:?}")));
        }
    }
}

impl<S: Subscriber> Layer<S> for PythonLogging {
    fn register_callsite(&self, _metadata: &'static Metadata<'static>) -> Interest {
        // Decided per event: the threshold changes when Python's logging is configured.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        python_level(metadata.level()) >= THRESHOLD.load(Ordering::Relaxed)
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let level = python_level(metadata.level());
        if level < THRESHOLD.load(Ordering::Relaxed) || STOPPED.load(Ordering::Acquire) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut text = fields.message;
        for (name, value) in &fields.rest {
            let _ = write!(text, " {name}={value}");
        }
        let target = metadata.target();
        // Never let logging take the process down (the interpreter may be finalizing).
        let _ = catch_unwind(AssertUnwindSafe(|| {
            Python::attach(|py| {
                let sent = (|| -> PyResult<()> {
                    let logger =
                        PyModule::import(py, "logging")?.call_method1("getLogger", (LOGGER,))?;
                    let extra = PyDict::new(py);
                    extra.set_item("tracing_target", target)?;
                    let kwargs = PyDict::new(py);
                    kwargs.set_item("extra", extra)?;
                    logger.call_method(
                        "log",
                        (level, "%s: %s", target, text.as_str()),
                        Some(&kwargs),
                    )?;
                    Ok(())
                })();
                if let Err(e) = sent {
                    e.print(py);
                }
            })
        }));
    }
}
