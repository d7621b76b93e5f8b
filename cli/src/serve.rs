//! `runtimes serve`: every installed runtime behind an OpenAI-compatible HTTP endpoint. A
//! thin command over the `runtime-serve` library: it reads its flags into a
//! [`ServeConfig`], prints `listening on http://ADDR`, and serves until SIGTERM or Ctrl-C
//! (then running turns get `--shutdown-grace` to finish; those still running are cancelled).

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use runtime_loader::Runtimes;
use runtime_serve::{
    ApiKey, ConfigError, RedisBackend, ServeConfig, ServeError, ServeLimits, Server,
};

use crate::failure::Failure;

/// What `serve` takes.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on; port 0 picks a free port. Loopback by default: put a
    /// reverse proxy with TLS in front to serve other machines.
    #[arg(long, value_name = "ADDR", default_value_t = ServeConfig::default().addr)]
    addr: SocketAddr,
    /// Require `Authorization: Bearer <key>` on every endpoint but /healthz, where <key> is
    /// the value of this environment variable (which must be set and non-empty).
    #[arg(long, value_name = "NAME")]
    api_key_env: Option<String>,
    /// The most turns running at once; more are answered 429 with `Retry-After`.
    #[arg(long, value_name = "N", default_value_t = ServeLimits::default().max_concurrent, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_concurrent: u32,
    /// End a turn (streamed or not) that runs longer than this many seconds, with a 504
    /// `timeout` error.
    #[arg(long, value_name = "SECS", default_value_t = ServeLimits::default().request_timeout.as_secs_f64())]
    request_timeout: f64,
    /// After SIGTERM or Ctrl-C, how many seconds running turns get to finish.
    #[arg(long, value_name = "SECS", default_value_t = ServeLimits::default().shutdown_grace.as_secs_f64())]
    shutdown_grace: f64,
    /// The largest request body, in bytes; larger ones are answered 413.
    #[arg(long, value_name = "BYTES", default_value_t = ServeLimits::default().max_body_bytes)]
    max_body_bytes: usize,
    /// How many seconds a client gets to send its whole request body (one deadline, not
    /// reset by each read); then it is answered 408.
    #[arg(long, value_name = "SECS", default_value_t = ServeLimits::default().body_timeout.as_secs_f64())]
    body_timeout: f64,
    /// How many seconds a client gets to send a request's head (request line and headers),
    /// from the connection's accept or the request's first byte; then the connection is
    /// closed.
    #[arg(long, value_name = "SECS", default_value_t = ServeLimits::default().header_read_timeout.as_secs_f64())]
    header_read_timeout: f64,
    /// How many seconds a keep-alive connection may stay idle between requests (from the end
    /// of its last response to the first byte of the next request); then it is closed.
    #[arg(long, value_name = "SECS", default_value_t = ServeLimits::default().idle_timeout.as_secs_f64())]
    idle_timeout: f64,
    /// The most connections open at once; at the cap the server accepts no more until one
    /// ends. Keep it below the descriptor limit (`ulimit -n`).
    #[arg(long, value_name = "N", default_value_t = ServeLimits::default().max_connections as u32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// Configure a runtime: `NAME=JSON` (repeatable), e.g. `--config
    /// 'openai={"base_url": "http://127.0.0.1:8080/v1", "model": "smollm2"}'`. The runtime is
    /// created with it at start (a bad configuration stops the server there); runtimes not
    /// named get their default configuration on first use.
    #[arg(long = "config", value_name = "NAME=JSON")]
    configs: Vec<String>,
    /// Run every runtime in an isolated, supervised worker process (`--isolate`, the same as
    /// `--isolation process`): a crashing plugin cannot take the server down, and its turns
    /// end with a `crashed` error.
    #[command(flatten)]
    isolation: crate::turn::IsolationArgs,
    /// Send every turn to the Redis queue at this URL (redis://[[USER]:PASSWORD@]HOST:PORT[/DB],
    /// rediss:// for TLS; AGENT_RUNTIMES_REDIS_PASSWORD when the URL has no password) instead of
    /// running it here: `runtimes worker` processes run them, and this server loads no
    /// plugin. The models offered are the runtimes the live workers advertise.
    #[arg(long, value_name = "URL", conflicts_with = "isolate")]
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
    #[arg(long, value_name = "SECS", default_value_t = ServeLimits::default().redis_wait.as_secs_f64(), requires = "redis")]
    redis_wait: f64,
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

