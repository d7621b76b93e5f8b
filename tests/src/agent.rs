//! The `agent` plugin as hosts use it: loaded through the loader (its MCP servers and rmcp's
//! tasks on the plugin's own tokio runtime, across the ABI boundary), and driven by the
//! `runtimes` command, whose human and `--json` output show the tool calls and results as they
//! happen. The model is a scripted OpenAI-compatible server (axum on 127.0.0.1); the MCP
//! server is the reference `@modelcontextprotocol/server-filesystem` installed by
//! `scripts/mcp-servers.sh`. The tests are `#[ignore]`d (they need node and those servers); CI
//! installs them and runs the tests with `--ignored`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::routing::post;
use futures::StreamExt;
use runtime_api::{DeltaKind, FinishReason, StreamItem, TurnRequest, Value};
use serde_json::json;

use crate::support::built_plugin;
use crate::support::{artifacts, install, plugin_dir, registry};

/// A scripted model: the first request gets a tool call reading `path`, every later one the
/// answer. Returns the `/v1` base URL and the recorded request bodies.
async fn scripted_model(path: &Path, answer: &'static str) -> (String, Arc<Mutex<Vec<Value>>>) {
    type Shared = (Arc<Mutex<Vec<Value>>>, String, &'static str);
    async fn completions(
        State((requests, path, answer)): State<Shared>,
        body: String,
    ) -> impl axum::response::IntoResponse {
        let n = {
            let mut requests = requests.lock().unwrap();
            requests.push(serde_json::from_str(&body).unwrap_or(Value::Null));
            requests.len()
        };
        let chunk = |delta: Value, finish: Value| json!({ "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] });
        let events = if n == 1 {
            let arguments = json!({ "path": path }).to_string();
            vec![
                chunk(
                    json!({ "tool_calls": [{ "index": 0, "id": "call_fs", "type": "function",
                    "function": { "name": "read_text_file", "arguments": arguments } }] }),
                    Value::Null,
                ),
                chunk(json!({}), json!("tool_calls")),
            ]
        } else {
            vec![
                chunk(json!({ "content": answer }), Value::Null),
                chunk(json!({}), json!("stop")),
            ]
        };
        let mut body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        body.push_str(&format!(
            "data: {}\n\ndata: [DONE]\n\n",
            json!({ "choices": [], "usage": { "prompt_tokens": 7, "completion_tokens": 3 } })
        ));
        ([(CONTENT_TYPE, "text/event-stream")], body)
    }
    let requests = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state((requests.clone(), path.display().to_string(), answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{address}/v1"), requests)
}

/// The filesystem server's entry point, installed by `scripts/mcp-servers.sh`.
fn filesystem_entry() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../scripts/mcp-servers/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js",
    );
    assert!(
        path.is_file(),
        "{} is missing: run scripts/mcp-servers.sh (the pinned reference MCP servers from npm)",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

fn agent_library() -> &'static PathBuf {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY.get_or_init(|| built_plugin("agent-runtime", "agent_runtime"))
}

/// A folder with a file to read, and the agent config over it.
fn setup() -> (tempfile::TempDir, PathBuf, Value) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let file = root.join("todo.txt");
    std::fs::write(&file, "buy kumquats\n").unwrap();
    let config = json!({
        "model": "scripted",
        "mcp_servers": { "fs": { "command": "node", "args": [filesystem_entry(), root] } },
    });
    (dir, file, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the reference MCP servers from npm: scripts/mcp-servers.sh; CI runs it"]
async fn the_agent_plugin_runs_the_loop_across_the_boundary() {
    let (_files, file, mut config) = setup();
    let (base_url, requests) = scripted_model(&file, "Buy kumquats.").await;
    config["base_url"] = json!(base_url);

    let plugins = plugin_dir();
    install(plugins.path(), agent_library(), "libagent_runtime");
    let runtimes = registry(&[plugins.path()]);
    let agent = runtimes
        .new_instance("agent", &config)
        .expect("the agent runtime resolves");
    let items: Vec<_> = tokio::time::timeout(
        Duration::from_secs(60),
        agent
            .stream_turn(TurnRequest::new("What is on my todo list?"))
            .collect::<Vec<_>>(),
    )
    .await
    .expect("the turn ended within a minute");
    let (last, before) = items.split_last().unwrap();
    let Ok(StreamItem::Done(output)) = last else {
        panic!("{items:?}")
    };
    assert_eq!(output.content, "Buy kumquats.");
    assert_eq!(output.finish_reason, FinishReason::Stop);
    assert_eq!(output.usage.input_tokens, 14, "usage of both model calls");
    let deltas: Vec<_> = before
        .iter()
        .map(|i| match i {
            Ok(StreamItem::Delta(d)) => d,
            other => panic!("{other:?}"),
        })
        .collect();
    let call = deltas
        .iter()
        .find(|d| d.kind == DeltaKind::ToolCall)
        .expect("a tool call delta");
    assert_eq!(call.metadata["name"], "read_text_file");
    let result = deltas
        .iter()
        .find(|d| d.kind == DeltaKind::ToolResult)
        .expect("a tool result delta");
    assert_eq!(result.metadata["ok"], true);
    assert!(result.content.contains("buy kumquats"));
    let fed_back = requests.lock().unwrap()[1]["messages"].to_string();
    assert!(fed_back.contains("buy kumquats"), "{fed_back}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the reference MCP servers from npm: scripts/mcp-servers.sh; CI runs it"]
async fn runtimes_stream_shows_tool_calls_and_results_as_they_happen() {
    let (_files, file, config) = setup();
    let home = plugin_dir();
    let plugins = plugin_dir();
    install(plugins.path(), agent_library(), "libagent_runtime");
    let dir = plugins.path().display().to_string();
    // Each run gets a fresh script (its first request is answered with the tool call).
    let run = async |json: bool| {
        let (base_url, _requests) = scripted_model(&file, "Buy kumquats.").await;
        let mut config = config.clone();
        config["base_url"] = json!(base_url);
        let config = config.to_string();
        let mut command = tokio::process::Command::new(&artifacts().runtimes);
        command
            .args([
                "--plugin-dir",
                &dir,
                "stream",
                "agent",
                "What is on my todo list?",
                "--config",
                &config,
            ])
            .env_remove("AGENT_RUNTIMES_PATH")
            .env("XDG_DATA_HOME", home.path().join("data"))
            .env("HOME", home.path())
            .env("NO_COLOR", "1")
            .kill_on_drop(true);
        if json {
            command.arg("--json");
        }
        tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .expect("runtimes ended within a minute")
            .unwrap()
    };

    // Human: the answer on stdout (piped), the tool activity on stderr.
    let output = run(false).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stdout, "Buy kumquats.\n");
    assert!(
        stderr.contains("[tool call] read_text_file {\"path\":"),
        "{stderr}"
    );
    assert!(
        stderr.contains("[tool result] read_text_file ok: buy kumquats"),
        "{stderr}"
    );

    // JSON: one object per delta, the call and its result among them, then the result.
    let output = run(true).await;
    assert!(output.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let call = lines
        .iter()
        .position(|l| l["delta"]["kind"] == "tool_call")
        .expect("a tool call line");
    let result = lines
        .iter()
        .position(|l| {
            l["delta"]["metadata"]["tool_call_id"] == "call_fs" && l["delta"]["kind"] != "tool_call"
        })
        .expect("a tool result line");
    assert!(call < result);
    assert_eq!(lines[result]["delta"]["metadata"]["ok"], true);
    assert_eq!(
        lines[result]["delta"]["metadata"]["tool_call_id"],
        "call_fs"
    );
    let done = lines.last().unwrap();
    assert_eq!(done["type"], "done");
    assert_eq!(done["output"]["content"], "Buy kumquats.");
}

/// The agent at the process level, in its sandbox, with the real filesystem MCP server: its
/// declared permissions (the model's port, `node` as its server's program) and the operator's
/// grants for this runtime alone (the server's scripts and the folder it serves, read-only)
/// are enough for the whole loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the reference MCP servers from npm: scripts/mcp-servers.sh; CI runs it"]
async fn the_agent_runs_its_loop_from_its_sandbox_at_the_process_level() {
    let (files, file, config) = setup();
    let plugins = plugin_dir();
    install(plugins.path(), agent_library(), "libagent_runtime");
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/mcp-servers")
        .canonicalize()
        .unwrap();
    let served = files.path().canonicalize().unwrap();
    // The tool result of one turn of an agent whose runtime is granted `grants`.
    let tool_result = |grants: runtime_loader::sandbox::Policy| {
        let (plugins, mut config, file) = (plugins.path().to_owned(), config.clone(), file.clone());
        async move {
            // A model of its own: the first request of each gets the tool call.
            let (base_url, _requests) = scripted_model(&file, "Buy kumquats.").await;
            config["base_url"] = json!(base_url);
            let runtimes = runtime_loader::Runtimes::with_options(
                runtime_loader::LoaderOptions::STRICT
                    .with_isolation(runtime_loader::Isolation::Process)
                    .with_process(
                        runtime_loader::ProcessOptions::DEFAULT
                            .with_worker(&artifacts().worker)
                            .with_runtime_grants(vec![("agent".to_owned(), grants)]),
                    ),
            );
            runtimes.discover(&runtime_loader::SearchPath::empty().with_dir(&plugins));
            let agent = runtimes.new_instance("agent", &config).unwrap();
            assert_eq!(agent.isolation(), runtime_loader::Isolation::Process);
            let items: Vec<_> = tokio::time::timeout(
                Duration::from_secs(60),
                agent
                    .stream_turn(TurnRequest::new("What is on my todo list?"))
                    .collect::<Vec<_>>(),
            )
            .await
            .expect("the turn ended within a minute");
            assert!(
                matches!(items.last(), Some(Ok(StreamItem::Done(_)))),
                "{items:?}"
            );
            items
                .iter()
                .find_map(|i| match i {
                    Ok(StreamItem::Delta(d)) if d.kind == DeltaKind::ToolResult => Some(d.clone()),
                    _ => None,
                })
                .expect("a tool result delta")
        }
    };
    let granted = runtime_loader::sandbox::Policy::default()
        .with_read(scripts.clone())
        .with_read(served);
    let result = tool_result(granted).await;
    assert_eq!(result.metadata["ok"], true, "{result:?}");
    assert!(result.content.contains("buy kumquats"), "{result:?}");
    // Without the served folder granted, the MCP server (a descendant of the worker, under the
    // same sandbox) cannot read the file.
    let result = tool_result(runtime_loader::sandbox::Policy::default().with_read(scripts)).await;
    assert!(!result.content.contains("buy kumquats"), "{result:?}");
}
