//! The WebAssembly component: binds the `reset-hook` world's exports to the
//! plain logic in the crate root, and the `PolicyHost` trait to the host imports.

wit_bindgen::generate!({
    world: "reset-hook",
    path: "../../wit/lila-hooks-0.1.0",
});

use exports::lila::hooks::reset::Guest;
use lila::hooks::host::{self, LogLevel};
use lila::hooks::state;
use lila::hooks::types::{Decision, ResetContext, ResetReport};

use crate::policy::Verdict;
use crate::{PolicyHost, ResetFacts};

struct WitHost;

impl PolicyHost for WitHost {
    fn state_get(&mut self, key: &str) -> Option<String> {
        state::state_get(key)
    }

    fn state_set(&mut self, key: &str, value: &str) -> Result<(), String> {
        state::state_set(key, value)
    }

    fn warn(&mut self, message: &str) {
        host::log(LogLevel::Warn, message);
    }
}

/// A configuration error traps after logging why: the trap makes the call
/// `failed`, and the operator's fail mode for this plugin decides the reset.
fn fail(error: &crate::config::ConfigError) -> ! {
    let message = error.to_string();
    host::log(LogLevel::Error, &message);
    panic!("{message}");
}

struct TenantPolicy;

impl Guest for TenantPolicy {
    fn before_clear(ctx: ResetContext) -> Decision {
        let reset = ResetFacts {
            tenant: &ctx.tenant,
            phone: &ctx.phone,
            at_ms: ctx.requested_at_ms,
        };
        match crate::before_clear(&host::config(), &reset, &mut WitHost) {
            Ok(Verdict::Allow) => Decision::Allow,
            Ok(Verdict::Veto(reason)) => {
                host::log(LogLevel::Info, &format!("veto: {reason}"));
                Decision::Veto(reason)
            }
            Err(error) => fail(&error),
        }
    }

    fn after_clear(report: ResetReport) {
        let reset = ResetFacts {
            tenant: &report.tenant,
            phone: &report.phone,
            at_ms: report.finished_at_ms,
        };
        if let Err(error) = crate::after_clear(&host::config(), &reset, &mut WitHost) {
            fail(&error);
        }
    }
}

export!(TenantPolicy);
