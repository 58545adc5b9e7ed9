//! The client's life: starting it, its notices and events, restarts, stopping it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::{Instant, timeout};
use tracing::{Instrument, debug, error, info, warn};

use super::{SessionActor, backoff};
use crate::clock::now_ms;
use crate::core::record::DesiredState;
use crate::core::status::{Reaction, SessionEvent};
use crate::metrics::Metrics;
use crate::whatsapp::{ClientNotice, EventSink, WhatsAppClient, WhatsAppError};

/// Contacts arrive in bursts (history sync); they are written at most this often.
const CONTACTS_SAVE_DELAY: Duration = Duration::from_secs(2);
/// The first backup of a newly connected session comes at most this soon.
const FIRST_BACKUP_DELAY: Duration = Duration::from_secs(30);
/// How long an issued pairing code is repeated instead of asking for a new one
/// (WhatsApp keeps it valid for about 180 s; stop a little earlier).
pub(super) const PAIRING_CODE_VALIDITY: Duration = Duration::from_secs(150);
/// How long a reset waits for a client that is still being built.
const START_WAIT: Duration = Duration::from_secs(10);

pub(super) type StartResult = Result<Arc<dyn WhatsAppClient>, WhatsAppError>;

impl SessionActor {
    pub(super) fn begin_start(&mut self) {
        if self.client.is_some() || self.start_task.is_some() {
            return;
        }
        self.generation += 1;
        let generation = self.generation;
        let tx = self.notices_tx.clone();
        let sink = EventSink::new(move |notice| {
            let _ = tx.send((generation, notice));
        });
        self.state.on_start();
        let ctx = self.ctx.clone();
        let phone = self.phone.clone();
        self.start_task = Some(tokio::spawn(
            async move {
                let _permit = ctx.start_permits.acquire().await;
                let ready = ctx
                    .store
                    .client_store(&phone)
                    .await
                    .map_err(|e| WhatsAppError::Store(e.to_string()))?;
                match &ready.restored_from {
                    Some(backup) => {
                        Metrics::inc(&ctx.metrics.backups_restored);
                        warn!(backup = %backup.display(), "the store was missing or damaged; restored it from a backup");
                    }
                    None => debug!("store ready"),
                }
                let store = ready.store;
                ctx.whatsapp.start(&phone, &store, sink).await
            }
            .in_current_span(),
        ));
    }

    pub(super) async fn on_started(&mut self, started: StartResult) {
        match started {
            Ok(client) => {
                Metrics::inc(&self.ctx.metrics.client_starts);
                self.client = Some(client);
            }
            Err(WhatsAppError::Unreachable { cause, detail }) => {
                // Like a running client's failed dial: `reconnecting`, with
                // the reason, and a retry after the back-off.
                Metrics::inc(&self.ctx.metrics.client_start_failures);
                // No client to stop (its reaction): only the restart is owed.
                let _ = self
                    .state
                    .on_event(SessionEvent::ConnectFailed { cause, detail });
                let retry_in = self.schedule_restart();
                warn!(
                    retry_in_ms = retry_in.map(|d| d.as_millis() as u64),
                    "the WhatsApp client did not start: WhatsApp cannot be reached"
                );
            }
            Err(e) => {
                Metrics::inc(&self.ctx.metrics.client_start_failures);
                self.state.on_start_failed(e.to_string());
                let retry_in = self.schedule_restart();
                warn!(error = %e, retry_in_ms = retry_in.map(|d| d.as_millis() as u64), "the WhatsApp client did not start");
            }
        }
    }

    /// Sets the restart timer (when the session is meant to run); the delay.
    /// Callers log it in their own line: one line per attempt, not three.
    pub(super) fn schedule_restart(&mut self) -> Option<Duration> {
        if self.desired() != Some(DesiredState::Running) {
            return None;
        }
        let delay = backoff(
            self.restart_attempts,
            self.ctx.config.sessions.max_restart_backoff,
        );
        self.restart_attempts = self.restart_attempts.saturating_add(1);
        self.restart_at = Some(Instant::now() + delay);
        Some(delay)
    }

