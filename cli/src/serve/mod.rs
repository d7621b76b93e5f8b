//! `runtimes serve`: every installed runtime behind an OpenAI-compatible HTTP endpoint.
//!
//! - [`wire`]: the OpenAI request and response shapes;
//! - [`translate`]: a chat-completions request to a `TurnRequest`, a `TurnOutput` back;
//! - [`routes`]: the endpoints, bearer auth, limits;
//! - [`handles`]: the turn backend, the one place a runtime name becomes something that runs
//!   turns: this process's plugins (`--config`, `--isolate`) or a Redis queue's workers
//!   (`--redis`);
//! - [`sse`]: a streamed turn as server-sent events;
//! - [`error`]: OpenAI's error shape, and the status code of each runtime error kind;
//! - [`metrics`]: the Prometheus metrics;
//! - [`shutdown`]: signals, and when the server stops accepting connections.
//!
//! The server discovers plugins once at start (none with `--redis`: the workers' adverts say
//! what is served), listens (loopback by default), prints
//! `listening on http://ADDR`, and on SIGTERM or Ctrl-C stops accepting connections and lets
//! running turns finish within `--shutdown-grace`; turns still running then are cancelled.

mod error;
mod handles;
mod metrics;
mod routes;
mod shutdown;
mod sse;
mod translate;
mod wire;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use runtime_loader::Runtimes;
use tokio::sync::Semaphore;

use crate::failure::Failure;

/// The longest the server waits, after the grace period, for cancelled turns to be released
/// inside their plugins before it exits.
const RELEASE_BOUND: std::time::Duration = std::time::Duration::from_secs(5);

/// What `serve` takes.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on; port 0 picks a free port. Loopback by default: put a
    /// reverse proxy with TLS in front to serve other machines.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8700")]
    addr: SocketAddr,
    /// Require `Authorization: Bearer <key>` on every endpoint but /healthz, where <key> is
    /// the value of this environment variable (which must be set and non-empty).
    #[arg(long, value_name = "NAME")]
    api_key_env: Option<String>,
    /// The most turns running at once; more are answered 429 with `Retry-After`.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_concurrent: u32,
    /// End a turn (streamed or not) that runs longer than this many seconds, with a 504
    /// `timeout` error.
    #[arg(long, value_name = "SECS", default_value_t = 600.0)]
    request_timeout: f64,
    /// After SIGTERM or Ctrl-C, how many seconds running turns get to finish.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    shutdown_grace: f64,
    /// The largest request body, in bytes; larger ones are answered 413.
    #[arg(long, value_name = "BYTES", default_value_t = 4 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Configure a runtime: `NAME=JSON` (repeatable), e.g. `--config
    /// 'openai={"base_url": "http://127.0.0.1:8080/v1", "model": "smollm2"}'`. The runtime is
    /// created with it at start (a bad configuration stops the server there); runtimes not
    /// named get their default configuration on first use.
    #[arg(long = "config", value_name = "NAME=JSON")]
    configs: Vec<String>,
    /// Run every runtime in an isolated, supervised worker process (a crashing plugin
    /// cannot take the server down). Not available in this build yet: the server refuses to
    /// start rather than run without the isolation asked for.
    #[arg(long, conflicts_with = "redis")]
    isolate: bool,
    /// Send every turn to the Redis queue at this URL (redis://HOST:PORT[/DB]) instead of
    /// running it here: `runtimes worker` processes run them, and this server loads no
    /// plugin. The models offered are the runtimes the live workers advertise.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// With --redis: the prefix of the queue's keys (as given to the workers).
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "runtimes",
        requires = "redis"
    )]
    prefix: String,
    /// With --redis: the workers' consumer group (as given to the workers).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "workers",
        requires = "redis"
    )]
    group: String,
    /// With --redis: how many seconds a request waits for an unreachable Redis before it is
    /// answered 503.
    #[arg(long, value_name = "SECS", default_value_t = 5.0, requires = "redis")]
    redis_wait: f64,
}

/// Unix seconds now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn seconds(flag: &str, secs: f64) -> Result<Duration, Failure> {
    if secs.is_finite() && secs > 0.0 && secs < 1e9 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(Failure::Usage(format!(
            "{flag} must be a positive number of seconds, not {secs}"
        )))
    }
}

