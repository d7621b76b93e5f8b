//! The `openai` and `anthropic` runtimes against a real llama.cpp `llama-server` running a
//! real tiny model (SmolLM2-135M), started by `scripts/llama-server.sh`:
//!
//! ```text
//! scripts/llama-server.sh start && scripts/llama-server.sh start --api-key test-key
//! set -a; . target/llama-server/env; set +a
//! cargo test -p llm-runtimes --test real_server -- --ignored
//! ```
//!
//! Every test here is `#[ignore]`d, so a plain `cargo test` does not need the server; CI
//! starts it and runs them with `--ignored`. Run without `LLAMA_SERVER_URL`, they fail.
//! The 401 test needs the `--api-key` instance (`LLAMA_SERVER_AUTH_URL`,
//! `LLAMA_SERVER_AUTH_KEY`). Every request uses `temperature: 0`; the tests check structure
//! (order, finish reasons, tool names, arguments that parse, usage), never wording. They take
//! a lock, one at a time: the server has one slot, and the cancellation test times a request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use llm_runtimes::{AnthropicRuntime, OpenAiRuntime};
use runtime_api::{
    DeltaKind, ErrorKind, FinishReason, Message, Runtime, RuntimeError, StreamItem, ToolCall,
    ToolDefinition, TurnOutput, TurnRequest, Value, json,
};
use tokio::sync::{Mutex, MutexGuard};

/// One test at a time against the single-slot server.
static SERVER: Mutex<()> = Mutex::const_new(());

/// The server's base URL (with `/v1`) and the lock, or `None` (test skipped).
async fn server(var: &str) -> (String, MutexGuard<'static, ()>) {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => (format!("{url}/v1"), SERVER.lock().await),
        // These tests are `#[ignore]`d; run on purpose without a server, they fail.
        _ => panic!(
            "{var} is not set: run `scripts/llama-server.sh start` and \
             `set -a; . target/llama-server/env; set +a` first"
        ),
    }
}

fn openai(base_url: &str, extra: Value) -> Arc<OpenAiRuntime> {
    let mut config = json!({ "base_url": base_url, "model": "smollm2", "read_timeout_ms": 60_000 });
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    Arc::new(OpenAiRuntime::new(config).unwrap())
}

fn anthropic(base_url: &str) -> Arc<AnthropicRuntime> {
    let config = json!({ "base_url": base_url, "model": "smollm2", "read_timeout_ms": 60_000 });
    Arc::new(AnthropicRuntime::new(config).unwrap())
}

fn ask(prompt: &str, max_tokens: u32) -> TurnRequest {
    TurnRequest::new(prompt)
        .with_temperature(0.0)
        .with_max_tokens(max_tokens)
}

fn weather_tool() -> ToolDefinition {
    ToolDefinition::new(
        "get_weather",
        "Get the current weather of a city",
        json!({
            "type": "object",
            "properties": { "city": { "type": "string", "description": "The city" } },
            "required": ["city"],
        }),
    )
}

fn time_tool() -> ToolDefinition {
    ToolDefinition::new(
        "get_time",
        "Get the current time in a timezone",
        json!({
            "type": "object",
            "properties": { "timezone": { "type": "string", "description": "IANA timezone" } },
            "required": ["timezone"],
        }),
    )
}

async fn stream<R: Runtime>(
    runtime: &Arc<R>,
    request: TurnRequest,
) -> Vec<Result<StreamItem, RuntimeError>> {
    let items = tokio::time::timeout(
        Duration::from_secs(120),
        Arc::clone(runtime).stream_turn(request).collect::<Vec<_>>(),
    )
    .await
    .expect("the turn finished within 2 minutes");
    assert!(!items.is_empty());
    items
}

/// Checks the stream contract and returns the final output: deltas only before one final
/// `Done`, no error, and the text deltas concatenated equal the content.
fn finished(items: &[Result<StreamItem, RuntimeError>]) -> &TurnOutput {
    let (last, deltas) = items.split_last().unwrap();
    let output = match last {
        Ok(StreamItem::Done(output)) => output,
        other => panic!("the stream did not end with Done: {other:?}"),
    };
    let mut text = String::new();
    for item in deltas {
        match item {
            Ok(StreamItem::Delta(delta)) if delta.kind == DeltaKind::Text => {
                text.push_str(&delta.content);
            }
            Ok(StreamItem::Delta(_)) => {}
            other => panic!("only deltas come before Done: {other:?}"),
        }
    }
    assert_eq!(text, output.content, "the text deltas make the content");
    output
}

fn text_delta_count(items: &[Result<StreamItem, RuntimeError>]) -> usize {
    items
        .iter()
        .filter(|i| matches!(i, Ok(StreamItem::Delta(d)) if d.kind == DeltaKind::Text))
        .count()
}

