//! The configuration both HTTP runtimes read, declared as one type per provider
//! ([`OpenAiConfig`], [`AnthropicConfig`]: openai-wire's [`ServerKeys`] and the provider's own
//! keys). runtime-api's typed configuration derives the manifest's schema from each
//! (`openai.schema.json`, `anthropic.schema.json`), checks a configuration against it (every
//! problem at once, bounds included), and hands the parsed value to the runtime, which builds
//! its [`Config`] with what the schema cannot say checked on the way.

use openai_wire::config::{ServerConfig, ServerKeys};
use reqwest::header::HeaderValue;
use runtime_api::config::SchemaFile;
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;

#[cfg(test)]
use runtime_api::Value;

/// Which provider a configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// `pub` in a private module: nameable by the provider trait `shell::Api`, not outside the crate.
pub enum Provider {
    OpenAi,
    Anthropic,
}

/// The openai runtime's schema file, derived from [`OpenAiConfig`].
pub(crate) const OPENAI_SCHEMA: SchemaFile = runtime_api::schema_file!("openai.schema.json");
/// The anthropic runtime's schema file, derived from [`AnthropicConfig`].
pub(crate) const ANTHROPIC_SCHEMA: SchemaFile = runtime_api::schema_file!("anthropic.schema.json");

/// The default `max_tokens` of the anthropic runtime, which the Messages API requires.
pub(crate) const DEFAULT_ANTHROPIC_MAX_TOKENS: u32 = 4096;
/// The `anthropic-version` header sent unless the config names another.
pub(crate) const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// The configuration of the `openai` runtime.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "openai runtime configuration")]
pub struct OpenAiConfig {
    #[serde(flatten)]
    server: ServerKeys,
    /// Ask for usage in the stream (stream_options.include_usage).
    #[serde(default)]
    #[schemars(extend("default" = true))]
    include_usage: Option<bool>,
}

/// The configuration of the `anthropic` runtime.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "anthropic runtime configuration")]
pub struct AnthropicConfig {
    #[serde(flatten)]
    server: ServerKeys,
    /// The anthropic-version header.
    #[serde(default)]
    #[schemars(extend("default" = "2023-06-01"))]
    anthropic_version: Option<String>,
    /// Enables extended thinking with this budget of tokens.
    #[serde(default)]
    #[schemars(range(min = 1))]
    thinking_budget_tokens: Option<u32>,
}

/// A provider's typed configuration, as the shell builds its [`Config`] from it.
// `pub` in a private module: nameable by the provider trait `shell::Api`, not outside the crate.
pub trait ProviderConfig: DeserializeOwned + JsonSchema + Send + Sync + 'static {
    /// The runtime's configuration, or every problem the schema cannot say.
    fn build(&self) -> Result<Config, Vec<String>>;

    /// Every problem [`ProviderConfig::build`] finds, and an `api_key_env` that names an unset
    /// variable (tolerated by `build`: the variable is read at each turn).
    fn problems(&self) -> Vec<String> {
        match self.build() {
            Ok(config) => config.server.key_problems(),
            Err(problems) => problems,
        }
    }
}

impl ProviderConfig for OpenAiConfig {
    fn build(&self) -> Result<Config, Vec<String>> {
        Ok(Config {
            server: ServerConfig::from_keys(&self.server, self.include_usage)?,
            anthropic_version: DEFAULT_ANTHROPIC_VERSION.to_owned(),
            thinking_budget_tokens: None,
        })
    }
}

impl ProviderConfig for AnthropicConfig {
    fn build(&self) -> Result<Config, Vec<String>> {
        let server = ServerConfig::from_keys(&self.server, None);
        let version = self
            .anthropic_version
            .clone()
            .unwrap_or_else(|| DEFAULT_ANTHROPIC_VERSION.to_owned());
        let version_ok = HeaderValue::from_str(&version).is_ok();
        match server {
            Ok(server) if version_ok => Ok(Config {
                server,
                anthropic_version: version,
                thinking_budget_tokens: self.thinking_budget_tokens,
            }),
            server => {
                let mut problems = server.err().unwrap_or_default();
                if !version_ok {
                    problems.push(format!(
                        "`anthropic_version` must be a header-safe string, not {version:?}"
                    ));
                }
                Err(problems)
            }
        }
    }
}

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

#[cfg(test)]
impl Config {
    /// What `validate_config` finds, for a provider.
    pub(crate) fn problems(provider: Provider, value: &Value) -> Vec<String> {
        use runtime_api::Runtime;
        match provider {
            Provider::OpenAi => crate::OpenAiRuntime::validate_config(value),
            Provider::Anthropic => crate::AnthropicRuntime::validate_config(value),
        }
    }

    /// Parses a configuration as `new` does, for a provider; the error lists every problem.
    pub(crate) fn parse(provider: Provider, value: &Value) -> Result<Config, Vec<String>> {
        fn typed<C: ProviderConfig>(schema: &str, value: &Value) -> Result<Config, Vec<String>> {
            let schema =
                runtime_api::config::Schema::parse(schema).map_err(|e| vec![e.to_string()])?;
            let found = schema.problems(value);
            if !found.is_empty() {
                return Err(found);
            }
            let value = if value.is_null() {
                runtime_api::json!({})
            } else {
                value.clone()
            };
            serde_json::from_value::<C>(value)
                .map_err(|e| vec![e.to_string()])?
                .build()
        }
        match provider {
            Provider::OpenAi => typed::<OpenAiConfig>(OPENAI_SCHEMA.text, value),
            Provider::Anthropic => typed::<AnthropicConfig>(ANTHROPIC_SCHEMA.text, value),
        }
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
        assert!(text.contains("`headers.x` must be a string"), "{text}");
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