    pub(super) async fn on_notice(&mut self, generation: u64, notice: ClientNotice) {
        // Late notices from a client that was replaced, stopped or reset.
        if generation != self.generation || (self.client.is_none() && self.start_task.is_none()) {
            debug!("dropped a notice from a client that no longer counts");
            return;
        }
        match notice {
            ClientNotice::Contact {
                jid,
                name,
                from_address_book,
            } => {
                let name = name.trim().to_owned();
                if name.is_empty() || (!from_address_book && self.contacts.contains_key(&jid)) {
                    return;
                }
                if self.contacts.get(&jid) != Some(&name) {
                    self.contacts.insert(jid, name);
                    self.contacts_save_at
                        .get_or_insert(Instant::now() + CONTACTS_SAVE_DELAY);
                }
            }
            ClientNotice::PairingCode { code } => {
                self.publish_pairing_code(&code);
                self.pairing_code = Some((code, Instant::now() + PAIRING_CODE_VALIDITY));
            }
            ClientNotice::Receipt { message_ids, kind } => {
                self.on_receipt(&message_ids, kind).await
            }
            ClientNotice::Session(event) => self.on_session_event(event).await,
        }
    }

    pub(super) async fn on_session_event(&mut self, event: SessionEvent) {
        let name = match &event {
            SessionEvent::Qr { .. } => "qr",
            SessionEvent::Connected { .. } => "connected",
            SessionEvent::Disconnected => "disconnected",
            SessionEvent::LoggedOut { .. } => "logged_out",
            SessionEvent::StreamReplaced => "stream_replaced",
            SessionEvent::PairingExpired => "pairing_expired",
            SessionEvent::ClientExited { .. } => "client_exited",
            SessionEvent::ConnectFailed { .. } => "connect_failed",
        };
        let failure = match &event {
            SessionEvent::ConnectFailed { cause, detail } => {
                self.ctx.metrics.connection_failed(*cause);
                Some((*cause, detail.clone()))
            }
            _ => {
                info!(event = name, "client event");
                None
            }
        };
        let reaction = self.state.on_event(event);
        self.update_connected_gauge();
        match reaction {
            Reaction::Nothing => {}
            Reaction::FlushOutbox => {
                self.restart_attempts = 0;
                if std::mem::take(&mut self.resumed_at_boot) {
                    self.ctx
                        .metrics
                        .boot_sessions_reconnected
                        .fetch_add(1, Ordering::Relaxed);
                }
                self.pairing_code = None;
                if self.next_backup_at.is_none() && self.takes_backups() {
                    let first = self.ctx.config.backups.interval.min(FIRST_BACKUP_DELAY);
                    self.next_backup_at = Some(Instant::now() + first);
                }
                self.pump_outbox();
            }
            Reaction::ForgetCredentials => {
                Metrics::inc(&self.ctx.metrics.server_logouts);
                warn!("the phone unlinked this device; removing its dead credentials");
                self.stop_client(false).await;
                let mut record = self.record.clone();
                if let Some(r) = record.as_mut() {
                    r.desired = DesiredState::LoggedOut;
                    r.updated_at_ms = now_ms();
                }
                if let Some(r) = record
                    && let Err(e) = self.save_record(r).await
                {
                    error!(error = %e, "could not record the logout");
                }
                if let Err(e) = self.remove_credentials().await {
                    error!(error = %e, "could not remove the dead credentials");
                }
                self.contacts.clear();
                self.contacts_save_at = None;
            }
            Reaction::StopClient => {
                self.stop_client(false).await;
                self.state.status = crate::core::status::Status::Failed;
            }
            Reaction::StopAndStayDown => {
                self.stop_client(false).await;
                self.state.status = crate::core::status::Status::Failed;
                if let Some(mut r) = self.record.clone() {
                    r.desired = DesiredState::Stopped;
                    r.updated_at_ms = now_ms();
                    if let Err(e) = self.save_record(r).await {
                        error!(error = %e, "could not record the stop");
                    }
                }
            }
            reaction @ (Reaction::StopAndRestartLater | Reaction::PairAgain) => {
                self.stop_client(false).await;
                // Only a session meant to run is retried (and says so).
                let retry_in = self.schedule_restart();
                if retry_in.is_some() {
                    self.state.on_stopped_for_restart();
                }
                if reaction == Reaction::PairAgain {
                    Metrics::inc(&self.ctx.metrics.pairing_restarts);
                    warn!(
                        retry_in_ms = retry_in.map(|d| d.as_millis() as u64),
                        "the connection dropped during pairing; its QR codes are dead, pairing again with a new client"
                    );
                }
                if let Some((cause, detail)) = failure {
                    // One line per attempt; the back-off bounds how many there are.
                    warn!(
                        cause = cause.as_str(),
                        attempt = self.restart_attempts,
                        retry_in_ms = retry_in.map(|d| d.as_millis() as u64),
                        "cannot reach WhatsApp: {detail}"
                    );
                }
            }
            Reaction::ScheduleRestart => {
                // The exited client is kept (and its generation still
                // counts) until the restart: the client's events run on their
                // own tasks, so a `LoggedOut` explaining the exit may arrive
                // after it, and must still cancel the restart.
                let retry_in = self.schedule_restart();
                info!(
                    retry_in_ms = retry_in.map(|d| d.as_millis() as u64),
                    "client restart scheduled"
                );
            }
        }
    }