fn assert_usage(output: &TurnOutput) {
    assert!(output.usage.input_tokens > 0, "{:?}", output.usage);
    assert!(output.usage.output_tokens > 0, "{:?}", output.usage);
    assert!(output.usage.total_tokens >= output.usage.input_tokens + output.usage.output_tokens);
}

/// The tool calls of an output, with arguments that are JSON objects.
fn tool_names(output: &TurnOutput) -> Vec<&str> {
    for call in &output.tool_calls {
        assert!(!call.id.is_empty());
        assert!(
            call.arguments.is_object(),
            "arguments must parse to an object: {:?}",
            call.arguments
        );
    }
    output.tool_calls.iter().map(|c| c.name.as_str()).collect()
}

#[tokio::test]
#[ignore = "needs a llama.cpp server: scripts/llama-server.sh start, then `set -a; . target/llama-server/env; set +a`; CI runs it"]
async fn openai_streams_text_with_usage() {
    let (url, _lock) = server("LLAMA_SERVER_URL").await;
    let runtime = openai(&url, json!({}));
    let items = stream(&runtime, ask("Say hello to the world.", 24)).await;
    let output = finished(&items);
    assert!(
        text_delta_count(&items) > 1,
        "token by token, not one piece"
    );
    assert!(!output.content.is_empty());
    assert!(matches!(
        output.finish_reason,
        FinishReason::Stop | FinishReason::Length
    ));
    assert!(output.tool_calls.is_empty());
    assert_usage(output);
}

#[tokio::test]
#[ignore = "needs a llama.cpp server: scripts/llama-server.sh start, then `set -a; . target/llama-server/env; set +a`; CI runs it"]
async fn openai_streams_text_without_asking_for_usage() {
    let (url, _lock) = server("LLAMA_SERVER_URL").await;
    let runtime = openai(&url, json!({ "include_usage": false }));
    let items = stream(&runtime, ask("Say hello to the world.", 24)).await;
    let output = finished(&items);
    assert!(text_delta_count(&items) > 1);
    assert!(!output.content.is_empty());
}

#[tokio::test]
#[ignore = "needs a llama.cpp server: scripts/llama-server.sh start, then `set -a; . target/llama-server/env; set +a`; CI runs it"]
async fn openai_reports_the_length_finish_reason() {
    let (url, _lock) = server("LLAMA_SERVER_URL").await;
    let runtime = openai(&url, json!({}));
    let items = stream(&runtime, ask("Write a long story about a dragon.", 5)).await;
    let output = finished(&items);
    assert_eq!(output.finish_reason, FinishReason::Length);
    assert_eq!(output.usage.output_tokens, 5);
    // The same without streaming.
    let output = runtime
        .run_turn(ask("Write a long story about a dragon.", 5))
        .await
        .unwrap();
    assert_eq!(output.finish_reason, FinishReason::Length);
    assert_usage(&output);
}

#[tokio::test]
#[ignore = "needs a llama.cpp server: scripts/llama-server.sh start, then `set -a; . target/llama-server/env; set +a`; CI runs it"]
async fn openai_streams_a_single_tool_call() {
    let (url, _lock) = server("LLAMA_SERVER_URL").await;
    let runtime = openai(&url, json!({}));
    let request = ask("What is the weather in Paris?", 64).with_tools(vec![weather_tool()]);
    let items = stream(&runtime, request).await;
    let output = finished(&items);
    assert_eq!(output.finish_reason, FinishReason::ToolCalls);
    assert_eq!(tool_names(output), ["get_weather"]);
    // Streamed as fragments, the name announced once, first.
    let fragments: Vec<&runtime_api::Delta> = items
        .iter()
        .filter_map(|i| match i {
            Ok(StreamItem::Delta(d)) if d.kind == DeltaKind::ToolCall => Some(d),
            _ => None,
        })
        .collect();
    assert!(fragments.len() > 1, "the arguments arrive in pieces");
    assert_eq!(fragments[0].metadata["name"], "get_weather");
    assert_eq!(
        fragments
            .iter()
            .filter(|d| d.metadata.get("name").is_some())
            .count(),
        1
    );
    let arguments: String = fragments.iter().map(|d| d.content.as_str()).collect();
    let parsed: Value = serde_json::from_str(&arguments).expect("the fragments make JSON");
    assert_eq!(parsed, output.tool_calls[0].arguments);
    assert_usage(output);
}

