//! A JSON Schema validator of exactly the keywords a configuration schema needs (the ones
//! `schemars` emits for plain Rust types), with messages written for the people who edit the
//! configuration.
//!
//! Why not a general validator: plugins are shared libraries, and every plugin would carry it;
//! this one adds no dependency. A keyword it does not check is refused when the schema is read
//! ([`SchemaError::Unsupported`]), never silently ignored: a schema that passes [`Schema::parse`]
//! is checked in full.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

use crate::json_type_name;

/// Keywords that only describe (or hold definitions): never a reason to refuse a value.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "$defs",
    "definitions",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentEncoding",
    "contentMediaType",
];

/// Keywords this validator checks.
const CHECKED: &[&str] = &[
    "$ref",
    "type",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "format",
    "minLength",
    "maxLength",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "uniqueItems",
    "properties",
    "required",
    "additionalProperties",
    "propertyNames",
    "minProperties",
    "maxProperties",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
];

/// How deep `$ref`s and nested schemas may go before a value is refused (a schema that refers
/// to itself without end, or a value nested absurdly deep).
const MAX_DEPTH: usize = 64;

/// Why a configuration schema cannot be used to check configurations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The schema text is not JSON.
    #[error("the configuration schema is not valid JSON: {0}")]
    NotJson(String),
    /// The schema is neither an object nor a boolean.
    #[error("the configuration schema must be a JSON object, not {0}")]
    NotASchema(&'static str),
    /// The schema uses a keyword this validator does not check.
    #[error(
        "the configuration schema uses `{keyword}` at {at}, which runtime-api's validator does not check"
    )]
    Unsupported {
        /// The keyword.
        keyword: String,
        /// Where, as a JSON pointer into the schema (`/properties/name`).
        at: String,
    },
    /// A keyword has a value of the wrong kind (`"minimum": "one"`), or a `$ref` points
    /// outside the schema or at nothing.
    #[error("the configuration schema has an invalid `{keyword}` at {at}")]
    Invalid {
        /// The keyword.
        keyword: String,
        /// Where, as a JSON pointer into the schema.
        at: String,
    },
}

/// A configuration schema, checked to use only keywords this validator enforces.
///
/// # Examples
///
/// ```
/// use runtime_api::config::Schema;
/// use runtime_api::json;
///
/// let schema = Schema::parse(r#"{"type": "object", "additionalProperties": false,
///     "properties": {"steps": {"type": "integer", "minimum": 1, "maximum": 10}}}"#).unwrap();
/// assert!(schema.problems(&json!({"steps": 3})).is_empty());
/// assert_eq!(
///     schema.problems(&json!({"steps": 0, "step": 1})),
///     [
///         "unknown key `step`; known keys: steps",
///         "`steps` must be a whole number from 1 to 10, not 0",
///     ]
/// );
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    root: Value,
}

impl Schema {
    /// Reads a schema from its text.
    ///
    /// # Errors
    ///
    /// A [`SchemaError`] when the text is not JSON, not a schema, or uses a keyword this
    /// validator does not check.
    pub fn parse(text: &str) -> Result<Schema, SchemaError> {
        let root: Value =
            serde_json::from_str(text).map_err(|e| SchemaError::NotJson(e.to_string()))?;
        Schema::from_value(root)
    }

    /// A schema from its JSON value.
    ///
    /// # Errors
    ///
    /// As [`Schema::parse`], but for the text.
    pub fn from_value(root: Value) -> Result<Schema, SchemaError> {
        if !matches!(root, Value::Object(_) | Value::Bool(_)) {
            return Err(SchemaError::NotASchema(json_type_name(&root)));
        }
        check_schema(&root, &root, &mut String::new(), 0)?;
        Ok(Schema { root })
    }

    /// The schema as JSON.
    pub fn as_value(&self) -> &Value {
        &self.root
    }

    /// Every problem of a configuration, one sentence each; empty when it is valid.
    ///
    /// `null` means that no configuration was given, and is checked as `{}` when the schema
    /// does not accept `null` itself: a schema whose keys all have defaults accepts it, and
    /// one with required keys gets one problem naming them all.
    pub fn problems(&self, config: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        let none_given = config.is_null() && !self.accepts_null() && self.takes_an_object();
        let config = if none_given {
            &Value::Object(Map::new())
        } else {
            config
        };
        let mut checker = Checker {
            root: &self.root,
            problems: &mut problems,
            missing: Vec::new(),
        };
        checker.check(&self.root, config, &mut Vec::new(), 0);
        let missing = std::mem::take(&mut checker.missing);
        if none_given && !missing.is_empty() && problems.len() == missing.len() {
            let keys: Vec<String> = missing.iter().map(|k| format!("`{k}`")).collect();
            return vec![format!(
                "no configuration was given; it needs at least {}",
                join_and(&keys)
            )];
        }
        problems
    }

