//! Plugin log events arrive in the host's subscriber, tagged with plugin and runtime.

use std::sync::{Arc, Mutex};

use runtime_api::TurnRequest;
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

use crate::support::{artifacts, install, plugin_dir, registry};

type Event = Vec<(String, String)>;

/// The plugin events (target [`runtime_loader::PLUGIN_LOG_TARGET`]) a subscriber saw: their
/// level and fields.
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<Event>>>);

/// One captured event.
#[derive(Debug)]
pub(crate) struct CapturedEvent(Event);

impl CapturedEvent {
    /// A field's value (`level` is the event's level).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Captured {
    /// The plugin events at `WARN` and above of the whole test binary, captured by a global
    /// subscriber installed on first use (a test's own `set_default` subscriber still takes
    /// precedence on its thread). For events emitted on threads the test does not own, such
    /// as a plugin panic's message.
    pub(crate) fn global() -> &'static Captured {
        static GLOBAL: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(|| {
            let captured = Captured::default();
            let layer = captured
                .clone()
                .with_filter(tracing_subscriber::filter::LevelFilter::WARN);
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
                .expect("no other global subscriber in the test binary");
            captured
        })
    }

    /// A subscriber that captures plugin events here.
    pub(crate) fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + use<> {
        tracing_subscriber::registry().with(self.clone())
    }

    /// The captured events whose message contains `text`.
    pub(crate) fn messages_containing(&self, text: &str) -> Vec<CapturedEvent> {
        let events = self.0.lock().unwrap_or_else(|e| e.into_inner());
        events
            .iter()
            .filter(|e| e.iter().any(|(n, v)| n == "message" && v.contains(text)))
            .map(|e| CapturedEvent(e.clone()))
            .collect()
    }
}

struct Fields(Vec<(String, String)>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Captured {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() == runtime_loader::PLUGIN_LOG_TARGET {
            let mut fields = Fields(vec![("level".into(), event.metadata().level().to_string())]);
            event.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }
}

#[tokio::test]
async fn plugin_events_reach_the_host_subscriber_with_plugin_and_runtime() {
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber());

    let dir = plugin_dir();
    install(dir.path(), &artifacts().fixture, "libfixture-logs");
    let runtimes = registry(&[dir.path()]);
    // A thread-local subscriber sees plugin events at the inline level, where the plugin's
    // code runs on this thread (at the threads level they go to the global subscriber).
    let fixture = runtimes
        .resolve("fixture")
        .unwrap()
        .with_isolation(runtime_loader::Isolation::Inline);
    fixture
        .run_turn(TurnRequest::new("hello").with_execution_id("log-turn"))
        .await
        .unwrap();

    let events = captured.0.lock().unwrap().clone();
    let field = |event: &Event, name: &str| {
        event
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let turn_event = events
        .iter()
        .find(|e| field(e, "message").is_some_and(|m| m.contains("fixture turn for log-turn")))
        .unwrap_or_else(|| panic!("the plugin's turn event did not arrive: {events:?}"));
    assert_eq!(field(turn_event, "level").as_deref(), Some("INFO"));
    assert_eq!(
        field(turn_event, "plugin").as_deref(),
        Some("fixture-plugin")
    );
    assert_eq!(field(turn_event, "runtime").as_deref(), Some("fixture"));
    assert_eq!(
        field(turn_event, "execution_id").as_deref(),
        Some("log-turn")
    );
    assert_eq!(
        field(turn_event, "plugin_target").as_deref(),
        Some("fixture_plugin")
    );
    let fields = field(turn_event, "fields").unwrap();
    assert!(fields.contains("\"marker\":\"fixture-log\""), "{fields}");
    assert!(fields.contains("\"prompt_len\":5"), "{fields}");
}
