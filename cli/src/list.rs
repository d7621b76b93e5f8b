//! `runtimes list` and `runtimes info`. Every string from a plugin file (ids, names,
//! versions, descriptions, paths, reasons) is escaped for the terminal; `--json` is valid JSON
//! with every control character escaped.

use runtime_loader::{RuntimeEntry, RuntimeSource, Runtimes};
use serde_json::{Value, json};

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
            println!(
                "  {} ({}): {}",
                style::path(&dir.path),
                dir.origin,
                clean(&dir.status.to_string())
            );
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

/// What a runtime declares, what the operator grants and denies, what its workers get, and
/// where it is enforced.
fn permission_rows(
    runtimes: &Runtimes,
    entry: &runtime_loader::RuntimeEntry,
    process: &runtime_loader::ProcessOptions,
) -> Vec<(&'static str, String)> {
    use runtime_loader::sandbox::Policy;
    let declared = if entry.permissions.is_null() {
        "nothing (nothing is granted but what you grant: --allow-net, --allow-read, --allow-write, --allow-run, --allow-env, --grant)".to_owned()
    } else {
        clean(&entry.permissions.to_string()).into_owned()
    };
    let names: Vec<&str> = std::iter::once(entry.id.as_str())
        .chain(entry.aliases.iter().map(String::as_str))
        .collect();
    let grants = process.grants_for(&names);
    let granted = if grants == Policy::default() {
        "nothing more (--allow-* and --grant RUNTIME=… add to what is declared)".to_owned()
    } else {
        clean(&serde_json::to_string(&grants).unwrap_or_default()).into_owned()
    };
    let denials = process.denials_for(&names);
    let denied = if denials.is_empty() {
        "nothing (--deny RUNTIME=KIND[:VALUE] takes away what is declared or granted)".to_owned()
    } else {
        clean(
            &denials
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        )
        .into_owned()
    };
    let gets = match runtimes.sandbox_policy(&entry.id, &Value::Null) {
        Ok(Some(policy)) => {
            let mut text = clean(&serde_json::to_string(&policy).unwrap_or_default()).into_owned();
            if entry.permissions.to_string().contains("{config:") {
                text.push_str(" (with its default configuration; `{config:…}` entries follow the configuration it is created with)");
            }
            text
        }
        Ok(None) => "no sandbox (turned off in these process options)".to_owned(),
        Err(runtime_loader::ResolveError::Factory { error, .. }) => {
            format!("refused: {}", clean(&error.message))
        }
        Err(error) => format!("refused: {}", clean(&error.to_string())),
    };
    vec![
        ("declares", declared),
        ("you grant", granted),
        ("you deny", denied),
        ("worker gets", gets),
        (
            "enforced",
            "at the process level (--isolate) by the kernel's sandbox (runtimes check --sandbox); NOT enforced at the inline and threads levels".to_owned(),
        ),
    ]
}

pub fn info(
    runtimes: &Runtimes,
    name: &str,
    json: bool,
    style: &Style,
    process: &runtime_loader::ProcessOptions,
) -> Result<(), Failure> {
    let Some(entry) = runtimes.get_entry(name) else {
        let failure = match runtimes.resolve(name) {
            Err(error) => Failure::from(error),
            Ok(_) => Failure::Usage(format!("no runtime named `{}`", clean(name))),
        };
        if json {
            if let Some(rejection) = runtimes.rejection(name) {
                println!(
                    "{}",
                    json_text(&json!({ "name": name, "rejected": rejection }), true)
                );
                return Err(Failure::Reported(Box::new(failure)));
            }
        }
        return Err(failure);
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
    for (key, value) in permission_rows(runtimes, &entry, process) {
        println!("{:<13} {value}", style.heading(&format!("{key}:")));
    }
    match &entry.config_schema() {
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
            let kind = kind(schema, property, 0);
            let need = if required.contains(&key.as_str()) {
                "required".to_owned()
            } else if let Some(default) = property.get("default") {
                format!("default {default}")
            } else {
                "optional".to_owned()
            };
            let description = property["description"]
                .as_str()
                .or_else(|| resolve(schema, property)["description"].as_str())
                .unwrap_or("");
            format!("{key:<20} {kind:<8} {need:<16} {description}")
        })
        .collect()
}

