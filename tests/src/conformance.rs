//! The conformance checks (`runtime_conformance`, `runtimes check --conformance`)
//! against real plugin files: the runtimes of this workspace pass, and a deliberately broken
//! plugin fails with the specific reasons.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use runtime_api::Value;
use runtime_conformance::{self as conformance, Options, Report, Verdict};
use runtime_loader::LoaderOptions;
use serde_json::json;
use tempfile::TempDir;

use crate::llm_server::{config as llm_config, server};
use crate::support::{artifacts, built_plugin, install, plugin_dir, write_candidate};

/// Every check run for each runtime, in order.
const RUNTIME_CHECKS: [&str; 14] = [
    "config_schema",
    "instance",
    "info",
    "health",
    "validate_config",
    "streaming",
    "tools",
    "cancel",
    "drop_mid_stream",
    "timeout",
    "empty_prompt",
    "unicode_prompt",
    "large_prompt",
    "concurrent_turns",
];

fn options() -> Options {
    Options::default().with_loader_options(LoaderOptions::STRICT)
}

/// A library copied into a private folder (the strict permission checks pass there).
fn installed(library: &std::path::Path, stem: &str) -> (TempDir, PathBuf) {
    let dir = plugin_dir();
    let path = install(dir.path(), library, stem);
    (dir, path)
}

/// Asserts that every check ran for `runtime` and none failed.
fn assert_conformant(report: &Report, runtime: &str) {
    assert!(report.is_conformant(), "{report}");
    assert!(
        matches!(
            report.get(None, "admission").map(|c| &c.verdict),
            Some(Verdict::Pass { .. })
        ),
        "{report}"
    );
    for name in RUNTIME_CHECKS {
        let check = report
            .get(Some(runtime), name)
            .unwrap_or_else(|| panic!("no `{name}` check for {runtime}:\n{report}"));
        assert!(!check.verdict.is_failure(), "{report}");
    }
}

#[tokio::test]
async fn echo_passes_every_check() {
    let (_dir, path) = installed(&artifacts().echo, "libecho");
    let report = conformance::check_file(&path, &Value::Null, &options()).await;
    assert_conformant(&report, "echo");
    let streaming = report.get(Some("echo"), "streaming").unwrap();
    assert!(
        streaming
            .verdict
            .text()
            .contains("concatenate to the final content"),
        "{report}"
    );
    assert!(
        matches!(
            report.get(Some("echo"), "config_schema").unwrap().verdict,
            Verdict::Pass { .. }
        ),
        "echo declares a schema: {report}"
    );
    // Not declared: the host refuses tools, and the check says so.
    let tools = report.get(Some("echo"), "tools").unwrap();
    assert!(tools.verdict.text().contains("unsupported"), "{report}");
}

#[tokio::test]
async fn command_passes_every_check() {
    let library = artifacts().command.clone();
    let (_dir, path) = installed(&library, "libcommand");
    let report = conformance::check_file(&path, &json!({ "program": "cat" }), &options()).await;
    assert_conformant(&report, "command");
}

#[tokio::test]
async fn a_runtime_compiled_into_the_host_is_checked_through_its_handle() {
    let runtimes = runtime_loader::Runtimes::new();
    runtimes.register::<echo_runtime::Echo>().unwrap();
    let handle = runtimes.resolve("parrot").unwrap();
    let report = conformance::check_handle(&handle, &options()).await;
    assert!(report.is_conformant(), "{report}");
    assert!(report.file.is_none());
    assert_eq!(report.checks.len(), 12, "{report}");
}

#[tokio::test]
async fn the_broken_plugin_fails_with_the_specific_reasons() {
    let (_dir, path) = installed(&artifacts().broken, "libbroken");
    // Its large-prompt turn never ends: a short limit keeps the test short.
    let options = options().with_time_limit(Duration::from_secs(3));
    let report = conformance::check_file(&path, &Value::Null, &options).await;
    assert!(!report.is_conformant());
    let failed = |name: &str, says: &[&str]| {
        let check = report
            .get(Some("broken"), name)
            .unwrap_or_else(|| panic!("no `{name}` check:\n{report}"));
        let Verdict::Fail { reason } = &check.verdict else {
            panic!("`{name}` did not fail:\n{report}")
        };
        for part in says {
            assert!(reason.contains(part), "`{name}`: {reason:?} lacks {part:?}");
        }
    };
    failed("config_schema", &["not JSON"]);
    failed("info", &["description", "A perfectly fine runtime."]);
    failed("health", &["unavailable", "broken's backend is gone"]);
    failed("validate_config", &["a string", "panicked"]);
    failed(
        "streaming",
        &[
            "concatenate to",
            "but the final content is",
            "(and then some)",
        ],
    );
    failed("tools", &["declares `tools`", "unsupported"]);
    failed(
        "empty_prompt",
        &["panicked", "cannot answer an empty prompt"],
    );
    failed("large_prompt", &["did not finish within 3s"]);
    failed("config_schema", &["EOF while parsing"]);
    for passed in [
        "instance",
        "cancel",
        "drop_mid_stream",
        "timeout",
        "unicode_prompt",
        "concurrent_turns",
    ] {
        let check = report.get(Some("broken"), passed).unwrap();
        assert!(
            matches!(check.verdict, Verdict::Pass { .. }),
            "`{passed}`:\n{report}"
        );
    }
    assert_eq!(
        report
            .failures()
            .filter(|c| c.runtime.as_deref() == Some("broken"))
            .count(),
        8,
        "{report}"
    );

    // `stuck` blocks the calling thread in `info` and in `validate_config`: the checks still
    // end on time, and the others run.
    for blocked in ["info", "validate_config"] {
        let check = report.get(Some("stuck"), blocked).unwrap();
        assert!(
            check.verdict.is_failure() && check.verdict.text().contains("did not finish within 3s"),
            "`{blocked}`:\n{report}"
        );
    }
    assert_eq!(
        report
            .failures()
            .filter(|c| c.runtime.as_deref() == Some("stuck"))
            .count(),
        2,
        "{report}"
    );
    let bounded = report.get(Some("broken"), "large_prompt").unwrap();
    assert!(bounded.elapsed < Duration::from_secs(10), "{bounded:?}");
}

