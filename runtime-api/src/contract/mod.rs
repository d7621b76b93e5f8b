//! The frozen part: everything whose layout or meaning crosses between a plugin and its host.
//!
//! A change to any file in this folder changes what crosses the boundary and needs a new
//! [`CONTRACT_VERSION`](version::CONTRACT_VERSION); see [`version`].

pub mod abi;
pub mod capabilities;
pub mod ids;
pub mod manifest;
pub mod version;
