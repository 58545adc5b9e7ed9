//! The session actor: the one owner of a phone's state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, timeout};
use tracing::{Instrument, debug, error, info, warn};

use super::purge::{inventory, remove};
use super::{
    Command, DisconnectReport, SessionContext, SessionError, SessionHandle, SessionView,
    describe_hook_runs,
};
use crate::core::outbox::{Outbox, OutboxMessage, Recipient, message_id};
use crate::core::record::{DesiredState, PhoneRecord, PurgeJournal};
use crate::core::recovery::{StoreHealth, should_restore};
use crate::core::reset_plan::{PurgeTargetKind, ResetPlan, ResetStep};
use crate::core::status::{Reaction, SessionEvent, SessionState};
use crate::core::tenant::{Caller, TenantId};
use crate::hooks::{ResetContext, ResetReport};
use crate::metrics::Metrics;
use crate::phone::Phone;
use crate::storage::{self, StorageError, backups, contacts, now_ms, outbox_file, phone_records};
use crate::whatsapp::{ClientNotice, EventSink, WhatsAppClient, WhatsAppError};

/// How many commands may wait in one session's mailbox.
const MAILBOX: usize = 64;
/// Contacts arrive in bursts (history sync); they are written at most this often.
const CONTACTS_SAVE_DELAY: Duration = Duration::from_secs(2);
/// The first backup of a newly connected session comes at most this soon.
const FIRST_BACKUP_DELAY: Duration = Duration::from_secs(30);
/// How long an issued pairing code is repeated instead of asking for a new one
/// (WhatsApp keeps it valid for about 180 s; stop a little earlier).
const PAIRING_CODE_VALIDITY: Duration = Duration::from_secs(150);
/// How long a reset waits for a client that is still being built.
const START_WAIT: Duration = Duration::from_secs(10);

type StartResult = Result<Arc<dyn WhatsAppClient>, WhatsAppError>;

struct SessionActor {
    phone: Phone,
    ctx: Arc<SessionContext>,
    record: Option<PhoneRecord>,
    state: SessionState,
    outbox: Outbox,
    /// Set when the outbox file could not be read: the queue is then refused
    /// rather than overwritten, so nothing in the damaged file is lost by us.
    outbox_damaged: Option<String>,
    contacts: BTreeMap<String, String>,
    /// Bumped whenever the client is replaced or stopped: notices carrying an
    /// older generation come from a client that no longer counts.
    generation: u64,
    client: Option<Arc<dyn WhatsAppClient>>,
    start_task: Option<JoinHandle<StartResult>>,
    send_task: Option<JoinHandle<(String, Result<(), WhatsAppError>)>>,
    backup_task: Option<JoinHandle<Result<PathBuf, StorageError>>>,
    /// Pairing-code and groups requests in flight; aborted when the client goes.
    requests: JoinSet<()>,
    restart_at: Option<Instant>,
    restart_attempts: u32,
    send_retry_at: Option<Instant>,
    next_backup_at: Option<Instant>,
    contacts_save_at: Option<Instant>,
    /// The pairing code WhatsApp issued, and until when it is shown again.
    pairing_code: Option<(String, Instant)>,
    counted_connected: bool,
    notices_tx: mpsc::UnboundedSender<(u64, ClientNotice)>,
}

/// Starts the actor of `phone` and returns its handle and task.
pub fn spawn_session(ctx: Arc<SessionContext>, phone: Phone) -> (SessionHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(MAILBOX);
    let (notices_tx, notices_rx) = mpsc::unbounded_channel();
    let span = tracing::info_span!("session", phone = %phone, tenant = tracing::field::Empty);
    let handle = SessionHandle {
        phone: phone.clone(),
        tx,
    };
    let task = tokio::spawn(
        async move {
            let actor = SessionActor::load(ctx, phone, notices_tx);
            actor.run(rx, notices_rx).await;
        }
        .instrument(span),
    );
    (handle, task)
}

