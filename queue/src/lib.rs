//! Turns as jobs on Redis Streams, run by any number of workers.
//!
//! A [`QueueClient`] submits a turn (runtime id, configuration, [`TurnRequest`]) to the job
//! stream and reads its results (a per-turn list) as a stream of the same items a local `TurnStream` gives; a
//! [`Worker`] takes jobs through a consumer group and runs them with its own
//! `runtime_loader::Runtimes` registry, at whatever isolation level that registry uses.
//!
//! # Keys (prefix `runtimes` by default)
//!
//! | key | type | holds | bounded by |
//! |---|---|---|---|
//! | `<p>:jobs` | stream + consumer group | one entry per job (field `job`: [`Job`] JSON) | entries are deleted (`XDEL`) when acknowledged; never `MAXLEN` (that would drop jobs) |
//! | `<p>:status:<id>` | hash | the turn's status, attempts, worker, error (≈ 0.25 KB) | expiry (`result_ttl`, default 1 h, renewed on every change) |
//! | `<p>:items:<id>` | list | the turn's results, one [`ResultEntry`] JSON each (a list: ≈ 0.5 KB for a small turn, where a stream preallocates 4 KB) | expiry (`result_ttl`) |
//! | `<p>:inbox:<client>` | stream | wake-ups for one client (execution ids) | `MAXLEN ~ 10000` and expiry: losing one only delays a reader, which also polls |
//! | `<p>:cancels` | stream | cancel requests workers follow | `MAXLEN ~ 1000`; the status hash's `cancel` flag is the lasting record |
//! | `<p>:dead` | stream | dead letters with the reason and the job (its first 4 KiB, its size and SHA-256) | `MAXLEN ~ 10000` and `MINID` (7 days), trimmed when a letter is added: about 40 MiB at most |
//! | `<p>:workers` | hash | one [`WorkerAdvert`] per live worker: its consumer name and the runtimes it serves (id, aliases, version, capabilities) | each advert holds [`ADVERT_TTL`] unless renewed (every [`ADVERT_EVERY`]); workers remove expired ones, withdraw theirs when they stop, and the key expires when no worker renews it |
//!
//! # Delivery
//!
//! At-least-once execution, with the execution id as the idempotency key: submitting an id
//! that is already known enqueues nothing; a job whose turn already finished is acknowledged
//! without running. A worker renews its running jobs every third of the visibility timeout;
//! a job not renewed for a whole timeout (its worker died) is reclaimed by another worker
//! (`XAUTOCLAIM`) and retried, unless the first attempt had already published part of the
//! result: then it ends with a `worker_lost` error, so no submitter ever sees an item twice.
//! A job taken `max_attempts` times without finishing is dead-lettered with the reason, and
//! its submitter gets a `worker_lost` error. A job for a runtime the worker does not have
//! ends with an `invalid_request` error naming the runtimes it has. Every state change is one
//! Lua script (atomic), fenced by the attempt number, so a worker that lost its job can no
//! longer publish.
//!
//! # What a job may configure
//!
//! A job names a runtime and may carry a configuration, but whoever can write to the job
//! stream is not trusted with the worker's machine. The worker's operator fixes each
//! runtime's configuration ([`Worker::with_runtime_config`]); a job's configuration is
//! refused (an `invalid_config` result naming the refused keys, nothing started) unless
//! every key in it is allowed for that runtime ([`Worker::allow_job_config`]), and keys that
//! name programs, URLs, files or environment variables ([`is_sensitive_key`]) are allowed
//! only by name, never by the wildcard `*`. Allowed keys go over the fixed configuration.
//!
//! # Who serves what
//!
//! A front with no plugins of its own (`runtimes serve --redis`) learns the runtimes it can
//! offer from the workers' adverts: [`QueueClient::workers`] and [`QueueClient::runtimes`].

#![forbid(unsafe_code)]

mod client;
mod config;
mod conn;
mod error;
mod policy;
mod scripts;
pub mod wire;
mod worker;

pub use client::{Backlog, CancelOutcome, QueueClient, QueueTurnStream, TurnState, TurnStatus};
pub use config::{QueueConfig, QueueLimits};
pub use conn::{PASSWORD_ENV, USERNAME_ENV, redact_url};
pub use error::QueueError;
pub use policy::{is_sensitive_key, parse_allowed_keys};
pub use runtime_api::TurnRequest;
pub use wire::{FORMAT_VERSION, Job, ResultEntry, RuntimeAdvert, WireResult, WorkerAdvert};
pub use worker::{ADVERT_EVERY, ADVERT_TTL, Worker, WorkerStats};
