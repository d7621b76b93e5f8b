//! A runtime whose configuration is a Rust type, next to one written by hand: the schema in the
//! manifest, `validate_config` and the value `new` gets all follow from the type, and the
//! snapshot test keeps the schema file current.

#![forbid(unsafe_code)]

use runtime_api::config::{SchemaSnapshot, TypedConfig, check_snapshots, schema_text};
use runtime_api::host::RemoteRuntime;
use runtime_api::{ErrorKind, Runtime, RuntimeError, TurnOutput, TurnRequest, Value, json};
use serde::Deserialize;

/// How answers are written.
#[derive(
    Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
enum Case {
    /// As asked.
    #[default]
    Keep,
    /// In capitals.
    Upper,
}

/// The configuration of `shout`.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Put before every answer.
    prefix: String,
    /// Exclamation marks after the answer.
    #[schemars(range(max = 3))]
    bangs: u8,
    /// How answers are written.
    case: Case,
    /// The longest answer, in characters.
    #[schemars(range(min = 1))]
    max_chars: Option<u32>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            prefix: String::new(),
            bangs: 1,
            case: Case::Keep,
            max_chars: None,
        }
    }
}

#[derive(Debug)]
struct Shout(Config);

impl TypedConfig for Shout {
    type Config = Config;

    fn check_config(config: &Config) -> Vec<String> {
        if config.prefix.contains('\n') {
            vec!["`prefix` must be one line".to_owned()]
        } else {
            Vec::new()
        }
    }

    fn from_config(config: Config) -> Result<Self, RuntimeError> {
        Ok(Shout(config))
    }
}

impl Runtime for Shout {
    const ID: &'static str = "shout";
    runtime_api::typed_config!("tests/typed/shout.schema.json");

    async fn run_turn(&self, request: TurnRequest) -> Result<TurnOutput, RuntimeError> {
        let text = match self.0.case {
            Case::Keep => request.prompt,
            Case::Upper => request.prompt.to_uppercase(),
        };
        let bangs = "!".repeat(self.0.bangs.into());
        Ok(TurnOutput::new(format!("{}{text}{bangs}", self.0.prefix)))
    }
}

/// The hand-written form, unchanged: a schema string, `validate_config` and `new(Value)`.
#[derive(Debug)]
struct ByHand(String);

impl Runtime for ByHand {
    const ID: &'static str = "by-hand";
    const CONFIG_SCHEMA: &'static str =
        r#"{"type": "object", "properties": {"greeting": {"type": "string"}}}"#;

    fn validate_config(config: &Value) -> Vec<String> {
        match config.get("greeting") {
            None | Some(Value::String(_)) => Vec::new(),
            Some(_) => vec!["`greeting` must be a string".to_owned()],
        }
    }

    fn new(config: Value) -> Result<Self, RuntimeError> {
        Ok(ByHand(
            config["greeting"].as_str().unwrap_or("hi").to_owned(),
        ))
    }

    async fn run_turn(&self, request: TurnRequest) -> Result<TurnOutput, RuntimeError> {
        Ok(TurnOutput::new(format!("{} {}", self.0, request.prompt)))
    }
}

runtime_api::export_plugin!(Shout, ByHand);

async fn answer(runtime: &RemoteRuntime, prompt: &str) -> String {
    runtime
        .run_turn(TurnRequest::new(prompt), Default::default())
        .await
        .unwrap()
        .content
}

#[tokio::test]
async fn new_gets_the_parsed_value_with_its_defaults() {
    let shout = RemoteRuntime::in_process::<Shout>(Value::Null).unwrap();
    assert_eq!(answer(&shout, "hi").await, "hi!");
    let shout =
        RemoteRuntime::in_process::<Shout>(json!({"prefix": "> ", "bangs": 3, "case": "upper"}))
            .unwrap();
    assert_eq!(answer(&shout, "hi").await, "> HI!!!");
    let direct = Shout::new(json!({"max_chars": 10})).unwrap();
    assert_eq!(
        direct.0,
        Config {
            max_chars: Some(10),
            ..Config::default()
        }
    );
}

#[test]
fn validate_config_lists_every_problem_bounds_included() {
    assert!(Shout::validate_config(&Value::Null).is_empty());
    assert!(
        Shout::validate_config(&json!({"bangs": 3, "case": "keep", "max_chars": null})).is_empty()
    );
    assert_eq!(
        Shout::validate_config(&json!({
            "prefix": 1, "bangs": 4, "case": "lower", "max_chars": 0, "volume": 11,
        })),
        [
            "`bangs` must be a whole number from 0 to 3, not 4",
            "`case` must be \"keep\" or \"upper\", not \"lower\"",
            "`max_chars` must be a whole number from 1 to 4294967295, not 0",
            "`prefix` must be a string, not a number",
            "unknown key `volume`; known keys: bangs, case, max_chars, prefix",
        ]
    );
    assert_eq!(
        Shout::validate_config(&json!([])),
        ["the configuration must be an object, not an array"]
    );
    // What the schema cannot say, also next to a broken bound (serde parses it).
    assert_eq!(
        Shout::validate_config(&json!({"prefix": "a\nb"})),
        ["`prefix` must be one line"]
    );
    assert_eq!(
        Shout::validate_config(&json!({"prefix": "a\nb", "bangs": 9})),
        [
            "`bangs` must be a whole number from 0 to 3, not 9",
            "`prefix` must be one line"
        ]
    );
    // Not when serde cannot parse it: the schema says why.
    assert_eq!(
        Shout::validate_config(&json!({"prefix": "a\nb", "bangs": "9"})),
        ["`bangs` must be a whole number, not a string"]
    );
}

