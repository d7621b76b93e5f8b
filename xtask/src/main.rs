//! Project tasks, run through cargo aliases (see `.cargo/config.toml`).
//!
//! `cargo demo`: builds the plugins and the `runtimes` command, installs the plugins into a
//! fresh demo plugin folder (`target/demo-plugins`), lists them, runs and streams an echo turn,
//! and runs a host example against the same folder.
//!
//! `cargo demo serve [SERVE OPTIONS]`: builds and installs the same plugins, then serves them
//! with `runtimes serve` (the OpenAI-compatible HTTP API) until Ctrl-C.
//!
//! `cargo xtask install [--bin-dir DIR] [INSTALL OPTIONS]`: one release build of `runtimes`,
//! `runtimes-worker` and the bundled runtimes; the commands copied into cargo's bin folder
//! (or `--bin-dir`), the runtimes installed as below. What the README's install step runs.
//!
//! `cargo xtask readme`: runs README.md's install, plugin and scale-out blocks as written, in
//! a scratch home (see `readme.rs`).
//!
//! `cargo xtask install-runtimes [INSTALL OPTIONS]`: builds the bundled runtimes (echo,
//! openai/anthropic, command, agent) and `runtimes` in release mode, then installs the
//! runtimes with `runtimes install --force [INSTALL OPTIONS]`: into the per-user plugin folder
//! unless `--dir DIR` is given. Run again after pulling changes: identical files are left as
//! they are, changed ones replaced.
#![allow(clippy::print_stdout, clippy::print_stderr)]
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

mod readme;
use serde_json::Value;

/// The plugin packages the demo installs (those that exist in this checkout).
const PLUGINS: &[&str] = &[
    "echo-runtime",
    "llm-runtimes",
    "command-runtime",
    "agent-runtime",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}

fn step(title: &str) {
    println!("\n\x1b[1m== {title}\x1b[0m");
}

