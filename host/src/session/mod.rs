//! Session actors: one task per phone owns everything about that phone.
//!
//! A [`SessionHandle`] is a cheap sender; every request (create, send, reset,
//! …) and every event of the phone's WhatsApp client goes through the
//! actor's mailbox, so operations on one phone are serialized by
//! construction: a reset can never interleave with a start, a send or a
//! reconnect of the same phone. Timers (restart, backup, retry) are fields of
//! the actor and die with the state they belong to.

mod actor;
mod index;
mod quota;

pub use actor::spawn_session;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::config::Config;
use crate::core::message_status::MessageStatus;
use crate::core::outbox::OutboxMessage;
use crate::core::reset_plan::RemovedTarget;
use crate::core::reset_report::{HookRun, ResetReport};
use crate::core::tenant::{Caller, TenantId};
use crate::events::EventBus;
use crate::hooks::ResetHooks;
use crate::layout::DataLayout;
use crate::metrics::Metrics;
use crate::phone::Phone;
use crate::request_id::RequestId;
use crate::storage::StorageError;
use crate::storage::phone_store::PhoneStore;
use crate::whatsapp::{GroupInfo, WhatsApp, WhatsAppError};

pub use index::{IndexEntry, SessionIndex, SessionSlot};
pub use quota::OutboxQuota;

/// What every session actor shares.
pub struct SessionContext {
    pub layout: DataLayout,
    /// Where each phone's record, outbox, statuses and contacts are kept.
    pub store: PhoneStore,
    pub config: Config,
    pub whatsapp: Arc<dyn WhatsApp>,
    pub hooks: Arc<dyn ResetHooks>,
    pub metrics: Arc<Metrics>,
    /// Bounds how many clients start at once, so a boot with many sessions
    /// does not open every store and socket in the same instant.
    pub start_permits: Semaphore,
    /// Which phones exist and who owns them; written by each phone's actor.
    pub index: SessionIndex,
    /// What each tenant's outboxes hold together; written by each phone's actor.
    pub quota: OutboxQuota,
    /// Where actors publish what changed (status, QR, resets, message statuses).
    pub events: Arc<EventBus>,
    /// Told when an actor retires (it had nothing to keep: see
    /// `SessionActor::has_nothing_to_keep`), with the phone and the actor's
    /// id, so that whoever maps phones to actors forgets that one.
    pub on_retire: OnRetire,
}

/// The callback an actor calls as it retires: `(phone, actor id)`.
pub type OnRetire = Box<dyn Fn(&Phone, u64) + Send + Sync>;

/// The answer to a tenant that creates a phone it may not have: another
/// tenant's, or files without an owner, told apart only in the log.
pub const NOT_AVAILABLE: &str =
    "this phone number is not available to this account; an operator can release it";

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Unknown, cleared, or another tenant's: the same answer for all three.
    #[error("no session for this phone number")]
    NotFound,
    /// The phone is the caller's but no status is kept for that message id
    /// (never accepted here, expired, or removed by a reset).
    #[error("no message with this id is known for this phone")]
    MessageNotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("reset refused by plugin '{plugin}': {reason}")]
    Vetoed { plugin: String, reason: String },
    #[error(transparent)]
    WhatsApp(#[from] WhatsAppError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the session's worker stopped unexpectedly; retry the request")]
    Unavailable,
    /// A limit of the caller's phone or account is reached; waiting helps.
    #[error("{0}")]
    LimitReached(String),
    /// What was sent is larger than a limit allows at all.
    #[error("{0}")]
    TooLarge(String),
    /// Starting one more session would leave the node without descriptors.
    #[error(
        "this node is out of file descriptors ({open} open, limit {limit}); raise its open-files limit (ulimit -n, or LimitNOFILE= in a systemd unit) or run the session on another node"
    )]
    OutOfDescriptors { open: u64, limit: u64 },
}

/// A session as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub phone: Phone,
    pub owner: Option<TenantId>,
    pub status: &'static str,
    pub ready: bool,
    pub me: Option<String>,
    pub last_error: Option<String>,
    pub qr: Option<String>,
    pub pending_messages: usize,
}

/// What `DELETE /api/sessions/{phone}` did.
#[derive(Debug, Clone)]
pub struct DisconnectReport {
    pub logged_out: bool,
    pub removed: Vec<RemovedTarget>,
    pub pending_messages_kept: usize,
}

type Reply<T> = oneshot::Sender<Result<T, SessionError>>;

pub(crate) enum Command {
    Create {
        caller: Caller,
        owner: Option<TenantId>,
        reply: Reply<SessionView>,
    },
    View {
        caller: Caller,
        reply: Reply<SessionView>,
    },
    PairingCode {
        caller: Caller,
        reply: Reply<String>,
    },
    Groups {
        caller: Caller,
        reply: Reply<Vec<GroupInfo>>,
    },
    Contacts {
        caller: Caller,
        reply: Reply<BTreeMap<String, String>>,
    },
    Enqueue {
        caller: Caller,
        to: String,
        text: String,
        reply: Reply<OutboxMessage>,
    },
    Outbox {
        caller: Caller,
        reply: Reply<Vec<OutboxMessage>>,
    },
    MessageStatus {
        caller: Caller,
        id: String,
        reply: Reply<MessageStatus>,
    },
    Disconnect {
        caller: Caller,
        reply: Reply<DisconnectReport>,
    },
    Clear {
        caller: Caller,
        /// An operator's forced reset (see `SessionActor::clear`).
        force: bool,
        reply: Reply<ResetReport>,
    },
    /// Boot: resume if the record says so.
    Resume,
    /// Boot: finish an interrupted reset.
    FinishPurge { reply: Reply<()> },
    /// Process shutdown: stop the client without changing what is desired.
    Shutdown { reply: oneshot::Sender<()> },
    /// Test hook: whether any client, start, send or timer is alive.
    Idle { reply: oneshot::Sender<bool> },
}

