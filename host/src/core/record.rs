//! `PhoneRecord`: what the host remembers about a phone across restarts.
//!
//! The record, not the presence of a credentials file, decides whether a
//! session is resumed at boot. It also carries the reset's purge journal: a
//! reset writes `purge: Some(..)` before it deletes anything, and clears it
//! when every file is gone, so a crash in between is finished on the next
//! start instead of being forgotten.

use crate::core::reset_report::ResetReport;
use crate::core::tenant::TenantId;

/// What the operator or the tenant last asked for this phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DesiredState {
    /// Keep a session running; resume it at boot.
    Running,
    /// Disconnected on request (`DELETE /api/sessions/{phone}`); stays down.
    Stopped,
    /// The phone unlinked this device (server-side logout); stays down.
    LoggedOut,
    /// Reset (`clear`); stays down until an explicit create lifts it.
    Cleared,
}

impl DesiredState {
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Running => "running",
            DesiredState::Stopped => "stopped",
            DesiredState::LoggedOut => "logged_out",
            DesiredState::Cleared => "cleared",
        }
    }

    pub fn parse(raw: &str) -> Option<DesiredState> {
        Some(match raw {
            "running" => DesiredState::Running,
            "stopped" => DesiredState::Stopped,
            "logged_out" => DesiredState::LoggedOut,
            "cleared" => DesiredState::Cleared,
            _ => return None,
        })
    }
}

/// A reset past its commit point that has not yet finished: its files may
/// still be on disk, or its `after_clear` hooks may still be owed.
///
/// It carries the report's first half (see `reset_report`), so that a reset
/// finished at boot tells `after_clear` what a reset finished at once would
/// have: the same id, the session as it was, the messages dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeJournal {
    pub started_at_ms: u64,
    pub stage: PurgeStage,
    pub report: ResetReport,
}

/// How far a reset got before the journal was last written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeStage {
    /// Files may remain: delete every target of the plan, then notify.
    Deleting,
    /// Every file is gone; only the `after_clear` hooks are owed.
    Notifying,
}

impl PurgeStage {
    pub fn as_str(self) -> &'static str {
        match self {
            PurgeStage::Deleting => "deleting",
            PurgeStage::Notifying => "notifying",
        }
    }

    pub fn parse(raw: &str) -> Option<PurgeStage> {
        Some(match raw {
            "deleting" => PurgeStage::Deleting,
            "notifying" => PurgeStage::Notifying,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneRecord {
    /// The tenant that created the session. `None` for a record the host
    /// wrote for files it found without an owner (only an operator reaches those).
    pub owner: Option<TenantId>,
    pub desired: DesiredState,
    pub purge: Option<PurgeJournal>,
    pub updated_at_ms: u64,
}

impl PhoneRecord {
    pub fn new(owner: Option<TenantId>, desired: DesiredState, now_ms: u64) -> PhoneRecord {
        PhoneRecord {
            owner,
            desired,
            purge: None,
            updated_at_ms: now_ms,
        }
    }

    /// A cleared phone is "as if never connected": it is not listed and its
    /// status is 404, but its owner can clear it again (idempotently).
    pub fn is_cleared(&self) -> bool {
        self.desired == DesiredState::Cleared
    }
}
