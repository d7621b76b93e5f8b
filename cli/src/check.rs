//! `runtimes check`: validate plugin files without installing them, through the same admission
//! pipeline as discovery (type, owner and mode, every folder above the file, the folder's
//! `plugins.lock`, the manifest), so it passes exactly the files discovery would register.

use std::path::{Path, PathBuf};
use std::time::Duration;

use runtime_api::manifest::Manifest;
use runtime_api::{ErrorKind, TurnRequest, Value};
use runtime_loader::admission::{PinPolicy, check_file};
use runtime_loader::search_path::has_library_suffix;
use runtime_loader::{Isolation, LoaderOptions, RejectReason, ResolveError, Runtimes};
use serde::Serialize;

use crate::failure::Failure;
use crate::style::{self, Style, clean, json_text, named};

/// How long a smoke turn may take.
const SMOKE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize)]
struct SmokeTurn {
    id: String,
    ok: bool,
    /// The plugin's worker died during the smoke turn.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    crashed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    answer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct FileCheck {
    path: PathBuf,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    manifest: Option<Manifest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected: Option<RejectReason>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    smoke: Vec<SmokeTurn>,
}

async fn smoke(
    path: &Path,
    manifest: &Manifest,
    options: LoaderOptions,
    config: &Value,
) -> Vec<SmokeTurn> {
    // Each runtime's smoke turn runs in a worker process of its own: a plugin that crashes
    // gets a verdict, and the files after it are still checked.
    let runtimes = Runtimes::with_options(options.with_isolation(Isolation::Process));
    runtimes.discover_files(&[path]);
    let mut turns = Vec::new();
    for declared in &manifest.runtimes {
        let id = declared.id.clone();
        let result = match runtimes.new_instance(&id, config) {
            Err(error) => {
                let crashed = matches!(
                    &error,
                    ResolveError::Factory { error, .. } if error.kind == ErrorKind::Crashed
                );
                Err((error.to_string(), crashed))
            }
            Ok(handle) => handle
                .with_timeout(SMOKE_TIMEOUT)
                .run_turn(TurnRequest::new("ping"))
                .await
                .map_err(|e| {
                    (
                        format!("the smoke turn failed: {e}"),
                        e.kind == ErrorKind::Crashed,
                    )
                }),
        };
        turns.push(match result {
            Ok(output) => SmokeTurn {
                id,
                ok: true,
                crashed: false,
                answer: Some(output.content),
                error: None,
            },
            Err((error, crashed)) => SmokeTurn {
                id,
                ok: false,
                crashed,
                answer: None,
                error: Some(error),
            },
        });
    }
    turns
}

/// The files to check: each file as given, and for a folder (not named like a library) the
/// plugin libraries in it as discovery would see them (non-recursive, sorted by name).
pub(crate) fn expand_folders(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Failure> {
    let mut files = Vec::new();
    for path in paths {
        // A folder named like a library is a candidate file (refused: not a file), as
        // discovery would see it in a plugin folder.
        if !path.is_dir() || has_library_suffix(path) {
            files.push(path.clone());
            continue;
        }
        let read = std::fs::read_dir(path).map_err(|e| {
            Failure::Other(anyhow::anyhow!(
                "cannot read the folder {}: {e}",
                style::path(path)
            ))
        })?;
        let mut found: Vec<PathBuf> = read
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|candidate| has_library_suffix(candidate))
            .collect();
        if found.is_empty() {
            return Err(Failure::Usage(format!(
                "the folder {} holds no plugin library (*{})",
                style::path(path),
                std::env::consts::DLL_SUFFIX
            )));
        }
        found.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        files.extend(found);
    }
    Ok(files)
}

pub async fn check(
    options: LoaderOptions,
    files: &[PathBuf],
    load: bool,
    config: Option<&str>,
    json: bool,
    style: &Style,
) -> Result<(), Failure> {
    let config: Value = match config {
        None => Value::Null,
        Some(text) => serde_json::from_str(text)
            .map_err(|e| Failure::Usage(format!("--config is not valid JSON: {e}")))?,
    };
    let files = expand_folders(files)?;
    let mut results = Vec::new();
    for path in &files {
        let checked = check_file(path, &options, PinPolicy::FolderLock);
        let sha256 = checked.sha256.clone();
        let (manifest, rejected) = match checked.verdict {
            Ok(()) => (checked.manifest, None),
            Err(reason) => (checked.manifest, Some(reason)),
        };
        let smoke = match (&manifest, load, &rejected) {
            (Some(manifest), true, None) => smoke(path, manifest, options, &config).await,
            _ => Vec::new(),
        };
        let ok = rejected.is_none() && smoke.iter().all(|s| s.ok);
        results.push(FileCheck {
            path: path.clone(),
            ok,
            sha256,
            manifest,
            rejected,
            smoke,
        });
    }
    if json {
        println!("{}", json_text(&serde_json::json!(results), true));
    } else {
        for result in &results {
            print_check(result, style);
        }
    }
    let failed = results.iter().filter(|r| !r.ok).count();
    let crashed = results
        .iter()
        .filter(|r| r.smoke.iter().any(|s| s.crashed))
        .count();
    let failure = if failed == 0 {
        return Ok(());
    } else if crashed > 0 {
        Failure::Crashed(format!(
            "{failed} of {} file(s) failed the check; the plugin crashed in {crashed}",
            results.len()
        ))
    } else {
        Failure::Rejected(format!(
            "{failed} of {} file(s) failed the check",
            results.len()
        ))
    };
    // Each file's verdict, with its reason, is in the output already.
    Err(Failure::Reported(Box::new(failure)))
}

