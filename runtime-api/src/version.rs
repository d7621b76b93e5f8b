//! Versions: the plugin contract (what the compatibility rule reads, from `runtime-contract`)
//! and runtime-api's own package version (recorded in manifests, for people).

pub use runtime_contract::version::*;

use semver::Version;

/// The runtime-api package version this crate was built as (`CARGO_PKG_VERSION`). Recorded in
/// manifests for people; the compatibility rule does not read it.
pub const API_VERSION_STR: &str = env!("CARGO_PKG_VERSION");

/// The runtime-api package version this crate was built as.
pub fn api_version() -> Version {
    // The package version is always valid semver (cargo checks it).
    Version::parse(API_VERSION_STR).unwrap_or_else(|_| Version::new(0, 0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_version() {
        assert_eq!(api_version().to_string(), API_VERSION_STR);
    }
}
