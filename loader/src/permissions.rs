//! What a runtime declares it needs from the sandbox (its manifest's `permissions`), turned
//! into a [`Policy`] for its worker with the configuration it is created with.
//!
//! Declared values may use `{plugin_dir}`, `{tmp}` and `{config:KEY}` (`a.*.b` for every entry
//! of a map or list). Network entries are `none`, `any`, `host:port` or URLs; Landlock filters
//! TCP by port, so the port is what is enforced, not the host (with name resolution for a
//! host named by a name: see [`runtime_process::sandbox::net`]).

use std::path::{Path, PathBuf};

use runtime_api::Value;
use runtime_process::sandbox::net::parse_entry;
use runtime_process::sandbox::{Net, Policy};

/// The policy `declared` asks for, for a runtime of the plugin in `plugin_dir` created with
/// `config`. Unknown keys and values that are not strings are ignored; nothing declared is
/// nothing granted.
pub(crate) fn declared_policy(
    declared: &Value,
    config: &Value,
    plugin_dir: &Path,
    runtime_id: &str,
) -> Policy {
    let mut policy = Policy::default();
    // `{tmp}`: the runtime's private temporary folder, made only when declared.
    let uses_tmp = declared.to_string().contains("{tmp}");
    let tmp = uses_tmp.then(|| private_tmp(runtime_id)).flatten();
    policy.tmp.clone_from(&tmp);
    let strings = |key: &str| -> Vec<String> {
        let items: Vec<&str> = match &declared[key] {
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            Value::String(one) => vec![one.as_str()],
            _ => Vec::new(),
        };
        items
            .into_iter()
            .flat_map(|item| expand(item, config, plugin_dir, tmp.as_deref()))
            .filter(|s| !s.is_empty())
            .collect()
    };
    policy.read = strings("read").into_iter().map(PathBuf::from).collect();
    policy.write = strings("write").into_iter().map(PathBuf::from).collect();
    policy.run = strings("run")
        .into_iter()
        .filter_map(|p| program(&p))
        .collect();
    policy.env = strings("env");
    let mut ports = Vec::new();
    for entry in strings("net") {
        match entry.as_str() {
            "any" => {
                policy.net = Net::Any;
                policy.dns = false;
                return policy;
            }
            "none" => {}
            other => {
                if let Some(entry) = parse_entry(other) {
                    ports.push(entry.port);
                    policy.dns |= entry.resolves;
                }
            }
        }
    }
    if !ports.is_empty() {
        ports.sort_unstable();
        ports.dedup();
        policy.net = Net::Ports(ports);
    }
    policy
}

/// `item` with its variables replaced; several results when a `{config:…}` names several
/// values, none when it names none.
fn expand(item: &str, config: &Value, plugin_dir: &Path, tmp: Option<&Path>) -> Vec<String> {
    if item.contains("{tmp}") && tmp.is_none() {
        return Vec::new();
    }
    let item = item
        .replace("{plugin_dir}", &plugin_dir.display().to_string())
        .replace(
            "{tmp}",
            &tmp.map(|t| t.display().to_string()).unwrap_or_default(),
        );
    let Some(start) = item.find("{config:") else {
        return vec![item];
    };
    let Some(end) = item[start..].find('}').map(|e| start + e) else {
        return vec![item];
    };
    let key = &item[start + "{config:".len()..end];
    let mut values = Vec::new();
    collect(config, &key.split('.').collect::<Vec<_>>(), &mut values);
    values
        .into_iter()
        .map(|v| format!("{}{v}{}", &item[..start], &item[end + 1..]))
        .collect()
}

fn collect(value: &Value, path: &[&str], out: &mut Vec<String>) {
    match path.split_first() {
        None => {
            if let Some(text) = value.as_str() {
                out.push(text.to_owned());
            }
        }
        Some((&"*", rest)) => match value {
            Value::Object(map) => map.values().for_each(|v| collect(v, rest, out)),
            Value::Array(items) => items.iter().for_each(|v| collect(v, rest, out)),
            _ => {}
        },
        Some((key, rest)) => collect(&value[*key], rest, out),
    }
}

/// The runtime's private temporary folder, or none (logged) when it cannot be made safely:
/// then what names `{tmp}` is not granted.
fn private_tmp(runtime_id: &str) -> Option<std::path::PathBuf> {
    #[cfg(unix)]
    match runtime_process::sandbox::private_tmp(runtime_id) {
        Ok(folder) => Some(folder),
        Err(error) => {
            tracing::warn!("runtime `{runtime_id}`: {{tmp}} is not granted: {error}");
            None
        }
    }
    #[cfg(not(unix))]
    {
        let _ = runtime_id;
        None
    }
}

/// A program as a path: as given when it has a `/`, else found on the host's `PATH`.
fn program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn declarations_expand_with_the_configuration() {
        let declared = json!({
            "net": ["{config:base_url}", "{config:mcp_servers.*.url}"],
            "read": ["{plugin_dir}/data"],
            "write": ["{tmp}"],
            "run": ["{config:mcp_servers.*.command}", "/bin/sh"],
            "env": ["{config:api_key_env}"],
        });
        let config = json!({
            "base_url": "http://127.0.0.1:8080/v1",
            "api_key_env": "OPENAI_API_KEY",
            "mcp_servers": {"a": {"command": "/usr/bin/node"}, "b": {"url": "https://example.com/mcp"}},
        });
        let policy = declared_policy(&declared, &config, Path::new("/plugins"), "test-runtime");
        // example.com is a name: name resolution is granted with its port.
        assert_eq!(policy.net, Net::Ports(vec![443, 8080]));
        assert!(policy.dns);
        assert_eq!(policy.read, [PathBuf::from("/plugins/data")]);
        // `{tmp}`: a private folder of the runtime's own, its TMPDIR.
        let tmp = runtime_process::sandbox::private_tmp("test-runtime").unwrap();
        assert!(tmp.starts_with(std::env::temp_dir()) && tmp.ends_with("test-runtime"));
        assert_eq!(policy.write, std::slice::from_ref(&tmp));
        assert_eq!(policy.tmp, Some(tmp));
        assert_eq!(
            policy.run,
            [PathBuf::from("/usr/bin/node"), PathBuf::from("/bin/sh")]
        );
        assert_eq!(policy.env, ["OPENAI_API_KEY"]);
        // Nothing declared, nothing granted; `any` is any.
        assert_eq!(
            declared_policy(&Value::Null, &config, Path::new("/p"), "test-runtime"),
            Policy::default()
        );
        assert_eq!(
            declared_policy(
                &json!({"net": "any"}),
                &config,
                Path::new("/p"),
                "test-runtime"
            )
            .net,
            Net::Any
        );
    }
}