/// The schema a local `$ref` (`#/$defs/Name`) points at, or the schema itself.
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|pointer| root.pointer(pointer))
        .unwrap_or(schema)
}

/// A property's kind in a word: its type (`integer|null`), its values (`"stdin"|"arg"`) or
/// those of its alternatives and `$ref`s (as schemars writes enums and options), else `any`.
fn kind(root: &Value, schema: &Value, depth: usize) -> String {
    let schema = resolve(root, schema);
    let words = |items: &Vec<Value>, word: &dyn Fn(&Value) -> String| {
        let mut seen: Vec<String> = Vec::new();
        for item in items.iter().map(word) {
            if !seen.contains(&item) {
                seen.push(item);
            }
        }
        seen.join("|")
    };
    if let Some(value) = schema.get("const") {
        return value.to_string();
    }
    match (&schema["type"], &schema["enum"]) {
        (_, Value::Array(options)) => return words(options, &Value::to_string),
        (Value::String(kind), _) => return kind.clone(),
        (Value::Array(kinds), _) => {
            return words(kinds, &|k| k.as_str().unwrap_or("any").to_owned());
        }
        _ => {}
    }
    let alternatives = schema["oneOf"].as_array().or(schema["anyOf"].as_array());
    match alternatives {
        Some(options) if depth < 8 => words(options, &|o| kind(root, o, depth + 1)),
        _ => "any".to_owned(),
    }
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
    let shown = clean(name);
    if json {
        println!(
            "{}",
            json_text(
                &json!({ "name": name, "valid": problems.is_empty(), "problems": problems }),
                true
            )
        );
    } else if problems.is_empty() {
        println!("the configuration is valid for `{shown}`");
    }
    if problems.is_empty() {
        return Ok(());
    }
    // The problems come from the plugin: one escaped line each.
    let problems: Vec<String> = problems.iter().map(|p| clean(p).into_owned()).collect();
    let failure = Failure::Rejected(format!(
        "the configuration is not valid for `{shown}` ({} problem{}):\n  - {}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        problems.join("\n  - ")
    ));
    Err(if json {
        // The problems are in the output already.
        Failure::Reported(Box::new(failure))
    } else {
        failure
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::config_lines;

    #[test]
    fn config_lines_read_the_schemas_schemars_writes() {
        let schema = json!({"type": "object", "required": ["program"], "properties": {
            "program": {"type": "string", "description": "the program"},
            "timeout_ms": {"type": ["integer", "null"], "default": null},
            "prompt_mode": {"$ref": "#/$defs/PromptMode", "default": "stdin"},
            "level": {"anyOf": [{"$ref": "#/$defs/Level"}, {"type": "null"}]},
            "case": {"enum": ["keep", "upper"]},
        }, "$defs": {
            "PromptMode": {"description": "how the prompt gets there", "oneOf": [
                {"type": "string", "const": "stdin"}, {"type": "string", "const": "arg"}]},
            "Level": {"type": "integer"},
        }});
        let lines = config_lines(&schema);
        let line = |key: &str| {
            lines
                .iter()
                .find(|l| l.starts_with(key))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap()
        };
        assert_eq!(line("program"), "program string required the program");
        assert_eq!(line("timeout_ms"), "timeout_ms integer|null default null");
        assert_eq!(
            line("prompt_mode"),
            "prompt_mode \"stdin\"|\"arg\" default \"stdin\" how the prompt gets there"
        );
        assert_eq!(line("level"), "level integer|null optional");
        assert_eq!(line("case"), "case \"keep\"|\"upper\" optional");
    }
}
