//! The `llm-runtimes` plugin library loaded through the loader, as a host uses it: its
//! manifest and config checks always, and — when `scripts/llama-server.sh` runs a real
//! llama-server (`LLAMA_SERVER_URL`) — real turns across the ABI boundary, on the plugin's
//! own tokio runtime. Those tests are `#[ignore]`d, so a plain `cargo test` does not need the
//! server; CI starts it and runs them with `--ignored`, and run without it they fail.

use std::time::{Duration, Instant};

use futures::StreamExt;
use runtime_api::{
    DeltaKind, ErrorKind, FinishReason, StreamItem, ToolDefinition, TurnOutput, TurnRequest, Value,
};
use runtime_loader::{ResolveError, RuntimeHandle, Runtimes};
use serde_json::json;
use tempfile::TempDir;
use tokio::sync::{Mutex, MutexGuard};

use crate::support::{artifacts, install, plugin_dir, registry};

/// A registry with the llm plugin installed; the folder lives as long as the registry is used.
fn llm_registry() -> (TempDir, Runtimes) {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().llm, "libllm_runtimes");
    let runtimes = registry(&[dir.path()]);
    (dir, runtimes)
}

/// One test at a time against the single-slot server.
static SERVER: Mutex<()> = Mutex::const_new(());

/// The server's `/v1` base URL and the lock, or `None` when no server runs (test skipped).
pub(crate) async fn server(var: &str) -> (String, MutexGuard<'static, ()>) {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => (format!("{url}/v1"), SERVER.lock().await),
        // These tests are `#[ignore]`d; run on purpose without a server, they fail.
        _ => panic!(
            "{var} is not set: run `scripts/llama-server.sh start` and \
             `set -a; . target/llama-server/env; set +a` first"
        ),
    }
}

pub(crate) fn config(base_url: &str) -> Value {
    json!({ "base_url": base_url, "model": "smollm2", "read_timeout_ms": 60_000 })
}

fn ask(prompt: &str, max_tokens: u32) -> TurnRequest {
    TurnRequest::new(prompt)
        .with_temperature(0.0)
        .with_max_tokens(max_tokens)
}

async fn collect(
    handle: &RuntimeHandle,
    request: TurnRequest,
) -> Vec<Result<StreamItem, runtime_api::RuntimeError>> {
    tokio::time::timeout(
        Duration::from_secs(120),
        handle.stream_turn(request).collect::<Vec<_>>(),
    )
    .await
    .expect("the turn finished within 2 minutes")
}

/// The final output after checking the stream contract across the boundary.
fn finished(items: &[Result<StreamItem, runtime_api::RuntimeError>]) -> TurnOutput {
    let (last, deltas) = items.split_last().expect("items");
    let Ok(StreamItem::Done(output)) = last else {
        panic!("the stream did not end with Done: {last:?}")
    };
    let text: String = deltas
        .iter()
        .map(|item| match item {
            Ok(StreamItem::Delta(d)) if d.kind == DeltaKind::Text => d.content.clone(),
            Ok(StreamItem::Delta(_)) => String::new(),
            other => panic!("only deltas before Done: {other:?}"),
        })
        .collect();
    assert_eq!(text, output.content);
    output.clone()
}

#[test]
fn the_plugin_declares_both_runtimes_with_their_aliases() {
    let (_dir, runtimes) = llm_registry();
    for (id, alias) in [("openai", "openai-compatible"), ("anthropic", "claude")] {
        let entry = runtimes
            .get_entry(id)
            .unwrap_or_else(|| panic!("{id} is registered"));
        assert_eq!(entry.aliases, [alias]);
        let caps = entry.capabilities;
        for cap in [
            runtime_api::Capabilities::STREAMING,
            runtime_api::Capabilities::TOOLS,
            runtime_api::Capabilities::HISTORY,
            runtime_api::Capabilities::CONFIG_VALIDATION,
        ] {
            assert!(caps.contains(cap), "{id} lacks {cap}");
        }
    }
}

#[test]
fn a_missing_config_fails_closed_and_validation_reports_every_problem() {
    let (_dir, runtimes) = llm_registry();
    match runtimes.resolve("openai") {
        Err(ResolveError::Factory { error, .. }) => {
            assert_eq!(error.kind, ErrorKind::InvalidConfig);
            assert!(error.message.contains("base_url"), "{error}");
        }
        Err(other) => panic!("expected a factory error, got {other}"),
        Ok(_) => panic!("openai must not start without a config"),
    }
    let handle = runtimes
        .new_instance("claude", &config("http://127.0.0.1:9/v1"))
        .unwrap();
    assert_eq!(handle.id(), "anthropic");
    let problems = handle
        .validate_config(&json!({ "model": 1, "api_key_env": "AGENT_RUNTIMES_UNSET_TEST_KEY" }))
        .unwrap();
    assert!(
        problems.iter().any(|p| p.contains("base_url")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("`model`")),
        "{problems:?}"
    );
}

#[tokio::test]
async fn a_refused_connection_is_an_unavailable_error_across_the_boundary() {
    let (_dir, runtimes) = llm_registry();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let handle = runtimes
        .new_instance("openai", &config(&format!("http://127.0.0.1:{port}/v1")))
        .unwrap();
    let error = handle.run_turn(ask("hi", 4)).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unavailable);
    assert!(error.retriable);
}

