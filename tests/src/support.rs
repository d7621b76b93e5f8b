//! Fixture plugins and plugin folders for the tests.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use dev_support::Built;
use dev_support::CargoBuild;
use runtime_loader::{LoaderOptions, Runtimes, SearchPath};
use serde_json::Value;
use tempfile::TempDir;

/// The libraries the tests load, built from the workspace.
pub struct Artifacts {
    /// The `runtimes` command.
    pub runtimes: PathBuf,
    pub echo: PathBuf,
    pub fixture: PathBuf,
    pub no_manifest: PathBuf,
    /// A plugin built against a modified copy of the interface.
    pub abi_mismatch: PathBuf,
    /// A plugin that faults as its prompt says.
    pub hostile: PathBuf,
    /// The `runtimes-worker` executable of the process isolation level.
    pub worker: PathBuf,
    /// A plugin that loads but breaks the contract (the conformance checks name how).
    pub broken: PathBuf,
    /// The llm runtimes (`openai`, `anthropic`).
    pub llm: PathBuf,
    /// The `command` runtime.
    pub command: PathBuf,
}

/// Builds the fixture libraries once per test run (a no-op for cargo when `cargo test` already
/// did), shared by every test of the binary.
pub fn artifacts() -> &'static Artifacts {
    static ARTIFACTS: OnceLock<Artifacts> = OnceLock::new();
    ARTIFACTS.get_or_init(|| {
        let built = CargoBuild::new(env!("CARGO_MANIFEST_DIR"))
            .args([
                "-p",
                "echo-runtime",
                "-p",
                "fixture-plugin",
                "-p",
                "no-manifest-fixture",
                "-p",
                "runtimes-cli",
                "-p",
                "abi-mismatch-fixture",
                "-p",
                "hostile-plugin",
                "-p",
                "runtime-loader",
                "-p",
                "broken-plugin",
                "-p",
                "llm-runtimes",
                "-p",
                "command-runtime",
            ])
            .run();
        Artifacts {
            runtimes: built.executable("runtimes"),
            echo: built.library("echo_runtime"),
            fixture: built.library("fixture_plugin"),
            no_manifest: built.library("no_manifest_fixture"),
            abi_mismatch: built.library("abi_mismatch_fixture"),
            hostile: built.library("hostile_plugin"),
            worker: built.executable("runtimes-worker"),
            broken: built.library("broken_plugin"),
            llm: built.library("llm_runtimes"),
            command: built.library("command_runtime"),
        }
    })
}

/// Builds a plugin package of the workspace (one the tests seldom need, so not among the
/// [`artifacts`]) once per name and returns its library.
pub fn built_plugin(package: &'static str, crate_name: &'static str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(&str, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = built.iter().find(|(p, _)| *p == package) {
        return path.clone();
    }
    let path = CargoBuild::new(env!("CARGO_MANIFEST_DIR"))
        .args(["-p", package])
        .run()
        .library(crate_name);
    built.push((package, path.clone()));
    path
}

/// The unprivileged user of `scripts/test-user.sh`: (uid, gid). Fails the test, saying what
/// to do, when not running as root or when that user does not exist.
pub fn other_user() -> (u32, u32) {
    let id = |args: &[&str]| -> Option<u32> {
        let output = std::process::Command::new("id").args(args).output().ok()?;
        String::from_utf8_lossy(&output.stdout).trim().parse().ok()
    };
    assert_eq!(
        id(&["-u"]),
        Some(0),
        "this test needs root, to give a file or folder to another user (CI runs it as root)"
    );
    let name = std::env::var("AGENT_RUNTIMES_TEST_USER").unwrap_or_else(|_| "agentrt-test".into());
    match (id(&["-u", &name]), id(&["-g", &name])) {
        (Some(uid), Some(gid)) if uid != 0 => (uid, gid),
        _ => panic!("the user `{name}` does not exist: run scripts/test-user.sh (as root) first"),
    }
}

/// A fresh, private plugin folder.
pub fn plugin_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("agent-runtimes-test-")
        .tempdir()
        .expect("temp dir")
}

pub use dev_support::install;

/// Writes raw bytes as a candidate file.
pub fn write_candidate(dir: &Path, stem: &str, bytes: &[u8]) -> PathBuf {
    let target = dir.join(format!("{stem}{}", std::env::consts::DLL_SUFFIX));
    std::fs::write(&target, bytes).expect("write candidate");
    target
}

/// A registry over exactly these folders, with strict checks.
pub fn registry(dirs: &[&Path]) -> Runtimes {
    let runtimes = Runtimes::with_options(LoaderOptions::STRICT);
    let mut path = SearchPath::empty();
    for dir in dirs {
        path = path.with_dir(*dir);
    }
    runtimes.discover(&path);
    runtimes
}

/// Where the embedded manifest is in a library file.
pub fn manifest_region(bytes: &[u8]) -> std::ops::Range<usize> {
    dev_support::manifest_region(bytes).expect("the library has an embedded manifest")
}

/// Copies a library, rewriting its embedded manifest's JSON with `edit`.
pub fn install_patched(
    dir: &Path,
    library: &Path,
    stem: &str,
    edit: impl FnOnce(&mut Value),
) -> PathBuf {
    let mut bytes = std::fs::read(library).expect("read library");
    let region = manifest_region(&bytes);
    let manifest = runtime_api::manifest::Manifest::from_embedded(&bytes[region.clone()])
        .expect("the built manifest parses");
    let mut json = serde_json::to_value(&manifest).expect("manifest serialises");
    edit(&mut json);
    let embedded = runtime_api::manifest::embed_json(json.to_string().as_bytes()).expect("fits");
    bytes[region].copy_from_slice(&embedded);
    write_candidate(dir, stem, &bytes)
}

