//! `anthropic`: the Anthropic Messages API (and servers that speak it, such as llama.cpp's
//! `/v1/messages`): the runtime here, its request body in [`request`], whole responses in
//! [`response`], streamed ones in [`stream`].

mod request;
mod response;
mod stream;

use reqwest::header::{HeaderName, HeaderValue};
use runtime_api::{RuntimeError, TurnOutput, TurnRequest, Value};

pub use self::stream::AnthropicStreamState;
use crate::config::{Config, Provider};
use crate::shell::{Api, LlmRuntime};
use runtime_api::config::SchemaFile;

const API_KEY_HEADER: HeaderName = HeaderName::from_static("x-api-key");
const VERSION_HEADER: HeaderName = HeaderName::from_static("anthropic-version");

/// The `anthropic` runtime (alias `claude`): the Messages API over HTTP.
///
/// Config: as [`OpenAiRuntime`](crate::OpenAiRuntime)'s (`base_url` such as
/// `https://api.anthropic.com/v1`, `model`, `api_key_env` sent as `x-api-key`, `headers`,
/// timeouts, `max_tokens` — default 4096, as the API requires one — and `extra_body`), plus
/// `anthropic_version` (default `2023-06-01`) and `thinking_budget_tokens`, which enables
/// extended thinking.
///
/// Mapping: the system prompt and any system messages of the history become `system`; tool
/// results become `tool_result` blocks of a user message and assistant tool calls `tool_use`
/// blocks; consecutive messages of one role are merged, as the API requires alternation; an
/// empty prompt adds no user message. Streams: `text_delta` → text, `input_json_delta` →
/// tool-call fragments assembled per content block, `thinking_delta` → thinking,
/// `message_delta` → stop reason and usage; `ping` and unknown events are ignored.
pub type AnthropicRuntime = LlmRuntime<Anthropic>;

/// The Messages API, for [`LlmRuntime`].
#[derive(Debug)]
pub struct Anthropic;

impl Api for Anthropic {
    const PROVIDER: Provider = Provider::Anthropic;
    const ID: &'static str = "anthropic";
    const DISPLAY_NAME: &'static str = "Anthropic Messages";
    const DESCRIPTION: &'static str =
        "The Anthropic Messages API over HTTP, streamed, with tools and extended thinking.";
    const ALIASES: &'static [&'static str] = &["claude"];
    const CONFIG_SCHEMA_FILE: SchemaFile = crate::config::ANTHROPIC_SCHEMA;
    type Config = crate::config::AnthropicConfig;
    const TURN_PATH: &'static str = "messages";
    const REQUEST_LOG: &'static str = "sending an Anthropic request";
    type Decoder = AnthropicStreamState;

    fn request_body(config: &Config, request: &TurnRequest, stream: bool) -> Value {
        request::request_body(config, request, stream)
    }

    fn parse_response(body: &Value) -> Result<TurnOutput, RuntimeError> {
        response::parse_response(body)
    }

    fn decoder() -> AnthropicStreamState {
        AnthropicStreamState::new()
    }

    /// `anthropic-version`, and `x-api-key` when the config names a key variable.
    fn auth_headers(config: &Config) -> Result<Vec<(HeaderName, HeaderValue)>, RuntimeError> {
        let version = HeaderValue::from_str(&config.anthropic_version)
            .map_err(|_| RuntimeError::invalid_config("`anthropic_version` is not header-safe"))?;
        let mut headers = vec![(VERSION_HEADER, version)];
        if let Some(key) = config.server.api_key()? {
            headers.push((API_KEY_HEADER, key));
        }
        Ok(headers)
    }

    fn accept(_stream: bool) -> &'static str {
        "application/json, text/event-stream"
    }
}