async fn join_opt<T>(task: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match task {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if getrandom::fill(&mut buf).is_err() {
        // The OS generator does not fail on supported platforms; if it ever
        // did, a time-derived id is still unique enough for a message id.
        let t = now_ms().to_le_bytes();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = t[i % t.len()] ^ (i as u8);
        }
    }
    buf
}

fn backoff(attempts: u32, max: Duration) -> Duration {
    let secs = 1u64.checked_shl(attempts.min(16)).unwrap_or(u64::MAX);
    Duration::from_secs(secs).min(max)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, SessionError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| SessionError::Unavailable)
}

impl SessionActor {
    fn load(
        ctx: Arc<SessionContext>,
        phone: Phone,
        notices_tx: mpsc::UnboundedSender<(u64, ClientNotice)>,
    ) -> SessionActor {
        let record = match phone_records::load(&ctx.layout, &phone) {
            Ok(record) => record,
            Err(e) => {
                // A damaged record never resumes anything; an operator can clear the phone.
                error!(error = %e, "phone record is damaged; the session stays down");
                None
            }
        };
        if let Some(owner) = record.as_ref().and_then(|r| r.owner.as_ref()) {
            tracing::Span::current().record("tenant", tracing::field::display(owner));
        }
        let (outbox, outbox_damaged) = match outbox_file::load(&ctx.layout, &phone) {
            Ok(outbox) => (outbox, None),
            Err(e) => {
                error!(error = %e, "outbox file is damaged; it is kept as is and new messages are refused");
                (Outbox::default(), Some(e.to_string()))
            }
        };
        let contacts = contacts::load(&ctx.layout, &phone).unwrap_or_else(|e| {
            warn!(error = %e, "contacts file is damaged; starting with none");
            BTreeMap::new()
        });
        SessionActor {
            phone,
            ctx,
            record,
            state: SessionState::default(),
            outbox,
            outbox_damaged,
            contacts,
            generation: 0,
            client: None,
            start_task: None,
            send_task: None,
            backup_task: None,
            requests: JoinSet::new(),
            restart_at: None,
            restart_attempts: 0,
            send_retry_at: None,
            next_backup_at: None,
            contacts_save_at: None,
            pairing_code: None,
            counted_connected: false,
            notices_tx,
        }
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut notices: mpsc::UnboundedReceiver<(u64, ClientNotice)>,
    ) {
        loop {
            tokio::select! {
                // Client notices first: a request answered by a task (a
                // pairing code) leaves a notice that must be seen before the
                // next command for the same phone.
                biased;
                Some((generation, notice)) = notices.recv() => self.on_notice(generation, notice).await,
                command = commands.recv() => match command {
                    Some(Command::Shutdown { reply }) => {
                        self.shutdown().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(command) => self.handle(command).await,
                    None => {
                        self.shutdown().await;
                        return;
                    }
                },
                started = join_opt(&mut self.start_task) => {
                    self.start_task = None;
                    let started = started.unwrap_or_else(|e| Err(WhatsAppError::Start(format!("start task failed: {e}"))));
                    self.on_started(started).await;
                }
                sent = join_opt(&mut self.send_task) => {
                    self.send_task = None;
                    if let Ok((id, result)) = sent {
                        self.on_sent(id, result);
                    }
                }
                backed_up = join_opt(&mut self.backup_task) => {
                    self.backup_task = None;
                    self.on_backup(backed_up);
                }
                _ = sleep_opt(self.restart_at) => {
                    self.restart_at = None;
                    if self.desired() == Some(DesiredState::Running) {
                        info!(attempt = self.restart_attempts, "restarting the WhatsApp client");
                        if self.client.is_some() {
                            // The client that exited: join it before building its successor.
                            self.stop_client(false).await;
                        }
                        self.begin_start();
                    }
                }
                _ = sleep_opt(self.send_retry_at) => {
                    self.send_retry_at = None;
                    self.pump_outbox();
                }
                _ = sleep_opt(self.next_backup_at) => {
                    self.next_backup_at = None;
                    self.begin_backup();
                }
                _ = sleep_opt(self.contacts_save_at) => {
                    self.contacts_save_at = None;
                    self.save_contacts();
                }
                Some(_) = self.requests.join_next(), if !self.requests.is_empty() => {}
            }
        }
    }

    fn desired(&self) -> Option<DesiredState> {
        self.record.as_ref().map(|r| r.desired)
    }

    fn owner(&self) -> Option<&TenantId> {
        self.record.as_ref().and_then(|r| r.owner.as_ref())
    }

    /// Whether `caller` may see this phone. Cleared phones are invisible
    /// ("as if never connected") except to a reset, which is idempotent.
    fn check_access(&self, caller: &Caller, for_reset: bool) -> Result<(), SessionError> {
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

    fn has_files(&self) -> bool {
        ResetPlan::for_phone(&self.ctx.layout, &self.phone)
            .targets
            .iter()
            .any(|t| std::fs::symlink_metadata(&t.path).is_ok())
    }

    fn view(&self) -> SessionView {
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

    fn status_str(&self) -> &'static str {
        use crate::core::status::Status;
        match (self.state.status, self.desired()) {
            // Nothing running: say why, from what is remembered.
            (Status::Stopped, Some(DesiredState::LoggedOut)) => "logged_out",
            (Status::Stopped, Some(DesiredState::Running)) => "starting",
            (status, _) => status.as_str(),
        }
    }

    async fn handle(&mut self, command: Command) {
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
            Command::PairingCode { caller, reply } => {
                if let Err(e) = self.check_access(&caller, false) {
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
                            let _ = notices.send((
                                generation,
                                ClientNotice::PairingCode { code: code.clone() },
                            ));
                        }
                        let _ = reply.send(result);
                    }
                    .in_current_span(),
                );
            }
            Command::Groups { caller, reply } => {
                if let Err(e) = self.check_access(&caller, false) {
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
                let _ = reply.send(self.enqueue(&caller, &to, text));
            }
            Command::Outbox { caller, reply } => {
                let _ = reply.send(
                    self.check_access(&caller, false)
                        .map(|()| self.outbox.iter().cloned().collect()),
                );
            }
            Command::Disconnect { caller, reply } => {
                let _ = reply.send(self.disconnect(&caller).await);
            }
            Command::Clear { caller, reply } => {
                let result = self.clear(&caller).await;
                let _ = reply.send(result);
            }
            Command::Resume => {
                if self.desired() == Some(DesiredState::Running)
                    && self.record.as_ref().is_some_and(|r| r.purge.is_none())
                {
                    self.begin_start();
                }
            }
            Command::FinishPurge { reply } => {
                let _ = reply.send(self.finish_interrupted_purge().await);
            }
            Command::Idle { reply } => {
                let idle = self.client.is_none()
                    && self.start_task.is_none()
                    && self.send_task.is_none()
                    && self.backup_task.is_none()
                    && self.restart_at.is_none()
                    && self.next_backup_at.is_none()
                    && self.send_retry_at.is_none();
                let _ = reply.send(idle);
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn save_record(&mut self, record: PhoneRecord) -> Result<(), SessionError> {
        phone_records::save(&self.ctx.layout, &self.phone, &record)?;
        if let Some(owner) = &record.owner {
            tracing::Span::current().record("tenant", tracing::field::display(owner));
        }
        self.record = Some(record);
        Ok(())
    }

    async fn create(
        &mut self,
        caller: &Caller,
        owner: Option<TenantId>,
    ) -> Result<SessionView, SessionError> {
        match &self.record {
            Some(record) if !record.is_cleared() && !caller.may_access(record.owner.as_ref()) => {
                return Err(SessionError::Conflict(
                    "this phone number is registered to another tenant".into(),
                ));
            }
            None if caller.tenant().is_some() && self.has_files() => {
                return Err(SessionError::Conflict(
                    "session files for this phone exist without an owner; an operator must clear them first".into(),
                ));
            }
            _ => {}
        }
        if self.record.as_ref().is_some_and(|r| r.purge.is_some()) {
            self.finish_interrupted_purge().await?;
        }
        // A running session keeps its owner; a new or cleared one belongs to the creator.
        let owner = match &self.record {
            Some(record) if !record.is_cleared() => record.owner.clone(),
            _ => owner,
        };
        self.save_record(PhoneRecord::new(owner, DesiredState::Running, now_ms()))?;
        if self.client.is_none() && self.start_task.is_none() {
            info!("session created; starting the WhatsApp client");
            self.restart_at = None;
            self.restart_attempts = 0;
            self.begin_start();
        }
        Ok(self.view())
    }

    fn begin_start(&mut self) {
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
                let layout = ctx.layout.clone();
                let p = phone.clone();
                let prepared = tokio::task::spawn_blocking(move || prepare_store(&layout, &p))
                    .await
                    .map_err(|e| WhatsAppError::Store(e.to_string()))?;
                match prepared.map_err(|e| WhatsAppError::Store(e.to_string()))? {
                    Some(backup) => {
                        Metrics::inc(&ctx.metrics.backups_restored);
                        warn!(backup = %backup.display(), "the store was missing or damaged; restored it from a backup");
                    }
                    None => debug!("store ready"),
                }
                ctx.whatsapp.start(&phone, &ctx.layout.store_file(&phone), sink).await
            }
            .in_current_span(),
        ));
    }

