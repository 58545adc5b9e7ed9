//! The simulator's error type.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SimError {
    /// The peer sent something that is not the WhatsApp Web protocol as we speak it.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The client speaks another version of the binary dictionary than the
    /// simulator (its connection header's fourth byte): it is refused
    /// before the handshake, with a WebSocket close that says so.
    #[error(
        "the client speaks binary dictionary version {client}; this server speaks version {ours}"
    )]
    UnsupportedDictionary { client: u8, ours: u8 },
    /// The connection closed (or its owner went away) before we were done.
    #[error("connection closed")]
    Closed,
    /// A WebSocket-level failure.
    #[error("websocket error: {0}")]
    WebSocket(String),
    /// Binding or serving the listener failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A Signal operation failed (session set-up, encryption, decryption).
    #[error("signal error: {0}")]
    Signal(String),
    /// An admin request named something the simulator does not know.
    #[error("not found: {0}")]
    NotFound(String),
    /// An admin request cannot be honoured in the simulator's current state
    /// (e.g. a message to a phone with no linked device).
    #[error("conflict: {0}")]
    Conflict(String),
    /// An admin request was malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
}
