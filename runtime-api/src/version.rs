//! The runtime-api version compiled into every plugin, and the one rule that says which hosts
//! load which plugins.
//!
//! # The compatibility rule
//!
//! A host built against runtime-api `H` loads a plugin built against runtime-api `P` when
//!
//! 1. `P` and `H` are in the same **series**: the same major version, or, while the major
//!    version is 0, the same `0.minor` (cargo's reading of semver); and
//! 2. `P` is **not newer** than `H` at the series' feature level: the minor version for
//!    `1.x` and later, the patch version for `0.x` (patch releases of `1.x` fix bugs and never
//!    change the boundary, so they are ignored).
//!
//! Equivalently, the host accepts the [`semver::VersionReq`] returned by
//! [`accepted_plugin_versions`]; for a host speaking `0.1.3` that is `>=0.1.0, <0.1.4`, and for
//! `1.4.2` it is `>=1.0.0, <1.5.0`. Pre-release plugins are refused unless the host is the very
//! same pre-release.
//!
//! Why older plugins keep loading: within a series the layout of everything that crosses the
//! boundary is frozen — the root module, the runtime vtable and every data struct. A minor
//! release may only add things that an older plugin cannot notice: new error kinds, finish
//! reasons or delta kinds (they travel as open strings or codes, and unknown values map to an
//! `Other`/`Unknown` variant), new capability bits (unknown bits are kept and ignored), and new
//! keys inside the JSON `metadata` and `config` fields. abi_stable checks the layouts in addition
//! to this rule, so a mistake here is still caught at load time rather than becoming undefined
//! behaviour.
//!
//! Why newer plugins are refused: a plugin built against a newer minor may rely on host
//! behaviour (a metadata key the host sets, a delta kind the host renders) that an older host
//! does not have. The message tells the user to update the host.
//!
//! Why methods cannot be added within a series: abi_stable lets a *plugin's* prefix type (the
//! root module or a `#[sabi_trait]` vtable) have more fields than the host expects, never fewer
//! (`abi_stable/src/abi_stability/abi_checking.rs` rejects an interface with more fields than
//! the implementation as "too many fields"). A method added in `H` would therefore make every
//! plugin built before it unloadable, which is the direction plugin ecosystems need most. It
//! could be worked around by keeping a frozen copy of every published interface and choosing the
//! one named by the plugin's manifest before the layout check; we chose the simpler, checkable
//! rule instead: a new method is a new series.

use std::fmt;

use semver::{Comparator, Op, Prerelease, Version, VersionReq};

/// The runtime-api version this crate was built as, as text (`CARGO_PKG_VERSION`).
pub const API_VERSION_STR: &str = env!("CARGO_PKG_VERSION");

/// The runtime-api version this crate was built as.
///
/// A plugin compiles this into its manifest and root module; a host compares it with its own
/// through [`check_compatible`].
pub fn api_version() -> Version {
    Version::new(
        parse_component(env!("CARGO_PKG_VERSION_MAJOR")),
        parse_component(env!("CARGO_PKG_VERSION_MINOR")),
        parse_component(env!("CARGO_PKG_VERSION_PATCH")),
    )
}

const fn parse_component(text: &str) -> u64 {
    let bytes = text.as_bytes();
    let mut value = 0u64;
    let mut i = 0;
    while i < bytes.len() {
        value = value * 10 + (bytes[i] - b'0') as u64;
        i += 1;
    }
    value
}

/// Why a plugin's runtime-api version cannot be loaded by a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Incompatibility {
    /// The plugin belongs to another series (another major version, or another `0.minor`).
    #[error(
        "built with runtime-api {plugin}, this host speaks {series}: rebuild the plugin against runtime-api {series}"
    )]
    OtherSeries {
        /// The version the plugin was built against.
        plugin: Version,
        /// The host's version.
        host: Version,
        /// The host's series, e.g. `0.1.x`.
        series: String,
    },
    /// The plugin is in the host's series but newer than the host.
    #[error(
        "built with runtime-api {plugin}, newer than this host's {host}: update the host, or rebuild the plugin against runtime-api {host}"
    )]
    TooNew {
        /// The version the plugin was built against.
        plugin: Version,
        /// The host's version.
        host: Version,
    },
}

/// The series of a version: `0.1.x` for `0.1.3`, `1.x` for `1.4.2`.
pub fn series(version: &Version) -> String {
    if version.major == 0 {
        format!("0.{}.x", version.minor)
    } else {
        format!("{}.x", version.major)
    }
}

