//! Reconnecting connections and retries while Redis is away.

use std::future::Future;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RetryMethod};

use crate::error::QueueError;

/// The environment variable a password is read from when the URL carries none.
pub const PASSWORD_ENV: &str = "AGENT_RUNTIMES_REDIS_PASSWORD";
/// The environment variable an ACL user name is read from when the URL carries none.
pub const USERNAME_ENV: &str = "AGENT_RUNTIMES_REDIS_USERNAME";

/// `url` with its password (if any) replaced by `***`: what errors and logs show.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let shown = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                // `redis://SECRET@host` is a password alone in some clients' spelling.
                "***".to_owned()
            };
            format!("{scheme}://{shown}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// A client for `url` with `TCP_NODELAY` (the redis crate leaves Nagle's algorithm on, which
/// delays small pipelined commands). Credentials come from the URL
/// (`redis://[USER]:PASSWORD@HOST:PORT`), or else from [`PASSWORD_ENV`] and
/// [`USERNAME_ENV`].
pub(crate) fn open(url: &str) -> Result<redis::Client, QueueError> {
    use redis::IntoConnectionInfo as _;
    let invalid = |source| QueueError::Url {
        url: redact_url(url),
        source,
    };
    let mut info = url.into_connection_info().map_err(invalid)?;
    if info.redis_settings().password().is_none()
        && let Some(password) = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty())
    {
        let mut settings = info.redis_settings().clone().set_password(password);
        if settings.username().is_none()
            && let Some(user) = std::env::var(USERNAME_ENV).ok().filter(|u| !u.is_empty())
        {
            settings = settings.set_username(user);
        }
        info = info.set_redis_settings(settings);
    }
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    redis::Client::open(info.set_tcp_settings(tcp)).map_err(invalid)
}

/// Opens a reconnecting connection. `blocking`: the longest a command on it blocks in Redis
/// (XREAD / XREADGROUP `BLOCK`), added to the response timeout. Blocking commands get their
/// own connection: on a shared one they would hold up every command behind them.
pub(crate) async fn connect(
    client: &redis::Client,
    url: &str,
    blocking: Duration,
    window: Duration,
) -> Result<ConnectionManager, QueueError> {
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(5) + blocking))
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(1))
        .set_number_of_retries(4);
    retry("connect", window, || {
        ConnectionManager::new_with_config(client.clone(), config.clone())
    })
    .await
    .map_err(|error| match error {
        QueueError::Redis { source, .. }
            if source.kind() == redis::ErrorKind::InvalidClientConfig =>
        {
            QueueError::Url {
                url: url.to_owned(),
                source,
            }
        }
        other => other,
    })
}

/// Whether retrying (after a reconnection) may cure this error.
pub(crate) fn transient(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || matches!(
            error.retry_method(),
            RetryMethod::Reconnect | RetryMethod::WaitAndRetry | RetryMethod::RetryImmediately
        )
        || matches!(error.code(), Some("LOADING" | "TRYAGAIN" | "MASTERDOWN"))
}

/// Runs `attempt` until it succeeds, fails for good, or `window` has passed; between tries
/// it waits 20 ms, doubling up to 1 s (the connection manager reconnects in the meantime).
pub(crate) async fn retry<T, F, Fut>(
    operation: &'static str,
    window: Duration,
    mut attempt: F,
) -> Result<T, QueueError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RedisError>>,
{
    // The window is a deadline: no pause and no attempt goes past it (an attempt cut at the
    // deadline counts as Redis being unreachable).
    let started = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        let outcome = if window.is_zero() {
            attempt().await
        } else {
            let left = window.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, attempt()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "timed out",
                ))),
            }
        };
        match outcome {
            Ok(value) => return Ok(value),
            Err(source) if transient(&source) => {
                let left = window.saturating_sub(started.elapsed());
                if left.is_zero() {
                    return Err(QueueError::Unreachable {
                        operation,
                        waited: started.elapsed(),
                        source,
                    });
                }
                tracing::debug!(operation, error = %source, "Redis unavailable; retrying");
                tokio::time::sleep(pause.min(left)).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(source) => return Err(QueueError::Redis { operation, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{open, redact_url};

    #[test]
    fn tls_urls_are_understood() {
        // The redis crate is built with rustls: `rediss://` is a client, not a usage error.
        assert!(open("rediss://:pw@redis.example:6380/0").is_ok());
        assert!(open("redis://:pw@127.0.0.1:6379").is_ok());
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("redis://:s3cret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("rediss://worker:s3cret@redis.internal:6380"),
            "rediss://worker:***@redis.internal:6380"
        );
        assert_eq!(redact_url("redis://s3cret@h:1"), "redis://***@h:1");
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
