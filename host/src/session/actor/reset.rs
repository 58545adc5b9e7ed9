//! The reset (`clear`): hooks, the commit point, logout, purge, journal, after-hooks.

use tracing::{error, info, warn};

use super::{SessionActor, blocking};
use crate::core::outbox::Outbox;
use crate::core::record::{DesiredState, PhoneRecord, PurgeJournal};
use crate::core::reset_plan::{ResetPlan, ResetStep};
use crate::core::status::SessionState;
use crate::core::tenant::Caller;
use crate::hooks::{ResetContext, ResetReport};
use crate::metrics::Metrics;
use crate::session::purge::{inventory, remove};
use crate::session::{SessionError, describe_hook_runs};
use crate::storage::now_ms;

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

    pub(super) async fn clear(&mut self, caller: &Caller) -> Result<ResetReport, SessionError> {
        self.check_access(caller, true)?;
        let started = std::time::Instant::now();
        let started_at_ms = now_ms();
        let plan = ResetPlan::for_phone(&self.ctx.layout, &self.phone);

        // 1. before_clear hooks, with what the reset will remove.
        let layout = self.ctx.layout.clone();
        let plan_for_inventory = plan.clone();
        let targets = blocking(move || inventory(&layout, &plan_for_inventory)).await?;
        let ctx = ResetContext {
            tenant: self.owner().cloned(),
            phone: self.phone.clone(),
            status: self.view().status.to_owned(),
            me: self.state.me.clone(),
            paired: self.state.me.is_some(),
            targets,
            outbox: self.outbox.iter().cloned().collect(),
        };
        let before = self.ctx.hooks.before_clear(&ctx).await;
        if let Some((plugin, reason)) = before.refusal {
            Metrics::inc(&self.ctx.metrics.resets_vetoed);
            warn!(plugin = %plugin, hooks = %describe_hook_runs(&before.runs), "reset refused by a hook; nothing changed");
            return Err(SessionError::Vetoed { plugin, reason });
        }

        // 2. The commit point: the record says cleared, with an open purge
        //    journal. From here on no boot, restart or backup brings it back,
        //    and a crash is finished at the next start.
        let record = PhoneRecord {
            owner: self.owner().cloned(),
            desired: DesiredState::Cleared,
            purge: Some(PurgeJournal { started_at_ms }),
            updated_at_ms: started_at_ms,
        };
        if let Err(e) = self.save_record(record) {
            Metrics::inc(&self.ctx.metrics.resets_failed);
            return Err(e);
        }
        self.crash_point(ResetStep::JournalWritten);

        // 3. Log out and drop every piece of in-memory state and every timer.
        let logged_out = self.stop_client(true).await;
        self.state = SessionState::default();
        let outbox_messages_dropped = self.outbox.len();
        self.outbox = Outbox::default();
        self.outbox_damaged = None;
        self.contacts.clear();
        self.contacts_save_at = None;
        self.crash_point(ResetStep::ClientStopped);

        // 4. Delete the files, credentials first.
        let removed = match self.purge_files(&plan).await {
            Ok(removed) => removed,
            Err(e) => {
                Metrics::inc(&self.ctx.metrics.resets_failed);
                error!(error = %e, "reset could not delete every file; it stays cleared and is retried at the next start");
                return Err(e);
            }
        };

        // 5. Close the journal.
        if let Some(mut record) = self.record.clone() {
            record.purge = None;
            record.updated_at_ms = now_ms();
            self.save_record(record)?;
        }
        self.crash_point(ResetStep::Completed);
        Metrics::inc(&self.ctx.metrics.resets_completed);

        let mut report = ResetReport {
            tenant: self.owner().cloned(),
            phone: self.phone.clone(),
            started_at_ms,
            duration_ms: 0,
            logged_out,
            removed,
            outbox_messages_dropped,
            hooks: before.runs,
        };
        // 6. after_clear hooks: told, never able to undo.
        let after = self.ctx.hooks.after_clear(&report).await;
        report.hooks.extend(after);
        report.duration_ms = started.elapsed().as_millis() as u64;
        info!(
            logged_out,
            files = report.removed.iter().map(|r| r.files).sum::<usize>(),
            outbox_messages_dropped,
            hooks = %describe_hook_runs(&report.hooks),
            duration_ms = report.duration_ms,
            "session cleared"
        );
        Ok(report)
    }

    pub(super) async fn purge_files(
        &mut self,
        plan: &ResetPlan,
    ) -> Result<Vec<crate::hooks::RemovedTarget>, SessionError> {
        let mut removed = Vec::with_capacity(plan.targets.len());
        for target in &plan.targets {
            let layout = self.ctx.layout.clone();
            let (kind, path) = (target.kind, target.path.clone());
            removed.push(blocking(move || remove(&layout, kind, &path)).await??);
            self.crash_point(ResetStep::Removed(target.kind));
        }
        Ok(removed)
    }

    pub(super) async fn finish_interrupted_purge(&mut self) -> Result<(), SessionError> {
        let Some(mut record) = self.record.clone() else {
            return Ok(());
        };
        if record.purge.is_none() {
            return Ok(());
        }
        warn!("finishing a reset that was interrupted");
        self.stop_client(false).await;
        self.outbox = Outbox::default();
        self.outbox_damaged = None;
        self.contacts.clear();
        let plan = ResetPlan::for_phone(&self.ctx.layout, &self.phone);
        self.purge_files(&plan).await?;
        record.desired = DesiredState::Cleared;
        record.purge = None;
        record.updated_at_ms = now_ms();
        self.save_record(record)?;
        Metrics::inc(&self.ctx.metrics.resets_finished_at_boot);
        Ok(())
    }
}
