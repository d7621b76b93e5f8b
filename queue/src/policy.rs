//! What a worker takes from a job's configuration: the worker's operator fixes each
//! runtime's configuration, and a job may only set the keys the operator allowed for that
//! runtime.
//!
//! Whoever can write to the job stream is a *submitter*, and a submitter is not trusted with
//! the worker's machine: a runtime's configuration can name a program (`program`, `args`),
//! a server to send the turn and a credential to (`base_url`, `api_key_env`), or programs to
//! start (`mcp_servers`). So a job's configuration is refused unless every key in it is
//! allowed for that runtime, and keys that name programs, URLs, files or environment
//! variables ([`is_sensitive_key`]) are taken from a job only when named one by one: the
//! wildcard `*` never covers them.

use std::collections::{BTreeMap, BTreeSet};

use runtime_api::Value;

/// The keys a job may set for one runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Allowed {
    /// Keys allowed by name (sensitive ones included, when named).
    keys: BTreeSet<String>,
    /// `*`: any key that is not [sensitive](is_sensitive_key).
    any_plain: bool,
}

impl Allowed {
    fn allows(&self, key: &str) -> bool {
        self.keys.contains(key) || (self.any_plain && !is_sensitive_key(key))
    }
}

/// One runtime's rules: the configuration the operator fixed and the keys jobs may set.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RuntimeRules {
    pub(crate) fixed: Option<Value>,
    pub(crate) allowed: Allowed,
}

/// The operator's rules for every runtime, by the name the operator gave (an id or alias;
/// the worker resolves them to ids when it starts).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct JobPolicy {
    pub(crate) rules: BTreeMap<String, RuntimeRules>,
}

/// Why a job's configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The configuration is not a JSON object.
    NotAnObject,
    /// These keys are not allowed (sorted).
    Keys(Vec<String>),
}

impl JobPolicy {
    pub(crate) fn fix(&mut self, runtime: String, config: Value) {
        self.rules.entry(runtime).or_default().fixed = Some(config);
    }

    pub(crate) fn allow<I, S>(&mut self, runtime: String, keys: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let allowed = &mut self.rules.entry(runtime).or_default().allowed;
        for key in keys {
            let key = key.into();
            if key == "*" {
                allowed.any_plain = true;
            } else if !key.is_empty() {
                allowed.keys.insert(key);
            }
        }
    }
}

impl RuntimeRules {
    /// The configuration a job runs with: the fixed one (or `null`, the runtime's default)
    /// with the job's allowed keys over it, or why not.
    pub(crate) fn effective(&self, job: &Value) -> Result<Value, Refusal> {
        let job = match job {
            Value::Null => return Ok(self.fixed.clone().unwrap_or(Value::Null)),
            Value::Object(job) if job.is_empty() => {
                return Ok(self.fixed.clone().unwrap_or(Value::Null));
            }
            Value::Object(job) => job,
            _ => return Err(Refusal::NotAnObject),
        };
        let refused: Vec<String> = job
            .keys()
            .filter(|key| !self.allowed.allows(key))
            .cloned()
            .collect();
        if !refused.is_empty() {
            return Err(Refusal::Keys(refused));
        }
        let mut merged = match &self.fixed {
            Some(Value::Object(fixed)) => fixed.clone(),
            _ => serde_json::Map::new(),
        };
        for (key, value) in job {
            merged.insert(key.clone(), value.clone());
        }
        Ok(Value::Object(merged))
    }
}

/// Whether a configuration key names a program, its arguments or environment, a URL or
/// headers sent to one, a file or folder, an environment variable, or servers to start: such
/// a key is taken from a job only when the worker's operator names it (never through `*`).
///
/// The rule is by name, so it also covers third-party runtimes that follow the usual
/// spellings: `program`, `command`, `args`, `argv`, `shell`, `cwd`, `env`, `environment`,
/// `url`, `base_url`, `endpoint`, `host`, `headers`, `extra_body`, `mcp_servers`,
/// `request_mcp_servers`, `path`, `dir`, `file`, `socket`, and any key ending in `_env`,
/// `_url`, `_urls`, `_host`, `_headers`, `_path`, `_dir`, `_file`, `_program`, `_command`,
/// `_args`, `_servers`, `_socket` or containing `key`, `token`, `secret` or `password`.
pub fn is_sensitive_key(key: &str) -> bool {
    const NAMES: &[&str] = &[
        "program",
        "command",
        "args",
        "argv",
        "shell",
        "cwd",
        "env",
        "environment",
        "url",
        "base_url",
        "endpoint",
        "host",
        "headers",
        "extra_body",
        "mcp_servers",
        "request_mcp_servers",
        "path",
        "dir",
        "file",
        "socket",
    ];
    const SUFFIXES: &[&str] = &[
        "_env", "_url", "_urls", "_host", "_headers", "_path", "_dir", "_file", "_program",
        "_command", "_args", "_servers", "_socket",
    ];
    const WORDS: &[&str] = &["key", "token", "secret", "password"];
    let key = key.to_ascii_lowercase();
    NAMES.contains(&key.as_str())
        || SUFFIXES.iter().any(|s| key.ends_with(s))
        || WORDS.iter().any(|w| key.contains(w))
}

