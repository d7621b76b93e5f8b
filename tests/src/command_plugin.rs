//! The `command-runtime` plugin loaded through the loader: a program's output streamed across
//! the boundary, and nothing left running after a cancel by id, a dropped stream or a host
//! timeout (Unix).

#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use runtime_api::{DeltaKind, ErrorKind, StreamItem, TurnRequest};
use runtime_loader::{RuntimeHandle, Runtimes};
use serde_json::json;
use tempfile::TempDir;

use crate::support::{artifacts, install, plugin_dir, registry};

fn command_registry() -> (TempDir, Runtimes) {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().command, "libcommand_runtime");
    let runtimes = registry(&[dir.path()]);
    (dir, runtimes)
}

/// A script that ignores SIGTERM, forks two children, writes every pid to `$1` (its own
/// last: it is also the process group id), prints `started` and waits.
fn stubborn_script(dir: &Path) -> PathBuf {
    let path = dir.join("stubborn.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\ntrap '' TERM\nsleep 30 & echo $! >> \"$1\"\nsleep 30 & echo $! >> \"$1\"\n\
         echo $$ >> \"$1\"\necho started\nwait\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn stubborn(runtimes: &Runtimes, work: &Path) -> (RuntimeHandle, PathBuf) {
    let pids = work.join("pids");
    let script = stubborn_script(work);
    let handle = runtimes
        .new_instance(
            "command",
            &json!({ "program": script, "args": [pids], "prompt_mode": "none" }),
        )
        .unwrap();
    (handle, pids)
}

/// Whether a process is gone (no such pid, or a zombie), and its process group.
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    Some((state, fields.next()?.parse().ok()?))
}

fn alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X'))
}

fn group_alive(pgid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|(s, g)| g == pgid && !matches!(s, 'Z' | 'X')))
        .collect()
}

fn read_pids(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

async fn assert_all_gone(pids_file: &Path) {
    let pids = read_pids(pids_file);
    assert_eq!(pids.len(), 3, "the script recorded its pids: {pids:?}");
    let pgid = pids[2];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        let group = group_alive(pgid);
        if left.is_empty() && group.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left running: {left:?}, group {group:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_started(stream: &mut runtime_loader::TurnStream) {
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the script started")
        .expect("an item")
        .expect("a delta");
    assert!(
        matches!(&first, StreamItem::Delta(d) if d.content == "started\n"),
        "{first:?}"
    );
}

#[tokio::test]
async fn a_program_streams_stdout_as_text_and_stderr_as_thinking() {
    let (_dir, runtimes) = command_registry();
    let handle = runtimes
        .new_instance(
            "command",
            &json!({ "program": "cat; echo note >&2", "shell": true }),
        )
        .unwrap();
    let items: Vec<_> = handle
        .stream_turn(TurnRequest::new("one\ntwo\n"))
        .collect()
        .await;
    let text: Vec<String> = items
        .iter()
        .filter_map(|i| match i {
            Ok(StreamItem::Delta(d)) if d.kind == DeltaKind::Text => Some(d.content.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(text, ["one\n", "two\n"]);
    assert!(items.iter().any(
        |i| matches!(i, Ok(StreamItem::Delta(d)) if d.kind == DeltaKind::Thinking && d.content == "note\n")
    ));
    let Some(Ok(StreamItem::Done(output))) = items.last() else {
        panic!("{items:?}")
    };
    assert_eq!(output.content, "one\ntwo\n");
}

#[tokio::test]
async fn a_failing_program_is_an_error_with_its_exit_code_across_the_boundary() {
    let (_dir, runtimes) = command_registry();
    let handle = runtimes
        .new_instance(
            "command",
            &json!({ "program": "echo why >&2; exit 7", "shell": true }),
        )
        .unwrap();
    let error = handle.run_turn(TurnRequest::new("")).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Internal);
    assert_eq!(error.metadata["exit_code"], 7);
    assert!(error.message.contains("why"));
}

#[tokio::test]
async fn cancel_by_id_kills_the_whole_process_group() {
    let (_dir, runtimes) = command_registry();
    let work = TempDir::new().unwrap();
    let (handle, pids) = stubborn(&runtimes, work.path());
    let mut stream = handle.stream_turn(TurnRequest::new(""));
    let execution_id = stream.execution_id().to_owned();
    wait_started(&mut stream).await;
    assert!(handle.cancel(&execution_id).unwrap());
    let rest: Vec<_> = stream.collect().await;
    assert!(
        matches!(rest.last(), Some(Err(e)) if e.kind == ErrorKind::Cancelled),
        "{rest:?}"
    );
    assert_all_gone(&pids).await;
}

#[tokio::test]
async fn dropping_the_stream_kills_the_whole_process_group() {
    let (_dir, runtimes) = command_registry();
    let work = TempDir::new().unwrap();
    let (handle, pids) = stubborn(&runtimes, work.path());
    let mut stream = handle.stream_turn(TurnRequest::new(""));
    wait_started(&mut stream).await;
    drop(stream);
    assert_all_gone(&pids).await;
}

#[tokio::test]
async fn a_host_timeout_kills_the_whole_process_group() {
    let (_dir, runtimes) = command_registry();
    let work = TempDir::new().unwrap();
    let (handle, pids) = stubborn(&runtimes, work.path());
    let error = handle
        .with_timeout(Duration::from_millis(800))
        .run_turn(TurnRequest::new(""))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert_all_gone(&pids).await;
}
