//! `serve --redis`: the HTTP front sends its turns through the queue (issue 15).

use super::*;

/// A `runtimes worker` process with echo alone installed; started (its advert written) when
/// [`QueueWorker::start`] returns.
struct QueueWorker {
    /// Killed when dropped.
    _child: Child,
    _plugins: TempDir,
}

impl QueueWorker {
    async fn start(url: &str, prefix: &str) -> QueueWorker {
        let plugins = plugin_dir();
        install(plugins.path(), &artifacts().echo, "libecho");
        let mut child = Command::new(&artifacts().runtimes)
            .arg("--plugin-dir")
            .arg(plugins.path())
            .args(["worker", "--redis", url, "--prefix", prefix])
            // `serve --config echo=...` travels with each job: the worker allows that key.
            .args(["--allow-job-config", "echo=delay_ms"])
            .env_remove("AGENT_RUNTIMES_PATH")
            .env("RUNTIMES_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("runtimes worker starts");
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.expect("stderr readable") {
                if line.contains("worker started") {
                    return;
                }
            }
            panic!("the worker exited before it started");
        })
        .await
        .expect("the worker starts within the wait");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        QueueWorker {
            _child: child,
            _plugins: plugins,
        }
    }
}

/// A queue of its own, a worker on it, and a `serve --redis` front (whose own plugin folder
/// has echo and the fixture library: it must not use them).
async fn scaled(test: &str, serve_args: &[&str]) -> (Server, QueueWorker, QueueClient) {
    let url = crate::queue::redis_url();
    let config = crate::queue::queue(test);
    let worker = QueueWorker::start(url, &config.prefix).await;
    let mut args = vec!["--redis", url, "--prefix", &config.prefix];
    args.extend_from_slice(serve_args);
    let server = Server::start(&args).await;
    let client = QueueClient::connect(url, config).await.expect("Redis");
    (server, worker, client)
}

/// A response body or chunk without what differs between two servers: `id`, `created`.
fn normalised(mut value: Value) -> Value {
    if let Some(object) = value.as_object_mut() {
        object.remove("id");
        object.remove("created");
    }
    value
}

