//! `ResetReport`: what a reset did, as the caller, the log and the
//! `after_clear` hooks are told.
//!
//! The report is built in two halves. At the reset's commit point the host
//! knows its id, the session as it was, the messages it drops and how the
//! `before_clear` hooks ended; that half goes into the purge journal, so
//! that a reset finished at boot after a crash still tells `after_clear`
//! what happened. The files removed and the logout are filled in once they
//! are done.

use crate::core::outbox::OutboxMessage;
use crate::core::reset_plan::RemovedTarget;
use crate::core::tenant::TenantId;
use crate::phone::Phone;

/// The names of the two hooks, as reports, logs and metrics spell them.
pub const BEFORE_CLEAR: &str = "before_clear";
pub const AFTER_CLEAR: &str = "after_clear";

/// The hook name as a `&'static str`, for a name read back from disk.
pub fn hook_name(raw: &str) -> Option<&'static str> {
    [BEFORE_CLEAR, AFTER_CLEAR].into_iter().find(|h| *h == raw)
}

/// How one hook call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    Ok,
    Vetoed(String),
    Failed(String),
    TimedOut,
    /// Not called: it was still compiling when the phase's budget ran out.
    Skipped(String),
}

impl HookOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            HookOutcome::Ok => "ok",
            HookOutcome::Vetoed(_) => "vetoed",
            HookOutcome::Failed(_) => "failed",
            HookOutcome::TimedOut => "timed_out",
            HookOutcome::Skipped(_) => "skipped",
        }
    }

    /// The sentence that goes with a veto or a failure.
    pub fn detail(&self) -> Option<&str> {
        match self {
            HookOutcome::Vetoed(d) | HookOutcome::Failed(d) | HookOutcome::Skipped(d) => Some(d),
            HookOutcome::Ok | HookOutcome::TimedOut => None,
        }
    }

    /// The inverse of `as_str` + `detail`, for an outcome read back from disk.
    pub fn parse(raw: &str, detail: Option<String>) -> Option<HookOutcome> {
        Some(match raw {
            "ok" => HookOutcome::Ok,
            "vetoed" => HookOutcome::Vetoed(detail.unwrap_or_default()),
            "failed" => HookOutcome::Failed(detail.unwrap_or_default()),
            "timed_out" => HookOutcome::TimedOut,
            "skipped" => HookOutcome::Skipped(detail.unwrap_or_default()),
            _ => return None,
        })
    }
}

/// One hook call, for the reset's response, its log line and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRun {
    pub plugin: String,
    pub hook: &'static str,
    pub outcome: HookOutcome,
    pub duration_ms: u64,
}

/// The session as it was when the reset started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSnapshot {
    /// The status as `GET /status` reported it.
    pub status: String,
    pub me: Option<String>,
    pub paired: bool,
}

/// What a reset removed, given to `after_clear` hooks and returned to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetReport {
    /// Unique per reset; `after_clear` receivers de-duplicate on it.
    pub reset_id: String,
    pub tenant: Option<TenantId>,
    pub phone: Phone,
    pub started_at_ms: u64,
    pub duration_ms: u64,
    pub session: SessionSnapshot,
    /// Whether a client was running and was logged out of WhatsApp.
    pub logged_out: bool,
    pub removed: Vec<RemovedTarget>,
    /// The queued messages the reset dropped, in order.
    pub outbox_dropped: Vec<OutboxMessage>,
    /// `before_clear` runs, then `after_clear` runs once they happened.
    pub hooks: Vec<HookRun>,
    /// True when a crash cut the reset short and the next start finished it.
    pub finished_at_boot: bool,
    /// An operator's forced reset: tenants' plugins were heard, and their
    /// refusals (vetoes, fail-closed failures) did not stop it.
    pub forced: bool,
}

impl ResetReport {
    pub fn outbox_messages_dropped(&self) -> usize {
        self.outbox_dropped.len()
    }
}

#[cfg(test)]
pub(crate) mod sample {
    use std::path::PathBuf;

    use super::*;
    use crate::core::reset_plan::PurgeTargetKind;

    /// A report with a little of everything, for tests of what holds one.
    pub(crate) fn report(phone: &str, tenant: &str) -> ResetReport {
        let phone = Phone::parse(phone).expect("test phone");
        ResetReport {
            reset_id: "r1-abc".into(),
            tenant: Some(TenantId::parse(tenant).expect("test tenant")),
            phone: phone.clone(),
            started_at_ms: 7,
            duration_ms: 0,
            session: SessionSnapshot {
                status: "connected".into(),
                me: Some(format!("{}@s.whatsapp.net", phone.as_str())),
                paired: true,
            },
            logged_out: true,
            removed: vec![RemovedTarget {
                kind: PurgeTargetKind::SessionDir,
                path: PathBuf::from("sessions").join(phone.as_str()),
                existed: true,
                files: 2,
                bytes: 10,
            }],
            outbox_dropped: vec![OutboxMessage {
                id: "3EB0AA".into(),
                to: crate::core::outbox::Recipient::parse("51900000001").expect("recipient"),
                text: "hola".into(),
                created_at_ms: 3,
                attempts: 0,
            }],
            hooks: vec![HookRun {
                plugin: "acme/guard".into(),
                hook: BEFORE_CLEAR,
                outcome: HookOutcome::Failed("boom".into()),
                duration_ms: 4,
            }],
            finished_at_boot: false,
            forced: false,
        }
    }
}
