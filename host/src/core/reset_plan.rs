//! The reset's vocabulary: the plan (what a `clear` removes, and in what
//! order), its named steps, what each target holds before the purge
//! (`PlannedRemoval`) and what was removed (`RemovedTarget`).
//!
//! Order matters only for how long dangerous files live, not for
//! correctness: the purge journal is written before the first deletion, so a
//! crash anywhere is finished at the next start. Credentials go first (they
//! are what could bring the old session back), then the backups that could
//! restore them, then the queue of messages that must not be sent, then the record of
//! what became of the messages sent (it names their recipients).

use std::path::PathBuf;

use crate::layout::DataLayout;
use crate::phone::Phone;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeTargetKind {
    /// `sessions/{phone}/`: credentials, the SQLite store and its WAL, contacts.
    SessionDir,
    /// `sessions/backups/{phone}/`: snapshots that auto-recovery could restore.
    Backups,
    /// `whatsapp/outbox/{phone}.json`: messages accepted but not yet sent.
    Outbox,
    /// `whatsapp/status/{phone}.json`: what became of the messages sent (ids, recipients, receipts).
    MessageStatuses,
}

impl PurgeTargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PurgeTargetKind::SessionDir => "session",
            PurgeTargetKind::Backups => "backups",
            PurgeTargetKind::Outbox => "outbox",
            PurgeTargetKind::MessageStatuses => "message-statuses",
        }
    }

    pub fn parse(raw: &str) -> Option<PurgeTargetKind> {
        [
            PurgeTargetKind::SessionDir,
            PurgeTargetKind::Backups,
            PurgeTargetKind::Outbox,
            PurgeTargetKind::MessageStatuses,
        ]
        .into_iter()
        .find(|k| k.as_str() == raw)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeTarget {
    pub kind: PurgeTargetKind,
    pub path: PathBuf,
}

/// The named points of a reset, in order. Used to report progress and, in
/// tests, to crash the process at each one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetStep {
    /// The record says `cleared` with a purge journal: from here on nothing resumes the phone.
    JournalWritten,
    /// The client is logged out (or the attempt timed out) and stopped.
    ClientStopped,
    /// One target of the plan was removed.
    Removed(PurgeTargetKind),
    /// Every file is gone; the journal says only `after_clear` is owed.
    Purged,
    /// `after_clear` ran and the journal is closed: the reset is complete.
    Completed,
}

impl ResetStep {
    /// Stable names, used by the `LILA_CRASH_AT` test switch.
    pub fn name(self) -> &'static str {
        match self {
            ResetStep::JournalWritten => "journal-written",
            ResetStep::ClientStopped => "client-stopped",
            ResetStep::Removed(PurgeTargetKind::SessionDir) => "session-removed",
            ResetStep::Removed(PurgeTargetKind::Backups) => "backups-removed",
            ResetStep::Removed(PurgeTargetKind::Outbox) => "outbox-removed",
            ResetStep::Removed(PurgeTargetKind::MessageStatuses) => "message-statuses-removed",
            ResetStep::Purged => "purged",
            ResetStep::Completed => "completed",
        }
    }

    pub const ALL: [ResetStep; 8] = [
        ResetStep::JournalWritten,
        ResetStep::ClientStopped,
        ResetStep::Removed(PurgeTargetKind::SessionDir),
        ResetStep::Removed(PurgeTargetKind::Backups),
        ResetStep::Removed(PurgeTargetKind::Outbox),
        ResetStep::Removed(PurgeTargetKind::MessageStatuses),
        ResetStep::Purged,
        ResetStep::Completed,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetPlan {
    pub targets: Vec<PurgeTarget>,
}

impl ResetPlan {
    pub fn for_phone(layout: &DataLayout, phone: &Phone) -> ResetPlan {
        ResetPlan {
            targets: vec![
                PurgeTarget {
                    kind: PurgeTargetKind::SessionDir,
                    path: layout.session_dir(phone),
                },
                PurgeTarget {
                    kind: PurgeTargetKind::Backups,
                    path: layout.backup_dir(phone),
                },
                PurgeTarget {
                    kind: PurgeTargetKind::Outbox,
                    path: layout.outbox_file(phone),
                },
                PurgeTarget {
                    kind: PurgeTargetKind::MessageStatuses,
                    path: layout.message_status_file(phone),
                },
            ],
        }
    }
}

/// One target of the plan before the purge: what it holds now, for the
/// `before_clear` hooks.
#[derive(Debug, Clone)]
pub struct PlannedRemoval {
    pub kind: PurgeTargetKind,
    /// The target, relative to the data root.
    pub path: PathBuf,
    /// Files under the target, relative to the data root, with their sizes.
    pub files: Vec<(PathBuf, u64)>,
}

/// One target of the plan after the purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedTarget {
    pub kind: PurgeTargetKind,
    /// The target, relative to the data root.
    pub path: PathBuf,
    pub existed: bool,
    pub files: usize,
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_removes_exactly_the_four_places_of_one_phone_credentials_first() {
        let layout = DataLayout::new("/data");
        let phone = Phone::parse("51987654321").unwrap();
        let plan = ResetPlan::for_phone(&layout, &phone);
        let kinds: Vec<_> = plan.targets.iter().map(|t| t.kind).collect();
        assert_eq!(
            kinds,
            [
                PurgeTargetKind::SessionDir,
                PurgeTargetKind::Backups,
                PurgeTargetKind::Outbox,
                PurgeTargetKind::MessageStatuses
            ]
        );
        for target in &plan.targets {
            assert!(target.path.starts_with("/data"));
            assert!(target.path.to_string_lossy().contains("51987654321"));
        }
    }

    #[test]
    fn step_names_are_unique() {
        let mut names: Vec<_> = ResetStep::ALL.iter().map(|s| s.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ResetStep::ALL.len());
    }
}
