//! Registers a runtime compiled into the host beside the plugins, and uses both alike.
#![allow(clippy::print_stdout)]
#![forbid(unsafe_code)]

use runtime_api::{Capabilities, Runtime, RuntimeError, TurnOutput, TurnRequest, Value};
use runtime_loader::{Runtimes, SearchPath};

/// A runtime written in the host itself, against the same trait plugins implement.
struct Reverse;

impl Runtime for Reverse {
    const ID: &'static str = "reverse";
    const ALIASES: &'static [&'static str] = &["backwards"];
    const CAPABILITIES: Capabilities = Capabilities::NONE;

    fn new(_config: Value) -> Result<Self, RuntimeError> {
        Ok(Reverse)
    }

    async fn run_turn(&self, request: TurnRequest) -> Result<TurnOutput, RuntimeError> {
        Ok(TurnOutput::new(
            request.prompt.chars().rev().collect::<String>(),
        ))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runtimes = Runtimes::new();
    runtimes.discover(&SearchPath::standard(std::env::args().skip(1)));
    runtimes.register::<Reverse>()?;

    for entry in runtimes.list_runtimes() {
        println!("{} ({})", entry.id, entry.source);
    }
    for name in ["backwards", "parrot"] {
        let output = runtimes
            .resolve(name)?
            .run_turn(TurnRequest::new("in process"))
            .await?;
        println!("{name}: {}", output.content);
    }
    Ok(())
}
