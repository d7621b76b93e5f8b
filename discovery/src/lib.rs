//! Finds and checks agent-runtime plugin files without loading them.
//!
//! Discovery never runs plugin code: no `dlopen`, no async runtime. It is what the loader,
//! the process level's worker and the `runtimes` command's `list`, `check` and `install` share:
//!
//! - [`search_path`]: where plugins are looked for (API folders, `AGENT_RUNTIMES_PATH`, the
//!   per-user folder);
//! - [`file`](mod@file): one candidate file: its identity, opening it without blocking, its type;
//! - [`inspect`]: opening a candidate safely (type checked before and after opening, no final
//!   symlink followed, never blocking) and reading its embedded manifest from the open file;
//!   manifests already read are kept by file identity, so a file version is read once per
//!   process however often it is listed (a changed or swapped file has a new identity);
//! - [`security`]: owner and mode checks on a file and every folder above it, `plugins.lock`
//!   pins, hashing from an open file, file identity ([`TrustOptions`]);
//! - [`checks`]: the manifest checks (the contract version rule, ids);
//! - [`admission`]: the one pipeline every candidate passes, in order, on one open file;
//! - [`scan`]: the search path's folders scanned through admission;
//! - [`report`]: why a file was refused or a name shadowed ([`DiscoveryReport`]).
//!
//! The loader (`runtime-loader`) registers what passes and re-exports these modules under
//! their old paths (`runtime_loader::security`, `runtime_loader::admission`, …).

// Errors here carry structured reasons (paths, versions, what to do); boxing them would make
// matching on them awkward for hosts.
#![allow(clippy::result_large_err)]
#![forbid(unsafe_code)]

pub mod admission;
pub mod checks;
pub mod file;
pub mod inspect;
mod manifest_cache;
pub mod report;
pub mod scan;
pub mod search_path;
pub mod security;

pub use report::{DirReport, DirStatus, DiscoveryReport, RejectReason, Rejection, Shadowed};
pub use search_path::{SearchPath, user_plugin_dir};
pub use security::TrustOptions;

/// Checks a manifest against this host's contract and the id rules, as discovery does. Used
/// by `runtimes check`.
///
/// # Errors
///
/// The first [`RejectReason`] found.
pub fn check_manifest(manifest: &runtime_api::manifest::Manifest) -> Result<(), RejectReason> {
    checks::check_manifest(manifest, runtime_api::version::CONTRACT_VERSION)
}
