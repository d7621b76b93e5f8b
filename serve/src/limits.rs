//! Every limit of the server in one place, with its default.

use std::time::Duration;

/// The server's limits: sizes, counts and time bounds. [`ServeLimits::default`] gives the
/// values `runtimes serve` uses when no flag changes them (each field says its default).
///
/// ```
/// use std::time::Duration;
/// use runtime_serve::ServeLimits;
///
/// let mut limits = ServeLimits::default();
/// limits.max_concurrent = 32;
/// limits.request_timeout = Duration::from_secs(120);
/// assert_eq!(limits.max_body_bytes, 4 * 1024 * 1024);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeLimits {
    /// The most turns running at once; more are answered 429 with `Retry-After`
    /// (`--max-concurrent`). Default: 256. 0 answers every turn 429.
    pub max_concurrent: u32,
    /// A turn (streamed or not) that runs longer ends with a 504 `timeout` error
    /// (`--request-timeout`). Default: 600 s.
    pub request_timeout: Duration,
    /// Once the shutdown future resolves, how long running turns get to finish before they
    /// are cancelled (`--shutdown-grace`). Default: 30 s.
    pub shutdown_grace: Duration,
    /// After the grace period, the longest the server waits for the cancelled turns to be
    /// released inside their plugins (or for their cancels to reach the queue) before it
    /// returns anyway. Default: 5 s.
    pub release_bound: Duration,
    /// The largest request body, in bytes; larger ones are answered 413
    /// (`--max-body-bytes`). Default: 4 MiB.
    pub max_body_bytes: usize,
    /// How long a client may take to send its whole request body, from the end of its
    /// headers: a total deadline, not reset by each read (a client trickling a byte a second
    /// is answered 408 when it passes). Default: 30 s.
    pub body_timeout: Duration,
    /// How long a client may take to send a request's whole head (request line and
    /// headers): from the accept for a connection's first request, from the request's first
    /// byte for the next ones on a keep-alive connection. A connection that has not sent it
    /// is closed (`--header-read-timeout`). Default: 10 s.
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may stay idle (no request running, no byte of the
    /// next one received) after its last response before it is closed (`--idle-timeout`).
    /// Default: 60 s.
    pub idle_timeout: Duration,
    /// The most connections open at once (`--max-connections`); at the cap the server stops
    /// accepting until one ends (the kernel's listen backlog holds the rest), so it never
    /// runs out of file descriptors. Keep it below the process's descriptor limit
    /// (`ulimit -n`, often 1024) less what the runtimes need; the server lowers it to the
    /// descriptor limit less 64 where it can read that limit (Linux). Default: 512.
    pub max_connections: usize,
    /// With a queue backend: how long `/healthz` waits for the workers' adverts before it
    /// says the queue is unreachable. Default: 1 s.
    pub health_wait: Duration,
    /// With a queue backend: how long a request waits for an unreachable Redis before it is
    /// answered 503 (`--redis-wait`; the queue client's `reconnect_for`). Default: 5 s.
    pub redis_wait: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_concurrent: 256,
            request_timeout: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(30),
            release_bound: Duration::from_secs(5),
            max_body_bytes: 4 * 1024 * 1024,
            body_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
            health_wait: Duration::from_secs(1),
            redis_wait: Duration::from_secs(5),
        }
    }
}
