//! Fixture plugins and plugin folders for the tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

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
}

/// Builds the fixture libraries once per test run (a no-op when `cargo test` already did).
pub fn artifacts() -> &'static Artifacts {
    static ARTIFACTS: OnceLock<Artifacts> = OnceLock::new();
    ARTIFACTS.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let output = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--message-format=json",
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
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo runs");
        assert!(
            output.status.success(),
            "building the fixture plugins failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let find = |crate_name: &str| -> PathBuf {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter(|msg| msg["reason"] == "compiler-artifact")
                .filter(|msg| msg["target"]["name"] == crate_name)
                .flat_map(|msg| msg["filenames"].as_array().cloned().unwrap_or_default())
                .filter_map(|f| f.as_str().map(PathBuf::from))
                .find(|f| f.to_string_lossy().ends_with(std::env::consts::DLL_SUFFIX))
                .unwrap_or_else(|| panic!("no library built for {crate_name}"))
        };
        let executable = |name: &str| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter(|msg| msg["reason"] == "compiler-artifact")
                .filter(|msg| msg["target"]["name"] == name)
                .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
                .unwrap_or_else(|| panic!("the {name} binary was built"))
        };
        let runtimes = executable("runtimes");
        Artifacts {
            runtimes,
            echo: find("echo_runtime"),
            fixture: find("fixture_plugin"),
            no_manifest: find("no_manifest_fixture"),
            abi_mismatch: find("abi_mismatch_fixture"),
            hostile: find("hostile_plugin"),
            worker: executable("runtimes-worker"),
            broken: find("broken_plugin"),
        }
    })
}

/// A fresh, private plugin folder.
pub fn plugin_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("agent-runtimes-test-")
        .tempdir()
        .expect("temp dir")
}

/// Copies a library into a folder under a file name (the platform suffix is added).
pub fn install(dir: &Path, library: &Path, stem: &str) -> PathBuf {
    let target = dir.join(format!("{stem}{}", std::env::consts::DLL_SUFFIX));
    std::fs::copy(library, &target).expect("copy library");
    target
}

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

/// Where the embedded manifest starts in a library file.
pub fn manifest_offset(bytes: &[u8]) -> usize {
    let magic = runtime_api::manifest::MAGIC;
    bytes
        .windows(magic.len())
        .enumerate()
        .filter(|(_, w)| *w == magic)
        .map(|(i, _)| i)
        .find(|i| bytes.get(i + 20) == Some(&b'{'))
        .expect("the library has an embedded manifest")
}

/// Copies a library, rewriting its embedded manifest's JSON with `edit`.
pub fn install_patched(
    dir: &Path,
    library: &Path,
    stem: &str,
    edit: impl FnOnce(&mut Value),
) -> PathBuf {
    let mut bytes = std::fs::read(library).expect("read library");
    let offset = manifest_offset(&bytes);
    let size = runtime_api::manifest::EMBED_SIZE;
    let manifest = runtime_api::manifest::Manifest::from_embedded(&bytes[offset..offset + size])
        .expect("the built manifest parses");
    let mut json = serde_json::to_value(&manifest).expect("manifest serialises");
    edit(&mut json);
    let embedded = runtime_api::manifest::embed_json(json.to_string().as_bytes()).expect("fits");
    bytes[offset..offset + size].copy_from_slice(&embedded);
    write_candidate(dir, stem, &bytes)
}

/// Copies a library, overwriting its embedded manifest region with raw bytes.
pub fn install_raw_manifest(dir: &Path, library: &Path, stem: &str, region: &[u8]) -> PathBuf {
    let mut bytes = std::fs::read(library).expect("read library");
    let offset = manifest_offset(&bytes);
    let size = runtime_api::manifest::EMBED_SIZE;
    let mut padded = region.to_vec();
    padded.resize(size, 0);
    bytes[offset..offset + size].copy_from_slice(&padded);
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

/// A copy of runtime-contract, runtime-api, the loader, echo and the example hosts in a scratch workspace,
/// edited, then built with cargo: plugins and hosts built against another runtime-api, for
/// the compatibility and layout tests. Scratch builds share one target folder.
pub struct ScratchBuild {
    root: PathBuf,
}

/// What a scratch build produced: cargo's JSON messages.
pub struct Built {
    messages: Vec<Value>,
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

    /// `cargo build` in the scratch workspace with these arguments. Scratch builds share a
    /// target folder, where each overwrites the last one's libraries: builds run one at a
    /// time, and what they produced is copied out before the next starts.
    pub fn build(&self, args: &[&str]) -> Built {
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let output = Command::new(cargo)
            .args(["build", "--quiet", "--message-format=json", "--target-dir"])
            .arg(Path::new(env!("CARGO_TARGET_TMPDIR")).join("scratch-target"))
            .args(args)
            .current_dir(&self.root)
            .output()
            .expect("cargo runs");
        assert!(
            output.status.success(),
            "the scratch build in {} failed:\n{}",
            self.root.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let kept = self.root.join("built");
        std::fs::create_dir_all(&kept).unwrap();
        let keep = |path: &str| -> Value {
            let from = Path::new(path);
            let to = kept.join(from.file_name().unwrap());
            std::fs::copy(from, &to).unwrap();
            Value::String(to.display().to_string())
        };
        let messages = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|msg| msg["reason"] == "compiler-artifact")
            .filter(|msg| {
                msg["package_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("path+"))
            })
            .map(|mut msg| {
                if let Some(files) = msg["filenames"].as_array_mut() {
                    for file in files.iter_mut() {
                        if let Some(path) = file.as_str().map(str::to_owned) {
                            *file = keep(&path);
                        }
                    }
                }
                if let Some(path) = msg["executable"].as_str().map(str::to_owned) {
                    msg["executable"] = keep(&path);
                }
                msg
            })
            .collect();
        Built { messages }
    }
}

impl Built {
    /// The shared library built for the crate `name`.
    pub fn library(&self, name: &str) -> PathBuf {
        self.messages
            .iter()
            .filter(|msg| msg["target"]["name"] == name)
            .flat_map(|msg| msg["filenames"].as_array().cloned().unwrap_or_default())
            .filter_map(|f| f.as_str().map(PathBuf::from))
            .find(|f| f.to_string_lossy().ends_with(std::env::consts::DLL_SUFFIX))
            .unwrap_or_else(|| panic!("no library built for {name}"))
    }

    /// The executable built for the target `name`.
    pub fn executable(&self, name: &str) -> PathBuf {
        self.messages
            .iter()
            .filter(|msg| msg["target"]["name"] == name)
            .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
            .unwrap_or_else(|| panic!("no executable built for {name}"))
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