/// A command as a shell would take it, for people to copy.
fn shown(command: &Command) -> String {
    let quote = |text: &str| {
        if !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
        {
            text.to_owned()
        } else {
            format!("'{}'", text.replace('\'', r"'\''"))
        }
    };
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| quote(&part.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let shown = shown(command);
    println!("$ {shown}");
    let status = command
        .status()
        .with_context(|| format!("running {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

/// What one build produced: the plugin libraries, the `runtimes` binary and, when it was
/// built, the `runtimes-worker` binary.
struct Built {
    libraries: Vec<PathBuf>,
    runtimes: PathBuf,
    worker: Option<PathBuf>,
}

/// Builds the packages (`release` or the dev profile), with the worker when `worker`, and
/// returns the artifacts cargo reports.
fn build(root: &Path, release: bool, worker: bool) -> anyhow::Result<Built> {
    let mut command = cargo();
    command.current_dir(root).args([
        "build",
        "--message-format=json-render-diagnostics",
        "-p",
        "runtimes-cli",
    ]);
    if worker {
        command.args(["-p", "runtime-loader"]);
    }
    if release {
        command.arg("--release");
    }
    for plugin in PLUGINS {
        if root
            .join("plugins")
            .join(
                plugin
                    .trim_end_matches("-runtime")
                    .trim_end_matches("-runtimes"),
            )
            .exists()
        {
            command.args(["-p", plugin]);
        }
    }
    println!(
        "$ cargo build{} -p runtimes-cli{} -p <plugins>",
        if release { " --release" } else { "" },
        if worker { " -p runtime-loader" } else { "" }
    );
    let output = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo build")?;
    if !output.status.success() {
        bail!("cargo build failed");
    }
    let mut libraries = Vec::new();
    let mut runtimes = None;
    let mut worker = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        if let Some(executable) = message["executable"].as_str() {
            let name = Path::new(executable).file_stem().and_then(|n| n.to_str());
            match name {
                Some("runtimes") => runtimes = Some(PathBuf::from(executable)),
                Some("runtimes-worker") => worker = Some(PathBuf::from(executable)),
                _ => {}
            }
        }
        let is_plugin = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"));
        if is_plugin {
            for file in message["filenames"].as_array().into_iter().flatten() {
                if let Some(file) = file
                    .as_str()
                    .filter(|f| f.ends_with(std::env::consts::DLL_SUFFIX))
                {
                    libraries.push(PathBuf::from(file));
                }
            }
        }
    }
    let runtimes = runtimes.context("cargo did not report the runtimes binary")?;
    Ok(Built {
        libraries,
        runtimes,
        worker,
    })
}

/// Builds the plugins and `runtimes`, and installs the plugins into a fresh
/// `target/demo-plugins`; returns the libraries built, the `runtimes` binary and the folder.
fn install_demo(root: &Path) -> anyhow::Result<(Vec<PathBuf>, PathBuf, PathBuf)> {
    step("Build the plugins and the `runtimes` command");
    let Built {
        libraries,
        runtimes,
        ..
    } = build(root, false, false)?;
    let folder = root.join("target").join("demo-plugins");
    if folder.exists() {
        std::fs::remove_dir_all(&folder).context("clearing the demo plugin folder")?;
    }
    step("Install the plugins into a demo plugin folder (checked, copied atomically, pinned)");
    let mut install = Command::new(&runtimes);
    install
        .arg("install")
        .args(&libraries)
        .arg("--dir")
        .arg(&folder)
        .arg("--pin");
    run(&mut install)?;
    Ok((libraries, runtimes, folder))
}

/// `cargo demo serve [SERVE OPTIONS]`: the demo plugins behind the OpenAI-compatible server.
fn demo_serve(options: Vec<String>) -> anyhow::Result<()> {
    let root = workspace_root();
    let (_, runtimes, folder) = install_demo(&root)?;
    step("Serve them over the OpenAI chat-completions API (Ctrl-C stops)");
    let mut serve = Command::new(&runtimes);
    serve
        .arg("--plugin-dir")
        .arg(&folder)
        .arg("serve")
        .args(options)
        .env_remove("AGENT_RUNTIMES_PATH");
    run(&mut serve)
}

fn demo() -> anyhow::Result<()> {
    let root = workspace_root();
    let (libraries, runtimes, folder) = install_demo(&root)?;
    let folder_arg = folder.display().to_string();
    let cli = || {
        let mut command = Command::new(&runtimes);
        command
            .arg("--plugin-dir")
            .arg(&folder_arg)
            .env_remove("AGENT_RUNTIMES_PATH");
        command
    };

    step("List what is installed (no library is loaded to do this)");
    run(cli().arg("list"))?;

    step("Run a turn through the loader, by alias");
    run(cli().args(["run", "parrot", "Hello from the agent-runtimes demo!"]))?;

    step(
        "Stream a turn, word by word (the plugin sleeps 150 ms between words on its own tokio runtime)",
    );
    run(cli().args([
        "stream",
        "echo",
        "Each word arrives as its own delta.",
        "--config",
        r#"{"delay_ms": 150}"#,
    ]))?;

    step("Stream the same turn as NDJSON: deltas, then the final result");
    run(cli().args(["stream", "echo", "two words", "--json"]))?;

    if libraries
        .iter()
        .any(|l| l.to_string_lossy().contains("command_runtime"))
    {
        step("Drive an external program with the `command` runtime (its stdout streams back)");
        run(cli().args([
            "stream",
            "command",
            "hello from a program",
            "--config",
            r#"{"program": "tr", "args": ["a-z", "A-Z"]}"#,
        ]))?;
    }

    step("A host program (examples/run_turn.rs) using the same folder");
    run(cargo()
        .current_dir(&root)
        .args([
            "run",
            "--quiet",
            "-p",
            "host-examples",
            "--example",
            "run_turn",
            "--",
        ])
        .arg(&folder))?;

    println!(
        "\nDone. Try: {} --plugin-dir {} list --all",
        runtimes.display(),
        folder.display()
    );
    Ok(())
}

/// `cargo xtask install-runtimes [INSTALL OPTIONS]`: the bundled runtimes, built for release,
/// installed where `runtimes` finds them.
fn install_runtimes(options: Vec<String>) -> anyhow::Result<()> {
    let root = workspace_root();
    step("Build the bundled runtimes and the `runtimes` command (release)");
    let Built {
        libraries,
        runtimes,
        ..
    } = build(&root, true, false)?;
    step("Install them (checked, copied atomically; identical files are left as they are)");
    run(Command::new(&runtimes)
        .arg("install")
        .args(&libraries)
        .arg("--force")
        .args(options))?;
    println!("\nDone. Try: runtimes list");
    Ok(())
}

/// `cargo xtask install [--bin-dir DIR] [INSTALL OPTIONS]`: one release build of `runtimes`,
/// `runtimes-worker` and the bundled runtimes; the two commands copied into `--bin-dir`
/// (default: cargo's, `$CARGO_HOME/bin`, usually `~/.cargo/bin`), the runtimes installed with
/// `runtimes install --force [INSTALL OPTIONS]`.
fn install(mut options: Vec<String>) -> anyhow::Result<()> {
    let root = workspace_root();
    let bin_dir = match options.iter().position(|o| o == "--bin-dir") {
        Some(at) => {
            if at + 1 >= options.len() {
                bail!("--bin-dir needs a folder");
            }
            let dir = PathBuf::from(options.remove(at + 1));
            options.remove(at);
            dir
        }
        None => cargo_bin_dir()?,
    };
    step("Build `runtimes`, `runtimes-worker` and the bundled runtimes (one release build)");
    let built = build(&root, true, true)?;
    let worker = built
        .worker
        .context("cargo did not report the runtimes-worker binary")?;
    step(&format!("Install the commands into {}", bin_dir.display()));
    std::fs::create_dir_all(&bin_dir).with_context(|| format!("creating {}", bin_dir.display()))?;
    let runtimes = copy_executable(&built.runtimes, &bin_dir)?;
    copy_executable(&worker, &bin_dir)?;
    step("Install the runtimes (checked, copied atomically; identical files are left as they are)");
    run(Command::new(&runtimes)
        .arg("install")
        .args(&built.libraries)
        .arg("--force")
        .args(options))?;
    if !std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|p| p == bin_dir))
    {
        println!(
            "\nnote: {} is not on PATH: add it, or run {}",
            bin_dir.display(),
            runtimes.display()
        );
    }
    println!("\nDone. Try: runtimes list");
    Ok(())
}

/// Where `cargo install` puts binaries: `$CARGO_INSTALL_ROOT/bin`, `$CARGO_HOME/bin`, else
/// `~/.cargo/bin`.
fn cargo_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(root) = std::env::var_os("CARGO_INSTALL_ROOT") {
        return Ok(PathBuf::from(root).join("bin"));
    }
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(home).join("bin"));
    }
    let home =
        std::env::var_os("HOME").context("neither CARGO_HOME nor HOME is set: pass --bin-dir")?;
    Ok(PathBuf::from(home).join(".cargo").join("bin"))
}