    /// Whether the schema's type allows an object (`null` then stands for `{}`).
    fn takes_an_object(&self) -> bool {
        let mut schema = &self.root;
        for _ in 0..MAX_DEPTH {
            match schema
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| resolve(&self.root, r))
            {
                Some(target) => schema = target,
                None => break,
            }
        }
        match schema.get("type") {
            Some(Value::String(name)) => name == "object",
            Some(Value::Array(names)) => names.iter().any(|n| n == "object"),
            _ => true,
        }
    }

    fn accepts_null(&self) -> bool {
        let mut probe = Vec::new();
        let mut checker = Checker {
            root: &self.root,
            problems: &mut probe,
            missing: Vec::new(),
        };
        checker.check(&self.root, &Value::Null, &mut Vec::new(), 0);
        probe.is_empty()
    }
}

/// `a`, `a and b`, `a, b and c`.
fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Checks that `schema` (at the JSON pointer `at`) uses only known keywords with values of the
/// right kind, and that its `$ref`s resolve.
fn check_schema(
    root: &Value,
    schema: &Value,
    at: &mut String,
    depth: usize,
) -> Result<(), SchemaError> {
    let invalid = |keyword: &str, at: &str| SchemaError::Invalid {
        keyword: keyword.to_owned(),
        at: if at.is_empty() {
            "/".into()
        } else {
            at.to_owned()
        },
    };
    if depth > MAX_DEPTH {
        return Err(invalid("nesting", at));
    }
    let object = match schema {
        Value::Bool(_) => return Ok(()),
        Value::Object(object) => object,
        _ => return Err(invalid("schema", at)),
    };
    for (keyword, value) in object {
        let len = at.len();
        let _ = write!(at, "/{keyword}");
        let result = (|| {
            if ANNOTATIONS.contains(&keyword.as_str()) || keyword.starts_with("x-") {
                if matches!(keyword.as_str(), "$defs" | "definitions") {
                    let defs = value.as_object().ok_or_else(|| invalid(keyword, at))?;
                    for (name, def) in defs {
                        let len = at.len();
                        let _ = write!(at, "/{name}");
                        check_schema(root, def, at, depth + 1)?;
                        at.truncate(len);
                    }
                }
                return Ok(());
            }
            if !CHECKED.contains(&keyword.as_str()) {
                return Err(SchemaError::Unsupported {
                    keyword: keyword.clone(),
                    at: at.clone(),
                });
            }
            let ok = match keyword.as_str() {
                "$ref" => value.as_str().and_then(|r| resolve(root, r)).is_some(),
                "type" => match value {
                    Value::String(name) => TYPES.contains(&name.as_str()),
                    Value::Array(names) => names
                        .iter()
                        .all(|n| n.as_str().is_some_and(|n| TYPES.contains(&n))),
                    _ => false,
                },
                "enum" => value.is_array(),
                "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => {
                    value.is_number()
                }
                "multipleOf" => value.as_f64().is_some_and(|m| m > 0.0),
                "format" => value.is_string(),
                "minLength" | "maxLength" | "minItems" | "maxItems" | "minProperties"
                | "maxProperties" => value.is_u64(),
                "uniqueItems" => value.is_boolean(),
                "required" => value
                    .as_array()
                    .is_some_and(|keys| keys.iter().all(Value::is_string)),
                "properties" => {
                    let properties = value.as_object().ok_or_else(|| invalid(keyword, at))?;
                    for (name, property) in properties {
                        let len = at.len();
                        let _ = write!(at, "/{name}");
                        check_schema(root, property, at, depth + 1)?;
                        at.truncate(len);
                    }
                    true
                }
                "items" | "additionalProperties" | "propertyNames" | "not" => {
                    check_schema(root, value, at, depth + 1)?;
                    true
                }
                "prefixItems" | "allOf" | "anyOf" | "oneOf" => {
                    let schemas = value.as_array().ok_or_else(|| invalid(keyword, at))?;
                    for (i, sub) in schemas.iter().enumerate() {
                        let len = at.len();
                        let _ = write!(at, "/{i}");
                        check_schema(root, sub, at, depth + 1)?;
                        at.truncate(len);
                    }
                    !schemas.is_empty()
                }
                // `const`: any value.
                _ => true,
            };
            if ok {
                Ok(())
            } else {
                Err(invalid(keyword, at))
            }
        })();
        result?;
        at.truncate(len);
    }
    Ok(())
}

const TYPES: &[&str] = &[
    "null", "boolean", "object", "array", "number", "integer", "string",
];

/// The schema a local `$ref` (`#`, `#/$defs/Name`, any `#/…` JSON pointer) points at.
fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    root.pointer(pointer)
        .filter(|s| matches!(s, Value::Object(_) | Value::Bool(_)))
}