/// The flags as the library's configuration, or the usage error they make.
fn config(args: ServeArgs) -> Result<ServeConfig, Failure> {
    let mut limits = ServeLimits::default();
    limits.max_concurrent = args.max_concurrent;
    limits.request_timeout = seconds("--request-timeout", args.request_timeout)?;
    limits.shutdown_grace = seconds("--shutdown-grace", args.shutdown_grace)?;
    limits.max_body_bytes = args.max_body_bytes;
    limits.body_timeout = seconds("--body-timeout", args.body_timeout)?;
    limits.header_read_timeout = seconds("--header-read-timeout", args.header_read_timeout)?;
    limits.idle_timeout = seconds("--idle-timeout", args.idle_timeout)?;
    limits.max_connections = args.max_connections as usize;
    let mut config = ServeConfig::default()
        .with_addr(args.addr)
        .with_limits(limits);
    if let Some(name) = &args.api_key_env {
        match std::env::var(name).ok().and_then(ApiKey::new) {
            Some(key) => config = config.with_api_key(key),
            None => {
                return Err(Failure::Usage(format!(
                    "--api-key-env {}: the environment variable is not set or empty; set it to the key clients must send",
                    name.escape_debug()
                )));
            }
        }
    }
    if let Some(url) = args.redis {
        config.limits.redis_wait = seconds("--redis-wait", args.redis_wait)?;
        config = config.with_redis(
            RedisBackend::new(url)
                .with_prefix(args.prefix)
                .with_group(args.group),
        );
    }
    if let Some(level) = args.isolation.chosen() {
        // `process`: every runtime in a supervised worker process of its own.
        config = config.with_isolation(level);
    }
    for given in &args.configs {
        let (name, value) = runtime_serve::parse_instance(given).map_err(config_failure)?;
        config = config.with_instance(name, value);
    }
    Ok(config)
}

/// A runtime refused is the loader's failure (its exit code); any other configuration
/// problem is a usage error.
fn config_failure(error: ConfigError) -> Failure {
    match error {
        ConfigError::Resolve(error) => Failure::from(error),
        other => Failure::Usage(other.to_string()),
    }
}

/// Runs the server until SIGTERM or Ctrl-C. `registry` discovers the plugins (not called
/// with `--redis`).
pub async fn serve(registry: impl FnOnce() -> Runtimes, args: ServeArgs) -> Result<(), Failure> {
    let config = config(args)?;
    // From the start: a SIGHUP while the server starts (discovery, `--config` instances,
    // workers) is kept for when it is up, rather than ending it.
    let mut hangup = crate::signals::Hangups::subscribe();
    let server = Server::new(config, registry)
        .await
        .map_err(serve_failure)?
        .on_event(|event| eprintln!("{event}"));
    let listener = server.bind().await.map_err(serve_failure)?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::Other(anyhow::anyhow!("cannot read the bound address: {e}")))?;
    println!("listening on http://{local}");
    let _ = std::io::stdout().flush();
    // SIGHUP discovers the plugins again: upgraded files serve new turns.
    let reloader = server.reloader();
    let reloads = tokio::spawn(async move {
        loop {
            hangup.recv().await;
            match reloader.reload().await {
                Ok(outcome) => eprintln!("{}", crate::style::reloaded(&outcome)),
                Err(error) => eprintln!("reload: {error}"),
            }
        }
    });
    let served = server.serve(listener, signal()).await;
    reloads.abort();
    served.map_err(serve_failure)
}

/// The failure, with the message `runtimes serve` has always given.
fn serve_failure(error: ServeError) -> Failure {
    match error {
        ServeError::Config(error) => config_failure(error),
        ServeError::Metrics(error) => Failure::Other(error.into()),
        ServeError::Bind { addr, source } => {
            Failure::Other(anyhow::anyhow!("cannot listen on {addr}: {source}"))
        }
        ServeError::Serve(error) => Failure::Other(anyhow::anyhow!("the server failed: {error}")),
        other => Failure::Other(other.into()),
    }
}

/// Waits for SIGTERM or Ctrl-C.
async fn signal() {
    crate::signals::interrupt_or_terminate().await;
}
