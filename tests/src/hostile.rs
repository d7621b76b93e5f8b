//! Hostile inputs (issue: hostile inputs and faults): a folder full of bad files, every one
//! refused with its own reason — through the loader API and through the CLI — while the good
//! plugin beside them still loads; and turns that fail in every way at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use runtime_api::{ErrorKind, StreamItem, TurnRequest};
use runtime_loader::{RejectReason, ResolveError};
use serde_json::{Value, json};

use crate::support::{
    artifacts, install, install_patched, install_raw_manifest, plugin_dir, registry,
    write_candidate,
};

/// The name of a reason's kind, as it serialises.
fn kind(reason: &RejectReason) -> String {
    serde_json::to_value(reason).unwrap()["kind"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Writes every kind of bad file into `dir`; returns file → the reason kind it must get.
fn bad_corpus(dir: &Path) -> BTreeMap<PathBuf, &'static str> {
    let echo = std::fs::read(&artifacts().echo).unwrap();
    let mut expected = BTreeMap::new();
    let mut add = |path: PathBuf, kind: &'static str| {
        expected.insert(path, kind);
    };
    add(write_candidate(dir, "empty", b""), "not_a_library");
    for cut in [4, 64, 1024, echo.len() / 2, echo.len() - 1] {
        add(
            write_candidate(dir, &format!("truncated-{cut}"), &echo[..cut]),
            "not_a_library",
        );
    }
    let mut noise = Vec::with_capacity(1 << 16);
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..(1 << 16) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        noise.push(state as u8);
    }
    add(write_candidate(dir, "random", &noise), "not_a_library");
    add(
        write_candidate(dir, "notes", b"# not a library\njust text\n"),
        "not_a_library",
    );
    add(
        install(dir, &artifacts().runtimes, "renamed-executable"),
        "not_a_library",
    );
    let directory = dir.join(format!("folder{}", std::env::consts::DLL_SUFFIX));
    std::fs::create_dir(&directory).unwrap();
    add(directory, "not_a_file");
    #[cfg(unix)]
    {
        let looped = dir.join(format!("loop{}", std::env::consts::DLL_SUFFIX));
        std::os::unix::fs::symlink(&looped, &looped).unwrap();
        add(looped, "unreadable");
        let dangling = dir.join(format!("dangling{}", std::env::consts::DLL_SUFFIX));
        std::os::unix::fs::symlink(dir.join("nowhere.so"), &dangling).unwrap();
        add(dangling, "unreadable");
    }
    add(
        install(dir, &artifacts().no_manifest, "no-manifest"),
        "no_manifest",
    );
    let broken = runtime_api::manifest::embed_json(b"{\"api_version\": [").unwrap();
    add(
        install_raw_manifest(dir, &artifacts().echo, "malformed", &broken),
        "malformed_manifest",
    );
    let mut oversized = runtime_api::manifest::MAGIC.to_vec();
    oversized.extend_from_slice(&(1u32 << 30).to_le_bytes());
    oversized.push(b'{');
    add(
        install_raw_manifest(dir, &artifacts().echo, "oversized", &oversized),
        "malformed_manifest",
    );
    add(
        install_patched(dir, &artifacts().echo, "invalid-id", |m| {
            m["runtimes"][0]["id"] = json!("../evil")
        }),
        "invalid_name",
    );
    add(
        install_patched(dir, &artifacts().echo, "duplicate-id", |m| {
            let runtime = m["runtimes"][0].clone();
            m["runtimes"] = json!([runtime.clone(), runtime]);
        }),
        "duplicate_name",
    );
    add(
        install_patched(dir, &artifacts().echo, "contract-newer", |m| {
            m["contract"] = json!(runtime_api::version::CONTRACT_VERSION + 1)
        }),
        "contract_mismatch",
    );
    add(
        install_patched(dir, &artifacts().echo, "contract-missing", |m| {
            m.as_object_mut().unwrap().remove("contract");
        }),
        "contract_mismatch",
    );
    add(
        install_patched(dir, &artifacts().echo, "root-symbol", |m| {
            m["root_symbol"] = json!("dlopen")
        }),
        "malformed_manifest",
    );
    expected
}

