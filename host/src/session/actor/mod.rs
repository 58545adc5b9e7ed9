//! The session actor: the one owner of a phone's state.
//!
//! This module holds the actor's state, its mailbox loop and the pieces every
//! concern shares. Each concern has its own module, all of them `impl
//! SessionActor` blocks over the same state:
//! - `commands`: the API's requests, access checks, the view, create;
//! - `client`: starting the client, its notices and events, restarts, stopping it;
//! - `outbox`: queueing durably, the send pump, confirmations;
//! - `backup`: periodic snapshots, and restoring a store before a start;
//! - `disconnect`: `DELETE /api/sessions/{phone}`;
//! - `reset`: `clear`, and finishing an interrupted one at boot;
//! - `session_events`: the events a change makes, onto the gateway's bus.

mod backup;
mod client;
mod commands;
mod disconnect;
mod outbox;
mod reset;
mod session_events;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{Instrument, debug, error, warn};

use self::client::StartResult;
use super::{
    Command, Envelope, IndexEntry, SessionContext, SessionError, SessionHandle, SessionView,
};
use crate::core::message_status::{MessageStatuses, RecipientChecks};
use crate::core::outbox::Outbox;
use crate::core::record::{DesiredState, PhoneRecord};
use crate::core::status::SessionState;
use crate::core::tenant::TenantId;
use crate::phone::Phone;
use crate::storage::StorageError;
use crate::whatsapp::{ClientNotice, WhatsAppClient, WhatsAppError};

/// How many commands may wait in one session's mailbox.
const MAILBOX: usize = 64;

struct SessionActor {
    phone: Phone,
    ctx: Arc<SessionContext>,
    record: Option<PhoneRecord>,
    state: SessionState,
    outbox: Outbox,
    /// Set when the outbox file could not be read: the queue is then refused
    /// rather than overwritten, so nothing in the damaged file is lost by us.
    outbox_damaged: Option<String>,
    /// What became of each accepted message, for `GET …/messages/{id}`.
    statuses: MessageStatuses,
    /// Recent usync answers: is this recipient on WhatsApp?
    recipient_checks: RecipientChecks,
    contacts: BTreeMap<String, String>,
    /// Bumped whenever the client is replaced or stopped: notices carrying an
    /// older generation come from a client that no longer counts.
    generation: u64,
    client: Option<Arc<dyn WhatsAppClient>>,
    start_task: Option<JoinHandle<StartResult>>,
    send_task: Option<JoinHandle<outbox::SendOutcome>>,
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
    /// Resumed by boot and not yet connected since: counted once when it is.
    resumed_at_boot: bool,
    notices_tx: mpsc::UnboundedSender<(u64, ClientNotice)>,
    /// The view listings read without a message (`SessionHandle::current_view`).
    view_tx: watch::Sender<SessionView>,
    /// The actor's `session` span, and the tenant last recorded on it: the
    /// fmt layer appends a field at every `record`, so it is recorded only
    /// when it changes (and on this span, not on a command's child span).
    span: tracing::Span,
    span_tenant: Option<TenantId>,
    /// This actor's id and retired flag, shared with its handles.
    id: u64,
    retired: Arc<std::sync::atomic::AtomicBool>,
}