#[tokio::test]
#[ignore = "needs a llama.cpp server: scripts/llama-server.sh start, then `set -a; . target/llama-server/env; set +a`; CI runs it"]
async fn openai_streams_parallel_tool_calls() {
    let (url, _lock) = server("LLAMA_SERVER_URL").await;
    let runtime = openai(&url, json!({}));
    let request = ask("What is the weather in Paris and the time in Tokyo?", 128)
        .with_tools(vec![weather_tool(), time_tool()]);
    let items = stream(&runtime, request).await;
    let output = finished(&items);
    assert_eq!(output.finish_reason, FinishReason::ToolCalls);
    let mut names = tool_names(output);
    names.sort_unstable();
    assert_eq!(names, ["get_time", "get_weather"]);
    let ids: std::collections::BTreeSet<&str> =
        output.tool_calls.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), 2, "distinct ids");
}

#[tokio::test]
#[ignore = "needs a llama.cpp server: scripts/llama-server.sh start, then `set -a; . target/llama-server/env; set +a`; CI runs it"]
async fn openai_tool_result_round_trip_ends_in_text() {
    let (url, _lock) = server("LLAMA_SERVER_URL").await;
    let runtime = openai(&url, json!({}));
    let question = "What is the weather in Paris?";
    let first = stream(&runtime, ask(question, 64).with_tools(vec![weather_tool()])).await;
    let call = finished(&first)
        .tool_calls
        .first()
        .cloned()
        .expect("a tool call");
    let history = vec![
        Message::user(question),
        Message::assistant_tool_calls(vec![ToolCall::new(
            call.id.clone(),
            call.name.clone(),
            call.arguments.clone(),
        )]),
        Message::tool_result(call.id, r#"{"temperature_c": 21, "sky": "sunny"}"#),
    ];
    let request = ask("", 48).with_history(history);
    let items = stream(&runtime, request).await;
    let output = finished(&items);
    assert!(output.tool_calls.is_empty(), "{:?}", output.tool_calls);
    assert!(!output.content.trim().is_empty());
    assert!(matches!(
        output.finish_reason,
        FinishReason::Stop | FinishReason::Length
    ));
    assert_usage(output);
}

#[tokio::test]
#[ignore = "needs a llama.cpp server: scripts/llama-server.sh start, then `set -a; . target/llama-server/env; set +a`; CI runs it"]
async fn openai_context_overflow_is_a_400_before_the_stream() {
    let (url, _lock) = server("LLAMA_SERVER_URL").await;
    let runtime = openai(&url, json!({}));
    let items = stream(&runtime, ask(&"word ".repeat(3000), 8)).await;
    assert_eq!(items.len(), 1, "no delta before the error: {items:?}");
    let Err(error) = &items[0] else {
        panic!("{items:?}")
    };
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert!(!error.retriable);
    assert_eq!(error.metadata["status"], 400);
    assert!(!error.message.is_empty());
    let error = runtime
        .run_turn(ask(&"word ".repeat(3000), 8))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
}

#[tokio::test]
#[ignore = "needs a llama.cpp server: scripts/llama-server.sh start, then `set -a; . target/llama-server/env; set +a`; CI runs it"]
async fn openai_error_object_mid_stream_is_an_error_not_an_answer() {
    let (url, _lock) = server("LLAMA_SERVER_URL").await;
    let runtime = openai(&url, json!({}));
    // An assistant prefill that opens a tool call the model then does not complete: the
    // server fails to parse its output after the stream started and sends
    // `data: {"error": …}` without `[DONE]`.
    let request = ask("", 64)
        .with_tools(vec![weather_tool()])
        .with_history(vec![
            Message::user("What is the weather in Paris?"),
            Message::assistant("<tool_call>\n"),
        ]);
    let items = stream(&runtime, request).await;
    let (last, before) = items.split_last().unwrap();
    let Err(error) = last else {
        panic!("the stream must end in an error: {items:?}")
    };
    assert!(before.iter().all(|i| matches!(i, Ok(StreamItem::Delta(_)))));
    assert_eq!(error.metadata["during"], "stream");
    assert!(!error.message.is_empty());
}

#[tokio::test]
#[ignore = "needs a llama.cpp server: scripts/llama-server.sh start, then `set -a; . target/llama-server/env; set +a`; CI runs it"]
async fn openai_wrong_or_missing_key_is_401() {
    let (url, _lock) = server("LLAMA_SERVER_AUTH_URL").await;
    let error = openai(&url, json!({}))
        .run_turn(ask("hi", 4))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Authentication);
    assert_eq!(error.metadata["status"], 401);
    assert!(!error.retriable);
    let items = stream(&openai(&url, json!({})), ask("hi", 4)).await;
    assert!(matches!(&items[0], Err(e) if e.kind == ErrorKind::Authentication));
    // The right key, from the variable the config names.
    let output = openai(&url, json!({ "api_key_env": "LLAMA_SERVER_AUTH_KEY" }))
        .run_turn(ask("hi", 4))
        .await
        .unwrap();
    assert_usage(&output);
    let error = anthropic(&url).run_turn(ask("hi", 4)).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Authentication);
}

