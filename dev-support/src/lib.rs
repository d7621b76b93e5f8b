//! What the integration tests (`tests/`) and the benchmarks (`benches/`) both need: building
//! the workspace's plugin libraries and binaries with cargo, finding the files cargo reports
//! for each target (from its `--message-format=json` output, read by `cargo_metadata`), and
//! finding the embedded manifest in a built library.
//!
//! Everything here panics with a message on failure: it runs in tests and benchmarks only.

#![forbid(unsafe_code)]

use std::io::BufReader;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cargo_metadata::{Artifact, Message};

/// A `cargo build` to run: where, and with which arguments.
#[derive(Debug, Clone)]
pub struct CargoBuild {
    dir: PathBuf,
    args: Vec<String>,
}

impl CargoBuild {
    /// `cargo build` run in `dir` (a folder of the workspace to build). Uses the `CARGO`
    /// environment variable when cargo set it (under `cargo test` and `cargo bench`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            args: Vec::new(),
        }
    }

    /// Adds arguments (`-p name`, `--release`, `--target-dir DIR`, ...).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Runs the build (a no-op for cargo when everything is fresh) and returns what it built.
    /// cargo's progress and warnings are captured, and shown only if the build fails.
    ///
    /// When [`BUILT_ENV`] names a file of cargo's JSON messages (a build made beforehand, by
    /// another user: `scripts/unprivileged-tests.sh`), no cargo runs: what that build made is
    /// returned, whatever the arguments.
    pub fn run(&self) -> Built {
        if let Some(messages) = std::env::var_os(BUILT_ENV) {
            assert!(
                !self.args.iter().any(|a| a == "--release"
                    || a.starts_with("--target-dir")
                    || a.starts_with("--features")),
                "{BUILT_ENV} stands for a plain debug build of the workspace; this build ({}) is another: run it without {BUILT_ENV}",
                self.args.join(" ")
            );
            let file = std::fs::File::open(&messages)
                .unwrap_or_else(|e| panic!("{BUILT_ENV}={}: {e}", Path::new(&messages).display()));
            return Built::from_messages(BufReader::new(file));
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut command = Command::new(cargo);
        command
            .args([
                "build",
                "--quiet",
                "--message-format=json-render-diagnostics",
            ])
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        // What cargo set for the test or bench binary that runs this build is not passed on:
        // build scripts track some of it (ring's `CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`, ...),
        // so the same build would otherwise differ from one run from a shell, and each would
        // redo the other's work.
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(set_by_cargo_for_a_crate) {
                command.env_remove(key);
            }
        }
        let output = command.output().expect("cargo runs");
        assert!(
            output.status.success(),
            "cargo build {} in {} failed:\n{}",
            self.args.join(" "),
            self.dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        Built::from_messages(BufReader::new(output.stdout.as_slice()))
    }
}

/// The environment variable naming a file of cargo's `--message-format=json` output that
/// stands for every [`CargoBuild::run`] (for test binaries run as a user who cannot run cargo
/// in the build's target folder).
pub const BUILT_ENV: &str = "DEV_SUPPORT_BUILT";

/// Whether cargo sets the environment variable `key` for a crate it compiles or runs (rather
/// than reading it itself, like `CARGO_HOME` or `CARGO_TARGET_DIR`, which are kept).
fn set_by_cargo_for_a_crate(key: &str) -> bool {
    key.starts_with("CARGO_PKG_")
        || key.starts_with("CARGO_BIN_EXE_")
        || matches!(
            key,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
                | "OUT_DIR"
        )
}

/// What a build produced: cargo's artifact messages.
#[derive(Debug, Clone)]
pub struct Built {
    artifacts: Vec<Artifact>,
}

impl Built {
    /// What cargo's JSON messages in `messages` say was built.
    fn from_messages(messages: impl std::io::BufRead) -> Self {
        let artifacts = Message::parse_stream(messages)
            .map(|message| message.expect("cargo's messages read"))
            .filter_map(|message| match message {
                Message::CompilerArtifact(artifact) => Some(artifact),
                _ => None,
            })
            .collect();
        Built { artifacts }
    }

    /// Every artifact message.
    pub fn artifacts(&self) -> &[Artifact] {
        &self.artifacts
    }

    /// The shared library (the platform's suffix) built for the target `name` (a crate name,
    /// with underscores: `echo_runtime`).
    pub fn library(&self, name: &str) -> PathBuf {
        self.artifacts
            .iter()
            .filter(|a| a.target.name == name)
            .flat_map(|a| &a.filenames)
            .find(|f| f.as_str().ends_with(std::env::consts::DLL_SUFFIX))
            .map(|f| f.clone().into_std_path_buf())
            .unwrap_or_else(|| panic!("cargo built no library for {name}"))
    }

    /// The executable built for the target `name`.
    pub fn executable(&self, name: &str) -> PathBuf {
        self.artifacts
            .iter()
            .filter(|a| a.target.name == name)
            .find_map(|a| a.executable.clone())
            .map(|f| f.into_std_path_buf())
            .unwrap_or_else(|| panic!("cargo built no executable for {name}"))
    }

    /// Copies every file built from a path package (not a registry dependency) into `dir`,
    /// and returns the same messages naming the copies: what a later build into the same
    /// target folder overwrites stays as it was.
    pub fn copied_to(&self, dir: &Path) -> Built {
        std::fs::create_dir_all(dir).expect("create the folder for the copies");
        let keep = |path: &cargo_metadata::camino::Utf8Path| {
            let to = dir.join(path.file_name().expect("an artifact is a file"));
            std::fs::copy(path, &to).expect("copy an artifact");
            cargo_metadata::camino::Utf8PathBuf::from_path_buf(to).expect("a UTF-8 path")
        };
        let artifacts = self
            .artifacts
            .iter()
            .filter(|a| a.package_id.repr.starts_with("path+"))
            .map(|a| {
                let mut a = a.clone();
                a.filenames = a.filenames.iter().map(|f| keep(f)).collect();
                a.executable = a.executable.as_deref().map(keep);
                a
            })
            .collect();
        Built { artifacts }
    }
}

/// Where the embedded manifest (its fixed-size region) is in a library's bytes, if anywhere.
pub fn manifest_region(bytes: &[u8]) -> Option<Range<usize>> {
    let magic = runtime_api::manifest::MAGIC;
    let start = bytes
        .windows(magic.len())
        .enumerate()
        .filter(|(_, w)| *w == magic)
        .map(|(i, _)| i)
        .find(|i| bytes.get(i + 20) == Some(&b'{'))?;
    let end = start + runtime_api::manifest::EMBED_SIZE;
    (end <= bytes.len()).then_some(start..end)
}

/// Copies a library into a folder under a file name (the platform's suffix is added), with
/// mode 0755: the loader's strict checks refuse files writable by group or others.
pub fn install(dir: &Path, library: &Path, stem: &str) -> PathBuf {
    let target = dir.join(format!("{stem}{}", std::env::consts::DLL_SUFFIX));
    std::fs::copy(library, &target).expect("copy the library");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
            .expect("set the library's mode");
    }
    target
}