/// The turn's results read to their end from the queue (the worker publishes the last one
/// when the turn ends, cancelled or not).
async fn queued_results(
    client: &QueueClient,
    execution_id: &str,
) -> Vec<Result<StreamItem, RuntimeError>> {
    timeout(WAIT, client.results(execution_id).collect::<Vec<_>>())
        .await
        .expect("the turn ends within the wait")
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs redis-server: scripts/redis.sh start"]
async fn serve_redis_answers_like_a_local_server_through_a_worker() {
    let (queued, _worker, client) = scaled("serve-same", &[]).await;
    let local = Server::start(&[]).await;

    // Models: what the worker advertises (echo and its alias), not the front's own plugins.
    let (status, body) = get(&queued, "/v1/models").await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["echo", "parrot"]);
    let (status, body) = get(&queued, "/v1/models/parrot").await;
    assert_eq!((status, &body["id"]), (StatusCode::OK, &json!("parrot")));
    let (status, body) = get(&queued, "/v1/runtimes").await;
    assert_eq!(status, 200);
    assert_eq!(body["runtimes"][0]["id"], "echo");
    assert_eq!(body["runtimes"][0]["capabilities"][0], "streaming");
    assert_eq!(body["workers"].as_array().unwrap().len(), 1, "{body}");
    // The same, from a shell: the backlog and the live workers with their runtimes.
    let prefix = client.config().prefix.clone();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&artifacts().runtimes)
            .args(["queue", "status", "--json", "--prefix", &prefix])
            .args(["--redis", crate::queue::redis_url()])
            .output()
            .expect("runtimes runs")
    })
    .await
    .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        (&status["waiting"], &status["running"], &status["dead"]),
        (&json!(0), &json!(0), &json!(0))
    );
    assert_eq!(
        status["workers"][0]["runtimes"][0]["id"], "echo",
        "{status}"
    );

    // A completion: the same body as a local server's but for id and created.
    let request = json!({"model": "parrot", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello you"},
        {"role": "user", "content": "hello there world"}
    ]});
    let (status, headers, body) = post(&queued, "/v1/chat/completions", &request).await;
    assert_eq!(status, 200, "{body}");
    let execution_id = headers["x-execution-id"].to_str().unwrap().to_owned();
    assert_eq!(body["id"], format!("chatcmpl-{execution_id}"));
    let (_, _, expected) = post(&local, "/v1/chat/completions", &request).await;
    assert_eq!(normalised(body), normalised(expected));
    let state = client
        .status(&execution_id)
        .await
        .unwrap()
        .expect("a status");
    assert_eq!((state.status, state.attempts), (TurnStatus::Complete, 1));

    // A stream, with usage: the same chunks, one per word.
    let request = json!({"model": "echo", "messages": user("one two three four"), "stream": true,
                         "stream_options": {"include_usage": true}});
    let chunks = |data: Vec<String>| -> Vec<Value> {
        data.iter()
            .map(|d| match serde_json::from_str::<Value>(d) {
                Ok(chunk) => normalised(chunk),
                Err(_) => json!(d),
            })
            .collect()
    };
    let (status, headers, mut events) = stream(&queued, &request).await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let got = chunks(events.rest().await);
    let (_, _, mut events) = stream(&local, &request).await;
    let want = chunks(events.rest().await);
    assert_eq!(got, want);
    assert_eq!(
        got.len(),
        8,
        "role, four words, finish, usage, [DONE]: {got:?}"
    );
    assert_eq!(
        queued
            .metric(
                "runtimes_serve_turns_total",
                &["runtime=\"echo\"", "outcome=\"ok\""]
            )
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs redis-server: scripts/redis.sh start"]
async fn serve_redis_an_unknown_model_is_the_same_404_as_local() {
    let (queued, _worker, client) = scaled("serve-unknown", &[]).await;
    let (status, _, body) = post(
        &queued,
        "/v1/chat/completions",
        &json!({"model": "fixture-tools", "messages": user("x")}),
    )
    .await;
    // Installed in the front's plugin folder, but no worker serves it.
    assert_eq!(status, 404, "{body}");
    assert_openai_error(
        &body,
        "invalid_request_error",
        Some("model"),
        "model_not_found",
    );
    assert_eq!(
        body["error"]["message"],
        "the model `fixture-tools` does not exist: available models are echo, parrot"
    );
    let (status, body) = get(&queued, "/v1/models/nothing").await;
    assert_eq!(status, 404);
    assert_openai_error(
        &body,
        "invalid_request_error",
        Some("model"),
        "model_not_found",
    );
    assert_eq!(
        client.backlog().await.unwrap().jobs,
        0,
        "nothing was queued"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs redis-server: scripts/redis.sh start"]
async fn serve_redis_a_client_that_disconnects_cancels_its_queued_turn() {
    // 40 words at 200 ms each: about 8 s if it ran to its end.
    let (mut queued, _worker, client) = scaled(
        "serve-disconnect",
        &["--config", r#"echo={"delay_ms": 200}"#],
    )
    .await;
    let prompt = vec!["word"; 40].join(" ");
    let (status, headers, mut events) = stream(
        &queued,
        &json!({"model": "echo", "messages": user(&prompt), "stream": true}),
    )
    .await;
    assert_eq!(status, 200);
    let execution_id = headers["x-execution-id"].to_str().unwrap().to_owned();
    events.next().await.expect("the role chunk");
    let first: Value =
        serde_json::from_str(&events.next().await.expect("the first delta")).unwrap();
    assert_eq!(first["choices"][0]["delta"]["content"], "word ");
    drop(events);
    queued
        .wait_stderr("the client disconnected: turn cancelled")
        .await;
    let items = queued_results(&client, &execution_id).await;
    let last = items.last().expect("a last item");
    assert_eq!(
        last.as_ref().unwrap_err().kind,
        ErrorKind::Cancelled,
        "{items:?}"
    );
    assert!(items.len() < 40, "it stopped early: {} items", items.len());
    let state = client
        .status(&execution_id)
        .await
        .unwrap()
        .expect("a status");
    assert_eq!(state.status, TurnStatus::Cancelled);
    assert_eq!(
        queued
            .metric("runtimes_serve_turns_total", &["outcome=\"disconnected\""])
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs redis-server: scripts/redis.sh start"]
async fn serve_redis_a_request_timeout_is_a_504_and_cancels_the_queued_turn() {
    let (queued, _worker, client) = scaled(
        "serve-timeout",
        &[
            "--config",
            r#"echo={"delay_ms": 200}"#,
            "--request-timeout",
            "1",
        ],
    )
    .await;
    let prompt = vec!["word"; 40].join(" ");
    let (status, headers, body) = post(
        &queued,
        "/v1/chat/completions",
        &json!({"model": "echo", "messages": user(&prompt)}),
    )
    .await;
    assert_eq!(status, 504, "{body}");
    assert_openai_error(&body, "timeout_error", None, "timeout");
    let execution_id = headers["x-execution-id"].to_str().unwrap().to_owned();
    let items = queued_results(&client, &execution_id).await;
    assert_eq!(
        items.last().unwrap().as_ref().unwrap_err().kind,
        ErrorKind::Cancelled,
        "{items:?}"
    );
    let state = client
        .status(&execution_id)
        .await
        .unwrap()
        .expect("a status");
    assert_eq!(state.status, TurnStatus::Cancelled);
}

/// Needs no Redis: the point is that there is none.
#[tokio::test(flavor = "multi_thread")]
async fn serve_redis_without_a_reachable_redis_answers_503_and_never_hangs() {
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let mut server = Server::start(&["--redis", &url, "--redis-wait", "2"]).await;
    server.wait_stderr("serving anyway").await;
    let started = std::time::Instant::now();
    for streamed in [false, true] {
        let asked = std::time::Instant::now();
        let (status, headers, body) = post(
            &server,
            "/v1/chat/completions",
            &json!({"model": "echo", "messages": user("x"), "stream": streamed}),
        )
        .await;
        // `--redis-wait` is a deadline: answered at 2 s, not a retry pause later.
        let took = asked.elapsed();
        assert!(
            took < Duration::from_millis(2_500),
            "answered after {took:?}"
        );
        assert_eq!(status, 503, "{body}");
        assert_openai_error(&body, "server_error", None, "unavailable");
        // The client learns it is unavailable, with a request id; the log has the reason.
        let message = body["error"]["message"].as_str().unwrap();
        let id = headers["x-request-id"].to_str().unwrap().to_owned();
        assert!(message.contains(&id), "{message}");
        assert!(!message.contains(&port.to_string()), "{message}");
        let logged = server.wait_stderr(&id).await;
        assert!(logged.contains("Redis is unreachable"), "{logged}");
        assert_eq!(headers["retry-after"], "1");
    }
    let (status, body) = get(&server, "/v1/models").await;
    assert_eq!(status, 503, "{body}");
    assert_openai_error(&body, "server_error", None, "unavailable");
    let (status, body) = get(&server, "/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(
        (&body["status"], &body["queue"]),
        (&json!("ok"), &json!("unreachable"))
    );
    // Each wait is bounded by --redis-wait (plus a connection attempt), never a hang.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // A URL that is not one stops the server at start, as a usage error.
    let output = std::process::Command::new(&artifacts().runtimes)
        .args(["serve", "--addr", "127.0.0.1:0", "--redis", "not a url"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not usable"));
}
