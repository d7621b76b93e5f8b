//! Lists a folder of 100 plugin libraries N times, each with a fresh registry, for
//! instruction counts under callgrind: the cost of one listing is
//! `(instructions(N) - instructions(0)) / N`, whatever the machine's load.
//!
//! ```sh
//! cargo build --release -p echo-runtime && cargo build --release -p runtime-benches --example list_cost
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/list_cost \
//!     <N> target/release/libecho_runtime.so
//! ```

#![forbid(unsafe_code)]

use runtime_loader::{LoaderOptions, Runtimes, SearchPath};

fn main() {
    let mut args = std::env::args().skip(1);
    let listings: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let library = args.next().expect("the echo library's path");
    let folder = tempfile::tempdir().expect("a temporary folder");
    for i in 0..100 {
        let id = format!("echo-{i:03}");
        let aliases = [format!("parrot-{i:03}")];
        runtime_benches::install_with_id(folder.path(), library.as_ref(), &id, &id, &aliases);
    }
    let search = SearchPath::empty().with_dir(folder.path());
    // One warm-up listing, so that N = 0 includes every one-time cost.
    for _ in 0..=listings {
        let runtimes = Runtimes::with_options(LoaderOptions::STRICT);
        runtimes.discover(&search);
        assert_eq!(runtimes.list_runtimes().len(), 100);
    }
}
