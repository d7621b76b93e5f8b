//! Host programs that use `runtime-loader`, one per file; run them with
//! `cargo run -p host-examples --example <name> -- [PLUGIN_DIR]`. Each searches `PLUGIN_DIR`
//! (if given), then `AGENT_RUNTIMES_PATH`, then the per-user plugin folder.

#![forbid(unsafe_code)]

#[cfg(test)]
mod tests {
    /// The example file without its header: the module doc and the inner attributes.
    fn without_header(source: &str) -> String {
        source
            .lines()
            .skip_while(|line| line.starts_with("//!") || line.starts_with("#!["))
            .skip_while(|line| line.is_empty())
            .map(|line| format!("{line}\n"))
            .collect()
    }

    /// The first `rust` code block after `heading` in the README.
    fn readme_block(heading: &str) -> Option<String> {
        let readme = include_str!("../README.md");
        let section = &readme[readme.find(heading)?..];
        let start = section.find("```rust\n")? + "```rust\n".len();
        let end = start + section[start..].find("```\n")?;
        Some(section[start..end].to_owned())
    }

    #[test]
    fn the_readme_host_snippet_is_the_host_example() {
        let snippet = readme_block("## Using the loader from a host").expect("the README has it");
        assert_eq!(
            snippet,
            without_header(include_str!("host.rs")),
            "README.md's host snippet and examples/host.rs differ: change both"
        );
    }
}
