//! Forwarding a plugin's `tracing` events to its host.
//!
//! Each plugin library has its own copy of `tracing` with its own global dispatcher, so
//! without help a plugin's events go nowhere. When the host loads a plugin it installs an
//! [`AbiLogSink`](crate::abi::AbiLogSink) through the root module; the plugin then sets, once,
//! a global subscriber in its own copy of `tracing` that hands every event to that sink, with
//! the id of the runtime whose code emitted it. The host re-emits them in its own subscriber.
//!
//! The level filter follows the host's `LevelFilter::current()`: taken when the sink is
//! installed and again at the start of every turn.
//!
//! Only plugins install this subscriber: a runtime compiled into the host never calls
//! [`install_log_sink`], so the host's own `tracing` setup is left alone.

use std::fmt::{self, Write as _};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Once, PoisonError, RwLock};

use abi_stable::std_types::RStr;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};

use super::scope::{current_runtime_id, with_current_turn};
use crate::abi::{AbiLogRecord, AbiLogSinkBox};

static SINK: RwLock<Option<AbiLogSinkBox>> = RwLock::new(None);
static MAX_LEVEL: AtomicU8 = AtomicU8::new(0);
static SUBSCRIBER: Once = Once::new();

/// A level as the number that crosses the boundary: 1 error … 5 trace.
pub fn level_number(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

/// Installs the host's sink (root-module entry point).
pub(crate) extern "C" fn install_log_sink(sink: AbiLogSinkBox) {
    let _ = catch_unwind(AssertUnwindSafe(move || {
        MAX_LEVEL.store(sink.max_level(), Ordering::Relaxed);
        *SINK.write().unwrap_or_else(PoisonError::into_inner) = Some(sink);
        SUBSCRIBER.call_once(|| {
            let subscriber = tracing_subscriber::registry().with(ForwardLayer);
            // Fails only if the plugin set its own global subscriber: then it keeps its own.
            let _ = tracing::subscriber::set_global_default(subscriber);
            tracing::callsite::rebuild_interest_cache();
            forward_panic_messages();
        });
    }));
}

/// Replaces this library's panic hook (its own copy of std's, so the host's is untouched) with
/// one that reports the panic through the host's `tracing` instead of raw stderr. The glue
/// turns the panic itself into a `panicked` error; this only routes the message, with its
/// location and the runtime id, to where the host's logs go.
fn forward_panic_messages() {
    std::panic::set_hook(Box::new(|info| {
        let message = crate::RuntimeError::panic_message(info.payload());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::warn!(
            target: "agent_runtimes::plugin_panic",
            location = %location,
            "plugin code panicked: {message}"
        );
    }));
}

/// Whether the host's sink is installed in this copy of runtime-api (a plugin library's):
/// then plugin code's events are forwarded with the execution id of the turn that runs, which
/// a turn's scope sets. A runtime compiled into the host has its events in the host's own
/// subscriber (inside the turn's span), and its turns skip that.
pub(crate) fn forwarding() -> bool {
    SUBSCRIBER.is_completed()
}

/// Takes the host's current level again, so a host that changes its subscriber after loading
/// a plugin gets the plugin's events at the new level from the next turn on.
pub(crate) fn refresh_level() {
    if !forwarding() {
        return;
    }
    if let Some(sink) = SINK.read().unwrap_or_else(PoisonError::into_inner).as_ref() {
        MAX_LEVEL.store(sink.max_level(), Ordering::Relaxed);
    }
}

struct ForwardLayer;

impl<S: Subscriber> Layer<S> for ForwardLayer {
    fn register_callsite(&self, _metadata: &'static Metadata<'static>) -> Interest {
        // The host's level can change between loads; decide per event.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        level_number(metadata.level()) <= MAX_LEVEL.load(Ordering::Relaxed)
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let sink = SINK.read().unwrap_or_else(PoisonError::into_inner);
        let Some(sink) = sink.as_ref() else {
            return;
        };
        let mut fields = FieldCollector::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        let fields_json = if fields.fields.is_empty() {
            String::new()
        } else {
            Value::Object(fields.fields).to_string()
        };
        with_current_turn(|execution_id| {
            let record = AbiLogRecord {
                level: level_number(metadata.level()),
                target: RStr::from_str(metadata.target()),
                message: RStr::from_str(&fields.message),
                fields: RStr::from_str(&fields_json),
                runtime_id: RStr::from_str(current_runtime_id()),
                execution_id: RStr::from_str(execution_id),
                file: RStr::from_str(metadata.file().unwrap_or("")),
                line: metadata.line().unwrap_or(0),
            };
            sink.log(&record);
        });
    }
}

#[derive(Default)]
struct FieldCollector {
    message: String,
    fields: Map<String, Value>,
}

impl Visit for FieldCollector {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.fields
                .insert(field.name().to_owned(), Value::from(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields
            .insert(field.name().to_owned(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields
            .insert(field.name().to_owned(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields
            .insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields
            .insert(field.name().to_owned(), Value::from(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.fields
                .insert(field.name().to_owned(), Value::from(format!("{value:?}")));
        }
    }
}
