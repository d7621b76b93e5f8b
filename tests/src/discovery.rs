//! Discovery (issue: loader): search order, precedence, duplicates, every rejection class,
//! lazy loading.

use std::path::Path;

use runtime_loader::{
    DirStatus, LoaderOptions, RejectReason, ResolveError, RuntimeSource, Runtimes, SearchPath,
};
use serde_json::json;

use crate::support::{
    artifacts, install, install_patched, install_raw_manifest, plugin_dir, registry,
    write_candidate,
};

fn rejection_for(runtimes: &Runtimes, file: &Path) -> RejectReason {
    runtimes
        .report()
        .rejected
        .into_iter()
        .find(|r| r.path == file)
        .unwrap_or_else(|| {
            panic!(
                "{} was not rejected: {:?}",
                file.display(),
                runtimes.report()
            )
        })
        .reason
}

#[test]
fn search_order_is_api_dirs_then_env_then_user_dir() {
    let (first, second, user) = (plugin_dir(), plugin_dir(), plugin_dir());
    install(first.path(), &artifacts().echo, "libecho");
    install(second.path(), &artifacts().echo, "libecho");
    install(user.path(), &artifacts().echo, "libecho");
    let env = std::env::join_paths([second.path()]).unwrap();
    let path = SearchPath::empty()
        .with_dir(first.path())
        .with_env_value(Some(env))
        .with_user_dir(Some(user.path().to_owned()));
    let runtimes = Runtimes::with_options(LoaderOptions::STRICT);
    let report = runtimes.discover(&path);
    let entry = runtimes.get_entry("echo").unwrap();
    let RuntimeSource::Plugin { path: source, .. } = &entry.source else {
        panic!("echo comes from a plugin");
    };
    assert!(source.starts_with(first.path().canonicalize().unwrap()));
    // Both later copies are reported as shadowed, with both paths.
    let shadowed: Vec<_> = report
        .shadowed
        .iter()
        .filter(|s| s.name == "echo")
        .collect();
    assert_eq!(shadowed.len(), 2, "{report:?}");
    assert!(shadowed[0].path.starts_with(second.path()));
    assert!(shadowed[1].path.starts_with(user.path()));
    assert!(shadowed.iter().all(|s| {
        s.kept
            .contains(&first.path().canonicalize().unwrap().display().to_string())
    }));
    // A shadowed runtime's aliases go with it: `parrot` still means the first provider.
    assert_eq!(runtimes.get_entry("parrot").unwrap().source, entry.source);
}

#[test]
fn files_are_taken_in_sorted_order_and_only_with_the_library_suffix() {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().echo, "b-echo");
    install(dir.path(), &artifacts().echo, "a-echo");
    std::fs::copy(&artifacts().echo, dir.path().join("c-echo.txt")).unwrap();
    let runtimes = registry(&[dir.path()]);
    let report = runtimes.report();
    assert_eq!(report.dirs[0].status, DirStatus::Scanned { candidates: 2 });
    assert!(report.registered[0].ends_with(format!("a-echo{}", std::env::consts::DLL_SUFFIX)));
    assert!(
        report.shadowed[0]
            .path
            .ends_with(format!("b-echo{}", std::env::consts::DLL_SUFFIX))
    );
}

#[test]
fn missing_and_unreadable_directories_are_reported_not_fatal() {
    let good = plugin_dir();
    install(good.path(), &artifacts().echo, "libecho");
    let missing = good.path().join("does-not-exist");
    let not_a_dir = install(good.path(), &artifacts().no_manifest, "plain");
    let runtimes = registry(&[&missing, &not_a_dir, good.path()]);
    let report = runtimes.report();
    assert_eq!(report.dirs[0].status, DirStatus::Missing);
    assert!(
        matches!(report.dirs[1].status, DirStatus::Unreadable { .. }),
        "{report:?}"
    );
    assert!(runtimes.is_registered("echo"));
}

