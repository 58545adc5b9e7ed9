//! The seam between the host and WhatsApp: a small trait the session actor
//! drives, with two implementations.
//!
//! - [`real::RealWhatsApp`] builds a fresh `whatsapp-rust` `Bot` and SQLite
//!   store for every start (a client cannot be restarted after
//!   `disconnect()`/`logout()`).
//! - [`scripted::ScriptedWhatsApp`] is a fake that tests script event by
//!   event, so the host's logic is tested without a network.

pub mod real;
pub mod scripted;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use crate::core::status::SessionEvent;
use crate::phone::Phone;

#[derive(Debug, Clone, thiserror::Error)]
pub enum WhatsAppError {
    #[error("could not open the session store: {0}")]
    Store(String),
    #[error("could not start the WhatsApp client: {0}")]
    Start(String),
    #[error("the session is not connected to WhatsApp")]
    NotConnected,
    #[error("the session is already paired")]
    AlreadyPaired,
    #[error("WhatsApp refused the request: {0}")]
    Request(String),
    #[error("WhatsApp did not answer in time")]
    Timeout,
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

/// Starts clients. One per process, shared by every session.
#[async_trait]
pub trait WhatsApp: Send + Sync + 'static {
    /// Builds and starts a new client over the store at `store_path` (whose
    /// directory exists). The client reports through `events` until stopped.
    async fn start(
        &self,
        phone: &Phone,
        store_path: &Path,
        events: EventSink,
    ) -> Result<Arc<dyn WhatsAppClient>, WhatsAppError>;
}

/// One running client. Every method is bounded in time by its caller.
#[async_trait]
pub trait WhatsAppClient: Send + Sync + 'static {
    /// Sends a text with the given message id (so a resend is recognised as the same message).
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
