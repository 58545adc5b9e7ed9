//! The outbox pump: queueing durably, checking the recipient, sending the
//! head, confirming or failing it, and the statuses the Portal reads.

use std::time::Duration;

use tokio::time::{Instant, timeout};
use tracing::{Instrument, debug, error, info, warn};

use super::{SessionActor, backoff};
use crate::clock::now_ms;
use crate::core::message_status::{MessageStatus, ReceiptKind};
use crate::core::outbox::{OutboxChange, OutboxError, OutboxMessage, Recipient, message_id};
use crate::core::tenant::Caller;
use crate::metrics::Metrics;
use crate::session::SessionError;
use crate::storage::StorageError;
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
    pub(super) async fn enqueue(
        &mut self,
        caller: &Caller,
        to: &str,
        text: String,
    ) -> Result<OutboxMessage, SessionError> {
        self.check_access(caller, false)?;
        if let Some(damage) = &self.outbox_damaged {
            return Err(SessionError::Storage(StorageError::corrupt(
                &self.ctx.layout.outbox_file(&self.phone),
                "outbox",
                damage.clone(),
            )));
        }
        let to = Recipient::parse(to).map_err(|e| SessionError::Invalid(e.to_string()))?;
        let message = OutboxMessage::new(message_id(random_bytes()), to, text, now_ms())
            .map_err(|e| SessionError::Invalid(e.to_string()))?;
        let limits = &self.ctx.config.limits;
        let owner = self.owner().cloned();
        self.outbox
            .admits(&message, &limits.outbox_per_phone)
            .and_then(|()| {
                self.ctx.quota.reserve(
                    &self.phone,
                    owner.as_ref(),
                    self.outbox.usage(),
                    message.weight(),
                    &limits.outbox_per_tenant,
                )
            })
            .map_err(|e| self.refused(e))?;
        self.outbox.replay(OutboxChange::Queued(message.clone()));
        // Durable before acknowledged: the 202 goes out only after the line
        // is synced, so a crash right after the response loses nothing.
        let change = OutboxChange::Queued(message.clone());
        match self
            .ctx
            .store
            .record_outbox(&self.phone, &change, &self.outbox)
            .await
        {
            Ok(compacted) => self.count_compaction(compacted),
            Err(e) => {
                self.outbox.replay(OutboxChange::Left {
                    id: message.id.clone(),
                });
                self.note_outbox_usage();
                return Err(e.into());
            }
        }
        // The status "queued" is not written: the outbox line says it, and
        // loading the phone derives it (`SessionActor::load`), so an enqueue
        // writes one line and nothing else.
        self.statuses
            .queued(&message.id, message.to.as_jid(), message.created_at_ms);
        self.publish_message_status(&message.id);
        Metrics::inc(&self.ctx.metrics.messages_enqueued);
        info!(message_id = %message.id, pending = self.outbox.len(), "message queued");
        self.pump_outbox();
        Ok(message)
    }

    /// A message an outbox limit refused: counted, and answered 429 (the
    /// queue drains as it sends) or 413 (it would never fit).
    fn refused(&self, e: OutboxError) -> SessionError {
        if let Some(limit) = e.limit_label() {
            self.ctx.metrics.outbox_refused(limit);
            warn!(limit, "message refused by an outbox limit");
        }
        match e {
            OutboxError::TooLarge { .. } => SessionError::TooLarge(e.to_string()),
            e if e.is_full() => SessionError::LimitReached(e.to_string()),
            e => SessionError::Invalid(e.to_string()),
        }
    }

    /// Tells the tenant's quota what this phone's outbox holds now.
    pub(super) fn note_outbox_usage(&self) {
        let owner = self.owner().cloned();
        self.ctx
            .quota
            .set(&self.phone, owner.as_ref(), self.outbox.usage());
    }

    /// Records one change of the outbox (already applied in memory);
    /// `what` names it in the log if the write fails.
    async fn record_outbox(&mut self, change: OutboxChange, what: &'static str) {
        self.note_outbox_usage();
        match self
            .ctx
            .store
            .record_outbox(&self.phone, &change, &self.outbox)
            .await
        {
            Ok(compacted) => self.count_compaction(compacted),
            Err(e) => error!(error = %e, what, "could not record an outbox change"),
        }
    }

    fn count_compaction(&self, compacted: bool) {
        if compacted {
            Metrics::inc(&self.ctx.metrics.outbox_compactions);
        }
    }

    pub(super) fn pump_outbox(&mut self) {
        if !self.state.ready() || self.send_task.is_some() || self.send_retry_at.is_some() {
            return;
        }
        let (Some(client), Some(head)) = (self.client.clone(), self.outbox.head().cloned()) else {
            return;
        };
        // Only users are checked: a group's existence shows in the send itself.
        let jid = head.to.as_jid().to_owned();
        let known = if jid.ends_with("@s.whatsapp.net") {
            self.recipient_checks.lookup(&jid, now_ms())
        } else {
            Some(true)
        };
        let limit = self.ctx.config.sessions.request_timeout;
        self.send_task = Some(tokio::spawn(
            async move {
                let mut checked = None;
                let on_whatsapp = match known {
                    Some(answer) => Ok(answer),
                    None => match timeout(limit, client.is_on_whatsapp(&jid)).await {
                        Ok(Ok(answer)) => {
                            checked = Some(answer);
                            Ok(answer)
                        }
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err(WhatsAppError::Timeout),
                    },
                };
                let result = match on_whatsapp {
                    Ok(true) => {
                        match timeout(limit, client.send_text(&jid, &head.text, &head.id)).await {
                            Ok(result) => result,
                            Err(_) => Err(WhatsAppError::Timeout),
                        }
                    }
                    Ok(false) => Err(WhatsAppError::Undeliverable(format!(
                        "{jid} is not on WhatsApp"
                    ))),
                    Err(e) => Err(e),
                };
                SendOutcome {
                    id: head.id,
                    jid,
                    checked,
                    result,
                }
            }
            .in_current_span(),
        ));
    }

    pub(super) async fn on_sent(&mut self, outcome: SendOutcome) {
        let SendOutcome {
            id,
            jid,
            checked,
            result,
        } = outcome;
        if let Some(on_whatsapp) = checked {
            self.recipient_checks.remember(&jid, on_whatsapp, now_ms());
        }
        match result {
            Ok(()) => {
                if self.outbox.confirm_sent(&id) {
                    Metrics::inc(&self.ctx.metrics.messages_sent);
                    info!(message_id = %id, pending = self.outbox.len(), "message sent");
                    // If this fails, the message went out but the file still
                    // lists it: a restart resends it under the same id, which
                    // the recipient's client recognises as a duplicate.
                    self.record_outbox(OutboxChange::Left { id: id.clone() }, "a sent message")
                        .await;
                    if self.statuses.sent(&id, now_ms()) {
                        self.save_statuses().await;
                        self.publish_message_status(&id);
                    }
                }
                self.pump_outbox();
            }
            Err(e) if e.is_permanent() => {
                if self.outbox.give_up(&id) {
                    Metrics::inc(&self.ctx.metrics.message_send_failures);
                    warn!(message_id = %id, error = %e, pending = self.outbox.len(), "message failed for good; it leaves the queue");
                    // If this fails, it is still listed: after a restart it
                    // fails again the same way.
                    self.record_outbox(OutboxChange::Left { id: id.clone() }, "a failed message")
                        .await;
                    if self.statuses.failed(&id, &e.to_string(), now_ms()) {
                        self.save_statuses().await;
                        self.publish_message_status(&id);
                    }
                }
                self.pump_outbox();
            }
            Err(e) => {
                Metrics::inc(&self.ctx.metrics.message_send_failures);
                self.outbox.record_failure(&id);
                let attempts = self.outbox.head().map(|m| m.attempts).unwrap_or(1);
                self.record_outbox(
                    OutboxChange::Attempted {
                        id: id.clone(),
                        attempts,
                    },
                    "a failed attempt",
                )
                .await;
                let delay = backoff(attempts, Duration::from_secs(60));
                warn!(message_id = %id, error = %e, attempts, retry_ms = delay.as_millis() as u64, "send failed; will retry");
                self.send_retry_at = Some(Instant::now() + delay);
            }
        }
    }

    /// A delivery or read receipt from the recipient's phone.
    pub(super) async fn on_receipt(&mut self, message_ids: &[String], kind: ReceiptKind) {
        let before: Vec<_> = message_ids
            .iter()
            .map(|id| self.statuses.get(id).map(|s| s.state))
            .collect();
        if self.statuses.receipt(message_ids, kind, now_ms()) {
            debug!(count = message_ids.len(), kind = ?kind, "message receipt");
            self.save_statuses().await;
            for (id, was) in message_ids.iter().zip(before) {
                if self.statuses.get(id).map(|s| s.state) != was {
                    self.publish_message_status(id);
                }
            }
        }
    }

    /// The status of one accepted message.
    pub(super) fn message_status(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<MessageStatus, SessionError> {
        self.check_access(caller, false)?;
        self.statuses
            .get(id)
            .cloned()
            .ok_or(SessionError::MessageNotFound)
    }

    async fn save_statuses(&mut self) {
        self.statuses.prune(now_ms());
        if let Err(e) = self
            .ctx
            .store
            .save_statuses(&self.phone, &self.statuses)
            .await
        {
            // The message itself is unaffected; only what the Portal can read lags.
            error!(error = %e, "could not record message statuses");
        }
    }
}

/// What one pass of the send pump found out about the head of the queue.
pub(super) struct SendOutcome {
    id: String,
    jid: String,
    /// A fresh usync answer for `jid`, to remember.
    checked: Option<bool>,
    result: Result<(), WhatsAppError>,
}
