//! Project tasks, run through cargo aliases (see `.cargo/config.toml`).
//!
//! `cargo demo`: builds the plugins and the `runtimes` command, installs the plugins into a
//! fresh demo plugin folder (`target/demo-plugins`), lists them, runs and streams an echo turn,
//! and runs a host example against the same folder.
//!
//! `cargo demo serve [SERVE OPTIONS]`: builds and installs the same plugins, then serves them
//! with `runtimes serve` (the OpenAI-compatible HTTP API) until Ctrl-C.
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

/// Builds the packages (`release` or the dev profile) and returns the artifacts cargo
/// reports: (libraries, runtimes binary).
fn build(root: &Path, release: bool) -> anyhow::Result<(Vec<PathBuf>, PathBuf)> {
    let mut command = cargo();
    command.current_dir(root).args([
        "build",
        "--message-format=json-render-diagnostics",
        "-p",
        "runtimes-cli",
    ]);
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
        "$ cargo build{} -p runtimes-cli -p <plugins>",
        if release { " --release" } else { "" }
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
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        if let Some(executable) = message["executable"]
            .as_str()
            .filter(|e| e.ends_with("runtimes"))
        {
            runtimes = Some(PathBuf::from(executable));
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
    Ok((libraries, runtimes))
}

/// Builds the plugins and `runtimes`, and installs the plugins into a fresh
/// `target/demo-plugins`; returns the libraries built, the `runtimes` binary and the folder.
fn install_demo(root: &Path) -> anyhow::Result<(Vec<PathBuf>, PathBuf, PathBuf)> {
    step("Build the plugins and the `runtimes` command");
    let (libraries, runtimes) = build(root, false)?;
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
    let (libraries, runtimes) = build(&root, true)?;
    step("Install them (checked, copied atomically; identical files are left as they are)");
    run(Command::new(&runtimes)
        .arg("install")
        .args(&libraries)
        .arg("--force")
        .args(options))?;
    println!("\nDone. Try: runtimes list");
    Ok(())
}

fn main() {
    let task = std::env::args().nth(1);
    let result = match task.as_deref() {
        Some("demo") => match std::env::args().nth(2).as_deref() {
            Some("serve") => demo_serve(std::env::args().skip(3).collect()),
            _ => demo(),
        },
        Some("install-runtimes") => install_runtimes(std::env::args().skip(2).collect()),
        _ => {
            eprintln!(
                "usage: cargo demo [serve [SERVE OPTIONS]]\n       cargo xtask install-runtimes [--dir DIR] [--pin]"
            );
            std::process::exit(2);
        }
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
