//! What a request (an untrusted caller's) cannot do to an agent runtime (issue 25): name MCP
//! servers unless the operator allowed it, replace a configured server, raise the instance's
//! limits, or make the runtime accept an unbounded model response. None of these needs an MCP
//! server: each is refused before anything starts. The model is the scripted server of
//! `support`.

mod support;

use std::time::{Duration, Instant};

use runtime_api::{ErrorKind, TurnRequest, json};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_servers_are_refused_by_default() {
    let model = ModelServer::start(vec![Reply::text("never")]).await;
    let agent = runtime(&model, json!({}));
    let request = TurnRequest::new("x").with_mcp_servers(json!({
        "mine": { "command": "sh", "args": ["-c", "id > /tmp/agent-request-server-ran"] }
    }));
    let error = failed(&collect(&agent, request).await);
    assert_eq!(error.kind, ErrorKind::Unsupported, "{error}");
    assert_eq!(error.metadata["error"], "request_mcp_servers_refused");
    assert_eq!(error.metadata["mcp_servers"], json!(["mine"]));
    assert!(agent.server_pids().is_empty());
    assert!(model.requests().is_empty(), "the model was not called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_never_replaces_a_configured_server() {
    let model = ModelServer::start(vec![Reply::text("never")]).await;
    // Allowed request servers, and a configured one that is never started by this test.
    let agent = runtime(
        &model,
        json!({
            "request_mcp_servers": true,
            "mcp_servers": { "fs": { "command": "/nonexistent/fs-server" } },
        }),
    );
    let request = TurnRequest::new("x").with_mcp_servers(json!({
        "fs": { "command": "sh", "args": ["-c", "id"] }
    }));
    let error = failed(&collect(&agent, request).await);
    assert_eq!(error.kind, ErrorKind::InvalidRequest, "{error}");
    assert_eq!(error.metadata["error"], "request_mcp_server_name_taken");
    assert_eq!(error.metadata["mcp_servers"], json!(["fs"]));
    assert!(model.requests().is_empty(), "the model was not called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_may_lower_the_limits_but_not_raise_them() {
    let model = ModelServer::start(vec![Reply::text("fine")]).await;
    let agent = runtime(&model, json!({ "max_steps": 3, "tool_timeout_ms": 1000 }));
    for raised in [
        json!({ "max_steps": 4 }),
        json!({ "tool_timeout_ms": 1001 }),
        json!({ "max_steps": 1000, "tool_timeout_ms": 3_600_000 }),
    ] {
        let error =
            failed(&collect(&agent, TurnRequest::new("x").with_config(raised.clone())).await);
        assert_eq!(error.kind, ErrorKind::InvalidRequest, "{raised}: {error}");
        assert_eq!(error.metadata["error"], "invalid_turn_config");
        assert!(error.message.contains("may only lower"), "{error}");
    }
    assert!(model.requests().is_empty(), "the model was not called");
    let lowered =
        TurnRequest::new("x").with_config(json!({ "max_steps": 1, "tool_timeout_ms": 10 }));
    assert_eq!(finished(&collect(&agent, lowered).await).content, "fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_tool_calls_in_one_step_are_a_named_error_quickly() {
    let calls = |n: usize| {
        Reply::Calls(
            (0..n)
                .map(|i| (format!("call_{i}"), "read".to_owned(), json!({ "n": i })))
                .collect(),
        )
    };
    let model = ModelServer::start(vec![calls(20_000), Reply::text("never")]).await;
    let agent = runtime(&model, json!({}));
    let started = Instant::now();
    let error = failed(&collect(&agent, TurnRequest::new("x")).await);
    let took = started.elapsed();
    assert_eq!(
        error.kind,
        ErrorKind::Other("too_many_tool_calls".into()),
        "{error}"
    );
    assert_eq!(error.metadata["error"], "too_many_tool_calls");
    assert_eq!(error.metadata["max"], 64);
    assert!(took < Duration::from_secs(10), "refused after {took:?}");
    assert_eq!(model.requests().len(), 1, "no second model call");

    // The operator's own cap, lower.
    let model = ModelServer::start(vec![calls(3), Reply::text("never")]).await;
    let agent = runtime(&model, json!({ "max_tool_calls_per_step": 2 }));
    let error = failed(&collect(&agent, TurnRequest::new("x")).await);
    assert_eq!(error.metadata["max"], 2, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_response_over_its_byte_limit_is_a_named_error() {
    let model = ModelServer::start(vec![Reply::Text("x".repeat(64 * 1024))]).await;
    let agent = runtime(&model, json!({ "model_response_max_bytes": 16 * 1024 }));
    let error = failed(&collect(&agent, TurnRequest::new("x")).await);
    assert_eq!(
        error.kind,
        ErrorKind::Other("model_response_too_large".into()),
        "{error}"
    );
    assert_eq!(error.metadata["max_bytes"], 16 * 1024);
    // Under the default limit the same answer passes.
    let agent = runtime(&model, json!({}));
    assert_eq!(
        finished(&collect(&agent, TurnRequest::new("x")).await)
            .content
            .len(),
        64 * 1024
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_event_is_cut_at_the_byte_limit() {
    use axum::http::header::CONTENT_TYPE;
    // One `data:` line that never ends: no event is ever complete.
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(|| async {
            let mut body = String::from("data: ");
            body.push_str(&"x".repeat(4 * 1024 * 1024));
            ([(CONTENT_TYPE, "text/event-stream")], body)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let agent = std::sync::Arc::new(
        <agent_runtime::AgentRuntime as runtime_api::Runtime>::new(json!({
            "base_url": format!("http://{address}/v1"),
            "model": "m",
            "model_response_max_bytes": 64 * 1024,
        }))
        .unwrap(),
    );
    let error = failed(&collect(&agent, TurnRequest::new("x")).await);
    assert_eq!(
        error.metadata["error"], "model_response_too_large",
        "{error}"
    );
}