#[test]
fn every_bad_file_is_refused_with_its_reason_and_the_good_plugin_loads() {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().echo, "a-good-echo");
    let expected = bad_corpus(dir.path());
    let runtimes = registry(&[dir.path()]);
    let report = runtimes.report();
    for (file, want) in &expected {
        let rejection = report
            .rejected
            .iter()
            .find(|r| &r.path == file)
            .unwrap_or_else(|| panic!("{} was not rejected", file.display()));
        assert_eq!(
            kind(&rejection.reason),
            *want,
            "{}: {}",
            file.display(),
            rejection.reason
        );
    }
    assert_eq!(report.rejected.len(), expected.len(), "{report}");
    assert!(
        runtimes.resolve("echo").is_ok(),
        "the good plugin still loads"
    );
}

/// Root reads a file whatever its mode, so the file is made unreadable for the unprivileged
/// user of `scripts/test-user.sh`, who owns the folder and lists it with `runtimes list --all`.
#[cfg(unix)]
#[test]
#[ignore = "needs root and the unprivileged user of scripts/test-user.sh (root can read a mode-000 file); CI runs it"]
fn an_unreadable_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt as _;
    let (uid, gid) = crate::support::other_user();
    let dir = plugin_dir();
    let home = plugin_dir();
    let file = install(dir.path(), &artifacts().echo, "locked");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).unwrap();
    for path in [dir.path(), file.as_path(), home.path()] {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
    let as_user = |program: &Path, args: &[&str]| {
        Command::new(program)
            .args(args)
            .env_remove("AGENT_RUNTIMES_PATH")
            .env("XDG_DATA_HOME", home.path())
            .env("HOME", home.path())
            .uid(uid)
            .gid(gid)
            .output()
            .unwrap()
    };
    let path = file.display().to_string();
    let read = as_user(Path::new("cat"), &[&path]);
    assert!(
        !read.status.success(),
        "the user can read the mode-000 file"
    );

    let folder = dir.path().display().to_string();
    let listed = as_user(
        &artifacts().runtimes,
        &["--plugin-dir", &folder, "list", "--all", "--json"],
    );
    assert_eq!(
        listed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let rejected = listed["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{listed}");
    assert_eq!(rejected[0]["path"], json!(file), "{listed}");
    assert_eq!(rejected[0]["reason"]["kind"], "unreadable", "{listed}");
}

#[test]
fn the_cli_refuses_every_bad_file_with_the_same_reasons() {
    let dir = plugin_dir();
    let home = plugin_dir();
    install(dir.path(), &artifacts().echo, "a-good-echo");
    let expected = bad_corpus(dir.path());
    let cli = |args: &[&str]| {
        Command::new(&artifacts().runtimes)
            .args(args)
            .env_remove("AGENT_RUNTIMES_PATH")
            .env("XDG_DATA_HOME", home.path())
            .output()
            .unwrap()
    };
    let folder = dir.path().display().to_string();
    let listed = cli(&["--plugin-dir", &folder, "list", "--all", "--json"]);
    assert_eq!(listed.status.code(), Some(0));
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["runtimes"][0]["id"], "echo");
    // `check` takes every file at once and gives a verdict per file, in order.
    let paths: Vec<String> = expected.keys().map(|f| f.display().to_string()).collect();
    let mut args = vec!["check"];
    args.extend(paths.iter().map(String::as_str));
    args.push("--json");
    let checked = cli(&args);
    assert_eq!(checked.status.code(), Some(3));
    let checked: Value = serde_json::from_slice(&checked.stdout).unwrap();
    assert_eq!(
        checked.as_array().unwrap().len(),
        expected.len(),
        "{checked}"
    );
    for ((file, want), verdict) in expected.iter().zip(checked.as_array().unwrap()) {
        assert_eq!(verdict["path"], json!(file), "{checked}");
        assert_eq!(verdict["ok"], false, "check {}", file.display());
        assert_eq!(
            verdict["rejected"]["kind"],
            *want,
            "check {}",
            file.display()
        );
    }
    for (file, want) in &expected {
        let rejected = listed["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["path"] == json!(file))
            .unwrap_or_else(|| panic!("{} missing from list --all", file.display()));
        assert_eq!(rejected["reason"]["kind"], *want, "{}", file.display());
        let path = file.display().to_string();
        let target = home.path().join("install-target");
        let installed = cli(&["install", &path, "--dir", &target.display().to_string()]);
        assert_eq!(installed.status.code(), Some(3), "install {path}");
        assert!(!target.exists(), "install {path} wrote something");
    }
}

#[test]
#[ignore = "builds the echo plugin against a modified runtime-api in a scratch workspace (minutes); CI runs it with --ignored"]
fn a_plugin_built_against_a_modified_interface_is_refused_with_the_layout_error() {
    let dir = plugin_dir();
    install(
        dir.path(),
        crate::support::echo_against_modified_interface(),
        "libmodified",
    );
    install(dir.path(), &artifacts().fixture, "libfixture");
    let runtimes = registry(&[dir.path()]);
    assert!(
        runtimes.is_registered("echo"),
        "its manifest alone is valid"
    );
    match runtimes.resolve("echo") {
        Err(ResolveError::Rejected {
            reason: RejectReason::AbiMismatch { summary },
            ..
        }) => {
            assert!(summary.contains("Error:"), "{summary}");
            assert!(summary.contains("field"), "names what differs: {summary}");
            assert!(summary.len() < 2000, "only the actionable lines: {summary}");
        }
        other => panic!("expected an ABI mismatch, got {other:?}"),
    }
    assert!(
        runtimes.resolve("fixture").is_ok(),
        "the good plugin still loads"
    );
}

#[test]
fn a_plugin_built_against_a_forked_interface_crate_is_refused_by_abi_stable() {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().abi_mismatch, "libmismatch");
    install(dir.path(), &artifacts().echo, "libecho");
    let runtimes = registry(&[dir.path()]);
    assert!(
        runtimes.is_registered("mismatch"),
        "its manifest alone is valid"
    );
    match runtimes.resolve("mismatch") {
        Err(ResolveError::Rejected {
            reason: RejectReason::AbiMismatch { summary },
            ..
        }) => {
            assert!(summary.contains("Error:"), "{summary}");
            assert!(summary.len() < 2000, "only the actionable lines: {summary}");
        }
        other => panic!("expected an ABI mismatch, got {other:?}"),
    }
    assert!(
        runtimes.resolve("echo").is_ok(),
        "the good plugin still loads"
    );
}

