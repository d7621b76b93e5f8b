//! `cargo xtask readme`: runs the shell blocks of README.md's install, plugin and scale-out
//! sections as written, in a scratch home, so the README cannot drift from the program.
//!
//! Each section's ```` ```sh ```` blocks run in order in one `bash -euo pipefail` per section:
//! - *Installing*, from the checkout (it builds there);
//! - *Writing a runtime plugin*, from an empty work folder (it creates `shout/` there);
//! - *Scaling out*, from the checkout, with the block's last line (the HTTP front, which runs
//!   until stopped) in the background: once the front answers `/v1/models`, a turn is submitted
//!   through the queue, the backlog is shown, and everything the block started is stopped.
//!
//! The scratch home (`target/readme/home`) stands for a newcomer's: its plugin folder starts
//! empty, and `cargo xtask install` puts `runtimes` in `target/readme/cargo-root/bin`
//! (`CARGO_INSTALL_ROOT`), first on `PATH`. Cargo's and rustup's own homes are kept (no
//! download again); builds are offline, from what the checkout's build already fetched.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The sections whose blocks run, by heading.
const INSTALLING: &str = "## Installing";
const PLUGIN: &str = "## Writing a runtime plugin";
const SCALING: &str = "## Scaling out: turns as jobs on Redis";

/// The ```` ```sh ```` blocks of the section under `heading` (up to the next `## `).
fn blocks(readme: &str, heading: &str) -> anyhow::Result<Vec<String>> {
    let start = readme
        .lines()
        .position(|line| line.trim_end() == heading)
        .with_context(|| format!("README.md has no section {heading:?}"))?;
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in readme.lines().skip(start + 1) {
        if current.is_none() && line.starts_with("## ") {
            break;
        }
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(block), "```") => {
                blocks.push(block.join("\n"));
                current = None;
            }
            (Some(block), _) => block.push(line),
            (None, _) => {}
        }
    }
    if blocks.is_empty() {
        bail!("the section {heading:?} of README.md has no sh block");
    }
    Ok(blocks)
}

/// The scratch environment: a newcomer's empty home, with cargo's and rustup's homes kept.
struct Scratch {
    root: PathBuf,
    home: PathBuf,
    cargo_root: PathBuf,
}

impl Scratch {
    fn new(workspace: &Path) -> anyhow::Result<Self> {
        let root = workspace.join("target").join("readme");
        if root.exists() {
            std::fs::remove_dir_all(&root).context("clearing target/readme")?;
        }
        let scratch = Self {
            home: root.join("home"),
            cargo_root: root.join("cargo-root"),
            root,
        };
        std::fs::create_dir_all(scratch.home.join("work"))?;
        Ok(scratch)
    }

    /// `bash -euo pipefail -c SCRIPT` in `cwd`, in the scratch environment.
    fn bash(&self, script: &str, cwd: &Path) -> anyhow::Result<Command> {
        let real_home = std::env::var_os("HOME").context("HOME is not set")?;
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map_or_else(|| PathBuf::from(&real_home).join(".cargo"), PathBuf::from);
        let rustup_home = std::env::var_os("RUSTUP_HOME")
            .map_or_else(|| PathBuf::from(&real_home).join(".rustup"), PathBuf::from);
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.cargo_root.join("bin"), cargo_home.join("bin")];
        paths.extend(std::env::split_paths(&path));
        let mut command = Command::new("bash");
        command
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(cwd)
            .env("HOME", &self.home)
            .env("CARGO_HOME", cargo_home)
            .env("RUSTUP_HOME", rustup_home)
            .env("CARGO_INSTALL_ROOT", &self.cargo_root)
            .env("CARGO_NET_OFFLINE", "true")
            .env("PATH", std::env::join_paths(paths)?)
            .env("NO_COLOR", "1")
            .env_remove("XDG_DATA_HOME")
            .env_remove("AGENT_RUNTIMES_PATH")
            .env_remove("CARGO_TARGET_DIR");
        Ok(command)
    }
}