/// The whole-number range of an integer `format` schemars emits.
fn format_range(format: &str) -> Option<(i128, i128)> {
    Some(match format {
        "int8" => (i8::MIN.into(), i8::MAX.into()),
        "uint8" => (0, u8::MAX.into()),
        "int16" => (i16::MIN.into(), i16::MAX.into()),
        "uint16" => (0, u16::MAX.into()),
        "int32" => (i32::MIN.into(), i32::MAX.into()),
        "uint32" => (0, u32::MAX.into()),
        "int64" | "int" => (i64::MIN.into(), i64::MAX.into()),
        "uint64" | "uint" => (0, u64::MAX.into()),
        _ => return None,
    })
}

/// A JSON number, exactly when it is whole.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Whole(i128),
    Real(f64),
}

impl Num {
    fn of(number: &Number) -> Num {
        if let Some(n) = number.as_i64() {
            Num::Whole(n.into())
        } else if let Some(n) = number.as_u64() {
            Num::Whole(n.into())
        } else {
            Num::Real(number.as_f64().unwrap_or(f64::NAN))
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            // Precision loss only past 2^53, where no configuration bound lives.
            #[allow(clippy::cast_precision_loss)]
            Num::Whole(n) => n as f64,
            Num::Real(x) => x,
        }
    }

    /// `self < other`, exactly for whole numbers.
    fn less(self, other: Num) -> bool {
        match (self, other) {
            (Num::Whole(a), Num::Whole(b)) => a < b,
            (a, b) => a.as_f64() < b.as_f64(),
        }
    }

    fn show(self) -> String {
        match self {
            Num::Whole(n) => n.to_string(),
            Num::Real(x) => x.to_string(),
        }
    }
}

/// A place in the configuration: object keys and array indexes.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// `` `a.b[2]` ``, or `the configuration` at the top.
fn show_path(path: &[Step]) -> String {
    if path.is_empty() {
        return "the configuration".to_owned();
    }
    let mut text = String::from("`");
    for (i, step) in path.iter().enumerate() {
        match step {
            Step::Key(key) if i == 0 => text.push_str(key),
            Step::Key(key) => {
                text.push('.');
                text.push_str(key);
            }
            Step::Index(index) => {
                let _ = write!(text, "[{index}]");
            }
        }
    }
    text.push('`');
    text
}

fn type_words(name: &str) -> &'static str {
    match name {
        "null" => "null",
        "boolean" => "true or false",
        "object" => "an object",
        "array" => "an array",
        "number" => "a number",
        "integer" => "a whole number",
        _ => "a string",
    }
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        "string" => value.is_string(),
        _ => false,
    }
}

/// The value, short, for a message: strings and numbers as JSON, other values by their type.
fn show_value(value: &Value) -> String {
    match value {
        Value::String(text) if text.chars().count() <= 64 => value.to_string(),
        Value::Number(_) | Value::Bool(_) | Value::Null => value.to_string(),
        other => json_type_name(other).to_owned(),
    }
}

struct Checker<'a, 'p> {
    root: &'a Value,
    problems: &'p mut Vec<String>,
    /// Required top-level keys found missing, by name.
    missing: Vec<String>,
}

