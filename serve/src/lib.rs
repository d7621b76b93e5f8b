//! Agent-runtime plugins behind an OpenAI-compatible HTTP API: the library under
//! `runtimes serve`, for hosts that serve their own [`Runtimes`](runtime_loader::Runtimes).
//!
//! A [`Server`] is made from a [`ServeConfig`] (listen address, API key, [`ServeLimits`],
//! isolation, runtime instances created at start, or a [`RedisBackend`] whose workers run
//! the turns), then [`Server::serve`]s on a [`tokio::net::TcpListener`] until a shutdown
//! future resolves. The endpoints:
//!
//! - `POST /v1/chat/completions`: one turn, answered as a chat completion or, with
//!   `stream: true`, as server-sent events; the `x-execution-id` header carries its
//!   execution id;
//! - `GET /v1/models`, `GET /v1/models/{model}`: every runtime id and alias as a model;
//! - `GET /v1/runtimes`: the registry (or the queue's workers and backlog);
//! - `GET /healthz` (never behind the key), `GET /metrics` (Prometheus text).
//!
//! Errors use OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the
//! status of each runtime error kind stated once (in the `error` module's table, and in the
//! README).
//!
//! # Modules, in dependency order
//!
//! Each module uses only those above it (no cycle):
//!
//! 1. `limits` ([`ServeLimits`]) and `wire` (OpenAI's request and response shapes): leaves;
//! 2. `error`: each error's status, OpenAI `type` and `code`, declared once (uses `wire`);
//! 3. `translate`: a chat-completions request to a `TurnRequest`, a `TurnOutput` back
//!    (uses `wire`, `error`);
//! 4. `metrics`: the Prometheus metrics (a leaf);
//! 5. `config`: [`ServeConfig`], [`ApiKey`], [`RedisBackend`], [`ConfigError`] (uses
//!    `limits`);
//! 6. `backend`: the turn backend, the one place a runtime name becomes something that runs
//!    turns (this process's plugins or a Redis queue's workers), and what routes and the
//!    event stream share about a turn: its items (`TurnItems`) and its permit and metrics
//!    (`Running`) (uses `config`, `metrics`);
//! 7. `sse`: a streamed turn as server-sent events (uses `backend`, `error`, `metrics`,
//!    `translate`, `wire`);
//! 8. `routes`: the endpoints, bearer auth, limits (uses `backend`, `sse` and everything
//!    above);
//! 9. `shutdown`: the accept loop: the connection cap, hyper's header-read timeout, the
//!    graceful shutdown (uses `limits`);
//! 10. `server`: [`Server`], [`ServeEvent`], [`ServeError`]: the backend set up, the
//!     router served, the grace period (uses `routes`, `backend`, `config`, `metrics`,
//!     `shutdown`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backend;
mod config;
mod error;
mod limits;
mod metrics;
mod read_deadlines;
mod routes;
mod server;
mod shutdown;
mod sse;
mod translate;
mod wire;

pub use config::{ApiKey, ConfigError, RedisBackend, ServeConfig, parse_instance};
pub use limits::ServeLimits;
pub use metrics::MetricsError;
pub use server::{Reloader, ServeError, ServeEvent, Server};
