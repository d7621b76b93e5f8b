//! The `runtimes` command (issue: CLI), run as a real binary against fixture plugins.
//!
//! Longer than 700 lines on purpose: one test per command and failure, each a whole run of
//! the binary.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

use crate::support::{artifacts, install, install_patched, plugin_dir, write_candidate};

/// Runs `runtimes` with a private per-user folder and no `AGENT_RUNTIMES_PATH`.
fn runtimes(home: &Path, args: &[&str]) -> Output {
    command(home, args).output().expect("runtimes runs")
}

fn command(home: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(&artifacts().runtimes);
    command
        .args(args)
        .env_remove("AGENT_RUNTIMES_PATH")
        .env_remove("AGENT_RUNTIMES_ALLOW_INSECURE")
        .env("XDG_DATA_HOME", home.join("data"))
        .env("HOME", home)
        .env("NO_COLOR", "1");
    command
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exited normally")
}

fn with_echo() -> (tempfile::TempDir, tempfile::TempDir, String) {
    let home = plugin_dir();
    let plugins = plugin_dir();
    install(plugins.path(), &artifacts().echo, "libecho");
    let dir = plugins.path().display().to_string();
    (home, plugins, dir)
}

#[test]
fn list_shows_installed_runtimes_and_loads_none() {
    let (home, _plugins, dir) = with_echo();
    let output = runtimes(home.path(), &["--plugin-dir", &dir, "list"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("ID"), "{text}");
    assert!(lines[1].starts_with("echo  parrot"), "{text}");
    assert!(lines[1].contains("streaming"), "{text}");
}

#[test]
fn list_json_and_all_show_rejected_files_with_reasons() {
    let (home, plugins, dir) = with_echo();
    write_candidate(plugins.path(), "junk", b"random bytes, not a library");
    let output = runtimes(
        home.path(),
        &["--plugin-dir", &dir, "list", "--all", "--json"],
    );
    assert_eq!(code(&output), 0);
    let listed: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(listed["runtimes"][0]["id"], "echo");
    assert_eq!(listed["runtimes"][0]["aliases"], json!(["parrot"]));
    assert_eq!(listed["rejected"][0]["reason"]["kind"], "not_a_library");
    let text = stdout(&runtimes(
        home.path(),
        &["--plugin-dir", &dir, "list", "--all"],
    ));
    assert!(text.contains("Rejected:"), "{text}");
    assert!(text.contains("it is not a shared library"), "{text}");
    let plain = stdout(&runtimes(home.path(), &["--plugin-dir", &dir, "list"]));
    assert!(
        plain.contains("1 plugin file(s) rejected or shadowed"),
        "{plain}"
    );
}

#[test]
fn a_missing_plugin_folder_is_reported_not_fatal() {
    let home = plugin_dir();
    let missing = home.path().join("nowhere").display().to_string();
    let output = runtimes(home.path(), &["--plugin-dir", &missing, "list", "--all"]);
    assert_eq!(code(&output), 0);
    let text = stdout(&output);
    assert!(text.contains("No runtime is installed"), "{text}");
    assert!(
        text.contains("nowhere (given explicitly): does not exist"),
        "{text}"
    );
}

#[test]
fn info_shows_an_entry_and_says_why_a_plugin_was_refused() {
    let (home, plugins, dir) = with_echo();
    let output = runtimes(
        home.path(),
        &["--plugin-dir", &dir, "info", "parrot", "--json"],
    );
    assert_eq!(code(&output), 0);
    let entry: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(entry["id"], "echo");
    install_patched(plugins.path(), &artifacts().fixture, "libfuture", |m| {
        m["contract"] = json!(runtime_api::version::CONTRACT_VERSION + 1);
    });
    let output = runtimes(home.path(), &["--plugin-dir", &dir, "info", "fixture"]);
    assert_eq!(code(&output), 3);
    let message = stderr(&output);
    assert!(message.contains("`fixture` is provided by "), "{message}");
    assert!(
        message.contains("newer than this host's contract"),
        "{message}"
    );
}

#[test]
fn an_unknown_runtime_exits_2_and_lists_what_is_available() {
    let (home, _plugins, dir) = with_echo();
    for command in ["info", "run"] {
        let mut args = vec!["--plugin-dir", &dir, command, "ecko"];
        if command == "run" {
            args.push("hello");
        }
        let output = runtimes(home.path(), &args);
        assert_eq!(code(&output), 2, "{command}");
        let message = stderr(&output);
        assert!(
            message.contains("no runtime named `ecko`. Did you mean `echo`?"),
            "{message}"
        );
        assert!(
            message.contains("Available: echo (alias parrot)."),
            "{message}"
        );
        assert!(message.contains("runtimes list"), "{message}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let home = plugin_dir();
    assert_eq!(code(&runtimes(home.path(), &["list", "--bogus"])), 2);
    assert_eq!(code(&runtimes(home.path(), &["run", "echo"])), 2);
    let (home, _plugins, dir) = with_echo();
    let output = runtimes(
        home.path(),
        &[
            "--plugin-dir",
            &dir,
            "run",
            "echo",
            "x",
            "--config",
            "{nope",
        ],
    );
    assert_eq!(code(&output), 2);
    assert!(stderr(&output).contains("--config is not valid JSON"));
}

#[test]
fn check_validates_files_and_prints_their_hash() {
    let home = plugin_dir();
    let junk_dir = plugin_dir();
    let junk = write_candidate(junk_dir.path(), "junk", &[0x5a; 4096]);
    let echo = artifacts().echo.display().to_string();
    let output = runtimes(home.path(), &["check", &echo]);
    assert_eq!(code(&output), 0, "{}", stdout(&output));
    let hash = runtime_loader::security::sha256_file(&artifacts().echo).unwrap();
    assert!(stdout(&output).contains(&format!("sha256: {hash}")));
    let output = runtimes(
        home.path(),
        &["check", &echo, &junk.display().to_string(), "--json"],
    );
    assert_eq!(code(&output), 3);
    let checks: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(checks[0]["ok"], true);
    assert_eq!(checks[0]["manifest"]["runtimes"][0]["id"], "echo");
    assert_eq!(checks[1]["ok"], false);
    assert_eq!(checks[1]["rejected"]["kind"], "not_a_library");
    let missing = runtimes(home.path(), &["check", "/no/such/file.so"]);
    assert_eq!(code(&missing), 3);
    assert!(stdout(&missing).contains("it cannot be read"));
    // A folder: the plugin libraries in it are checked, as discovery would see them.
    let folder = plugin_dir();
    install(folder.path(), &artifacts().echo, "libecho");
    let output = runtimes(
        home.path(),
        &["check", &folder.path().display().to_string(), "--json"],
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let checks: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(checks.as_array().map(Vec::len), Some(1), "{checks}");
    assert_eq!(checks[0]["manifest"]["runtimes"][0]["id"], "echo");
    let empty = plugin_dir();
    let output = runtimes(home.path(), &["check", &empty.path().display().to_string()]);
    assert_eq!(code(&output), 2, "{}", stderr(&output));
    assert!(stderr(&output).contains("holds no plugin library"));
}

#[test]
fn check_load_runs_a_smoke_turn() {
    let home = plugin_dir();
    let echo = artifacts().echo.display().to_string();
    let output = runtimes(home.path(), &["check", &echo, "--load", "--json"]);
    assert_eq!(code(&output), 0, "{}", stdout(&output));
    let checks: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(
        checks[0]["smoke"][0],
        json!({"id": "echo", "ok": true, "answer": "ping"})
    );
    // The fixture plugin's `fixture-faults` fails every turn when configured to.
    let fixture = artifacts().fixture.display().to_string();
    let failing = runtimes(
        home.path(),
        &[
            "check",
            &fixture,
            "--load",
            "--config",
            r#"{"fail_with": "internal"}"#,
        ],
    );
    assert_eq!(code(&failing), 3);
    assert!(
        stdout(&failing).contains("smoke turn `fixture-faults`: the smoke turn failed"),
        "{}",
        stdout(&failing)
    );
}

#[test]
fn install_copies_atomically_refuses_duplicates_and_pins() {
    let home = plugin_dir();
    let target = home.path().join("fresh-folder");
    let folder = target.display().to_string();
    let echo = artifacts().echo.display().to_string();
    let output = runtimes(home.path(), &["install", &echo, "--dir", &folder, "--pin"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(stdout(&output).contains("installed echo (alias parrot)"));
    // What it asks for at the process level, said as it is installed (echo: nothing).
    assert!(
        stdout(&output).contains("asks for: nothing beyond the baseline"),
        "{}",
        stdout(&output)
    );
    let installed = target.join(artifacts().echo.file_name().unwrap());
    assert!(installed.exists());
    let hash = runtime_loader::security::sha256_file(&installed).unwrap();
    let lock = std::fs::read_to_string(target.join("plugins.lock")).unwrap();
    assert!(lock.contains(&hash), "{lock}");
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // The same file again is a successful no-op: nothing is copied, no --force needed.
    let modified = std::fs::metadata(&installed).unwrap().modified().unwrap();
    let again = runtimes(home.path(), &["install", &echo, "--dir", &folder]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert!(
        stdout(&again).contains("echo (alias parrot) is already installed"),
        "{}",
        stdout(&again)
    );
    assert_eq!(
        std::fs::metadata(&installed).unwrap().modified().unwrap(),
        modified
    );
    // A newer build under the same file name with the same ids is an upgrade: no --force.
    let elsewhere = plugin_dir();
    let newer = install_patched(
        elsewhere.path(),
        &artifacts().echo,
        installed.file_stem().unwrap().to_str().unwrap(),
        |m| m["runtimes"][0]["description"] = json!("Another build."),
    );
    let newer = newer.display().to_string();
    let upgraded = runtimes(home.path(), &["install", &newer, "--dir", &folder]);
    assert_eq!(code(&upgraded), 0, "{}", stderr(&upgraded));
    assert!(
        stdout(&upgraded).contains("upgraded echo (alias parrot)"),
        "{}",
        stdout(&upgraded)
    );
    let lock = std::fs::read_to_string(target.join("plugins.lock")).unwrap();
    let new_hash = runtime_loader::security::sha256_file(&installed).unwrap();
    assert!(new_hash != hash && lock.contains(&new_hash), "{lock}");
    // Another file (another name) with the same ids is refused, then replaced with --force.
    let other_dir = plugin_dir();
    let other = install_patched(other_dir.path(), &artifacts().echo, "libecho_fork", |m| {
        m["runtimes"][0]["description"] = json!("A fork.")
    });
    let other = other.display().to_string();
    let refused = runtimes(home.path(), &["install", &other, "--dir", &folder]);
    assert_eq!(code(&refused), 3);
    assert!(
        stderr(&refused).contains("`echo` is already installed"),
        "{}",
        stderr(&refused)
    );
    let forced = runtimes(
        home.path(),
        &["install", &other, "--dir", &folder, "--force"],
    );
    assert_eq!(code(&forced), 0, "{}", stderr(&forced));
    assert!(!installed.exists(), "the replaced file is removed");
    // What was installed is what `list` sees, from the per-user folder by default.
    let listed = runtimes(home.path(), &["--plugin-dir", &folder, "list", "--json"]);
    let listed: Value = serde_json::from_str(&stdout(&listed)).unwrap();
    assert_eq!(listed["runtimes"][0]["id"], "echo");
}

#[test]
fn install_refuses_a_random_file_and_writes_nothing() {
    let home = plugin_dir();
    let junk_dir = plugin_dir();
    let junk = write_candidate(junk_dir.path(), "junk", b"\x7fELF\x02\x01\x01 truncated");
    let target = home.path().join("plugins");
    let output = runtimes(
        home.path(),
        &[
            "install",
            &junk.display().to_string(),
            "--dir",
            &target.display().to_string(),
        ],
    );
    assert_eq!(code(&output), 3);
    assert!(
        stderr(&output).contains("nothing was installed"),
        "{}",
        stderr(&output)
    );
    assert!(!target.exists());
}

#[test]
fn install_defaults_to_the_per_user_folder_and_uninstall_removes() {
    let home = plugin_dir();
    let echo = artifacts().echo.display().to_string();
    assert_eq!(code(&runtimes(home.path(), &["install", &echo])), 0);
    let user_dir = home.path().join("data/agent-runtimes/plugins");
    assert!(
        user_dir
            .join(artifacts().echo.file_name().unwrap())
            .exists()
    );
    let run = runtimes(home.path(), &["run", "parrot", "from the user folder"]);
    assert_eq!(stdout(&run), "from the user folder\n");
    let output = runtimes(home.path(), &["uninstall", "echo"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(
        !user_dir
            .join(artifacts().echo.file_name().unwrap())
            .exists()
    );
    let output = runtimes(home.path(), &["uninstall", "echo"]);
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains("is not installed"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn run_prints_the_answer_or_the_whole_result() {
    let (home, plugins, dir) = with_echo();
    let output = runtimes(
        home.path(),
        &["--plugin-dir", &dir, "run", "parrot", "hello  world"],
    );
    assert_eq!(code(&output), 0);
    assert_eq!(stdout(&output), "hello  world\n");
    let history = plugins.path().join("history.json");
    std::fs::write(
        &history,
        r#"[{"role": "user", "content": "one two"}, {"role": "assistant", "content": "three"}]"#,
    )
    .unwrap();
    let output = runtimes(
        home.path(),
        &[
            "--plugin-dir",
            &dir,
            "run",
            "echo",
            "hi there",
            "--json",
            "--system",
            "sys",
            "--history",
            &history.display().to_string(),
        ],
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let result: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(result["content"], "hi there");
    assert_eq!(result["finish_reason"], "stop");
    assert_eq!(result["usage"]["input_tokens"], 2 + 1 + 3);
    assert_eq!(result["usage"]["output_tokens"], 2);
}

#[test]
fn a_failed_turn_exits_1_with_its_kind() {
    let (home, plugins, dir) = with_echo();
    install(plugins.path(), &artifacts().fixture, "libfixture");
    let output = runtimes(
        home.path(),
        &[
            "--plugin-dir",
            &dir,
            "run",
            "fixture-faults",
            "x",
            "--config",
            r#"{"fail_with": "rate_limited"}"#,
        ],
    );
    assert_eq!(code(&output), 1);
    assert!(
        stderr(&output).contains("the turn failed (rate_limited, retriable)"),
        "{}",
        stderr(&output)
    );
    let output = runtimes(
        home.path(),
        &[
            "--plugin-dir",
            &dir,
            "run",
            "echo",
            "x",
            "--config",
            r#"{"delay_ms": 5000}"#,
            "--timeout",
            "0.2",
        ],
    );
    assert_eq!(code(&output), 1);
    assert!(
        stderr(&output).contains("(timeout, retriable)"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn stream_prints_deltas_in_order_and_json_ends_with_the_result() {
    let (home, _plugins, dir) = with_echo();
    let output = runtimes(
        home.path(),
        &["--plugin-dir", &dir, "stream", "echo", "one two three"],
    );
    assert_eq!(code(&output), 0);
    assert_eq!(stdout(&output), "one two three\n");
    let output = runtimes(
        home.path(),
        &[
            "--plugin-dir",
            &dir,
            "stream",
            "parrot",
            "one two three",
            "--json",
        ],
    );
    assert_eq!(code(&output), 0);
    let lines: Vec<Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let deltas: Vec<&str> = lines[..3]
        .iter()
        .map(|l| l["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, vec!["one ", "two ", "three"]);
    assert_eq!(lines[3]["type"], "done");
    assert_eq!(lines[3]["output"]["content"], "one two three");
    assert_eq!(lines.len(), 4);
}

#[cfg(unix)]
#[test]
fn ctrl_c_cancels_a_stream_cleanly() {
    use std::io::Read as _;
    let (home, _plugins, dir) = with_echo();
    let mut child = command(
        home.path(),
        &[
            "--plugin-dir",
            &dir,
            "stream",
            "echo",
            "a b c d e f g h",
            "--config",
            r#"{"delay_ms": 300}"#,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Interrupt once the first delta is out: the stream is running.
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 2];
    out.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"a ");
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(code(&output), 130, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("interrupted (Ctrl-C)"),
        "{}",
        stderr(&output)
    );
    assert!(!rest.contains('h'), "the stream ran to its end: a {rest}");
}

#[cfg(unix)]
#[test]
fn install_gives_the_copy_safe_permissions_whatever_the_source_has() {
    use std::os::unix::fs::PermissionsExt;
    let home = plugin_dir();
    let source_dir = plugin_dir();
    let source = install(source_dir.path(), &artifacts().echo, "libshared");
    std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o666)).unwrap();
    let target = home.path().join("plugins");
    let folder = target.display().to_string();
    let output = runtimes(
        home.path(),
        &["install", &source.display().to_string(), "--dir", &folder],
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let installed = target.join(source.file_name().unwrap());
    let mode = std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755);
    // In place, the source would be refused; `check` says so.
    let checked = runtimes(home.path(), &["check", &source.display().to_string()]);
    assert_eq!(code(&checked), 3);
    assert!(
        stdout(&checked).contains("writable by others"),
        "{}",
        stdout(&checked)
    );
}

#[test]
fn info_shows_the_declared_configuration_and_checks_one_without_creating_the_runtime() {
    let (home, _plugins, dir) = with_echo();
    let output = runtimes(home.path(), &["--plugin-dir", &dir, "info", "echo"]);
    assert_eq!(code(&output), 0);
    let text = stdout(&output);
    assert!(
        text.contains("delay_ms") && text.contains("default 0"),
        "{text}"
    );

    let valid = runtimes(
        home.path(),
        &[
            "--plugin-dir",
            &dir,
            "info",
            "echo",
            "--config",
            r#"{"delay_ms": 1}"#,
        ],
    );
    assert_eq!(code(&valid), 0, "{}", stderr(&valid));
    let invalid = runtimes(
        home.path(),
        &[
            "--plugin-dir",
            &dir,
            "info",
            "echo",
            "--config",
            r#"{"delay_ms": 1, "bogus": 2}"#,
            "--json",
        ],
    );
    assert_eq!(code(&invalid), 3);
    let verdict: Value = serde_json::from_str(&stdout(&invalid)).unwrap();
    assert_eq!(verdict["valid"], false);
    assert!(verdict["problems"][0].as_str().unwrap().contains("bogus"));
}

#[test]
fn help_lists_one_exit_code_per_kind_of_failure() {
    let home = plugin_dir();
    let output = runtimes(home.path(), &["--help"]);
    assert_eq!(code(&output), 0);
    let help = stdout(&output);
    for line in [
        "0    success",
        "1    the turn failed",
        "2    usage error",
        "3    refused",
        "4    a plugin crashed",
        "130  interrupted",
    ] {
        assert!(help.contains(line), "`{line}` is missing from:\n{help}");
    }
}

#[test]
fn a_refused_configuration_exits_3_whether_refused_at_creation_or_during_the_turn() {
    let (home, plugins, dir) = with_echo();
    install(plugins.path(), &artifacts().fixture, "libfixture");
    let at_creation = runtimes(
        home.path(),
        &[
            "--plugin-dir",
            &dir,
            "run",
            "echo",
            "x",
            "--config",
            r#"{"bogus": 1}"#,
        ],
    );
    assert_eq!(code(&at_creation), 3, "{}", stderr(&at_creation));
    assert!(
        stderr(&at_creation).contains("bogus"),
        "{}",
        stderr(&at_creation)
    );
    let in_turn = runtimes(
        home.path(),
        &[
            "--plugin-dir",
            &dir,
            "run",
            "fixture-faults",
            "x",
            "--config",
            r#"{"fail_with": "invalid_config"}"#,
        ],
    );
    assert_eq!(code(&in_turn), 3, "{}", stderr(&in_turn));
    assert!(
        stderr(&in_turn).contains("the turn failed (invalid_config)"),
        "{}",
        stderr(&in_turn)
    );
}

#[test]
fn streaming_a_runtime_that_does_not_stream_exits_2_with_a_hint_for_its_author() {
    let home = plugin_dir();
    let plugins = plugin_dir();
    install(plugins.path(), &artifacts().fixture, "libfixture");
    let dir = plugins.path().display().to_string();
    let output = runtimes(
        home.path(),
        &["--plugin-dir", &dir, "stream", "fixture", "hello"],
    );
    assert_eq!(code(&output), 2, "{}", stderr(&output));
    let message = stderr(&output);
    // For the user: what is missing, and to use another runtime.
    assert!(
        message.contains("does not declare the `streaming` capability"),
        "{message}"
    );
    assert!(message.contains("use a runtime that does"), "{message}");
    // For the plugin's author: the capability flag and the trait method.
    assert!(
        message.contains("add `Capabilities::STREAMING` to its `CAPABILITIES`"),
        "{message}"
    );
    assert!(message.contains("`Runtime::stream_turn`"), "{message}");
    assert_eq!(stdout(&output), "", "nothing is streamed");
}

#[test]
fn stream_json_ends_with_the_error_as_one_json_object_and_no_blank_line() {
    let (home, plugins, dir) = with_echo();
    install(plugins.path(), &artifacts().fixture, "libfixture");
    let output = runtimes(
        home.path(),
        &[
            "--plugin-dir",
            &dir,
            "stream",
            "fixture-faults",
            "one two",
            "--json",
            "--config",
            r#"{"fail_with": "rate_limited"}"#,
        ],
    );
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    let text = stdout(&output);
    assert!(!text.lines().any(str::is_empty), "a blank line in {text:?}");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    let last = lines.last().expect("at least the error");
    assert_eq!(last["error"]["kind"], "rate_limited", "{text}");
    assert_eq!(last["error"]["retriable"], true, "{text}");
    assert_eq!(last["error"]["exit_code"], 1, "{text}");
    assert!(last["error"]["message"].is_string(), "{text}");
    // Said once: on stdout, not again on stderr.
    assert!(
        !stderr(&output).contains("rate_limited"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn json_commands_write_a_failure_as_one_json_object() {
    let (home, plugins, dir) = with_echo();
    install(plugins.path(), &artifacts().fixture, "libfixture");
    for args in [
        &["--plugin-dir", &dir, "run", "nope", "x", "--json"][..],
        &["--plugin-dir", &dir, "stream", "nope", "x", "--json"][..],
        &["--plugin-dir", &dir, "info", "nope", "--json"][..],
        &[
            "--plugin-dir",
            &dir,
            "run",
            "echo",
            "x",
            "--json",
            "--config",
            "{",
        ][..],
    ] {
        let output = runtimes(home.path(), args);
        assert_eq!(code(&output), 2, "{args:?}: {}", stderr(&output));
        let text = stdout(&output);
        assert_eq!(text.lines().count(), 1, "{args:?}: {text:?}");
        let value: Value = serde_json::from_str(&text).expect("one JSON object");
        assert_eq!(value["error"]["kind"], "usage", "{args:?}: {text}");
        assert_eq!(value["error"]["exit_code"], 2, "{args:?}: {text}");
        assert!(stderr(&output).is_empty(), "{args:?}: {}", stderr(&output));
    }
    let output = runtimes(
        home.path(),
        &[
            "--plugin-dir",
            &dir,
            "run",
            "fixture-faults",
            "x",
            "--json",
            "--config",
            r#"{"fail_with": "timeout"}"#,
        ],
    );
    assert_eq!(code(&output), 1);
    let value: Value = serde_json::from_str(&stdout(&output)).expect("one JSON object");
    assert_eq!(value["error"]["kind"], "timeout");
}

#[test]
fn a_refused_plugin_s_reason_is_printed_once() {
    let home = plugin_dir();
    let plugins = plugin_dir();
    install_patched(plugins.path(), &artifacts().fixture, "libfuture", |m| {
        m["contract"] = json!(runtime_api::version::CONTRACT_VERSION + 1);
    });
    let dir = plugins.path().display().to_string();
    for command in ["run", "stream"] {
        let output = runtimes(
            home.path(),
            &["--plugin-dir", &dir, command, "fixture", "x"],
        );
        assert_eq!(code(&output), 3, "{}", stderr(&output));
        let message = stderr(&output);
        assert_eq!(
            message.matches("newer than this host's contract").count(),
            1,
            "{message}"
        );
    }
    // Refused when loaded (abi_stable's layout check), not at discovery: also said once.
    let home = plugin_dir();
    let plugins = plugin_dir();
    install(plugins.path(), &artifacts().abi_mismatch, "libmismatch");
    let dir = plugins.path().display().to_string();
    let output = runtimes(home.path(), &["--plugin-dir", &dir, "run", "mismatch", "x"]);
    assert_eq!(code(&output), 3, "{}", stderr(&output));
    let message = stderr(&output);
    assert_eq!(
        message.matches("does not match this host").count(),
        1,
        "{message}"
    );
}
