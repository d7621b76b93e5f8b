//! The Redis queue (issue 15): turns as jobs run by workers, against a real redis-server.
//!
//! Longer than 700 lines on purpose: each test is a whole scenario against a real Redis.
//!
//! The Redis is `AGENT_RUNTIMES_REDIS_URL` when set (CI runs `scripts/redis.sh start`), or an
//! instance these tests start through `scripts/redis.sh`. Each test uses its own key prefix,
//! so tests share the server. The restart test always starts a private instance.

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use runtime_api::{DeltaKind, ErrorKind, RuntimeError, StreamItem, TurnRequest};
use runtime_queue::{CancelOutcome, QueueClient, QueueConfig, TurnStatus, Worker, WorkerStats};
use serde_json::json;
use tempfile::TempDir;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::support::{artifacts, install, plugin_dir, process_gone, registry, replace_plugin};

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

/// Runs `scripts/redis.sh` with these arguments; its last stdout line (the URL for `start`).
fn redis_script(args: &[&str]) -> String {
    let found = std::process::Command::new("sh")
        .args(["-c", "command -v redis-server"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "redis-server is not installed and AGENT_RUNTIMES_REDIS_URL is not set: run `scripts/redis.sh start` (it installs redis-server from Debian packages and starts it), then `set -a; . target/redis/env; set +a`"
    );
    let output = std::process::Command::new(workspace().join("scripts/redis.sh"))
        .args(args)
        .output()
        .expect("scripts/redis.sh runs");
    assert!(
        output.status.success(),
        "scripts/redis.sh {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

/// The shared Redis's URL.
pub(crate) fn redis_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("AGENT_RUNTIMES_REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        // Stopped when this test process exits: the suite leaves nothing running.
        _ => redis_script(&[
            "start",
            "--name",
            "tests",
            "--owner",
            &std::process::id().to_string(),
        ]),
    })
}

/// A queue of its own for one test.
pub(crate) fn queue(test: &str) -> QueueConfig {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    QueueConfig::default()
        .with_prefix(format!("test-{test}-{}-{nanos}", std::process::id()))
        .with_reconnect_for(Duration::from_secs(30))
        // Ten thousands of turns per run: keep the shared server small.
        .with_result_ttl(Duration::from_secs(600))
}

/// A plugin folder with echo and the fixture library.
fn plugins() -> TempDir {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().echo, "libecho");
    install(dir.path(), &artifacts().fixture, "libfixture");
    dir
}

/// An in-process worker; send on the sender (or drop it) to stop it.
struct TaskWorker {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<WorkerStats, runtime_queue::QueueError>>,
}

