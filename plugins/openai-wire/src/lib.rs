//! The one OpenAI-compatible HTTP client of agent-runtimes, shared by the `llm` plugin (its
//! `openai` runtime, and the HTTP and SSE plumbing of its `anthropic` runtime) and the `agent`
//! plugin (its model calls).
//!
//! - [`config`]: the configuration keys every HTTP model runtime reads (`base_url`, `model`,
//!   `api_key_env`, `headers`, timeouts, `max_tokens`, `extra_body`, `include_usage`), parsed
//!   so that every problem is reported at once, the API key read from the environment, and the
//!   HTTP client built from them;
//! - [`http`]: sending a request (with one retry on a pooled connection the server had
//!   closed), and HTTP statuses, provider error objects and transport failures mapped to
//!   [`RuntimeError`](runtime_api::RuntimeError)s;
//! - [`sse`]: server-sent events framed by `eventsource-stream` and fed to a provider's
//!   [`StreamDecoder`], as a stream of deltas and then the final output;
//! - [`chat`]: the Chat Completions API: the request body of a turn, the non-streamed
//!   response, and [`OpenAiStreamState`], the decoder of a streamed one.
//!
//! This is a plain library: it exports no plugin symbols (`export_plugin!` belongs to the
//! plugins that link it; a library exporting two plugin manifests is refused as ambiguous).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chat;
pub mod config;
pub mod http;
pub mod sse;
mod tools;

pub use chat::OpenAiStreamState;
pub use config::{Fields, ServerConfig, ServerKeys, is_env_name, type_name};
pub use sse::StreamDecoder;
pub use tools::{arguments_text, parse_arguments, schema_or_empty};
