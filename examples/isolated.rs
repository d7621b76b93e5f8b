//! Runs a plugin's turns in a worker process (the *process* isolation level): a crash in the
//! plugin ends the worker, never this host, and the turn ends with a `crashed` error that says
//! how the worker died.
//!
//! The worker is the `runtimes-worker` executable of `runtime-loader`: `cargo install
//! runtime-loader` puts it on `PATH`; in this workspace `cargo build -p runtime-loader` puts
//! it beside the example's executable's folder, where the loader looks. `AGENT_RUNTIMES_WORKER`
//! (or `ProcessOptions::with_worker`) names another.
//!
//! ```sh
//! cargo build -p runtime-loader -p echo-runtime
//! cargo run -p host-examples --example isolated -- target/demo-plugins
//! ```
#![allow(clippy::print_stdout)]

use std::time::Duration;

use futures::StreamExt;
use runtime_api::{ErrorKind, StreamItem, TurnRequest};
use runtime_loader::{Isolation, LoaderOptions, ProcessOptions, Runtimes, SearchPath};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let options = LoaderOptions::from_env()
        .with_isolation(Isolation::Process)
        .with_process(
            ProcessOptions::from_env()
                // At most 1 GiB of address space per worker.
                .with_memory_limit(Some(1 << 30))
                // A turn the plugin will not let go of gets its worker killed after 2 s.
                .with_grace(Duration::from_secs(2)),
        );
    let runtimes = Runtimes::with_options(options);
    runtimes.discover(&SearchPath::standard(std::env::args().skip(1)));

    // Resolving starts the runtime's worker; nothing of the plugin runs in this process.
    let echo = runtimes.resolve("parrot")?;
    println!("{} runs at the {} level", echo.id(), echo.isolation());

    match echo.run_turn(TurnRequest::new("hello from a worker")).await {
        Ok(output) => println!("{}", output.content),
        // The worker died: the message names the plugin file, the runtime and how it died
        // ("killed by SIGSEGV", "exited with status 3") with the last lines of its stderr.
        // The next turn starts a new worker.
        Err(error) if error.kind == ErrorKind::Crashed => println!("crashed: {}", error.message),
        Err(error) => return Err(error.into()),
    }

    let mut stream = echo.stream_turn(TurnRequest::new("word by word, through a pipe"));
    while let Some(item) = stream.next().await {
        if let StreamItem::Delta(delta) = item? {
            print!("{}", delta.content);
        }
    }
    println!();
    Ok(())
}
