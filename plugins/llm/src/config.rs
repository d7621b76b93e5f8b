//! The configuration both HTTP runtimes read, parsed by hand so that `validate_config` can
//! report every problem at once (a serde derive stops at the first).

use std::time::Duration;

use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use runtime_api::{RuntimeError, Value, json};

/// Which provider a configuration is for; decides the extra keys it may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// `pub` in a private module: nameable by the provider trait `shell::Api`, not outside the crate.
pub enum Provider {
    OpenAi,
    Anthropic,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
        }
    }

    /// Every configuration key this provider accepts: the shared ones, then its own.
    fn keys(self) -> Vec<&'static str> {
        const SHARED: [&str; 9] = [
            "base_url",
            "model",
            "api_key_env",
            "headers",
            "connect_timeout_ms",
            "read_timeout_ms",
            "request_timeout_ms",
            "max_tokens",
            "extra_body",
        ];
        let own: &[&str] = match self {
            Provider::OpenAi => &["include_usage"],
            Provider::Anthropic => &["anthropic_version", "thinking_budget_tokens"],
        };
        SHARED.iter().chain(own).copied().collect()
    }
}

/// The JSON Schema properties both providers accept, as text (see [`llm_schema!`]).
macro_rules! shared_schema_properties {
    () => {
        r#""base_url": {"type": "string", "format": "uri", "description": "the API base, e.g. http://127.0.0.1:8080/v1"},
"model": {"type": "string", "minLength": 1, "description": "the model used when a request names none"},
"api_key_env": {"type": "string", "description": "the environment variable that holds the API key (the key itself never goes in the config)"},
"headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "extra headers sent with every request"},
"connect_timeout_ms": {"type": "integer", "minimum": 1, "default": 10000, "description": "time to establish a connection"},
"read_timeout_ms": {"type": "integer", "minimum": 1, "default": 300000, "description": "longest wait for the next bytes of a response"},
"request_timeout_ms": {"type": "integer", "minimum": 1, "description": "longest time for a whole request"},
"max_tokens": {"type": "integer", "minimum": 1, "description": "the default max_tokens when a request sets none"},
"extra_body": {"type": "object", "description": "keys merged into every request body"}"#
    };
}

/// A provider's configuration schema: the shared properties, then its own (text after a
/// comma), all in one `&'static str` for the manifest.
macro_rules! llm_schema {
    ($own:literal) => {
        concat!(
            r#"{"type": "object", "required": ["base_url", "model"], "additionalProperties": false, "properties": {"#,
            shared_schema_properties!(),
            $own,
            "}}"
        )
    };
}

/// The openai runtime's configuration schema.
pub(crate) const OPENAI_SCHEMA: &str = llm_schema!(
    r#", "include_usage": {"type": "boolean", "default": true, "description": "ask for usage in the stream (stream_options.include_usage)"}"#
);

/// The anthropic runtime's configuration schema.
pub(crate) const ANTHROPIC_SCHEMA: &str = llm_schema!(
    r#", "anthropic_version": {"type": "string", "default": "2023-06-01", "description": "the anthropic-version header"}, "thinking_budget_tokens": {"type": "integer", "minimum": 1, "description": "enables extended thinking with this budget"}"#
);