/// Parses `NAME=KEY[,KEY...]` (the worker's `--allow-job-config`).
///
/// # Errors
///
/// A text without `=`, an empty name, or no key: the reason.
pub fn parse_allowed_keys(given: &str) -> Result<(String, Vec<String>), String> {
    let Some((name, keys)) = given.split_once('=') else {
        return Err(format!(
            "`{}` is not NAME=KEY[,KEY...] (e.g. echo=delay_ms, or openai=* for every key that names no program, URL, file or variable)",
            given.escape_debug()
        ));
    };
    let keys: Vec<String> = keys
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect();
    if name.trim().is_empty() || keys.is_empty() {
        return Err(format!(
            "`{}` needs a runtime name and at least one key",
            given.escape_debug()
        ));
    }
    Ok((name.trim().to_owned(), keys))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(fixed: Option<Value>, allowed: &[&str]) -> RuntimeRules {
        let mut policy = JobPolicy::default();
        if let Some(fixed) = fixed {
            policy.fix("r".into(), fixed);
        }
        policy.allow("r".into(), allowed.iter().copied());
        policy.rules.remove("r").unwrap_or_default()
    }

    #[test]
    fn nothing_is_taken_from_a_job_unless_allowed() {
        let none = rules(Some(json!({"program": "tr"})), &[]);
        assert_eq!(none.effective(&Value::Null), Ok(json!({"program": "tr"})));
        assert_eq!(none.effective(&json!({})), Ok(json!({"program": "tr"})));
        assert_eq!(
            none.effective(&json!({"program": "sh", "args": ["-c", "id"]})),
            Err(Refusal::Keys(vec!["args".into(), "program".into()]))
        );
        assert_eq!(none.effective(&json!([1])), Err(Refusal::NotAnObject));
    }

    #[test]
    fn allowed_keys_go_over_the_fixed_configuration() {
        let some = rules(
            Some(json!({"program": "tr", "timeout_ms": 1000})),
            &["timeout_ms"],
        );
        assert_eq!(
            some.effective(&json!({"timeout_ms": 5})),
            Ok(json!({"program": "tr", "timeout_ms": 5}))
        );
        assert_eq!(
            some.effective(&json!({"timeout_ms": 5, "program": "sh"})),
            Err(Refusal::Keys(vec!["program".into()]))
        );
    }

    #[test]
    fn the_wildcard_never_covers_sensitive_keys() {
        let any = rules(None, &["*"]);
        assert!(any.effective(&json!({"delay_ms": 3, "model": "m"})).is_ok());
        for key in [
            "program",
            "args",
            "base_url",
            "api_key_env",
            "headers",
            "mcp_servers",
            "request_mcp_servers",
            "cwd",
            "env",
            "API_KEY",
        ] {
            assert_eq!(
                any.effective(&json!({ key: 1 })),
                Err(Refusal::Keys(vec![key.into()])),
                "{key}"
            );
        }
        let named = rules(None, &["*", "base_url"]);
        assert!(named.effective(&json!({"base_url": "http://x"})).is_ok());
    }

    #[test]
    fn allowed_keys_parse_or_say_why() {
        assert_eq!(
            parse_allowed_keys("echo=delay_ms, fail_with").unwrap(),
            ("echo".into(), vec!["delay_ms".into(), "fail_with".into()])
        );
        assert!(parse_allowed_keys("echo").is_err());
        assert!(parse_allowed_keys("echo=").is_err());
        assert!(parse_allowed_keys("=x").is_err());
    }
}
