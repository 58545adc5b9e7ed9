//! The reset (`clear`): hooks, the commit point, logout, purge, journal,
//! `after_clear`; and finishing a reset that a crash cut short.
//!
//! The purge journal in the phone's record carries the reset's id and the
//! first half of its report, and says how far the reset got (`PurgeStage`).
//! A crash before the files are gone is finished by deleting them; a crash
//! before `after_clear` ran is finished by running it from the journal.
//! Either way `after_clear` hears of every reset, under the reset's own id.

use tracing::{error, info, warn};

use super::SessionActor;
use crate::clock::now_ms;
use crate::core::message_status::{MessageStatuses, RecipientChecks};
use crate::core::outbox::Outbox;
use crate::core::record::{DesiredState, PhoneRecord, PurgeJournal, PurgeStage};
use crate::core::reset_plan::{PlannedRemoval, RemovedTarget, ResetPlan, ResetStep};
use crate::core::reset_report::{ResetReport, SessionSnapshot};
use crate::core::status::SessionState;
use crate::core::tenant::Caller;
use crate::hooks::ResetContext;
use crate::metrics::Metrics;
use crate::session::{SessionError, describe_hook_runs};

/// A new reset id: the clock and a random part. Unique enough for
/// receivers to de-duplicate on; not a secret.
fn new_reset_id() -> String {
    let mut random = [0u8; 6];
    // If the OS generator ever failed, the clock alone still separates resets.
    let _ = getrandom::fill(&mut random);
    format!("r{:x}-{}", now_ms(), hex::encode(random))
}

/// What the plan will remove, in the report's terms, before anything is removed.
fn planned_removals(targets: &[PlannedRemoval]) -> Vec<RemovedTarget> {
    targets
        .iter()
        .map(|t| RemovedTarget {
            kind: t.kind,
            path: t.path.clone(),
            existed: !t.files.is_empty(),
            files: t.files.len(),
            bytes: t.files.iter().map(|(_, size)| size).sum(),
        })
        .collect()
}

impl SessionActor {
    pub(super) fn crash_point(&self, step: ResetStep) {
        if self.ctx.config.crash_at.as_deref() == Some(step.name()) {
            error!(
                step = step.name(),
                "LILA_CRASH_AT: aborting the process (test switch)"
            );
            std::process::abort();
        }
    }

    /// The reset. `force` (an operator's only: a tenant's is ignored) goes
    /// past tenants' plugins' refusals, and says so in the report.
    pub(super) async fn clear(
        &mut self,
        caller: &Caller,
        force: bool,
    ) -> Result<ResetReport, SessionError> {
        self.check_access(caller, true)?;
        let forced = force && *caller == Caller::Operator;
        // An earlier reset of this phone that did not finish is finished
        // first, so its `after_clear` is not lost under this one's journal.
        self.finish_interrupted_reset().await?;
        let started = std::time::Instant::now();
        let started_at_ms = now_ms();
        let plan = ResetPlan::for_phone(&self.ctx.layout, &self.phone);
        let reset_id = new_reset_id();

        // 1. before_clear hooks, with what the reset will remove.
        let targets = self.ctx.store.reset_inventory(&self.phone, &plan).await?;
        let session = SessionSnapshot {
            status: self.view().status.to_owned(),
            me: self.state.me.clone(),
            paired: self.state.me.is_some(),
        };
        let planned = planned_removals(&targets);
        let ctx = ResetContext {
            reset_id: reset_id.clone(),
            tenant: self.owner().cloned(),
            phone: self.phone.clone(),
            status: session.status.clone(),
            me: session.me.clone(),
            paired: session.paired,
            targets,
            outbox: self.outbox.iter().cloned().collect(),
            forced,
        };
        let before = self.ctx.hooks.before_clear(&ctx).await;
        if !before.overridden.is_empty() {
            Metrics::inc(&self.ctx.metrics.resets_forced);
            let plugins: Vec<&str> = before.overridden.iter().map(|(p, _)| p.as_str()).collect();
            warn!(plugins = ?plugins, reset_id = %reset_id, "an operator forced the reset past tenant plugins' refusals");
        }
        if let Some((plugin, reason)) = before.refusal {
            Metrics::inc(&self.ctx.metrics.resets_vetoed);
            warn!(plugin = %plugin, reset_id = %reset_id, hooks = %describe_hook_runs(&before.runs), "reset refused by a hook; nothing changed");
            return Err(SessionError::Vetoed { plugin, reason });
        }

        // 2. The commit point: the record says cleared, with an open purge
        //    journal holding what `after_clear` will need. From here on no
        //    boot, restart or backup brings the session back, and a crash
        //    is finished at the next start.
        let mut report = ResetReport {
            reset_id,
            tenant: self.owner().cloned(),
            phone: self.phone.clone(),
            started_at_ms,
            duration_ms: 0,
            session,
            logged_out: false,
            removed: planned,
            outbox_dropped: ctx.outbox,
            hooks: before.runs,
            finished_at_boot: false,
            forced,
        };
        let record = PhoneRecord {
            owner: self.owner().cloned(),
            desired: DesiredState::Cleared,
            purge: Some(PurgeJournal {
                started_at_ms,
                stage: PurgeStage::Deleting,
                report: report.clone(),
            }),
            updated_at_ms: started_at_ms,
        };
        if let Err(e) = self.save_record(record).await {
            Metrics::inc(&self.ctx.metrics.resets_failed);
            return Err(e);
        }
        self.crash_point(ResetStep::JournalWritten);

        // 3. Log out and drop every piece of in-memory state and every timer.
        report.logged_out = self.stop_client(true).await;
        self.drop_memory_state();
        self.crash_point(ResetStep::ClientStopped);

        // 4. Delete the files, credentials first.
        report.removed = match self.purge_files(&plan).await {
            Ok(removed) => removed,
            Err(e) => {
                Metrics::inc(&self.ctx.metrics.resets_failed);
                error!(error = %e, "reset could not delete every file; it stays cleared and is retried at the next start");
                return Err(e);
            }
        };

        // 5. The files are gone; `after_clear` is owed, and the journal says so.
        self.journal_files_removed(&report).await?;
        Metrics::inc(&self.ctx.metrics.resets_completed);

        // 6. after_clear hooks: told, never able to undo. Then the journal closes.
        let mut report = self.notify_after_clear(report).await;
        report.duration_ms = started.elapsed().as_millis() as u64;
        info!(
            reset_id = %report.reset_id,
            logged_out = report.logged_out,
            files = report.removed.iter().map(|r| r.files).sum::<usize>(),
            outbox_messages_dropped = report.outbox_messages_dropped(),
            hooks = %describe_hook_runs(&report.hooks),
            duration_ms = report.duration_ms,
            "session cleared"
        );
        // The status `cleared` first, so that a client reading the report
        // finds the session already cleared (as `session.status` precedes `session.qr`).
        self.publish_view();
        self.publish_cleared(&report);
        Ok(report)
    }

