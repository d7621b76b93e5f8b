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
                (
                    &format!("runtime-text = {{ path = \"text\", version = \"{current}\" }}"),
                    &format!("runtime-text = {{ path = \"text\", version = \"{version}\" }}"),
                ),
                (
                    &format!(
                        "runtime-discovery = {{ path = \"discovery\", version = \"{current}\" }}"
                    ),
                    &format!(
                        "runtime-discovery = {{ path = \"discovery\", version = \"{version}\" }}"
                    ),
                ),
                (
                    &format!("runtime-process = {{ path = \"process\", version = \"{current}\" }}"),
                    &format!("runtime-process = {{ path = \"process\", version = \"{version}\" }}"),
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

/// A published release, as `tests/releases/releases.txt` lists it.
struct Release {
    version: String,
    contract: u32,
    commit: String,
}

fn releases() -> Vec<Release> {
    let list = include_str!("../releases/releases.txt");
    list.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [version, contract, commit] = fields[..] else {
                panic!("releases.txt: `{line}` is not `version contract commit`")
            };
            Release {
                version: version.to_owned(),
                contract: contract.parse().expect("a contract number"),
                commit: commit.to_owned(),
            }
        })
        .collect()
}

/// The echo plugin of a release, built from the sources `scripts/freeze-release.sh` writes.
fn echo_of_release(release: &Release) -> std::path::PathBuf {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let frozen = tmp.join("releases").join(&release.version);
    let froze = Command::new(workspace.join("scripts/freeze-release.sh"))
        .args([&release.version, &release.commit])
        .arg(&frozen)
        .output()
        .unwrap();
    assert!(
        froze.status.success(),
        "{}",
        String::from_utf8_lossy(&froze.stderr)
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--locked",
            "--message-format=json",
            "--target-dir",
        ])
        // A target folder of its own: the artifacts of path crates are named the same in every
        // workspace of this layout, and another test's build must not replace this one's.
        .arg(
            tmp.join("scratch-target")
                .join(format!("release-{}", release.version)),
        )
        .args(["-p", "echo-runtime"])
        .current_dir(&frozen)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "building echo of release {}: {}",
        release.version,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| {
            msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "echo_runtime"
        })
        .flat_map(|msg| msg["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(std::path::PathBuf::from))
        .find(|f| f.to_string_lossy().ends_with(std::env::consts::DLL_SUFFIX))
        .expect("echo's library")
}

#[tokio::test]
#[ignore = "builds the echo plugin of every published release (minutes); CI runs it with --ignored"]
async fn plugins_of_published_releases_load_or_are_refused_by_their_contract() {
    let host = runtime_api::version::CONTRACT_VERSION;
    let releases = releases();
    assert!(!releases.is_empty(), "releases.txt lists no release");
    for release in &releases {
        let library = echo_of_release(release);
        let dir = plugin_dir();
        install(dir.path(), &library, "libecho");
        let runtimes = registry(&[dir.path()]);
        if release.contract == host {
            // A release of this contract: its plugin loads and runs here.
            let entry = runtimes.get_entry("echo").unwrap_or_else(|| {
                panic!(
                    "release {}: {:?}",
                    release.version,
                    runtimes.rejection("echo")
                )
            });
            assert_eq!(entry.api_version, release.version);
            let output = runtimes
                .resolve("echo")
                .unwrap()
                .run_turn(TurnRequest::new("from an older release"))
                .await
                .unwrap();
            assert_eq!(output.content, "from an older release");
        } else {
            // Another series: refused, naming both and what to do.
            let rejection = runtimes.rejection("echo").expect("refused");
            let RejectReason::ContractMismatch {
                plugin_contract,
                host_contract,
                plugin_api,
                message,
            } = rejection.reason
            else {
                panic!("release {}: {:?}", release.version, rejection.reason)
            };
            assert_eq!((plugin_contract, host_contract), (release.contract, host));
            assert_eq!(plugin_api, release.version);
            assert!(message.contains("rebuild the plugin"), "{message}");
            if release.contract == 0 {
                assert!(
                    message.contains("before plugin contracts were versioned"),
                    "{message}"
                );
            }
        }
    }
}
