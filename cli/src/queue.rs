//! `runtimes worker`, `runtimes submit` and `runtimes queue status`: turns as jobs on Redis
//! Streams.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use runtime_queue::{QueueClient, QueueConfig, QueueError, Worker};

use crate::failure::Failure;
use crate::style::{self, Style};
use crate::turn::{self, TurnArgs};

/// Where the queue is: shared by `worker`, `submit` (and `serve --redis`).
#[derive(Debug, Args)]
pub struct QueueArgs {
    /// The Redis server, e.g. redis://:PASSWORD@127.0.0.1:6379 (or rediss:// for TLS);
    /// without a password in it, AGENT_RUNTIMES_REDIS_PASSWORD (and
    /// AGENT_RUNTIMES_REDIS_USERNAME) give one.
    #[arg(long, value_name = "URL", env = "AGENT_RUNTIMES_REDIS_URL")]
    pub redis: String,
    /// The prefix of the queue's keys (one prefix, one queue).
    #[arg(long, value_name = "PREFIX", default_value = "runtimes")]
    pub prefix: String,
    /// The workers' consumer group.
    #[arg(long, value_name = "NAME", default_value = "workers")]
    pub group: String,
}

impl QueueArgs {
    fn config(&self) -> QueueConfig {
        QueueConfig::default()
            .with_prefix(&self.prefix)
            .with_group(&self.group)
    }
}

/// What `runtimes worker` takes.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    queue: QueueArgs,
    /// Turns run at a time.
    #[arg(long, value_name = "N", default_value_t = 16)]
    concurrency: usize,
    /// Seconds a job may go without renewal before another worker reclaims it.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    visibility_timeout: f64,
    /// Attempts before a job is dead-lettered.
    #[arg(long, value_name = "N", default_value_t = 3)]
    max_attempts: u32,
    /// Seconds a turn's status and results are kept after their last change (and its
    /// execution id is not run again).
    #[arg(long, value_name = "SECS", default_value_t = 3_600)]
    result_ttl: u64,
    #[command(flatten)]
    isolation: crate::turn::IsolationArgs,
    /// Fix a runtime's configuration: `NAME=JSON` (repeatable), checked at start. A job
    /// that carries no configuration runs with it; runtimes not named run with their
    /// default configuration.
    #[arg(long = "config", value_name = "NAME=JSON")]
    configs: Vec<String>,
    /// Let jobs set these configuration keys of a runtime: `NAME=KEY[,KEY...]`
    /// (repeatable). `*` allows every key that names no program, URL, file, environment
    /// variable or secret; those are allowed only by name. A job's configuration with any
    /// other key is refused (an `invalid_config` result naming the keys; nothing runs).
    /// By default a job may set no key.
    #[arg(long = "allow-job-config", value_name = "NAME=KEYS")]
    allow_job_config: Vec<String>,
}

/// What `runtimes queue status` takes.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    queue: QueueArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// What `runtimes submit` takes.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    queue: QueueArgs,
    #[command(flatten)]
    turn: TurnArgs,
}

impl SubmitArgs {
    /// `--json`.
    pub(crate) fn json(&self) -> bool {
        self.turn.json
    }
}

fn failure(error: QueueError) -> Failure {
    match error {
        QueueError::Url { .. } | QueueError::InvalidExecutionId { .. } => {
            Failure::Usage(error.to_string())
        }
        QueueError::WorkerConfig { .. } => Failure::Rejected(error.to_string()),
        other => Failure::Other(anyhow::Error::new(other)),
    }
}

fn seconds(flag: &str, secs: f64) -> Result<Duration, Failure> {
    if secs.is_finite() && secs > 0.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(Failure::Usage(format!(
            "{flag} must be a positive number of seconds, not {secs}"
        )))
    }
}

/// Runs a worker until SIGINT or SIGTERM, then drains its running turns.
pub async fn worker(global: &crate::Global, args: WorkerArgs) -> Result<(), Failure> {
    let config = args
        .queue
        .config()
        .with_visibility_timeout(seconds("--visibility-timeout", args.visibility_timeout)?)
        .with_max_attempts(args.max_attempts)
        .with_result_ttl(Duration::from_secs(args.result_ttl.max(1)));
    // The level of every runtime this worker runs (`--isolate`, `--isolation`,
    // `AGENT_RUNTIMES_ISOLATION`): at `process`, a crashing job ends its worker process, not
    // this worker.
    let level = args.isolation.level();
    let runtimes = Arc::new(global.registry_with(global.options().with_isolation(level)));
    if runtimes.list_names().is_empty() {
        tracing::warn!(
            "no runtime is installed in the plugin folders searched: every job will end with an error (see `runtimes list --all`)"
        );
    }
    // One line when it starts, as `serve` says where it listens (no URL: it may hold a password).
    let served: Vec<String> = runtimes
        .list_runtimes()
        .iter()
        .map(|entry| crate::style::clean(&entry.id).into_owned())
        .collect();
    println!(
        "worker on queue `{}` (group `{}`), {} at a time, serving: {}",
        crate::style::clean(&config.prefix),
        crate::style::clean(&config.group),
        args.concurrency,
        if served.is_empty() {
            "nothing".to_owned()
        } else {
            served.join(", ")
        }
    );
    let mut worker = Worker::new(runtimes, config).with_concurrency(args.concurrency);
    for given in &args.configs {
        let (name, value) = runtime_serve::parse_instance(given)
            .map_err(|error| Failure::Usage(format!("--config: {error}")))?;
        worker = worker.with_runtime_config(name, value);
    }
    for given in &args.allow_job_config {
        let (name, keys) = runtime_queue::parse_allowed_keys(given)
            .map_err(|error| Failure::Usage(format!("--allow-job-config: {error}")))?;
        worker = worker.allow_job_config(name, keys);
    }
    // SIGHUP discovers the plugins again: upgraded files serve the next jobs.
    let (reload, reloads) = tokio::sync::mpsc::unbounded_channel();
    let mut hangup = crate::signals::Hangups::subscribe();
    let hangups = tokio::spawn(async move {
        loop {
            hangup.recv().await;
            if reload.send(()).is_err() {
                return;
            }
        }
    });
    let worker = worker.with_reloads(reloads);
    let stats = worker
        .run(&args.queue.redis, shutdown_signal())
        .await
        .map_err(failure)?;
    hangups.abort();
    tracing::info!(
        taken = stats.taken,
        reclaimed = stats.reclaimed,
        "worker done"
    );
    Ok(())
}

