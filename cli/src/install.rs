//! `runtimes install` and `runtimes uninstall`.
//!
//! Each file goes through the admission pipeline discovery uses (its own permissions aside: the
//! copy gets safe ones), and the open file that was checked is what gets copied. The plugin
//! folder and every folder above it are checked before anything is written. Installing never
//! writes over a library in place: each file is copied to a temporary name in the plugin
//! folder, the copy is admitted again there exactly as discovery will admit it (its manifest
//! must be the one checked, and its hash is what gets pinned), then renamed over its
//! destination, so a process that has the old file mapped keeps its copy and a half-written
//! file is never visible under a library name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use runtime_api::manifest::Manifest;
use runtime_loader::admission::{PinPolicy, check_file};
use runtime_loader::security::{LOCK_FILE, check_folders, read_lock_text};
use runtime_loader::{LoaderOptions, RuntimeSource, Runtimes, SearchPath, user_plugin_dir};

use crate::Global;
use crate::failure::Failure;
use crate::style::{self, Style, clean, named};

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

/// A temporary file in `dir`, private (0600) while it is written, named so that discovery
/// never takes it for a library (`.NAME.XXXXXX.tmp`); removed when dropped unless persisted.
fn temporary_in(dir: &Path, name: &str) -> anyhow::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", style::path(dir)))
}

/// Copies the checked open file `source` to `dest` through a temporary file in the same
/// folder, admits the copy as discovery would (its manifest must be `manifest`), then renames
/// it over `dest`; returns the copy's sha256. A failed install leaves no temporary behind.
fn copy_atomically(
    source: &std::fs::File,
    manifest: &Manifest,
    dest: &Path,
    options: LoaderOptions,
) -> anyhow::Result<String> {
    use std::io::{Seek as _, SeekFrom};
    let dir = dest.parent().context("the destination has no folder")?;
    let name = dest
        .file_name()
        .context("the destination has no file name")?
        .to_string_lossy();
    let mut reader = source;
    reader
        .seek(SeekFrom::Start(0))
        .context("reading the checked file")?;
    let mut temp = temporary_in(dir, &name)?;
    std::io::copy(&mut reader, temp.as_file_mut())
        .with_context(|| format!("copying to {}", style::path(temp.path())))?;
    temp.as_file().sync_all().context("flushing the copy")?;
    set_mode(temp.path(), 0o755).context("setting the file's permissions")?;
    // The copy, in its folder, passes what discovery will check.
    let copy = check_file(temp.path(), &options, PinPolicy::Ignore);
    if let Err(reason) = &copy.verdict {
        anyhow::bail!(
            "the copy {} was refused: {reason}",
            style::path(temp.path())
        );
    }
    if copy.manifest.as_ref() != Some(manifest) {
        anyhow::bail!(
            "the file changed while it was being installed (the copy's manifest differs from the one checked)"
        );
    }
    let sha256 = copy.sha256.clone().context("hashing the copy")?;
    drop(copy);
    temp.persist(dest).map_err(|e| {
        anyhow::anyhow!(
            "renaming {} to {}: {}",
            style::path(e.file.path()),
            style::path(dest),
            e.error
        )
    })?;
    Ok(sha256)
}