impl<'a> Checker<'a, '_> {
    fn problem(&mut self, problem: String) {
        self.problems.push(problem);
    }

    fn check(&mut self, schema: &'a Value, value: &Value, path: &mut Vec<Step>, depth: usize) {
        if depth > MAX_DEPTH {
            self.problem(format!("{} is nested too deeply", show_path(path)));
            return;
        }
        let schema = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => {
                self.problem(format!("{} is not allowed", show_path(path)));
                return;
            }
            Value::Object(schema) => schema,
            _ => return,
        };
        if let Some(target) = schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| resolve(self.root, r))
        {
            let before = self.problems.len();
            self.check(target, value, path, depth + 1);
            if self.problems.len() > before {
                return;
            }
        }
        if !self.check_type(schema, value, path) {
            return;
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            if !options.contains(value) {
                self.problem(format!(
                    "{} must be {}, not {}",
                    show_path(path),
                    one_of(options),
                    show_value(value)
                ));
                return;
            }
        }
        if let Some(expected) = schema.get("const") {
            if expected != value {
                self.problem(format!(
                    "{} must be {}, not {}",
                    show_path(path),
                    show_value(expected),
                    show_value(value)
                ));
                return;
            }
        }
        match value {
            Value::Number(number) => self.check_number(schema, number, path),
            Value::String(text) => self.check_string(schema, text, path),
            Value::Array(items) => self.check_array(schema, items, path, depth),
            Value::Object(object) => self.check_object(schema, object, path, depth),
            _ => {}
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.check(sub, value, path, depth + 1);
            }
        }
        for (keyword, exactly_one) in [("anyOf", false), ("oneOf", true)] {
            if let Some(options) = schema.get(keyword).and_then(Value::as_array) {
                self.check_alternatives(options, exactly_one, value, path, depth);
            }
        }
        if let Some(not) = schema.get("not") {
            if self.matches(not, value, depth) {
                self.problem(format!(
                    "{} has a form that is not allowed",
                    show_path(path)
                ));
            }
        }
    }

    /// Whether `value` is valid for `schema`, recording nothing.
    fn matches(&self, schema: &'a Value, value: &Value, depth: usize) -> bool {
        self.problems_of(schema, value, depth).is_empty()
    }

    fn problems_of(&self, schema: &'a Value, value: &Value, depth: usize) -> Vec<String> {
        // Relative paths: the caller adds its own.
        let mut problems = Vec::new();
        let mut checker = Checker {
            root: self.root,
            problems: &mut problems,
            missing: Vec::new(),
        };
        checker.check(schema, value, &mut Vec::new(), depth + 1);
        problems
    }

    /// `type`: false (and one problem) when the value has none of the types.
    fn check_type(&mut self, schema: &Map<String, Value>, value: &Value, path: &[Step]) -> bool {
        let names: Vec<&str> = match schema.get("type") {
            Some(Value::String(name)) => vec![name.as_str()],
            Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).collect(),
            _ => return true,
        };
        if names.iter().any(|name| has_type(value, name)) {
            return true;
        }
        let words: Vec<String> = names.iter().map(|n| type_words(n).to_owned()).collect();
        let actual = match value {
            Value::Number(_) if names.contains(&"integer") => value.to_string(),
            other => json_type_name(other).to_owned(),
        };
        self.problem(format!(
            "{} must be {}, not {actual}",
            show_path(path),
            join_or(&words)
        ));
        false
    }

    fn check_number(&mut self, schema: &Map<String, Value>, number: &Number, path: &[Step]) {
        let value = Num::of(number);
        let bound = |key: &str| schema.get(key).and_then(Value::as_number).map(Num::of);
        let whole = match schema.get("type") {
            Some(Value::String(name)) => name == "integer",
            Some(Value::Array(names)) => names.iter().any(|n| n == "integer"),
            _ => false,
        };
        // The lowest and highest allowed, each with whether it is shown in the message (a
        // 64-bit format's limit is not worth saying).
        let mut low: Option<(Num, bool, bool)> = None; // (bound, exclusive, shown)
        let mut high: Option<(Num, bool, bool)> = None;
        let tighten =
            |slot: &mut Option<(Num, bool, bool)>, new: (Num, bool, bool), lower: bool| {
                let replace = match slot {
                    None => true,
                    Some((old, old_excl, _)) => {
                        if lower {
                            old.less(new.0) || (*old == new.0 && new.1 && !*old_excl)
                        } else {
                            new.0.less(*old) || (*old == new.0 && new.1 && !*old_excl)
                        }
                    }
                };
                if replace {
                    *slot = Some(new);
                }
            };
        if let Some((min, max)) = schema
            .get("format")
            .and_then(Value::as_str)
            .and_then(format_range)
        {
            let narrow = max < i128::from(i64::MAX);
            tighten(&mut low, (Num::Whole(min), false, min != 0 && narrow), true);
            tighten(&mut high, (Num::Whole(max), false, narrow), false);
        }
        if let Some(min) = bound("minimum") {
            tighten(&mut low, (min, false, true), true);
        }
        if let Some(min) = bound("exclusiveMinimum") {
            tighten(&mut low, (min, true, true), true);
        }
        if let Some(max) = bound("maximum") {
            tighten(&mut high, (max, false, true), false);
        }
        if let Some(max) = bound("exclusiveMaximum") {
            tighten(&mut high, (max, true, true), false);
        }
        let below = low.is_some_and(|(b, excl, _)| value.less(b) || (excl && value == b));
        let above = high.is_some_and(|(b, excl, _)| b.less(value) || (excl && value == b));
        if below || above {
            let kind = if whole { "a whole number" } else { "a number" };
            let shown = |b: Option<(Num, bool, bool)>| b.filter(|(_, _, shown)| *shown);
            // A bound from a format is worth saying when it is broken, and a lower one next
            // to an upper one that is said ("from 0 to 3").
            let high = shown(high).or(high.filter(|_| above));
            let low = shown(low).or(low.filter(|_| below || high.is_some()));
            let range = match (low, high) {
                (Some((l, false, _)), Some((h, false, _))) => {
                    format!("from {} to {}", l.show(), h.show())
                }
                (low, high) => {
                    let mut parts = Vec::new();
                    if let Some((l, excl, _)) = low {
                        parts.push(if excl {
                            format!("greater than {}", l.show())
                        } else {
                            format!("of at least {}", l.show())
                        });
                    }
                    if let Some((h, excl, _)) = high {
                        parts.push(if excl {
                            format!("less than {}", h.show())
                        } else {
                            format!("of at most {}", h.show())
                        });
                    }
                    parts.join(" and ")
                }
            };
            self.problem(format!(
                "{} must be {kind} {range}, not {}",
                show_path(path),
                value.show()
            ));
        }
        if let Some(step) = schema.get("multipleOf").and_then(Value::as_f64) {
            let quotient = value.as_f64() / step;
            if (quotient - quotient.round()).abs() > 1e-9 {
                self.problem(format!(
                    "{} must be a multiple of {step}, not {}",
                    show_path(path),
                    value.show()
                ));
            }
        }
    }

    fn check_string(&mut self, schema: &Map<String, Value>, text: &str, path: &[Step]) {
        let length = text.chars().count() as u64;
        let min = schema.get("minLength").and_then(Value::as_u64);
        let max = schema.get("maxLength").and_then(Value::as_u64);
        if length == 0 && min.is_some_and(|m| m > 0) {
            self.problem(format!("{} is empty", show_path(path)));
        } else if min.is_some_and(|m| length < m) || max.is_some_and(|m| length > m) {
            let range = match (min, max) {
                (Some(l), Some(h)) => format!("from {l} to {h} characters long"),
                (Some(l), None) => format!("at least {l} characters long"),
                (None, Some(h)) => format!("at most {h} characters long"),
                (None, None) => String::new(),
            };
            self.problem(format!("{} must be {range}, not {length}", show_path(path)));
        }
    }

    fn check_array(
        &mut self,
        schema: &'a Map<String, Value>,
        items: &[Value],
        path: &mut Vec<Step>,
        depth: usize,
    ) {
        let count = items.len() as u64;
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
            if count < min {
                self.problem(format!(
                    "{} must have at least {min} item{}, not {count}",
                    show_path(path),
                    plural(min)
                ));
            }
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
            if count > max {
                self.problem(format!(
                    "{} must have at most {max} item{}, not {count}",
                    show_path(path),
                    plural(max)
                ));
            }
        }
        if schema.get("uniqueItems") == Some(&Value::Bool(true)) {
            let mut seen = Vec::new();
            for item in items {
                if seen.contains(&item) {
                    self.problem(format!(
                        "{} holds {} more than once",
                        show_path(path),
                        show_value(item)
                    ));
                    break;
                }
                seen.push(item);
            }
        }
        let prefix = schema
            .get("prefixItems")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        for (index, item) in items.iter().enumerate() {
            let sub = prefix.get(index).or_else(|| schema.get("items"));
            if let Some(sub) = sub {
                path.push(Step::Index(index));
                self.check(sub, item, path, depth + 1);
                path.pop();
            }
        }
    }

    fn check_object(
        &mut self,
        schema: &'a Map<String, Value>,
        object: &Map<String, Value>,
        path: &mut Vec<Step>,
        depth: usize,
    ) {
        let properties = schema.get("properties").and_then(Value::as_object);
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for key in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(key) {
                    path.push(Step::Key(key.to_owned()));
                    self.problem(format!("missing {}", show_path(path)));
                    path.pop();
                    if path.is_empty() {
                        self.missing.push(key.to_owned());
                    }
                }
            }
        }
        let count = object.len() as u64;
        if let Some(min) = schema.get("minProperties").and_then(Value::as_u64) {
            if count < min {
                self.problem(format!(
                    "{} must have at least {min} entr{}, not {count}",
                    show_path(path),
                    if min == 1 { "y" } else { "ies" }
                ));
            }
        }
        if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64) {
            if count > max {
                self.problem(format!(
                    "{} has {count} entries; at most {max}",
                    show_path(path)
                ));
            }
        }
        for (key, value) in object {
            if let Some(names) = schema.get("propertyNames") {
                let found = self.problems_of(names, &Value::String(key.clone()), depth);
                if !found.is_empty() {
                    path.push(Step::Key(key.clone()));
                    self.problem(format!(
                        "{} is not an allowed name: {}",
                        show_path(path),
                        found.join("; ").replace("the configuration ", "it ")
                    ));
                    path.pop();
                    continue;
                }
            }
            if let Some(property) = properties.and_then(|p| p.get(key)) {
                path.push(Step::Key(key.clone()));
                self.check(property, value, path, depth + 1);
                path.pop();
                continue;
            }
            match schema.get("additionalProperties") {
                None | Some(Value::Bool(true)) => {}
                Some(Value::Bool(false)) => {
                    let known: BTreeSet<&str> = properties
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    let place = if path.is_empty() {
                        String::new()
                    } else {
                        format!(" in {}", show_path(path))
                    };
                    let known = if known.is_empty() {
                        "it takes none".to_owned()
                    } else {
                        format!(
                            "known keys: {}",
                            known.into_iter().collect::<Vec<_>>().join(", ")
                        )
                    };
                    self.problem(format!("unknown key `{key}`{place}; {known}"));
                }
                Some(other) => {
                    path.push(Step::Key(key.clone()));
                    self.check(other, value, path, depth + 1);
                    path.pop();
                }
            }
        }
    }

    /// `anyOf` / `oneOf`: when no alternative fits, the problems of the one alternative that is
    /// meant (the only one of the value's type whose required keys are all present), or one
    /// problem naming the forms.
    fn check_alternatives(
        &mut self,
        options: &'a [Value],
        exactly_one: bool,
        value: &Value,
        path: &mut Vec<Step>,
        depth: usize,
    ) {
        let results: Vec<Vec<String>> = options
            .iter()
            .map(|option| self.problems_of(option, value, depth))
            .collect();
        let fitting = results.iter().filter(|p| p.is_empty()).count();
        if fitting == 1 || (fitting > 1 && !exactly_one) {
            return;
        }
        if fitting > 1 {
            self.problem(format!(
                "{} fits more than one of its forms",
                show_path(path)
            ));
            return;
        }
        let resolved: Vec<&Value> = options.iter().map(|o| self.deref(o)).collect();
        // Only constants: say which values are allowed.
        let constants: Option<Vec<Value>> = resolved
            .iter()
            .map(|o| constants_of(o))
            .collect::<Option<Vec<_>>>()
            .map(|c| c.into_iter().flatten().collect());
        if let Some(constants) = constants {
            self.problem(format!(
                "{} must be {}, not {}",
                show_path(path),
                one_of(&constants),
                show_value(value)
            ));
            return;
        }
        let meant: Vec<usize> = resolved
            .iter()
            .enumerate()
            .filter(|(_, option)| fits_shape(option, value))
            .map(|(i, _)| i)
            .collect();
        if let [only] = meant[..] {
            self.check(&options[only], value, path, depth + 1);
            return;
        }
        let forms: Vec<String> = resolved.iter().map(|o| describe(o)).collect();
        self.problem(format!(
            "{} must be {}, not {}",
            show_path(path),
            join_or(&forms),
            show_value(value)
        ));
    }

    /// The schema a `$ref`-only schema stands for.
    fn deref(&self, schema: &'a Value) -> &'a Value {
        let mut schema = schema;
        for _ in 0..MAX_DEPTH {
            match schema
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| resolve(self.root, r))
            {
                Some(target) => schema = target,
                None => break,
            }
        }
        schema
    }
}