async fn shutdown_signal() {
    crate::signals::interrupt_or_terminate().await;
}

/// A future that resolves on SIGTERM (never where there is none); the handler is installed
/// now, so a SIGTERM from this moment on is caught.
fn terminated() -> impl Future<Output = ()> {
    crate::signals::terminate()
}

/// Submits one turn to the queue and prints its items as they arrive, like `runtimes stream`.
pub async fn submit(args: SubmitArgs, style: &Style) -> Result<(), Failure> {
    let terminated = terminated();
    let (request, config) = turn::request(&args.turn)?;
    let limit = turn::timeout(&args.turn)?;
    let client = QueueClient::connect(&args.queue.redis, args.queue.config())
        .await
        .map_err(failure)?;
    let id = client
        .submit_with_config(&args.turn.name, config, request)
        .await
        .map_err(failure)?;
    tracing::info!(execution_id = %id, "submitted");
    let stream = client.results(&id);
    let printed = async {
        match limit {
            None => turn::print_stream(stream, args.turn.json, style).await,
            Some(limit) => {
                match tokio::time::timeout(limit, turn::print_stream(stream, args.turn.json, style))
                    .await
                {
                    Ok(result) => result,
                    Err(_) => Err(Failure::Turn(runtime_api::RuntimeError::timeout(format!(
                        "no result within {limit:?}"
                    )))),
                }
            }
        }
    };
    // SIGTERM cancels the job as Ctrl-C does (which `print_stream` handles).
    let result = tokio::select! {
        result = printed => result,
        () = terminated => Err(Failure::Interrupted),
    };
    if result.is_err() {
        // Interrupted or timed out: cancel before the process exits (dropping the stream
        // only starts a cancel in the background). A finished turn is left as it is.
        if let Err(error) = client.cancel(&id).await {
            tracing::warn!(%error, execution_id = %id, "could not cancel the turn");
        }
    }
    result.map_err(|failure| match failure {
        // No worker has that runtime: a usage error (exit 2), as for `run`.
        Failure::Turn(error) if error.metadata["unknown_runtime"] == true => {
            Failure::Usage(error.message)
        }
        other => other,
    })
}

/// Prints the backlog (jobs waiting, running, dead-lettered) and the live workers with the
/// runtimes they advertise.
pub async fn status(args: StatusArgs, style: &Style) -> Result<(), Failure> {
    let config = args
        .queue
        .config()
        .with_reconnect_for(Duration::from_secs(5));
    let client = QueueClient::connect(&args.queue.redis, config)
        .await
        .map_err(failure)?;
    let backlog = client.backlog().await.map_err(failure)?;
    let workers = client.workers().await.map_err(failure)?;
    let waiting = backlog.jobs.saturating_sub(backlog.pending);
    if args.json {
        let workers: Vec<serde_json::Value> = workers
            .iter()
            .map(|w| {
                serde_json::json!({
                    "consumer": w.consumer,
                    "concurrency": w.concurrency,
                    "runtimes": w.runtimes,
                    "started_ms": w.started_ms,
                    "expires_ms": w.expires_ms,
                })
            })
            .collect();
        let out = serde_json::json!({
            "waiting": waiting,
            "running": backlog.pending,
            "dead": backlog.dead,
            "workers": workers,
        });
        println!("{}", style::json_text(&out, true));
        return Ok(());
    }
    println!(
        "jobs: {waiting} waiting, {} running, {} dead-lettered",
        backlog.pending, backlog.dead
    );
    if workers.is_empty() {
        println!(
            "no live worker: waiting jobs run when one starts (`runtimes worker --redis URL`)"
        );
        return Ok(());
    }
    let mut rows = vec![vec![
        "WORKER".to_owned(),
        "CONCURRENCY".to_owned(),
        "RUNTIMES".to_owned(),
    ]];
    for worker in &workers {
        let runtimes: Vec<String> = worker
            .runtimes
            .iter()
            .map(|r| style::named(&r.id, &r.aliases))
            .collect();
        rows.push(vec![
            style::clean(&worker.consumer).into_owned(),
            worker.concurrency.to_string(),
            runtimes.join("; "),
        ]);
    }
    print!("{}", style::table(&rows, style));
    Ok(())
}