/// The default time to establish a connection.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default longest wait for the next bytes of a response (a model on a CPU may take
/// minutes to read a long prompt before its first token).
pub(crate) const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(300);
/// The default `max_tokens` of the anthropic runtime, which the Messages API requires.
pub(crate) const DEFAULT_ANTHROPIC_MAX_TOKENS: u32 = 4096;
/// The `anthropic-version` header sent unless the config names another.
pub(crate) const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// A parsed, valid configuration.
#[derive(Debug, Clone)]
// `pub` in a private module: nameable by the provider trait `shell::Api`, not outside the crate.
pub struct Config {
    /// The API base, without a trailing slash, e.g. `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// The model used when a request names none.
    pub model: String,
    /// The name of the environment variable that holds the API key.
    pub api_key_env: Option<String>,
    /// Extra headers sent with every request.
    pub headers: HeaderMap,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub request_timeout: Option<Duration>,
    /// The default `max_tokens` when a request sets none.
    pub max_tokens: Option<u32>,
    /// Keys merged into every request body (provider-specific options).
    pub extra_body: serde_json::Map<String, Value>,
    /// openai: ask for usage in the stream (`stream_options.include_usage`).
    pub include_usage: bool,
    /// anthropic: the `anthropic-version` header.
    pub anthropic_version: String,
    /// anthropic: enables extended thinking with this budget.
    pub thinking_budget_tokens: Option<u32>,
}

impl Config {
    /// Parses a configuration; the error lists every problem found.
    pub(crate) fn parse(provider: Provider, value: &Value) -> Result<Config, Vec<String>> {
        let mut problems = Vec::new();
        let empty = serde_json::Map::new();
        let object = match value {
            Value::Object(object) => object,
            Value::Null => {
                problems.push(format!(
                    "the {} runtime needs a configuration object with at least `base_url` and `model`",
                    provider.name()
                ));
                &empty
            }
            other => {
                return Err(vec![format!(
                    "the configuration must be a JSON object, not {}",
                    type_name(other)
                )]);
            }
        };
        let keys = provider.keys();
        for key in object.keys() {
            if !keys.contains(&key.as_str()) {
                problems.push(format!(
                    "unknown key `{key}`; known keys: {}",
                    keys.join(", ")
                ));
            }
        }

        let base_url = match object.get("base_url") {
            None if !value.is_null() => {
                problems.push("missing `base_url` (e.g. \"http://127.0.0.1:8080/v1\")".into());
                String::new()
            }
            None => String::new(),
            Some(Value::String(text)) => match Url::parse(text) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {
                    text.trim_end_matches('/').to_owned()
                }
                Ok(url) => {
                    problems.push(format!(
                        "`base_url` must be an http or https URL, not {}",
                        url.scheme()
                    ));
                    String::new()
                }
                Err(error) => {
                    problems.push(format!("`base_url` is not a URL: {error}"));
                    String::new()
                }
            },
            Some(other) => {
                problems.push(format!(
                    "`base_url` must be a string, not {}",
                    type_name(other)
                ));
                String::new()
            }
        };

        let model = match object.get("model") {
            None if !value.is_null() => {
                problems.push("missing `model`".into());
                String::new()
            }
            None => String::new(),
            Some(Value::String(text)) if !text.trim().is_empty() => text.clone(),
            Some(Value::String(_)) => {
                problems.push("`model` is empty".into());
                String::new()
            }
            Some(other) => {
                problems.push(format!(
                    "`model` must be a string, not {}",
                    type_name(other)
                ));
                String::new()
            }
        };