fn run_section(scratch: &Scratch, heading: &str, script: &str, cwd: &Path) -> anyhow::Result<()> {
    crate::step(&format!("README {heading:?}, as written"));
    println!("{script}");
    let started = Instant::now();
    let status = scratch
        .bash(script, cwd)?
        .status()
        .context("running bash")?;
    if !status.success() {
        bail!("README section {heading:?} failed ({status})");
    }
    println!("-- {heading:?} took {:.0?}", started.elapsed());
    Ok(())
}

/// Waits until `url` answers (the front is up), the front's process still running.
fn wait_for(url: &str, front: &mut Child, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let answered = Command::new("curl")
            .args(["-fsS", "-o", "/dev/null", "--max-time", "2", url])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if answered {
            return Ok(());
        }
        if let Some(status) = front.try_wait()? {
            bail!("the scale-out block ended ({status}) before {url} answered");
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer within {limit:?}");
        }
        // curl's own connect attempt is the wait: a refused connection returns at once.
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn scale_out(scratch: &Scratch, workspace: &Path, blocks: &[String]) -> anyhow::Result<()> {
    crate::step(&format!("README {SCALING:?}, as written"));
    let script = blocks.join("\n");
    println!("{script}");
    // The block ends with the front in the foreground: run the whole block in the background,
    // in a process group of its own, so that it and the workers it started can be stopped.
    let mut front = {
        let mut command = scratch.bash(&script, workspace)?;
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        command.spawn().context("starting the scale-out block")?
    };
    let result = (|| {
        wait_for(
            "http://127.0.0.1:8700/v1/models",
            &mut front,
            Duration::from_secs(60),
        )?;
        // What the section says to do then: a turn from a shell, the backlog.
        let then = r#"set -a; . target/redis/env; set +a
curl -s http://127.0.0.1:8700/v1/models
runtimes submit echo "hello" --redis "$AGENT_RUNTIMES_REDIS_URL" | grep -q hello
runtimes queue status --redis "$AGENT_RUNTIMES_REDIS_URL""#;
        println!("{then}");
        let status = scratch.bash(then, workspace)?.status()?;
        if !status.success() {
            bail!("the commands after the scale-out block failed ({status})");
        }
        Ok(())
    })();
    // Stop the block's group: the front and the workers (SIGTERM: they shut down cleanly).
    let group = front.id().to_string();
    let _ = Command::new("kill")
        .args(["-TERM", "--", &format!("-{group}")])
        .status();
    let _ = front.wait();
    result
}

/// `cargo xtask readme`.
pub fn readme() -> anyhow::Result<()> {
    let workspace = crate::workspace_root();
    let text = std::fs::read_to_string(workspace.join("README.md")).context("reading README.md")?;
    let scratch = Scratch::new(&workspace)?;
    run_section(
        &scratch,
        INSTALLING,
        &blocks(&text, INSTALLING)?.join("\n"),
        &workspace,
    )?;
    run_section(
        &scratch,
        PLUGIN,
        &blocks(&text, PLUGIN)?.join("\n"),
        &scratch.home.join("work"),
    )?;
    scale_out(&scratch, &workspace, &blocks(&text, SCALING)?)?;
    println!(
        "\nEvery README block ran as written (scratch home: {}).",
        scratch.root.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_gives_its_sh_blocks_only() {
        let readme = "# x\n## A\ntext\n```sh\none\ntwo\n```\n```rust\nno\n```\n```sh\nthree\n```\n## B\n```sh\nfour\n```\n";
        assert_eq!(blocks(readme, "## A").unwrap(), ["one\ntwo", "three"]);
        assert_eq!(blocks(readme, "## B").unwrap(), ["four"]);
        assert!(blocks(readme, "## C").is_err());
        assert!(blocks("## A\ntext\n", "## A").is_err());
    }

    #[test]
    fn the_readme_has_every_section_the_task_runs() {
        let text = std::fs::read_to_string(crate::workspace_root().join("README.md")).unwrap();
        for heading in [INSTALLING, PLUGIN, SCALING] {
            assert!(!blocks(&text, heading).unwrap().is_empty(), "{heading}");
        }
    }
}
