//! `runtimes-worker`: runs one plugin library for a host at the *process* isolation level.
//!
//! Not run by hand: a host using `runtime-loader` starts it, one per runtime instance, and
//! talks to it over its stdin and stdout. Install it with `cargo install runtime-loader`, or
//! put it beside the host's executable, on `PATH`, or name it in `AGENT_RUNTIMES_WORKER`.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    runtime_loader::worker_main()
}
