//! The checks a manifest passes before anything it declares is registered.

use std::collections::HashSet;

use runtime_api::ids::id_problem;
use runtime_api::manifest::{Manifest, is_root_symbol};
use runtime_api::version::check_contract;

use crate::report::RejectReason;

/// Checks a manifest against the host's contract: the contract first (so a plugin built for
/// another contract is reported as such even if the rest changed shape), then names.
///
/// # Errors
///
/// The first [`RejectReason`] found.
pub fn check_manifest(manifest: &Manifest, host_contract: u32) -> Result<(), RejectReason> {
    check_contract(manifest.contract, &manifest.api_version, host_contract).map_err(
        |incompatibility| RejectReason::ContractMismatch {
            plugin_contract: manifest.contract,
            host_contract,
            plugin_api: manifest.api_version.clone(),
            message: incompatibility.to_string(),
        },
    )?;
    if !is_root_symbol(&manifest.root_symbol) {
        return Err(RejectReason::MalformedManifest {
            detail: format!(
                "its root-module symbol {:?} is not `AGENT_RUNTIMES_ROOT_` followed by a crate name",
                manifest.root_symbol
            ),
        });
    }
    if manifest.runtimes.is_empty() {
        return Err(RejectReason::NoRuntimes);
    }
    let mut seen = HashSet::new();
    for runtime in &manifest.runtimes {
        let names = std::iter::once(("id", &runtime.id))
            .chain(runtime.aliases.iter().map(|alias| ("alias", alias)));
        for (what, name) in names {
            if let Some(problem) = id_problem(name) {
                return Err(RejectReason::InvalidName {
                    what: what.to_owned(),
                    name: name.clone(),
                    problem,
                });
            }
            if !seen.insert(name.as_str()) {
                return Err(RejectReason::DuplicateName { name: name.clone() });
            }
        }
    }
    Ok(())
}
