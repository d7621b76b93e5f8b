//! Installs a lifecycle hook that sees every turn, and a tracing subscriber that also receives
//! the plugins' own log events.
#![allow(clippy::print_stdout)]
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use runtime_api::{RuntimeError, TurnOutput, TurnRequest};
use runtime_loader::{Runtimes, SearchPath, TurnContext, TurnHook};

#[derive(Default)]
struct Meter {
    turns: AtomicU64,
    tokens: AtomicU64,
}

impl TurnHook for Meter {
    fn before_turn(&self, turn: &TurnContext, _request: &TurnRequest) {
        println!("-> {} turn {}", turn.runtime_id, turn.execution_id);
    }

    fn after_turn(&self, _turn: &TurnContext, output: &TurnOutput) {
        self.turns.fetch_add(1, Ordering::Relaxed);
        self.tokens
            .fetch_add(output.usage.total_tokens, Ordering::Relaxed);
    }

    fn on_error(&self, turn: &TurnContext, error: &RuntimeError) {
        println!("!! {} failed: {error}", turn.execution_id);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .init();
    let runtimes = Runtimes::new();
    runtimes.discover(&SearchPath::standard(std::env::args().skip(1)));
    let meter = Arc::new(Meter::default());
    runtimes.add_hook(meter.clone());

    let echo = runtimes.resolve("echo")?;
    echo.run_turn(TurnRequest::new("first turn")).await?;
    echo.run_turn(TurnRequest::new("second turn here")).await?;
    println!(
        "{} turns, {} tokens",
        meter.turns.load(Ordering::Relaxed),
        meter.tokens.load(Ordering::Relaxed)
    );
    Ok(())
}
