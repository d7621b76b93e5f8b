//! Conformance checks: the plugin contract run against a runtime, each check a pass or a fail
//! with the reason.
//!
//! [`check_file`] admits a plugin file as discovery would, then checks every runtime it
//! declares; [`check_handle`] checks one runtime a host already resolved. `runtimes check
//! --conformance FILE` prints the same checks, and a plugin author puts them in `cargo test`:
//!
//! ```no_run
//! use runtime_conformance::{self as conformance, Options};
//!
//! # async fn demo() {
//! let library = conformance::built_library("shout_runtime").expect("cargo built the cdylib");
//! let report = conformance::check_file(&library, &serde_json::Value::Null, &Options::default()).await;
//! assert!(report.is_conformant(), "{report}");
//! # }
//! ```
//!
//! What is checked, for each runtime:
//!
//! | check | passes when |
//! |---|---|
//! | `admission` | the file is a plugin this host accepts (file only) |
//! | `config_schema` | the declared configuration schema, if any, is JSON and a schema (an object or a boolean) (file only) |
//! | `instance` | the runtime builds with the given configuration (file only) |
//! | `info` | what `info` returns agrees with the manifest: id, capabilities (and with a file: display name, description, version) |
//! | `health` | `health` answers `Ok` |
//! | `validate_config` | validating `null` and garbage returns a list of problems (or none), never a panic |
//! | `streaming` | a streaming runtime's text deltas concatenate to the final content, then exactly one final item; a runtime that does not declare streaming is refused by the host |
//! | `tools` | a runtime that declares tools accepts a turn with a tool; one that does not is refused by the host |
//! | `cancel` | a turn cancelled by its execution id right after it started ends (`cancelled`, or finished first), and the runtime serves the next turn |
//! | `drop_mid_stream` | a stream dropped after its first item (a turn dropped after its first poll) leaves the runtime serving the next turn |
//! | `timeout` | a turn with a 1 ms timeout ends (`timeout`, or finished first), and the runtime serves the next turn |
//! | `empty_prompt`, `unicode_prompt`, `large_prompt` | the turn answers, or fails cleanly: never a panic, a crash, an `internal` error or a hang |
//! | `concurrent_turns` | 100 turns at once all answer |
//!
//! Every check is bounded by [`Options::with_time_limit`]: one that does not finish in time
//! fails, saying so. The checks run one after another (a model server with one slot is not
//! flooded by two checks at once). Nothing here panics on what a plugin returns.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use runtime_api::Value;
use runtime_api::manifest::{Manifest, ManifestRuntime};

use runtime_loader::{RuntimeHandle, Runtimes, inspect};

mod checker;
mod report;

use checker::run_checks;
pub use report::{Check, Options, Report, Verdict};

/// Where cargo put the `cdylib` of package `crate_name` (`-` or `_`) for the test running
/// now: next to the test executable (`target/<profile>/deps`) or one folder up. For a plugin
/// crate's own `cargo test`, which builds the library before its integration tests.
pub fn built_library(crate_name: &str) -> Option<PathBuf> {
    let file = format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        crate_name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    );
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    [Some(deps), deps.parent()]
        .into_iter()
        .flatten()
        .map(|dir| dir.join(&file))
        .find(|candidate| candidate.is_file())
}

/// Admits the plugin file at `path` as discovery would, then runs every check against each
/// runtime it declares, built with `config`. Never fails: a file that cannot be checked is a
/// failed `admission` check.
pub async fn check_file(path: &Path, config: &Value, options: &Options) -> Report {
    let mut report = Report {
        file: Some(path.to_owned()),
        checks: Vec::new(),
    };
    let started = Instant::now();
    let manifest = match inspect::real_file(path).and_then(|real| inspect::read_manifest(&real)) {
        Ok(manifest) => manifest,
        Err(reason) => {
            report
                .checks
                .push(file_check(started, Verdict::fail(reason.to_string())));
            return report;
        }
    };
    let runtimes = Runtimes::with_options(options.loader);
    let discovered = runtimes.discover_files(&[path]);
    if let Some(rejection) = discovered.rejected.first() {
        report.checks.push(file_check(
            started,
            Verdict::fail(rejection.reason.to_string()),
        ));
        return report;
    }
    report.checks.push(file_check(
        started,
        Verdict::pass(format!(
            "plugin {} {}: {} runtime(s), contract {}, runtime-api {}",
            manifest.plugin_name,
            manifest.plugin_version,
            manifest.runtimes.len(),
            manifest.contract,
            manifest.api_version
        )),
    ));
    for declared in &manifest.runtimes {
        let id = declared.id.as_str();
        let mut record = |name, started, verdict| {
            report.checks.push(Check {
                runtime: Some(id.to_owned()),
                name,
                verdict,
                elapsed: Instant::now().saturating_duration_since(started),
            });
        };
        let started = Instant::now();
        record("config_schema", started, schema_verdict(declared));
        let started = Instant::now();
        let handle = match runtimes.new_instance(id, config) {
            Ok(handle) => {
                record(
                    "instance",
                    started,
                    Verdict::pass("built with the configuration"),
                );
                handle
            }
            Err(error) => {
                record(
                    "instance",
                    started,
                    Verdict::fail(format!(
                        "{error} (the remaining checks of this runtime did not run)"
                    )),
                );
                continue;
            }
        };
        let declared = Declared {
            runtime: declared,
            manifest: &manifest,
        };
        report
            .checks
            .extend(run_checks(&handle, Some(declared), options).await);
    }
    report
}

