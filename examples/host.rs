//! The host program of README.md's "Using the loader from a host", exactly as shown there
//! (below this header; `cargo test -p host-examples` checks that the two are identical).
//! Run it with `cargo run -p host-examples --example host` from a folder with `./plugins`.
#![allow(clippy::print_stdout)]

use futures::StreamExt;
use runtime_api::{StreamItem, TurnRequest};
use runtime_loader::{Runtimes, SearchPath};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runtimes = Runtimes::new();
    let report = runtimes.discover(&SearchPath::standard(["./plugins"])); // reads manifests only
    print!("{report}"); // what was refused, and why

    let echo = runtimes.resolve("parrot")?; // by id or alias; unknown names fail closed
    let output = echo.run_turn(TurnRequest::new("hello")).await?;
    println!("{} ({} tokens)", output.content, output.usage.total_tokens);

    let mut stream = echo.stream_turn(TurnRequest::new("word by word"));
    while let Some(item) = stream.next().await {
        if let StreamItem::Delta(delta) = item? {
            print!("{}", delta.content);
        }
    }
    Ok(())
}
