//! One smoke turn of the agent runtime against a real llama.cpp `llama-server` running a real
//! tiny model (SmolLM2-135M), with the real filesystem MCP server, gated like the llm
//! runtimes' real-server tests:
//!
//! ```text
//! scripts/mcp-servers.sh && scripts/llama-server.sh start
//! set -a; . target/llama-server/env; set +a
//! cargo test -p agent-runtime --test real_server -- --ignored
//! ```
//!
//! The test is `#[ignore]`d, so a plain `cargo test` does not need the server; CI starts it and
//! runs it with `--ignored`. Run without `LLAMA_SERVER_URL`, it fails. The model is tiny: the
//! test checks the structure of the turn (every decided tool call gets a result, the turn ends
//! with an answer or the named `max_steps` error, usage is summed), never the wording.

mod support;

use std::time::Duration;

use futures::StreamExt as _;
use runtime_api::{DeltaKind, ErrorKind, FinishReason, StreamItem, TurnRequest, json};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a llama.cpp server and the reference MCP servers: scripts/llama-server.sh start, then `set -a; . target/llama-server/env; set +a`, and scripts/mcp-servers.sh; CI runs it"]
async fn a_smoke_turn_against_llama_server_with_a_real_mcp_server() {
    // Run on purpose without a server, it fails.
    let url = std::env::var("LLAMA_SERVER_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .expect(
            "LLAMA_SERVER_URL is not set: start the server with scripts/llama-server.sh and \
             `set -a; . target/llama-server/env; set +a`",
        );
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    let file = dir_path.join("note.txt");
    std::fs::write(&file, "The answer is 42.").unwrap();
    let config = json!({
        "base_url": format!("{url}/v1"),
        "model": "smollm2",
        "read_timeout_ms": 60_000,
        "max_steps": 3,
        // One tool only: the model's context is 2048 tokens, and the server's 14 tool schemas
        // alone exceed it.
        "mcp_servers": { "fs": {
            "command": "node",
            "args": [server_entry("server-filesystem"), dir_path],
            "include_tools": ["read_text_file"],
        } },
    });
    let agent = std::sync::Arc::new(
        <agent_runtime::AgentRuntime as runtime_api::Runtime>::new(config).unwrap(),
    );
    let request = TurnRequest::new(format!(
        "Read the file {} with the read_text_file tool and tell me what it says.",
        file.display()
    ))
    .with_temperature(0.0)
    // Room for a whole tool call: a call cut at the token limit is invalid JSON, which the
    // model server itself refuses (HTTP 500).
    .with_max_tokens(256);
    let items = tokio::time::timeout(
        Duration::from_secs(180),
        runtime_api::Runtime::stream_turn(agent.clone(), request).collect::<Vec<_>>(),
    )
    .await
    .expect("the turn ended within 3 minutes");

    // Every decided call got a result, by id. The calls of one step run concurrently and each
    // result is streamed when its call ends, so results come in the order the calls finish:
    // compared as sorted lists.
    let mut calls: Vec<String> = tool_calls(&items)
        .iter()
        .map(|d| d.metadata["id"].as_str().unwrap().to_owned())
        .collect();
    calls.sort();
    let mut results: Vec<String> = tool_results(&items)
        .iter()
        .map(|d| d.metadata["tool_call_id"].as_str().unwrap().to_owned())
        .collect();
    results.sort();
    match items.last() {
        Some(Ok(StreamItem::Done(_))) => {
            let output = finished(&items);
            assert_eq!(calls, results, "each call has its result");
            assert!(matches!(
                output.finish_reason,
                FinishReason::Stop | FinishReason::Length
            ));
            assert!(output.usage.input_tokens > 0 && output.usage.output_tokens > 0);
            assert!(output.metadata["steps"].as_u64().unwrap() >= 1);
            let text = deltas(&items)
                .iter()
                .filter(|d| d.kind == DeltaKind::Text)
                .count();
            assert!(text > 0 || output.content.is_empty());
        }
        // The tiny model may keep calling tools: then the named error, with the usage of
        // all three model calls.
        Some(Err(error)) => {
            assert_eq!(error.kind, ErrorKind::Other("max_steps".into()), "{error}");
            assert!(error.metadata["usage"]["input_tokens"].as_u64().unwrap() > 0);
            // The calls of the last step are not run; every earlier one has its result.
            assert!(
                results.iter().all(|id| calls.contains(id)),
                "{calls:?} {results:?}"
            );
            assert!(
                !calls.is_empty(),
                "max_steps is only reached by calling tools"
            );
        }
        other => panic!("the stream ended with {other:?}"),
    }
}
