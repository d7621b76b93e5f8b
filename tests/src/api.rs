//! The boundary (issue: runtime-api): the echo plugin loaded from a folder, the embedded
//! manifest against the loaded module, and (the fixture plugin's `fixture-faults`) a panic in
//! every generated entry point.

use futures::StreamExt;
use runtime_api::{
    Capabilities, DeltaKind, ErrorKind, FinishReason, Message, RuntimeError, StreamItem,
    TurnRequest,
};
use runtime_loader::{ResolveError, RuntimeHandle};
use serde_json::json;

use crate::support::{artifacts, install, plugin_dir, registry};

fn echo_with(config: serde_json::Value) -> (tempfile::TempDir, RuntimeHandle) {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().echo, "libecho");
    let runtimes = registry(&[dir.path()]);
    let handle = runtimes
        .new_instance("echo", &config)
        .expect("echo resolves");
    (dir, handle)
}

/// `fixture-faults` (echo with faults on demand) with this configuration.
fn faults_with(config: serde_json::Value) -> (tempfile::TempDir, RuntimeHandle) {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().fixture, "libfixture");
    let runtimes = registry(&[dir.path()]);
    let handle = runtimes
        .new_instance("fixture-faults", &config)
        .expect("fixture-faults resolves");
    (dir, handle)
}

fn assert_panicked(error: &RuntimeError, entry: &str) {
    assert_eq!(error.kind, ErrorKind::Panicked, "{entry}: {error}");
    assert!(
        error
            .message
            .contains(&format!("fixture-faults was told to panic in {entry}")),
        "{entry}: {error}"
    );
}

#[tokio::test]
async fn echo_runs_a_turn_from_a_plugin_folder() {
    let (_dir, echo) = echo_with(json!(null));
    let request = TurnRequest::new("hello plugin world")
        .with_system("be kind")
        .with_history(vec![Message::user("earlier words here")]);
    let output = echo.run_turn(request).await.unwrap();
    assert_eq!(output.content, "hello plugin world");
    assert_eq!(output.finish_reason, FinishReason::Stop);
    assert_eq!(output.usage.output_tokens, 3);
    assert_eq!(output.usage.input_tokens, 3 + 2 + 3);
    assert_eq!(output.usage.total_tokens, 11);
}