    async fn on_started(&mut self, started: StartResult) {
        match started {
            Ok(client) => {
                Metrics::inc(&self.ctx.metrics.client_starts);
                self.client = Some(client);
            }
            Err(e) => {
                Metrics::inc(&self.ctx.metrics.client_start_failures);
                warn!(error = %e, "the WhatsApp client did not start");
                self.state.on_start_failed(e.to_string());
                self.schedule_restart();
            }
        }
    }

    fn schedule_restart(&mut self) {
        if self.desired() != Some(DesiredState::Running) {
            return;
        }
        let delay = backoff(
            self.restart_attempts,
            self.ctx.config.sessions.max_restart_backoff,
        );
        self.restart_attempts = self.restart_attempts.saturating_add(1);
        info!(
            delay_ms = delay.as_millis() as u64,
            "client restart scheduled"
        );
        self.restart_at = Some(Instant::now() + delay);
    }

    async fn on_notice(&mut self, generation: u64, notice: ClientNotice) {
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
                self.pairing_code = Some((code, Instant::now() + PAIRING_CODE_VALIDITY));
            }
            ClientNotice::Session(event) => self.on_session_event(event).await,
        }
    }

    async fn on_session_event(&mut self, event: SessionEvent) {
        let name = match &event {
            SessionEvent::Qr { .. } => "qr",
            SessionEvent::Connected { .. } => "connected",
            SessionEvent::Disconnected => "disconnected",
            SessionEvent::LoggedOut { .. } => "logged_out",
            SessionEvent::StreamReplaced => "stream_replaced",
            SessionEvent::PairingExpired => "pairing_expired",
            SessionEvent::ClientExited { .. } => "client_exited",
        };
        info!(event = name, "client event");
        let reaction = self.state.on_event(event);
        self.update_connected_gauge();
        match reaction {
            Reaction::Nothing => {}
            Reaction::FlushOutbox => {
                self.restart_attempts = 0;
                self.pairing_code = None;
                if self.next_backup_at.is_none() && !self.ctx.config.backups.interval.is_zero() {
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
                    && let Err(e) = self.save_record(r)
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
                    if let Err(e) = self.save_record(r) {
                        error!(error = %e, "could not record the stop");
                    }
                }
            }
            Reaction::ScheduleRestart => {
                // The exited client is kept (and its generation still
                // counts) until the restart: the client's events run on their
                // own tasks, so a `LoggedOut` explaining the exit may arrive
                // after it, and must still cancel the restart.
                self.schedule_restart();
            }
        }
    }

    fn update_connected_gauge(&mut self) {
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
    async fn stop_client(&mut self, logout: bool) -> bool {
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

    /// Removes the session directory and its backups (not the outbox).
    async fn remove_credentials(
        &mut self,
    ) -> Result<Vec<crate::hooks::RemovedTarget>, SessionError> {
        let layout = self.ctx.layout.clone();
        let phone = self.phone.clone();
        let removed = blocking(move || -> Result<_, StorageError> {
            Ok(vec![
                remove(
                    &layout,
                    PurgeTargetKind::SessionDir,
                    &layout.session_dir(&phone),
                )?,
                remove(
                    &layout,
                    PurgeTargetKind::Backups,
                    &layout.backup_dir(&phone),
                )?,
            ])
        })
        .await??;
        self.state.me = None;
        Ok(removed)
    }

    fn enqueue(
        &mut self,
        caller: &Caller,
        to: &str,
        text: String,
    ) -> Result<OutboxMessage, SessionError> {
        self.check_access(caller, false)?;
        if let Some(damage) = &self.outbox_damaged {
            return Err(SessionError::Storage(StorageError::Corrupt {
                path: self.ctx.layout.outbox_file(&self.phone),
                what: "outbox",
                reason: damage.clone(),
            }));
        }
        let to = Recipient::parse(to).map_err(|e| SessionError::Invalid(e.to_string()))?;
        let message = OutboxMessage::new(message_id(random_bytes()), to, text, now_ms())
            .map_err(|e| SessionError::Invalid(e.to_string()))?;
        let mut next = self.outbox.clone();
        next.enqueue(message.clone())
            .map_err(|e| SessionError::Conflict(e.to_string()))?;
        // Durable before acknowledged: the 202 goes out only after the file is
        // synced, so a crash right after the response loses nothing.
        outbox_file::save(&self.ctx.layout, &self.phone, &next)?;
        self.outbox = next;
        Metrics::inc(&self.ctx.metrics.messages_enqueued);
        info!(message_id = %message.id, pending = self.outbox.len(), "message queued");
        self.pump_outbox();
        Ok(message)
    }

    fn pump_outbox(&mut self) {
        if !self.state.ready() || self.send_task.is_some() || self.send_retry_at.is_some() {
            return;
        }
        let (Some(client), Some(head)) = (self.client.clone(), self.outbox.head().cloned()) else {
            return;
        };
        let limit = self.ctx.config.sessions.request_timeout;
        self.send_task = Some(tokio::spawn(
            async move {
                let result = match timeout(
                    limit,
                    client.send_text(head.to.as_jid(), &head.text, &head.id),
                )
                .await
                {
                    Ok(result) => result,
                    Err(_) => Err(WhatsAppError::Timeout),
                };
                (head.id, result)
            }
            .in_current_span(),
        ));
    }

    fn on_sent(&mut self, id: String, result: Result<(), WhatsAppError>) {
        match result {
            Ok(()) => {
                if self.outbox.confirm_sent(&id) {
                    Metrics::inc(&self.ctx.metrics.messages_sent);
                    info!(message_id = %id, pending = self.outbox.len(), "message sent");
                    if let Err(e) = outbox_file::save(&self.ctx.layout, &self.phone, &self.outbox) {
                        // The message went out but the file still lists it: a
                        // restart resends it under the same id, which the
                        // recipient's client recognises as a duplicate.
                        error!(error = %e, "could not record a sent message");
                    }
                }
                self.pump_outbox();
            }
            Err(e) => {
                Metrics::inc(&self.ctx.metrics.message_send_failures);
                self.outbox.record_failure(&id);
                let attempts = self.outbox.head().map(|m| m.attempts).unwrap_or(1);
                let _ = outbox_file::save(&self.ctx.layout, &self.phone, &self.outbox);
                let delay = backoff(attempts, Duration::from_secs(60));
                warn!(message_id = %id, error = %e, attempts, retry_ms = delay.as_millis() as u64, "send failed; will retry");
                self.send_retry_at = Some(Instant::now() + delay);
            }
        }
    }

    fn begin_backup(&mut self) {
        let interval = self.ctx.config.backups.interval;
        if interval.is_zero() || !self.state.ready() {
            return;
        }
        self.next_backup_at = Some(Instant::now() + interval);
        if self.backup_task.is_some() {
            return;
        }
        let store = self.ctx.layout.store_file(&self.phone);
        let dir = self.ctx.layout.backup_dir(&self.phone);
        let retention = self.ctx.config.backups.retention;
        self.backup_task = Some(tokio::task::spawn_blocking(move || {
            backups::snapshot(&store, &dir, now_ms(), retention)
        }));
    }

    fn on_backup(&mut self, result: Result<Result<PathBuf, StorageError>, tokio::task::JoinError>) {
        match result {
            Ok(Ok(path)) => {
                Metrics::inc(&self.ctx.metrics.backups_taken);
                info!(backup = %path.display(), "store backed up");
            }
            Ok(Err(e)) => {
                Metrics::inc(&self.ctx.metrics.backup_failures);
                warn!(error = %e, "backup failed");
            }
            Err(e) => {
                Metrics::inc(&self.ctx.metrics.backup_failures);
                warn!(error = %e, "backup task failed");
            }
        }
    }

    fn save_contacts(&self) {
        if let Err(e) = contacts::save(&self.ctx.layout, &self.phone, &self.contacts) {
            warn!(error = %e, "could not save contacts");
        }
    }

    async fn disconnect(&mut self, caller: &Caller) -> Result<DisconnectReport, SessionError> {
        self.check_access(caller, false)?;
        // Remember the decision first: whatever fails below, nothing resumes this phone.
        if let Some(mut record) = self.record.clone() {
            record.desired = DesiredState::Stopped;
            record.updated_at_ms = now_ms();
            self.save_record(record)?;
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

    fn crash_point(&self, step: ResetStep) {
        if self.ctx.config.crash_at.as_deref() == Some(step.name()) {
            error!(
                step = step.name(),
                "LILA_CRASH_AT: aborting the process (test switch)"
            );
            std::process::abort();
        }
    }

    async fn clear(&mut self, caller: &Caller) -> Result<ResetReport, SessionError> {
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

    async fn purge_files(
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

    async fn finish_interrupted_purge(&mut self) -> Result<(), SessionError> {
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

    async fn shutdown(&mut self) {
        if self.contacts_save_at.take().is_some() {
            self.save_contacts();
        }
        self.stop_client(false).await;
    }
}

/// Makes the store ready for a client: its directory exists, and a missing
/// or damaged store is replaced by the newest good backup. Blocking.
fn prepare_store(
    layout: &crate::layout::DataLayout,
    phone: &Phone,
) -> Result<Option<PathBuf>, StorageError> {
    let dir = layout.session_dir(phone);
    std::fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
    storage::atomic::remove_stale_temporaries(&dir);
    let store = layout.store_file(phone);
    let health = backups::health(&store);
    let backup_dir = layout.backup_dir(phone);
    if should_restore(health, !backups::list(&backup_dir).is_empty()) {
        return backups::restore_newest_good(&backup_dir, &store);
    }
    if health == StoreHealth::Corrupt {
        warn!("the store is damaged and there is no good backup; the client will report the error");
    }
    Ok(None)
}
