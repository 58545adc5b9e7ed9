//! Disconnect (`DELETE /api/sessions/{phone}`): log out, stop, drop dead credentials, keep the outbox.

use tracing::info;

use super::SessionActor;
use crate::clock::now_ms;
use crate::core::record::DesiredState;
use crate::core::reset_plan::{PurgeTargetKind, RemovedTarget, ResetPlan};
use crate::core::tenant::Caller;
use crate::session::{DisconnectReport, SessionError};

impl SessionActor {
    /// Removes the session's credentials and their backups (not the outbox).
    pub(super) async fn remove_credentials(&mut self) -> Result<Vec<RemovedTarget>, SessionError> {
        let plan = ResetPlan::for_phone(&self.ctx.layout, &self.phone);
        let mut removed = Vec::new();
        for target in plan.targets.iter().filter(|t| {
            matches!(
                t.kind,
                PurgeTargetKind::SessionDir | PurgeTargetKind::Backups
            )
        }) {
            removed.push(self.ctx.store.purge_target(&self.phone, target).await?);
        }
        self.state.me = None;
        Ok(removed)
    }

    pub(super) async fn disconnect(
        &mut self,
        caller: &Caller,
    ) -> Result<DisconnectReport, SessionError> {
        self.check_access(caller, false)?;
        // Remember the decision first: whatever fails below, nothing resumes this phone.
        if let Some(mut record) = self.record.clone() {
            record.desired = DesiredState::Stopped;
            record.updated_at_ms = now_ms();
            self.save_record(record).await?;
        }
        let logged_out = self.stop_client(true).await;
        // After a logout the credentials are dead: keeping them (or backups of
        // them) could only bring back a session WhatsApp no longer accepts.
        let removed = self.remove_credentials().await?;
        self.contacts.clear();
        self.contacts_save_at = None;
        info!(logged_out, "session disconnected");
        Ok(DisconnectReport {
            logged_out,
            removed,
            pending_messages_kept: self.outbox.len(),
        })
    }
}
