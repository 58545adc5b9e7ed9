//! The component glue: each hook named in the config writes one archive
//! and keeps the host's answer in the plugin's state.

wit_bindgen::generate!({
    world: "reset-and-event-hook",
    path: "../../wit/lila-hooks-0.2.0",
});

use exports::lila::hooks::events;
use exports::lila::hooks::reset::Guest;
use lila::hooks::types::{Decision, ResetContext, ResetReport};
use lila::hooks::{archive, host, state};

use crate::{answer, parse};

/// Writes the archive if `hook` is named; the host's answer, if it was.
fn probe(hook: &str) -> Option<Result<String, String>> {
    let probe = match parse(&host::config()) {
        Ok(probe) => probe,
        Err(e) => panic!("bad config: {e}"),
    };
    if !probe.writes_in(hook) {
        return None;
    }
    let result = archive::write_archive(&format!("{hook}.bin"), &vec![7u8; probe.bytes]);
    let _ = state::state_set(hook, &answer(&result));
    Some(result)
}

struct ArchiveProbe;

impl Guest for ArchiveProbe {
    fn before_clear(_ctx: ResetContext) -> Decision {
        match probe("before-clear") {
            Some(Err(error)) => Decision::Veto(error),
            _ => Decision::Allow,
        }
    }

    fn after_clear(_report: ResetReport) {
        probe("after-clear");
    }
}

impl events::Guest for ArchiveProbe {
    fn on_event(_event: events::Event) {
        probe("on-event");
    }
}

export!(ArchiveProbe);
