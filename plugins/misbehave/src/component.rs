//! The component glue: each hook does what the config's mode for it says.

wit_bindgen::generate!({
    world: "reset-hook",
    path: "../../wit/lila-hooks-0.1.0",
});

use exports::lila::hooks::reset::Guest;
use lila::hooks::host::{self, LogLevel};
use lila::hooks::types::{Decision, ResetContext, ResetReport};

use crate::{Mode, parse};

/// Carries out `mode`; returns the veto reason for `Mode::Veto`.
fn act(mode: Mode, tag: &str) -> Option<String> {
    match mode {
        Mode::Ok => None,
        Mode::Veto => Some(format!("misbehave {tag} refuses this reset.")),
        Mode::Loop => {
            // Spin without end; only the host's epoch deadline stops this.
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        Mode::Hog => {
            // Keep every chunk alive so memory only grows, until the cap traps.
            let mut chunks: Vec<Vec<u8>> = Vec::new();
            loop {
                chunks.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&chunks);
            }
        }
        Mode::Trap => panic!("misbehave {tag}: trapping on purpose"),
        Mode::Sleep => {
            // Sleeps past any budget: the host cuts the sleep at the deadline.
            host::sleep_ms(60_000);
            None
        }
    }
}

struct Misbehave;

impl Guest for Misbehave {
    fn before_clear(_ctx: ResetContext) -> Decision {
        let behaviour = match parse(&host::config()) {
            Ok(b) => b,
            Err(e) => panic!("bad config: {e}"),
        };
        host::log(LogLevel::Info, &format!("before-clear {}", behaviour.tag));
        match act(behaviour.before, &behaviour.tag) {
            Some(reason) => Decision::Veto(reason),
            None => Decision::Allow,
        }
    }

    fn after_clear(_report: ResetReport) {
        let behaviour = match parse(&host::config()) {
            Ok(b) => b,
            Err(e) => panic!("bad config: {e}"),
        };
        host::log(LogLevel::Info, &format!("after-clear {}", behaviour.tag));
        act(behaviour.after, &behaviour.tag);
    }
}

export!(Misbehave);