        let api_key_env = match object.get("api_key_env") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) if is_env_name(name) => Some(name.clone()),
            Some(Value::String(name)) => {
                problems.push(format!(
                    "`api_key_env` must name an environment variable (letters, digits, `_`), \
                     not {name:?}; put the key in that variable, never in the config"
                ));
                None
            }
            Some(other) => {
                problems.push(format!(
                    "`api_key_env` must be a string, not {}",
                    type_name(other)
                ));
                None
            }
        };

        let mut headers = HeaderMap::new();
        match object.get("headers") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (name, value) in map {
                    let Some(text) = value.as_str() else {
                        problems.push(format!(
                            "header `{name}` must have a string value, not {}",
                            type_name(value)
                        ));
                        continue;
                    };
                    match (
                        HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_str(text),
                    ) {
                        (Ok(name), Ok(mut value)) => {
                            // Extra headers may carry credentials: never shown in Debug output.
                            value.set_sensitive(true);
                            headers.insert(name, value);
                        }
                        (Err(_), _) => {
                            problems.push(format!("`{name}` is not a valid header name"))
                        }
                        (_, Err(_)) => {
                            problems.push(format!("the value of header `{name}` is not valid"));
                        }
                    }
                }
            }
            Some(other) => problems.push(format!(
                "`headers` must be an object of strings, not {}",
                type_name(other)
            )),
        }

        let millis = |key: &str, problems: &mut Vec<String>| -> Option<Duration> {
            match object.get(key) {
                None | Some(Value::Null) => None,
                Some(value) => match value.as_u64() {
                    Some(ms) if ms > 0 => Some(Duration::from_millis(ms)),
                    _ => {
                        problems.push(format!(
                            "`{key}` must be a positive whole number of milliseconds"
                        ));
                        None
                    }
                },
            }
        };
        let connect_timeout =
            millis("connect_timeout_ms", &mut problems).unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let read_timeout = millis("read_timeout_ms", &mut problems).unwrap_or(DEFAULT_READ_TIMEOUT);
        let request_timeout = millis("request_timeout_ms", &mut problems);

        let positive_u32 = |key: &str, problems: &mut Vec<String>| -> Option<u32> {
            match object.get(key) {
                None | Some(Value::Null) => None,
                Some(value) => match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
                    Some(n) if n > 0 => Some(n),
                    _ => {
                        problems.push(format!("`{key}` must be a positive whole number"));
                        None
                    }
                },
            }
        };
        let max_tokens = positive_u32("max_tokens", &mut problems);
        let thinking_budget_tokens = positive_u32("thinking_budget_tokens", &mut problems);

        let extra_body = match object.get("extra_body") {
            None | Some(Value::Null) => serde_json::Map::new(),
            Some(Value::Object(map)) => map.clone(),
            Some(other) => {
                problems.push(format!(
                    "`extra_body` must be an object, not {}",
                    type_name(other)
                ));
                serde_json::Map::new()
            }
        };

        let include_usage = match object.get("include_usage") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(flag)) => *flag,
            Some(other) => {
                problems.push(format!(
                    "`include_usage` must be true or false, not {}",
                    type_name(other)
                ));
                true
            }
        };

        let anthropic_version = match object.get("anthropic_version") {
            None | Some(Value::Null) => DEFAULT_ANTHROPIC_VERSION.to_owned(),
            Some(Value::String(text)) if HeaderValue::from_str(text).is_ok() => text.clone(),
            Some(other) => {
                problems.push(format!(
                    "`anthropic_version` must be a header-safe string, not {other}"
                ));
                DEFAULT_ANTHROPIC_VERSION.to_owned()
            }
        };

        if problems.is_empty() {
            Ok(Config {
                base_url,
                model,
                api_key_env,
                headers,
                connect_timeout,
                read_timeout,
                request_timeout,
                max_tokens,
                extra_body,
                include_usage,
                anthropic_version,
                thinking_budget_tokens,
            })
        } else {
            Err(problems)
        }
    }

    /// Every problem with a configuration, including an `api_key_env` that names an unset
    /// variable (which [`Config::parse`] tolerates: the variable is read at each turn).
    pub(crate) fn problems(provider: Provider, value: &Value) -> Vec<String> {
        match Config::parse(provider, value) {
            Err(problems) => problems,
            Ok(config) => config
                .api_key_env
                .iter()
                .filter(|name| std::env::var_os(name).is_none_or(|v| v.is_empty()))
                .map(|name| {
                    format!("`api_key_env` names the environment variable {name}, which is not set")
                })
                .collect(),
        }
    }

    /// Parses a configuration for `Runtime::new`.
    pub(crate) fn for_runtime(provider: Provider, value: &Value) -> Result<Config, RuntimeError> {
        Config::parse(provider, value).map_err(|problems| {
            RuntimeError::invalid_config(format!(
                "invalid {} configuration: {}",
                provider.name(),
                problems.join("; ")
            ))
            .with_metadata(json!({ "problems": problems }))
        })
    }

    /// The API key from the environment variable the config names, if it names one.
    ///
    /// # Errors
    ///
    /// `invalid_config` when the variable is unset or empty (its value is never shown).
    pub(crate) fn api_key(&self) -> Result<Option<HeaderValue>, RuntimeError> {
        let Some(name) = &self.api_key_env else {
            return Ok(None);
        };
        let key = std::env::var(name).unwrap_or_default();
        if key.is_empty() {
            return Err(RuntimeError::invalid_config(format!(
                "the environment variable {name} named by `api_key_env` is not set"
            )));
        }
        let mut value = HeaderValue::from_str(key.trim()).map_err(|_| {
            RuntimeError::invalid_config(format!(
                "the environment variable {name} holds characters not allowed in a header"
            ))
        })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

/// Builds the HTTP client of one runtime instance, so its connections pool across turns.
pub(crate) fn build_client(config: &Config) -> Result<reqwest::Client, RuntimeError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .read_timeout(config.read_timeout)
        // Pooling stays on: against a remote provider it saves a TLS handshake per turn. A
        // server may close a kept-alive connection right after a response (llama-server does
        // so after every streamed one); hyper notices most such closes before it reuses the
        // connection, and the rare close that races with the next request is retried once by
        // `send_with_retry` (only when no response byte arrived). A short idle timeout keeps
        // that race narrow for servers that close idle connections on their own timer.
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("agent-runtimes-llm/", env!("CARGO_PKG_VERSION")));
    if let Some(timeout) = config.request_timeout {
        builder = builder.timeout(timeout);
    }
    builder.build().map_err(|error| {
        RuntimeError::internal(format!("could not build the HTTP client: {error}"))
    })
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_config_parses_with_defaults() {
        let config = Config::parse(
            Provider::OpenAi,
            &json!({ "base_url": "http://127.0.0.1:8080/v1/", "model": "m" }),
        )
        .unwrap();
        assert_eq!(config.base_url, "http://127.0.0.1:8080/v1");
        assert_eq!(config.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert!(config.include_usage);
        assert!(config.api_key_env.is_none());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let problems = Config::problems(
            Provider::OpenAi,
            &json!({ "model": 3, "headers": { "x": 1 }, "connect_timeout_ms": -1, "tempo": 1 }),
        );
        let text = problems.join("\n");
        assert!(text.contains("missing `base_url`"), "{text}");
        assert!(text.contains("`model` must be a string"), "{text}");
        assert!(text.contains("header `x`"), "{text}");
        assert!(text.contains("connect_timeout_ms"), "{text}");
        assert!(text.contains("unknown key `tempo`"), "{text}");
        assert_eq!(problems.len(), 5, "{text}");
    }

    #[test]
    fn null_config_says_what_is_needed() {
        let problems = Config::problems(Provider::Anthropic, &Value::Null);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("`base_url` and `model`"));
    }

    #[test]
    fn an_unset_key_variable_is_a_problem_but_not_the_key_itself() {
        let name = "AGENT_RUNTIMES_TEST_SURELY_UNSET_KEY";
        let problems = Config::problems(
            Provider::OpenAi,
            &json!({ "base_url": "http://x/v1", "model": "m", "api_key_env": name }),
        );
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains(name));
        let problems = Config::problems(
            Provider::OpenAi,
            &json!({ "base_url": "http://x/v1", "model": "m", "api_key_env": "sk-123 secret" }),
        );
        assert!(problems[0].contains("must name an environment variable"));
    }

    #[test]
    fn provider_specific_keys_are_checked() {
        let base = json!({ "base_url": "http://x/v1", "model": "m", "include_usage": false });
        assert!(Config::parse(Provider::OpenAi, &base).is_ok());
        let problems = Config::problems(Provider::Anthropic, &base);
        assert!(problems[0].contains("unknown key `include_usage`"));
    }
}