#[tokio::test]
async fn echo_streams_word_by_word_and_ends_with_the_result() {
    let (_dir, echo) = echo_with(json!({"delay_ms": 1}));
    let items: Vec<_> = echo
        .stream_turn(TurnRequest::new("one  two three"))
        .collect()
        .await;
    let items: Vec<StreamItem> = items.into_iter().map(Result::unwrap).collect();
    let texts: Vec<&str> = items
        .iter()
        .filter_map(|item| match item {
            StreamItem::Delta(d) if d.kind == DeltaKind::Text => Some(d.content.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, vec!["one  ", "two ", "three"]);
    let Some(StreamItem::Done(output)) = items.last() else {
        panic!("the last item is the result: {items:?}");
    };
    assert_eq!(texts.concat(), output.content);
    assert_eq!(items.len(), 4);
}

#[tokio::test]
async fn the_embedded_manifest_matches_the_loaded_module() {
    let manifest = runtime_loader::inspect::read_manifest(&artifacts().echo).unwrap();
    assert_eq!(manifest.plugin_name, "echo-runtime");
    assert_eq!(manifest.api_version, runtime_api::version::API_VERSION_STR);
    let declared = &manifest.runtimes[0];
    assert_eq!(declared.id, "echo");
    assert_eq!(declared.aliases, vec!["parrot"]);

    let (_dir, echo) = echo_with(json!(null));
    let info = echo.info().unwrap();
    assert_eq!(info.id, declared.id);
    assert_eq!(info.display_name, declared.display_name);
    assert_eq!(info.description, declared.description);
    assert_eq!(info.version, manifest.plugin_version);
    assert_eq!(info.capabilities, declared.capabilities);
    assert!(info.capabilities.contains(Capabilities::STREAMING));
    assert!(info.capabilities.contains(Capabilities::CANCELLATION));
}

#[tokio::test]
async fn a_panic_in_the_factory_is_an_error() {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().fixture, "libfixture");
    let runtimes = registry(&[dir.path()]);
    match runtimes.new_instance("fixture-faults", &json!({"panic_in": "factory"})) {
        Err(ResolveError::Factory { id, error }) => {
            assert_eq!(id, "fixture-faults");
            assert_panicked(&error, "factory");
        }
        other => panic!("expected a factory error, got {other:?}"),
    }
    // The library is fine and the host lives on.
    let faults = runtimes.resolve("fixture-faults").unwrap();
    assert_eq!(
        faults
            .run_turn(TurnRequest::new("ok"))
            .await
            .unwrap()
            .content,
        "ok"
    );
}

#[tokio::test]
async fn a_panic_while_polling_a_turn_is_an_error() {
    let (_dir, faults) = faults_with(json!({"panic_in": "run_turn"}));
    let error = faults.run_turn(TurnRequest::new("x")).await.unwrap_err();
    assert_panicked(&error, "run_turn");
    // The same runtime object still serves other calls.
    assert!(faults.cancel("nothing").is_ok());
}

#[tokio::test]
async fn a_panic_while_polling_a_stream_is_an_error() {
    let (_dir, faults) = faults_with(json!({"panic_in": "stream"}));
    let items: Vec<_> = faults.stream_turn(TurnRequest::new("a b")).collect().await;
    assert_eq!(items.len(), 1, "the panic ends the stream: {items:?}");
    assert_panicked(items[0].as_ref().unwrap_err(), "stream");
}

#[tokio::test]
async fn a_panic_in_cancel_validate_config_or_health_is_an_error() {
    let (_dir, faults) = faults_with(json!({"panic_in": "cancel"}));
    assert_panicked(&faults.cancel("x").unwrap_err(), "cancel");
    let (_dir, faults) = faults_with(json!(null));
    assert_panicked(
        &faults
            .validate_config(&json!({"panic_in": "validate_config"}))
            .unwrap_err(),
        "validate_config",
    );
    let (_dir, faults) = faults_with(json!({"panic_in": "health"}));
    assert_panicked(&faults.health().await.unwrap_err(), "health");
}

#[tokio::test]
async fn a_panic_in_the_runtimes_destructor_is_contained_and_logged() {
    // The plugin's panic message goes to the host's `tracing`, not to stderr: capture it.
    let captured = crate::logs::Captured::global();
    let dir = plugin_dir();
    install(dir.path(), &artifacts().fixture, "libfixture");
    let runtimes = registry(&[dir.path()]);
    // Inline: the destructor's panic (and so its message) happens on this thread.
    let faults = runtimes
        .new_instance("fixture-faults", &json!({"panic_in": "drop"}))
        .unwrap()
        .with_isolation(runtime_loader::Isolation::Inline);
    let output = faults
        .run_turn(TurnRequest::new("still fine"))
        .await
        .unwrap();
    assert_eq!(output.content, "still fine");
    assert!(
        captured
            .messages_containing("fixture-faults was told to panic in drop")
            .is_empty(),
        "nothing panicked yet"
    );

    drop(faults); // the plugin's destructor panics inside the plugin

    // The destructor ran and panicked, and the panic was caught in the plugin: its message
    // arrived as a host event naming the plugin and the runtime.
    let events = captured.messages_containing("fixture-faults was told to panic in drop");
    let [event] = events.as_slice() else {
        panic!("one panic message from the destructor: {events:?}");
    };
    assert_eq!(event.get("level"), Some("WARN"));
    assert_eq!(event.get("plugin"), Some("fixture-plugin"));
    assert_eq!(event.get("runtime"), Some("fixture-faults"));
    // The host, the library and a new instance of the same runtime go on.
    let again = runtimes
        .new_instance("fixture-faults", &json!(null))
        .unwrap();
    assert_eq!(
        again
            .run_turn(TurnRequest::new("again"))
            .await
            .unwrap()
            .content,
        "again"
    );
}

#[tokio::test]
async fn errors_cross_the_boundary_as_values() {
    let (_dir, faults) = faults_with(json!({"fail_with": "rate_limited"}));
    let error = faults.run_turn(TurnRequest::new("x")).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::RateLimited);
    assert!(error.retriable);
    let (_dir, echo) = echo_with(json!(null));
    assert_eq!(
        echo.validate_config(&json!({"delay_ms": 5})).unwrap(),
        Vec::<String>::new()
    );
    let problems = echo.validate_config(&json!({"bogus": 1})).unwrap();
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("bogus"), "{problems:?}");
    assert_eq!(echo.health().await.unwrap(), "echoing");
}

#[tokio::test]
async fn two_plugin_crates_link_into_one_host_and_register_in_process() {
    // This test binary links echo-runtime and command-runtime as rlibs: each exports its
    // manifest and root module under names of its own, so the link succeeds.
    let runtimes = runtime_loader::Runtimes::new();
    runtimes.register::<echo_runtime::Echo>().unwrap();
    runtimes
        .register::<command_runtime::CommandRuntime>()
        .unwrap();
    let echo = runtimes.resolve("echo").unwrap();
    assert_eq!(
        echo.run_turn(TurnRequest::new("linked"))
            .await
            .unwrap()
            .content,
        "linked"
    );
    let command = runtimes
        .new_instance("command", &json!({"program": "cat"}))
        .unwrap();
    assert_eq!(
        command
            .run_turn(TurnRequest::new("also linked"))
            .await
            .unwrap()
            .content,
        "also linked"
    );
}