/// Copies an executable into `dir` through a temporary file renamed into place, so a running
/// copy is never overwritten in place; returns the installed path.
fn copy_executable(from: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let name = from
        .file_name()
        .context("an executable without a file name")?;
    let dest = dir.join(name);
    let temp = dir.join(format!(".{}.installing", name.to_string_lossy()));
    std::fs::copy(from, &temp)
        .with_context(|| format!("copying {} to {}", from.display(), temp.display()))?;
    std::fs::rename(&temp, &dest)
        .with_context(|| format!("renaming {} to {}", temp.display(), dest.display()))?;
    println!("installed {}", dest.display());
    Ok(dest)
}

fn main() {
    let task = std::env::args().nth(1);
    let result = match task.as_deref() {
        Some("demo") => match std::env::args().nth(2).as_deref() {
            Some("serve") => demo_serve(std::env::args().skip(3).collect()),
            _ => demo(),
        },
        Some("install-runtimes") => install_runtimes(std::env::args().skip(2).collect()),
        Some("install") => install(std::env::args().skip(2).collect()),
        Some("readme") => readme::readme(),
        _ => {
            eprintln!(
                "usage: cargo demo [serve [SERVE OPTIONS]]\n       cargo xtask install [--bin-dir DIR] [--dir DIR] [--pin]\n       cargo xtask install-runtimes [--dir DIR] [--pin]\n       cargo xtask readme"
            );
            std::process::exit(2);
        }
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
