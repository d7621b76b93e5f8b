//! Compatibility across releases, with real builds: plugins and hosts built against copies of
//! runtime-api whose package version moved by a patch and by a minor (runtime-contract, the
//! boundary, did not move) load each other; a plugin built for another contract (another major
//! version of runtime-contract) is refused with both contract versions named.
//!
//! Each case builds a scratch workspace (minutes on a small machine), so the test is ignored in
//! a plain `cargo test`; CI runs it with `cargo test -p integration-tests -- --ignored compat`.

use std::process::Command;

use runtime_api::TurnRequest;
use runtime_loader::{RejectReason, ResolveError};

use crate::support::{ScratchBuild, artifacts, edit, install, plugin_dir, registry};

/// A scratch workspace whose packages (runtime-api among them) have version `version`.
fn released_as(version: &str) -> ScratchBuild {
    let current = runtime_api::version::API_VERSION_STR;
    ScratchBuild::new(&format!("runtime-api-{version}"), |root| {
        edit(
            &root.join("Cargo.toml"),
            &[
                (
                    &format!("version = \"{current}\"\npublish"),
                    &format!("version = \"{version}\"\npublish"),
                ),
                (
                    &format!("runtime-api = {{ path = \"runtime-api\", version = \"{current}\" }}"),
                    &format!("runtime-api = {{ path = \"runtime-api\", version = \"{version}\" }}"),
                ),
                (
                    &format!("runtime-loader = {{ path = \"loader\", version = \"{current}\" }}"),
                    &format!("runtime-loader = {{ path = \"loader\", version = \"{version}\" }}"),
                ),
            ],
        );
    })
}

#[tokio::test]
#[ignore = "builds three scratch workspaces (minutes); CI runs it with --ignored"]
async fn plugins_and_hosts_of_other_releases_of_the_same_contract_load_each_other() {
    let ours = runtime_api::version::api_version();
    let patch = format!("{}.{}.{}", ours.major, ours.minor, ours.patch + 1);
    let minor = format!("{}.{}.0", ours.major, ours.minor + 1);
    for version in [patch, minor] {
        let scratch = released_as(&version);
        let plugin = scratch
            .build(&["-p", "echo-runtime"])
            .library("echo_runtime");
        let host = scratch
            .build(&["-p", "host-examples", "--example", "run_turn"])
            .executable("run_turn");

        // A plugin of that release in this host.
        let dir = plugin_dir();
        install(dir.path(), &plugin, "libecho");
        let runtimes = registry(&[dir.path()]);
        let entry = runtimes.get_entry("echo").expect("registered");
        assert_eq!(entry.api_version, version);
        let output = runtimes
            .resolve("echo")
            .unwrap_or_else(|e| panic!("runtime-api {version} plugin: {e}"))
            .run_turn(TurnRequest::new("across releases"))
            .await
            .unwrap();
        assert_eq!(output.content, "across releases");

        // This release's plugin in a host of that release.
        let dir = plugin_dir();
        install(dir.path(), &artifacts().echo, "libecho");
        let run = Command::new(&host)
            .arg(dir.path())
            .env("AGENT_RUNTIMES_PATH", "")
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "host of runtime-api {version}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(String::from_utf8_lossy(&run.stdout).contains("Hello from a host program"));
    }
}

#[tokio::test]
#[ignore = "builds a scratch workspace (minutes); CI runs it with --ignored"]
async fn a_plugin_built_for_another_contract_is_refused_naming_both() {
    let host = runtime_api::version::CONTRACT_VERSION;
    let next = host + 1;
    let built = ScratchBuild::new("next-contract", |root| {
        // The contract version is runtime-contract's major version.
        edit(
            &root.join("runtime-contract/Cargo.toml"),
            &[(
                &format!("version = \"{host}.0.0\""),
                &format!("version = \"{next}.0.0\""),
            )],
        );
        edit(
            &root.join("Cargo.toml"),
            &[(
                &format!(
                    "runtime-contract = {{ path = \"runtime-contract\", version = \"{host}.0.0\" }}"
                ),
                &format!(
                    "runtime-contract = {{ path = \"runtime-contract\", version = \"{next}.0.0\" }}"
                ),
            )],
        );
    })
    .build(&["-p", "echo-runtime"]);
    let dir = plugin_dir();
    let lib = install(dir.path(), &built.library("echo_runtime"), "libecho");
    let runtimes = registry(&[dir.path()]);
    let rejection = runtimes.rejection("echo").expect("refused");
    assert_eq!(rejection.path, lib);
    let RejectReason::ContractMismatch {
        plugin_contract,
        host_contract,
        ..
    } = rejection.reason
    else {
        panic!("{:?}", rejection.reason)
    };
    assert_eq!((plugin_contract, host_contract), (next, host));
    let ResolveError::Rejected { reason, .. } = runtimes.resolve("echo").unwrap_err() else {
        panic!("rejected")
    };
    let text = reason.to_string();
    assert!(
        text.contains(&format!("plugin contract {next}"))
            && text.contains(&format!("contract {host}"))
            && text.contains("update the host"),
        "{text}"
    );
}