/// Copies a library, overwriting its embedded manifest region with raw bytes.
pub fn install_raw_manifest(dir: &Path, library: &Path, stem: &str, region: &[u8]) -> PathBuf {
    let mut bytes = std::fs::read(library).expect("read library");
    let at = manifest_region(&bytes);
    let mut padded = region.to_vec();
    padded.resize(at.len(), 0);
    bytes[at].copy_from_slice(&padded);
    write_candidate(dir, stem, &bytes)
}

/// The echo plugin built against a *modified copy* of runtime-api (`AbiUsage` gains a field),
/// in a scratch workspace; built once, then reused.
pub fn echo_against_modified_interface() -> &'static Path {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        let built = ScratchBuild::new("modified-interface", |scratch| {
            edit(
                &scratch.join("runtime-contract/src/abi.rs"),
                &[(
                    "    /// See `Usage::reasoning_tokens`.\n    pub reasoning_tokens: u64,\n",
                    "    /// See `Usage::reasoning_tokens`.\n    pub reasoning_tokens: u64,\n    /// Added by the test: a field the host does not know.\n    pub surprise_tokens: u64,\n",
                )],
            );
            edit(
                &scratch.join("runtime-api/src/convert.rs"),
                &[(
                    "reasoning_tokens: usage.reasoning_tokens,\n        }\n    }\n}\n\nimpl From<AbiUsage> for Usage",
                    "reasoning_tokens: usage.reasoning_tokens,\n            surprise_tokens: 0,\n        }\n    }\n}\n\nimpl From<AbiUsage> for Usage",
                )],
            );
        })
        .build(&["-p", "echo-runtime"]);
        built.library("echo_runtime")
    })
}

/// Replaces each `(from, to)` once in a file; `from` must be there.
pub fn edit(file: &Path, replacements: &[(&str, &str)]) {
    let mut text = std::fs::read_to_string(file).unwrap();
    for (from, to) in replacements {
        assert!(
            text.contains(from),
            "{} changed: update this fixture ({from:?} is gone)",
            file.display()
        );
        text = text.replacen(from, to, 1);
    }
    std::fs::write(file, text).unwrap();
}

/// A copy of runtime-contract, runtime-api, the loader (with the crates it uses), echo and the example hosts in a scratch workspace,
/// edited, then built with cargo: plugins and hosts built against another runtime-api, for
/// the compatibility and layout tests. Scratch builds share one target folder.
pub struct ScratchBuild {
    root: PathBuf,
}

impl ScratchBuild {
    /// Lays out the scratch workspace `name` afresh and applies `change` to it.
    pub fn new(name: &str, change: impl FnOnce(&Path)) -> Self {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root");
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("scratch")
            .join(name);
        let _ = std::fs::remove_dir_all(&root);
        let members = [
            "runtime-contract",
            "runtime-api",
            "text",
            "discovery",
            "process",
            "loader",
            "plugins/echo",
            "examples",
        ];
        for member in members {
            for entry in walk(&workspace.join(member)) {
                let target = root.join(entry.strip_prefix(workspace).unwrap());
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                std::fs::copy(&entry, &target).unwrap();
            }
        }
        std::fs::copy(workspace.join("Cargo.lock"), root.join("Cargo.lock")).unwrap();
        let manifest = std::fs::read_to_string(workspace.join("Cargo.toml")).unwrap();
        let start = manifest.find("members = [").unwrap();
        let end = start + manifest[start..].find(']').unwrap() + 1;
        let listed: Vec<String> = members.iter().map(|m| format!("{m:?}")).collect();
        let manifest = format!(
            "{}members = [{}]{}",
            &manifest[..start],
            listed.join(", "),
            &manifest[end..]
        );
        std::fs::write(root.join("Cargo.toml"), manifest).unwrap();
        change(&root);
        Self { root }
    }

    /// `cargo build` in the scratch workspace with these arguments, one build at a time, in a
    /// target folder of this scratch workspace's own: cargo names the artifacts of path
    /// crates the same in two workspaces of the same layout, so a shared target folder lets
    /// one scratch workspace reuse another's (modified) build. What it produced is copied out
    /// (to `built/` in the scratch workspace).
    pub fn build(&self, args: &[&str]) -> Built {
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let name = self
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("scratch-target")
            .join(name.unwrap_or_default());
        CargoBuild::new(&self.root)
            .args(["--target-dir", &target.display().to_string()])
            .args(args)
            .run()
            .copied_to(&self.root.join("built"))
    }
}

/// Every file below a folder (no `target` folders).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                files.extend(walk(&path));
            }
        } else {
            files.push(path);
        }
    }
    files
}

/// Replaces a plugin file the way `runtimes install` does: a new copy of `library`, written
/// beside the folder, renamed over `dir/<stem>.so` (so it is another file, not the old one
/// rewritten).
pub fn replace_plugin(dir: &Path, library: &Path, stem: &str) {
    let staging = TempDir::new_in(dir.parent().unwrap_or(dir)).expect("a staging folder");
    let fresh = install(staging.path(), library, stem);
    std::fs::rename(&fresh, dir.join(fresh.file_name().expect("a file name")))
        .expect("the new file replaces the old");
}

/// Whether process `pid` is gone (no such process, or a zombie left for its parent to
/// reap), waiting up to 20 s for it to go (polled: a process's end has no event to wait on
/// from here).
pub async fn process_gone(pid: u32) -> bool {
    for _ in 0..400 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit_once(')')
            .is_none_or(|(_, rest)| rest.trim_start().starts_with('Z'))
        {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}
