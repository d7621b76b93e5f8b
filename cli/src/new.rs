//! `runtimes new NAME`: scaffolds a plugin crate that builds and passes the conformance checks
//! out of the box.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::failure::Failure;
use crate::style::Style;

/// Rust keywords and crate names a package may not take.
const RESERVED: [&str; 46] = [
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "return", "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use",
    "where", "while", "abstract", "become", "box", "do", "final", "gen", "test", "std", "core",
];

/// Checks that `name` can be a package name, a library name and a runtime id at once.
fn check_name(name: &str) -> Result<(), Failure> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !first_ok || !rest_ok || name.len() > 64 {
        return Err(Failure::Usage(format!(
            "`{}` cannot name a plugin: use a lower-case letter, then up to 63 lower-case letters, digits, `-` or `_` (it becomes the package name and the runtime id)",
            name.escape_debug()
        )));
    }
    if RESERVED.contains(&name) || RESERVED.contains(&name.replace('-', "_").as_str()) {
        return Err(Failure::Usage(format!(
            "`{name}` is a Rust keyword or a reserved crate name: choose another name"
        )));
    }
    Ok(())
}

/// `my-bot` → `MyBotRuntime`.
fn type_name(name: &str) -> String {
    let mut out = String::new();
    for part in name.split(['-', '_']).filter(|p| !p.is_empty()) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    out.push_str("Runtime");
    out
}

/// The checkout of agent-runtimes this command was built from, when it is still there: its
/// crates are what a new plugin builds against while they are not on crates.io.
fn checkout() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let has = |krate: &str| root.join(krate).join("Cargo.toml").is_file();
    (has("runtime-api") && has("conformance")).then(|| root.to_owned())
}

/// The `[patch.crates-io]` section that points the crate at a checkout, or the commented
/// form to fill in when there is none.
fn patch_section(checkout: Option<&Path>) -> String {
    match checkout {
        Some(root) => format!(
            "\n# The agent-runtimes crates are not on crates.io yet: they come from the checkout\n# `runtimes` was built from. Delete this section once they are published.\n[patch.crates-io]\nruntime-api = {{ path = {:?} }}\nruntime-conformance = {{ path = {:?} }}\n",
            root.join("runtime-api"),
            root.join("conformance"),
        ),
        None => "\n# The agent-runtimes crates are not on crates.io yet: uncomment and point these paths at\n# a checkout of agent-runtimes.\n# [patch.crates-io]\n# runtime-api = { path = \"../agent-runtimes/runtime-api\" }\n# runtime-conformance = { path = \"../agent-runtimes/conformance\" }\n".to_owned(),
    }
}

/// The files of the crate, with their text.
fn files(name: &str, checkout: Option<&Path>) -> Vec<(&'static str, String)> {
    let api = runtime_api::version::api_version();
    let api = format!("{}.{}", api.major, api.minor);
    let lib = format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    );
    let fill = |template: &str| {
        template
            .replace("{name}", name)
            .replace("{Type}", &type_name(name))
            .replace("{api}", &api)
            .replace("{lib}", &lib)
            .replace("{patch}", &patch_section(checkout))
    };
    vec![
        ("Cargo.toml", fill(include_str!("new/Cargo.toml.in"))),
        ("src/lib.rs", fill(include_str!("new/lib.rs.in"))),
        // What `cargo test` derives from `Config` in src/lib.rs (the scaffold test checks it).
        (
            "config.schema.json",
            fill(include_str!("new/config.schema.json.in")),
        ),
        (
            "tests/conformance.rs",
            fill(include_str!("new/conformance.rs.in")),
        ),
        ("README.md", fill(include_str!("new/README.md.in"))),
        (".gitignore", "/target\n".to_owned()),
    ]
}

/// Creates the crate in `dir` (default `./NAME`), which must not exist or be empty.
pub fn new(name: &str, dir: Option<PathBuf>, style: &Style) -> Result<(), Failure> {
    check_name(name)?;
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    match std::fs::read_dir(&dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Failure::Usage(format!(
                    "{} exists and is not empty: choose another folder with --dir",
                    dir.display()
                )));
            }
        }
        Err(error) if error.kind() == ErrorKind::NotFound => {}
        Err(error) => {
            return Err(Failure::Other(anyhow::anyhow!(
                "cannot read {}: {error}",
                dir.display()
            )));
        }
    }
    let checkout = checkout();
    for (file, text) in files(name, checkout.as_deref()) {
        write_new(&dir.join(file), &text)?;
    }
    println!(
        "{} plugin crate `{name}` in {}",
        style.ok("created"),
        dir.display()
    );
    match &checkout {
        Some(root) => println!(
            "the agent-runtimes crates are not on crates.io yet: Cargo.toml takes them from the checkout {}",
            crate::style::path(root)
        ),
        None => eprintln!(
            "{} the agent-runtimes crates are not on crates.io yet and the checkout `runtimes` was built from is gone: point the [patch.crates-io] paths at the end of Cargo.toml at a checkout",
            style.warn("warning:")
        ),
    }
    println!(
        "next: cd {} && cargo test   (see its README.md)",
        dir.display()
    );
    Ok(())
}

/// Writes a file that must not exist yet.
fn write_new(path: &Path, text: &str) -> Result<(), Failure> {
    let io =
        |e: std::io::Error| Failure::Other(anyhow::anyhow!("cannot write {}: {e}", path.display()));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io)?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_types_and_bad_names_are_refused() {
        assert_eq!(type_name("my-bot_2"), "MyBot2Runtime");
        assert_eq!(type_name("shout"), "ShoutRuntime");
        for good in ["shout", "my-bot", "a1_b"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Shout",
            "1bot",
            "my.bot",
            "fn",
            "test",
            "a b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    fn files_manifest(name: &str, checkout: &Path) -> String {
        files(name, Some(checkout)).swap_remove(0).1
    }

    #[test]
    fn the_crate_depends_on_runtime_api_by_version() {
        let files = files("my-bot", None);
        let manifest = &files[0].1;
        let api = runtime_api::version::api_version();
        assert!(manifest.contains(&format!(
            "runtime-api = {{ version = \"{}.{}\", features = [\"typed-config\"] }}",
            api.major, api.minor
        )));
        assert!(manifest.contains("# [patch.crates-io]"));
        assert!(manifest.contains("\n[workspace]\n"));
        let patched = files_manifest("my-bot", Path::new("/src/agent-runtimes"));
        assert!(patched.contains(
            "\n[patch.crates-io]\nruntime-api = { path = \"/src/agent-runtimes/runtime-api\" }"
        ));
        assert!(
            patched
                .contains("runtime-conformance = { path = \"/src/agent-runtimes/conformance\" }")
        );
        assert!(manifest.contains("crate-type = [\"cdylib\", \"rlib\"]"));
        assert!(files[1].1.contains("pub struct MyBotRuntime"));
        // The schema file is JSON once filled in, and names the keys of `Config`.
        let schema: serde_json::Value = serde_json::from_str(&files[2].1).unwrap();
        let keys: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["max_words", "prefix"]);
        assert!(files[1].1.contains("    prefix: String,\n"));
        assert!(files[1].1.contains("    max_words: Option<u32>,\n"));
        assert!(files[1].1.contains("const ID: &'static str = \"my-bot\";"));
        assert!(
            !files
                .iter()
                .any(|(_, text)| text.contains("{Type}") || text.contains("{api}"))
        );
    }
}