/// The turn backend the arguments ask for: the Redis queue's workers with `--redis`,
/// otherwise the plugins of the registry `registry` discovers.
async fn backend(
    registry: impl FnOnce() -> Runtimes,
    args: &ServeArgs,
    request_timeout: Duration,
) -> Result<handles::Backend, Failure> {
    let usage = |error: handles::ConfigError| match error {
        handles::ConfigError::Resolve(error) => Failure::from(error),
        other => Failure::Usage(other.to_string()),
    };
    if let Some(url) = &args.redis {
        let config = runtime_queue::QueueConfig::default()
            .with_prefix(&args.prefix)
            .with_group(&args.group)
            .with_reconnect_for(seconds("--redis-wait", args.redis_wait)?);
        return handles::Backend::queue(url, config, &args.configs, request_timeout)
            .await
            .map_err(usage);
    }
    let runtimes = registry();
    if args.isolate {
        // Every runtime in a supervised worker process of its own.
        for entry in runtimes.list_runtimes() {
            let _ = runtimes.set_isolation(&entry.id, runtime_loader::Isolation::Process);
        }
    }
    let report = runtimes.report();
    let available = runtimes.list_runtimes();
    tracing::info!(
        runtimes = available.len(),
        rejected = report.rejected.len(),
        shadowed = report.shadowed.len(),
        "plugins discovered"
    );
    if available.is_empty() {
        tracing::warn!("no runtime is installed: every chat completion will answer 404");
    }
    handles::Backend::local(runtimes, &args.configs, request_timeout).map_err(usage)
}

/// Runs the server until SIGTERM or Ctrl-C. `registry` discovers the plugins (not called
/// with `--redis`).
pub async fn serve(registry: impl FnOnce() -> Runtimes, args: ServeArgs) -> Result<(), Failure> {
    let request_timeout = seconds("--request-timeout", args.request_timeout)?;
    let grace = seconds("--shutdown-grace", args.shutdown_grace)?;
    let api_key_digest = match &args.api_key_env {
        None => None,
        Some(name) => match std::env::var(name) {
            Ok(key) if !key.is_empty() => Some(routes::digest(key.as_bytes())),
            _ => {
                return Err(Failure::Usage(format!(
                    "--api-key-env {}: the environment variable is not set or empty; set it to the key clients must send",
                    name.escape_debug()
                )));
            }
        },
    };
    if !args.addr.ip().is_loopback() {
        tracing::warn!(addr = %args.addr, "listening beyond loopback: anyone who can reach this address can run turns{}",
            if api_key_digest.is_none() { " (and no --api-key-env is set)" } else { "" });
    }
    let handles = backend(registry, &args, request_timeout).await?;
    tracing::info!("turns run on {}", handles.describe());
    let handle = metrics::install().map_err(|e| Failure::Other(e.into()))?;
    let max_concurrent = args.max_concurrent as usize;
    let (close, closing) = tokio::sync::watch::channel(false);
    let state = Arc::new(routes::AppState {
        handles,
        api_key_digest,
        turns: Arc::new(Semaphore::new(max_concurrent)),
        max_concurrent,
        max_body_bytes: args.max_body_bytes,
        metrics: handle,
        started: unix_now(),
        closing,
    });
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| Failure::Other(anyhow::anyhow!("cannot listen on {}: {e}", args.addr)))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::Other(anyhow::anyhow!("cannot read the bound address: {e}")))?;
    println!("listening on http://{local}");
    let _ = std::io::stdout().flush();

    let (listener, closed) = shutdown::ClosingListener::new(listener);
    let server = axum::serve(listener, routes::router(Arc::clone(&state)))
        .with_graceful_shutdown(shutdown::signal());
    let grace_state = Arc::clone(&state);
    let grace_over = async move {
        let state = grace_state;
        if closed.await.is_err() {
            std::future::pending::<()>().await;
        }
        let running = max_concurrent.saturating_sub(state.turns.available_permits());
        eprintln!(
            "shutting down: no new connections; {running} running turn(s) get {grace:?} to finish"
        );
        tokio::time::sleep(grace).await;
        max_concurrent.saturating_sub(state.turns.available_permits())
    };
    tokio::select! {
        result = server.into_future() => {
            result.map_err(|e| Failure::Other(anyhow::anyhow!("the server failed: {e}")))?;
            eprintln!("stopped");
        }
        running = grace_over => {
            eprintln!("the grace period is over: cancelling {running} running turn(s)");
            // Drop every running turn, then give the plugins a moment to release them on
            // their own threads (their cleanup: child processes, connections), bounded.
            let _ = close.send(true);
            let released = async {
                let _ = state.turns.acquire_many(max_concurrent as u32).await;
                state.handles.wait_idle().await;
            };
            if tokio::time::timeout(RELEASE_BOUND, released).await.is_err() {
                eprintln!("some turns did not end within {RELEASE_BOUND:?}; exiting anyway");
            }
        }
    }
    Ok(())
}