/// The constants a schema allows, when it allows nothing else.
fn constants_of(schema: &Value) -> Option<Vec<Value>> {
    if let Some(value) = schema.get("const") {
        return Some(vec![value.clone()]);
    }
    schema.get("enum").and_then(Value::as_array).cloned()
}

/// Whether `value` has the shape of `schema`: one of its types, and (for an object) every key
/// it requires.
fn fits_shape(schema: &Value, value: &Value) -> bool {
    let typed = match schema.get("type") {
        Some(Value::String(name)) => has_type(value, name),
        Some(Value::Array(names)) => names
            .iter()
            .any(|n| n.as_str().is_some_and(|n| has_type(value, n))),
        _ => true,
    };
    let keyed = match (schema.get("required").and_then(Value::as_array), value) {
        (Some(required), Value::Object(object)) => required
            .iter()
            .filter_map(Value::as_str)
            .all(|key| object.contains_key(key)),
        _ => true,
    };
    typed && keyed
}

/// A form of an `anyOf`, in words: `an object with `command``.
fn describe(schema: &Value) -> String {
    let required: Vec<String> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(|k| format!("`{k}`"))
                .collect()
        })
        .unwrap_or_default();
    if !required.is_empty() {
        return format!("an object with {}", join_and(&required));
    }
    match schema.get("type") {
        Some(Value::String(name)) => type_words(name).to_owned(),
        Some(Value::Array(names)) => join_or(
            &names
                .iter()
                .filter_map(Value::as_str)
                .map(|n| type_words(n).to_owned())
                .collect::<Vec<_>>(),
        ),
        _ => constants_of(schema).map_or_else(|| "another form".to_owned(), |c| one_of(&c)),
    }
}