/// Runs the checks that need no file against a runtime a host already resolved.
pub async fn check_handle(handle: &RuntimeHandle, options: &Options) -> Report {
    Report {
        file: None,
        checks: run_checks(handle, None, options).await,
    }
}

fn file_check(started: Instant, verdict: Verdict) -> Check {
    Check {
        runtime: None,
        name: "admission",
        verdict,
        elapsed: Instant::now().saturating_duration_since(started),
    }
}

/// What the file says about the runtime.
#[derive(Clone, Copy)]
pub(crate) struct Declared<'a> {
    runtime: &'a ManifestRuntime,
    manifest: &'a Manifest,
}

const SCHEMA_TYPES: [&str; 7] = [
    "null", "boolean", "object", "array", "number", "string", "integer",
];

fn schema_verdict(declared: &ManifestRuntime) -> Verdict {
    let schema = match declared.config_schema() {
        None => {
            return Verdict::NotApplicable {
                reason: "no configuration schema declared".to_owned(),
            };
        }
        Some(Err(error)) => {
            return Verdict::fail(format!(
                "the declared configuration schema is not JSON: {error}"
            ));
        }
        Some(Ok(schema)) => schema,
    };
    let Value::Object(keys) = &schema else {
        return match schema {
            Value::Bool(_) => Verdict::pass("a boolean schema"),
            other => Verdict::fail(format!(
                "a JSON Schema is an object or a boolean, the declared one is {}",
                runtime_api::json_type_name(&other)
            )),
        };
    };
    let type_ok = |name: &Value| name.as_str().is_some_and(|n| SCHEMA_TYPES.contains(&n));
    match keys.get("type") {
        Some(Value::Array(names)) if !names.iter().all(type_ok) => Verdict::fail(format!(
            "the schema's `type` names an unknown type (known: {})",
            SCHEMA_TYPES.join(", ")
        )),
        Some(name @ Value::String(_)) if !type_ok(name) => Verdict::fail(format!(
            "the schema's `type` is {name}, not one of {}",
            SCHEMA_TYPES.join(", ")
        )),
        Some(Value::Array(_) | Value::String(_)) | None => Verdict::pass(format!(
            "valid JSON, {} top-level propert{}",
            keys.get("properties")
                .and_then(Value::as_object)
                .map_or(0, |p| p.len()),
            if keys
                .get("properties")
                .and_then(Value::as_object)
                .is_some_and(|p| p.len() == 1)
            {
                "y"
            } else {
                "ies"
            }
        )),
        Some(other) => Verdict::fail(format!(
            "the schema's `type` is {}, not a type name or a list of them",
            runtime_api::json_type_name(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use runtime_api::json;

    use super::checker::large_prompt;
    use super::*;

    fn runtime(schema: &str) -> ManifestRuntime {
        serde_json::from_value(json!({
            "id": "x", "display_name": "x", "description": "", "aliases": [],
            "capabilities": [], "config_schema": schema
        }))
        .unwrap()
    }

    #[test]
    fn schemas_are_json_objects_or_booleans_with_known_types() {
        let verdict = |schema: &str| schema_verdict(&runtime(schema));
        assert!(matches!(verdict(""), Verdict::NotApplicable { .. }));
        assert!(matches!(verdict("true"), Verdict::Pass { .. }));
        assert!(matches!(
            verdict(r#"{"type": ["object", "null"], "properties": {"a": {}}}"#),
            Verdict::Pass { .. }
        ));
        for (bad, says) in [
            ("{\"type\": ", "not JSON"),
            ("[1]", "an array"),
            (r#"{"type": "dict"}"#, "\"dict\""),
            (r#"{"type": ["object", "map"]}"#, "unknown type"),
            (r#"{"type": 3}"#, "a number"),
        ] {
            let verdict = verdict(bad);
            assert!(
                verdict.is_failure() && verdict.text().contains(says),
                "{bad}: {verdict:?}"
            );
        }
    }

    #[test]
    fn the_report_escapes_plugin_text_and_counts_failures() {
        let report = Report {
            file: None,
            checks: vec![Check {
                runtime: Some("evil\u{1b}[2J\u{202e}".to_owned()),
                name: "health",
                verdict: Verdict::fail("bad\u{7}\nnews"),
                elapsed: Duration::ZERO,
            }],
        };
        let text = report.to_string();
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text}"
        );
        assert!(
            text.contains("FAIL  evil\\x1b[2J\\u{202e}  health: bad\\x07\\nnews"),
            "{text}"
        );
        assert!(text.ends_with("1 of 1 checks failed"), "{text}");
        assert!(!report.is_conformant());
        assert!(!Report::default().is_conformant());
    }

    #[test]
    fn the_large_prompt_has_the_size_asked_for() {
        for bytes in [0, 1, 1000, 1024 * 1024] {
            let prompt = large_prompt(bytes);
            assert!(prompt.len() <= bytes && prompt.len() + 4 > bytes, "{bytes}");
        }
    }
}
