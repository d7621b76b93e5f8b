//! `runtimes check --conformance FILE`: the plugin contract run against plugin files, one line
//! per check (runtime_conformance does the checking).

use std::path::PathBuf;
use std::time::Duration;

use runtime_api::Value;
use runtime_conformance::{self as conformance, Options, Report, Verdict};
use runtime_loader::LoaderOptions;

use crate::failure::Failure;
use crate::style::{Style, clean, json_text};

/// Runs the conformance checks against each file; any failed check exits 3.
pub async fn check(
    loader: LoaderOptions,
    files: &[PathBuf],
    config: Option<&str>,
    time_limit: Duration,
    json: bool,
    style: &Style,
) -> Result<(), Failure> {
    let config: Value = match config {
        None => Value::Null,
        Some(text) => serde_json::from_str(text)
            .map_err(|e| Failure::Usage(format!("--config is not valid JSON: {e}")))?,
    };
    let options = Options::default()
        .with_loader_options(loader)
        .with_time_limit(time_limit);
    let mut reports = Vec::with_capacity(files.len());
    for file in files {
        let report = conformance::check_file(file, &config, &options).await;
        if !json {
            print_report(&report, style);
        }
        reports.push(report);
    }
    if json {
        println!("{}", json_text(&serde_json::json!(reports), true));
    }
    let failed: usize = reports.iter().map(|r| r.failures().count()).sum();
    let total: usize = reports.iter().map(|r| r.checks.len()).sum();
    if failed == 0 {
        Ok(())
    } else {
        // Each check's verdict, with its reason, is in the output already.
        Err(Failure::Reported(Box::new(Failure::Rejected(format!(
            "{failed} of {total} conformance checks failed"
        )))))
    }
}

fn print_report(report: &Report, style: &Style) {
    if let Some(file) = &report.file {
        println!("{}", style.heading(&clean(&file.display().to_string())));
    }
    for check in &report.checks {
        let label = check.verdict.label();
        let label = match check.verdict {
            Verdict::Pass { .. } => style.ok(label),
            Verdict::Fail { .. } => style.warn(label),
            _ => style.dim(label),
        };
        println!(
            "{label:<4}  {}  {}: {}",
            clean(check.runtime.as_deref().unwrap_or("(file)")),
            check.name,
            clean(check.verdict.text())
        );
    }
}