#[test]
fn one_bad_file_never_hides_the_others() {
    let dir = plugin_dir();
    write_candidate(dir.path(), "aaa-garbage", b"\x7fELF not really");
    install(dir.path(), &artifacts().echo, "libecho");
    write_candidate(dir.path(), "zzz-empty", b"");
    let runtimes = registry(&[dir.path()]);
    assert!(runtimes.is_registered("echo"));
    assert_eq!(runtimes.report().rejected.len(), 2);
}

#[test]
fn rejects_a_file_that_is_not_a_library() {
    let dir = plugin_dir();
    let text = write_candidate(dir.path(), "notes", b"just some text, not a library");
    let runtimes = registry(&[dir.path()]);
    assert!(matches!(
        rejection_for(&runtimes, &text),
        RejectReason::NotALibrary { .. }
    ));
}

#[test]
fn rejects_a_directory_named_like_a_library() {
    let dir = plugin_dir();
    let fake = dir
        .path()
        .join(format!("libdir{}", std::env::consts::DLL_SUFFIX));
    std::fs::create_dir(&fake).unwrap();
    let runtimes = registry(&[dir.path()]);
    assert_eq!(
        rejection_for(&runtimes, &fake),
        RejectReason::NotAFile {
            file_type: "a directory".into()
        }
    );
}

#[test]
fn rejects_a_library_without_a_manifest() {
    let dir = plugin_dir();
    let lib = install(dir.path(), &artifacts().no_manifest, "libplain");
    let runtimes = registry(&[dir.path()]);
    assert_eq!(rejection_for(&runtimes, &lib), RejectReason::NoManifest);
}

#[test]
fn rejects_a_malformed_manifest() {
    let dir = plugin_dir();
    let bad_json = runtime_api::manifest::embed_json(b"{\"api_version\": ").unwrap();
    let lib = install_raw_manifest(dir.path(), &artifacts().echo, "libbad", &bad_json);
    let mut oversized = runtime_api::manifest::MAGIC.to_vec();
    oversized.extend_from_slice(&u32::MAX.to_le_bytes());
    oversized.push(b'{');
    let big = install_raw_manifest(dir.path(), &artifacts().echo, "libbig", &oversized);
    let runtimes = registry(&[dir.path()]);
    let RejectReason::MalformedManifest { detail } = rejection_for(&runtimes, &lib) else {
        panic!("malformed")
    };
    assert!(detail.contains("JSON"), "{detail}");
    let RejectReason::MalformedManifest { detail } = rejection_for(&runtimes, &big) else {
        panic!("oversized")
    };
    assert!(detail.contains("more than"), "{detail}");
}

#[test]
fn rejects_a_plugin_for_another_contract_and_says_so_at_resolve() {
    let dir = plugin_dir();
    let host = runtime_api::version::CONTRACT_VERSION;
    let lib = install_patched(dir.path(), &artifacts().echo, "libnewer", |m| {
        m["contract"] = json!(host + 1);
        m["api_version"] = json!("9.0.0");
    });
    let runtimes = registry(&[dir.path()]);
    let RejectReason::ContractMismatch {
        plugin_contract,
        host_contract,
        message,
        ..
    } = rejection_for(&runtimes, &lib)
    else {
        panic!("a contract mismatch")
    };
    assert_eq!((plugin_contract, host_contract), (host + 1, host));
    assert!(message.contains("update the host"), "{message}");
    let error = runtimes.resolve("echo").unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, ResolveError::Rejected { .. }));
    assert!(text.starts_with("`echo` is provided by "), "{text}");
    assert!(
        text.contains(&format!(
            ", which was refused: built for plugin contract {} (runtime-api 9.0.0), newer than this host's contract {host}",
            host + 1
        )),
        "{text}"
    );
    // Asking by alias says why, too.
    assert!(matches!(
        runtimes.resolve("parrot"),
        Err(ResolveError::Rejected { .. })
    ));
}

