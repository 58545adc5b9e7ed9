//! The outbox pump: queueing durably, sending the head, confirming it.

use std::time::Duration;

use tokio::time::{Instant, timeout};
use tracing::{Instrument, error, info, warn};

use super::{SessionActor, backoff};
use crate::core::outbox::{OutboxMessage, Recipient, message_id};
use crate::core::tenant::Caller;
use crate::metrics::Metrics;
use crate::session::SessionError;
use crate::storage::{StorageError, now_ms, outbox_file};
use crate::whatsapp::WhatsAppError;

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

impl SessionActor {
    pub(super) fn enqueue(
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

    pub(super) fn pump_outbox(&mut self) {
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

    pub(super) fn on_sent(&mut self, id: String, result: Result<(), WhatsAppError>) {
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
}
