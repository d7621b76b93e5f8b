//! `runtimes list` and `runtimes info`.

use runtime_loader::{DirStatus, RuntimeEntry, RuntimeSource, Runtimes};
use serde_json::{Value, json};

use crate::failure::Failure;
use crate::style::{Style, table};

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

fn source(entry: &RuntimeEntry) -> String {
    match &entry.source {
        RuntimeSource::Plugin { path, .. } => path.display().to_string(),
        other => other.to_string(),
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
        println!("{out:#}");
        return Ok(());
    }
    if entries.is_empty() {
        println!("No runtime is installed.");
        let searched: Vec<String> = report
            .dirs
            .iter()
            .map(|d| d.path.display().to_string())
            .collect();
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
                entry.id.clone(),
                or_dash(&entry.aliases.join(", ")),
                or_dash(&entry.version),
                entry.api_version.clone(),
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
                DirStatus::Unreadable { detail } => format!("unreadable: {detail}"),
                DirStatus::Insecure { detail } => format!("refused: {detail}"),
                _ => "unknown".to_owned(),
            };
            println!("  {} ({}): {status}", dir.path.display(), dir.origin);
        }
        if !report.rejected.is_empty() {
            println!();
            println!("{}", style.warn("Rejected:"));
            for rejection in &report.rejected {
                println!("  {}", rejection.path.display());
                if !rejection.runtime_ids.is_empty() {
                    println!("    declares: {}", rejection.runtime_ids.join(", "));
                }
                println!("    {}", rejection.reason);
            }
        }
        if !report.shadowed.is_empty() {
            println!();
            println!("{}", style.warn("Shadowed:"));
            for shadowed in &report.shadowed {
                println!("  {shadowed}");
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
        if let Some(rejection) = runtimes.rejection(name) {
            if json {
                println!("{:#}", json!({ "name": name, "rejected": rejection }));
            }
            return Err(Failure::Rejected(format!(
                "runtime `{name}` was found in {} but not loaded: {}",
                rejection.path.display(),
                rejection.reason
            )));
        }
        return Err(match runtimes.resolve(name) {
            Err(error) => Failure::from(error),
            Ok(_) => Failure::Usage(format!("no runtime named `{name}`")),
        });
    };
    if json {
        println!("{:#}", json!(entry));
        return Ok(());
    }
    let rows = [
        ("id", entry.id.clone()),
        ("name", entry.display_name.clone()),
        ("description", or_dash(&entry.description)),
        ("aliases", or_dash(&entry.aliases.join(", "))),
        ("version", or_dash(&entry.version)),
        ("runtime-api", entry.api_version.clone()),
        ("capabilities", or_dash(&entry.capabilities.to_string())),
        ("source", source(&entry)),
    ];
    for (key, value) in rows {
        println!("{:<13} {value}", style.heading(&format!("{key}:")));
    }
    match &entry.config_schema {
        None => println!("{:<13} -", style.heading("config:")),
        Some(schema) => {
            println!("{}", style.heading("config:"));
            for line in config_lines(schema) {
                println!("  {line}");
            }
        }
    }
    Ok(())
}

/// One line per configuration key of a JSON Schema: name, type, required or default, and
/// its description.
fn config_lines(schema: &Value) -> Vec<String> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = schema["properties"].as_object() else {
        return vec!["(no keys declared)".to_owned()];
    };
    properties
        .iter()
        .map(|(key, property)| {
            let kind = match (&property["type"], &property["enum"]) {
                (Value::String(kind), _) => kind.clone(),
                (Value::Array(kinds), _) => kinds
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("|"),
                (_, Value::Array(options)) => options
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("|"),
                _ => "any".to_owned(),
            };
            let need = if required.contains(&key.as_str()) {
                "required".to_owned()
            } else if let Some(default) = property.get("default") {
                format!("default {default}")
            } else {
                "optional".to_owned()
            };
            let description = property["description"].as_str().unwrap_or("");
            format!("{key:<20} {kind:<8} {need:<16} {description}")
        })
        .collect()
}

/// `info --config`: every problem the runtime finds with a configuration, without creating
/// the runtime. Exit 3 when there is one.
pub fn check_config(
    runtimes: &Runtimes,
    name: &str,
    config: &str,
    json: bool,
) -> Result<(), Failure> {
    let config: Value = serde_json::from_str(config)
        .map_err(|e| Failure::Usage(format!("--config is not valid JSON: {e}")))?;
    let problems = runtimes.validate_config(name, &config)?;
    if json {
        println!(
            "{:#}",
            json!({ "name": name, "valid": problems.is_empty(), "problems": problems })
        );
    } else if problems.is_empty() {
        println!("the configuration is valid for `{name}`");
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(Failure::Rejected(format!(
        "the configuration is not valid for `{name}` ({} problem{}):\n  - {}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        problems.join("\n  - ")
    )))
}
