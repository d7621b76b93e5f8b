//! Plugin-file trust from discovery to dlopen (issue 11): the file loaded is the file that was
//! checked; a file swapped, modified or removed after discovery is refused and none of its code
//! runs; pins hold at load time; every folder above a plugin folder is checked (StrictModes);
//! only regular files are read (FIFOs, devices); nothing from a file reaches the terminal raw;
//! a refused runtime says why; discovery, `list`, `check` and `install` give one verdict.
//!
//! Longer than 700 lines on purpose: one test per way a file can be swapped, changed or
//! unsafe, each a whole scenario.
//!
//! The fixture plugin's ELF constructor writes `<library>.loaded` when the dynamic loader maps
//! it: its absence proves that no code of a file ran. The tests that need another user (a
//! folder owned by someone else, a folder swapped by someone else) run as root and use the
//! unprivileged user made by `scripts/test-user.sh`.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use runtime_loader::{DirStatus, LoaderOptions, RejectReason, ResolveError, Runtimes, SearchPath};
use serde_json::{Value, json};

use crate::support::{artifacts, install, install_patched, other_user, plugin_dir, registry};

/// The longest any of these operations may take; they take milliseconds. Only a hang (a
/// blocking open or read of a FIFO) reaches it, and the test then fails instead of hanging.
const HANG: Duration = Duration::from_secs(60);

const SUFFIX: &str = std::env::consts::DLL_SUFFIX;

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The marker the fixture's constructor writes when `library` is mapped.
fn marker(library: &Path) -> PathBuf {
    PathBuf::from(format!("{}.loaded", library.display()))
}

/// The echo library's manifest, as JSON.
fn echo_manifest() -> Value {
    let manifest = runtime_loader::inspect::read_manifest(&artifacts().echo).unwrap();
    serde_json::to_value(manifest).unwrap()
}

/// The fixture library (whose constructor writes a marker) carrying echo's manifest: the
/// same manifest, other code. Written in `staging` as `<stem>.so`.
fn impostor(staging: &Path, stem: &str) -> PathBuf {
    let echo = echo_manifest();
    install_patched(staging, &artifacts().fixture, stem, |m| {
        // The root-module symbol is the file's own, or the load would stop at the symbol.
        let root_symbol = m["root_symbol"].clone();
        *m = echo;
        m["root_symbol"] = root_symbol;
    })
}

/// Replaces `target` by `replacement` with a rename, as an attacker (or an installer) would.
fn swap(replacement: &Path, target: &Path) {
    std::fs::rename(replacement, target).unwrap();
}

