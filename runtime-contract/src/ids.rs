//! The grammar of runtime ids and aliases: lower-case `[a-z0-9][a-z0-9._-]{0,63}`.

/// The longest id or alias, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Whether `name` is a valid runtime id or alias.
///
/// Usable in constants, so the export macro rejects a bad id at compile time.
///
/// # Examples
///
/// ```
/// use runtime_contract::ids::is_valid_id;
///
/// assert!(is_valid_id("openai-compatible"));
/// assert!(!is_valid_id("OpenAI"));
/// assert!(!is_valid_id("-echo"));
/// ```
pub const fn is_valid_id(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_ID_LEN {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let ok = b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || (i > 0 && (b == b'.' || b == b'_' || b == b'-'));
        if !ok {
            return false;
        }
        i += 1;
    }
    true
}

/// Why a name is not a valid id, for people; `None` when it is valid.
pub fn id_problem(name: &str) -> Option<String> {
    if is_valid_id(name) {
        return None;
    }
    Some(if name.is_empty() {
        "it is empty".to_owned()
    } else if name.len() > MAX_ID_LEN {
        format!("it is {} bytes long, the limit is {MAX_ID_LEN}", name.len())
    } else {
        "ids are lower-case `[a-z0-9][a-z0-9._-]{0,63}`".to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar_table() {
        let long = "a".repeat(64);
        let too_long = "a".repeat(65);
        let table = [
            ("echo", true),
            ("e", true),
            ("0day", true),
            ("openai-compatible", true),
            ("my_rt.v2", true),
            (long.as_str(), true),
            (too_long.as_str(), false),
            ("", false),
            ("Echo", false),
            ("-echo", false),
            (".echo", false),
            ("echo bot", false),
            ("écho", false),
            ("echo/x", false),
        ];
        for (name, valid) in table {
            assert_eq!(is_valid_id(name), valid, "{name:?}");
            assert_eq!(id_problem(name).is_none(), valid, "{name:?}");
        }
    }
}
