//! The workspace's integration tests, one binary with a module per area. Fixture plugins are
//! built from the workspace by `support::artifacts` and copied into temporary plugin folders.

// Tests may tell the person running them what they skipped or measured.
#![allow(clippy::print_stderr, clippy::print_stdout)]
#![forbid(unsafe_code)]

mod agent;
mod api;
mod callers;
mod cli;
mod command_plugin;
mod compat;
mod conformance;
mod contract;
mod discovery;
mod hostile;
mod isolation;
mod llm_server;
mod logs;
mod platforms;
mod proptests;
mod queue;
mod resolution;
mod sandbox;
mod scaffold;
mod serve;
mod support;
mod tower_service;
mod trust;
mod turns;
