//! The command runtime with ordinary programs and scripts the tests write.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use runtime_api::{
    DeltaKind, ErrorKind, Runtime, RuntimeError, StreamItem, TurnOutput, TurnRequest, Value, json,
};
use tempfile::TempDir;

use crate::CommandRuntime;

fn runtime(config: Value) -> Arc<CommandRuntime> {
    Arc::new(CommandRuntime::new(config).unwrap())
}

async fn collect(
    runtime: &Arc<CommandRuntime>,
    prompt: &str,
) -> Vec<Result<StreamItem, RuntimeError>> {
    Arc::clone(runtime)
        .stream_turn(TurnRequest::new(prompt).with_execution_id("t-1"))
        .collect()
        .await
}

fn pieces(items: &[Result<StreamItem, RuntimeError>], kind: DeltaKind) -> Vec<String> {
    items
        .iter()
        .filter_map(|item| match item {
            Ok(StreamItem::Delta(d)) if d.kind == kind => Some(d.content.clone()),
            _ => None,
        })
        .collect()
}

fn done(items: &[Result<StreamItem, RuntimeError>]) -> &TurnOutput {
    match items.last() {
        Some(Ok(StreamItem::Done(output))) => output,
        other => panic!("expected Done last, got {other:?}"),
    }
}

/// Writes an executable script into `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `(state, pgrp)` of a process from /proc, `None` when it does not exist.
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Whether a process is gone: no such pid, or a zombie (dead, waiting to be reaped).
fn is_gone(pid: i32) -> bool {
    proc_stat(pid).is_none_or(|(state, _)| matches!(state, 'Z' | 'X'))
}

/// Live processes whose process group is `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            proc_stat(*pid).is_some_and(|(state, pgrp)| pgrp == pgid && !matches!(state, 'Z' | 'X'))
        })
        .collect()
}

