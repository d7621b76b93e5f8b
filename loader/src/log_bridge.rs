//! The host's end of plugin log forwarding: plugin events re-emitted in the host's subscriber.
//!
//! Events arrive with target `agent_runtimes::plugin` and the fields `plugin` (package name),
//! `runtime` (the runtime id, empty outside a runtime call), `execution_id` (the turn's, empty
//! outside a turn), `plugin_target` (the event's target inside the plugin) and `fields` (the
//! plugin event's other fields, as JSON).
//!
//! At the *inline* level a plugin's events are emitted on the thread that polls the turn,
//! inside the turn's span. At the *threads* level they are emitted on the plugin's own
//! threads: they reach the global subscriber (`tracing::subscriber::set_global_default`), and
//! `execution_id` ties them to their turn; a thread-local subscriber (`set_default`) does not
//! see them. At the *process* level the worker forwards them over its pipe, in order with the
//! turn's other messages, and they are emitted on the loader's I/O thread (so, again, in the
//! global subscriber).

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::RArc;
use runtime_api::abi::{AbiLogRecord, AbiLogSink, AbiLogSink_TO, AbiLogSinkBox};
use tracing::level_filters::LevelFilter;

pub use runtime_process::plugin_log::{PLUGIN_LOG_TARGET, emit};

struct HostLogSink {
    plugin: String,
}

impl AbiLogSink for HostLogSink {
    fn max_level(&self) -> u8 {
        match LevelFilter::current().into_level() {
            None => 0,
            Some(level) => runtime_api::level_number(&level),
        }
    }

    fn log(&self, record: &AbiLogRecord<'_>) {
        emit(
            record.level,
            &self.plugin,
            record.runtime_id.as_str(),
            record.execution_id.as_str(),
            record.target.as_str(),
            record.fields.as_str(),
            record.message.as_str(),
        );
    }
}

/// A sink for the plugin package `plugin`.
pub(crate) fn sink_for(plugin: &str) -> AbiLogSinkBox {
    AbiLogSink_TO::from_ptr(
        RArc::new(HostLogSink {
            plugin: plugin.to_owned(),
        }),
        TD_Opaque,
    )
}