fn print_check(result: &FileCheck, style: &Style) {
    let verdict = if result.ok {
        style.ok("ok")
    } else {
        style.warn("FAILED")
    };
    println!("{verdict}  {}", style::path(&result.path));
    if let Some(sha256) = &result.sha256 {
        println!("    sha256: {sha256}");
    }
    if let Some(manifest) = &result.manifest {
        println!(
            "    plugin: {} {} (runtime-api {})",
            clean(&manifest.plugin_name),
            clean(&manifest.plugin_version),
            clean(&manifest.api_version)
        );
        for runtime in &manifest.runtimes {
            println!(
                "    runtime: {}: {}",
                named(&runtime.id, &runtime.aliases),
                runtime.capabilities
            );
            println!(
                "      asks for: {}",
                crate::install::asks_for(&runtime.permissions_text)
            );
        }
    }
    if let Some(reason) = &result.rejected {
        println!("    rejected: {}", clean(&reason.to_string()));
    }
    for turn in &result.smoke {
        match (&turn.answer, &turn.error) {
            (Some(answer), _) => {
                println!(
                    "    smoke turn `{}`: ok ({} bytes)",
                    clean(&turn.id),
                    answer.len()
                )
            }
            (_, Some(error)) => println!("    smoke turn `{}`: {}", clean(&turn.id), clean(error)),
            _ => {}
        }
    }
}

/// `runtimes check --sandbox`: which sandbox mechanisms this kernel provides, what the
/// process level does when one is missing, and what each installed runtime's workers would
/// get (with its default configuration, the grants and denials given).
pub fn sandbox(runtimes: &Runtimes, json: bool, _style: &Style) -> Result<(), Failure> {
    use runtime_loader::sandbox::{self, Mechanism};
    let support = sandbox::support();
    let each: Vec<(String, Result<serde_json::Value, String>)> = runtimes
        .list_runtimes()
        .into_iter()
        .map(|entry| {
            let gets = match runtimes.sandbox_policy(&entry.id, &serde_json::Value::Null) {
                Ok(policy) => Ok(serde_json::to_value(policy).unwrap_or_default()),
                Err(runtime_loader::ResolveError::Factory { error, .. }) => Err(error.message),
                Err(error) => Err(error.to_string()),
            };
            (entry.id, gets)
        })
        .collect();
    if json {
        let rows: Vec<serde_json::Value> = support
            .iter()
            .map(|(m, has)| {
                serde_json::json!({"mechanism": format!("{m:?}"), "what": m.describe(), "available": has})
            })
            .collect();
        let runtimes: Vec<serde_json::Value> = each
            .iter()
            .map(|(id, gets)| match gets {
                Ok(policy) => serde_json::json!({"id": id, "gets": policy}),
                Err(refused) => serde_json::json!({"id": id, "refused": refused}),
            })
            .collect();
        println!(
            "{}",
            json_text(
                &serde_json::json!({"mechanisms": rows, "runtimes": runtimes}),
                true
            )
        );
        return Ok(());
    }
    for (mechanism, has) in support {
        let verdict = if *has { "yes" } else { "NO " };
        println!("{verdict}  {}", mechanism.describe());
        #[cfg(target_os = "linux")]
        if !has
            && *mechanism == Mechanism::Namespaces
            && let Err(reason) = sandbox::namespaces::probe()
        {
            println!("     {}", clean(&reason));
        }
    }
    let missing: Vec<Mechanism> = support
        .iter()
        .filter(|(_, h)| !h)
        .map(|(m, _)| *m)
        .collect();
    if missing.is_empty() {
        println!("every runtime at the process level gets the whole sandbox");
    } else {
        println!(
            "runtimes at the process level are refused unless a weaker sandbox is accepted (--accept-weaker-sandbox or {}=1)",
            sandbox::ACCEPT_WEAKER_ENV
        );
    }
    println!("at the inline and threads levels permissions are not enforced");
    if !each.is_empty() {
        println!(
            "what each runtime's workers get (its default configuration; runtimes info RUNTIME for more):"
        );
    }
    for (id, gets) in &each {
        match gets {
            Ok(policy) => println!("  {}: {}", clean(id), clean(&policy.to_string())),
            Err(refused) => println!("  {}: refused: {}", clean(id), clean(refused)),
        }
    }
    Ok(())
}
