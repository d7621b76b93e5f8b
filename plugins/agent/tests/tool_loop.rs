//! The tool loop against real MCP servers nobody here wrote — the reference
//! `@modelcontextprotocol/server-filesystem` and `server-everything` from npm, installed by
//! `scripts/mcp-servers.sh` — driven by a scripted OpenAI-compatible model server (axum on
//! 127.0.0.1) that makes deterministic tool calls. Faults: a server that does not start, dies
//! mid-turn, hangs on a call or returns an error; an unknown tool; a loop that never ends.
//!
//! Every test is `#[ignore]`d, so a plain `cargo test` does not need node; CI installs the
//! servers and runs them with `--ignored`:
//!
//! ```text
//! scripts/mcp-servers.sh && cargo test -p agent-runtime --test tool_loop -- --ignored
//! ```

mod support;

use std::time::Duration;

use futures::StreamExt as _;
use runtime_api::{
    DeltaKind, ErrorKind, FinishReason, Message, Runtime, StreamItem, ToolDefinition, TurnRequest,
    Value, json,
};
use support::*;

const STEP_USAGE: u64 = PROMPT_TOKENS + COMPLETION_TOKENS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the reference MCP servers from npm: scripts/mcp-servers.sh; CI runs it"]
async fn the_filesystem_server_reads_a_file_through_the_loop() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    let file = dir_path.join("note.txt");
    std::fs::write(&file, "the secret word is kumquat").unwrap();
    let model = ModelServer::start(vec![
        Reply::call("call_1", "read_text_file", json!({ "path": file })),
        Reply::text("The file says: kumquat."),
    ])
    .await;
    let agent = runtime(
        &model,
        json!({ "mcp_servers": { "fs": filesystem(&dir_path) } }),
    );

    let items = collect(
        &agent,
        TurnRequest::new("What is the secret word in note.txt?"),
    )
    .await;
    let output = finished(&items);
    assert_eq!(output.content, "The file says: kumquat.");
    assert_eq!(output.finish_reason, FinishReason::Stop);
    // Usage summed over both model calls.
    assert_eq!(output.usage.input_tokens, 2 * PROMPT_TOKENS);
    assert_eq!(output.usage.output_tokens, 2 * COMPLETION_TOKENS);
    assert_eq!(output.usage.total_tokens, 2 * STEP_USAGE);
    assert_eq!(output.metadata["steps"], 2);
    assert_eq!(output.metadata["tool_calls"], 1);

    // The stream: the decided call, whole, then its result, then the answer.
    let calls = tool_calls(&items);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].metadata["name"], "read_text_file");
    assert_eq!(calls[0].metadata["id"], "call_1");
    assert_eq!(calls[0].metadata["handled_by"], "fs");
    let arguments: Value = serde_json::from_str(&calls[0].content).unwrap();
    assert_eq!(arguments["path"], json!(file));
    let results = tool_results(&items);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].metadata["tool_call_id"], "call_1");
    assert_eq!(results[0].metadata["name"], "read_text_file");
    assert_eq!(results[0].metadata["ok"], true);
    assert!(results[0].content.contains("kumquat"), "{:?}", results[0]);
    let kinds: Vec<bool> = deltas(&items)
        .iter()
        .map(|d| d.kind == DeltaKind::Text)
        .collect();
    assert_eq!(
        kinds.last(),
        Some(&true),
        "the answer comes after the tool result"
    );

    // The model was offered the server's tools and got the file's content back.
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    let offered: Vec<&str> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    assert!(offered.contains(&"read_text_file"), "{offered:?}");
    assert!(offered.contains(&"list_directory"), "{offered:?}");

    // `include_tools` offers only the named tools of a server.
    let model = ModelServer::start(vec![Reply::text("fine")]).await;
    let mut spec = filesystem(&dir_path);
    spec["include_tools"] = json!(["read_text_file", "list_directory"]);
    let agent = runtime(&model, json!({ "mcp_servers": { "fs": spec } }));
    finished(&collect(&agent, TurnRequest::new("which tools?")).await);
    let offered: Vec<String> = model.requests()[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["function"]["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(offered, ["read_text_file", "list_directory"]);
    let fed_back = tool_messages(&requests[1]);
    assert_eq!(fed_back.len(), 1);
    assert!(
        fed_back[0].contains("the secret word is kumquat"),
        "{fed_back:?}"
    );
    let assistant = &requests[1]["messages"][1];
    assert_eq!(assistant["role"], "assistant");
    assert_eq!(assistant["tool_calls"][0]["id"], "call_1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the reference MCP servers from npm: scripts/mcp-servers.sh; CI runs it"]
async fn servers_are_reused_across_turns_and_their_group_is_killed_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    let model = ModelServer::start(vec![
        Reply::call("a", "list_allowed_directories", json!({})),
        Reply::text("done"),
    ])
    .await;
    // Through a shell, so the server is a grandchild: only a group kill reaches it.
    let entry = server_entry("server-filesystem");
    let spec = json!({ "command": "sh", "args": ["-c", format!("node '{entry}' '{}'", dir_path.display())] });
    let agent = runtime(&model, json!({ "mcp_servers": { "fs": spec } }));

    finished(&collect(&agent, TurnRequest::new("one")).await);
    let first = agent.server_pids();
    assert_eq!(first.len(), 1, "{first:?}");
    let shell = first[0].1;
    let node = children(shell);
    assert_eq!(node.len(), 1, "the shell runs node: {node:?}");

    // A second turn (the script now only answers; not streamed) uses the same server.
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        agent.run_turn(TurnRequest::new("two")),
    )
    .await
    .expect("the turn ended within a minute")
    .unwrap();
    assert_eq!(output.content, "done");
    assert_eq!(agent.server_pids(), first);

    drop(agent);
    assert!(gone(shell), "the shell {shell} outlived the runtime");
    assert!(gone(node[0]), "the server {} outlived the runtime", node[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the reference MCP servers from npm: scripts/mcp-servers.sh; CI runs it"]
async fn an_unknown_tool_is_fed_back_and_the_loop_goes_on() {
    let model = ModelServer::start(vec![
        Reply::call("x", "launch_rockets", json!({ "count": 3 })),
        Reply::text("I cannot do that."),
    ])
    .await;
    let agent = runtime(&model, json!({ "mcp_servers": { "every": everything() } }));
    let items = collect(&agent, TurnRequest::new("launch")).await;
    let output = finished(&items);
    assert_eq!(output.content, "I cannot do that.");
    let calls = tool_calls(&items);
    assert_eq!(calls[0].metadata["handled_by"], "unknown");
    let results = tool_results(&items);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].metadata["ok"], false);
    let fed_back = tool_messages(&model.requests()[1]);
    assert!(
        fed_back[0].starts_with("error: there is no tool named `launch_rockets`"),
        "{fed_back:?}"
    );
    assert!(
        fed_back[0].contains("echo"),
        "the error lists the tools: {fed_back:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the reference MCP servers from npm: scripts/mcp-servers.sh; CI runs it"]
async fn a_tool_error_is_fed_back_to_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    let model = ModelServer::start(vec![
        Reply::call("r", "read_text_file", json!({ "path": "/etc/passwd" })),
        Reply::text("That file is outside what I may read."),
    ])
    .await;
    let agent = runtime(
        &model,
        json!({ "mcp_servers": { "fs": filesystem(&dir_path) } }),
    );
    let items = collect(&agent, TurnRequest::new("read /etc/passwd")).await;
    let output = finished(&items);
    assert_eq!(output.finish_reason, FinishReason::Stop);
    let results = tool_results(&items);
    assert_eq!(results[0].metadata["ok"], false);
    assert!(
        results[0].content.contains("Access denied"),
        "{:?}",
        results[0]
    );
    let fed_back = tool_messages(&model.requests()[1]);
    assert!(fed_back[0].contains("Access denied"), "{fed_back:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the reference MCP servers from npm: scripts/mcp-servers.sh; CI runs it"]
async fn a_tool_result_over_its_byte_limit_is_a_named_failure_not_a_cut_answer() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    let file = dir_path.join("big.txt");
    std::fs::write(&file, "0123456789abcdef".repeat(1024)).unwrap();
    let model = ModelServer::start(vec![
        Reply::call("r", "read_text_file", json!({ "path": file })),
        Reply::text("Too big; I will ask for less."),
    ])
    .await;
    let agent = runtime(
        &model,
        json!({ "mcp_servers": { "fs": filesystem(&dir_path) }, "tool_result_max_bytes": 4096 }),
    );
    let items = collect(&agent, TurnRequest::new("read big.txt")).await;
    assert_eq!(finished(&items).finish_reason, FinishReason::Stop);
    let results = tool_results(&items);
    assert_eq!(results[0].metadata["ok"], false);
    assert_eq!(results[0].metadata["error"], "tool_result_too_large");
    let fed_back = tool_messages(&model.requests()[1]);
    assert!(fed_back[0].contains("16384 bytes"), "{fed_back:?}");
    assert!(
        fed_back[0].contains("tool_result_max_bytes"),
        "{fed_back:?}"
    );
    assert!(
        !fed_back[0].contains("0123456789abcdef"),
        "no part of the result"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the reference MCP servers from npm: scripts/mcp-servers.sh; CI runs it"]
async fn a_hanging_call_times_out_is_cancelled_and_the_server_serves_the_next_call() {
    let model = ModelServer::start(vec![
        Reply::call(
            "slow",
            "trigger-long-running-operation",
            json!({ "duration": 600, "steps": 600 }),
        ),
        Reply::call("fast", "echo", json!({ "message": "still here" })),
        Reply::text("ok"),
    ])
    .await;
    let agent = runtime(
        &model,
        json!({ "mcp_servers": { "every": everything() }, "tool_timeout_ms": 1000 }),
    );
    let items = collect(&agent, TurnRequest::new("go")).await;
    let output = finished(&items);
    assert_eq!(output.content, "ok");
    let results = tool_results(&items);
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].metadata["ok"], false);
    assert!(
        results[0].content.contains("did not answer within 1000 ms"),
        "{:?}",
        results[0]
    );
    assert_eq!(results[1].metadata["ok"], true);
    assert!(
        results[1].content.contains("still here"),
        "{:?}",
        results[1]
    );
    let fed_back = tool_messages(&model.requests()[1]);
    assert!(fed_back[0].contains("was cancelled"), "{fed_back:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the reference MCP servers from npm: scripts/mcp-servers.sh; CI runs it"]
async fn a_server_that_dies_mid_turn_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let entry = server_entry("server-everything");
    let spec = json!({ "command": "sh", "args": ["-c",
        format!("echo $$ >> '{}'; exec node '{entry}' stdio", pids.display())] });
    let pids_file = pids.clone();
    let kill = std::sync::Arc::new(move || {
        let text = std::fs::read_to_string(&pids_file).unwrap();
        let pid = text.lines().last().unwrap().trim().to_owned();
        let status = std::process::Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    });
    let model = ModelServer::start(vec![
        Reply::call("1", "echo", json!({ "message": "before" })),
        // The server is killed while the model "thinks"; the runtime then calls it.
        Reply::After(
            kill,
            Box::new(Reply::call("2", "echo", json!({ "message": "during" }))),
        ),
        Reply::call("3", "echo", json!({ "message": "after" })),
        Reply::text("survived"),
    ])
    .await;
    let agent = runtime(&model, json!({ "mcp_servers": { "every": spec } }));
    let items = collect(&agent, TurnRequest::new("go")).await;
    let output = finished(&items);
    assert_eq!(output.content, "survived");
    let results = tool_results(&items);
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].metadata["ok"], true);
    // The second call found the server dead: restarted first (ok), or it died under the call
    // (an error fed back); the third call always reaches a live server.
    if results[1].metadata["ok"] == false {
        assert!(
            results[1].content.contains("stopped during the call"),
            "{:?}",
            results[1]
        );
    }
    assert_eq!(results[2].metadata["ok"], true, "{:?}", results[2]);
    assert!(results[2].content.contains("after"));
    let started: Vec<u32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(
        started.len(),
        2,
        "started once, restarted once: {started:?}"
    );
    assert_eq!(agent.server_pids()[0].1, started[1]);
    drop(agent);
    assert!(gone(started[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the reference MCP servers from npm: scripts/mcp-servers.sh; CI runs it"]
async fn a_server_that_does_not_start_is_a_named_error() {
    let model = ModelServer::start(vec![Reply::text("never")]).await;

    // No such program.
    let agent = runtime(
        &model,
        json!({ "mcp_servers": { "ghost": { "command": "/nonexistent/mcp-server" } } }),
    );
    let error = failed(&collect(&agent, TurnRequest::new("x")).await);
    assert_eq!(error.kind, ErrorKind::Unavailable);
    assert_eq!(error.metadata["error"], "mcp_server_start");
    assert_eq!(error.metadata["mcp_server"], "ghost");
    assert!(error.message.contains("/nonexistent/mcp-server"), "{error}");

    // A program that exits at once, saying why on stderr.
    let agent = runtime(
        &model,
        json!({ "mcp_servers": { "broken": { "command": "sh", "args": ["-c", "echo 'no config\u{1b}[31m' >&2; exit 3"] } } }),
    );
    let error = failed(&collect(&agent, TurnRequest::new("x")).await);
    assert_eq!(error.metadata["error"], "mcp_server_start");
    assert!(error.message.contains("no config"), "{error}");
    assert!(
        !error.message.contains('\u{1b}'),
        "control characters are escaped: {error:?}"
    );

    // A program that never answers the handshake: a timeout, and the program is killed.
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let agent = runtime(
        &model,
        json!({ "startup_timeout_ms": 500, "mcp_servers": { "mute": { "command": "sh",
            "args": ["-c", format!("echo $$ > '{}'; exec sleep 600", pid_file.display())] } } }),
    );
    let error = failed(&collect(&agent, TurnRequest::new("x")).await);
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert_eq!(error.metadata["error"], "mcp_server_start_timeout");
    assert_eq!(error.metadata["timeout_ms"], 500);
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(gone(pid), "the server that did not start was left running");
    assert!(
        model.requests().is_empty(),
        "no model call without the servers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the reference MCP servers from npm: scripts/mcp-servers.sh; CI runs it"]
async fn a_loop_that_never_ends_stops_at_max_steps() {
    let model = ModelServer::start(vec![Reply::call(
        "again",
        "echo",
        json!({ "message": "more" }),
    )])
    .await;
    let agent = runtime(
        &model,
        json!({ "mcp_servers": { "every": everything() }, "max_steps": 3 }),
    );
    let items = collect(&agent, TurnRequest::new("loop")).await;
    let error = failed(&items);
    assert_eq!(error.kind, ErrorKind::Other("max_steps".into()));
    assert_eq!(error.metadata["error"], "max_steps");
    assert_eq!(error.metadata["max_steps"], 3);
    assert_eq!(error.metadata["usage"]["total_tokens"], 3 * STEP_USAGE);
    assert_eq!(model.requests().len(), 3);
    // The calls of the last step are shown but not run: no step is left to read their results.
    assert_eq!(tool_calls(&items).len(), 3);
    assert_eq!(tool_results(&items).len(), 2);

    // A request can lower the limit for one turn.
    let items = collect(
        &agent,
        TurnRequest::new("loop").with_config(json!({ "max_steps": 1 })),
    )
    .await;
    assert_eq!(failed(&items).metadata["max_steps"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the reference MCP servers from npm: scripts/mcp-servers.sh; CI runs it"]
async fn host_tools_are_handed_back_with_the_transcript() {
    let model = ModelServer::start(vec![Reply::Calls(vec![
        ("e".into(), "echo".into(), json!({ "message": "hi" })),
        ("w".into(), "get_weather".into(), json!({ "city": "Paris" })),
    ])])
    .await;
    let agent = runtime(&model, json!({ "mcp_servers": { "every": everything() } }));
    let request = TurnRequest::new("weather?").with_tools(vec![ToolDefinition::new(
        "get_weather",
        "The weather of a city",
        json!({ "type": "object", "properties": { "city": { "type": "string" } } }),
    )]);
    let items = collect(&agent, request).await;
    let output = finished(&items);
    assert_eq!(output.finish_reason, FinishReason::ToolCalls);
    assert_eq!(output.tool_calls.len(), 1);
    assert_eq!(output.tool_calls[0].name, "get_weather");
    assert_eq!(output.tool_calls[0].arguments, json!({ "city": "Paris" }));
    // The runtime ran echo; the host gets the assistant message and echo's result to append.
    let transcript: Vec<Message> =
        serde_json::from_value(output.metadata["transcript"].clone()).unwrap();
    assert_eq!(transcript.len(), 2);
    assert_eq!(transcript[0].tool_calls.len(), 2);
    assert_eq!(transcript[1].tool_call_id.as_deref(), Some("e"));
    assert!(transcript[1].content.contains("hi"));
    let handled: Vec<&Value> = tool_calls(&items)
        .iter()
        .map(|d| &d.metadata["handled_by"])
        .collect();
    assert_eq!(handled, [&json!("every"), &json!("host")]);
    // The host's tool was offered beside the server's.
    let offered = model.requests()[0]["tools"].to_string();
    assert!(offered.contains("get_weather") && offered.contains("\"echo\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the reference MCP servers from npm: scripts/mcp-servers.sh; CI runs it"]
async fn a_dropped_turn_cancels_its_call_and_the_runtime_goes_on() {
    let model = ModelServer::start(vec![
        Reply::call(
            "slow",
            "trigger-long-running-operation",
            json!({ "duration": 600, "steps": 600 }),
        ),
        Reply::text("later"),
    ])
    .await;
    let agent = runtime(&model, json!({ "mcp_servers": { "every": everything() } }));
    let mut stream = Box::pin(agent.clone().stream_turn(TurnRequest::new("slow")));
    // Wait for the decided call, then drop the turn while the call runs.
    let seen = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(item) = stream.next().await {
            if let Ok(StreamItem::Delta(delta)) = item
                && delta.kind == DeltaKind::ToolCall
            {
                return true;
            }
        }
        false
    })
    .await
    .expect("the call was decided within a minute");
    assert!(seen);
    drop(stream);
    let pid = agent.server_pids()[0].1;
    // The next turn (the script answers now) uses the same, still healthy server.
    let output = finished(&collect(&agent, TurnRequest::new("again")).await);
    assert_eq!(output.content, "later");
    assert_eq!(agent.server_pids()[0].1, pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the reference MCP servers from npm: scripts/mcp-servers.sh; CI runs it"]
async fn a_streamable_http_server_works_like_a_stdio_one() {
    // The everything server over streamable HTTP, on a free loopback port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = tokio::process::Command::new("node")
        .args([server_entry("server-everything").as_str(), "streamableHttp"])
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Ready when it says it listens.
    let mut stderr = tokio::io::BufReader::new(server.stderr.take().unwrap());
    tokio::time::timeout(Duration::from_secs(30), async {
        use tokio::io::AsyncBufReadExt as _;
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                stderr.read_line(&mut line).await.unwrap() > 0,
                "the server exited"
            );
            if line.contains("listening on port") {
                break;
            }
        }
    })
    .await
    .expect("the HTTP server started within 30 s");

    let model = ModelServer::start(vec![
        Reply::call("s", "get-sum", json!({ "a": 20, "b": 22 })),
        Reply::text("42"),
    ])
    .await;
    let url = format!("http://127.0.0.1:{port}/mcp");
    let agent = runtime(&model, json!({ "mcp_servers": { "web": { "url": url } } }));
    let items = collect(&agent, TurnRequest::new("20 + 22?")).await;
    let output = finished(&items);
    assert_eq!(output.content, "42");
    let results = tool_results(&items);
    assert_eq!(results[0].metadata["ok"], true);
    assert!(results[0].content.contains("42"), "{:?}", results[0]);
    drop(agent);
    let _ = server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the reference MCP servers from npm: scripts/mcp-servers.sh; CI runs it"]
async fn request_servers_are_accepted_or_refused_by_config() {
    // While the model answers the second call, the request's server runs: its pids are
    // recorded then, to check it is stopped when the turn ends.
    let during: std::sync::Arc<std::sync::Mutex<Vec<u32>>> = std::sync::Arc::default();
    let record = {
        let during = during.clone();
        std::sync::Arc::new(move || {
            // Children of any thread of this process (a task's `children` lists only the
            // ones that thread started).
            let tasks = std::fs::read_dir("/proc/self/task").unwrap();
            *during.lock().unwrap() = tasks
                .flatten()
                .filter_map(|task| task.file_name().to_str()?.parse::<u32>().ok())
                .flat_map(|tid| {
                    std::fs::read_to_string(format!("/proc/self/task/{tid}/children"))
                        .unwrap_or_default()
                        .split_whitespace()
                        .filter_map(|pid| pid.parse::<u32>().ok())
                        .collect::<Vec<_>>()
                })
                .collect();
        })
    };
    let model = ModelServer::start(vec![
        Reply::call("e", "echo", json!({ "message": "per request" })),
        Reply::After(record, Box::new(Reply::text("fine"))),
    ])
    .await;
    let request = || TurnRequest::new("x").with_mcp_servers(json!({ "every": everything() }));
    let agent = runtime(&model, json!({ "request_mcp_servers": true }));
    let items = collect(&agent, request()).await;
    assert_eq!(finished(&items).content, "fine");
    assert!(tool_results(&items)[0].content.contains("per request"));
    // The request's server was the turn's alone: not kept by the instance, and stopped.
    assert!(agent.server_pids().is_empty(), "{:?}", agent.server_pids());
    let pids = during.lock().unwrap().clone();
    assert!(!pids.is_empty(), "the request's server ran during the turn");
    for pid in pids {
        assert!(gone(pid), "the request's server {pid} outlived its turn");
    }

    let locked = runtime(&model, json!({}));
    let error = failed(&collect(&locked, request()).await);
    assert_eq!(error.kind, ErrorKind::Unsupported);
    assert_eq!(error.metadata["error"], "request_mcp_servers_refused");

    let error = failed(
        &collect(
            &agent,
            TurnRequest::new("x").with_mcp_servers(json!({ "bad": { "args": [] } })),
        )
        .await,
    );
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert!(error.message.contains("MCP server `bad`"), "{error}");

    // The per-turn config takes limits only; servers go in `mcp_servers`.
    let error = failed(
        &collect(
            &agent,
            TurnRequest::new("x").with_config(json!({ "mcp_servers": {} })),
        )
        .await,
    );
    assert_eq!(error.metadata["error"], "invalid_turn_config");
}
