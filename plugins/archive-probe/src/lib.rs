//! archive-probe: a test-only lila plugin (lila:hooks@0.2.0, reset and event
//! hooks) that calls `write-archive` from the hooks its config names, so the
//! host's tests can check where the archive capability works and how far
//! its quota goes. Never bundled (see `plugins/README.md`).
//!
//! The config is `{"hooks": ["before-clear", "after-clear", "on-event"],
//! "bytes": N}`: each named hook writes one archive of `N` bytes (default
//! 1024). What the host answered is kept in the plugin's state under the
//! hook's name (`ok: PATH` or `err: SENTENCE`), and a refused write in
//! `before-clear` vetoes the reset with the host's sentence.

#[cfg(target_arch = "wasm32")]
mod component;

/// What the config asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub hooks: Vec<String>,
    pub bytes: usize,
}

impl Probe {
    pub fn writes_in(&self, hook: &str) -> bool {
        self.hooks.iter().any(|h| h == hook)
    }
}

/// Parses the config JSON; a missing `hooks` means none, a missing `bytes` 1024.
pub fn parse(config_json: &str) -> Result<Probe, String> {
    let value: serde_json::Value = serde_json::from_str(config_json).map_err(|e| e.to_string())?;
    let hooks = value["hooks"]
        .as_array()
        .map(|hooks| {
            hooks
                .iter()
                .filter_map(|h| h.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let bytes = value["bytes"].as_u64().unwrap_or(1024) as usize;
    Ok(Probe { hooks, bytes })
}

/// The state value that records an answer of `write-archive`.
pub fn answer(result: &Result<String, String>) -> String {
    match result {
        Ok(path) => format!("ok: {path}"),
        Err(error) => format!("err: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_names_hooks_and_a_size() {
        let probe = parse(r#"{"hooks":["on-event"],"bytes":10}"#).unwrap();
        assert!(probe.writes_in("on-event") && !probe.writes_in("before-clear"));
        assert_eq!(probe.bytes, 10);
        assert_eq!(parse("{}").unwrap().bytes, 1024);
        assert_eq!(answer(&Err("denied: x".into())), "err: denied: x");
    }
}
