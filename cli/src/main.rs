//! `runtimes`: list, inspect, check, install, run and serve agent-runtime plugins.
//!
//! Exit codes: one per kind of failure, listed in `failure::EXIT_CODES` (shown by `--help`).

// A command-line tool: its output is the point.
#![allow(clippy::print_stdout, clippy::print_stderr)]
#![forbid(unsafe_code)]

mod admin;
mod check;
mod conformance;
mod failure;
mod install;
mod list;
mod new;
mod queue;
mod serve;
mod signals;
mod style;
mod turn;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use runtime_loader::{LoaderOptions, Runtimes, SearchPath};
use tracing_subscriber::EnvFilter;

use crate::failure::Failure;
use crate::style::Style;

/// Manage and run agent-runtime plugins.
#[derive(Debug, Parser)]
#[command(name = "runtimes", version, about, long_about = None)]
#[command(
    after_help = after_help()
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// What `--help` adds after the options: the search path and the exit codes.
fn after_help() -> String {
    format!(
        "Plugin folders, in search order: --plugin-dir, then AGENT_RUNTIMES_PATH, then the per-user folder.\n\n{}",
        failure::EXIT_CODES
    )
}

/// Options for every command.
#[derive(Debug, Args)]
struct Global {
    /// A plugin folder searched first (repeatable).
    #[arg(long = "plugin-dir", value_name = "DIR", global = true)]
    plugin_dirs: Vec<PathBuf>,
    /// More logs, plugins' included (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors in the logs.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// When to use colours.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true)]
    color: ColorChoice,
    /// Load plugin files and folders that others can write to (for development).
    #[arg(long, global = true, env = "AGENT_RUNTIMES_ALLOW_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    allow_insecure: bool,
    /// At the process level, let the worker read this file or folder (repeatable, or
    /// comma-separated in the variable).
    #[arg(
        long,
        value_name = "PATH",
        global = true,
        env = "AGENT_RUNTIMES_ALLOW_READ",
        value_delimiter = ','
    )]
    allow_read: Vec<PathBuf>,
    /// At the process level, let the worker read and write this file or folder.
    #[arg(
        long,
        value_name = "PATH",
        global = true,
        env = "AGENT_RUNTIMES_ALLOW_WRITE",
        value_delimiter = ','
    )]
    allow_write: Vec<PathBuf>,
    /// At the process level, let the worker start this program (a path).
    #[arg(
        long,
        value_name = "PROGRAM",
        global = true,
        env = "AGENT_RUNTIMES_ALLOW_RUN",
        value_delimiter = ','
    )]
    allow_run: Vec<PathBuf>,
    /// At the process level, let the worker connect over TCP: `any`, a port, `host:port` or
    /// a URL (only the port is enforced; a host given by name also grants name resolution:
    /// UDP sockets and TCP port 53), or `dns` (name resolution alone).
    #[arg(
        long,
        value_name = "any|PORT|HOST:PORT|URL|dns",
        global = true,
        env = "AGENT_RUNTIMES_ALLOW_NET",
        value_delimiter = ','
    )]
    allow_net: Vec<String>,
    /// At the process level, pass this environment variable to the worker.
    #[arg(
        long,
        value_name = "NAME",
        global = true,
        env = "AGENT_RUNTIMES_ALLOW_ENV",
        value_delimiter = ','
    )]
    allow_env: Vec<String>,
    /// At the process level, grant one runtime (by id) more, beyond the `--allow-*` grants
    /// every runtime gets: `RUNTIME=read:PATH`, `write:PATH`, `run:PROGRAM`, `net:any`,
    /// `net:PORT` (or `HOST:PORT`, a URL), `net:dns`, `env:NAME` (repeatable; `;`-separated in
    /// the variable).
    #[arg(
        long = "grant",
        value_name = "RUNTIME=KIND:VALUE",
        global = true,
        env = "AGENT_RUNTIMES_GRANT",
        value_delimiter = ';',
        value_parser = parse_grant
    )]
    grants: Vec<(String, runtime_loader::sandbox::Policy)>,
    /// At the process level, take from one runtime (by id, or `*` for every runtime) what it
    /// declares or is granted: `RUNTIME=read[:PATH]`, `write[:PATH]`, `run[:PROGRAM]`,
    /// `net[:PORT]`, `net:dns`, `env[:NAME]` (without a value, all of that kind), or
    /// `RUNTIME=all`.
    /// Deny wins over every grant (repeatable; `;`-separated in the variable).
    #[arg(
        long = "deny",
        value_name = "RUNTIME=KIND[:VALUE]",
        global = true,
        env = "AGENT_RUNTIMES_DENY",
        value_delimiter = ';',
        value_parser = parse_denial
    )]
    denials: Vec<(String, Vec<runtime_loader::sandbox::Denial>)>,
    /// Run workers even when this kernel lacks a sandbox mechanism (what is there applies).
    #[arg(long, global = true, env = "AGENT_RUNTIMES_ACCEPT_WEAKER_SANDBOX", value_parser = clap::builder::BoolishValueParser::new())]
    accept_weaker_sandbox: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List installed runtimes (loads no library).
    List {
        /// Also show rejected and shadowed plugin files, with the reasons, and the folders
        /// searched.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one runtime's entry (with its configuration schema), or why it was rejected.
    Info {
        /// The runtime's id or alias.
        name: String,
        /// Check this configuration (JSON) without creating the runtime: prints every problem
        /// and exits 3 when there is one.
        #[arg(long, value_name = "JSON")]
        config: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validate plugin files without installing them.
    Check {
        /// The library files; a folder stands for the plugin libraries in it.
        #[arg(required_unless_present = "sandbox")]
        files: Vec<PathBuf>,
        /// Print which sandbox mechanisms this kernel provides for the process level (and
        /// what a runtime gets when one is missing).
        #[arg(long, conflicts_with_all = ["load", "conformance"])]
        sandbox: bool,
        /// Also load each file and run a smoke turn through each runtime.
        #[arg(long)]
        load: bool,
        /// The configuration for the smoke turn's runtimes (JSON).
        #[arg(long, value_name = "JSON")]
        config: Option<String>,
        /// Run the plugin contract's conformance checks against each runtime instead (one
        /// line per check; exit 3 if any fails).
        #[arg(long, conflicts_with = "load")]
        conformance: bool,
        /// With --conformance: the most seconds one check may take.
        #[arg(
            long,
            value_name = "SECS",
            default_value_t = 60,
            requires = "conformance"
        )]
        time_limit: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check plugin files, then copy them into a plugin folder atomically.
    Install {
        /// The library files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The plugin folder (default: the per-user folder).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Replace the files that provide the same runtime ids.
        #[arg(long)]
        force: bool,
        /// Record each file's sha256 in the folder's plugins.lock.
        #[arg(long)]
        pin: bool,
    },
    /// Remove the plugin file that provides a runtime.
    Uninstall {
        /// The runtime's id.
        id: String,
        /// The plugin folder (default: the per-user folder).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Create a plugin crate: a streaming runtime skeleton, a conformance test, a README.
    New {
        /// The plugin's name: its package name and its runtime id.
        name: String,
        /// The folder to create (default: ./NAME); it must not exist or be empty.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run one turn and print the answer.
    Run(turn::TurnArgs),
    /// Run one turn and print its deltas as they arrive.
    Stream(turn::TurnArgs),
    /// Serve every installed runtime over an OpenAI-compatible HTTP API.
    Serve(serve::ServeArgs),
    /// Take turn jobs from a Redis queue and run them with the installed runtimes.
    Worker(queue::WorkerArgs),
    /// Send one turn to a Redis queue and print its deltas as they arrive.
    Submit(queue::SubmitArgs),
    /// Look at a Redis queue.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Clear a runtime's failed mark in a running `runtimes serve` (its workers crashed too
    /// often): new turns may run it again. Needs the server's API key.
    ClearFailed(admin::ClearFailedArgs),
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// The backlog (jobs waiting, running, dead-lettered) and the live workers with their
    /// runtimes.
    Status(queue::StatusArgs),
}

impl Command {
    /// Whether the command writes JSON on stdout (`--json`): then a failure is a JSON object
    /// there too.
    fn json(&self) -> bool {
        match self {
            Command::List { json, .. }
            | Command::Info { json, .. }
            | Command::Check { json, .. } => *json,
            Command::Run(args) | Command::Stream(args) => args.json,
            Command::Submit(args) => args.json(),
            _ => false,
        }
    }
}

fn init_logs(global: &Global, style: &Style) {
    let level = if global.quiet {
        "error"
    } else {
        match global.verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    let filter = EnvFilter::try_from_env("RUNTIMES_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| style::LogWriter)
        .with_ansi(style.stderr_color)
        .with_target(global.verbose >= 2)
        .try_init();
}

impl Global {
    /// Strict checks (unless `--allow-insecure`), and how workers are run at the process
    /// level from the environment (`AGENT_RUNTIMES_WORKER_MEMORY`), for every command.
    fn options(&self) -> LoaderOptions {
        LoaderOptions::STRICT
            .with_allow_insecure(self.allow_insecure)
            .with_process(self.process_options())
    }

    /// The process level's options: `AGENT_RUNTIMES_WORKER_MEMORY`, and the grants given.
    fn process_options(&self) -> runtime_loader::ProcessOptions {
        use runtime_loader::sandbox::{Net, Policy};
        let mut grants = Policy::default();
        grants.read.clone_from(&self.allow_read);
        grants.write.clone_from(&self.allow_write);
        grants.run.clone_from(&self.allow_run);
        let mut ports = Vec::new();
        for net in &self.allow_net {
            if net.eq_ignore_ascii_case("any") {
                grants.net = Net::Any;
            } else if net.eq_ignore_ascii_case("dns") {
                grants.dns = true;
            } else if let Some(entry) = runtime_loader::sandbox::net::parse_entry(net) {
                ports.push(entry.port);
                grants.dns |= entry.resolves;
            } else {
                tracing::warn!(
                    "--allow-net {}: not `any`, a port or host:port; ignored",
                    runtime_text::clean(net)
                );
            }
        }
        if grants.net != Net::Any && !ports.is_empty() {
            ports.sort_unstable();
            ports.dedup();
            grants.net = Net::Ports(ports);
        }
        let pass_env: Vec<&'static str> = self
            .allow_env
            .iter()
            .map(|name| &*Box::leak(name.clone().into_boxed_str()))
            .collect();
        runtime_loader::ProcessOptions::from_env()
            .with_grants(grants)
            .with_runtime_grants(self.grants.clone())
            .with_runtime_denials(
                self.denials
                    .iter()
                    .flat_map(|(runtime, denials)| {
                        denials.iter().map(|d| (runtime.clone(), d.clone()))
                    })
                    .collect(),
            )
            .with_accept_weaker_sandbox(self.accept_weaker_sandbox)
            .with_pass_env(Box::leak(pass_env.into_boxed_slice()))
    }

    fn search_path(&self) -> SearchPath {
        SearchPath::standard(self.plugin_dirs.iter().cloned())
    }

    /// A registry over the search path.
    fn registry(&self) -> Runtimes {
        self.registry_with(self.options())
    }

    /// A registry over the search path with these options.
    fn registry_with(&self, options: LoaderOptions) -> Runtimes {
        let runtimes = Runtimes::with_options(options);
        runtimes.discover(&self.search_path());
        runtimes
    }
}

async fn dispatch(cli: Cli, style: Style) -> Result<(), Failure> {
    let global = &cli.global;
    match cli.command {
        // `--all` shows every verdict, so it hashes pinned libraries now, as `check` does;
        // plain `list` leaves that to the load.
        Command::List { all, json } => list::list(
            &global.registry_with(global.options().with_eager_pins(all)),
            all,
            json,
            &style,
        ),
        Command::Info { name, config, json } => match config {
            None => list::info(
                &global.registry(),
                &name,
                json,
                &style,
                &global.options().process,
            ),
            Some(config) => list::check_config(&global.registry(), &name, &config, json),
        },
        Command::Check {
            sandbox: true,
            json,
            ..
        } => check::sandbox(&global.registry(), json, &style),
        Command::Check {
            files,
            conformance: true,
            config,
            json,
            time_limit,
            ..
        } => {
            let limit = std::time::Duration::from_secs(time_limit);
            conformance::check(
                global.options(),
                &check::expand_folders(&files)?,
                config.as_deref(),
                limit,
                json,
                &style,
            )
            .await
        }
        Command::Check {
            files,
            load,
            config,
            json,
            ..
        } => {
            check::check(
                global.options(),
                &files,
                load,
                config.as_deref(),
                json,
                &style,
            )
            .await
        }
        Command::Install {
            files,
            dir,
            force,
            pin,
        } => install::install(global.options(), &files, dir, force, pin, &style),
        Command::Uninstall { id, dir } => install::uninstall(global, &id, dir, &style),
        Command::New { name, dir } => new::new(&name, dir, &style),
        Command::Run(args) => turn::run(&global.registry(), args, &style).await,
        Command::Stream(args) => turn::stream(&global.registry(), args, &style).await,
        Command::Serve(args) => serve::serve(|| global.registry(), args).await,
        Command::Worker(args) => queue::worker(global, args).await,
        Command::Submit(args) => queue::submit(args, &style).await,
        Command::Queue(QueueCommand::Status(args)) => queue::status(args, &style).await,
        Command::ClearFailed(args) => admin::clear_failed(args, &style).await,
    }
}

fn main() -> ExitCode {
    // Before any thread starts, so every thread (a plugin's too) inherits the blocked mask.
    signals::take_over();
    let cli = Cli::parse();
    let json = cli.command.json();
    let style = Style::new(cli.global.color);
    init_logs(&cli.global, &style);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    // Ctrl-C ends the command within a second whatever the plugin does: `run` and `stream`
    // end the turn at once; should the plugin hold the thread that would notice, this watch
    // on another thread ends the process.
    let watch_style = style.clone();
    // (`serve`, `worker` and `submit` shut down on their own terms: a grace period, a cancel.)
    if matches!(cli.command, Command::Run(_) | Command::Stream(_)) {
        let interrupted = signals::interrupt();
        runtime.spawn(async move {
            interrupted.await;
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            report(&Failure::Interrupted, json, &watch_style);
            std::process::exit(i32::from(Failure::Interrupted.code()));
        });
    }
    let result = runtime.block_on(dispatch(cli, style.clone()));
    // A plugin thread that still runs does not hold the exit.
    runtime.shutdown_background();
    let _ = std::io::stdout().flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            report(&failure, json, &style);
            ExitCode::from(failure.code())
        }
    }
}

/// Says why the command failed, once: on stderr, or with `--json` as one JSON object on
/// stdout (a line of its own, so NDJSON stays NDJSON), unless the command's JSON output
/// already holds the details, when stderr gets the summary.
fn report(failure: &Failure, json: bool, style: &Style) {
    if json && !matches!(failure, Failure::Reported(_)) {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}", style::json_text(&failure.to_json(), false));
        let _ = stdout.flush();
    } else {
        eprintln!("{} {}", style.error("error:"), failure.message());
    }
}

/// One `--grant RUNTIME=KIND:VALUE`: the runtime's id and what it is granted.
fn parse_grant(given: &str) -> Result<(String, runtime_loader::sandbox::Policy), String> {
    use runtime_loader::sandbox::{Net, Policy};
    let usage = "expected RUNTIME=KIND:VALUE, KIND one of read, write, run, net, env (e.g. `openai=net:443`, `agent=read:/srv/docs`)";
    let (runtime, grant) = given.split_once('=').ok_or(usage)?;
    let (kind, value) = grant.split_once(':').ok_or(usage)?;
    let runtime = runtime.trim();
    if runtime.is_empty() || value.is_empty() {
        return Err(usage.to_owned());
    }
    let policy = match kind {
        "read" => Policy::default().with_read(value),
        "write" => Policy::default().with_write(value),
        "run" => Policy::default().with_run(value),
        "net" if value.eq_ignore_ascii_case("any") => Policy::default().with_net(Net::Any),
        "net" if value.eq_ignore_ascii_case("dns") => {
            let mut policy = Policy::default();
            policy.dns = true;
            policy
        }
        "net" => match runtime_loader::sandbox::net::parse_entry(value) {
            Some(entry) => entry.policy(),
            None => {
                return Err(format!(
                    "`net:{value}`: not `any`, a port, host:port or a URL"
                ));
            }
        },
        "env" => {
            let mut policy = Policy::default();
            policy.env.push(value.to_owned());
            policy
        }
        other => return Err(format!("`{other}` is no kind of grant; {usage}")),
    };
    Ok((runtime.to_owned(), policy))
}

/// One `--deny RUNTIME=KIND[:VALUE]` (or `RUNTIME=all`): the runtime's id (or `*`) and what
/// it is denied.
fn parse_denial(given: &str) -> Result<(String, Vec<runtime_loader::sandbox::Denial>), String> {
    use runtime_loader::sandbox::Denial;
    let usage = "expected RUNTIME=KIND[:VALUE] or RUNTIME=all, KIND one of read, write, run, net, env (e.g. `agent=net`, `openai=env:OPENAI_API_KEY`, `*=write`)";
    let (runtime, denial) = given.split_once('=').ok_or(usage)?;
    let runtime = runtime.trim();
    if runtime.is_empty() {
        return Err(usage.to_owned());
    }
    let (kind, value) = match denial.split_once(':') {
        Some((kind, value)) if !value.is_empty() => (kind, Some(value)),
        Some(_) => return Err(usage.to_owned()),
        None => (denial, None),
    };
    let path = |v: Option<&str>| v.map(std::path::PathBuf::from);
    let denials = match kind {
        "all" if value.is_none() => Denial::everything(),
        "read" => vec![Denial::Read(path(value))],
        "write" => vec![Denial::Write(path(value))],
        "run" => vec![Denial::Run(path(value))],
        "net" => match value {
            None => vec![Denial::Net(None)],
            Some(dns) if dns.eq_ignore_ascii_case("dns") => vec![Denial::Dns],
            Some(port) => match port.parse::<u16>() {
                Ok(port) => vec![Denial::Net(Some(port))],
                Err(_) => {
                    return Err(format!(
                        "`net:{port}`: not a port (deny `net` for all network)"
                    ));
                }
            },
        },
        "env" => vec![Denial::Env(value.map(str::to_owned))],
        other => return Err(format!("`{other}` is no kind of denial; {usage}")),
    };
    Ok((runtime.to_owned(), denials))
}
