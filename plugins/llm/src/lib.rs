//! HTTP runtimes for language-model servers, in one plugin library:
//!
//! - [`OpenAiRuntime`], id `openai` (alias `openai-compatible`): the Chat Completions API as
//!   OpenAI, Ollama, vLLM, llama.cpp's `llama-server` and LM Studio serve it;
//! - [`AnthropicRuntime`], id `anthropic` (alias `claude`): the Anthropic Messages API.
//!
//! Both stream token by token (text, tool-call fragments and thinking as typed deltas, then
//! the final output with usage and finish reason), take the API key from an environment
//! variable whose *name* is configured, and map failures to [`runtime_api::RuntimeError`]s:
//!
//! | failure | kind | retriable |
//! | --- | --- | --- |
//! | HTTP 400, 404, 413, 422 … | `invalid_request` | no |
//! | HTTP 401, 403 | `authentication` | no |
//! | HTTP 429 | `rate_limited` | yes |
//! | HTTP 5xx, connection refused or reset | `unavailable` | yes |
//! | connect, read or request timeout, HTTP 408 | `timeout` | yes |
//! | an error object in the stream | by its `type` (else its `code`) | as the kind |
//! | a stream that ends without `[DONE]` / `message_stop` | `unavailable` (`truncated: true`) | yes |
//!
//! The HTTP status is in the error's metadata (`{"status": 429}`) and the provider's own
//! message in its text.
//!
//! # Choices
//!
//! - **HTTP**: reqwest 0.12 with rustls (the `ring` provider, webpki and native roots), no
//!   OpenSSL or native-tls; one client per runtime instance, so connections pool across turns.
//! - **SSE**: the `eventsource-stream` crate frames events (see openai-wire's `sse` module for
//!   the cases it is tested on). The provider logic is in plain accumulators,
//!   [`OpenAiStreamState`] and [`AnthropicStreamState`], fed parsed events and tested on
//!   recorded fixtures.
//! - **One OpenAI client**: the configuration keys both providers share, sending, error
//!   mapping, SSE and the whole Chat Completions mapping (with [`OpenAiStreamState`]) are the
//!   `openai-wire` library's, which the `agent` plugin uses too; this crate adds the runtimes,
//!   the Anthropic provider and the provider-specific keys.
//! - **One shell**: [`LlmRuntime`] is the runtime both providers share (configuration, client,
//!   requests, the turn entry points); each provider supplies only its ids, request body,
//!   headers and response and stream formats.
//! - **Async**: plain async reqwest code. Inside a plugin the runtime-api glue runs every poll
//!   inside the plugin's own tokio runtime; cancelling a turn drops its future or stream,
//!   which drops the response and closes the connection.

#![forbid(unsafe_code)]

mod anthropic;
mod config;
mod openai;
mod shell;

#[cfg(test)]
mod fault_tests;

pub use anthropic::{AnthropicRuntime, AnthropicStreamState};
pub use config::{AnthropicConfig, OpenAiConfig};
pub use openai::OpenAiRuntime;
pub use openai_wire::OpenAiStreamState;
pub use shell::LlmRuntime;

runtime_api::export_plugin!(OpenAiRuntime, AnthropicRuntime);
