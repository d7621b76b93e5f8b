//! `runtimes new`: the crate it writes builds where it is created, against the checkout the
//! command was built from (a `[patch.crates-io]` section it fills in, and a workspace of its
//! own), and passes the conformance checks in its own `cargo test`; and the command refuses
//! what it cannot scaffold.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{artifacts, plugin_dir};

fn runtimes_new(cwd: &Path, args: &[&str]) -> Output {
    Command::new(&artifacts().runtimes)
        .arg("new")
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .output()
        .expect("runtimes runs")
}

#[test]
fn new_writes_a_plugin_crate_and_refuses_bad_names_and_full_folders() {
    let work = plugin_dir();
    let made = runtimes_new(work.path(), &["my-bot"]);
    assert!(made.status.success(), "{made:?}");
    let root = work.path().join("my-bot");
    for file in [
        "Cargo.toml",
        "src/lib.rs",
        "config.schema.json",
        "tests/conformance.rs",
        "README.md",
        ".gitignore",
    ] {
        assert!(root.join(file).is_file(), "{file} was not written");
    }
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let api = runtime_api::version::api_version();
    assert!(manifest.contains(&format!(
        "runtime-api = {{ version = \"{}.{}\", features = [\"typed-config\"] }}",
        api.major, api.minor
    )));
    assert!(manifest.contains("panic = \"unwind\""));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    assert!(lib.contains("runtime_api::export_plugin!(MyBotRuntime);"));
    assert!(lib.contains("runtime_api::typed_config!(\"config.schema.json\");"));
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("config.schema.json")).unwrap())
            .unwrap();
    assert_eq!(
        schema["description"],
        "The configuration of `my-bot`; every key is optional."
    );

    // The same folder again: refused, nothing overwritten.
    std::fs::write(root.join("src/lib.rs"), "// mine").unwrap();
    let again = runtimes_new(work.path(), &["my-bot"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    assert_eq!(
        std::fs::read_to_string(root.join("src/lib.rs")).unwrap(),
        "// mine"
    );

    for bad in ["My-Bot", "1bot", "fn", "a/b"] {
        let refused = runtimes_new(work.path(), &[bad]);
        assert_eq!(refused.status.code(), Some(2), "{bad}");
    }
    let elsewhere = runtimes_new(work.path(), &["other", "--dir", "nested/place"]);
    assert!(elsewhere.status.success());
    assert!(work.path().join("nested/place/src/lib.rs").is_file());
}

#[test]
#[ignore = "builds the scaffolded crate and its dependencies in a scratch folder (minutes); CI runs it with --ignored"]
fn the_scaffold_builds_and_passes_conformance_out_of_the_box() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("scratch/scaffold");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let made = runtimes_new(&work, &["shout"]);
    assert!(made.status.success(), "{made:?}");
    let root = work.join("shout");

    // Built from this checkout, `runtimes new` points the crate at it (the crates are not on
    // crates.io yet) and gives it a workspace of its own (it lives below this repository).
    // This checkout's lock file keeps the versions to those already in cargo's cache (offline).
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("\n[workspace]\n"), "{manifest}");
    assert!(
        manifest.contains(&format!(
            "runtime-conformance = {{ path = {:?} }}",
            workspace.join("conformance")
        )),
        "{manifest}"
    );
    assert!(
        String::from_utf8_lossy(&made.stdout).contains("not on crates.io yet"),
        "{made:?}"
    );
    std::fs::copy(workspace.join("Cargo.lock"), root.join("Cargo.lock")).unwrap();

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let formatted = Command::new(&cargo)
        .args(["fmt", "--check"])
        .current_dir(&root)
        .output()
        .expect("cargo fmt runs");
    assert!(
        formatted.status.success(),
        "the scaffold is not rustfmt-clean:\n{}",
        String::from_utf8_lossy(&formatted.stdout)
    );
    let tested = Command::new(cargo)
        .args(["test", "--offline", "--target-dir"])
        .arg(Path::new(env!("CARGO_TARGET_TMPDIR")).join("scratch-target"))
        .current_dir(&root)
        .env_remove("AGENT_RUNTIMES_ALLOW_INSECURE")
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&tested.stdout);
    assert!(
        tested.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&tested.stderr)
    );
    assert!(
        stdout.contains("test the_plugin_passes_the_conformance_checks ... ok"),
        "{stdout}"
    );
    // The schema file it was written with is the one its configuration type derives.
    assert!(
        stdout.contains("test config_schemas_are_current ... ok"),
        "{stdout}"
    );
}