    /// Forgets everything held in memory for the phone (its files go next).
    fn drop_memory_state(&mut self) {
        self.state = SessionState::default();
        self.outbox = Outbox::default();
        self.note_outbox_usage();
        self.outbox_damaged = None;
        self.statuses = MessageStatuses::default();
        self.recipient_checks = RecipientChecks::default();
        self.contacts.clear();
        self.contacts_save_at = None;
    }

    pub(super) async fn purge_files(
        &mut self,
        plan: &ResetPlan,
    ) -> Result<Vec<RemovedTarget>, SessionError> {
        let mut removed = Vec::with_capacity(plan.targets.len());
        for target in &plan.targets {
            removed.push(self.ctx.store.purge_target(&self.phone, target).await?);
            self.crash_point(ResetStep::Removed(target.kind));
        }
        Ok(removed)
    }

    /// Records that every file of the reset is gone and only `after_clear`
    /// is owed (`PurgeStage::Notifying`).
    async fn journal_files_removed(&mut self, report: &ResetReport) -> Result<(), SessionError> {
        if let Some(mut record) = self.record.clone()
            && let Some(journal) = record.purge.as_mut()
        {
            journal.stage = PurgeStage::Notifying;
            journal.report = report.clone();
            record.updated_at_ms = now_ms();
            self.save_record(record).await?;
        }
        self.crash_point(ResetStep::Purged);
        Ok(())
    }

    /// Runs the `after_clear` hooks of a reset whose files are gone, then
    /// closes its journal. A crash before the journal is closed runs them
    /// again at the next start, under the same reset id.
    async fn notify_after_clear(&mut self, mut report: ResetReport) -> ResetReport {
        let after = self.ctx.hooks.after_clear(&report).await;
        report.hooks.extend(after);
        if let Some(mut record) = self.record.clone()
            && record.purge.is_some()
        {
            record.purge = None;
            record.updated_at_ms = now_ms();
            if let Err(e) = self.save_record(record).await {
                // The reset itself is done; the journal is closed at the next start.
                error!(error = %e, reset_id = %report.reset_id, "could not close the purge journal");
            }
        }
        self.crash_point(ResetStep::Completed);
        report
    }

    /// Finishes the files of a reset a crash cut short (boot, or before
    /// anything else is done with the phone). Returns the report whose
    /// `after_clear` is still owed, if any; the caller runs it with
    /// `finish_interrupted_notice`.
    pub(super) async fn finish_interrupted_purge(
        &mut self,
    ) -> Result<Option<ResetReport>, SessionError> {
        let Some(journal) = self.record.as_ref().and_then(|r| r.purge.clone()) else {
            return Ok(None);
        };
        let mut report = journal.report;
        report.finished_at_boot = true;
        if journal.stage == PurgeStage::Deleting {
            warn!(reset_id = %report.reset_id, "finishing a reset that was interrupted");
            self.stop_client(false).await;
            self.drop_memory_state();
            let plan = ResetPlan::for_phone(&self.ctx.layout, &self.phone);
            self.purge_files(&plan).await?;
            if let Some(mut record) = self.record.clone() {
                record.desired = DesiredState::Cleared;
                self.record = Some(record);
            }
            self.journal_files_removed(&report).await?;
            Metrics::inc(&self.ctx.metrics.resets_finished_at_boot);
        }
        Ok(Some(report))
    }

    /// Runs the owed `after_clear` of an interrupted reset and closes its journal.
    pub(super) async fn finish_interrupted_notice(&mut self, report: ResetReport) {
        let report = self.notify_after_clear(report).await;
        // The status `cleared` first, so that a client reading the report
        // finds the session already cleared (as `session.status` precedes `session.qr`).
        self.publish_view();
        self.publish_cleared(&report);
        info!(
            reset_id = %report.reset_id,
            hooks = %describe_hook_runs(&report.hooks),
            "an interrupted reset was finished and its after_clear hooks ran"
        );
    }

    /// Both halves at once, for a reset that must be finished before the
    /// phone is used again.
    pub(super) async fn finish_interrupted_reset(&mut self) -> Result<(), SessionError> {
        if let Some(report) = self.finish_interrupted_purge().await? {
            self.finish_interrupted_notice(report).await;
        }
        Ok(())
    }
}
