//! The checks a manifest passes before anything it declares is registered.

use std::collections::HashSet;

use runtime_api::ids::id_problem;
use runtime_api::manifest::Manifest;
use runtime_api::version::{Incompatibility, check_compatible};
use semver::Version;

use crate::report::RejectReason;

/// Checks a manifest against the host's runtime-api version: version first (so a plugin from
/// another series is reported as such even if the rest changed shape), then names.
///
/// # Errors
///
/// The first [`RejectReason`] found.
pub fn check_manifest(manifest: &Manifest, host: &Version) -> Result<(), RejectReason> {
    let found =
        Version::parse(&manifest.api_version).map_err(|e| RejectReason::MalformedManifest {
            detail: format!(
                "its runtime-api version `{}` is not a semver version: {e}",
                manifest.api_version
            ),
        })?;
    check_compatible(&found, host).map_err(|incompatibility| match incompatibility {
        Incompatibility::TooNew { plugin, host } => RejectReason::ApiTooNew {
            found: plugin.to_string(),
            expected: host.to_string(),
        },
        Incompatibility::OtherSeries { plugin, series, .. } => RejectReason::ApiSeriesMismatch {
            found: plugin.to_string(),
            expected: series,
        },
        other => RejectReason::ApiSeriesMismatch {
            found: found.to_string(),
            expected: other.to_string(),
        },
    })?;
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