    pub(super) fn update_connected_gauge(&mut self) {
        let connected = self.state.ready();
        if connected != self.counted_connected {
            let delta = if connected { 1 } else { -1 };
            self.ctx
                .metrics
                .sessions_connected
                .fetch_add(delta, Ordering::Relaxed);
            self.counted_connected = connected;
        }
    }

    /// Stops everything that runs for this phone: the client (logging it out
    /// of WhatsApp when `logout`), a start in progress, a send, the timers.
    /// Waits for a backup in progress, so no snapshot is written afterwards.
    /// Returns whether a client was logged out.
    pub(super) async fn stop_client(&mut self, logout: bool) -> bool {
        self.generation += 1;
        self.restart_at = None;
        self.send_retry_at = None;
        self.next_backup_at = None;
        self.requests.abort_all();
        self.pairing_code = None;
        if let Some(task) = self.send_task.take() {
            task.abort();
            let _ = task.await;
        }
        if let Some(mut task) = self.start_task.take() {
            match timeout(START_WAIT, &mut task).await {
                Ok(Ok(Ok(client))) => self.client = Some(client),
                Ok(_) => {}
                Err(_) => {
                    warn!("the client was still starting; abandoned it");
                    task.abort();
                }
            }
        }
        let mut logged_out = false;
        if let Some(client) = self.client.take() {
            let limits = &self.ctx.config.sessions;
            if logout {
                match timeout(limits.logout_timeout, client.logout()).await {
                    Ok(()) => logged_out = true,
                    Err(_) => {
                        warn!("logout timed out; stopping the client without it");
                        if timeout(limits.logout_timeout, client.stop()).await.is_err() {
                            error!("the client did not stop in time; dropping it");
                        }
                    }
                }
            } else if timeout(limits.logout_timeout, client.stop()).await.is_err() {
                error!("the client did not stop in time; dropping it");
            }
        }
        if let Some(task) = self.backup_task.take() {
            // A snapshot runs on a blocking thread that abort() cannot stop:
            // wait for it, so it cannot write a backup after the files are gone.
            let _ = task.await;
        }
        self.state.on_stop();
        self.update_connected_gauge();
        logged_out
    }

    pub(super) async fn save_contacts(&self) {
        if let Err(e) = self
            .ctx
            .store
            .save_contacts(&self.phone, &self.contacts)
            .await
        {
            warn!(error = %e, "could not save contacts");
        }
    }
}
