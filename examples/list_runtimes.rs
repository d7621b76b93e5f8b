//! Lists the installed runtimes and what discovery refused, without loading any library.
#![allow(clippy::print_stdout)]
#![forbid(unsafe_code)]

use runtime_loader::{Runtimes, SearchPath};

fn main() {
    let runtimes = Runtimes::new();
    let report = runtimes.discover(&SearchPath::standard(std::env::args().skip(1)));
    for entry in runtimes.list_runtimes() {
        println!(
            "{:<12} aliases: {:<20} {}",
            entry.id,
            entry.aliases.join(","),
            entry.source
        );
    }
    for rejection in &report.rejected {
        println!("rejected: {rejection}");
    }
    for shadowed in &report.shadowed {
        println!("shadowed: {shadowed}");
    }
}
