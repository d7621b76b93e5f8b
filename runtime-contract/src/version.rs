//! The contract version compiled into every plugin, and the one rule that says which hosts
//! load which plugins.
//!
//! # The compatibility rule
//!
//! A host loads a plugin when both were built for the same **contract version**
//! ([`CONTRACT_VERSION`]). The runtime-api *package* version plays no part: a patch or minor
//! release of runtime-api that leaves the boundary alone keeps the contract version, so a
//! plugin built against runtime-api 0.2.7 loads in a host built against 0.2.3 and the
//! reverse. The package version is still recorded in the manifest, for people.
//!
//! The contract version is this crate's (`runtime-contract`) major version. It changes when,
//! and only when, what crosses the boundary changes: the `#[repr(C)]` types and vtables of
//! [`abi`](crate::abi), the manifest layout of [`manifest`](crate::manifest), the id grammar
//! and the capability bits' meaning. runtime-api's own version moves independently.
//!
//! Within one contract, these may still be added, because an older peer cannot notice them:
//! new error kinds, finish reasons and delta kinds (they travel as open strings or codes, and
//! unknown values arrive as `Other`/`Unknown`), new capability bits (unknown bits are kept and
//! ignored), new keys inside the JSON fields (`metadata`, `config`, `mcp_servers`), and new
//! named calls through the runtime vtable's `extension` method. abi_stable checks the layout of
//! every type in addition to this rule, so a mistake here is caught at load time rather than
//! becoming undefined behaviour.
//!
//! Why not let layouts grow within a contract: abi_stable lets a *plugin's* prefix type (the
//! root module or a `#[sabi_trait]` vtable) have more fields than the host expects, never
//! fewer (its `abi_checking.rs` rejects an interface with more fields than the implementation
//! as "too many fields"). A method added for newer hosts would therefore make every plugin
//! built before it unloadable, which is the direction plugin ecosystems need most. The
//! `extension` call is the way to add behaviour without that.

/// The contract this crate speaks: its own major version. Changes only when what crosses the
/// boundary changes.
pub const CONTRACT_VERSION: u32 = parse_component(env!("CARGO_PKG_VERSION_MAJOR"));

/// This crate's version, which abi_stable checks in the root module's header and in every
/// type's layout: it requires the same major version, which is the same rule.
pub const CONTRACT_VERSION_STRINGS: &str = env!("CARGO_PKG_VERSION");

const fn parse_component(text: &str) -> u32 {
    let bytes = text.as_bytes();
    let mut value = 0u32;
    let mut i = 0;
    while i < bytes.len() {
        value = value * 10 + (bytes[i] - b'0') as u32;
        i += 1;
    }
    value
}

/// Why a plugin cannot be loaded by a host speaking another contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Incompatibility {
    /// The plugin was built before contracts were versioned (its manifest names none).
    #[error(
        "built with runtime-api {plugin_api}, before plugin contracts were versioned; this host speaks contract {host}: rebuild the plugin against a runtime-api release of contract {host}"
    )]
    Unversioned {
        /// The runtime-api package version the plugin was built against.
        plugin_api: String,
        /// The host's contract.
        host: u32,
    },
    /// The plugin was built for an older contract than the host's.
    #[error(
        "built for plugin contract {plugin} (runtime-api {plugin_api}), this host speaks contract {host}: rebuild the plugin against a runtime-api release of contract {host}"
    )]
    OlderContract {
        /// The plugin's contract.
        plugin: u32,
        /// The runtime-api package version the plugin was built against.
        plugin_api: String,
        /// The host's contract.
        host: u32,
    },
    /// The plugin was built for a newer contract than the host's.
    #[error(
        "built for plugin contract {plugin} (runtime-api {plugin_api}), newer than this host's contract {host}: update the host, or rebuild the plugin against a runtime-api release of contract {host}"
    )]
    NewerContract {
        /// The plugin's contract.
        plugin: u32,
        /// The runtime-api package version the plugin was built against.
        plugin_api: String,
        /// The host's contract.
        host: u32,
    },
}

/// Applies the compatibility rule: may a host speaking contract `host` load a plugin built for
/// contract `plugin` (`0` when its manifest names none) with runtime-api `plugin_api`?
///
/// # Errors
///
/// The [`Incompatibility`] naming both contracts and what to do.
///
/// # Examples
///
/// ```
/// use runtime_contract::version::{CONTRACT_VERSION, check_contract};
///
/// assert!(check_contract(CONTRACT_VERSION, "0.9.3", CONTRACT_VERSION).is_ok());
/// assert!(check_contract(CONTRACT_VERSION + 1, "9.0.0", CONTRACT_VERSION).is_err());
/// ```
pub fn check_contract(plugin: u32, plugin_api: &str, host: u32) -> Result<(), Incompatibility> {
    let plugin_api = plugin_api.to_owned();
    match plugin {
        0 => Err(Incompatibility::Unversioned { plugin_api, host }),
        p if p == host => Ok(()),
        p if p < host => Err(Incompatibility::OlderContract {
            plugin: p,
            plugin_api,
            host,
        }),
        p => Err(Incompatibility::NewerContract {
            plugin: p,
            plugin_api,
            host,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_as_a_table() {
        // (plugin contract, plugin's runtime-api, host contract, loads?)
        let table = [
            (1, "0.2.0", 1, true),
            (1, "0.2.9", 1, true), // a newer patch of the same contract loads
            (1, "0.3.0", 1, true), // so does a newer minor that kept the boundary
            (1, "0.1.0", 1, true),
            (2, "0.4.0", 1, false), // a newer contract: update the host
            (1, "0.2.0", 2, false), // an older contract: rebuild the plugin
            (0, "0.1.0", 1, false), // built before contracts existed
        ];
        for (plugin, api, host, loads) in table {
            let result = check_contract(plugin, api, host);
            assert_eq!(
                result.is_ok(),
                loads,
                "contract {plugin} on host {host}: {result:?}"
            );
        }
    }

    #[test]
    fn the_rule_names_both_contracts_and_what_to_do() {
        let newer = check_contract(2, "0.4.0", 1).unwrap_err().to_string();
        assert!(newer.contains("contract 2") && newer.contains("contract 1"));
        assert!(newer.contains("update the host"), "{newer}");
        let older = check_contract(1, "0.2.0", 2).unwrap_err().to_string();
        assert!(older.contains("rebuild the plugin"), "{older}");
        let unversioned = check_contract(0, "0.1.0", 1).unwrap_err().to_string();
        assert!(
            unversioned.contains("before plugin contracts"),
            "{unversioned}"
        );
    }

    #[test]
    fn abi_stables_version_is_the_contract() {
        let major: u32 = CONTRACT_VERSION_STRINGS
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap();
        assert_eq!(major, CONTRACT_VERSION);
        assert_eq!(CONTRACT_VERSION, 1);
    }
}