impl Command {
    /// The command's name, as the actor's `command` log span shows it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Command::Create { .. } => "create",
            Command::View { .. } => "view",
            Command::PairingCode { .. } => "pairing_code",
            Command::Groups { .. } => "groups",
            Command::Contacts { .. } => "contacts",
            Command::Enqueue { .. } => "enqueue",
            Command::Outbox { .. } => "outbox",
            Command::MessageStatus { .. } => "message_status",
            Command::Disconnect { .. } => "disconnect",
            Command::Clear { .. } => "clear",
            Command::Resume => "resume",
            Command::FinishPurge { .. } => "finish_purge",
            Command::Shutdown { .. } => "shutdown",
            Command::Idle { .. } => "idle",
        }
    }
}

/// A command and the HTTP request it serves (none for boot and shutdown),
/// so the actor's log lines for it carry the request's id.
pub(crate) struct Envelope {
    pub request_id: Option<RequestId>,
    pub command: Command,
}

/// A cheap handle to one phone's actor.
#[derive(Clone)]
pub struct SessionHandle {
    pub(crate) phone: Phone,
    /// Unique per actor in this process.
    pub(crate) id: u64,
    /// Set by the actor when it retires, before it closes its mailbox: a
    /// command it did not take was never seen, and may go to a new actor.
    pub(crate) retired: Arc<AtomicBool>,
    pub(crate) tx: mpsc::Sender<Envelope>,
    /// The actor's latest view of its session, published after every change.
    pub(crate) view: watch::Receiver<SessionView>,
}

impl SessionHandle {
    pub fn phone(&self) -> &Phone {
        &self.phone
    }

    /// The session as its actor last published it, without a message.
    pub fn current_view(&self) -> SessionView {
        self.view.borrow().clone()
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// This actor's id, unique in the process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the actor ended because it had nothing to keep (not a
    /// panic): a command it answered `Unavailable` was not carried out.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    /// Sends `command`, tagged with the request the calling task serves.
    async fn send(&self, command: Command) -> Result<(), SessionError> {
        let envelope = Envelope {
            request_id: RequestId::current(),
            command,
        };
        self.tx
            .send(envelope)
            .await
            .map_err(|_| SessionError::Unavailable)
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, SessionError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply)).await?;
        rx.await.map_err(|_| SessionError::Unavailable)?
    }

    pub async fn create(
        &self,
        caller: Caller,
        owner: Option<TenantId>,
    ) -> Result<SessionView, SessionError> {
        self.ask(|reply| Command::Create {
            caller,
            owner,
            reply,
        })
        .await
    }

    pub async fn view(&self, caller: Caller) -> Result<SessionView, SessionError> {
        self.ask(|reply| Command::View { caller, reply }).await
    }

    pub async fn pairing_code(&self, caller: Caller) -> Result<String, SessionError> {
        self.ask(|reply| Command::PairingCode { caller, reply })
            .await
    }

    pub async fn groups(&self, caller: Caller) -> Result<Vec<GroupInfo>, SessionError> {
        self.ask(|reply| Command::Groups { caller, reply }).await
    }

    pub async fn contacts(&self, caller: Caller) -> Result<BTreeMap<String, String>, SessionError> {
        self.ask(|reply| Command::Contacts { caller, reply }).await
    }

    pub async fn enqueue(
        &self,
        caller: Caller,
        to: String,
        text: String,
    ) -> Result<OutboxMessage, SessionError> {
        self.ask(|reply| Command::Enqueue {
            caller,
            to,
            text,
            reply,
        })
        .await
    }

    pub async fn outbox(&self, caller: Caller) -> Result<Vec<OutboxMessage>, SessionError> {
        self.ask(|reply| Command::Outbox { caller, reply }).await
    }

    /// What became of message `id` (queued, sent, delivered, read or failed).
    pub async fn message_status(
        &self,
        caller: Caller,
        id: String,
    ) -> Result<MessageStatus, SessionError> {
        self.ask(|reply| Command::MessageStatus { caller, id, reply })
            .await
    }

    pub async fn disconnect(&self, caller: Caller) -> Result<DisconnectReport, SessionError> {
        self.ask(|reply| Command::Disconnect { caller, reply })
            .await
    }

    pub async fn clear(&self, caller: Caller, force: bool) -> Result<ResetReport, SessionError> {
        self.ask(|reply| Command::Clear {
            caller,
            force,
            reply,
        })
        .await
    }

    pub async fn resume(&self) {
        let _ = self.send(Command::Resume).await;
    }

    pub async fn finish_purge(&self) -> Result<(), SessionError> {
        self.ask(|reply| Command::FinishPurge { reply }).await
    }

    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.send(Command::Shutdown { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// True when nothing runs for this phone: no client, no start, no send, no timer.
    pub async fn is_idle(&self) -> bool {
        let (reply, rx) = oneshot::channel();
        if self.send(Command::Idle { reply }).await.is_err() {
            return true;
        }
        rx.await.unwrap_or(true)
    }
}

/// Hook runs as the API and logs show them.
pub fn describe_hook_runs(runs: &[HookRun]) -> String {
    runs.iter()
        .map(|r| {
            format!(
                "{}:{}={}({}ms)",
                r.plugin,
                r.hook,
                r.outcome.as_str(),
                r.duration_ms
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