#[tokio::test]
#[ignore = "needs a llama.cpp server: scripts/llama-server.sh start, then `set -a; . target/llama-server/env; set +a`; CI runs it"]
async fn openai_cancelling_mid_stream_frees_the_server() {
    let (url, _lock) = server("LLAMA_SERVER_URL").await;
    // `ignore_eos` makes the model write all 1500 tokens (tens of seconds) unless cancelled.
    let runtime = openai(&url, json!({ "extra_body": { "ignore_eos": true } }));
    let mut long = Box::pin(
        Arc::clone(&runtime).stream_turn(ask("Count from 1 to 1000, one number a line.", 1500)),
    );
    for _ in 0..5 {
        let item = long.next().await.unwrap().unwrap();
        assert!(matches!(item, StreamItem::Delta(_)));
    }
    drop(long);
    // The server has one slot: the next request is served promptly only if the cancelled
    // generation stopped when its connection closed.
    let started = Instant::now();
    let items = stream(&runtime, ask("Say hi.", 4)).await;
    finished(&items);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the next request waited {:?}: the slot was not freed",
        started.elapsed()
    );
}

#[tokio::test]
#[ignore = "needs a llama.cpp server: scripts/llama-server.sh start, then `set -a; . target/llama-server/env; set +a`; CI runs it"]
async fn openai_consecutive_turns_on_one_instance_reuse_or_replace_the_connection() {
    let (url, _lock) = server("LLAMA_SERVER_URL").await;
    // llama-server closes the connection after every streamed response although it says
    // keep-alive: a pooled connection must never fail the next turn.
    let runtime = openai(&url, json!({}));
    for round in 0..3 {
        let items = stream(&runtime, ask("Say hi.", 6)).await;
        let output = finished(&items);
        assert!(!output.content.is_empty(), "round {round}");
        let output = runtime.run_turn(ask("Say hi.", 6)).await.unwrap();
        assert!(!output.content.is_empty(), "round {round}");
    }
    let health = runtime.health().await.unwrap();
    assert!(health.contains("answers"));
}

#[tokio::test]
#[ignore = "needs a llama.cpp server: scripts/llama-server.sh start, then `set -a; . target/llama-server/env; set +a`; CI runs it"]
async fn anthropic_streams_text_with_usage() {
    let (url, _lock) = server("LLAMA_SERVER_URL").await;
    let runtime = anthropic(&url);
    let items = stream(
        &runtime,
        ask("Say hello to the world.", 24).with_system("You are brief."),
    )
    .await;
    let output = finished(&items);
    assert!(text_delta_count(&items) > 1);
    assert!(matches!(
        output.finish_reason,
        FinishReason::Stop | FinishReason::Length
    ));
    assert!(output.usage.output_tokens > 0, "{:?}", output.usage);
    let items = stream(&runtime, ask("Write a long story about a dragon.", 5)).await;
    let output = finished(&items);
    assert_eq!(output.finish_reason, FinishReason::Length);
    assert_eq!(output.usage.output_tokens, 5);
    // Non-streamed, twice on one instance.
    for _ in 0..2 {
        let output = runtime.run_turn(ask("Say hi.", 8)).await.unwrap();
        assert!(!output.content.is_empty());
        assert!(output.usage.output_tokens > 0);
    }
}

#[tokio::test]
#[ignore = "needs a llama.cpp server: scripts/llama-server.sh start, then `set -a; . target/llama-server/env; set +a`; CI runs it"]
async fn anthropic_streams_tool_calls_and_takes_tool_results() {
    let (url, _lock) = server("LLAMA_SERVER_URL").await;
    let runtime = anthropic(&url);
    let question = "What is the weather in Paris and the time in Tokyo?";
    let items = stream(
        &runtime,
        ask(question, 128).with_tools(vec![weather_tool(), time_tool()]),
    )
    .await;
    let output = finished(&items);
    assert_eq!(output.finish_reason, FinishReason::ToolCalls);
    let mut names = tool_names(output);
    names.sort_unstable();
    assert_eq!(names, ["get_time", "get_weather"]);

    let mut history = vec![
        Message::user(question),
        Message::assistant_tool_calls(output.tool_calls.clone()),
    ];
    for call in &output.tool_calls {
        history.push(Message::tool_result(call.id.clone(), r#"{"ok": true}"#));
    }
    let items = stream(&runtime, ask("", 48).with_history(history)).await;
    let output = finished(&items);
    assert!(output.tool_calls.is_empty(), "{:?}", output.tool_calls);
    assert!(!output.content.trim().is_empty());
}
