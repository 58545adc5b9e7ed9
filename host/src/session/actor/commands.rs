//! Commands: what the API asks of a phone, answered from the actor's state.

use std::sync::atomic::Ordering;

use tokio::time::{Instant, timeout};
use tracing::{Instrument, info, warn};

use super::SessionActor;
use crate::clock::now_ms;
use crate::core::record::{DesiredState, PhoneRecord};
use crate::core::reset_plan::ResetPlan;
use crate::core::tenant::{Caller, TenantId};
use crate::metrics::Metrics;
use crate::session::{Command, Reply, SessionContext, SessionError, SessionSlot, SessionView};
use crate::whatsapp::{ClientNotice, GroupInfo, WhatsAppError};

impl SessionActor {
    /// Whether `caller` may see this phone. Cleared phones are invisible
    /// ("as if never connected") except to a reset, which is idempotent.
    pub(super) fn check_access(
        &self,
        caller: &Caller,
        for_reset: bool,
    ) -> Result<(), SessionError> {
        match &self.record {
            Some(record)
                if caller.may_access(record.owner.as_ref())
                    && (for_reset || !record.is_cleared()) =>
            {
                Ok(())
            }
            // Files without any record (another program's, or a damaged
            // record): only an operator may reset them.
            None if for_reset && *caller == Caller::Operator && self.has_files() => Ok(()),
            _ => Err(SessionError::NotFound),
        }
    }

    /// No client, no task and no timer of this actor is running.
    pub(super) fn is_idle(&self) -> bool {
        self.client.is_none()
            && self.start_task.is_none()
            && self.send_task.is_none()
            && self.backup_task.is_none()
            && self.requests.is_empty()
            && self.restart_at.is_none()
            && self.next_backup_at.is_none()
            && self.send_retry_at.is_none()
            && self.contacts_save_at.is_none()
    }

    /// A phone with no record, no files and nothing running is a phone the
    /// host does not have: its actor (started by a request about it, a
    /// create that was refused or a reset of a number that never existed)
    /// has nothing to keep, and ends, so that such a request costs nothing
    /// that outlives it.
    pub(super) fn has_nothing_to_keep(&self) -> bool {
        self.record.is_none() && self.outbox.is_empty() && self.is_idle() && !self.has_files()
    }

    pub(super) fn has_files(&self) -> bool {
        ResetPlan::for_phone(&self.ctx.layout, &self.phone)
            .targets
            .iter()
            .any(|t| std::fs::symlink_metadata(&t.path).is_ok())
    }

    pub(super) fn view(&self) -> SessionView {
        let cleared = self.record.as_ref().is_some_and(PhoneRecord::is_cleared);
        SessionView {
            phone: self.phone.clone(),
            owner: self.owner().cloned(),
            status: if cleared {
                "cleared"
            } else {
                self.status_str()
            },
            ready: self.state.ready(),
            me: self.state.me.clone(),
            last_error: self.state.last_error.clone(),
            qr: self.state.qr.clone(),
            pending_messages: self.outbox.len(),
        }
    }

