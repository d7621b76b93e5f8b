//! This package only holds the workspace's integration tests (`src/main.rs`).
