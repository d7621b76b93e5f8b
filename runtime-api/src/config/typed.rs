//! Configurations declared once as Rust types (the `typed-config` feature).

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::Schema;
use crate::RuntimeError;

/// A runtime whose configuration is a Rust type: the schema, the checks and the value `new`
/// gets all follow from [`TypedConfig::Config`]. Implement it next to `impl Runtime`, and
/// write [`typed_config!`](crate::typed_config) inside that impl (see the
/// [module](crate::config)).
pub trait TypedConfig: Sized {
    /// The configuration: deserialized by serde, described by schemars. Doc comments become
    /// descriptions; `#[serde(default)]` fields are optional, with their default shown. The
    /// type must be public (its fields need not be).
    type Config: DeserializeOwned + JsonSchema;

    /// Problems the schema cannot express (a program that must exist, a URL's scheme, an
    /// environment variable that must be set), each a sentence; empty when there is none.
    /// `validate_config` calls it whenever serde can parse the configuration, also when the
    /// schema found problems (a broken bound does not stop serde), so it may see a value out
    /// of the schema's bounds: report only what the schema cannot say, and never panic. `new`
    /// does not call it, so a runtime may be built before the outside world is ready.
    fn check_config(_config: &Self::Config) -> Vec<String> {
        Vec::new()
    }

    /// Builds the runtime from its parsed configuration, which the schema accepted.
    ///
    /// # Errors
    ///
    /// A [`RuntimeError`], usually of kind `invalid_config`.
    fn from_config(config: Self::Config) -> Result<Self, RuntimeError>;
}

/// The JSON Schema of a configuration type (draft 2020-12, without `$schema`): what the
/// schema file must hold.
pub fn schema_of<C: JsonSchema>() -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|settings| settings.meta_schema = None)
        .into_generator();
    generator.into_root_schema_for::<C>().to_value()
}

/// [`schema_of`] as compact JSON text, the form the manifest embeds.
pub fn schema_text<C: JsonSchema>() -> String {
    schema_of::<C>().to_string()
}

/// `null`, for a configuration, means none was given: parsed as `{}`.
fn given(config: Value) -> Value {
    if config.is_null() {
        Value::Object(Map::new())
    } else {
        config
    }
}

/// The problems the schema (compiled-in text) finds with a configuration.
fn schema_problems(schema: &str, config: &Value) -> Vec<String> {
    if schema.trim().is_empty() {
        return vec![
            "the runtime's configuration schema file is empty: the crate's tests write it \
             (`cargo test`), then the crate is built again"
                .to_owned(),
        ];
    }
    match Schema::parse(schema) {
        Ok(schema) => schema.problems(config),
        Err(error) => vec![format!(
            "the runtime cannot check its configuration: {error}"
        )],
    }
}

/// Every problem with a configuration of the typed runtime `T`, checked against `schema` (its
/// `CONFIG_SCHEMA`): the schema's, then, when serde can parse it (a broken bound or length
/// does not stop serde), [`TypedConfig::check_config`]'s that the schema did not already say;
/// serde's own problem only when the schema found none. What
/// [`typed_config!`](crate::typed_config) makes `validate_config`.
pub fn problems<T: TypedConfig>(schema: &str, config: &Value) -> Vec<String> {
    let mut found = schema_problems(schema, config);
    match serde_json::from_value::<T::Config>(given(config.clone())) {
        Ok(parsed) => {
            for problem in T::check_config(&parsed) {
                if !found.contains(&problem) {
                    found.push(problem);
                }
            }
        }
        Err(error) if found.is_empty() => found.push(error.to_string()),
        Err(_) => {}
    }
    found
}

/// Checks a configuration against `schema`, parses it and builds the runtime with
/// [`TypedConfig::from_config`]: what [`typed_config!`](crate::typed_config) makes `new`.
///
/// # Errors
///
/// `invalid_config` naming every problem the schema finds (in its metadata's `problems` too)
/// or serde's, else what `from_config` returns.
pub fn build<T: TypedConfig>(
    runtime: &str,
    schema: &str,
    config: Value,
) -> Result<T, RuntimeError> {
    let invalid = |problems: Vec<String>| {
        RuntimeError::invalid_config(format!(
            "invalid {runtime} configuration: {}",
            problems.join("; ")
        ))
        .with_metadata(json!({ "problems": problems }))
    };
    let found = schema_problems(schema, &config);
    if !found.is_empty() {
        return Err(invalid(found));
    }
    let parsed = serde_json::from_value::<T::Config>(given(config))
        .map_err(|error| invalid(vec![error.to_string()]))?;
    T::from_config(parsed)
}
