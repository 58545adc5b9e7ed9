//! How far each host import goes: the sizes, counts and names the imports
//! check before they touch the network or the disk (`http-post` bodies,
//! archive names, the state store, log lines), pure and tested here without
//! wasmtime, sockets or files.
//!
//! Which capabilities a plugin was granted, and the URL allow-list of
//! `http`, are read and checked with the `[plugins]` section:
//! `config::capabilities`.

/// Largest request body `http-post` sends (wit/README.md).
pub const MAX_HTTP_REQUEST_BYTES: usize = 1 << 20;
/// Response bodies are truncated past this.
pub const MAX_HTTP_RESPONSE_BYTES: usize = 64 << 10;
/// The host's own cap on one `http-post`, whatever the plugin asks for.
pub const MAX_HTTP_TIMEOUT_MS: u64 = 10_000;
/// Largest archive file, and largest total of `read-credentials`.
pub const MAX_ARCHIVE_BYTES: usize = 32 << 20;
pub const MAX_CREDENTIAL_BYTES: u64 = 32 << 20;
/// State store limits per (plugin, tenant) scope.
pub const MAX_STATE_KEY_BYTES: usize = 128;
pub const MAX_STATE_VALUE_BYTES: usize = 4096;
pub const MAX_STATE_KEYS: usize = 256;
/// Log lines: truncated past this, and at most this many per call.
pub const MAX_LOG_BYTES: usize = 4096;
pub const MAX_LOG_LINES_PER_CALL: u32 = 100;

/// `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`, without `..`: a plain file name.
pub fn check_archive_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if first_ok && rest_ok && name.len() <= 128 && !name.contains("..") {
        Ok(())
    } else {
        Err(format!(
            "archive name {name:?} must match [A-Za-z0-9][A-Za-z0-9._-]{{0,127}} and not contain '..'"
        ))
    }
}

/// The candidate names for `name` when it exists: `stem-1.ext`, `stem-2.ext`, …
pub fn numbered_archive_name(name: &str, n: u32) -> String {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}-{n}.{ext}"),
        _ => format!("{name}-{n}"),
    }
}

/// Whether one `state-set` fits the limits, given the scope's current keys.
pub fn check_state_set(
    key: &str,
    value: &str,
    n_keys: usize,
    key_exists: bool,
) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_STATE_KEY_BYTES {
        return Err(format!("state keys are 1 to {MAX_STATE_KEY_BYTES} bytes"));
    }
    if value.len() > MAX_STATE_VALUE_BYTES {
        return Err(format!(
            "state values are at most {MAX_STATE_VALUE_BYTES} bytes"
        ));
    }
    if !key_exists && n_keys >= MAX_STATE_KEYS {
        return Err(format!("the state store is full ({MAX_STATE_KEYS} keys)"));
    }
    Ok(())
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_are_plain_file_names() {
        for ok in [
            "a",
            "acme-5511999998888-20260501T194259Z.json",
            "A.b_c-d",
            &"x".repeat(128),
        ] {
            assert!(check_archive_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "a\\b",
            "a..b",
            "..",
            "a b",
            "é",
            &"x".repeat(129),
            "a\0",
        ] {
            assert!(check_archive_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(numbered_archive_name("a.json", 2), "a-2.json");
        assert_eq!(numbered_archive_name("a", 1), "a-1");
        assert_eq!(numbered_archive_name("a.tar.gz", 1), "a.tar-1.gz");
    }

    #[test]
    fn state_limits() {
        assert!(check_state_set("k", "v", 0, false).is_ok());
        assert!(check_state_set("", "v", 0, false).is_err());
        assert!(check_state_set(&"k".repeat(129), "v", 0, false).is_err());
        assert!(check_state_set("k", &"v".repeat(4097), 0, false).is_err());
        assert!(check_state_set("k", "v", 256, false).is_err());
        assert!(check_state_set("k", "v", 256, true).is_ok());
        assert_eq!(truncate_utf8("héllo", 2), "h");
    }
}
