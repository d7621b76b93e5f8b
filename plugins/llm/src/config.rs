//! The configuration both HTTP runtimes read, parsed by hand so that `validate_config` can
//! report every problem at once (a serde derive stops at the first).

use openai_wire::config::{self, Fields, ServerConfig};
use reqwest::header::HeaderValue;
use runtime_api::{RuntimeError, Value};

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
        let own: &[&str] = match self {
            Provider::OpenAi => &config::CHAT_KEYS,
            Provider::Anthropic => &["anthropic_version", "thinking_budget_tokens"],
        };
        config::KEYS.iter().chain(own).copied().collect()
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

/// The default `max_tokens` of the anthropic runtime, which the Messages API requires.
pub(crate) const DEFAULT_ANTHROPIC_MAX_TOKENS: u32 = 4096;
/// The `anthropic-version` header sent unless the config names another.
pub(crate) const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// A parsed, valid configuration.
#[derive(Debug, Clone)]
// `pub` in a private module: nameable by the provider trait `shell::Api`, not outside the crate.
pub struct Config {
    /// The keys both providers share: the server, its key, timeouts, request defaults.
    pub server: ServerConfig,
    /// anthropic: the `anthropic-version` header.
    pub anthropic_version: String,
    /// anthropic: enables extended thinking with this budget.
    pub thinking_budget_tokens: Option<u32>,
}

impl Config {
    /// Parses a configuration; the error lists every problem found.
    pub(crate) fn parse(provider: Provider, value: &Value) -> Result<Config, Vec<String>> {
        let mut fields = Fields::new(config::object(value, provider.name())?);
        fields.unknown_keys(&provider.keys());
        let server = ServerConfig::parse(&mut fields);
        let thinking_budget_tokens = fields.positive_u32("thinking_budget_tokens");
        let anthropic_version = match fields.get("anthropic_version") {
            None | Some(Value::Null) => DEFAULT_ANTHROPIC_VERSION.to_owned(),
            Some(Value::String(text)) if HeaderValue::from_str(text).is_ok() => text.clone(),
            Some(other) => {
                fields.problem(format!(
                    "`anthropic_version` must be a header-safe string, not {other}"
                ));
                DEFAULT_ANTHROPIC_VERSION.to_owned()
            }
        };
        fields.finish(Config {
            server,
            anthropic_version,
            thinking_budget_tokens,
        })
    }

    /// Every problem with a configuration, including an `api_key_env` that names an unset
    /// variable (which [`Config::parse`] tolerates: the variable is read at each turn).
    pub(crate) fn problems(provider: Provider, value: &Value) -> Vec<String> {
        match Config::parse(provider, value) {
            Err(problems) => problems,
            Ok(config) => config.server.key_problems(),
        }
    }

    /// Parses a configuration for `Runtime::new`.
    pub(crate) fn for_runtime(provider: Provider, value: &Value) -> Result<Config, RuntimeError> {
        Config::parse(provider, value)
            .map_err(|problems| config::invalid_config(provider.name(), problems))
    }
}

#[cfg(test)]
mod tests {
    use openai_wire::config::DEFAULT_CONNECT_TIMEOUT;
    use runtime_api::json;

    use super::*;

    #[test]
    fn a_minimal_config_parses_with_defaults() {
        let config = Config::parse(
            Provider::OpenAi,
            &json!({ "base_url": "http://127.0.0.1:8080/v1/", "model": "m" }),
        )
        .unwrap();
        assert_eq!(config.server.base_url, "http://127.0.0.1:8080/v1");
        assert_eq!(config.server.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert!(config.server.include_usage);
        assert!(config.server.api_key_env.is_none());
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