fn rejected_reason(error: ResolveError) -> RejectReason {
    match error {
        ResolveError::Rejected { reason, .. } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Runs `f` on another thread and fails the test if it does not finish within [`HANG`].
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(HANG)
        .unwrap_or_else(|_| panic!("{what} did not finish within {HANG:?}: it blocked"))
}

/// Runs `runtimes` with a private per-user folder, failing the test (and killing the
/// process) if it does not finish within [`HANG`].
fn cli(home: &Path, args: &[&str]) -> Output {
    let child = Command::new(&artifacts().runtimes)
        .args(args)
        .env_remove("AGENT_RUNTIMES_PATH")
        .env_remove("AGENT_RUNTIMES_ALLOW_INSECURE")
        .env("XDG_DATA_HOME", home.join("data"))
        .env("HOME", home)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runtimes runs");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(HANG) {
        Ok(output) => output.expect("runtimes ran"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("`runtimes {}` hung", args.join(" "));
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

// ---------------------------------------------------------------------------------------
// The checked file is the loaded file.

#[test]
fn a_file_swapped_after_discovery_is_refused_and_none_of_its_code_runs() {
    let dir = plugin_dir();
    let staging = plugin_dir();
    let lib = install(dir.path(), &artifacts().echo, "libecho");
    let runtimes = registry(&[dir.path()]);
    assert!(runtimes.is_registered("echo"));
    // Same manifest, other code, swapped in under the same name after discovery.
    swap(&impostor(staging.path(), "libecho"), &lib);
    let error = runtimes.resolve("echo").unwrap_err();
    let text = error.to_string();
    let reason = rejected_reason(error);
    let RejectReason::Changed { detail } = &reason else {
        panic!("expected `changed`, got {reason:?}");
    };
    assert!(detail.contains("replaced after discovery"), "{detail}");
    assert!(text.contains("changed after it was checked"), "{text}");
    assert!(!marker(&lib).exists(), "the swapped-in file's code ran");
    // The alias says the same, and nothing is retried behind the caller's back.
    assert!(matches!(
        runtimes.resolve("parrot"),
        Err(ResolveError::Rejected {
            reason: RejectReason::Changed { .. },
            ..
        })
    ));
    assert!(!marker(&lib).exists());

    // Control: a new discovery checks the new file, and loading it runs its constructor (so
    // the marker works through the open file), then the manifest cross-check refuses it.
    let fresh = registry(&[dir.path()]);
    let reason = rejected_reason(fresh.resolve("echo").unwrap_err());
    assert!(
        matches!(reason, RejectReason::ManifestMismatch { .. }),
        "{reason:?}"
    );
    assert!(marker(&lib).exists(), "the control load did not run");
}

#[test]
fn a_pinned_file_swapped_after_discovery_is_refused() {
    for eager in [false, true] {
        let dir = plugin_dir();
        let staging = plugin_dir();
        let lib = install(dir.path(), &artifacts().echo, "libecho");
        let hash = runtime_loader::security::sha256_file(&lib).unwrap();
        std::fs::write(
            dir.path().join("plugins.lock"),
            format!("{hash}  libecho{SUFFIX}\n"),
        )
        .unwrap();
        let runtimes = Runtimes::with_options(LoaderOptions::STRICT.with_eager_pins(eager));
        runtimes.discover(&SearchPath::empty().with_dir(dir.path()));
        assert!(runtimes.is_registered("echo"), "eager pins: {eager}");
        swap(&impostor(staging.path(), "libecho"), &lib);
        let reason = rejected_reason(runtimes.resolve("echo").unwrap_err());
        assert!(
            matches!(reason, RejectReason::Changed { .. }),
            "eager pins {eager}: {reason:?}"
        );
        assert!(!marker(&lib).exists(), "the swapped-in file's code ran");
    }
}

#[test]
fn a_file_modified_in_place_or_removed_after_discovery_is_refused() {
    use std::io::Write as _;
    let dir = plugin_dir();
    let lib = install(dir.path(), &artifacts().fixture, "libfixture");
    let runtimes = registry(&[dir.path()]);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&lib)
        .unwrap()
        .write_all(b"appended after discovery")
        .unwrap();
    let RejectReason::Changed { detail } =
        rejected_reason(runtimes.resolve("fixture").unwrap_err())
    else {
        panic!("expected `changed`");
    };
    assert!(detail.contains("modified"), "{detail}");
    assert!(!marker(&lib).exists(), "the modified file's code ran");

    let dir = plugin_dir();
    let lib = install(dir.path(), &artifacts().fixture, "libfixture");
    let runtimes = registry(&[dir.path()]);
    std::fs::remove_file(&lib).unwrap();
    let RejectReason::Changed { detail } = rejected_reason(runtimes.resolve("fx").unwrap_err())
    else {
        panic!("expected `changed`");
    };
    assert!(detail.contains("removed"), "{detail}");
    assert!(!marker(&lib).exists());
}

#[tokio::test]
async fn the_loaded_file_is_the_checked_one_and_keeps_working() {
    let dir = plugin_dir();
    let lib = install(dir.path(), &artifacts().fixture, "libfixture");
    let runtimes = registry(&[dir.path()]);
    let handle = runtimes.resolve("fixture").unwrap();
    assert!(
        marker(&lib).exists(),
        "the first resolve did not load the file"
    );
    // Once loaded, the file on disk no longer matters: the code is mapped.
    std::fs::remove_file(&lib).unwrap();
    let output = handle
        .run_turn(runtime_api::TurnRequest::new("still here"))
        .await
        .unwrap();
    assert_eq!(output.content, "fixture:still here");
    assert!(runtimes.resolve("fixture-second").is_ok());
}

// ---------------------------------------------------------------------------------------
// Pins hold at load time.

#[test]
fn a_pin_is_verified_on_the_loaded_file_before_any_of_its_code_runs() {
    let dir = plugin_dir();
    let lib = install(dir.path(), &artifacts().fixture, "libfixture");
    std::fs::write(
        dir.path().join("plugins.lock"),
        format!("{}  libfixture{SUFFIX}\n", "0".repeat(64)),
    )
    .unwrap();
    // Discovery does not hash (listing many pinned libraries stays cheap)...
    let runtimes = registry(&[dir.path()]);
    assert!(runtimes.is_registered("fixture"));
    // ...the load does, from the open file, before the dynamic loader sees it.
    let reason = rejected_reason(runtimes.resolve("fixture").unwrap_err());
    let RejectReason::HashMismatch {
        expected, found, ..
    } = &reason
    else {
        panic!("expected `hash_mismatch`, got {reason:?}");
    };
    assert_eq!(*expected, "0".repeat(64));
    assert_eq!(*found, runtime_loader::security::sha256_file(&lib).unwrap());
    assert!(!marker(&lib).exists(), "a library failing its pin ran");

    // With eager pins (what `runtimes list --all` and `check` do) discovery refuses it, and
    // the ids it declares say why.
    let eager = Runtimes::with_options(LoaderOptions::STRICT.with_eager_pins(true));
    let report = eager.discover(&SearchPath::empty().with_dir(dir.path()));
    assert_eq!(report.rejected.len(), 1, "{report}");
    let declared: Vec<String> = runtime_loader::inspect::read_manifest(&lib)
        .unwrap()
        .runtimes
        .iter()
        .flat_map(|r| std::iter::once(r.id.clone()).chain(r.aliases.iter().cloned()))
        .collect();
    assert!(declared.contains(&"fx".to_owned()));
    assert_eq!(report.rejected[0].runtime_ids, declared);
    assert!(matches!(
        eager.resolve("fx"),
        Err(ResolveError::Rejected {
            reason: RejectReason::HashMismatch { .. },
            ..
        })
    ));
    assert!(!marker(&lib).exists());
}

#[test]
fn a_library_missing_from_the_pin_file_is_refused_with_its_hash() {
    let dir = plugin_dir();
    let lib = install(dir.path(), &artifacts().echo, "libecho");
    std::fs::write(dir.path().join("plugins.lock"), "# nothing pinned yet\n").unwrap();
    let runtimes = registry(&[dir.path()]);
    let error = runtimes.resolve("echo").unwrap_err();
    let RejectReason::HashMismatch {
        expected, found, ..
    } = rejected_reason(error)
    else {
        panic!("expected `hash_mismatch`");
    };
    assert_eq!(expected, "(not pinned)");
    assert_eq!(found, runtime_loader::security::sha256_file(&lib).unwrap());
}

// ---------------------------------------------------------------------------------------
// Every folder above the plugin folder (StrictModes).

/// `parent/plugins` with echo in it; `parent` gets `parent_mode`.
fn nested(parent_mode: u32) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let parent = plugin_dir();
    let plugins = parent.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    set_mode(&plugins, 0o755);
    let lib = install(&plugins, &artifacts().echo, "libecho");
    set_mode(parent.path(), parent_mode);
    (parent, plugins, lib)
}

#[test]
fn a_parent_folder_writable_by_others_without_the_sticky_bit_refuses_the_folder() {
    let (parent, plugins, lib) = nested(0o777);
    let runtimes = registry(&[&plugins]);
    let DirStatus::Insecure { detail } = &runtimes.report().dirs[0].status else {
        panic!("{:?}", runtimes.report());
    };
    let named = parent.path().canonicalize().unwrap().display().to_string();
    assert!(
        detail.contains(&format!(
            "the folder {named} is writable by others without the sticky bit"
        )),
        "{detail}"
    );
    // Asking for a runtime of the refused folder says why, and what the way out is.
    let error = runtimes.resolve("echo").unwrap_err();
    let message = error.to_string();
    assert!(message.starts_with("`echo` is provided by "), "{message}");
    assert!(message.contains(&lib.file_name().unwrap().to_string_lossy().into_owned()));
    assert!(message.contains("which was refused"), "{message}");
    assert!(message.contains("--allow-insecure"), "{message}");
    assert!(
        message.contains("AGENT_RUNTIMES_ALLOW_INSECURE"),
        "{message}"
    );
    assert!(matches!(
        rejected_reason(error),
        RejectReason::Insecure { .. }
    ));
    // Group-writable is refused too.
    set_mode(parent.path(), 0o775);
    let runtimes = registry(&[&plugins]);
    assert!(matches!(
        &runtimes.report().dirs[0].status,
        DirStatus::Insecure { detail } if detail.contains("writable by its group")
    ));
}

#[test]
fn a_sticky_world_writable_parent_like_tmp_is_fine() {
    let (_parent, plugins, _lib) = nested(0o1777);
    let runtimes = registry(&[&plugins]);
    assert!(runtimes.is_registered("echo"), "{}", runtimes.report());
    assert!(runtimes.resolve("echo").is_ok());
}

#[test]
#[ignore = "needs root and the second user of scripts/test-user.sh; CI runs it"]
fn a_plugin_folder_or_a_folder_above_it_owned_by_another_user_is_refused() {
    let (uid, gid) = other_user();
    let (_parent, plugins, _lib) = nested(0o755);
    chown(&plugins, uid, gid);
    let runtimes = registry(&[&plugins]);
    let DirStatus::Insecure { detail } = &runtimes.report().dirs[0].status else {
        panic!("{:?}", runtimes.report());
    };
    assert!(
        detail.contains(&format!(
            "the folder {} is owned by user {uid}",
            plugins.canonicalize().unwrap().display()
        )),
        "{detail}"
    );
    assert!(matches!(
        runtimes.resolve("echo"),
        Err(ResolveError::Rejected {
            reason: RejectReason::Insecure { .. },
            ..
        })
    ));

    let (parent, plugins, _lib) = nested(0o755);
    chown(parent.path(), uid, gid);
    let runtimes = registry(&[&plugins]);
    let DirStatus::Insecure { detail } = &runtimes.report().dirs[0].status else {
        panic!("{:?}", runtimes.report());
    };
    assert!(
        detail.contains(&format!(
            "the folder {} is owned by user {uid}",
            parent.path().canonicalize().unwrap().display()
        )),
        "{detail}"
    );
    // A sticky world-writable folder is fine only because what is below it is checked: a
    // folder in it owned by another user is refused.
    let (parent, plugins, _lib) = nested(0o1777);
    chown(&plugins, uid, gid);
    let runtimes = registry(&[&plugins]);
    assert!(!runtimes.is_registered("echo"), "{:?}", parent.path());
}

#[test]
#[ignore = "needs root and the second user of scripts/test-user.sh; CI runs it"]
fn another_user_swapping_the_folder_after_discovery_runs_nothing() {
    let (uid, gid) = other_user();
    // The case: a root host, a plugin folder (0755, root's) in a parent writable by
    // everyone without the sticky bit.
    let (parent, plugins, lib) = nested(0o777);
    assert!(
        !registry(&[&plugins]).is_registered("echo"),
        "the folder must be refused"
    );
    // Even when insecure folders are allowed, a folder swapped after discovery runs nothing.
    let runtimes = Runtimes::with_options(LoaderOptions::STRICT.with_allow_insecure(true));
    runtimes.discover(&SearchPath::empty().with_dir(&plugins));
    assert!(runtimes.is_registered("echo"));
    // The other user moves the folder away and puts their own in its place, with a library
    // carrying echo's manifest and their own code.
    let staging = plugin_dir();
    set_mode(staging.path(), 0o755);
    let theirs = impostor(staging.path(), "libecho");
    set_mode(&theirs, 0o644);
    let script = format!(
        "set -e; mv '{p}' '{p}.old'; mkdir '{p}'; cp '{t}' '{p}/libecho{SUFFIX}'",
        p = plugins.display(),
        t = theirs.display()
    );
    let status = Command::new("sh")
        .args(["-c", &script])
        .uid(uid)
        .gid(gid)
        .status()
        .unwrap();
    assert!(status.success(), "the other user could not swap the folder");
    let swapped_owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&plugins).unwrap());
    assert_eq!(swapped_owner, uid);
    let reason = rejected_reason(runtimes.resolve("echo").unwrap_err());
    assert!(matches!(reason, RejectReason::Changed { .. }), "{reason:?}");
    assert!(!marker(&lib).exists(), "the other user's code ran");
    assert!(parent.path().join("plugins.old").exists());

    // Under a sticky parent the same swap is impossible: the kernel refuses the rename.
    let (_parent, plugins, _lib) = nested(0o1777);
    let script = format!("mv '{p}' '{p}.old'", p = plugins.display());
    let status = Command::new("sh")
        .args(["-c", &script])
        .uid(uid)
        .gid(gid)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        !status.success(),
        "a sticky folder let another user rename root's folder"
    );
}