/// `"a"`, `"a" or "b"`, `one of "a", "b", "c"`.
fn one_of(options: &[Value]) -> String {
    let shown: Vec<String> = options.iter().map(Value::to_string).collect();
    match shown.len() {
        0 => "nothing (no value is allowed)".to_owned(),
        1 | 2 => join_or(&shown),
        _ => format!("one of {}", shown.join(", ")),
    }
}

/// `a`, `a or b`, `a, b or c`.
fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn problems(schema: Value, config: Value) -> Vec<String> {
        Schema::from_value(schema).unwrap().problems(&config)
    }

    #[test]
    fn types_are_checked_and_named() {
        let schema = json!({"type": "object", "properties": {
            "name": {"type": "string"},
            "count": {"type": "integer"},
            "ratio": {"type": "number"},
            "on": {"type": "boolean"},
            "list": {"type": "array"},
            "maybe": {"type": ["string", "null"]},
        }});
        assert!(problems(schema.clone(), json!({"name": "x", "count": 3, "ratio": 0.5, "on": true, "list": [], "maybe": null})).is_empty());
        assert_eq!(
            problems(
                schema,
                json!({"name": 3, "count": 1.5, "ratio": "1", "on": 1, "list": {}, "maybe": 2})
            ),
            [
                "`count` must be a whole number, not 1.5",
                "`list` must be an array, not an object",
                "`maybe` must be a string or null, not a number",
                "`name` must be a string, not a number",
                "`on` must be true or false, not a number",
                "`ratio` must be a number, not a string",
            ]
        );
        assert_eq!(
            problems(json!({"type": "object"}), json!([1])),
            ["the configuration must be an object, not an array"]
        );
    }

    #[test]
    fn required_and_unknown_keys_are_named() {
        let schema = json!({"type": "object", "required": ["base_url", "model"],
            "additionalProperties": false,
            "properties": {"base_url": {"type": "string"}, "model": {"type": "string"}}});
        assert_eq!(
            problems(schema.clone(), json!({"model": "m", "tempo": 1})),
            [
                "missing `base_url`",
                "unknown key `tempo`; known keys: base_url, model"
            ]
        );
        // No configuration at all: one problem naming what is needed.
        assert_eq!(
            problems(schema.clone(), Value::Null),
            ["no configuration was given; it needs at least `base_url` and `model`"]
        );
        // A schema whose keys all have defaults accepts null.
        assert!(
            problems(
                json!({"type": "object", "properties": {"a": {"type": "integer"}}}),
                Value::Null
            )
            .is_empty()
        );
        // But a schema that says what null is gets its own say.
        assert_eq!(
            problems(json!({"type": "string"}), Value::Null),
            ["the configuration must be a string, not null"]
        );
        let nested = json!({"type": "object", "properties": {"server": {"type": "object",
            "required": ["command"], "additionalProperties": false,
            "properties": {"command": {"type": "string"}}}}});
        assert_eq!(
            problems(nested, json!({"server": {"cmd": "x"}})),
            [
                "missing `server.command`",
                "unknown key `cmd` in `server`; known keys: command"
            ]
        );
    }

    #[test]
    fn bounds_are_checked_with_the_format_of_the_rust_type() {
        let schema = json!({"type": "object", "properties": {
            "timeout_ms": {"type": "integer", "format": "uint64", "minimum": 1},
            "max_tokens": {"type": ["integer", "null"], "format": "uint32", "minimum": 1},
            "steps": {"type": "integer", "format": "uint32", "minimum": 1, "maximum": 1000},
            "delay_ms": {"type": "integer", "format": "uint64", "minimum": 0},
            "level": {"type": "integer", "format": "int8"},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "even": {"type": "integer", "multipleOf": 2},
        }});
        assert!(
            problems(
                schema.clone(),
                json!({"timeout_ms": 1, "max_tokens": 4294967295_u64,
            "steps": 1000, "delay_ms": 0, "level": -128, "ratio": 1, "even": 4})
            )
            .is_empty()
        );
        assert_eq!(
            problems(
                schema,
                json!({"timeout_ms": 0, "max_tokens": 4294967296_u64,
                "steps": 1001, "delay_ms": -1, "level": 200, "ratio": 0, "even": 3})
            ),
            [
                "`delay_ms` must be a whole number of at least 0, not -1",
                "`even` must be a multiple of 2, not 3",
                "`level` must be a whole number from -128 to 127, not 200",
                "`max_tokens` must be a whole number from 1 to 4294967295, not 4294967296",
                "`ratio` must be a number greater than 0 and of at most 1, not 0",
                "`steps` must be a whole number from 1 to 1000, not 1001",
                "`timeout_ms` must be a whole number of at least 1, not 0",
            ]
        );
    }

    #[test]
    fn lengths_counts_and_allowed_values_are_checked() {
        let schema = json!({"type": "object", "properties": {
            "model": {"type": "string", "minLength": 1},
            "code": {"type": "string", "minLength": 2, "maxLength": 3},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2, "uniqueItems": true},
            "mode": {"type": "string", "enum": ["stdin", "arg", "none"]},
            "kind": {"const": "stdio"},
            "env": {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 1},
        }});
        assert_eq!(
            problems(
                schema.clone(),
                json!({"model": "", "code": "abcd", "tags": ["a", 1, "a"],
                "mode": "pipe", "kind": "http", "env": {"A": "1", "B": 2}})
            ),
            [
                "`code` must be from 2 to 3 characters long, not 4",
                "`env` has 2 entries; at most 1",
                "`env.B` must be a string, not a number",
                "`kind` must be \"stdio\", not \"http\"",
                "`mode` must be one of \"stdin\", \"arg\", \"none\", not \"pipe\"",
                "`model` is empty",
                "`tags` must have at most 2 items, not 3",
                "`tags` holds \"a\" more than once",
                "`tags[1]` must be a string, not a number",
            ]
        );
        assert_eq!(
            problems(schema, json!({"tags": []})),
            ["`tags` must have at least 1 item, not 0"]
        );
    }

    #[test]
    fn references_and_alternatives_name_the_form_that_was_meant() {
        // As schemars writes an enum with documented variants, and an untagged enum.
        let schema = json!({"type": "object", "properties": {
            "mode": {"$ref": "#/$defs/Mode"},
            "servers": {"type": "object", "additionalProperties": {"$ref": "#/$defs/Server"}},
            "limit": {"anyOf": [{"$ref": "#/$defs/Limit"}, {"type": "null"}]},
        }, "$defs": {
            "Mode": {"oneOf": [{"type": "string", "const": "stdin", "description": "x"},
                               {"type": "string", "enum": ["arg", "none"]}]},
            "Server": {"anyOf": [{"$ref": "#/$defs/Stdio"}, {"$ref": "#/$defs/Http"}]},
            "Stdio": {"type": "object", "required": ["command"], "additionalProperties": false,
                      "properties": {"command": {"type": "string", "minLength": 1}, "args": {"type": "array"}}},
            "Http": {"type": "object", "required": ["url"], "additionalProperties": false,
                     "properties": {"url": {"type": "string"}}},
            "Limit": {"type": "integer", "minimum": 1},
        }});
        assert!(problems(schema.clone(), json!({"mode": "arg", "servers": {"a": {"command": "x"}, "b": {"url": "u"}}, "limit": null})).is_empty());
        assert_eq!(
            problems(
                schema,
                json!({"mode": "pipe", "servers": {
                "fs": {"args": ["x"]}, "git": {"command": "", "args": 1}, "web": {"url": 3}},
                "limit": 0})
            ),
            [
                "`limit` must be a whole number of at least 1, not 0",
                "`mode` must be one of \"stdin\", \"arg\", \"none\", not \"pipe\"",
                "`servers.fs` must be an object with `command` or an object with `url`, not an object",
                "`servers.git.args` must be an array, not a number",
                "`servers.git.command` is empty",
                "`servers.web.url` must be a string, not a number",
            ]
        );
    }

    #[test]
    fn property_names_and_boolean_schemas() {
        let schema = json!({"type": "object", "propertyNames": {"maxLength": 5},
            "properties": {"never": false}, "additionalProperties": true});
        assert_eq!(
            problems(schema, json!({"long-name": 1, "never": 2, "ok": 3})),
            [
                "`long-name` is not an allowed name: it must be at most 5 characters long, not 9",
                "`never` is not allowed",
            ]
        );
    }

    #[test]
    fn keywords_it_cannot_check_are_refused_when_the_schema_is_read() {
        let unsupported =
            Schema::parse(r#"{"properties": {"key": {"type": "string", "pattern": "^[A-Z]+$"}}}"#);
        assert_eq!(
            unsupported.unwrap_err(),
            SchemaError::Unsupported {
                keyword: "pattern".into(),
                at: "/properties/key/pattern".into()
            }
        );
        assert!(matches!(Schema::parse("{"), Err(SchemaError::NotJson(_))));
        assert_eq!(
            Schema::parse("[]").unwrap_err(),
            SchemaError::NotASchema("an array")
        );
        assert!(matches!(
            Schema::parse(r##"{"$ref": "#/$defs/Missing"}"##),
            Err(SchemaError::Invalid { keyword, .. }) if keyword == "$ref"
        ));
        assert!(matches!(
            Schema::parse(r#"{"minimum": "one"}"#),
            Err(SchemaError::Invalid { keyword, .. }) if keyword == "minimum"
        ));
        // Annotations, definitions and extensions are fine.
        assert!(
            Schema::parse(
                r#"{"title": "t", "description": "d", "default": 1, "x-note": 2,
            "$defs": {"A": {"type": "string"}}, "format": "uri"}"#
            )
            .is_ok()
        );
    }

    #[test]
    fn a_schema_that_refers_to_itself_ends() {
        let schema = json!({"$defs": {"Loop": {"$ref": "#/$defs/Loop"}}, "$ref": "#/$defs/Loop"});
        let problems = problems(schema, json!(1));
        assert_eq!(problems, ["the configuration is nested too deeply"]);
        let nested = json!({"type": "object", "additionalProperties": {"$ref": "#"}});
        let mut deep = json!({});
        for _ in 0..100 {
            deep = json!({"a": deep});
        }
        let found = Schema::from_value(nested).unwrap().problems(&deep);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].ends_with("is nested too deeply"), "{found:?}");
    }
}
