//! The frozen plugin contract of agent-runtimes.
//!
//! Everything whose layout or meaning crosses between a plugin library and its host lives in
//! this crate, and nothing else does: the `#[repr(C)]` types and vtables ([`abi`]), the
//! embedded [`manifest`], the compatibility rule ([`version`]), the id grammar ([`ids`]) and
//! the capability bits ([`capabilities`]). Its major version is the contract version: a patch
//! or minor release changes no layout, so plugins and hosts built against different releases
//! of the same major load each other (abi_stable's per-type checks read this crate's version,
//! not runtime-api's).
//!
//! Plugin authors and hosts use it through `runtime-api`, which re-exports it.

// No `unsafe` is written here; abi_stable's derive and `sabi_trait` macros generate some,
// which is why the crate cannot forbid it.

pub mod abi;
pub mod capabilities;
pub mod ids;
pub mod manifest;
pub mod version;