// ---------------------------------------------------------------------------------------
// Only regular files are read.

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

#[test]
fn fifos_and_devices_are_refused_by_type_without_blocking() {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().echo, "libecho");
    let fifo = dir.path().join(format!("libfifo{SUFFIX}"));
    mkfifo(&fifo);
    let zero = dir.path().join(format!("libzero{SUFFIX}"));
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let folder = dir.path().to_owned();
    let runtimes = bounded("discovery", move || registry(&[&folder]));
    assert!(runtimes.is_registered("echo"));
    let kind_of = |file: &Path| {
        runtimes
            .report()
            .rejected
            .into_iter()
            .find(|r| r.path == file)
            .unwrap()
            .reason
    };
    assert_eq!(
        kind_of(&fifo),
        RejectReason::NotAFile {
            file_type: "a FIFO".into()
        }
    );
    assert_eq!(
        kind_of(&zero),
        RejectReason::NotAFile {
            file_type: "a character device".into()
        }
    );
    // `check` and `install` refuse them the same way, promptly.
    let home = plugin_dir();
    for file in [&fifo, &zero, Path::new("/dev/zero")] {
        let path = file.display().to_string();
        let checked = cli(home.path(), &["check", &path, "--json"]);
        assert_eq!(checked.status.code(), Some(3), "{}", text(&checked.stderr));
        let checked: Value = serde_json::from_slice(&checked.stdout).unwrap();
        assert_eq!(checked[0]["rejected"]["kind"], "not_a_file", "{path}");
        assert!(checked[0].get("sha256").is_none(), "{path} was read");
        let target = home.path().join("target");
        let installed = cli(
            home.path(),
            &["install", &path, "--dir", &target.display().to_string()],
        );
        assert_eq!(installed.status.code(), Some(3), "{path}");
        assert!(text(&installed.stderr).contains("not a regular file"));
        assert!(!target.exists());
    }
}