    pub(super) fn status_str(&self) -> &'static str {
        use crate::core::status::Status;
        match (self.state.status, self.desired()) {
            // Nothing running: say why, from what is remembered.
            (Status::Stopped, Some(DesiredState::LoggedOut)) => "logged_out",
            (Status::Stopped, Some(DesiredState::Running)) => "starting",
            (status, _) => status.as_str(),
        }
    }

    pub(super) async fn handle(&mut self, command: Command) {
        match command {
            Command::Create {
                caller,
                owner,
                reply,
            } => {
                let _ = reply.send(self.create(&caller, owner).await);
            }
            Command::View { caller, reply } => {
                let _ = reply.send(self.check_access(&caller, false).map(|()| self.view()));
            }
            Command::PairingCode { caller, reply } => self.request_pairing_code(&caller, reply),
            Command::Groups { caller, reply } => self.request_groups(&caller, reply),
            Command::Contacts { caller, reply } => {
                let _ = reply.send(
                    self.check_access(&caller, false)
                        .map(|()| self.contacts.clone()),
                );
            }
            Command::Enqueue {
                caller,
                to,
                text,
                reply,
            } => {
                let _ = reply.send(self.enqueue(&caller, &to, text).await);
            }
            Command::Outbox { caller, reply } => {
                let _ = reply.send(
                    self.check_access(&caller, false)
                        .map(|()| self.outbox.iter().cloned().collect()),
                );
            }
            Command::MessageStatus { caller, id, reply } => {
                let _ = reply.send(self.message_status(&caller, &id));
            }
            Command::Disconnect { caller, reply } => {
                let _ = reply.send(self.disconnect(&caller).await);
            }
            Command::Clear {
                caller,
                force,
                reply,
            } => {
                let result = self.clear(&caller, force).await;
                let _ = reply.send(result);
            }
            Command::Resume => {
                if self.desired() == Some(DesiredState::Running)
                    && self.record.as_ref().is_some_and(|r| r.purge.is_none())
                {
                    self.resumed_at_boot = true;
                    self.begin_start();
                }
            }
            Command::FinishPurge { reply } => {
                // Boot waits for the files only; the owed `after_clear`
                // runs after the answer, still before any later command.
                match self.finish_interrupted_purge().await {
                    Ok(owed) => {
                        let _ = reply.send(Ok(()));
                        if let Some(report) = owed {
                            self.finish_interrupted_notice(report).await;
                        }
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Idle { reply } => {
                let _ = reply.send(self.is_idle());
            }
            Command::Shutdown { .. } => {}
        }
    }

    pub(super) async fn create(
        &mut self,
        caller: &Caller,
        owner: Option<TenantId>,
    ) -> Result<SessionView, SessionError> {
        // Another tenant's phone and files without an owner get the same
        // sentence: a tenant learns that the number is not available to it,
        // never that it exists elsewhere (as a foreign session's 404 says
        // nothing either). The server's log tells the operator which.
        let unavailable = match &self.record {
            Some(record) if !record.is_cleared() && !caller.may_access(record.owner.as_ref()) => {
                Some("registered to another tenant")
            }
            None if caller.tenant().is_some() && self.has_files() => {
                Some("session files exist without an owner")
            }
            _ => None,
        };
        if let Some(why) = unavailable {
            info!(
                why,
                "create refused: the phone is not available to this caller"
            );
            return Err(SessionError::Conflict(crate::session::NOT_AVAILABLE.into()));
        }
        self.finish_interrupted_reset().await?;
        // A running session keeps its owner; a new or cleared one belongs to the creator.
        let owner = match &self.record {
            Some(record) if !record.is_cleared() => record.owner.clone(),
            _ => owner,
        };
        // A tenant's new session (not one it already has) takes room under
        // its limit until the record is written; an operator's does not.
        let ctx = self.ctx.clone();
        let is_new = !matches!(&self.record, Some(record) if !record.is_cleared());
        let _slot = match caller.tenant() {
            Some(tenant) if is_new => Some(self.room_for_a_tenants_session(&ctx, tenant)?),
            _ => None,
        };
        let starting = self.client.is_none() && self.start_task.is_none();
        if starting {
            self.check_room_for_a_session()?;
        }
        self.save_record(PhoneRecord::new(owner, DesiredState::Running, now_ms()))
            .await?;
        if starting {
            info!("session created; starting the WhatsApp client");
            self.restart_at = None;
            self.restart_attempts = 0;
            self.begin_start();
        }
        Ok(self.view())
    }

    /// Room for one more session of `tenant`, or a 429 saying how many it has.
    fn room_for_a_tenants_session<'a>(
        &self,
        ctx: &'a SessionContext,
        tenant: &TenantId,
    ) -> Result<SessionSlot<'a>, SessionError> {
        let max = ctx.config.limits.max_sessions_per_tenant;
        ctx.index.reserve_session(tenant, max).map_err(|owned| {
            Metrics::inc(&ctx.metrics.sessions_refused_tenant_limit);
            warn!(owned, max, "create refused: the tenant has as many sessions as it may");
            SessionError::LimitReached(format!(
                "this account already has {owned} sessions, the most it may have ({max}); reset one it no longer needs, or ask an operator to raise the limit"
            ))
        })
    }

    /// Refuses a new start when the node would run out of descriptors: a
    /// clear 503 now, rather than a session that fails later with "Too many
    /// open files" and takes a socket or a store of another one down with it.
    fn check_room_for_a_session(&self) -> Result<(), SessionError> {
        let metrics = &self.ctx.metrics;
        let limit = metrics.open_files_limit.load(Ordering::Relaxed);
        let open = crate::limits::open_files().unwrap_or(0);
        if crate::limits::room_for_a_session(open, limit, self.ctx.store.fds_per_session()) {
            return Ok(());
        }
        Metrics::inc(&metrics.sessions_refused_open_files);
        warn!(
            open,
            limit, "session start refused: out of file descriptors"
        );
        Err(SessionError::OutOfDescriptors { open, limit })
    }

    /// Asks WhatsApp for a pairing code on a task of its own; the answer
    /// comes back as a notice too, so the code is repeated while valid.
    fn request_pairing_code(&mut self, caller: &Caller, reply: Reply<String>) {
        if let Err(e) = self.check_access(caller, false) {
            let _ = reply.send(Err(e));
            return;
        }
        let Some(client) = self.client.clone() else {
            let _ = reply.send(Err(SessionError::Conflict(format!(
                "the session is not running (status: {}); create it first with POST /api/sessions",
                self.status_str()
            ))));
            return;
        };
        if self.state.ready() {
            let _ = reply.send(Err(SessionError::Conflict(
                "the session is already paired".into(),
            )));
            return;
        }
        // WhatsApp keeps one code valid for about three minutes and
        // refuses a second request meanwhile: repeat the current one.
        if let Some((code, valid_until)) = &self.pairing_code
            && Instant::now() < *valid_until
        {
            let _ = reply.send(Ok(code.clone()));
            return;
        }
        let phone = self.phone.clone();
        let limit = self.ctx.config.sessions.request_timeout;
        let notices = self.notices_tx.clone();
        let generation = self.generation;
        self.requests.spawn(
            async move {
                let result = match timeout(limit, client.pairing_code(&phone)).await {
                    Ok(result) => result.map_err(SessionError::from),
                    Err(_) => Err(SessionError::WhatsApp(WhatsAppError::Timeout)),
                };
                if let Ok(code) = &result {
                    let _ = notices
                        .send((generation, ClientNotice::PairingCode { code: code.clone() }));
                }
                let _ = reply.send(result);
            }
            .in_current_span(),
        );
    }

    /// Lists joined groups on a task of its own, so a slow answer never
    /// holds the mailbox.
    fn request_groups(&mut self, caller: &Caller, reply: Reply<Vec<GroupInfo>>) {
        if let Err(e) = self.check_access(caller, false) {
            let _ = reply.send(Err(e));
            return;
        }
        let (Some(client), true) = (self.client.clone(), self.state.ready()) else {
            let _ = reply.send(Err(SessionError::Conflict(format!(
                "the session is not connected (status: {})",
                self.status_str()
            ))));
            return;
        };
        let limit = self.ctx.config.sessions.request_timeout;
        self.requests.spawn(
            async move {
                let result = match timeout(limit, client.groups()).await {
                    Ok(result) => result.map_err(SessionError::from),
                    Err(_) => Err(SessionError::WhatsApp(WhatsAppError::Timeout)),
                };
                let _ = reply.send(result);
            }
            .in_current_span(),
        );
    }
}