impl TaskWorker {
    fn start(url: &str, config: &QueueConfig, dir: &Path, concurrency: usize) -> Self {
        let runtimes = Arc::new(registry(&[dir]));
        // The tests' jobs set echo's delay: the worker allows that key and no other.
        let worker = Worker::new(runtimes, config.clone())
            .with_concurrency(concurrency)
            .allow_job_config("echo", ["delay_ms"]);
        let (stop, stopped) = oneshot::channel::<()>();
        let url = url.to_owned();
        let task = tokio::spawn(async move {
            worker
                .run(&url, async move {
                    let _ = stopped.await;
                })
                .await
        });
        Self {
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) -> WorkerStats {
        let _ = self.stop.take().map(|s| s.send(()));
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("the worker stops")
            .expect("the worker task ends")
            .expect("the worker ends without error")
    }
}

/// A `runtimes worker` process.
fn worker_process(
    url: &str,
    config: &QueueConfig,
    dir: &Path,
    extra: &[&str],
    log: &Path,
) -> Child {
    let log = std::fs::File::create(log).expect("worker log");
    let out = log.try_clone().expect("worker log");
    Command::new(&artifacts().runtimes)
        .args(["worker", "--redis", url, "--prefix", &config.prefix])
        .args(["--allow-job-config", "echo=delay_ms"])
        .arg("--plugin-dir")
        .arg(dir)
        .args(extra)
        .env_remove("AGENT_RUNTIMES_PATH")
        .env("AGENT_RUNTIMES_WORKER", &artifacts().worker)
        .env("RUNTIMES_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("runtimes worker starts")
}

/// A turn's items, as read.
type Items = Vec<Result<StreamItem, RuntimeError>>;

/// Reads a turn's results to the end (bounded in time).
async fn collect(client: &QueueClient, id: &str) -> Vec<Result<StreamItem, RuntimeError>> {
    let stream = client.results(id);
    tokio::time::timeout(Duration::from_secs(120), stream.collect::<Vec<_>>())
        .await
        .unwrap_or_else(|_| panic!("turn {id} gave no final item within 120 s"))
}

/// Checks that an echo turn's items are its prompt, streamed once: text deltas that add up
/// to the prompt, then one final output with it.
fn assert_echoed(prompt: &str, items: &[Result<StreamItem, RuntimeError>]) {
    let (last, deltas) = items.split_last().expect("at least one item");
    let text: String = deltas
        .iter()
        .map(|item| match item {
            Ok(StreamItem::Delta(delta)) if delta.kind == DeltaKind::Text => delta.content.clone(),
            other => panic!("unexpected item before the end of {prompt:?}: {other:?}"),
        })
        .collect();
    assert_eq!(text, prompt, "{items:?}");
    match last {
        Ok(StreamItem::Done(output)) => assert_eq!(output.content, prompt),
        other => panic!("turn {prompt:?} ended with {other:?}"),
    }
}

/// Waits (bounded) until the job stream is empty: every job acknowledged and deleted.
async fn wait_drained(client: &QueueClient) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let backlog = client.backlog().await.expect("backlog");
        if backlog.jobs == 0 && backlog.pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the job stream did not drain: {backlog:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `turns` echo turns through `workers` in-process workers; every result reaches its
/// submitter exactly once, and the job stream is empty at the end.
async fn many_turns(test: &str, workers: usize, turns: usize) {
    let url = redis_url();
    let config = queue(test);
    let dir = plugins();
    let pool: Vec<TaskWorker> = (0..workers)
        .map(|_| TaskWorker::start(url, &config, dir.path(), 32))
        .collect();
    let client = QueueClient::connect(url, config.clone()).await.unwrap();
    let started = Instant::now();
    let ids: Vec<String> = futures::stream::iter(0..turns)
        .map(|i| {
            let client = client.clone();
            async move {
                let prompt = format!("turn {i} of {test}");
                let id = client
                    .submit("echo", TurnRequest::new(prompt.clone()))
                    .await
                    .unwrap();
                let items = collect(&client, &id).await;
                assert_echoed(&prompt, &items);
                id
            }
        })
        .buffer_unordered(500)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), turns, "execution ids are unique");
    wait_drained(&client).await;
    let mut taken = 0;
    for worker in pool {
        taken += worker.stop().await.taken;
    }
    assert_eq!(taken, turns as u64, "each job was taken once");
    eprintln!(
        "queue: {turns} echo turns through {workers} worker(s) in {elapsed:.2?} ({:.0} turns/s, debug build)",
        turns as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_turns_through_one_worker() {
    many_turns("one", 1, 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_turns_through_two_workers() {
    many_turns("two", 2, 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_turns_through_four_workers() {
    many_turns("four", 4, 10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_runtime_gets_an_error_result_and_the_job_is_not_dropped() {
    let url = redis_url();
    let config = queue("unknown");
    let dir = plugins();
    let worker = TaskWorker::start(url, &config, dir.path(), 4);
    let client = QueueClient::connect(url, config).await.unwrap();
    let id = client
        .submit("no-such-runtime", TurnRequest::new("hello"))
        .await
        .unwrap();
    let items = collect(&client, &id).await;
    assert_eq!(items.len(), 1, "{items:?}");
    let error = items[0].as_ref().unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert!(
        error.message.contains("no-such-runtime"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("echo"),
        "names what the worker has: {}",
        error.message
    );
    let state = client.status(&id).await.unwrap().expect("a status");
    assert_eq!(state.status, TurnStatus::Error);
    assert_eq!(state.attempts, 1);
    wait_drained(&client).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_execution_id_runs_once_however_often_it_is_submitted() {
    let url = redis_url();
    let config = queue("idempotent");
    let dir = plugins();
    let client = QueueClient::connect(url, config.clone()).await.unwrap();
    let request = TurnRequest::new("only once").with_execution_id("idem-1");
    let first = client.submit("echo", request.clone()).await.unwrap();
    let second = client.submit("echo", request.clone()).await.unwrap();
    assert_eq!((first.as_str(), second.as_str()), ("idem-1", "idem-1"));
    assert_eq!(
        client.backlog().await.unwrap().jobs,
        1,
        "one job for one id"
    );
    let worker = TaskWorker::start(url, &config, dir.path(), 4);
    assert_echoed("only once", &collect(&client, &first).await);
    // After it completed: submitted again, nothing runs; the results are the same.
    client.submit("echo", request).await.unwrap();
    assert_eq!(client.backlog().await.unwrap().jobs, 0);
    assert_echoed("only once", &collect(&client, &first).await);
    let state = client.status(&first).await.unwrap().unwrap();
    assert_eq!((state.status, state.attempts), (TurnStatus::Complete, 1));
    assert_eq!(worker.stop().await.taken, 1);
    // An id that cannot be a key is refused before anything is queued.
    let bad = client
        .submit("echo", TurnRequest::new("x").with_execution_id("a b"))
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("\"a b\""), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_reaches_a_queued_and_a_running_turn() {
    let url = redis_url();
    let config = queue("cancel");
    let dir = plugins();
    let client = QueueClient::connect(url, config.clone()).await.unwrap();

    // Queued: no worker yet.
    let queued = client
        .submit("echo", TurnRequest::new("never runs"))
        .await
        .unwrap();
    assert_eq!(
        client.status(&queued).await.unwrap().unwrap().status,
        TurnStatus::Queued
    );
    assert_eq!(
        client.cancel(&queued).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let items = collect(&client, &queued).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].as_ref().unwrap_err().kind, ErrorKind::Cancelled);

    // Running: 40 words at 250 ms each, cancelled after its first delta.
    let worker = TaskWorker::start(url, &config, dir.path(), 4);
    let prompt = vec!["word"; 40].join(" ");
    let running = client
        .submit_with_config("echo", json!({"delay_ms": 250}), TurnRequest::new(prompt))
        .await
        .unwrap();
    let mut stream = client.results(&running);
    let first = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("a first delta")
        .expect("an item");
    assert!(matches!(first, Ok(StreamItem::Delta(_))), "{first:?}");
    assert_eq!(
        client.status(&running).await.unwrap().unwrap().status,
        TurnStatus::Running
    );
    let asked = Instant::now();
    assert_eq!(
        client.cancel(&running).await.unwrap(),
        CancelOutcome::Signalled
    );
    let rest: Vec<_> =
        tokio::time::timeout(Duration::from_secs(30), (&mut stream).collect::<Vec<_>>())
            .await
            .expect("the stream ends");
    let last = rest.last().expect("a last item");
    assert_eq!(
        last.as_ref().unwrap_err().kind,
        ErrorKind::Cancelled,
        "{rest:?}"
    );
    assert!(rest.len() < 39, "it stopped early: {} items", rest.len());
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "cancel took {:?}",
        asked.elapsed()
    );
    assert_eq!(
        client.status(&running).await.unwrap().unwrap().status,
        TurnStatus::Cancelled
    );
    // The queued one was acknowledged without running.
    wait_drained(&client).await;
    let state = client.status(&queued).await.unwrap().unwrap();
    assert_eq!((state.status, state.attempts), (TurnStatus::Cancelled, 0));
    assert_eq!(
        client.cancel("no-such-turn").await.unwrap(),
        CancelOutcome::Unknown
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_run_leaves_no_turn_unaccounted() {
    let url = redis_url();
    let config = queue("kill");
    let dir = plugins();
    let logs = plugin_dir();
    let extra = [
        "--concurrency",
        "16",
        "--visibility-timeout",
        "1",
        "--max-attempts",
        "3",
    ];
    let mut victim = worker_process(
        url,
        &config,
        dir.path(),
        &extra,
        &logs.path().join("victim.log"),
    );
    let mut survivor = worker_process(
        url,
        &config,
        dir.path(),
        &extra,
        &logs.path().join("survivor.log"),
    );
    let client = QueueClient::connect(url, config).await.unwrap();
    let turns = 1_000;
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (killed_tx, killed_rx) = oneshot::channel::<()>();
    let killed_tx = Arc::new(std::sync::Mutex::new(Some(killed_tx)));
    let results: Vec<(String, String, Items)> = futures::stream::iter(0..turns)
        .map(|i| {
            let (client, done, killed_tx) =
                (client.clone(), Arc::clone(&done), Arc::clone(&killed_tx));
            async move {
                let prompt = format!("kill turn {i}");
                let id = client
                    .submit_with_config(
                        "echo",
                        json!({"delay_ms": 10}),
                        TurnRequest::new(prompt.clone()),
                    )
                    .await
                    .unwrap();
                let items = collect(&client, &id).await;
                if done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == 200
                    && let Some(tx) = killed_tx.lock().unwrap().take()
                {
                    let _ = tx.send(());
                }
                (id, prompt, items)
            }
        })
        .buffer_unordered(200)
        .collect::<Vec<_>>()
        .into_future_with(async move {
            // kill -9 the victim once 200 turns are done, while it runs others.
            if killed_rx.await.is_ok() {
                victim.start_kill().expect("SIGKILL");
                let status = victim.wait().await.expect("the victim ends");
                assert!(!status.success());
            }
        })
        .await;
    let (mut completed, mut lost) = (0, 0);
    for (id, prompt, items) in &results {
        match items.last() {
            Some(Ok(StreamItem::Done(_))) => {
                assert_echoed(prompt, items);
                completed += 1;
            }
            Some(Err(error)) if error.kind == ErrorKind::WorkerLost => lost += 1,
            other => panic!("turn {id} ended with {other:?}"),
        }
    }
    assert_eq!(completed + lost, turns, "every turn accounted for");
    let mut retried = 0;
    for (id, _, _) in &results {
        let state = client.status(id).await.unwrap().unwrap();
        assert!(state.status.is_finished(), "{id}: {state:?}");
        if state.attempts > 1 {
            retried += 1;
        }
    }
    assert!(
        retried + lost > 0,
        "the killed worker held turns: they were retried or ended with worker_lost"
    );
    eprintln!(
        "queue: kill -9 during {turns} turns: {completed} completed ({retried} retried), {lost} worker_lost"
    );
    wait_drained(&client).await;
    survivor.start_kill().unwrap();
    let _ = survivor.wait().await;
}

/// Runs a future alongside another until both end (the first's output is kept).
trait AlongSide: std::future::Future + Sized {
    async fn into_future_with(self, other: impl std::future::Future<Output = ()>) -> Self::Output {
        let (output, ()) = futures::join!(self, other);
        output
    }
}

impl<F: std::future::Future> AlongSide for F {}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_job_is_dead_lettered_after_its_attempts() {
    let url = redis_url();
    let config = queue("poison").with_max_attempts(2);
    let dir = plugins();
    let logs = plugin_dir();
    let extra = [
        "--concurrency",
        "2",
        "--visibility-timeout",
        "0.5",
        "--max-attempts",
        "2",
    ];
    let client = QueueClient::connect(url, config.clone()).await.unwrap();
    // A large job: its dead letter keeps 4 KiB of it, its size and its digest (issue 25).
    let id = client
        .submit(
            "fixture-crash",
            TurnRequest::new("abort").with_system("s".repeat(200_000)),
        )
        .await
        .unwrap();
    // Two workers take it and die of it, one after the other.
    for attempt in 1..=2 {
        let mut worker = worker_process(
            url,
            &config,
            dir.path(),
            &extra,
            &logs.path().join(format!("w{attempt}.log")),
        );
        let status = tokio::time::timeout(Duration::from_secs(30), worker.wait())
            .await
            .expect("the worker dies of the job")
            .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(6), "SIGABRT: {status:?}");
        }
        let state = client.status(&id).await.unwrap().unwrap();
        assert_eq!(
            (state.status, state.attempts),
            (TurnStatus::Running, attempt)
        );
    }
    // The third dead-letters it, with the reason, and goes on working.
    let mut third = worker_process(
        url,
        &config,
        dir.path(),
        &extra,
        &logs.path().join("w3.log"),
    );
    let items = collect(&client, &id).await;
    assert_eq!(items.len(), 1, "{items:?}");
    let error = items[0].as_ref().unwrap_err();
    assert_eq!(error.kind, ErrorKind::WorkerLost);
    assert!(error.message.contains("dead-lettered"), "{}", error.message);
    assert!(error.message.contains("2 times"), "{}", error.message);
    let state = client.status(&id).await.unwrap().unwrap();
    assert_eq!(state.status, TurnStatus::Error);
    assert_eq!(client.backlog().await.unwrap().dead, 1);
    let letters = redis_cli(&["XRANGE", &config.dead_key(), "-", "+"]);
    let letter: serde_json::Value = letters
        .lines()
        .find(|line| line.starts_with('{'))
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no dead letter: {letters}"));
    let job = &letter["job"];
    assert_eq!(job["truncated"], true, "{job}");
    assert!(job["bytes"].as_u64().unwrap() > 200_000, "{job}");
    assert!(job["text"].as_str().unwrap().len() <= 4096, "{job}");
    assert_eq!(job["sha256"].as_str().unwrap().len(), 64, "{job}");
    assert!(
        letters.len() < 8 * 1024,
        "{} bytes of dead letters",
        letters.len()
    );
    let survived = client
        .submit("fixture-crash", TurnRequest::new("hello"))
        .await
        .unwrap();
    let items: Vec<_> = collect(&client, &survived).await;
    match items.as_slice() {
        [Ok(StreamItem::Done(output))] => assert_eq!(output.content, "survived:hello"),
        other => panic!("{other:?}"),
    }
    assert!(
        third.try_wait().unwrap().is_none(),
        "the third worker lives"
    );
    wait_drained(&client).await;
    third.start_kill().unwrap();
    let _ = third.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_and_clients_go_on_after_a_redis_restart() {
    // A private instance: restarting the shared one would disturb the other tests.
    let url = redis_script(&[
        "start",
        "--name",
        "restart-test",
        "--owner",
        &std::process::id().to_string(),
    ]);
    // Longer than a restart takes: a job whose worker cannot renew it while Redis is away
    // would otherwise be reclaimed, and end `worker_lost` if part of it was published.
    let config = queue("restart").with_visibility_timeout(Duration::from_secs(10));
    let dir = plugins();
    let worker = TaskWorker::start(&url, &config, dir.path(), 16);
    let client = QueueClient::connect(&url, config.clone()).await.unwrap();
    let turns = 600;
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (restart_tx, restart_rx) = oneshot::channel::<()>();
    let restart_tx = Arc::new(std::sync::Mutex::new(Some(restart_tx)));
    let results: Vec<(String, Items)> = futures::stream::iter(0..turns)
        .map(|i| {
            let (client, done, restart_tx) =
                (client.clone(), Arc::clone(&done), Arc::clone(&restart_tx));
            async move {
                let prompt = format!("restart turn {i}");
                let id = client
                    .submit_with_config(
                        "echo",
                        json!({"delay_ms": 5}),
                        TurnRequest::new(prompt.clone()),
                    )
                    .await
                    .unwrap();
                let items = collect(&client, &id).await;
                if done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == 150
                    && let Some(tx) = restart_tx.lock().unwrap().take()
                {
                    let _ = tx.send(());
                }
                (prompt, items)
            }
        })
        .buffer_unordered(100)
        .collect::<Vec<_>>()
        .into_future_with(async move {
            if restart_rx.await.is_ok() {
                tokio::task::spawn_blocking(|| redis_script(&["restart", "restart-test"]))
                    .await
                    .unwrap();
            }
        })
        .await;
    for (prompt, items) in &results {
        assert_echoed(prompt, items);
    }
    wait_drained(&client).await;
    worker.stop().await;
    redis_script(&["stop", "restart-test"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_prints_what_stream_prints() {
    let url = redis_url();
    let config = queue("cli");
    let dir = plugins();
    let logs = plugin_dir();
    let mut worker = worker_process(url, &config, dir.path(), &[], &logs.path().join("w.log"));
    let run = |args: Vec<String>| {
        let mut command = std::process::Command::new(&artifacts().runtimes);
        command
            .args(args)
            .arg("--plugin-dir")
            .arg(dir.path())
            .env_remove("AGENT_RUNTIMES_PATH")
            .env("NO_COLOR", "1");
        tokio::task::spawn_blocking(move || command.output().expect("runtimes runs"))
    };
    let words = |s: &[&str]| s.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
    let local = run(words(&["stream", "echo", "one two three", "--json"]))
        .await
        .unwrap();
    let queued = run(words(&[
        "submit",
        "echo",
        "one two three",
        "--json",
        "--redis",
        url,
        "--prefix",
        &config.prefix,
    ]))
    .await
    .unwrap();
    assert!(
        queued.status.success(),
        "{}",
        String::from_utf8_lossy(&queued.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&queued.stdout),
        String::from_utf8_lossy(&local.stdout)
    );
    let unknown = run(words(&[
        "submit",
        "nope",
        "x",
        "--redis",
        url,
        "--prefix",
        &config.prefix,
    ]))
    .await
    .unwrap();
    // An unknown runtime is a usage error (exit 2), as for `run`.
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no runtime named `nope`"));
    // The worker said what it serves when it started (it has run a job since).
    let started = std::fs::read_to_string(logs.path().join("w.log")).unwrap();
    assert!(
        started.contains(&format!("worker on queue `{}`", config.prefix))
            && started.contains("serving: echo"),
        "{started}"
    );
    worker.start_kill().unwrap();
    let _ = worker.wait().await;
}

/// `redis-cli` against the shared Redis: one command, its answer.
pub(crate) fn redis_cli(args: &[&str]) -> String {
    let output = std::process::Command::new("redis-cli")
        .args(["-u", redis_url()])
        .args(args)
        .output()
        .expect("redis-cli runs (installed with redis-server by scripts/redis.sh)");
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs redis-server: scripts/redis.sh start"]
async fn redis_memory_is_bounded_per_turn_keys_expire_and_jobs_are_deleted() {
    let url = redis_url();
    let config = queue("memory").with_result_ttl(Duration::from_secs(120));
    let dir = plugins();
    let worker = TaskWorker::start(url, &config, dir.path(), 4);
    let client = QueueClient::connect(url, config.clone()).await.unwrap();
    let id = client
        .submit("echo", TurnRequest::new("kept a while"))
        .await
        .unwrap();
    assert_echoed("kept a while", &collect(&client, &id).await);
    wait_drained(&client).await;
    // The job is gone from the stream (acknowledged and deleted), not merely acknowledged.
    assert_eq!(redis_cli(&["XLEN", &config.jobs_key()]), "0");
    // The turn's status and results expire; so do the client's inbox and the workers' adverts.
    for key in [config.status_key(&id), config.items_key(&id)] {
        let ttl: i64 = redis_cli(&["TTL", &key]).parse().unwrap();
        assert!((1..=120).contains(&ttl), "{key}: TTL {ttl}");
    }
    let inboxes = redis_cli(&["--scan", "--pattern", &format!("{}:inbox:*", config.prefix)]);
    assert!(!inboxes.is_empty(), "the client has an inbox");
    for inbox in inboxes.lines() {
        let ttl: i64 = redis_cli(&["TTL", inbox]).parse().unwrap();
        assert!((1..=120).contains(&ttl), "{inbox}: TTL {ttl}");
    }
    let ttl: i64 = redis_cli(&["PTTL", &config.workers_key()]).parse().unwrap();
    let most = runtime_queue::ADVERT_TTL.as_millis() as i64;
    assert!((1..=most).contains(&ttl), "workers: PTTL {ttl}");
    // The worker withdraws its advert when it stops; its expired adverts go with the key.
    worker.stop().await;
    assert!(client.workers().await.unwrap().is_empty());
}

/// The Redis a test run starts is stopped when the run's process exits (no `redis-server` of
/// the suite outlives it): here the owner is a child process, killed, and the server must go.
#[test]
fn a_redis_the_suite_starts_stops_when_its_owner_exits() {
    let mut owner = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("sleep starts");
    redis_script(&[
        "start",
        "--name",
        "owner-test",
        "--owner",
        &owner.id().to_string(),
    ]);
    let pid_file = workspace().join("target/redis/owner-test/redis.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("the instance's pid file")
        .trim()
        .parse()
        .expect("a pid");
    let pid = rustix::process::Pid::from_raw(pid).expect("a positive pid");
    let exited = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .expect("redis-server runs while its owner does");
    owner.kill().expect("the owner is killed");
    owner.wait().expect("the owner is reaped");
    // A pidfd becomes readable when its process exits: wait for that, bounded.
    let mut fds = [rustix::event::PollFd::new(
        &exited,
        rustix::event::PollFlags::IN,
    )];
    let timeout = rustix::event::Timespec {
        tv_sec: 30,
        tv_nsec: 0,
    };
    let ready = rustix::event::poll(&mut fds, Some(&timeout)).expect("poll");
    assert_eq!(ready, 1, "redis-server {pid:?} outlived its owner by 30 s");
}

/// `runtimes worker --isolate`: a job that segfaults its plugin gets one `crashed` result, and
/// the worker goes on to the next job.
#[tokio::test(flavor = "multi_thread")]
async fn an_isolated_worker_survives_a_segfaulting_job() {
    let url = redis_url();
    let config = queue("isolated-worker");
    let dir = plugins();
    install(dir.path(), &artifacts().hostile, "libhostile");
    let logs = plugin_dir();
    let mut worker = worker_process(
        url,
        &config,
        dir.path(),
        &["--isolate"],
        &logs.path().join("w.log"),
    );
    let client = QueueClient::connect(url, config.clone()).await.unwrap();
    let crashed = client
        .submit("hostile", TurnRequest::new("null-write"))
        .await
        .unwrap();
    let items = collect(&client, &crashed).await;
    let errors: Vec<&RuntimeError> = items.iter().filter_map(|i| i.as_ref().err()).collect();
    assert_eq!(errors.len(), 1, "{items:?}");
    assert_eq!(errors[0].kind, ErrorKind::Crashed, "{items:?}");
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker died with its job"
    );
    let next = client
        .submit("hostile", TurnRequest::new("fine"))
        .await
        .unwrap();
    let items = collect(&client, &next).await;
    assert!(
        items
            .iter()
            .any(|i| matches!(i, Ok(StreamItem::Done(o)) if o.content == "ok:fine")),
        "{items:?}"
    );
    worker.start_kill().unwrap();
    let _ = worker.wait().await;
}

/// SIGHUP makes `runtimes worker` discover again: after a plugin file is replaced, its jobs
/// run on the new file, in new worker processes, and the old ones go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_makes_a_worker_serve_an_upgraded_plugin() {
    let url = redis_url();
    let config = queue("reload");
    let dir = plugins();
    install(dir.path(), &artifacts().hostile, "libhostile");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("worker.log");
    let mut worker = worker_process(url, &config, dir.path(), &["--isolate"], &log);
    let client = QueueClient::connect(url, config).await.unwrap();
    let pid = || async {
        let id = client
            .submit("hostile", TurnRequest::new("pid"))
            .await
            .unwrap();
        match collect(&client, &id).await.pop() {
            Some(Ok(StreamItem::Done(output))) => output.content.parse::<u32>().unwrap(),
            other => panic!("no pid: {other:?}"),
        }
    };
    let mut before = HashSet::new();
    for _ in 0..4 {
        before.insert(pid().await);
    }

    replace_plugin(dir.path(), &artifacts().hostile, "libhostile");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(worker.id().unwrap()).unwrap()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let mut reloaded = false;
    for _ in 0..600 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("reloaded")) {
            assert!(line.contains("hostile"), "{line}");
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded, "the worker logged no reload");
    for _ in 0..4 {
        let after = pid().await;
        assert!(
            !before.contains(&after),
            "a job after the reload ran on an old worker"
        );
    }
    // The old workers are let go of.
    for old in &before {
        assert!(process_gone(*old).await, "old worker {old} still runs");
    }
    worker.start_kill().unwrap();
    let _ = worker.wait().await;
}