#[test]
fn a_pin_file_that_is_a_fifo_a_device_or_too_large_refuses_its_folder_promptly() {
    let home = plugin_dir();
    type Make<'a> = &'a dyn Fn(&Path);
    let cases: [(&str, Make<'_>); 3] = [
        ("a FIFO", &|lock: &Path| mkfifo(lock)),
        ("a character device", &|lock: &Path| {
            std::os::unix::fs::symlink("/dev/zero", lock).unwrap()
        }),
        ("more than", &|lock: &Path| {
            std::fs::write(lock, vec![b'#'; 2 * 1024 * 1024]).unwrap()
        }),
    ];
    for (expected, make) in cases {
        let dir = plugin_dir();
        install(dir.path(), &artifacts().echo, "libecho");
        let lock = dir.path().join("plugins.lock");
        make(&lock);
        let folder = dir.path().to_owned();
        let runtimes = bounded("discovery", move || registry(&[&folder]));
        assert!(!runtimes.is_registered("echo"), "{expected}");
        let reason = rejected_reason(runtimes.resolve("echo").unwrap_err());
        let RejectReason::PinFile { lock_file, detail } = &reason else {
            panic!("{expected}: {reason:?}");
        };
        assert_eq!(*lock_file, lock);
        assert!(detail.contains(expected), "{detail}");
        let listed = cli(
            home.path(),
            &[
                "--plugin-dir",
                &dir.path().display().to_string(),
                "list",
                "--all",
                "--json",
            ],
        );
        assert_eq!(listed.status.code(), Some(0));
        let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
        assert_eq!(listed["rejected"][0]["reason"]["kind"], "pin_file");
    }
}

// ---------------------------------------------------------------------------------------
// One admission pipeline: discovery, `list --all`, `check` and `install` agree.

#[test]
fn discovery_list_check_and_install_give_the_same_verdict() {
    // One plugin folder holding a good file, a file writable by others, a file whose pin
    // differs and a file that is not pinned; and a second folder under a parent writable by
    // everyone.
    let dir = plugin_dir();
    let good = install(dir.path(), &artifacts().echo, "a-good");
    let open = install_patched(dir.path(), &artifacts().fixture, "b-open", |m| {
        m["runtimes"][0]["id"] = json!("open");
        m["runtimes"][0]["aliases"] = json!([]);
        m["runtimes"][1]["id"] = json!("open-second");
    });
    set_mode(&open, 0o666);
    let wrong_pin = install_patched(dir.path(), &artifacts().fixture, "c-wrong-pin", |m| {
        m["runtimes"][0]["id"] = json!("wrong");
        m["runtimes"][0]["aliases"] = json!([]);
        m["runtimes"][1]["id"] = json!("wrong-second");
    });
    let unpinned = install_patched(dir.path(), &artifacts().fixture, "d-unpinned", |m| {
        m["runtimes"][0]["id"] = json!("unpinned");
        m["runtimes"][0]["aliases"] = json!([]);
        m["runtimes"][1]["id"] = json!("unpinned-second");
    });
    let hash = |p: &Path| runtime_loader::security::sha256_file(p).unwrap();
    std::fs::write(
        dir.path().join("plugins.lock"),
        format!(
            "{}  a-good{SUFFIX}\n{}  b-open{SUFFIX}\n{}  c-wrong-pin{SUFFIX}\n",
            hash(&good),
            hash(&open),
            "f".repeat(64)
        ),
    )
    .unwrap();
    let (_parent, exposed_dir, exposed) = nested(0o777);
    let expected = [
        (&good, None),
        (&open, Some("insecure")),
        (&wrong_pin, Some("hash_mismatch")),
        (&unpinned, Some("hash_mismatch")),
        (&exposed, Some("insecure")),
    ];

    // The library, with eager pins.
    let runtimes = Runtimes::with_options(LoaderOptions::STRICT.with_eager_pins(true));
    let report = runtimes.discover(
        &SearchPath::empty()
            .with_dir(dir.path())
            .with_dir(&exposed_dir),
    );
    let home = plugin_dir();
    let listed = cli(
        home.path(),
        &[
            "--plugin-dir",
            &dir.path().display().to_string(),
            "--plugin-dir",
            &exposed_dir.display().to_string(),
            "list",
            "--all",
            "--json",
        ],
    );
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    for (file, want) in expected {
        let path = file.display().to_string();
        let from_library = report
            .rejected
            .iter()
            .find(|r| r.path == *file)
            .map(|r| serde_json::to_value(&r.reason).unwrap());
        let from_list = listed["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["path"] == json!(file))
            .map(|r| r["reason"].clone());
        let checked = cli(home.path(), &["check", &path, "--json"]);
        let checked: Value = serde_json::from_slice(&checked.stdout).unwrap();
        let from_check = checked[0].get("rejected").cloned();
        assert_eq!(
            from_library.as_ref().map(|r| r["kind"].clone()),
            want.map(|w| json!(w)),
            "discovery of {path}"
        );
        // The same reason, field for field, from all three.
        assert_eq!(from_list, from_library, "list --all of {path}");
        assert_eq!(from_check, from_library, "check of {path}");
        // A refused file that could be read still names what it declares.
        if want.is_some() {
            let rejection = report.rejected.iter().find(|r| r.path == *file).unwrap();
            assert!(!rejection.runtime_ids.is_empty(), "{path}");
        }
    }
    // `install` checks the target folder and every folder above it before writing.
    let target = exposed_dir.join("sub");
    let installed = cli(
        home.path(),
        &[
            "install",
            &good.display().to_string(),
            "--dir",
            &target.display().to_string(),
        ],
    );
    assert_eq!(
        installed.status.code(),
        Some(3),
        "{}",
        text(&installed.stdout)
    );
    assert!(text(&installed.stderr).contains("writable by others without the sticky bit"));
    assert!(!target.join(format!("a-good{SUFFIX}")).exists());
}

#[test]
fn a_refused_runtime_says_why_through_the_cli_and_names_the_way_out() {
    let dir = plugin_dir();
    let lib = install(dir.path(), &artifacts().echo, "libecho");
    set_mode(&lib, 0o666);
    let home = plugin_dir();
    let folder = dir.path().display().to_string();
    let run = cli(home.path(), &["--plugin-dir", &folder, "run", "echo", "hi"]);
    assert_eq!(run.status.code(), Some(3));
    let message = text(&run.stderr);
    assert!(message.contains("`echo` is provided by "), "{message}");
    assert!(
        message.contains("which was refused: the file "),
        "{message}"
    );
    assert!(message.contains("writable by others"), "{message}");
    assert!(message.contains("--allow-insecure"), "{message}");
    assert!(
        message.contains("AGENT_RUNTIMES_ALLOW_INSECURE"),
        "{message}"
    );
    // The way out works.
    let run = cli(
        home.path(),
        &[
            "--plugin-dir",
            &folder,
            "--allow-insecure",
            "run",
            "echo",
            "hi",
        ],
    );
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout).trim(), "hi");
}

