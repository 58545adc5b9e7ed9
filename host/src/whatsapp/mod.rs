//! The seam between the host and WhatsApp: a small trait the session actor
//! drives, with two implementations.
//!
//! - [`real::RealWhatsApp`] builds a fresh `whatsapp-rust` `Bot` and SQLite
//!   store for every start (a client cannot be restarted after
//!   `disconnect()`/`logout()`).
//! - [`scripted::ScriptedWhatsApp`] is a fake that tests script event by
//!   event, so the host's logic is tested without a network.

pub mod certificate;
mod handshake;
pub mod inbound;
pub mod real;
pub mod scripted;
mod tasks;
pub mod version;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::core::message_status::ReceiptKind;
use crate::core::status::SessionEvent;
use crate::phone::Phone;

#[derive(Debug, Clone, thiserror::Error)]
pub enum WhatsAppError {
    #[error("could not open the session store: {0}")]
    Store(String),
    #[error("could not start the WhatsApp client: {0}")]
    Start(String),
    /// A start that could not reach WhatsApp before it began (the shared
    /// version check failed): the session says so and retries, as when a
    /// running client's dial fails.
    #[error("cannot reach WhatsApp: {detail}")]
    Unreachable {
        cause: crate::core::status::ConnectFailureCause,
        detail: String,
    },
    #[error("the session is not connected to WhatsApp")]
    NotConnected,
    #[error("the session is already paired")]
    AlreadyPaired,
    #[error("WhatsApp refused the request: {0}")]
    Request(String),
    #[error("WhatsApp did not answer in time")]
    Timeout,
    /// The message can never be delivered as addressed (the number is not on
    /// WhatsApp, the JID is invalid, no device of the recipient is known):
    /// retrying would not help, so the outbox fails it and moves on.
    #[error("{0}")]
    Undeliverable(String),
}

impl WhatsAppError {
    /// Whether retrying the same request can never succeed. Everything else
    /// (not connected, a timeout, a refused request) is retried with back-off.
    pub fn is_permanent(&self) -> bool {
        matches!(self, WhatsAppError::Undeliverable(_))
    }
}

/// What a client tells its session, beyond the state machine's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientNotice {
    Session(SessionEvent),
    /// WhatsApp issued a pairing code (reported by the host's own request task).
    PairingCode {
        code: String,
    },
    /// A contact's name became known (address book entry or push name).
    Contact {
        jid: String,
        name: String,
        from_address_book: bool,
    },
    /// The recipient's phone confirmed messages of ours as delivered or read.
    Receipt {
        message_ids: Vec<String>,
        kind: ReceiptKind,
    },
}

/// Where a client delivers its notices. The session actor tags it with the
/// client's generation, so notices from a replaced client are dropped.
#[derive(Clone)]
pub struct EventSink(Arc<dyn Fn(ClientNotice) + Send + Sync>);

impl EventSink {
    pub fn new(f: impl Fn(ClientNotice) + Send + Sync + 'static) -> EventSink {
        EventSink(Arc::new(f))
    }

    pub fn emit(&self, notice: ClientNotice) {
        (self.0)(notice)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub id: String,
    pub subject: String,
    pub participants: usize,
}

/// Where a client keeps its credentials and Signal state.
#[derive(Debug, Clone)]
pub enum ClientStore {
    /// whatsapp-rust's SQLite store in this file (whose directory exists):
    /// one node, files.
    Sqlite(PathBuf),
    /// PostgreSQL, every write under the phone's lease: a cluster.
    Postgres(lila_pgstore::PgBackend),
}

/// Starts clients. One per process, shared by every session.
#[async_trait]
pub trait WhatsApp: Send + Sync + 'static {
    /// Builds and starts a new client over `store`. The client reports
    /// through `events` until stopped.
    async fn start(
        &self,
        phone: &Phone,
        store: &ClientStore,
        events: EventSink,
    ) -> Result<Arc<dyn WhatsAppClient>, WhatsAppError>;
}

/// One running client. Every method is bounded in time by its caller.
#[async_trait]
pub trait WhatsAppClient: Send + Sync + 'static {
    /// Asks WhatsApp (usync) whether the user `jid` (`digits@s.whatsapp.net`)
    /// has an account. The caller remembers the answer for a while.
    async fn is_on_whatsapp(&self, user_jid: &str) -> Result<bool, WhatsAppError>;
    /// Sends a text with the given message id (so a resend is recognised as
    /// the same message). A send that would reach no device of the recipient
    /// is an [`WhatsAppError::Undeliverable`] error, never an `Ok`.
    async fn send_text(
        &self,
        to_jid: &str,
        text: &str,
        message_id: &str,
    ) -> Result<(), WhatsAppError>;
    /// Asks WhatsApp for an 8-character code to link this device by phone number.
    async fn pairing_code(&self, phone: &Phone) -> Result<String, WhatsAppError>;
    async fn groups(&self) -> Result<Vec<GroupInfo>, WhatsAppError>;
    /// Unlinks the device on WhatsApp's side (best effort) and stops the client.
    async fn logout(&self);
    /// Stops the client without unlinking: disconnects, ends its reconnect
    /// loop, and waits for it to exit. Afterwards it emits nothing.
    async fn stop(&self);
}
