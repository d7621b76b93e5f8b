//! `command`: a runtime that drives an external program — an agent CLI, a script, any
//! command that reads a prompt and writes an answer.
//!
//! Each turn starts the configured program in a process group of its own, gives it the
//! prompt on stdin or as its last argument, and streams its stdout line by line as text
//! deltas (each line keeps its newline, so the deltas concatenate to the final content) and
//! its stderr lines as thinking deltas (or ignores them). Exit status 0 is success; any other
//! status is an error whose message carries the tail of stderr and whose metadata carries the
//! exit code. Cancelling the turn (dropping its future or stream, or `cancel` by execution
//! id), or its timeout, kills the whole process group with `SIGKILL`, so a program that
//! ignores `SIGTERM` or forks children leaves nothing behind. When the program itself exits,
//! whatever it left running in its group is killed too.
//!
//! No shell is involved unless the config sets `shell: true`; then `program` is a script for
//! `/bin/sh -c`, and `args` (and the prompt in `arg` mode) are its positional parameters
//! `$1`, `$2`, ….
//!
//! # Config
//!
//! | key | meaning |
//! | --- | --- |
//! | `program` (required) | the program (looked up in `PATH` when it has no `/`), or the script when `shell` is true |
//! | `args` | its arguments, a list of strings |
//! | `env` | variables to set, an object of strings (the rest of the environment is inherited) |
//! | `cwd` | its working directory |
//! | `timeout_ms` | the longest a turn may run before the group is killed (default: none) |
//! | `prompt_mode` | `"stdin"` (default): the prompt is written to stdin, which is then closed; `"arg"`: appended as the last argument; `"none"` |
//! | `stderr_as` | `"thinking"` (default) or `"ignore"` |
//! | `shell` | run `program` with `/bin/sh -c` (default false) |
//!
//! The program also gets `AGENT_RUNTIMES_EXECUTION_ID` (the turn's execution id) and, when the
//! request names a model, `AGENT_RUNTIMES_MODEL`. The history, system prompt and tools of a
//! request are not passed on: the runtime does not declare those capabilities.
//!
//! # Platforms
//!
//! Unix only: process groups and `killpg` are what make "nothing left behind" hold. On other
//! platforms the library builds, but creating the runtime fails with an `unsupported` error.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use runtime_api::config::TypedConfig;
use runtime_api::{Capabilities, Runtime, RuntimeError, StreamItem, TurnOutput, TurnRequest};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[cfg(unix)]
mod unix;

#[cfg(all(test, unix))]
mod tests;

/// How the prompt reaches the program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum PromptMode {
    /// Written to stdin, which is then closed.
    #[default]
    Stdin,
    /// Appended as the last argument.
    Arg,
    /// Not passed.
    None,
}

/// What becomes of the program's stderr lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum StderrAs {
    /// Thinking deltas.
    #[default]
    Thinking,
    /// Nothing (its tail still goes into error messages).
    Ignore,
}

// The schema in the manifest (`config.schema.json`, kept current by the crate's tests), the
// checks of `validate_config` and the value `new` builds with all follow from this type; its
// doc comments are the schema's descriptions.
/// The configuration of the command runtime: the program, how it gets the prompt, its limits.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "command runtime configuration")]
pub struct Config {
    /// The program (looked up in PATH when it has no /), or the script when shell is true.
    #[schemars(length(min = 1))]
    program: String,
    /// Its arguments.
    #[serde(default)]
    args: Vec<String>,
    /// Variables to set (the rest of the environment is inherited).
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Its working directory.
    #[serde(default)]
    cwd: Option<PathBuf>,
    /// The longest a turn may run before the group is killed (default: none).
    #[serde(default)]
    #[schemars(range(min = 1))]
    timeout_ms: Option<u64>,
    /// How the prompt reaches the program.
    #[serde(default)]
    prompt_mode: PromptMode,
    /// What its stderr lines become.
    #[serde(default)]
    stderr_as: StderrAs,
    /// Run program with /bin/sh -c.
    #[serde(default)]
    shell: bool,
}