#[test]
fn a_plugin_without_a_contract_is_refused_as_built_before_contracts() {
    let dir = plugin_dir();
    let lib = install_patched(dir.path(), &artifacts().echo, "libold", |m| {
        m.as_object_mut().unwrap().remove("contract");
        m["api_version"] = json!("0.1.0");
    });
    let runtimes = registry(&[dir.path()]);
    let RejectReason::ContractMismatch {
        plugin_contract,
        message,
        ..
    } = rejection_for(&runtimes, &lib)
    else {
        panic!("a contract mismatch")
    };
    assert_eq!(plugin_contract, 0);
    assert!(
        message.contains("before plugin contracts were versioned"),
        "{message}"
    );
}

#[test]
fn rejects_invalid_and_duplicate_names() {
    let dir = plugin_dir();
    let invalid = install_patched(dir.path(), &artifacts().echo, "libinvalid", |m| {
        m["runtimes"][0]["id"] = json!("Echo Bot");
    });
    let dup = install_patched(dir.path(), &artifacts().echo, "libdup", |m| {
        m["runtimes"][0]["aliases"] = json!(["parrot", "echo"]);
    });
    let runtimes = registry(&[dir.path()]);
    assert!(matches!(
        rejection_for(&runtimes, &invalid),
        RejectReason::InvalidName { what, name, .. } if what == "id" && name == "Echo Bot"
    ));
    assert_eq!(
        rejection_for(&runtimes, &dup),
        RejectReason::DuplicateName {
            name: "echo".into()
        }
    );
}

#[test]
fn rejects_at_load_a_manifest_that_disagrees_with_the_module() {
    let dir = plugin_dir();
    install_patched(dir.path(), &artifacts().echo, "libliar", |m| {
        m["runtimes"][0]["description"] = json!("Something else entirely.");
    });
    let runtimes = registry(&[dir.path()]);
    assert!(
        runtimes.is_registered("echo"),
        "the manifest alone looks fine"
    );
    match runtimes.resolve("echo") {
        Err(ResolveError::Rejected {
            reason: RejectReason::ManifestMismatch { field, .. },
            ..
        }) => {
            assert!(field.contains("description"), "{field}");
        }
        other => panic!("expected a manifest mismatch, got {other:?}"),
    }
    // The rejection sticks.
    assert!(matches!(
        runtimes.resolve("parrot"),
        Err(ResolveError::Rejected { .. })
    ));
}

#[test]
fn a_factory_error_is_reported_with_the_runtimes_error() {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().echo, "libecho");
    let runtimes = registry(&[dir.path()]);
    match runtimes.new_instance("echo", &json!({"delay_ms": "soon"})) {
        Err(ResolveError::Factory { id, error }) => {
            assert_eq!(id, "echo");
            assert_eq!(error.kind, runtime_api::ErrorKind::InvalidConfig);
        }
        other => panic!("expected a factory error, got {other:?}"),
    }
}

#[cfg(target_os = "linux")]
#[test]
fn listing_never_loads_a_library_and_the_first_resolve_does() {
    let dir = plugin_dir();
    let lib = install(dir.path(), &artifacts().fixture, "libfixture");
    let marker =
        std::path::PathBuf::from(format!("{}.loaded", lib.canonicalize().unwrap().display()));
    let runtimes = registry(&[dir.path()]);
    let entries = runtimes.list_runtimes();
    assert_eq!(
        entries.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        vec![
            "fixture",
            "fixture-blocker",
            "fixture-crash",
            "fixture-faults",
            "fixture-second",
            "fixture-tools"
        ]
    );
    assert_eq!(entries[0].version, "0.3.0");
    assert!(runtimes.get_entry("fx").is_some());
    assert!(!marker.exists(), "listing loaded the library");
    runtimes.resolve("fixture-second").unwrap();
    assert!(
        marker.exists(),
        "the first resolve did not load the library"
    );
}