/// Waits up to 5 s for every pid and the whole group to be gone.
async fn assert_all_gone(pids: &[i32], pgid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let alive: Vec<i32> = pids.iter().copied().filter(|p| !is_gone(*p)).collect();
        let members = group_members(pgid);
        if alive.is_empty() && members.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still running: pids {alive:?}, group {pgid} members {members:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn read_pids(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// A script that ignores SIGTERM, forks two children, records every pid (its own last, which
/// is also its process group id), says it started, and waits.
const STUBBORN: &str = r#"trap '' TERM
sleep 30 & echo $! >> "$1"
sleep 30 & echo $! >> "$1"
echo $$ >> "$1"
echo started
wait"#;

#[tokio::test]
async fn echo_streams_its_line_with_the_newline() {
    let echo =
        runtime(json!({ "program": "echo", "args": ["hello", "world"], "prompt_mode": "none" }));
    let items = collect(&echo, "ignored").await;
    assert_eq!(pieces(&items, DeltaKind::Text), ["hello world\n"]);
    let output = done(&items);
    assert_eq!(output.content, "hello world\n");
    assert_eq!(output.metadata["exit_code"], 0);
}

#[tokio::test]
async fn cat_gets_the_prompt_on_stdin_and_streams_it_back_line_by_line() {
    let cat = runtime(json!({ "program": "cat" }));
    let items = collect(&cat, "line one\nline two\nno newline").await;
    assert_eq!(
        pieces(&items, DeltaKind::Text),
        ["line one\n", "line two\n", "no newline"]
    );
    assert_eq!(done(&items).content, "line one\nline two\nno newline");
    // run_turn gives the same result.
    let output = cat.run_turn(TurnRequest::new("abc")).await.unwrap();
    assert_eq!(output.content, "abc");
}

#[tokio::test]
async fn the_prompt_as_an_argument_is_not_interpreted_by_a_shell() {
    let printf = runtime(json!({ "program": "printf", "args": ["[%s]\\n"], "prompt_mode": "arg" }));
    let items = collect(&printf, "$HOME; echo injected").await;
    assert_eq!(done(&items).content, "[$HOME; echo injected]\n");
}

#[tokio::test]
async fn a_shell_script_gets_its_args_env_and_cwd() {
    let dir = TempDir::new().unwrap();
    let cwd = dir.path().canonicalize().unwrap();
    let sh = runtime(json!({
        "program": "echo \"$1|$FOO|$AGENT_RUNTIMES_EXECUTION_ID\"; pwd; echo \"to stderr\" >&2",
        "shell": true,
        "args": ["first"],
        "env": { "FOO": "bar" },
        "cwd": cwd,
        "prompt_mode": "none",
    }));
    let items = collect(&sh, "").await;
    assert_eq!(
        pieces(&items, DeltaKind::Text),
        ["first|bar|t-1\n".to_owned(), format!("{}\n", cwd.display())]
    );
    assert_eq!(pieces(&items, DeltaKind::Thinking), ["to stderr\n"]);
    // The thinking stays out of the content.
    assert!(!done(&items).content.contains("stderr"));
}

#[tokio::test]
async fn stderr_can_be_ignored() {
    let sh = runtime(json!({
        "program": "echo out; echo err >&2", "shell": true, "stderr_as": "ignore",
    }));
    let items = collect(&sh, "").await;
    assert!(pieces(&items, DeltaKind::Thinking).is_empty());
    assert_eq!(done(&items).content, "out\n");
}

#[tokio::test]
async fn a_nonzero_exit_is_an_error_with_the_stderr_tail_and_the_code() {
    let dir = TempDir::new().unwrap();
    let failing = script(
        dir.path(),
        "fail.sh",
        "echo partial\nhead -c 5000 /dev/zero | tr '\\0' x >&2\necho \"the real reason\" >&2\nexit 3",
    );
    let runtime = runtime(json!({ "program": failing, "stderr_as": "ignore" }));
    let items = collect(&runtime, "").await;
    assert_eq!(pieces(&items, DeltaKind::Text), ["partial\n"]);
    let Some(Err(error)) = items.last() else {
        panic!("{items:?}")
    };
    assert_eq!(error.kind, ErrorKind::Internal);
    assert!(!error.retriable);
    assert_eq!(error.metadata["exit_code"], 3);
    assert!(error.message.contains("exited with status 3"), "{error}");
    assert!(error.message.ends_with("the real reason"), "{error}");
    assert!(
        error.message.len() < 2300,
        "only the tail: {}",
        error.message.len()
    );
}

#[tokio::test]
async fn a_missing_program_is_a_config_error() {
    let runtime = runtime(json!({ "program": "/nonexistent/agent-program" }));
    let error = runtime.run_turn(TurnRequest::new("x")).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidConfig);
    assert!(error.message.contains("/nonexistent/agent-program"));
    let problems =
        CommandRuntime::validate_config(&json!({ "program": "/nonexistent/agent-program" }));
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[tokio::test]
async fn validate_config_reports_problems() {
    assert!(CommandRuntime::validate_config(&json!({ "program": "echo" })).is_empty());
    assert!(CommandRuntime::validate_config(&Value::Null)[0].contains("`program`"));
    assert!(CommandRuntime::validate_config(&json!({ "args": [] }))[0].contains("program"));
    assert!(
        CommandRuntime::validate_config(&json!({ "program": "echo", "shel": true }))[0]
            .contains("shel")
    );
    assert!(
        CommandRuntime::validate_config(&json!({ "program": "echo", "prompt_mode": "pipe" }))[0]
            .contains("pipe")
    );
    let problems = CommandRuntime::validate_config(&json!({
        "program": "echo", "cwd": "/nonexistent/dir", "timeout_ms": 0,
    }));
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(CommandRuntime::new(Value::Null).is_err());
}

#[tokio::test]
async fn dropping_the_stream_kills_a_stubborn_program_and_its_children() {
    let dir = TempDir::new().unwrap();
    let pid_file = dir.path().join("pids");
    let stubborn = script(dir.path(), "stubborn.sh", STUBBORN);
    let runtime =
        runtime(json!({ "program": stubborn, "args": [pid_file], "prompt_mode": "none" }));
    let mut stream = Box::pin(Arc::clone(&runtime).stream_turn(TurnRequest::new("")));
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the script started")
        .unwrap()
        .unwrap();
    assert!(matches!(&first, StreamItem::Delta(d) if d.content == "started\n"));
    let pids = read_pids(&pid_file);
    assert_eq!(pids.len(), 3, "{pids:?}");
    let pgid = pids[2];
    assert!(
        pids.iter().all(|p| !is_gone(*p)),
        "all running before the drop"
    );
    assert_eq!(
        group_members(pgid).len(),
        3,
        "the children are in the script's group"
    );
    drop(stream);
    assert_all_gone(&pids, pgid).await;
}

#[tokio::test]
async fn a_timeout_kills_the_whole_group_and_is_a_timeout_error() {
    let dir = TempDir::new().unwrap();
    let pid_file = dir.path().join("pids");
    let stubborn = script(dir.path(), "stubborn.sh", STUBBORN);
    let runtime = runtime(json!({
        "program": stubborn, "args": [pid_file], "prompt_mode": "none", "timeout_ms": 700,
    }));
    let started = Instant::now();
    let error = runtime.run_turn(TurnRequest::new("")).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert_eq!(error.metadata["timeout_ms"], 700);
    let pids = read_pids(&pid_file);
    assert_eq!(pids.len(), 3, "{pids:?}");
    assert_all_gone(&pids, pids[2]).await;
}

#[tokio::test]
async fn what_a_finished_program_leaves_running_is_killed_and_does_not_hold_the_turn() {
    let dir = TempDir::new().unwrap();
    let pid_file = dir.path().join("pids");
    let leaver = script(
        dir.path(),
        "leaver.sh",
        "sleep 30 &\necho $! >> \"$1\"\necho $$ >> \"$1\"\necho done",
    );
    let runtime = runtime(json!({ "program": leaver, "args": [pid_file], "prompt_mode": "none" }));
    let started = Instant::now();
    let output = runtime.run_turn(TurnRequest::new("")).await.unwrap();
    assert_eq!(output.content, "done\n");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the background sleep held the turn for {:?}",
        started.elapsed()
    );
    let pids = read_pids(&pid_file);
    assert_all_gone(&pids, pids[1]).await;
}

#[tokio::test]
async fn a_program_that_ignores_its_stdin_still_finishes() {
    // A large prompt the program never reads must not block the turn.
    let echo = runtime(json!({ "program": "echo", "args": ["ok"] }));
    let output = echo
        .run_turn(TurnRequest::new("x".repeat(1 << 20)))
        .await
        .unwrap();
    assert_eq!(output.content, "ok\n");
}

#[tokio::test]
async fn output_is_streamed_before_the_program_ends() {
    let sh = runtime(json!({ "program": "echo first; sleep 1; echo second", "shell": true }));
    let started = Instant::now();
    let mut stream = Box::pin(Arc::clone(&sh).stream_turn(TurnRequest::new("")));
    let first = stream.next().await.unwrap().unwrap();
    assert!(matches!(&first, StreamItem::Delta(d) if d.content == "first\n"));
    assert!(started.elapsed() < Duration::from_millis(900));
    let rest: Vec<_> = stream.collect().await;
    assert_eq!(done(&rest).content, "first\nsecond\n");
}
