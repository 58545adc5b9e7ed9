//! Boot-time recovery policy: what to do with each phone the host finds on disk.
//!
//! The one rule the replaced service got wrong: a credentials file on disk is
//! *not* a reason to connect. Only a record whose desired state is `Running`
//! is resumed; a phone that was stopped, logged out or reset stays down, and
//! files with no record at all are left alone (and reported).

use crate::core::record::{DesiredState, PhoneRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootAction {
    /// Start the session again from its store (restoring a backup if the store is damaged).
    Resume,
    /// A reset was interrupted: delete what it had not yet deleted. Never resume.
    FinishPurge,
    /// Leave the phone down.
    StayDown,
    /// Session files exist but the host has no record of who owns them.
    /// They are not resumed; an operator can clear them.
    ReportOrphan,
}

/// Decide what boot does with one phone. `has_session_files` says whether
/// `sessions/{phone}/` or its backups exist.
pub fn boot_action(record: Option<&PhoneRecord>, has_session_files: bool) -> BootAction {
    match record {
        None if has_session_files => BootAction::ReportOrphan,
        None => BootAction::StayDown,
        Some(record) if record.purge.is_some() => BootAction::FinishPurge,
        Some(record) => match record.desired {
            DesiredState::Running => BootAction::Resume,
            DesiredState::Stopped | DesiredState::LoggedOut | DesiredState::Cleared => {
                BootAction::StayDown
            }
        },
    }
}

/// The state of a session's live SQLite store when a session starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreHealth {
    Healthy,
    Missing,
    Corrupt,
}

/// Whether a starting session should restore its store from the newest good
/// backup. A session only starts when its desired state is `Running`, so a
/// reset phone never reaches this question.
pub fn should_restore(health: StoreHealth, has_backups: bool) -> bool {
    has_backups && matches!(health, StoreHealth::Missing | StoreHealth::Corrupt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::{PurgeJournal, PurgeStage};
    use crate::core::reset_report::sample;
    use crate::core::tenant::TenantId;

    fn record(desired: DesiredState, purging: bool) -> PhoneRecord {
        let mut r = PhoneRecord::new(Some(TenantId::parse("t").unwrap()), desired, 0);
        if purging {
            r.purge = Some(PurgeJournal {
                started_at_ms: 1,
                stage: PurgeStage::Deleting,
                report: sample::report("51987654321", "t"),
            });
        }
        r
    }

    fn check(record: Option<PhoneRecord>, files: bool, expected: BootAction) {
        assert_eq!(
            boot_action(record.as_ref(), files),
            expected,
            "{record:?} files={files}"
        );
    }

    #[test]
    fn only_running_sessions_are_resumed() {
        check(
            Some(record(DesiredState::Running, false)),
            true,
            BootAction::Resume,
        );
        check(
            Some(record(DesiredState::Running, false)),
            false,
            BootAction::Resume,
        );
        check(
            Some(record(DesiredState::Stopped, false)),
            true,
            BootAction::StayDown,
        );
        check(
            Some(record(DesiredState::LoggedOut, false)),
            true,
            BootAction::StayDown,
        );
        check(
            Some(record(DesiredState::Cleared, false)),
            true,
            BootAction::StayDown,
        );
    }

    #[test]
    fn credentials_on_disk_alone_never_resume_a_session() {
        check(None, true, BootAction::ReportOrphan);
        check(None, false, BootAction::StayDown);
    }

    #[test]
    fn an_interrupted_reset_is_finished_whatever_the_desired_state_says() {
        for desired in [
            DesiredState::Running,
            DesiredState::Cleared,
            DesiredState::Stopped,
        ] {
            check(Some(record(desired, true)), true, BootAction::FinishPurge);
        }
    }

    #[test]
    fn restore_only_a_missing_or_corrupt_store_and_only_from_a_backup() {
        assert!(should_restore(StoreHealth::Missing, true));
        assert!(should_restore(StoreHealth::Corrupt, true));
        assert!(!should_restore(StoreHealth::Healthy, true));
        assert!(!should_restore(StoreHealth::Missing, false));
    }
}