#[tokio::test]
async fn a_file_that_is_not_a_plugin_fails_admission() {
    let dir = plugin_dir();
    let path = write_candidate(dir.path(), "libnotes", b"just some notes\n");
    let report = conformance::check_file(&path, &Value::Null, &options()).await;
    assert_eq!(report.checks.len(), 1, "{report}");
    let check = report.get(None, "admission").unwrap();
    assert!(check.verdict.is_failure(), "{report}");
    assert!(
        check.verdict.text().contains("not a shared library"),
        "{report}"
    );
}

fn runtimes_command(args: &[&str]) -> std::process::Output {
    let home = plugin_dir();
    Command::new(&artifacts().runtimes)
        .args(args)
        .env_remove("AGENT_RUNTIMES_PATH")
        .env_remove("AGENT_RUNTIMES_ALLOW_INSECURE")
        .env("XDG_DATA_HOME", home.path().join("data"))
        .env("HOME", home.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("runtimes runs")
}

#[test]
fn the_cli_prints_one_line_per_check_and_exits_0_when_all_pass() {
    let (_dir, path) = installed(&artifacts().echo, "libecho");
    let output = runtimes_command(&["check", "--conformance", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let lines: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(lines.len(), 15, "{stdout}");
    assert!(lines[0].starts_with("pass  (file)  admission: plugin echo-runtime"));
    for (line, name) in lines[1..].iter().zip(RUNTIME_CHECKS) {
        assert!(
            line.starts_with(&format!("pass  echo  {name}: ")),
            "{stdout}"
        );
    }
}

#[test]
fn the_cli_exits_3_on_a_failed_check_and_prints_json_on_request() {
    let (_dir, path) = installed(&artifacts().broken, "libbroken");
    let output = runtimes_command(&[
        "check",
        "--conformance",
        path.to_str().unwrap(),
        "--json",
        "--time-limit",
        "2",
    ]);
    assert_eq!(output.status.code(), Some(3));
    let reports: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let checks = reports[0]["checks"].as_array().unwrap();
    let health = checks
        .iter()
        .find(|c| c["name"] == "health")
        .expect("a health check");
    assert_eq!(health["runtime"], "broken");
    assert_eq!(health["verdict"], "fail");
    assert!(
        health["reason"]
            .as_str()
            .unwrap()
            .contains("backend is gone")
    );
    assert!(health["elapsed_ms"].is_u64());
    let stuck = checks
        .iter()
        .find(|c| c["runtime"] == "stuck" && c["name"] == "info")
        .expect("stuck's info check");
    assert_eq!(stuck["reason"], "did not finish within 2s");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("conformance checks failed"), "{stderr}");
}

/// The llm plugin file, checked against the real server with its config.
async fn llm_report() -> Report {
    let (url, _lock) = server("LLAMA_SERVER_URL").await;
    let library = artifacts().llm.clone();
    let (_dir, path) = installed(&library, "libllm_runtimes");
    // The server has one slot: 100 turns at once queue there, the last waiting for the 99
    // before it, so the reads may wait long and a check may take minutes.
    let mut config = llm_config(&url);
    config["read_timeout_ms"] = json!(600_000);
    let options = options().with_time_limit(Duration::from_secs(600));
    conformance::check_file(&path, &config, &options).await
}

#[tokio::test]
#[ignore = "needs a llama.cpp server: scripts/llama-server.sh start, then `set -a; . target/llama-server/env; set +a`; CI runs it"]
async fn the_llm_runtimes_pass_every_check_against_a_real_server() {
    let report = llm_report().await;
    assert_conformant(&report, "openai");
    assert_conformant(&report, "anthropic");
    for id in ["openai", "anthropic"] {
        let tools = report.get(Some(id), "tools").unwrap();
        assert!(tools.verdict.text().starts_with("declared"), "{report}");
    }
}

#[tokio::test]
#[ignore = "needs a llama.cpp server: scripts/llama-server.sh start, then `set -a; . target/llama-server/env; set +a`; CI runs it"]
async fn the_agent_runtime_passes_every_check_against_a_real_server() {
    let (url, _lock) = server("LLAMA_SERVER_URL").await;
    let library = built_plugin("agent-runtime", "agent_runtime");
    let (_dir, path) = installed(&library, "libagent_runtime");
    // As for the llm runtimes: one model slot, so 100 turns at once queue there.
    let mut config = llm_config(&url);
    config["read_timeout_ms"] = json!(600_000);
    let options = options().with_time_limit(Duration::from_secs(600));
    let report = conformance::check_file(&path, &config, &options).await;
    assert_conformant(&report, "agent");
}