#[tokio::test]
#[ignore = "needs a llama.cpp server: scripts/llama-server.sh start, then `set -a; . target/llama-server/env; set +a`; CI runs it"]
async fn openai_streams_tokens_and_tool_calls_through_the_plugin() {
    let (url, _lock) = server("LLAMA_SERVER_URL").await;
    let (_dir, runtimes) = llm_registry();
    let handle = runtimes
        .new_instance("openai-compatible", &config(&url))
        .unwrap();
    let items = collect(&handle, ask("Say hello to the world.", 24)).await;
    let output = finished(&items);
    assert!(
        items.len() > 3,
        "streamed token by token: {} items",
        items.len()
    );
    assert!(output.usage.input_tokens > 0 && output.usage.output_tokens > 0);

    let weather = ToolDefinition::new(
        "get_weather",
        "Get the current weather of a city",
        json!({ "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"] }),
    );
    let items = collect(
        &handle,
        ask("What is the weather in Paris?", 64).with_tools(vec![weather]),
    )
    .await;
    let output = finished(&items);
    assert_eq!(output.finish_reason, FinishReason::ToolCalls);
    assert_eq!(output.tool_calls.len(), 1);
    assert_eq!(output.tool_calls[0].name, "get_weather");
    assert!(output.tool_calls[0].arguments.is_object());
}

#[tokio::test]
#[ignore = "needs a llama.cpp server: scripts/llama-server.sh start, then `set -a; . target/llama-server/env; set +a`; CI runs it"]
async fn errors_keep_their_kind_and_status_across_the_boundary() {
    let (url, _lock) = server("LLAMA_SERVER_URL").await;
    let (_dir, runtimes) = llm_registry();
    let handle = runtimes.new_instance("openai", &config(&url)).unwrap();
    let items = collect(&handle, ask(&"word ".repeat(3000), 8)).await;
    assert_eq!(items.len(), 1, "{items:?}");
    let error = items[0].as_ref().unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert_eq!(error.metadata["status"], 400);
}

#[tokio::test]
#[ignore = "needs a llama.cpp server: scripts/llama-server.sh start, then `set -a; . target/llama-server/env; set +a`; CI runs it"]
async fn cancel_by_id_mid_stream_frees_the_server() {
    let (url, _lock) = server("LLAMA_SERVER_URL").await;
    let (_dir, runtimes) = llm_registry();
    let mut long_config = config(&url);
    long_config["extra_body"] = json!({ "ignore_eos": true });
    let handle = runtimes.new_instance("openai", &long_config).unwrap();
    let mut stream = handle.stream_turn(ask("Count from 1 to 1000.", 1500));
    let execution_id = stream.execution_id().to_owned();
    for _ in 0..3 {
        assert!(matches!(
            stream.next().await,
            Some(Ok(StreamItem::Delta(_)))
        ));
    }
    assert!(handle.cancel(&execution_id).unwrap());
    let rest: Vec<_> = stream.collect().await;
    assert!(
        matches!(rest.last(), Some(Err(e)) if e.kind == ErrorKind::Cancelled),
        "{rest:?}"
    );
    let started = Instant::now();
    let output = handle.run_turn(ask("Say hi.", 4)).await.unwrap();
    assert!(!output.content.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the next turn waited {:?}: the server kept generating",
        started.elapsed()
    );
}

#[tokio::test]
#[ignore = "needs a llama.cpp server: scripts/llama-server.sh start, then `set -a; . target/llama-server/env; set +a`; CI runs it"]
async fn anthropic_streams_through_the_plugin() {
    let (url, _lock) = server("LLAMA_SERVER_URL").await;
    let (_dir, runtimes) = llm_registry();
    let handle = runtimes.new_instance("claude", &config(&url)).unwrap();
    for _ in 0..2 {
        let items = collect(&handle, ask("Write a long story about a dragon.", 6)).await;
        let output = finished(&items);
        assert_eq!(output.finish_reason, FinishReason::Length);
        assert_eq!(output.usage.output_tokens, 6);
    }
}

/// The openai runtime at the process level, in its sandbox (namespaces, Landlock, seccomp),
/// against the real server: what it declares, the port of its configured `base_url` (a
/// loopback one here), is enough for a turn to stream as it does in-process.
#[tokio::test]
#[ignore = "needs a llama.cpp server: scripts/llama-server.sh start, then `set -a; . target/llama-server/env; set +a`; CI runs it"]
async fn openai_streams_from_its_sandbox_at_the_process_level() {
    let (url, _lock) = server("LLAMA_SERVER_URL").await;
    let dir = plugin_dir();
    install(dir.path(), &artifacts().llm, "libllm_runtimes");
    let runtimes = Runtimes::with_options(
        runtime_loader::LoaderOptions::STRICT
            .with_isolation(runtime_loader::Isolation::Process)
            .with_process(runtime_loader::ProcessOptions::DEFAULT.with_worker(&artifacts().worker)),
    );
    runtimes.discover(&runtime_loader::SearchPath::empty().with_dir(dir.path()));
    let handle = runtimes.new_instance("openai", &config(&url)).unwrap();
    assert_eq!(handle.isolation(), runtime_loader::Isolation::Process);
    let output = finished(&collect(&handle, ask("Say hello to the world.", 16)).await);
    assert!(!output.content.is_empty());
    assert!(output.usage.output_tokens > 0);
}