#[tokio::test]
async fn a_refused_configuration_never_reaches_from_config() {
    let error = Shout::new(json!({"bangs": 300, "case": 1})).unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidConfig);
    assert_eq!(
        error.message,
        "invalid shout configuration: `bangs` must be a whole number from 0 to 3, not 300; `case` must be \"keep\" or \"upper\", not 1"
    );
    assert_eq!(error.metadata["problems"].as_array().unwrap().len(), 2);
    // Through the glue, as a host builds it.
    let Err(error) = RemoteRuntime::in_process::<Shout>(json!({"bangs": -1})) else {
        panic!("refused")
    };
    assert_eq!(error.kind, ErrorKind::InvalidConfig);
    assert_eq!(
        error.metadata["problems"],
        json!(["`bangs` must be a whole number from 0 to 3, not -1"])
    );
    assert_eq!(
        RemoteRuntime::validate_in_process::<Shout>(&json!({"bangs": "many"})).unwrap(),
        ["`bangs` must be a whole number, not a string"]
    );
}

#[test]
fn the_manifest_carries_the_schema_derived_from_the_type() {
    let manifest =
        runtime_api::manifest::Manifest::from_embedded(&__AGENT_RUNTIMES_MANIFEST).unwrap();
    let shout = manifest.runtimes.iter().find(|r| r.id == "shout").unwrap();
    let schema = shout.config_schema().unwrap().unwrap();
    assert_eq!(
        schema,
        serde_json::from_str::<Value>(&schema_text::<Config>()).unwrap()
    );
    assert_eq!(schema["properties"]["bangs"]["maximum"], 3);
    assert_eq!(schema["properties"]["bangs"]["default"], 1);
    assert_eq!(
        schema["properties"]["prefix"]["description"],
        "Put before every answer."
    );
    let by_hand = manifest
        .runtimes
        .iter()
        .find(|r| r.id == "by-hand")
        .unwrap();
    assert_eq!(by_hand.config_schema_text, ByHand::CONFIG_SCHEMA);
}

#[tokio::test]
async fn the_hand_written_form_keeps_working() {
    assert!(ByHand::__config_schema_snapshot().is_none());
    assert_eq!(
        RemoteRuntime::validate_in_process::<ByHand>(&json!({"greeting": 1})).unwrap(),
        ["`greeting` must be a string"]
    );
    let by_hand = RemoteRuntime::in_process::<ByHand>(json!({"greeting": "hello"})).unwrap();
    assert_eq!(answer(&by_hand, "there").await, "hello there");
}

#[test]
fn a_stale_schema_file_is_rewritten_and_the_check_fails_until_it_is_current() {
    let dir = std::env::temp_dir().join(format!("typed-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path: &'static str = Box::leak(
        dir.join("shout.schema.json")
            .display()
            .to_string()
            .into_boxed_str(),
    );
    let stale = SchemaSnapshot {
        runtime: "shout",
        path,
        committed: "",
        generate: schema_text::<Config>,
    };
    let error = check_snapshots(&[None, Some(stale)]).unwrap_err();
    assert!(
        error.contains("has been rewritten: build and run the tests again"),
        "{error}"
    );
    let written = std::fs::read_to_string(path).unwrap();
    assert_eq!(written, format!("{}\n", schema_text::<Config>()));
    // Once compiled in again, the file is current: any key order or spacing will do.
    let reordered: Value = serde_json::from_str(&written).unwrap();
    let pretty: &'static str = Box::leak(
        serde_json::to_string_pretty(&reordered)
            .unwrap()
            .into_boxed_str(),
    );
    let current = SchemaSnapshot {
        committed: pretty,
        ..stale
    };
    assert_eq!(check_snapshots(&[Some(current)]), Ok(()));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A type whose schema needs a keyword the validator does not check is refused by the
/// snapshot test, so it can never reach a manifest unchecked.
#[derive(Deserialize)]
#[allow(dead_code)]
struct WithPattern {
    key: String,
}

impl schemars::JsonSchema for WithPattern {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "WithPattern".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "object", "properties": {"key": {"type": "string", "pattern": "^[a-z]+$"}}})
    }
}

#[test]
fn a_schema_the_validator_cannot_check_fails_the_snapshot_test() {
    let snapshot = SchemaSnapshot {
        runtime: "pattern",
        path: "/nonexistent/never-written.json",
        committed: "{}",
        generate: schema_text::<WithPattern>,
    };
    let error = check_snapshots(&[Some(snapshot)]).unwrap_err();
    assert!(
        error.contains("uses `pattern` at /properties/key/pattern"),
        "{error}"
    );
}