// ---------------------------------------------------------------------------------------
// Nothing from a file reaches the terminal raw.

/// Control sequences a hostile manifest could carry.
const CLEAR: &str = "\u{1b}[2J\u{1b}[H";
const TITLE: &str = "\u{1b}]0;owned\u{7}";
const FAKE_LINE: &str = "\rALL PLUGINS VERIFIED\n";
const CSI8: &str = "\u{9b}31m";
const BIDI: &str = "\u{202e}";

fn hostile_text(label: &str) -> String {
    format!("{label}{CLEAR}{TITLE}{FAKE_LINE}{CSI8}{BIDI}end")
}

fn has_raw_controls(output: &str) -> bool {
    output
        .chars()
        .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}')
        || output
            .lines()
            .any(|l| l.starts_with("ALL PLUGINS VERIFIED"))
}

#[test]
fn escape_sequences_in_a_manifest_never_reach_the_terminal() {
    let dir = plugin_dir();
    let lib = install_patched(dir.path(), &artifacts().echo, "libecho", |m| {
        m["plugin_version"] = json!(hostile_text("1.0"));
        m["plugin_name"] = json!(hostile_text("name"));
        m["runtimes"][0]["display_name"] = json!(hostile_text("Echo"));
        m["runtimes"][0]["description"] = json!(hostile_text("desc"));
    });
    // A rejected file whose reason quotes hostile text.
    install_patched(dir.path(), &artifacts().fixture, "libbad", |m| {
        m["runtimes"][0]["id"] = json!(hostile_text("bad"));
    });
    let home = plugin_dir();
    let folder = dir.path().display().to_string();
    let path = lib.display().to_string();
    let bad = dir
        .path()
        .join(format!("libbad{SUFFIX}"))
        .display()
        .to_string();
    for args in [
        vec!["--plugin-dir", &folder, "list"],
        vec!["--plugin-dir", &folder, "list", "--all"],
        vec!["--plugin-dir", &folder, "info", "echo"],
        vec!["check", &path],
        vec!["check", &bad],
        vec!["--plugin-dir", &folder, "info", "fx"],
    ] {
        let output = cli(home.path(), &args);
        let (out, err) = (text(&output.stdout), text(&output.stderr));
        assert!(!has_raw_controls(&out), "{args:?} stdout: {out:?}");
        assert!(!has_raw_controls(&err), "{args:?} stderr: {err:?}");
        // The text is still there, visibly escaped.
        assert!(
            out.contains("\\x1b[2J") || err.contains("\\x1b[2J"),
            "{args:?}: {out:?} {err:?}"
        );
    }
    // JSON is valid, free of raw controls, and carries the exact strings.
    for args in [
        vec!["--plugin-dir", &folder, "list", "--all", "--json"],
        vec!["--plugin-dir", &folder, "info", "echo", "--json"],
        vec!["check", &path, "--json"],
    ] {
        let output = cli(home.path(), &args);
        let out = text(&output.stdout);
        assert!(
            !out.chars().any(|c| c.is_control() && c != '\n'),
            "{args:?}: {out:?}"
        );
        assert!(
            !out.contains('\u{9b}') && !out.contains('\u{202e}'),
            "{args:?}"
        );
        let value: Value = serde_json::from_str(&out).unwrap();
        let description = value["runtimes"][0]["description"]
            .as_str()
            .or_else(|| value["description"].as_str())
            .or_else(|| value[0]["manifest"]["runtimes"][0]["description"].as_str())
            .unwrap_or_else(|| panic!("{args:?}: {value}"));
        assert_eq!(description, hostile_text("desc"));
    }
}

