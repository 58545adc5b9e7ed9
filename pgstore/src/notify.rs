//! LISTEN/NOTIFY: small messages from one node of a cluster to all the
//! others, through the database they share (no broker of their own).
//!
//! PostgreSQL delivers a notification to every session listening on its
//! channel, in the order the notifying transactions committed, and keeps
//! none for a listener that was not connected: a node that reconnects
//! hears what comes next, not what it missed.

use deadpool_postgres::Pool;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use crate::backend::quote_identifier;
use crate::error::PgStoreError;
use crate::tls::{ConnectSettings, connect_settings};

/// The longest payload PostgreSQL takes (its limit is 8000 bytes).
pub const MAX_PAYLOAD: usize = 7999;

/// Sends `payload` to every session listening on `channel`.
pub async fn notify(pool: &Pool, channel: &str, payload: &str) -> Result<(), PgStoreError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(PgStoreError::Invalid(format!(
            "a notification of {} bytes is over PostgreSQL's {MAX_PAYLOAD}",
            payload.len()
        )));
    }
    let client = pool.get().await?;
    client
        .execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
        .await?;
    Ok(())
}

/// A connection of its own that listens on one channel.
pub struct Listener {
    payloads: mpsc::UnboundedReceiver<String>,
    /// Keeps the session (and so the LISTEN) open.
    _client: tokio_postgres::Client,
}

impl Listener {
    /// The next payload, in the order they were sent; `None` once the
    /// connection ended (listen again: what was sent meanwhile is lost).
    pub async fn recv(&mut self) -> Option<String> {
        self.payloads.recv().await
    }
}

/// Listens on `channel` over a new connection to `database_url`, with the
/// same TLS settings as the pool's ([`crate::connect_pool`]; the CA file is
/// read again at each connection).
pub async fn listen(database_url: &str, channel: &str) -> Result<Listener, PgStoreError> {
    let ConnectSettings { config, tls, .. } = connect_settings(database_url)?;
    let (client, mut connection) = config.connect(tls).await?;
    let (tx, payloads) = mpsc::unbounded_channel();
    // The connection is driven here; its notifications go to the channel.
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(note)) => {
                    if tx.send(note.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the listening connection ended");
                    return;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {}", quote_identifier(channel)))
        .await?;
    Ok(Listener {
        payloads,
        _client: client,
    })
}

/// How long [`listen_forever`] waits before listening again.
const RELISTEN_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Hands every payload sent on `channel` to `on_payload`, for as long as
/// the task runs: a connection that ends (or cannot be had) is logged and
/// listened on again a second later. What is sent in between is not heard.
pub async fn listen_forever(database_url: &str, channel: &str, mut on_payload: impl FnMut(String)) {
    loop {
        match listen(database_url, channel).await {
            Ok(mut listener) => {
                tracing::debug!(channel, "listening");
                while let Some(payload) = listener.recv().await {
                    on_payload(payload);
                }
            }
            Err(e) => tracing::warn!(channel, error = %e, "could not listen"),
        }
        tokio::time::sleep(RELISTEN_AFTER).await;
    }
}
