//! `runtimes install` and `runtimes uninstall`.
//!
//! Installing never writes over a library in place: each file is copied to a temporary name in
//! the plugin folder and renamed over its destination, so a process that has the old file
//! mapped keeps its copy and a half-written file is never visible under a library name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use runtime_loader::security::LOCK_FILE;
use runtime_loader::{LoaderOptions, RuntimeSource, Runtimes, SearchPath, user_plugin_dir};

use crate::Global;
use crate::check::{FileCheckResult, inspect_file};
use crate::failure::Failure;
use crate::style::{Style, named};

fn plugin_folder(dir: Option<PathBuf>) -> Result<PathBuf, Failure> {
    dir.or_else(user_plugin_dir).ok_or_else(|| {
        Failure::Usage("there is no per-user data folder on this system: pass --dir".to_owned())
    })
}

/// The library file in `dir` that provides each runtime id.
fn installed(dir: &Path, options: LoaderOptions) -> Vec<(String, PathBuf)> {
    let runtimes = Runtimes::with_options(options);
    let report = runtimes.discover(&SearchPath::empty().with_dir(dir));
    // The registry reports real paths (symlinks resolved); map them back to the folder's files.
    let in_folder = |real: &PathBuf| {
        report
            .registered
            .iter()
            .find(|file| std::fs::canonicalize(file).ok().as_ref() == Some(real))
            .cloned()
    };
    runtimes
        .list_runtimes()
        .into_iter()
        .filter_map(|entry| match &entry.source {
            RuntimeSource::Plugin { path, .. } => in_folder(path).map(|file| (entry.id, file)),
            _ => None,
        })
        .collect()
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

/// Copies `source` to `dest` through a temporary file in the same folder and a rename.
fn copy_atomically(source: &Path, dest: &Path) -> anyhow::Result<()> {
    let dir = dest.parent().context("the destination has no folder")?;
    let name = dest
        .file_name()
        .context("the destination has no file name")?
        .to_string_lossy();
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> anyhow::Result<()> {
        std::fs::copy(source, &temp)
            .with_context(|| format!("copying {} to {}", source.display(), temp.display()))?;
        set_mode(&temp, 0o755).context("setting the file's permissions")?;
        std::fs::File::open(&temp)
            .and_then(|f| f.sync_all())
            .context("flushing the copy")?;
        std::fs::rename(&temp, dest)
            .with_context(|| format!("renaming {} to {}", temp.display(), dest.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Rewrites `plugins.lock`: `set` adds or replaces pins, `remove` drops them.
fn update_pins(dir: &Path, set: &[(String, String)], remove: &[String]) -> anyhow::Result<()> {
    let lock = dir.join(LOCK_FILE);
    let existing = match std::fs::read_to_string(&lock) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", lock.display())),
    };
    let changed: BTreeSet<&str> = set
        .iter()
        .map(|(name, _)| name.as_str())
        .chain(remove.iter().map(String::as_str))
        .collect();
    let mut lines: Vec<String> = existing
        .lines()
        .filter(|line| {
            let name = line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .trim_start_matches('*');
            !changed.contains(name)
        })
        .map(str::to_owned)
        .collect();
    lines.extend(set.iter().map(|(name, hash)| format!("{hash}  {name}")));
    let temp = dir.join(format!(".{LOCK_FILE}.tmp-{}", std::process::id()));
    std::fs::write(&temp, lines.join("\n") + "\n").context("writing the pin file")?;
    set_mode(&temp, 0o644).context("setting the pin file's permissions")?;
    std::fs::rename(&temp, &lock).context("replacing the pin file")?;
    Ok(())
}

pub fn install(
    options: LoaderOptions,
    files: &[PathBuf],
    dir: Option<PathBuf>,
    force: bool,
    pin: bool,
    style: &Style,
) -> Result<(), Failure> {
    let dir = plugin_folder(dir)?;
    // Check every file before touching the folder: all or nothing.
    let mut checked = Vec::new();
    let mut problems = Vec::new();
    // The source's own permissions do not matter: the installed copy gets safe ones.
    let source_options = options.with_allow_insecure(true);
    for file in files {
        let FileCheckResult {
            sha256,
            checked: result,
        } = inspect_file(file, &source_options);
        match (result, sha256) {
            (Ok(manifest), Some(sha256)) => checked.push((file.clone(), manifest, sha256)),
            (Err(reason), _) => problems.push(format!("{}: {reason}", file.display())),
            (Ok(_), None) => problems.push(format!("{}: it cannot be read", file.display())),
        }
    }
    if !problems.is_empty() {
        return Err(Failure::Rejected(format!(
            "nothing was installed:\n  {}",
            problems.join("\n  ")
        )));
    }
    if !dir.exists() {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the plugin folder {}", dir.display()))?;
        set_mode(&dir, 0o755).context("setting the plugin folder's permissions")?;
    }
    let present = installed(&dir, options);
    let mut replaced: BTreeSet<PathBuf> = BTreeSet::new();
    let mut conflicts = Vec::new();
    for (file, manifest, _) in &checked {
        let Some(name) = file.file_name() else {
            return Err(Failure::Usage(format!(
                "{} has no file name",
                file.display()
            )));
        };
        let dest = dir.join(name);
        for runtime in &manifest.runtimes {
            if let Some((_, path)) = present.iter().find(|(id, _)| *id == runtime.id) {
                conflicts.push(format!(
                    "`{}` is already installed from {}",
                    runtime.id,
                    path.display()
                ));
                if *path != dest {
                    replaced.insert(path.clone());
                }
            }
        }
        if dest.exists() && !present.iter().any(|(_, p)| *p == dest) {
            conflicts.push(format!("{} already exists", dest.display()));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(Failure::Rejected(format!(
            "nothing was installed: {}. Use --force to replace.",
            conflicts.join("; ")
        )));
    }
    let mut pins = Vec::new();
    for (file, manifest, sha256) in &checked {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dest = dir.join(&name);
        copy_atomically(file, &dest)?;
        pins.push((name, sha256.clone()));
        for runtime in &manifest.runtimes {
            println!(
                "{} {} into {}",
                style.ok("installed"),
                named(&runtime.id, &runtime.aliases),
                dest.display()
            );
        }
    }
    let removed: Vec<String> = replaced
        .iter()
        .filter(|path| {
            !pins.iter().any(|(name, _)| {
                path.file_name()
                    .is_some_and(|n| n.to_string_lossy() == *name)
            })
        })
        .filter_map(|path| {
            std::fs::remove_file(path).ok()?;
            println!("{} {}", style.dim("removed replaced file"), path.display());
            path.file_name().map(|n| n.to_string_lossy().into_owned())
        })
        .collect();
    if pin || dir.join(LOCK_FILE).exists() {
        update_pins(&dir, &pins, &removed)?;
        println!(
            "{} {}",
            style.dim("pinned in"),
            dir.join(LOCK_FILE).display()
        );
    }
    Ok(())
}

pub fn uninstall(
    global: &Global,
    id: &str,
    dir: Option<PathBuf>,
    style: &Style,
) -> Result<(), Failure> {
    let dir = plugin_folder(dir)?;
    let options = global.options();
    let present = installed(&dir, options);
    let Some((_, path)) = present.iter().find(|(installed_id, _)| installed_id == id) else {
        let elsewhere = global.registry().get_entry(id);
        return Err(Failure::Usage(match elsewhere {
            Some(entry) => format!(
                "runtime `{id}` is not installed in {}; it comes from {} (remove that file yourself)",
                dir.display(),
                entry.source
            ),
            None => format!(
                "runtime `{id}` is not installed in {}. View installed runtimes with `runtimes list`.",
                dir.display()
            ),
        }));
    };
    let others: Vec<&str> = present
        .iter()
        .filter(|(other, p)| p == path && other != id)
        .map(|(other, _)| other.as_str())
        .collect();
    std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    if dir.join(LOCK_FILE).exists() {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        update_pins(&dir, &[], &[name])?;
    }
    println!(
        "{} {id}: removed {}",
        style.ok("uninstalled"),
        path.display()
    );
    if !others.is_empty() {
        println!(
            "{}",
            style.dim(&format!(
                "the same file also provided: {}",
                others.join(", ")
            ))
        );
    }
    Ok(())
}