#[cfg(unix)]
#[test]
fn rejects_files_and_folders_writable_by_others_unless_allowed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = plugin_dir();
    let lib = install(dir.path(), &artifacts().echo, "libecho");
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o666)).unwrap();
    let runtimes = registry(&[dir.path()]);
    let RejectReason::Insecure { detail } = rejection_for(&runtimes, &lib) else {
        panic!("insecure file")
    };
    assert!(detail.contains("writable by others"), "{detail}");
    let relaxed = Runtimes::with_options(LoaderOptions::STRICT.with_allow_insecure(true));
    relaxed.discover(&SearchPath::empty().with_dir(dir.path()));
    assert!(relaxed.is_registered("echo"));

    let open_dir = plugin_dir();
    install(open_dir.path(), &artifacts().echo, "libecho");
    std::fs::set_permissions(open_dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let runtimes = registry(&[open_dir.path()]);
    assert!(matches!(
        runtimes.report().dirs[0].status,
        DirStatus::Insecure { .. }
    ));
    assert!(!runtimes.is_registered("echo"));
}

#[test]
fn a_pin_file_refuses_libraries_whose_hash_differs() {
    let dir = plugin_dir();
    let good = install(dir.path(), &artifacts().echo, "libecho");
    let other = install(dir.path(), &artifacts().fixture, "libfixture");
    let hash = runtime_loader::security::sha256_file(&good).unwrap();
    let name = good.file_name().unwrap().to_string_lossy();
    std::fs::write(
        dir.path().join("plugins.lock"),
        format!(
            "{hash}  {name}\n{}  {}\n",
            "0".repeat(64),
            other.file_name().unwrap().to_string_lossy()
        ),
    )
    .unwrap();
    // Hashed at discovery with eager pins...
    let runtimes = Runtimes::with_options(LoaderOptions::STRICT.with_eager_pins(true));
    runtimes.discover(&SearchPath::empty().with_dir(dir.path()));
    assert!(runtimes.is_registered("echo"));
    assert!(matches!(
        rejection_for(&runtimes, &other),
        RejectReason::HashMismatch { .. }
    ));
    // ...and at load by default; either way the pinned file loads and the other does not.
    let runtimes = registry(&[dir.path()]);
    assert!(runtimes.resolve("echo").is_ok());
    assert!(matches!(
        runtimes.resolve("fixture"),
        Err(ResolveError::Rejected {
            reason: RejectReason::HashMismatch { .. },
            ..
        })
    ));
}

/// Listings keep manifests by file identity: a file swapped in under the same name, or
/// rewritten in place (same inode, same size), between two listings is read again.
#[test]
fn a_file_swapped_or_rewritten_between_listings_is_read_again() {
    let dir = plugin_dir();
    let staging = plugin_dir();
    let renamed = |id: &'static str| {
        move |m: &mut serde_json::Value| {
            m["runtimes"][0]["id"] = json!(id);
            m["runtimes"][0]["aliases"] = json!([]);
        }
    };
    let file = install_patched(dir.path(), &artifacts().echo, "libecho", renamed("first"));
    let ids = |runtimes: &Runtimes| runtimes.list_names();
    assert_eq!(ids(&registry(&[dir.path()])), ["first"]);
    // Listed again unchanged: the same runtimes.
    assert_eq!(ids(&registry(&[dir.path()])), ["first"]);

    // Swapped: another file renamed over it.
    let other = install_patched(
        staging.path(),
        &artifacts().echo,
        "libecho",
        renamed("second"),
    );
    std::fs::rename(&other, &file).unwrap();
    assert_eq!(ids(&registry(&[dir.path()])), ["second"]);

    // Rewritten in place, same length: same inode, other manifest.
    let replacement = install_patched(
        staging.path(),
        &artifacts().echo,
        "libthird",
        renamed("third"),
    );
    let bytes = std::fs::read(&replacement).unwrap();
    assert_eq!(bytes.len() as u64, std::fs::metadata(&file).unwrap().len());
    std::fs::write(&file, &bytes).unwrap();
    assert_eq!(ids(&registry(&[dir.path()])), ["third"]);
}
