//! Resolves a runtime by alias and runs one turn.
#![allow(clippy::print_stdout)]
#![forbid(unsafe_code)]

use runtime_api::TurnRequest;
use runtime_loader::{Runtimes, SearchPath};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runtimes = Runtimes::new();
    runtimes.discover(&SearchPath::standard(std::env::args().skip(1)));

    // `parrot` is the echo runtime's alias; an unknown name is an error listing what exists.
    let runtime = runtimes.resolve("parrot")?;
    let request = TurnRequest::new("Hello from a host program").with_system("Be brief.");
    let output = runtime.run_turn(request).await?;

    println!("{}", output.content);
    println!(
        "finish: {}, tokens: {}",
        output.finish_reason, output.usage.total_tokens
    );
    Ok(())
}
