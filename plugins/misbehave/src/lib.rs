//! misbehave: a test-only lila reset plugin whose behaviour its config picks.
//!
//! The host's tests use it to check that a plugin which loops, allocates
//! without end, traps, sleeps or vetoes is contained. It is never bundled
//! with lila (see `plugins/README.md`). The config is
//! `{"before": MODE, "after": MODE, "tag": "..."}`, where MODE is one of
//! `ok`, `veto`, `loop`, `hog`, `trap`, `sleep`, and `tag` (optional) is
//! logged and put in a veto reason so a test can tell two versions apart.

#[cfg(target_arch = "wasm32")]
mod component;

/// What one hook call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ok,
    Veto,
    Loop,
    Hog,
    Trap,
    Sleep,
}

/// The plugin's config: a mode per hook and a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behaviour {
    pub before: Mode,
    pub after: Mode,
    pub tag: String,
}

fn mode(value: &serde_json::Value) -> Result<Mode, String> {
    match value.as_str().unwrap_or("ok") {
        "ok" => Ok(Mode::Ok),
        "veto" => Ok(Mode::Veto),
        "loop" => Ok(Mode::Loop),
        "hog" => Ok(Mode::Hog),
        "trap" => Ok(Mode::Trap),
        "sleep" => Ok(Mode::Sleep),
        other => Err(format!("unknown mode {other:?}")),
    }
}

/// Parses the config JSON; missing modes mean `ok`.
pub fn parse(config_json: &str) -> Result<Behaviour, String> {
    let value: serde_json::Value = serde_json::from_str(config_json).map_err(|e| e.to_string())?;
    Ok(Behaviour {
        before: mode(&value["before"])?,
        after: mode(&value["after"])?,
        tag: value["tag"].as_str().unwrap_or("").to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_default_to_ok_and_unknown_ones_are_errors() {
        let b = parse(r#"{"before":"loop","tag":"v2"}"#).unwrap();
        assert_eq!(b.before, Mode::Loop);
        assert_eq!(b.after, Mode::Ok);
        assert_eq!(b.tag, "v2");
        assert!(parse(r#"{"after":"explode"}"#).is_err());
    }
}
