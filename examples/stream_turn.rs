//! Streams a turn, printing deltas as they arrive, with a timeout.
#![allow(clippy::print_stdout)]
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::time::Duration;

use futures::StreamExt;
use runtime_api::{StreamItem, TurnRequest, json};
use runtime_loader::{Runtimes, SearchPath};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runtimes = Runtimes::new();
    runtimes.discover(&SearchPath::standard(std::env::args().skip(1)));

    // A fresh instance with its own configuration: 80 ms between words.
    let echo = runtimes
        .new_instance("echo", &json!({"delay_ms": 80}))?
        .with_timeout(Duration::from_secs(10));
    let mut stream = echo.stream_turn(TurnRequest::new("streamed one word at a time"));
    while let Some(item) = stream.next().await {
        match item? {
            StreamItem::Delta(delta) => print!("{}", delta.content),
            StreamItem::Done(output) => println!(
                "\n[{}; {} tokens]",
                output.finish_reason, output.usage.total_tokens
            ),
            _ => {}
        }
        std::io::stdout().flush()?;
    }
    Ok(())
}