/// Rewrites `plugins.lock`: `set` adds or replaces pins, `remove` drops them.
fn update_pins(dir: &Path, set: &[(String, String)], remove: &[String]) -> anyhow::Result<()> {
    let lock = dir.join(LOCK_FILE);
    let existing = read_lock_text(&lock)
        .map_err(|detail| anyhow::anyhow!("reading {}: {detail}", style::path(&lock)))?
        .unwrap_or_default();
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
    let mut temp = temporary_in(dir, LOCK_FILE)?;
    std::io::Write::write_all(temp.as_file_mut(), (lines.join("\n") + "\n").as_bytes())
        .context("writing the pin file")?;
    temp.as_file().sync_all().context("flushing the pin file")?;
    set_mode(temp.path(), 0o644).context("setting the pin file's permissions")?;
    temp.persist(&lock)
        .map_err(|e| anyhow::anyhow!("replacing the pin file: {}", e.error))?;
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
    // Check every file before touching the folder: all or nothing. The source's own
    // permissions do not matter (the installed copy gets safe ones); everything else does.
    let mut checked = Vec::new();
    let mut problems = Vec::new();
    let source_options = options.with_allow_insecure(true);
    for file in files {
        let check = check_file(file, &source_options, PinPolicy::Ignore);
        match (&check.verdict, &check.manifest, check.file()) {
            (Ok(()), Some(manifest), Some(_)) => {
                let manifest = manifest.clone();
                checked.push((file.clone(), manifest, check));
            }
            (Err(reason), ..) => problems.push(format!(
                "{}: {}",
                style::path(file),
                clean(&reason.to_string())
            )),
            _ => problems.push(format!("{}: it cannot be read", style::path(file))),
        }
    }
    if !problems.is_empty() {
        return Err(Failure::Rejected(format!(
            "nothing was installed:\n  {}",
            problems.join("\n  ")
        )));
    }
    // Nothing is created in a place discovery would refuse: check the nearest existing folder
    // first, then the plugin folder itself once it exists.
    if let Some(existing) = dir.ancestors().find(|a| a.is_dir()) {
        let real = std::fs::canonicalize(existing)
            .with_context(|| format!("resolving {}", style::path(existing)))?;
        if let Err(reason) = check_folders(&real, &options) {
            return Err(Failure::Rejected(format!(
                "nothing was installed: the plugin folder is refused: {}",
                clean(&reason.to_string())
            )));
        }
    }
    if !dir.exists() {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the plugin folder {}", style::path(&dir)))?;
        set_mode(&dir, 0o755).context("setting the plugin folder's permissions")?;
    }
    // A folder discovery would refuse gets nothing: the copy would never be loaded.
    let real_dir = std::fs::canonicalize(&dir)
        .with_context(|| format!("resolving the plugin folder {}", style::path(&dir)))?;
    if let Err(reason) = check_folders(&real_dir, &options) {
        return Err(Failure::Rejected(format!(
            "nothing was installed: the plugin folder is refused: {}",
            clean(&reason.to_string())
        )));
    }
    let present = installed(&dir, options);
    let mut replaced: BTreeSet<PathBuf> = BTreeSet::new();
    let mut conflicts = Vec::new();
    // Files already installed byte for byte: nothing to copy, nothing to replace.
    let mut identical: BTreeSet<PathBuf> = BTreeSet::new();
    // Files that replace the file of the same name that provides the same ids.
    let mut upgrades: BTreeSet<PathBuf> = BTreeSet::new();
    for (file, manifest, check) in &checked {
        let Some(name) = file.file_name() else {
            return Err(Failure::Usage(format!(
                "{} has no file name",
                style::path(file)
            )));
        };
        let dest = dir.join(name);
        if present.iter().any(|(_, p)| *p == dest)
            && check.sha256.is_some()
            && check_file(&dest, &options, PinPolicy::Ignore).sha256 == check.sha256
        {
            identical.insert(dest);
            continue;
        }
        for runtime in &manifest.runtimes {
            if let Some((_, path)) = present.iter().find(|(id, _)| *id == runtime.id) {
                if *path == dest {
                    // A newer build of the file installed under this name: an upgrade, no
                    // --force needed (that is for taking ids from another file).
                    upgrades.insert(dest.clone());
                    continue;
                }
                conflicts.push(format!(
                    "`{}` is already installed from {}",
                    clean(&runtime.id),
                    style::path(path)
                ));
                if *path != dest {
                    replaced.insert(path.clone());
                }
            }
        }
        if dest.exists() && !present.iter().any(|(_, p)| *p == dest) {
            conflicts.push(format!("{} already exists", style::path(&dest)));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(Failure::Rejected(format!(
            "nothing was installed: {}. Use --force to replace.",
            conflicts.join("; ")
        )));
    }
    let mut pins = Vec::new();
    for (file, manifest, check) in &checked {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dest = dir.join(&name);
        if identical.contains(&dest) {
            if let Some(sha256) = &check.sha256 {
                pins.push((name, sha256.clone()));
            }
            for runtime in &manifest.runtimes {
                println!(
                    "{} {} is already installed in {} (the same file)",
                    style.ok("unchanged"),
                    named(&runtime.id, &runtime.aliases),
                    style::path(&dest)
                );
            }
            continue;
        }
        let source = check.file().context("the checked file is not open")?;
        let sha256 = copy_atomically(source, manifest, &dest, options)?;
        pins.push((name, sha256));
        let done = if upgrades.contains(&dest) {
            "upgraded"
        } else {
            "installed"
        };
        for runtime in &manifest.runtimes {
            println!(
                "{} {} into {}",
                style.ok(done),
                named(&runtime.id, &runtime.aliases),
                style::path(&dest)
            );
            println!(
                "  {} {}",
                style.dim("asks for:"),
                asks_for(&runtime.permissions_text)
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
            println!(
                "{} {}",
                style.dim("removed replaced file"),
                style::path(path)
            );
            path.file_name().map(|n| n.to_string_lossy().into_owned())
        })
        .collect();
    if pin || dir.join(LOCK_FILE).exists() {
        update_pins(&dir, &pins, &removed)?;
        println!(
            "{} {}",
            style.dim("pinned in"),
            style::path(&dir.join(LOCK_FILE))
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
    let id = &*clean(id);
    let Some((_, path)) = present.iter().find(|(installed_id, _)| installed_id == id) else {
        let elsewhere = global.registry().get_entry(id);
        return Err(Failure::Usage(match elsewhere {
            Some(entry) => format!(
                "runtime `{id}` is not installed in {}; it comes from {} (remove that file yourself)",
                style::path(&dir),
                clean(&entry.source.to_string())
            ),
            None => format!(
                "runtime `{id}` is not installed in {}. View installed runtimes with `runtimes list`.",
                style::path(&dir)
            ),
        }));
    };
    let others: Vec<&str> = present
        .iter()
        .filter(|(other, p)| p == path && other != id)
        .map(|(other, _)| other.as_str())
        .collect();
    std::fs::remove_file(path).with_context(|| format!("removing {}", style::path(path)))?;
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
        style::path(path)
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

/// What a runtime's manifest asks for at the process level (its declared permissions), for
/// the line `install` and `check` print under each runtime.
pub(crate) fn asks_for(permissions: &str) -> String {
    let declared: serde_json::Value = serde_json::from_str(permissions).unwrap_or_default();
    let nothing = declared.is_null() || declared.as_object().is_some_and(|o| o.is_empty());
    if nothing {
        "nothing beyond the baseline (grant more with --allow-* or --grant RUNTIME=…)".to_owned()
    } else {
        format!(
            "{} (enforced at the process level; `runtimes info` shows it with your grants)",
            style::clean(&declared.to_string())
        )
    }
}