impl Config {
    /// The problems the schema cannot express, for `validate_config`: a program that is not
    /// there, a working folder that is not one, variable names the OS refuses.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.program.trim().is_empty() {
            problems.push("`program` is empty".to_owned());
        } else if !self.shell && find_program(&self.program).is_none() {
            problems.push(format!(
                "`program` {:?} is not an executable file{}",
                self.program,
                if self.program.contains('/') {
                    ""
                } else {
                    " in PATH"
                }
            ));
        }
        if let Some(cwd) = &self.cwd {
            if !cwd.is_dir() {
                problems.push(format!("`cwd` {} is not a directory", cwd.display()));
            }
        }
        for name in self.env.keys() {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                problems.push(format!("`env` has an invalid variable name {name:?}"));
            }
        }
        problems
    }
}

/// Whether `program` names an executable file, directly or through `PATH`.
fn find_program(program: &str) -> Option<PathBuf> {
    let is_executable = |path: &std::path::Path| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            path.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        }
        #[cfg(not(unix))]
        {
            path.is_file()
        }
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return is_executable(&path).then_some(path);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| is_executable(path))
}

/// The `command` runtime: see the [crate] documentation.
#[derive(Debug)]
pub struct CommandRuntime {
    config: Arc<Config>,
}

impl TypedConfig for CommandRuntime {
    type Config = Config;

    fn check_config(config: &Config) -> Vec<String> {
        config.problems()
    }

    fn from_config(config: Config) -> Result<Self, RuntimeError> {
        if cfg!(not(unix)) {
            return Err(RuntimeError::unsupported(
                "the command runtime supports Unix only (it relies on process groups)",
            ));
        }
        if config.program.trim().is_empty() {
            return Err(RuntimeError::invalid_config("`program` is empty"));
        }
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

impl Runtime for CommandRuntime {
    const ID: &'static str = "command";
    const DISPLAY_NAME: &'static str = "Command";
    const DESCRIPTION: &'static str = "Runs a configured program: prompt in, stdout streamed out, process group killed on cancel.";
    const CAPABILITIES: Capabilities = Capabilities::STREAMING
        .with(Capabilities::THINKING)
        .with(Capabilities::CONFIG_VALIDATION);

    // CONFIG_SCHEMA, validate_config and new, from `Config`.
    runtime_api::typed_config!("config.schema.json");

    /// The one program it runs, its working folder, and `PATH` to find the program by name.
    const PERMISSIONS: &'static str =
        r#"{"run": ["{config:program}"], "read": ["{config:cwd}"], "env": ["PATH"]}"#;

    async fn run_turn(&self, request: TurnRequest) -> Result<TurnOutput, RuntimeError> {
        let mut stream = Box::pin(turn(Arc::clone(&self.config), request));
        while let Some(item) = stream.next().await {
            if let StreamItem::Done(output) = item? {
                return Ok(output);
            }
        }
        Err(RuntimeError::internal("the turn ended without a result"))
    }

    fn stream_turn(
        self: Arc<Self>,
        request: TurnRequest,
    ) -> impl Stream<Item = Result<StreamItem, RuntimeError>> + Send + 'static {
        turn(Arc::clone(&self.config), request)
    }

    async fn health(&self) -> Result<String, RuntimeError> {
        if self.config.shell {
            return Ok("runs its script with /bin/sh -c".to_owned());
        }
        match find_program(&self.config.program) {
            Some(path) => Ok(format!("runs {}", path.display())),
            None => Err(RuntimeError::unavailable(format!(
                "the program {:?} is not an executable file",
                self.config.program
            ))),
        }
    }
}

#[cfg(unix)]
fn turn(
    config: Arc<Config>,
    request: TurnRequest,
) -> impl Stream<Item = Result<StreamItem, RuntimeError>> + Send + 'static {
    unix::turn(config, request)
}

#[cfg(not(unix))]
fn turn(
    _config: Arc<Config>,
    _request: TurnRequest,
) -> impl Stream<Item = Result<StreamItem, RuntimeError>> + Send + 'static {
    futures::stream::once(async {
        Err(RuntimeError::unsupported(
            "the command runtime supports Unix only (it relies on process groups)",
        ))
    })
}

runtime_api::export_plugin!(CommandRuntime);
