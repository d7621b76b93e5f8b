//! Host programs that use `runtime-loader`, one per file; run them with
//! `cargo run -p host-examples --example <name> -- [PLUGIN_DIR]`. Each searches `PLUGIN_DIR`
//! (if given), then `AGENT_RUNTIMES_PATH`, then the per-user plugin folder.

#![forbid(unsafe_code)]
