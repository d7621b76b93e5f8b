//! `openai`: the OpenAI Chat Completions API, as OpenAI, Ollama, vLLM, llama.cpp's server and
//! LM Studio serve it.

use openai_wire::OpenAiStreamState;
use openai_wire::chat;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use runtime_api::{RuntimeError, TurnOutput, TurnRequest, Value};

use crate::config::{Config, Provider};
use crate::shell::{Api, LlmRuntime};
use runtime_api::config::SchemaFile;

/// The `openai` runtime (alias `openai-compatible`): Chat Completions over HTTP.
///
/// Config (JSON object):
///
/// | key | meaning |
/// | --- | --- |
/// | `base_url` (required) | the API base, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8080/v1` |
/// | `model` (required) | the model, unless a request names one |
/// | `api_key_env` | the *name* of the environment variable holding the key, sent as `Authorization: Bearer`; the key itself never goes in the config or the logs |
/// | `headers` | extra headers, an object of strings |
/// | `connect_timeout_ms`, `read_timeout_ms`, `request_timeout_ms` | connecting (default 10 s), the longest gap between bytes (default 300 s), the whole request (default none) |
/// | `max_tokens` | the default when a request sets none |
/// | `include_usage` | ask for usage in streams with `stream_options.include_usage` (default true) |
/// | `extra_body` | keys merged into every request body (`top_p`, `seed`, …) |
///
/// Mapping: the system prompt, the history (assistant tool calls and tool results included)
/// and the prompt become `messages` (an empty prompt adds no user message, so a history may
/// end with a tool result or an assistant prefill); tools become `function` tools;
/// `max_tokens`, `temperature` and `stop` are passed on; a request's `model` overrides the
/// config's. `reasoning_content` (llama.cpp, DeepSeek, vLLM) arrives as thinking deltas.
pub type OpenAiRuntime = LlmRuntime<OpenAi>;

/// The Chat Completions API, for [`LlmRuntime`].
#[derive(Debug)]
pub struct OpenAi;

impl Api for OpenAi {
    const PROVIDER: Provider = Provider::OpenAi;
    const ID: &'static str = "openai";
    const DISPLAY_NAME: &'static str = "OpenAI-compatible";
    const DESCRIPTION: &'static str =
        "Chat Completions over HTTP (OpenAI, Ollama, vLLM, llama.cpp, LM Studio), streamed.";
    const ALIASES: &'static [&'static str] = &["openai-compatible"];
    const CONFIG_SCHEMA_FILE: SchemaFile = crate::config::OPENAI_SCHEMA;
    type Config = crate::config::OpenAiConfig;
    const TURN_PATH: &'static str = "chat/completions";
    const REQUEST_LOG: &'static str = "sending a chat completion request";
    type Decoder = OpenAiStreamState;

    fn request_body(config: &Config, request: &TurnRequest, stream: bool) -> Value {
        chat::request_body(&config.server, request, stream)
    }

    fn parse_response(body: &Value) -> Result<TurnOutput, RuntimeError> {
        chat::parse_response(body)
    }

    fn decoder() -> OpenAiStreamState {
        OpenAiStreamState::new()
    }

    /// `Authorization: Bearer <key>` when the config names a key variable.
    fn auth_headers(config: &Config) -> Result<Vec<(HeaderName, HeaderValue)>, RuntimeError> {
        Ok(config
            .server
            .bearer()?
            .map(|bearer| (AUTHORIZATION, bearer))
            .into_iter()
            .collect())
    }

    fn accept(stream: bool) -> &'static str {
        if stream {
            "text/event-stream"
        } else {
            "application/json"
        }
    }
}
