//! The runtime shell both providers share: configuration, the HTTP client, sending a request
//! with the provider's headers, and the four turn entry points. What differs between providers
//! (ids, request body, authentication headers, response and stream formats) is an [`Api`].

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::Stream;
use openai_wire::http::{self, Request};
use openai_wire::sse::{self, StreamDecoder};
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, Response};
use runtime_api::config::{SchemaFile, TypedConfig};
use runtime_api::{
    Capabilities, Runtime, RuntimeError, StreamItem, TurnOutput, TurnRequest, Value,
};

use crate::config::{Config, Provider, ProviderConfig};

/// The `User-Agent` of both runtimes' requests.
const USER_AGENT: &str = concat!("agent-runtimes-llm/", env!("CARGO_PKG_VERSION"));

/// A provider's API: what the shell needs to know to run turns against it. Implemented by the
/// two providers of this crate only (the trait is not nameable outside it).
pub trait Api: Send + Sync + 'static {
    /// Which configuration keys apply.
    const PROVIDER: Provider;
    /// The runtime's id.
    const ID: &'static str;
    /// A name for people.
    const DISPLAY_NAME: &'static str;
    /// One line on what the runtime does.
    const DESCRIPTION: &'static str;
    /// Other names of the runtime.
    const ALIASES: &'static [&'static str];
    /// The schema file of [`Api::Config`].
    const CONFIG_SCHEMA_FILE: SchemaFile;
    /// The typed configuration.
    type Config: ProviderConfig;
    /// The path of a turn, under `base_url`.
    const TURN_PATH: &'static str;
    /// How the API logs a request (the debug event's message).
    const REQUEST_LOG: &'static str;

    /// The decoder of a streamed turn.
    type Decoder: StreamDecoder;

    /// The request body of a turn.
    fn request_body(config: &Config, request: &TurnRequest, stream: bool) -> Value;

    /// A turn's output from a whole (not streamed) response body.
    ///
    /// # Errors
    ///
    /// A response that is not the API's shape, or says the turn failed.
    fn parse_response(body: &Value) -> Result<TurnOutput, RuntimeError>;

    /// A fresh decoder for a streamed turn.
    fn decoder() -> Self::Decoder;

    /// The headers that authenticate (and version) every request, sensitive ones marked so.
    ///
    /// # Errors
    ///
    /// `invalid_config` when the key's variable is unset or a value is not header-safe.
    fn auth_headers(config: &Config) -> Result<Vec<(HeaderName, HeaderValue)>, RuntimeError>;

    /// The `Accept` header of a request with a body.
    fn accept(stream: bool) -> &'static str;
}

/// A language-model runtime over HTTP, for the provider `A`: [`crate::OpenAiRuntime`] and
/// [`crate::AnthropicRuntime`]. One HTTP client per instance, so connections pool across
/// turns.
pub struct LlmRuntime<A> {
    config: Config,
    client: reqwest::Client,
    api: PhantomData<fn() -> A>,
}

impl<A: Api> fmt::Debug for LlmRuntime<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmRuntime")
            .field("id", &A::ID)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<A: Api> LlmRuntime<A> {
    /// Sends a request to `path` under `base_url`, with the body as JSON when there is one.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(Value, bool)>,
    ) -> Result<Response, RuntimeError> {
        let auth = A::auth_headers(&self.config)?;
        let url = format!("{}/{path}", self.config.server.base_url);
        let mut request = Request::new(method, url, &self.config.server.headers);
        if let Some((body, stream)) = body {
            tracing::debug!(url = %request.url(), model = %body["model"], stream, "{}", A::REQUEST_LOG);
            request = request.json(&body, A::accept(stream))?;
        }
        for (name, value) in auth {
            request = request.header(name, value);
        }
        request.send(&self.client).await
    }
}

impl<A: Api> TypedConfig for LlmRuntime<A> {
    type Config = A::Config;

    fn check_config(config: &A::Config) -> Vec<String> {
        config.problems()
    }

    fn from_config(config: A::Config) -> Result<Self, RuntimeError> {
        let config = config
            .build()
            .map_err(|problems| openai_wire::config::invalid_config(A::ID, problems))?;
        let client = config.server.client(USER_AGENT)?;
        Ok(Self {
            config,
            client,
            api: PhantomData,
        })
    }
}

impl<A: Api> Runtime for LlmRuntime<A> {
    const ID: &'static str = A::ID;
    const DISPLAY_NAME: &'static str = A::DISPLAY_NAME;
    const DESCRIPTION: &'static str = A::DESCRIPTION;
    const ALIASES: &'static [&'static str] = A::ALIASES;
    const CAPABILITIES: Capabilities = Capabilities::STREAMING
        .with(Capabilities::TOOLS)
        .with(Capabilities::HISTORY)
        .with(Capabilities::THINKING)
        .with(Capabilities::CONFIG_VALIDATION);
    /// The model server only: TCP to the port of `base_url`.
    const PERMISSIONS: &'static str = r#"{"net": ["{config:base_url}"]}"#;
    // CONFIG_SCHEMA, validate_config and new, from the provider's typed configuration.
    runtime_api::typed_config!(A::CONFIG_SCHEMA_FILE);

    async fn run_turn(&self, request: TurnRequest) -> Result<TurnOutput, RuntimeError> {
        let body = A::request_body(&self.config, &request, false);
        let response = self
            .send(Method::POST, A::TURN_PATH, Some((body, false)))
            .await?;
        A::parse_response(&http::json_body(response).await?)
    }

    fn stream_turn(
        self: Arc<Self>,
        request: TurnRequest,
    ) -> impl Stream<Item = Result<StreamItem, RuntimeError>> + Send + 'static {
        let body = A::request_body(&self.config, &request, true);
        let start = async move {
            self.send(Method::POST, A::TURN_PATH, Some((body, true)))
                .await
        };
        sse::drive(start, A::decoder())
    }

    async fn health(&self) -> Result<String, RuntimeError> {
        // One cheap GET: it proves the server answers and accepts the key.
        let response = self.send(Method::GET, "models", None).await?;
        let body = http::json_body(response).await?;
        let count = body["data"].as_array().map_or(0, Vec::len);
        Ok(format!(
            "{} answers ({count} models); configured model {}",
            self.config.server.base_url, self.config.server.model
        ))
    }
}
