//! Untrusted callers (issue 25): a queue writer, an HTTP client or an agent request reaches no
//! further than the operator allowed.
//!
//! The queue tests need a real Redis (`scripts/redis.sh start`); the one that submits as an
//! unprivileged user needs root and `agentrt-test` (`scripts/test-user.sh`).

#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use runtime_api::{ErrorKind, RuntimeError, StreamItem, TurnRequest};
use runtime_queue::{QueueClient, QueueConfig, QueueError, Worker};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::queue::{queue, redis_url};
use crate::support::{artifacts, install, other_user, plugin_dir, registry};

const WAIT: Duration = Duration::from_secs(60);

/// Reads a turn's results to their end (bounded in time).
async fn results(client: &QueueClient, id: &str) -> Vec<Result<StreamItem, RuntimeError>> {
    tokio::time::timeout(WAIT, client.results(id).collect::<Vec<_>>())
        .await
        .unwrap_or_else(|_| panic!("turn {id} gave no final item within {WAIT:?}"))
}

/// The error a turn ended with.
fn final_error(items: &[Result<StreamItem, RuntimeError>]) -> RuntimeError {
    match items.last() {
        Some(Err(error)) => error.clone(),
        other => panic!("the turn did not end with an error: {other:?}"),
    }
}

/// A `runtimes worker` process, started (its advert written) when this returns.
async fn worker_process(url: &str, config: &QueueConfig, plugins: &Path, extra: &[&str]) -> Child {
    let mut child = Command::new(&artifacts().runtimes)
        .arg("--plugin-dir")
        .arg(plugins)
        .args(["worker", "--redis", url, "--prefix", &config.prefix])
        .args(extra)
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
    tokio::time::timeout(WAIT, async {
        let mut seen = Vec::new();
        while let Some(line) = lines.next_line().await.expect("stderr readable") {
            if line.contains("worker started") {
                return;
            }
            seen.push(line);
        }
        panic!("the worker exited before it started:\n{}", seen.join("\n"));
    })
    .await
    .expect("the worker starts within the wait");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs redis-server: scripts/redis.sh start"]
async fn a_worker_takes_only_the_job_configuration_keys_it_allows() {
    let url = redis_url();
    let config = queue("callers-allowed");
    let plugins = plugin_dir();
    install(plugins.path(), &artifacts().echo, "libecho");
    let runtimes = Arc::new(registry(&[plugins.path()]));
    let worker = Worker::new(runtimes, config.clone())
        .with_runtime_config("echo", json!({"delay_ms": 0}))
        .allow_job_config("echo", ["delay_ms"]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(url, async move {
        let _ = stopped.await;
    }));
    let client = QueueClient::connect(url, config).await.unwrap();

    // No configuration: the worker's own. An allowed key: taken.
    for job in [Value::Null, json!({"delay_ms": 1})] {
        let id = client
            .submit_with_config("echo", job.clone(), TurnRequest::new("hi there"))
            .await
            .unwrap();
        let items = results(&client, &id).await;
        assert!(
            matches!(items.last(), Some(Ok(StreamItem::Done(out))) if out.content == "hi there"),
            "{job}: {items:?}"
        );
    }
    // Any other key: an `invalid_config` result naming it; the allowed one does not count.
    let id = client
        .submit_with_config(
            "echo",
            json!({"delay_ms": 1, "zzz": true, "base_url": "http://x"}),
            TurnRequest::new("refused"),
        )
        .await
        .unwrap();
    let error = final_error(&results(&client, &id).await);
    assert_eq!(error.kind, ErrorKind::InvalidConfig, "{error}");
    assert_eq!(error.metadata["refused_keys"], json!(["base_url", "zzz"]));
    assert!(
        error.message.contains("`base_url`, `zzz` are not allowed"),
        "{error}"
    );
    // Not an object: refused too.
    let id = client
        .submit_with_config("echo", json!([1, 2]), TurnRequest::new("refused"))
        .await
        .unwrap();
    assert_eq!(
        final_error(&results(&client, &id).await).kind,
        ErrorKind::InvalidConfig
    );
    let _ = stop.send(());
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the worker stops")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_worker_refuses_to_start_with_rules_it_cannot_apply() {
    let plugins = plugin_dir();
    install(plugins.path(), &artifacts().echo, "libecho");
    let runtimes = Arc::new(registry(&[plugins.path()]));
    // Checked before Redis is touched: the URL is never used.
    let unknown = Worker::new(Arc::clone(&runtimes), QueueConfig::default())
        .with_runtime_config("nope", json!({}))
        .run("redis://127.0.0.1:1", async {})
        .await
        .unwrap_err();
    assert!(
        matches!(&unknown, QueueError::WorkerConfig { runtime, .. } if runtime == "nope"),
        "{unknown}"
    );
    let invalid = Worker::new(runtimes, QueueConfig::default())
        .with_runtime_config("echo", json!({"delay_ms": "soon"}))
        .run("redis://127.0.0.1:1", async {})
        .await
        .unwrap_err();
    assert!(
        matches!(&invalid, QueueError::WorkerConfig { runtime, .. } if runtime == "echo"),
        "{invalid}"
    );
}

/// `runtimes submit` as the unprivileged test user: its exit status and stdout.
async fn submit_as(
    uid: u32,
    gid: u32,
    url: &str,
    prefix: &str,
    config: Option<&Value>,
) -> (i32, String) {
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut command = Command::new(&artifacts().runtimes);
    command
        .args([
            "submit", "command", "hello", "--redis", url, "--prefix", prefix, "--json",
        ])
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", "/usr/bin:/bin")
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(config) = config {
        command.arg("--config").arg(config.to_string());
    }
    let output = tokio::time::timeout(WAIT, command.output())
        .await
        .expect("submit ends within the wait")
        .expect("submit runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs redis-server (scripts/redis.sh start), root and the agentrt-test user (scripts/test-user.sh)"]
async fn a_queue_writer_cannot_make_a_worker_start_a_program() {
    let (uid, gid) = other_user();
    let url = redis_url();
    let config = queue("callers-program");
    let plugins = plugin_dir();
    install(plugins.path(), &artifacts().command, "libcommand_runtime");
    // The attacker's program: it would write who ran it to a marker file.
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let marker = work.path().join("marker");
    let evil = work.path().join("evil.sh");
    std::fs::write(&evil, format!("#!/bin/sh\nid > '{}'\n", marker.display())).unwrap();
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o755)).unwrap();

    // A root worker whose operator fixed the command runtime's program, and allowed every
    // key that names no program, URL, file or variable.
    let _worker = worker_process(
        url,
        &config,
        plugins.path(),
        &[
            "--config",
            r#"command={"program": "tr", "args": ["a-z", "A-Z"]}"#,
            "--allow-job-config",
            "command=*",
        ],
    )
    .await;

    for forbidden in [
        json!({"program": evil}),
        json!({"program": "sh", "args": ["-c", format!("id > '{}'", marker.display())]}),
        json!({"args": [marker]}),
        json!({"env": {"LD_PRELOAD": "/tmp/x.so"}}),
        json!({"cwd": "/"}),
    ] {
        let (code, stdout) = submit_as(uid, gid, url, &config.prefix, Some(&forbidden)).await;
        assert_eq!(code, 3, "{forbidden}: {stdout}");
        let last: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
        assert_eq!(last["error"]["kind"], "invalid_config", "{stdout}");
        let named = forbidden.as_object().unwrap().keys().next().unwrap();
        assert!(
            last["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(&format!("`{named}`")),
            "{stdout}"
        );
    }
    // Without a configuration, the worker's own runs.
    let (code, stdout) = submit_as(uid, gid, url, &config.prefix, None).await;
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("HELLO"), "{stdout}");
    assert!(
        !marker.exists(),
        "a submitter's program ran on the worker: {:?}",
        std::fs::read_to_string(&marker)
    );
}