/// The plugin versions a host speaking `host` accepts, as a semver requirement.
///
/// # Examples
///
/// ```
/// use runtime_api::version::accepted_plugin_versions;
/// use semver::Version;
///
/// let req = accepted_plugin_versions(&Version::new(0, 1, 3));
/// assert_eq!(req.to_string(), ">=0.1.0, <0.1.4");
/// assert!(req.matches(&Version::new(0, 1, 0)));
/// assert!(!req.matches(&Version::new(0, 1, 4)));
/// ```
pub fn accepted_plugin_versions(host: &Version) -> VersionReq {
    let floor = Comparator {
        op: Op::GreaterEq,
        major: host.major,
        minor: Some(if host.major == 0 { host.minor } else { 0 }),
        patch: Some(0),
        pre: Prerelease::EMPTY,
    };
    let ceiling = if !host.pre.is_empty() {
        // A pre-release host accepts exactly its own pre-release and the releases before it.
        Comparator {
            op: Op::LessEq,
            major: host.major,
            minor: Some(host.minor),
            patch: Some(host.patch),
            pre: host.pre.clone(),
        }
    } else if host.major == 0 {
        Comparator {
            op: Op::Less,
            major: 0,
            minor: Some(host.minor),
            patch: Some(host.patch + 1),
            pre: Prerelease::EMPTY,
        }
    } else {
        Comparator {
            op: Op::Less,
            major: host.major,
            minor: Some(host.minor + 1),
            patch: Some(0),
            pre: Prerelease::EMPTY,
        }
    };
    VersionReq {
        comparators: vec![floor, ceiling],
    }
}

/// Applies the compatibility rule: may a host speaking `host` load a plugin built against
/// `plugin`?
///
/// # Errors
///
/// [`Incompatibility::OtherSeries`] when the two are in different series,
/// [`Incompatibility::TooNew`] when the plugin is newer than the host.
pub fn check_compatible(plugin: &Version, host: &Version) -> Result<(), Incompatibility> {
    let same_series = plugin.major == host.major && (host.major != 0 || plugin.minor == host.minor);
    if !same_series {
        return Err(Incompatibility::OtherSeries {
            plugin: plugin.clone(),
            host: host.clone(),
            series: series(host),
        });
    }
    if accepted_plugin_versions(host).matches(plugin) {
        Ok(())
    } else {
        Err(Incompatibility::TooNew {
            plugin: plugin.clone(),
            host: host.clone(),
        })
    }
}

/// A version pair displayed as "plugin P on host H", for logs.
#[derive(Debug)]
pub struct VersionPair<'a>(pub &'a Version, pub &'a Version);

impl fmt::Display for VersionPair<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin {} on host {}", self.0, self.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn the_rule_as_a_table() {
        // (plugin, host, loads?)
        let table = [
            ("0.1.0", "0.1.0", true),
            ("0.1.0", "0.1.3", true), // older plugin, newer host: loads
            ("0.1.3", "0.1.3", true),
            ("0.1.4", "0.1.3", false), // newer plugin: refused
            ("0.2.0", "0.1.3", false), // other series
            ("0.0.9", "0.1.3", false),
            ("1.0.0", "0.1.3", false),
            ("1.0.0", "1.4.2", true),
            ("1.4.9", "1.4.2", true), // patch releases of 1.x never change the boundary
            ("1.5.0", "1.4.2", false),
            ("2.0.0", "1.4.2", false),
            ("0.1.0-alpha.1", "0.1.3", false),
            ("1.4.0-rc.1", "1.4.0-rc.1", true),
            ("1.4.0-rc.2", "1.4.0-rc.1", false),
            ("1.3.0", "1.4.0-rc.1", true),
        ];
        for (plugin, host, loads) in table {
            let result = check_compatible(&v(plugin), &v(host));
            assert_eq!(
                result.is_ok(),
                loads,
                "plugin {plugin} on host {host}: {result:?}"
            );
        }
    }

    #[test]
    fn the_rule_names_the_failure() {
        let err = check_compatible(&v("2.0.0"), &v("0.1.3")).unwrap_err();
        assert!(matches!(err, Incompatibility::OtherSeries { .. }));
        assert_eq!(
            err.to_string(),
            "built with runtime-api 2.0.0, this host speaks 0.1.x: rebuild the plugin against runtime-api 0.1.x"
        );
        let err = check_compatible(&v("0.1.4"), &v("0.1.3")).unwrap_err();
        assert!(matches!(err, Incompatibility::TooNew { .. }));
    }

    #[test]
    fn requirement_text() {
        assert_eq!(
            accepted_plugin_versions(&v("0.1.3")).to_string(),
            ">=0.1.0, <0.1.4"
        );
        assert_eq!(
            accepted_plugin_versions(&v("1.4.2")).to_string(),
            ">=1.0.0, <1.5.0"
        );
    }

    #[test]
    fn own_version_parses() {
        assert_eq!(api_version(), v(API_VERSION_STR));
        assert!(check_compatible(&api_version(), &api_version()).is_ok());
    }
}