/// Starts the actor of `phone` and returns its handle and task.
pub fn spawn_session(ctx: Arc<SessionContext>, phone: Phone) -> (SessionHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(MAILBOX);
    let (notices_tx, notices_rx) = mpsc::unbounded_channel();
    // No parent: the actor outlives the request that happened to start it,
    // and its lines must not be logged inside that request's span. ERROR
    // level so that no log filter drops the span (and the phone with it)
    // from a warning logged inside it.
    let span = tracing::error_span!(
        parent: None,
        "session",
        phone = %phone,
        tenant = tracing::field::Empty
    );
    // Until the actor has loaded its state, the view is what the index says.
    let at_rest = ctx
        .index
        .get(&phone)
        .unwrap_or(IndexEntry {
            owner: None,
            desired: None,
            pending_at_boot: 0,
        })
        .view_at_rest(&phone);
    let (view_tx, view_rx) = watch::channel(at_rest);
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let retired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handle = SessionHandle {
        phone: phone.clone(),
        id,
        retired: retired.clone(),
        tx,
        view: view_rx,
    };
    let actor_span = span.clone();
    let task = tokio::spawn(
        async move {
            let mut actor = SessionActor::load(ctx, phone, notices_tx, view_tx, actor_span).await;
            actor.id = id;
            actor.retired = retired;
            actor.publish_view();
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

/// The wait before retry `attempts`, with jitter (see `retry_delay`).
fn backoff(attempts: u32, max: Duration) -> Duration {
    let mut draw = [0u8; 4];
    // Without the OS generator the full step is used: still a back-off.
    let jitter = match getrandom::fill(&mut draw) {
        Ok(()) => f64::from(u32::from_le_bytes(draw)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 1.0,
    };
    crate::core::status::retry_delay(attempts, max, jitter)
}

impl SessionActor {
    async fn load(
        ctx: Arc<SessionContext>,
        phone: Phone,
        notices_tx: mpsc::UnboundedSender<(u64, ClientNotice)>,
        view_tx: watch::Sender<SessionView>,
        span: tracing::Span,
    ) -> SessionActor {
        let record = match ctx.store.load_record(&phone).await {
            Ok(record) => record,
            Err(e) => {
                // A damaged record never resumes anything; an operator can clear the phone.
                error!(error = %e, "phone record is damaged; the session stays down");
                None
            }
        };
        let (outbox, outbox_damaged) = match ctx.store.load_outbox(&phone).await {
            Ok(outbox) => (outbox, None),
            Err(e) => {
                error!(error = %e, "outbox file is damaged; it is kept as is and new messages are refused");
                (Outbox::default(), Some(e.to_string()))
            }
        };
        let mut statuses = ctx.store.load_statuses(&phone).await.unwrap_or_else(|e| {
            // Statuses only inform the Portal; losing them never loses a message.
            error!(error = %e, "message status file is damaged; starting with none");
            MessageStatuses::default()
        });
        // A message still queued has its status in the outbox, not in the
        // status file (an enqueue writes one line only).
        statuses.queued_if_missing(
            outbox
                .iter()
                .map(|m| (m.id.as_str(), m.to.as_jid(), m.created_at_ms)),
        );
        ctx.quota.set(
            &phone,
            record.as_ref().and_then(|r| r.owner.as_ref()),
            outbox.usage(),
        );
        let contacts = ctx.store.load_contacts(&phone).await.unwrap_or_else(|e| {
            warn!(error = %e, "contacts file is damaged; starting with none");
            BTreeMap::new()
        });
        let mut actor = SessionActor {
            phone,
            ctx,
            record,
            state: SessionState::default(),
            outbox,
            outbox_damaged,
            statuses,
            recipient_checks: RecipientChecks::default(),
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
            resumed_at_boot: false,
            notices_tx,
            view_tx,
            span,
            span_tenant: None,
            id: 0,
            retired: Arc::default(),
        };
        actor.note_tenant();
        actor
    }

    /// Shows the owner as the `tenant` field of the session span, once per change.
    fn note_tenant(&mut self) {
        let owner = self.owner().cloned();
        if owner.is_some() && owner != self.span_tenant {
            if let Some(tenant) = &owner {
                self.span.record("tenant", tracing::field::display(tenant));
            }
            self.span_tenant = owner;
        }
    }

    /// Ends an actor that has nothing to keep: marked retired first, then
    /// its mailbox closed, and the commands that were already queued dropped
    /// unseen (their senders get `Unavailable` from a retired handle, and the
    /// gateway sends them again to a new actor). Then the gateway forgets it.
    fn retire(&self, commands: &mut mpsc::Receiver<Envelope>) {
        self.retired
            .store(true, std::sync::atomic::Ordering::SeqCst);
        commands.close();
        while commands.try_recv().is_ok() {}
        crate::metrics::Metrics::inc(&self.ctx.metrics.actors_retired);
        debug!("nothing to keep for this phone (no record, no files): the actor ends");
        (self.ctx.on_retire)(&self.phone, self.id);
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Envelope>,
        mut notices: mpsc::UnboundedReceiver<(u64, ClientNotice)>,
    ) {
        loop {
            tokio::select! {
                // Client notices first: a request answered by a task (a
                // pairing code) leaves a notice that must be seen before the
                // next command for the same phone.
                biased;
                Some((generation, notice)) = notices.recv() => self.on_notice(generation, notice).await,
                envelope = commands.recv() => match envelope {
                    Some(Envelope { request_id, command }) => {
                        // A child of the session span: what the actor logs
                        // for this command carries the request's id.
                        let span = match &request_id {
                            Some(id) => tracing::error_span!("command", kind = %command.name(), request_id = %id),
                            None => tracing::error_span!("command", kind = %command.name()),
                        };
                        if let Command::Shutdown { reply } = command {
                            self.shutdown().instrument(span).await;
                            let _ = reply.send(());
                            return;
                        }
                        self.handle(command).instrument(span).await;
                        if self.has_nothing_to_keep() {
                            self.retire(&mut commands);
                            return;
                        }
                    }
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
                    if let Ok(outcome) = sent {
                        self.on_sent(outcome).await;
                    }
                }
                backed_up = join_opt(&mut self.backup_task) => {
                    self.backup_task = None;
                    self.on_backup(backed_up);
                }
                _ = sleep_opt(self.restart_at) => {
                    self.restart_at = None;
                    if self.desired() == Some(DesiredState::Running) {
                        debug!(attempt = self.restart_attempts, "restarting the WhatsApp client");
                        if self.client.is_some() {
                            // The client that exited: join it before building its successor.
                            self.stop_client(false).await;
                            self.state.on_stopped_for_restart();
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
                    self.save_contacts().await;
                }
                Some(_) = self.requests.join_next(), if !self.requests.is_empty() => {}
            }
            self.publish_view();
        }
    }

    fn desired(&self) -> Option<DesiredState> {
        self.record.as_ref().map(|r| r.desired)
    }

    fn owner(&self) -> Option<&TenantId> {
        self.record.as_ref().and_then(|r| r.owner.as_ref())
    }

    /// Publishes the view for listings, when it changed, and the events the
    /// change makes (`session_events`).
    fn publish_view(&self) {
        let view = self.view();
        self.view_tx.send_if_modified(|current| {
            if *current == view {
                return false;
            }
            self.publish_view_events(current, &view);
            *current = view;
            true
        });
    }

    async fn save_record(&mut self, record: PhoneRecord) -> Result<(), SessionError> {
        self.ctx.store.save_record(&self.phone, &record).await?;
        self.ctx.index.record(&self.phone, &record);
        self.record = Some(record);
        self.note_tenant();
        self.note_outbox_usage();
        Ok(())
    }

    async fn shutdown(&mut self) {
        if self.contacts_save_at.take().is_some() {
            self.save_contacts().await;
        }
        self.stop_client(false).await;
    }
}