/// The shared Redis's URL split into its password and its URL without one.
fn without_password(url: &str) -> (String, String) {
    let rest = url.strip_prefix("redis://").expect("a redis:// URL");
    let (userinfo, host) = rest
        .rsplit_once('@')
        .expect("the test Redis requires a password: start it with scripts/redis.sh");
    let password = userinfo.rsplit_once(':').map_or(userinfo, |(_, p)| p);
    (password.to_owned(), format!("redis://{host}"))
}

/// `runtimes queue status` against `url` with `env`: its exit code and its stderr.
async fn queue_status(url: &str, env: &[(&str, &str)]) -> (i32, String) {
    let mut command = Command::new(&artifacts().runtimes);
    command
        .args(["queue", "status", "--redis", url, "--json"])
        .env_remove("AGENT_RUNTIMES_REDIS_URL")
        .env_remove("AGENT_RUNTIMES_REDIS_PASSWORD")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(WAIT, command.output())
        .await
        .expect("queue status ends within the wait")
        .expect("queue status runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs redis-server: scripts/redis.sh start"]
async fn redis_credentials_come_from_the_url_or_the_environment_and_never_show() {
    let (password, bare) = without_password(redis_url());
    // In the URL (as every queue test here uses it), or in the environment.
    assert_eq!(queue_status(redis_url(), &[]).await.0, 0);
    let (code, stderr) = queue_status(
        &bare,
        &[("AGENT_RUNTIMES_REDIS_PASSWORD", password.as_str())],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    // Without it, Redis refuses, and the reason says so.
    let (code, stderr) = queue_status(&bare, &[]).await;
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("NOAUTH") || stderr.to_lowercase().contains("auth"),
        "{stderr}"
    );
    // A wrong one: refused, and no password (given or real) is printed.
    let wrong = bare.replacen("redis://", "redis://:not-the-password@", 1);
    let (code, stderr) = queue_status(&wrong, &[]).await;
    assert_ne!(code, 0, "{stderr}");
    assert!(!stderr.contains("not-the-password"), "{stderr}");
    assert!(!stderr.contains(&password), "{stderr}");
    // An unusable URL with a password: the error shows it redacted.
    let (code, stderr) = queue_status("redis://:hunter2@127.0.0.1:notaport", &[]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(stderr.contains(":***@"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs redis-server: scripts/redis.sh start"]
async fn a_turn_whose_keys_redis_lost_says_so() {
    let url = redis_url();
    let config = queue("callers-lost");
    let plugins = plugin_dir();
    install(plugins.path(), &artifacts().fixture, "libfixture");
    let runtimes = Arc::new(registry(&[plugins.path()]));
    let worker = Worker::new(runtimes, config.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(worker.run(url, async move {
        let _ = stopped.await;
    }));
    let client = QueueClient::connect(url, config.clone()).await.unwrap();
    let marker = plugins.path().join("lost.cancelled");
    let id = client
        .submit(
            "fixture-tools",
            TurnRequest::new(format!("sleep 30000 {}", marker.display())),
        )
        .await
        .unwrap();
    let mut results = client.results(&id);
    let first = tokio::time::timeout(WAIT, results.next())
        .await
        .expect("the first item within the wait");
    assert!(matches!(first, Some(Ok(StreamItem::Delta(_)))), "{first:?}");
    // Redis loses the turn's keys (as a restart without persistence would).
    crate::queue::redis_cli(&["DEL", &config.status_key(&id), &config.items_key(&id)]);
    let rest: Vec<_> = tokio::time::timeout(WAIT, results.collect::<Vec<_>>())
        .await
        .expect("the reader ends within the wait");
    let error = final_error(&rest);
    assert_eq!(error.kind, ErrorKind::Unavailable, "{error}");
    assert_eq!(error.metadata["error"], "queue_lost_turn", "{error}");
    assert!(error.message.contains("Redis lost turn"), "{error}");
    let _ = stop.send(());
    let _ = tokio::time::timeout(WAIT, task).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs redis-server: scripts/redis.sh start"]
async fn submit_cancels_its_turn_on_sigterm_as_on_ctrl_c() {
    let url = redis_url();
    let config = queue("callers-sigterm");
    let plugins = plugin_dir();
    install(plugins.path(), &artifacts().fixture, "libfixture");
    let _worker = worker_process(url, &config, plugins.path(), &[]).await;
    let marker = plugins.path().join("sigterm.cancelled");
    let mut submit = Command::new(&artifacts().runtimes)
        .args(["submit", "fixture-tools"])
        .arg(format!("sleep 30000 {}", marker.display()))
        .args(["--redis", url, "--prefix", &config.prefix, "--json"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("runtimes submit starts");
    // The turn runs: its first delta is printed.
    let mut stdout = BufReader::new(submit.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, stdout.next_line())
        .await
        .expect("a first line within the wait")
        .unwrap()
        .unwrap_or_default();
    assert!(first.contains("sleeping"), "{first}");
    let pid = submit.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(WAIT, submit.wait())
        .await
        .expect("submit exits within the wait")
        .unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    // The turn was cancelled in the plugin, on the worker.
    tokio::time::timeout(WAIT, async {
        while !marker.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the turn is cancelled on the worker within the wait");
}

/// Runs a command to its end; panics with its stderr when it fails.
fn run(program: &str, args: &[&str], dir: &Path) {
    let output = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs redis-server (scripts/redis.sh start installs it) and openssl"]
async fn rediss_urls_connect_with_tls_and_check_the_certificate() {
    // A CA and a server certificate for 127.0.0.1 signed by it.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=agent-runtimes test CA",
        ],
        d,
    );
    run(
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=localhost",
        ],
        d,
    );
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ],
        d,
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    // A TLS-only Redis with a password, its own for this test.
    let _redis = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port, "--bind", "127.0.0.1"])
        .args(["--tls-cert-file", "leaf.pem", "--tls-key-file", "leaf.key"])
        .args([
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--requirepass", "tls-test-password"])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server starts");
    tokio::time::timeout(WAIT, async {
        while tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the TLS Redis listens within the wait");
    let url = format!("rediss://default:tls-test-password@127.0.0.1:{port}");
    let ca = d.join("ca.pem").display().to_string();
    // Trusting the CA (SSL_CERT_FILE, read by rustls-native-certs): connected.
    let (code, stderr) = queue_status(&url, &[("SSL_CERT_FILE", ca.as_str())]).await;
    assert_eq!(code, 0, "{stderr}");
    // Not trusting it: refused, the certificate is checked.
    let (code, stderr) = queue_status(&url, &[("SSL_CERT_FILE", "/nonexistent.pem")]).await;
    assert_ne!(code, 0, "{stderr}");
    assert!(!stderr.contains("tls-test-password"), "{stderr}");
}
