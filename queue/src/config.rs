//! Where a queue lives in Redis and how it behaves: key names, consumer group, expiries,
//! visibility timeout, attempts.

use std::time::Duration;

/// The queue's fixed bounds, in one place; what an operator tunes per queue is
/// [`QueueConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueLimits {
    /// How long a worker's `XREADGROUP` or `XREAD` blocks in Redis (1 s).
    pub worker_block: Duration,
    /// How long a client's inbox reader blocks in Redis per call (1 s).
    pub inbox_block: Duration,
    /// Most result items a worker publishes in one step (64).
    pub result_batch: usize,
    /// Most runtime instances (one per runtime and configuration) a worker keeps (256).
    pub worker_instances: usize,
    /// How often a worker renews its advert in `<prefix>:workers` (5 s).
    pub advert_every: Duration,
    /// How long an advert holds without renewal: a worker that stopped (killed, or cut off
    /// from Redis) leaves the list of served runtimes within this time (15 s).
    pub advert_ttl: Duration,
    /// The most bytes of a job kept in its dead letter (4 KiB): the rest is cut, and the
    /// letter keeps the job's whole size and SHA-256.
    pub dead_letter_job_bytes: usize,
    /// The most dead letters kept (about 10,000: `MAXLEN ~`), so at most about 40 MiB of
    /// payloads.
    pub dead_letters: usize,
    /// How long a dead letter is kept (7 days): older ones are trimmed (`MINID`) whenever a
    /// new one is added.
    pub dead_letter_ttl: Duration,
}

impl QueueLimits {
    /// The defaults, as documented on each field.
    pub const DEFAULT: Self = Self {
        worker_block: Duration::from_secs(1),
        inbox_block: Duration::from_secs(1),
        result_batch: 64,
        worker_instances: 256,
        advert_every: Duration::from_secs(5),
        advert_ttl: Duration::from_secs(15),
        dead_letter_job_bytes: 4096,
        dead_letters: 10_000,
        dead_letter_ttl: Duration::from_secs(7 * 24 * 3600),
    };
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The limits in force.
pub const LIMITS: QueueLimits = QueueLimits::DEFAULT;

/// The settings clients and workers of one queue must share (the key prefix and group) and
/// the limits they apply.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueueConfig {
    /// Prefix of every key (default `runtimes`).
    pub prefix: String,
    /// The workers' consumer group (default `workers`).
    pub group: String,
    /// How long a turn's status hash and result list live after their last write
    /// (default 1 h): the window in which its results can be read and its execution id is
    /// not run again. Redis holds about 0.8 KB per small turn for this long. A queued job
    /// whose status expired is still run.
    pub result_ttl: Duration,
    /// A job taken by a worker that has not renewed it for this long is reclaimed by
    /// another (default 30 s). Workers renew their running jobs every third of it.
    pub visibility_timeout: Duration,
    /// A job taken this many times without finishing is dead-lettered (default 3).
    pub max_attempts: u32,
    /// How long an operation keeps retrying while Redis is unreachable before it fails
    /// (default 60 s).
    pub reconnect_for: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            prefix: "runtimes".to_owned(),
            group: "workers".to_owned(),
            result_ttl: Duration::from_secs(3600),
            visibility_timeout: Duration::from_secs(30),
            max_attempts: 3,
            reconnect_for: Duration::from_secs(60),
        }
    }
}

impl QueueConfig {
    /// With another key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// With another consumer group.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// With another expiry for per-turn keys.
    pub fn with_result_ttl(mut self, ttl: Duration) -> Self {
        self.result_ttl = ttl;
        self
    }

    /// With another visibility timeout.
    pub fn with_visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = timeout;
        self
    }

    /// With another attempt limit (at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// With another reconnection window.
    pub fn with_reconnect_for(mut self, window: Duration) -> Self {
        self.reconnect_for = window;
        self
    }

    /// The job stream.
    pub fn jobs_key(&self) -> String {
        format!("{}:jobs", self.prefix)
    }

    /// The dead-letter stream.
    pub fn dead_key(&self) -> String {
        format!("{}:dead", self.prefix)
    }

    /// The stream of cancel requests workers follow.
    pub fn cancels_key(&self) -> String {
        format!("{}:cancels", self.prefix)
    }

    /// The hash of live workers' adverts (field: consumer; value: a
    /// [`WorkerAdvert`](crate::WorkerAdvert) JSON).
    pub fn workers_key(&self) -> String {
        format!("{}:workers", self.prefix)
    }

    /// A turn's status hash.
    pub fn status_key(&self, execution_id: &str) -> String {
        format!("{}:status:{execution_id}", self.prefix)
    }

    /// A turn's result list.
    pub fn items_key(&self, execution_id: &str) -> String {
        format!("{}:items:{execution_id}", self.prefix)
    }

    /// A client's inbox stream of wake-ups.
    pub(crate) fn inbox_key(&self, client: u64) -> String {
        format!("{}:inbox:{client}", self.prefix)
    }

    /// Whether a job's `notify` names an inbox of this queue (a job cannot make a worker
    /// write to any other key).
    pub(crate) fn is_inbox_key(&self, key: &str) -> bool {
        key.strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix(":inbox:"))
            .is_some_and(|n| {
                !n.is_empty() && n.len() <= 20 && n.bytes().all(|b| b.is_ascii_digit())
            })
    }

    /// The counter that numbers clients and workers.
    pub(crate) fn ids_key(&self) -> String {
        format!("{}:ids", self.prefix)
    }

    pub(crate) fn ttl_secs(&self) -> u64 {
        self.result_ttl.as_secs().max(1)
    }

    pub(crate) fn visibility_ms(&self) -> u64 {
        (self.visibility_timeout.as_millis() as u64).max(100)
    }
}

/// Whether an execution id can be a key: 1 to 128 of `[A-Za-z0-9._:-]`.
pub(crate) fn valid_execution_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_ids_that_can_be_keys() {
        for ok in ["q1-0", "turn-12-3", "chatcmpl.abc_DEF:1", &"x".repeat(128)] {
            assert!(valid_execution_id(ok), "{ok}");
        }
        for bad in ["", "a b", "a\nb", "é", "a*", &"x".repeat(129)] {
            assert!(!valid_execution_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn status_and_items_keys_never_collide() {
        let config = QueueConfig::default();
        assert_ne!(config.status_key("a:items"), config.items_key("a"));
        assert_ne!(config.items_key("a:status"), config.status_key("a"));
    }

    #[test]
    fn only_this_queues_inboxes_are_notified() {
        let config = QueueConfig::default().with_prefix("p");
        assert!(config.is_inbox_key(&config.inbox_key(42)));
        for other in [
            "p:jobs",
            "p:inbox:",
            "p:inbox:4x",
            "q:inbox:1",
            "p:inbox:1:x",
        ] {
            assert!(!config.is_inbox_key(other), "{other}");
        }
    }
}