/// How a turn in the mixed load is meant to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Fate {
    Healthy,
    HealthyStream,
    Panics,
    PanicsInStream,
    Fails,
    NeverEnds,
    CancelledById,
    Abandoned,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_turns_mixing_faults_with_healthy_ones() {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().echo, "libecho");
    install(dir.path(), &artifacts().fixture, "libfixture");
    let runtimes = registry(&[dir.path()]);
    let config = |c: Value| runtimes.new_instance("echo", &c).unwrap();
    let faulty = |c: Value| runtimes.new_instance("fixture-faults", &c).unwrap();
    let healthy = config(json!({"delay_ms": 5}));
    let panicking = faulty(json!({"panic_in": "run_turn"}));
    let panicking_stream = faulty(json!({"panic_in": "stream"}));
    let failing = faulty(json!({"fail_with": "unavailable"}));
    let endless = config(json!({"delay_ms": 600_000})).with_timeout(Duration::from_millis(300));
    let cancellable = config(json!({"delay_ms": 600_000}));
    let fates = [
        Fate::Healthy,
        Fate::HealthyStream,
        Fate::Panics,
        Fate::PanicsInStream,
        Fate::Fails,
        Fate::NeverEnds,
        Fate::CancelledById,
        Fate::Abandoned,
    ];
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let fate = fates[i % fates.len()];
        let prompt = format!("turn {i} says hello");
        let request = TurnRequest::new(prompt.clone()).with_execution_id(format!("mixed-{i}"));
        let (healthy, panicking, panicking_stream, failing, endless, cancellable) = (
            healthy.clone(),
            panicking.clone(),
            panicking_stream.clone(),
            failing.clone(),
            endless.clone(),
            cancellable.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let outcome: Result<String, ErrorKind> = match fate {
                Fate::Healthy => healthy
                    .run_turn(request)
                    .await
                    .map(|o| o.content)
                    .map_err(|e| e.kind),
                Fate::HealthyStream => {
                    let mut text = String::new();
                    let mut stream = healthy.stream_turn(request);
                    let mut last = Err(ErrorKind::Internal);
                    while let Some(item) = stream.next().await {
                        match item {
                            Ok(StreamItem::Delta(d)) => text.push_str(&d.content),
                            Ok(StreamItem::Done(o)) => last = Ok(o.content),
                            Ok(_) => {}
                            Err(e) => last = Err(e.kind),
                        }
                    }
                    last.map(|content| {
                        assert_eq!(content, text);
                        content
                    })
                }
                Fate::Panics => panicking
                    .run_turn(request)
                    .await
                    .map(|o| o.content)
                    .map_err(|e| e.kind),
                Fate::PanicsInStream => {
                    let items: Vec<_> = panicking_stream.stream_turn(request).collect().await;
                    items
                        .into_iter()
                        .last()
                        .unwrap()
                        .map(|_| String::new())
                        .map_err(|e| e.kind)
                }
                Fate::Fails => failing
                    .run_turn(request)
                    .await
                    .map(|o| o.content)
                    .map_err(|e| e.kind),
                Fate::NeverEnds => endless
                    .run_turn(request)
                    .await
                    .map(|o| o.content)
                    .map_err(|e| e.kind),
                Fate::CancelledById => {
                    let id = request.execution_id.clone();
                    let mut turn = Box::pin(cancellable.run_turn(request));
                    // Polled once, the turn is running (in its endless delay, in the plugin).
                    assert!(futures::poll!(turn.as_mut()).is_pending());
                    assert!(cancellable.cancel(&id).unwrap(), "registered while running");
                    turn.await.map(|o| o.content).map_err(|e| e.kind)
                }
                Fate::Abandoned => {
                    let mut stream = healthy.stream_turn(request);
                    let first = stream.next().await.unwrap();
                    drop(stream);
                    first.map(|_| "abandoned".to_owned()).map_err(|e| e.kind)
                }
            };
            (fate, prompt, outcome)
        }));
    }
    let mut tally: BTreeMap<Fate, usize> = BTreeMap::new();
    for task in tasks {
        let (fate, prompt, outcome) = task.await.expect("no task panicked");
        let expected = match fate {
            Fate::Healthy | Fate::HealthyStream => Ok(prompt),
            Fate::Panics | Fate::PanicsInStream => Err(ErrorKind::Panicked),
            Fate::Fails => Err(ErrorKind::Unavailable),
            Fate::NeverEnds => Err(ErrorKind::Timeout),
            Fate::CancelledById => Err(ErrorKind::Cancelled),
            Fate::Abandoned => Ok("abandoned".to_owned()),
        };
        assert_eq!(outcome, expected, "{fate:?}");
        *tally.entry(fate).or_default() += 1;
    }
    assert_eq!(tally.values().sum::<usize>(), 1000);
    // Every turn released its slot in the plugin.
    for i in 0..1000 {
        assert!(!healthy.cancel(&format!("mixed-{i}")).unwrap());
        assert!(!cancellable.cancel(&format!("mixed-{i}")).unwrap());
    }
    eprintln!("mixed turns: {tally:?}, all survived with the expected outcome");
}
