//! `runtimes list` and `runtimes info`. Every string from a plugin file (ids, names,
//! versions, descriptions, paths, reasons) is escaped for the terminal; `--json` is valid JSON
//! with every control character escaped.

use runtime_loader::{DirStatus, RuntimeEntry, RuntimeSource, Runtimes};
use serde_json::json;

use crate::failure::Failure;
use crate::style::{self, Style, clean, json_text, table};

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        clean(text).into_owned()
    }
}

fn source(entry: &RuntimeEntry) -> String {
    match &entry.source {
        RuntimeSource::Plugin { path, .. } => style::path(path),
        other => clean(&other.to_string()).into_owned(),
    }
}

pub fn list(runtimes: &Runtimes, all: bool, json: bool, style: &Style) -> Result<(), Failure> {
    let entries = runtimes.list_runtimes();
    let report = runtimes.report();
    if json {
        let mut out = json!({ "runtimes": entries });
        if all {
            out["rejected"] = json!(report.rejected);
            out["shadowed"] = json!(report.shadowed);
            out["dirs"] = json!(report.dirs);
        }
        println!("{}", json_text(&out, true));
        return Ok(());
    }
    if entries.is_empty() {
        println!("No runtime is installed.");
        let searched: Vec<String> = report.dirs.iter().map(|d| style::path(&d.path)).collect();
        println!(
            "Searched: {}. Install one with `runtimes install <file>`.",
            if searched.is_empty() {
                "nothing".to_owned()
            } else {
                searched.join(", ")
            }
        );
    } else {
        let mut rows = vec![
            ["ID", "ALIASES", "VERSION", "API", "CAPABILITIES", "SOURCE"]
                .map(String::from)
                .to_vec(),
        ];
        for entry in &entries {
            rows.push(vec![
                clean(&entry.id).into_owned(),
                or_dash(&entry.aliases.join(", ")),
                or_dash(&entry.version),
                clean(&entry.api_version).into_owned(),
                or_dash(&entry.capabilities.to_string()),
                source(entry),
            ]);
        }
        print!("{}", table(&rows, style));
    }
    let hidden = report.rejected.len() + report.shadowed.len();
    if all {
        println!();
        println!("{}", style.heading("Plugin folders searched, in order:"));
        for dir in &report.dirs {
            let status = match &dir.status {
                DirStatus::Scanned { candidates } => format!("{candidates} candidate file(s)"),
                DirStatus::Missing => "does not exist".to_owned(),
                DirStatus::Unreadable { detail } => format!("unreadable: {}", clean(detail)),
                DirStatus::Insecure { detail } => format!("refused: {}", clean(detail)),
                _ => "unknown".to_owned(),
            };
            println!("  {} ({}): {status}", style::path(&dir.path), dir.origin);
        }
        if !report.rejected.is_empty() {
            println!();
            println!("{}", style.warn("Rejected:"));
            for rejection in &report.rejected {
                println!("  {}", style::path(&rejection.path));
                if !rejection.runtime_ids.is_empty() {
                    println!("    declares: {}", clean(&rejection.runtime_ids.join(", ")));
                }
                println!("    {}", clean(&rejection.reason.to_string()));
            }
        }
        if !report.shadowed.is_empty() {
            println!();
            println!("{}", style.warn("Shadowed:"));
            for shadowed in &report.shadowed {
                println!("  {}", clean(&shadowed.to_string()));
            }
        }
    } else if hidden > 0 {
        println!(
            "{}",
            style.dim(&format!(
                "{hidden} plugin file(s) rejected or shadowed: see `runtimes list --all`."
            ))
        );
    }
    Ok(())
}

pub fn info(runtimes: &Runtimes, name: &str, json: bool, style: &Style) -> Result<(), Failure> {
    let Some(entry) = runtimes.get_entry(name) else {
        if json {
            if let Some(rejection) = runtimes.rejection(name) {
                println!(
                    "{}",
                    json_text(&json!({ "name": name, "rejected": rejection }), true)
                );
            }
        }
        return Err(match runtimes.resolve(name) {
            Err(error) => Failure::from(error),
            Ok(_) => Failure::Usage(format!("no runtime named `{}`", clean(name))),
        });
    };
    if json {
        println!("{}", json_text(&json!(entry), true));
        return Ok(());
    }
    let rows = [
        ("id", clean(&entry.id).into_owned()),
        ("name", clean(&entry.display_name).into_owned()),
        ("description", or_dash(&entry.description)),
        ("aliases", or_dash(&entry.aliases.join(", "))),
        ("version", or_dash(&entry.version)),
        ("runtime-api", clean(&entry.api_version).into_owned()),
        ("capabilities", or_dash(&entry.capabilities.to_string())),
        ("source", source(&entry)),
    ];
    for (key, value) in rows {
        println!("{:<13} {value}", style.heading(&format!("{key}:")));
    }
    Ok(())
}
