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
    /// descriptions; `#[serde(default)]` fields are optional, with their default shown.
    type Config: DeserializeOwned + JsonSchema;

    /// Problems the schema cannot express (a program that must exist, a URL's scheme, an
    /// environment variable that must be set), each a sentence; empty when there is none.
    /// `validate_config` calls it when the schema finds no problem; `new` does not, so a
    /// runtime may be built before the outside world is ready. Never panic here.
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
    match Schema::parse(schema) {
        Ok(schema) => schema.problems(config),
        Err(error) => vec![format!(
            "the runtime cannot check its configuration: {error}"
        )],
    }
}

/// Every problem with a configuration of the typed runtime `T`, checked against `schema` (its
/// `CONFIG_SCHEMA`): the schema's, or when there is none serde's and
/// [`TypedConfig::check_config`]'s. What [`typed_config!`](crate::typed_config) makes
/// `validate_config`.
pub fn problems<T: TypedConfig>(schema: &str, config: &Value) -> Vec<String> {
    let found = schema_problems(schema, config);
    if !found.is_empty() {
        return found;
    }
    match serde_json::from_value::<T::Config>(given(config.clone())) {
        Ok(parsed) => T::check_config(&parsed),
        Err(error) => vec![error.to_string()],
    }
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