#[test]
fn model_output_is_escaped_on_a_terminal_and_exact_when_piped() {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().echo, "libecho");
    let home = plugin_dir();
    let folder = dir.path().display().to_string();
    // echo answers with the prompt: a model's answer carrying escape sequences.
    let prompt = "a\u{1b}[2Jb\u{1b}]0;owned\u{7}c\u{9b}d";
    // Piped: exactly the text.
    let output = cli(
        home.path(),
        &["--plugin-dir", &folder, "run", "echo", prompt],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), format!("{prompt}\n"));
    // --json: escaped as JSON, no raw control character.
    let output = cli(
        home.path(),
        &["--plugin-dir", &folder, "run", "echo", prompt, "--json"],
    );
    let out = text(&output.stdout);
    assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
    let value: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["content"], prompt);
    // On a terminal (a real pseudo-terminal from util-linux `script`): escaped, for `run` and
    // `stream`.
    for command in ["run", "stream"] {
        let mut script = Command::new("script");
        script
            .args([
                "-qec",
                &format!("\"$RUNTIMES\" --plugin-dir \"$FOLDER\" {command} echo \"$PROMPT\""),
                "/dev/null",
            ])
            .env("RUNTIMES", &artifacts().runtimes)
            .env("FOLDER", &folder)
            .env("PROMPT", prompt)
            .env_remove("AGENT_RUNTIMES_PATH")
            .env("XDG_DATA_HOME", home.path().join("data"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        let output = bounded("script", move || script.output().unwrap());
        assert!(output.status.success(), "{}", text(&output.stderr));
        let out = text(&output.stdout);
        assert!(
            !out.chars()
                .any(|c| c.is_control() && c != '\n' && c != '\r'),
            "{command}: {out:?}"
        );
        assert!(
            out.contains("a\\x1b[2Jb\\x1b]0;owned\\x07c\\u{9b}d"),
            "{command}: {out:?}"
        );
    }
}
