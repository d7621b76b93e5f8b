//! Running the server: bearer auth, `--config` and `--isolate`, the limits (body size,
//! concurrency, request timeout), disconnects, graceful shutdown, and a load test.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn bearer_auth_guards_everything_but_healthz() {
    let server = Server::start_with(
        &["--api-key-env", "SERVE_TEST_KEY"],
        &[("SERVE_TEST_KEY", "s3cret-key")],
        |_| {},
    )
    .await;
    let body = json!({"model": "echo", "messages": user("hi")})
        .to_string()
        .into_bytes();
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong")],
        vec![("authorization", "Bearer s3cret-ke")],
        vec![("authorization", "s3cret-key")],
    ] {
        let (status, response_headers, error) =
            post_raw(&server, "/v1/chat/completions", body.clone(), &headers).await;
        assert_eq!(status, 401, "{headers:?}");
        assert_eq!(response_headers["www-authenticate"], "Bearer");
        assert_openai_error(&error, "authentication_error", None, "invalid_api_key");
    }
    let (status, _, answer) = post_raw(
        &server,
        "/v1/chat/completions",
        body,
        &[("authorization", "Bearer s3cret-key")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["choices"][0]["message"]["content"], "hi");
    for path in ["/v1/models", "/v1/runtimes", "/metrics"] {
        let status = client()
            .get(server.url(path))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401, "{path}");
    }
    assert_eq!(get(&server, "/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_api_key_variable_refuses_to_start() {
    for (args, message) in [(
        vec!["--api-key-env", "SERVE_TEST_UNSET_VARIABLE"],
        "SERVE_TEST_UNSET_VARIABLE",
    )] {
        let output = Command::new(&artifacts().runtimes)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(&args)
            .env_remove("SERVE_TEST_UNSET_VARIABLE")
            .env("NO_COLOR", "1")
            .output()
            .await
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn isolate_serves_every_runtime_from_a_worker_process() {
    let server = Server::start(&["--isolate"]).await;
    let (status, _, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": "echo", "messages": user("from a worker")}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "from a worker");
}

/// `AGENT_RUNTIMES_ISOLATION=process` reaches `serve` as `--isolate` does: a plugin that
/// aborts ends its worker with `crashed`, and the server goes on.
#[tokio::test(flavor = "multi_thread")]
async fn serve_takes_the_isolation_level_from_the_environment() {
    let server = Server::start_with(
        &[],
        &[
            ("AGENT_RUNTIMES_ISOLATION", "process"),
            (
                "AGENT_RUNTIMES_WORKER",
                &artifacts().worker.display().to_string(),
            ),
        ],
        |plugins| {
            install(plugins, &artifacts().hostile, "libhostile");
        },
    )
    .await;
    let (status, _, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": "hostile", "messages": user("abort")}),
    )
    .await;
    assert!(status.is_server_error(), "{status}: {body}");
    assert!(body.to_string().contains("crashed"), "{body}");
    let (status, _, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": "echo", "messages": user("still here")}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "still here");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_creates_a_runtime_with_its_configuration_by_id_and_alias() {
    let server = Server::start(&["--config", r#"faults={"fail_with": "rate_limited"}"#]).await;
    for model in ["fixture-faults", "faults", "fixture-faults/any-model"] {
        let (status, _, body) = post(
            &server,
            "/v1/chat/completions",
            &json!({"model": model, "messages": user("x")}),
        )
        .await;
        assert_eq!(status, 429, "{model}: {body}");
        assert_openai_error(&body, "rate_limit_error", None, "rate_limited");
    }
    let (status, _, _) = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": "fixture", "messages": user("x")}),
    )
    .await;
    assert_eq!(
        status, 200,
        "other runtimes keep their default configuration"
    );

    // A configuration the runtime refuses, an unknown runtime, or bad JSON stop the start.
    let plugins = plugin_dir();
    install(plugins.path(), &artifacts().echo, "libecho");
    for (config, code, message) in [
        (r#"echo={"no_such_key": 1}"#, 3, "could not be created"),
        (r#"nothing={}"#, 2, "no runtime named `nothing`"),
        ("echo={", 2, "not valid JSON"),
        ("echo", 2, "expected NAME=JSON"),
    ] {
        let output = Command::new(&artifacts().runtimes)
            .arg("--plugin-dir")
            .arg(plugins.path())
            .args(["serve", "--addr", "127.0.0.1:0", "--config", config])
            .env("NO_COLOR", "1")
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{config}: {stderr}");
        assert!(stderr.contains(message), "{config}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_limit_is_a_413() {
    let server = Server::start(&["--max-body-bytes", "1024"]).await;
    let big = "x".repeat(4096);
    let (status, _, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": "echo", "messages": user(&big)}),
    )
    .await;
    assert_eq!(status, 413);
    assert_openai_error(&body, "invalid_request_error", None, "request_too_large");
}

#[tokio::test(flavor = "multi_thread")]
async fn turns_beyond_max_concurrent_are_429s() {
    let server = Server::start(&["--max-concurrent", "1"]).await;
    let (status, _, mut first) = stream(
        &server,
        &json!({"model": "fixture-tools", "messages": user("sleep 30000"), "stream": true}),
    )
    .await;
    assert_eq!(status, 200);
    first.next().await.expect("the role chunk");
    let (status, headers, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": "echo", "messages": user("x")}),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "1");
    assert_openai_error(
        &body,
        "rate_limit_error",
        None,
        "too_many_concurrent_requests",
    );
    drop(first);
    server
        .wait_metric("runtimes_serve_turns_in_flight", &[], 0.0)
        .await;
    let (status, _, _) = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": "echo", "messages": user("x")}),
    )
    .await;
    assert_eq!(status, 200, "the permit came back");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_longer_than_the_request_timeout_is_a_504() {
    let server = Server::start(&["--request-timeout", "0.3"]).await;
    let (status, _, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": "fixture-tools", "messages": user("sleep 30000")}),
    )
    .await;
    assert_eq!(status, 504);
    assert_openai_error(&body, "timeout_error", None, "timeout");
}

async fn wait_for_file(path: &Path) {
    for _ in 0..600 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", path.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_disconnects_cancels_its_turn() {
    let mut server = Server::start(&[]).await;
    // Streamed: the client reads the first chunk, then goes away.
    let marker = server.plugins.path().join("streamed.cancelled");
    let (status, _, mut events) = stream(
        &server,
        &json!({"model": "fixture-tools", "stream": true,
                "messages": user(&format!("sleep 30000 {}", marker.display()))}),
    )
    .await;
    assert_eq!(status, 200);
    events.next().await.expect("the role chunk");
    events.next().await.expect("the first delta");
    drop(events);
    wait_for_file(&marker).await;
    server
        .wait_stderr("the client disconnected: turn cancelled")
        .await;

    // Not streamed: the client gives up while the turn runs.
    let marker = server.plugins.path().join("plain.cancelled");
    let url = server.url("/v1/chat/completions");
    let body = json!({"model": "fixture-tools",
                      "messages": user(&format!("sleep 30000 {}", marker.display()))});
    let request = tokio::spawn(async move { client().post(url).json(&body).send().await });
    server
        .wait_metric("runtimes_serve_turns_in_flight", &[], 1.0)
        .await;
    request.abort();
    wait_for_file(&marker).await;
    server
        .wait_metric("runtimes_serve_turns_in_flight", &[], 0.0)
        .await;
    assert_eq!(
        server
            .metric("runtimes_serve_turns_total", &["outcome=\"disconnected\""])
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_accepting_and_lets_running_turns_finish() {
    let mut server = Server::start(&["--shutdown-grace", "30"]).await;
    let (status, _, mut events) = stream(
        &server,
        &json!({"model": "fixture-tools", "messages": user("sleep 1000"), "stream": true}),
    )
    .await;
    assert_eq!(status, 200);
    events.next().await.expect("the role chunk");
    server.terminate();
    server.wait_stderr("shutting down").await;
    let refused = reqwest::Client::new()
        .get(server.url("/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a new connection was accepted: {refused:?}"
    );
    let rest = events.rest().await;
    assert_eq!(rest.last().unwrap(), "[DONE]", "{rest:?}");
    assert!(rest.iter().any(|d| d.contains("slept")), "{rest:?}");
    let status = timeout(WAIT, server.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn turns_still_running_after_the_grace_period_are_cancelled() {
    let mut server = Server::start(&["--shutdown-grace", "0.2"]).await;
    let marker = server.plugins.path().join("grace.cancelled");
    let (_, _, mut events) = stream(
        &server,
        &json!({"model": "fixture-tools", "stream": true,
                "messages": user(&format!("sleep 30000 {}", marker.display()))}),
    )
    .await;
    events.next().await.expect("the role chunk");
    server.terminate();
    server.wait_stderr("the grace period is over").await;
    // The stream ends with `unavailable`, as a turn that is not streamed does (issue 25).
    let rest = timeout(WAIT, async {
        let mut rest = Vec::new();
        while let Some(event) = events.next().await {
            rest.push(event);
        }
        rest
    })
    .await
    .expect("the stream ends within the wait");
    let error = rest
        .iter()
        .filter_map(|event| serde_json::from_str::<Value>(event).ok())
        .find(|event| event["error"].is_object())
        .unwrap_or_else(|| panic!("no error event: {rest:?}"));
    assert_eq!(error["error"]["code"], "unavailable", "{error}");
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"), "{rest:?}");
    let status = timeout(WAIT, server.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    wait_for_file(&marker).await;
}

/// 1,000 streaming requests at once against echo: every one completes, none fails.
#[tokio::test(flavor = "multi_thread")]
async fn load_1000_concurrent_streams_against_echo_without_errors() {
    const REQUESTS: usize = 1000;
    let server = Server::start(&["--max-concurrent", "2000"]).await;
    let client = reqwest::Client::builder()
        .timeout(WAIT)
        .pool_max_idle_per_host(REQUESTS)
        .build()
        .unwrap();
    let url = server.url("/v1/chat/completions");
    let started = std::time::Instant::now();
    let requests = (0..REQUESTS).map(|i| {
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let prompt = format!("request {i} says hello");
            let response = client
                .post(&url)
                .json(&json!({"model": "echo", "messages": user(&prompt), "stream": true}))
                .send()
                .await
                .map_err(|e| format!("{i}: {e}"))?;
            if response.status() != 200 {
                return Err(format!("{i}: status {}", response.status()));
            }
            let text = response.text().await.map_err(|e| format!("{i}: {e}"))?;
            let content: String = text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .filter_map(|c| {
                    c["choices"][0]["delta"]["content"]
                        .as_str()
                        .map(str::to_owned)
                })
                .collect();
            if !text.trim_end().ends_with("data: [DONE]") || content != prompt {
                return Err(format!("{i}: incomplete stream: {text}"));
            }
            Ok(())
        })
    });
    let results = timeout(
        Duration::from_secs(120),
        futures::future::join_all(requests),
    )
    .await
    .expect("1,000 streams finish within 120 s");
    let errors: Vec<String> = results
        .into_iter()
        .filter_map(|r| match r {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(e.to_string()),
        })
        .collect();
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    println!("1000 concurrent streams in {:?}", started.elapsed());
    assert_eq!(
        server
            .metric(
                "runtimes_serve_turns_total",
                &["runtime=\"echo\"", "outcome=\"ok\""]
            )
            .await,
        REQUESTS as f64
    );
}

/// A runtime whose workers keep crashing is marked failed: `/healthz` names it, `/v1/runtimes`
/// says why and for how long, and only a client with the key clears it (the endpoint, or
/// `runtimes clear-failed`); a server without a key refuses to.
#[tokio::test(flavor = "multi_thread")]
async fn the_failed_mark_shows_and_is_cleared_with_the_key() {
    let server = Server::start_with(
        &["--isolate", "--api-key-env", "SERVE_TEST_KEY"],
        &[("SERVE_TEST_KEY", "s3cret-key")],
        |_| {},
    )
    .await;
    let key = [("authorization", "Bearer s3cret-key")];
    let crash = json!({"model": "fixture-crash", "messages": user("abort")})
        .to_string()
        .into_bytes();
    // The default crash limit: 5 crashes within the window.
    for _ in 0..5 {
        let (status, _, body) =
            post_raw(&server, "/v1/chat/completions", crash.clone(), &key).await;
        assert_eq!(status, 500, "{body}");
    }
    let (status, health) = get(&server, "/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(health["failed_runtimes"], json!(1), "{health}");
    let runtimes: Value = client()
        .get(server.url("/v1/runtimes"))
        .bearer_auth("s3cret-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let failed = &runtimes["failed"][0];
    assert_eq!(failed["id"], "fixture-crash", "{runtimes}");
    assert!(
        failed["reason"].as_str().unwrap().contains("5 times"),
        "{failed}"
    );
    assert!(failed["expires_in_s"].as_u64().unwrap() > 0, "{failed}");

    // Without the key: 401; an unknown runtime: 404.
    let (status, _, _) = post_raw(
        &server,
        "/v1/runtimes/fixture-crash/clear-failed",
        vec![],
        &[],
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, body) = post_raw(&server, "/v1/runtimes/nope/clear-failed", vec![], &key).await;
    assert_eq!(status, 404, "{body}");

    // The CLI clears it.
    let cleared = tokio::process::Command::new(&artifacts().runtimes)
        .args(["clear-failed", "fixture-crash", "--server", &server.url])
        .args(["--api-key-env", "SERVE_TEST_KEY"])
        .env("SERVE_TEST_KEY", "s3cret-key")
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&cleared.stdout);
    assert!(
        cleared.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&cleared.stderr)
    );
    assert!(
        said.contains("cleared the failed mark of `fixture-crash`"),
        "{said}"
    );
    assert_eq!(
        get(&server, "/healthz").await.1["failed_runtimes"],
        json!(0)
    );
    let (status, _, body) = post_raw(
        &server,
        "/v1/runtimes/fixture-crash/clear-failed",
        vec![],
        &key,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["was_failed"], false, "{body}");
    // The runtime runs again.
    let ok = json!({"model": "fixture-crash", "messages": user("hello")})
        .to_string()
        .into_bytes();
    let (status, _, body) = post_raw(&server, "/v1/chat/completions", ok, &key).await;
    assert_eq!(status, 200, "{body}");

    // A server without a key never clears a mark.
    let open = Server::start(&["--isolate"]).await;
    let (status, _, body) =
        post(&open, "/v1/runtimes/fixture-crash/clear-failed", &json!({})).await;
    assert_eq!(status, 403, "{body}");
    assert_openai_error(&body, "permission_error", None, "admin_needs_api_key");
}

/// The pids of a process's children.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// SIGHUP upgrades a process-level runtime while turns run on it: they finish on their old
/// workers, new turns go to workers of the new file, nothing is dropped; at the threads
/// level a loaded library is kept and the server says a restart is needed.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_upgrades_under_load_and_drops_nothing() {
    let hostile = artifacts().hostile.clone();
    let mut server = Server::start_with(&["--isolate"], &[], |dir| {
        install(dir, &hostile, "libhostile");
    })
    .await;
    let dir = server.plugins.path().to_owned();
    let url = server.url("/v1/chat/completions");
    let turn = |prompt: String| {
        let url = url.clone();
        async move {
            let response = client()
                .post(url)
                .json(&json!({"model": "hostile", "messages": user(&prompt)}))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            (status, body["choices"][0]["message"]["content"].clone())
        }
    };
    // The old build's workers, by the pids they report (as the host sees them; the plugin
    // runs in a PID namespace below the processes the server started): sequential turns go to
    // each worker of the pool in turn.
    let mut old_pids = std::collections::HashSet::new();
    for _ in 0..6 {
        let (status, pid) = turn("pid".to_owned()).await;
        assert_eq!(status, 200);
        old_pids.insert(pid.as_str().unwrap().parse::<u32>().unwrap());
    }
    // Eight turns held inside the old workers.
    let held: Vec<_> = (0..8)
        .map(|i| {
            tokio::spawn(turn(format!(
                "sleep:{}",
                dir.join(format!("r{i}")).display()
            )))
        })
        .collect();
    // (The sandboxed workers cannot write a marker: the server's gauge says they run.)
    server
        .wait_metric("runtimes_serve_turns_in_flight", &[], 8.0)
        .await;
    let server_pid = server.child.id().unwrap();
    // The processes the server started for the old build.
    let old_workers: std::collections::HashSet<u32> = children_of(server_pid).into_iter().collect();
    assert!(!old_workers.is_empty(), "the server has workers");

    replace_plugin(&dir, &hostile, "libhostile");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(server_pid).unwrap()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let line = server.wait_stderr("reloaded:").await;
    assert!(line.contains("upgraded calm, hostile;"), "{line}");

    // New turns run on new workers, while the old ones still hold their turns.
    for _ in 0..4 {
        let (status, pid) = turn("pid".to_owned()).await;
        assert_eq!(status, 200);
        let pid: u32 = pid.as_str().unwrap().parse().unwrap();
        assert!(
            !old_pids.contains(&pid),
            "a new turn ran on an old worker {pid}"
        );
    }
    // Every held turn finishes, on its old worker.
    for i in 0..8 {
        std::fs::write(dir.join(format!("r{i}")), "").unwrap();
    }
    for handle in held {
        let (status, content) = handle.await.unwrap();
        assert_eq!(status, 200, "{content}");
        assert_eq!(content, "slept");
    }
    // Then the old workers go.
    for pid in &old_pids {
        assert!(process_gone(*pid).await, "old worker {pid} still runs");
    }
    for _ in 0..400 {
        if !old_workers
            .iter()
            .any(|pid| children_of(server_pid).contains(pid))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left: Vec<u32> = children_of(server_pid)
        .into_iter()
        .filter(|pid| old_workers.contains(pid))
        .collect();
    assert!(left.is_empty(), "old workers still running: {left:?}");

    // In the server's own process a loaded library is never unloaded: a restart is needed.
    let mut inline = Server::start_with(&["--isolation", "threads"], &[], |dir| {
        install(dir, &hostile, "libhostile");
    })
    .await;
    let url = inline.url("/v1/chat/completions");
    let answered = client()
        .post(url)
        .json(&json!({"model": "hostile", "messages": user("pid")}))
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    replace_plugin(inline.plugins.path(), &hostile, "libhostile");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(inline.child.id().unwrap()).unwrap()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let line = inline.wait_stderr("reloaded:").await;
    assert!(line.contains("restart needed for calm, hostile"), "{line}");
    assert!(line.contains("upgraded none"), "{line}");
}
