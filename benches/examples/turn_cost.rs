//! Runs N echo turns one after another, for instruction counts under callgrind: the cost of
//! one turn is `(instructions(N) - instructions(0)) / N`, whatever the machine's load.
//!
//! ```sh
//! cargo build --release -p echo-runtime && cargo build --release -p runtime-benches --example turn_cost
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/turn_cost \
//!     <plugin|in_process|direct|threads|stream_plugin|stream_direct> <N> <folder with libecho_runtime.so>
//! ```
//! The `stream_*` subjects stream one turn of N deltas instead (the cost of one delta).
//! (`scripts/turn-cost.sh` runs every subject at N = 0 and N = 20,000 and prints the table.)

use std::sync::Arc;

use echo_runtime::Echo;
use futures::StreamExt as _;
use runtime_api::{Runtime, StreamItem, TurnRequest, Value};
use runtime_loader::{Isolation, LoaderOptions, Runtimes, SearchPath};

fn main() {
    let mut args = std::env::args().skip(1);
    let subject = args.next().unwrap_or_else(|| "plugin".to_owned());
    let turns: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let folder = args.next().unwrap_or_else(|| ".".to_owned());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let plugins = Runtimes::with_options(LoaderOptions::STRICT.with_allow_insecure(true));
    plugins.discover(&SearchPath::empty().with_dir(folder));
    let in_process = Runtimes::with_options(LoaderOptions::STRICT);
    in_process.register::<Echo>().expect("echo registers");
    let direct = Arc::new(Echo::new(Value::Null).expect("echo builds"));
    let handle = match subject.as_str() {
        "plugin" | "stream_plugin" => plugins
            .resolve("echo")
            .expect("echo resolves")
            .with_isolation(Isolation::Inline),
        "threads" => plugins
            .resolve("echo")
            .expect("echo resolves")
            .with_isolation(Isolation::Threads),
        _ => in_process
            .resolve("echo")
            .expect("in-process")
            .with_isolation(Isolation::Inline),
    };
    if let Some(streamed) = subject.strip_prefix("stream_") {
        // One warm-up stream, then one stream of N deltas ("a " N times).
        rt.block_on(async {
            for prompt in ["a ".to_owned(), "a ".repeat(turns as usize)] {
                let mut items = 0u64;
                if streamed == "direct" {
                    let stream = Arc::clone(&direct).stream_turn(TurnRequest::new(prompt));
                    let mut stream = std::pin::pin!(stream);
                    while let Some(item) = stream.next().await {
                        items += u64::from(matches!(item.expect("item"), StreamItem::Delta(_)));
                    }
                } else {
                    let mut stream = handle.stream_turn(TurnRequest::new(prompt));
                    while let Some(item) = stream.next().await {
                        items += u64::from(matches!(item.expect("item"), StreamItem::Delta(_)));
                    }
                }
                std::hint::black_box(items);
            }
        });
        return;
    }
    // One warm-up turn, so that N = 0 includes every one-time cost.
    rt.block_on(async {
        handle
            .run_turn(TurnRequest::new("hello world"))
            .await
            .expect("turn");
        direct
            .run_turn(TurnRequest::new("hello world"))
            .await
            .expect("turn");
        for _ in 0..turns {
            let output = if subject == "direct" {
                direct.run_turn(TurnRequest::new("hello world")).await
            } else {
                handle.run_turn(TurnRequest::new("hello world")).await
            };
            std::hint::black_box(output.expect("turn"));
        }
    });
}
