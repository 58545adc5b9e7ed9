//! What became of each message the API accepted: queued, sent, delivered,
//! read or failed (with a reason), and which recipients WhatsApp knows.
//!
//! A status only moves forward (a late "delivered" after "read" changes
//! nothing), and the table is bounded in time and count so a phone that sends
//! for years does not grow a file without end.

use std::collections::{HashMap, VecDeque};

/// How long a finished status (sent, delivered, read, failed) is kept: long
/// enough for a Portal that polls daily to see the read receipt.
pub const STATUS_RETENTION_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// Most finished statuses kept per phone; the oldest go first. Statuses of
/// messages still queued are never dropped (the outbox bounds them).
pub const MAX_FINISHED_STATUSES: usize = 10_000;
/// How long a "this number is (not) on WhatsApp" answer is trusted before
/// the next send to that recipient asks again.
pub const RECIPIENT_CHECK_TTL_MS: u64 = 60 * 60 * 1000;
/// Most recipients one session remembers; the oldest answer goes first.
pub const MAX_CHECKED_RECIPIENTS: usize = 4_096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeliveryState {
    Queued,
    Sent,
    Delivered,
    Read,
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Queued => "queued",
            DeliveryState::Sent => "sent",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Read => "read",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<DeliveryState> {
        [
            DeliveryState::Queued,
            DeliveryState::Sent,
            DeliveryState::Delivered,
            DeliveryState::Read,
            DeliveryState::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

/// A receipt WhatsApp sent back for messages of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptKind {
    Delivered,
    Read,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageStatus {
    pub id: String,
    pub to: String,
    pub state: DeliveryState,
    pub error: Option<String>,
    pub queued_at_ms: u64,
    pub sent_at_ms: Option<u64>,
    pub delivered_at_ms: Option<u64>,
    pub read_at_ms: Option<u64>,
    pub failed_at_ms: Option<u64>,
}

impl MessageStatus {
    fn finished_at_ms(&self) -> Option<u64> {
        [
            self.failed_at_ms,
            self.read_at_ms,
            self.delivered_at_ms,
            self.sent_at_ms,
        ]
        .into_iter()
        .flatten()
        .max()
    }
}

/// The statuses of one phone, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageStatuses {
    entries: VecDeque<MessageStatus>,
}

impl MessageStatuses {
    pub fn from_entries(entries: Vec<MessageStatus>) -> MessageStatuses {
        MessageStatuses {
            entries: entries.into(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &MessageStatus> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&MessageStatus> {
        self.entries.iter().find(|s| s.id == id)
    }

    pub fn queued(&mut self, id: &str, to: &str, now_ms: u64) {
        self.entries.push_back(MessageStatus {
            id: id.to_owned(),
            to: to.to_owned(),
            state: DeliveryState::Queued,
            error: None,
            queued_at_ms: now_ms,
            sent_at_ms: None,
            delivered_at_ms: None,
            read_at_ms: None,
            failed_at_ms: None,
        });
        // No prune here: a queued status never is pruned, and the finished
        // ones are pruned where they change (`prune`, before each save), so
        // that queueing costs O(1).
    }

    /// Adds a queued status for each of `messages` (id, recipient, queued at)
    /// that has none: the messages still in the outbox when a phone loads.
    pub fn queued_if_missing<'a>(
        &mut self,
        messages: impl Iterator<Item = (&'a str, &'a str, u64)>,
    ) {
        let known: std::collections::HashSet<String> =
            self.entries.iter().map(|s| s.id.clone()).collect();
        for (id, to, at) in messages {
            if !known.contains(id) {
                self.queued(id, to, at);
            }
        }
    }

    /// Marks `id` sent. Returns whether anything changed.
    pub fn sent(&mut self, id: &str, now_ms: u64) -> bool {
        self.advance(id, DeliveryState::Sent, now_ms, None)
    }

    /// Marks `id` failed for good with a sentence saying why.
    pub fn failed(&mut self, id: &str, reason: &str, now_ms: u64) -> bool {
        self.advance(id, DeliveryState::Failed, now_ms, Some(reason))
    }

    /// Applies a receipt to each id it names; unknown ids are ignored (they
    /// may be messages sent from the phone itself, or long forgotten).
    pub fn receipt(&mut self, ids: &[String], kind: ReceiptKind, now_ms: u64) -> bool {
        let state = match kind {
            ReceiptKind::Delivered => DeliveryState::Delivered,
            ReceiptKind::Read => DeliveryState::Read,
        };
        let mut changed = false;
        for id in ids {
            changed |= self.advance(id, state, now_ms, None);
        }
        changed
    }

    fn advance(
        &mut self,
        id: &str,
        state: DeliveryState,
        now_ms: u64,
        reason: Option<&str>,
    ) -> bool {
        let Some(entry) = self.entries.iter_mut().find(|s| s.id == id) else {
            return false;
        };
        // Forward only; a failed message stays failed, and a receipt cannot
        // fail a message that reached its recipient.
        if entry.state == DeliveryState::Failed
            || (state == DeliveryState::Failed && entry.state != DeliveryState::Queued)
            || state <= entry.state
        {
            return false;
        }
        entry.state = state;
        match state {
            DeliveryState::Queued => {}
            DeliveryState::Sent => entry.sent_at_ms = Some(now_ms),
            DeliveryState::Delivered => {
                entry.sent_at_ms.get_or_insert(now_ms);
                entry.delivered_at_ms = Some(now_ms);
            }
            DeliveryState::Read => {
                entry.sent_at_ms.get_or_insert(now_ms);
                entry.delivered_at_ms.get_or_insert(now_ms);
                entry.read_at_ms = Some(now_ms);
            }
            DeliveryState::Failed => {
                entry.failed_at_ms = Some(now_ms);
                entry.error = reason.map(str::to_owned);
            }
        }
        true
    }

    /// Drops finished statuses older than [`STATUS_RETENTION_MS`], then the
    /// oldest finished ones beyond [`MAX_FINISHED_STATUSES`].
    pub fn prune(&mut self, now_ms: u64) {
        self.entries.retain(|s| {
            s.finished_at_ms()
                .is_none_or(|t| now_ms.saturating_sub(t) <= STATUS_RETENTION_MS)
        });
        let finished = self
            .entries
            .iter()
            .filter(|s| s.state != DeliveryState::Queued)
            .count();
        let mut excess = finished.saturating_sub(MAX_FINISHED_STATUSES);
        self.entries.retain(|s| {
            if excess > 0 && s.state != DeliveryState::Queued {
                excess -= 1;
                false
            } else {
                true
            }
        });
    }
}

/// Whether a message id has the shape lila gives out (`3EB0` + 20 hex digits).
pub fn is_message_id(raw: &str) -> bool {
    raw.len() == 24
        && raw.starts_with("3EB0")
        && raw
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// Recent answers to "is this recipient on WhatsApp?", so only the first
/// send to a recipient (and one an hour after) costs a usync round trip.
#[derive(Debug, Clone, Default)]
pub struct RecipientChecks {
    answers: HashMap<String, (bool, u64)>,
}

impl RecipientChecks {
    /// The answer for `jid`, if one younger than the TTL is known.
    pub fn lookup(&self, jid: &str, now_ms: u64) -> Option<bool> {
        self.answers
            .get(jid)
            .filter(|(_, at)| now_ms.saturating_sub(*at) < RECIPIENT_CHECK_TTL_MS)
            .map(|(on_whatsapp, _)| *on_whatsapp)
    }

    pub fn remember(&mut self, jid: &str, on_whatsapp: bool, now_ms: u64) {
        if self.answers.len() >= MAX_CHECKED_RECIPIENTS && !self.answers.contains_key(jid) {
            self.answers
                .retain(|_, (_, at)| now_ms.saturating_sub(*at) < RECIPIENT_CHECK_TTL_MS);
            if self.answers.len() >= MAX_CHECKED_RECIPIENTS
                && let Some(oldest) = self
                    .answers
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone())
            {
                self.answers.remove(&oldest);
            }
        }
        self.answers.insert(jid.to_owned(), (on_whatsapp, now_ms));
    }

    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3EB0000000000000000000AA";

    #[test]
    fn a_status_moves_forward_only() {
        let mut s = MessageStatuses::default();
        s.queued(ID, "51911111111@s.whatsapp.net", 1);
        assert!(s.sent(ID, 2));
        assert!(s.receipt(&[ID.into()], ReceiptKind::Read, 4));
        assert!(!s.receipt(&[ID.into()], ReceiptKind::Delivered, 5));
        assert!(!s.failed(ID, "late", 6), "a read message cannot fail");
        let st = s.get(ID).unwrap();
        assert_eq!(st.state, DeliveryState::Read);
        assert_eq!(
            (st.sent_at_ms, st.delivered_at_ms, st.read_at_ms),
            (Some(2), Some(4), Some(4))
        );
    }

    #[test]
    fn a_failed_message_keeps_its_reason_and_ignores_receipts() {
        let mut s = MessageStatuses::default();
        s.queued(ID, "x", 1);
        assert!(s.failed(ID, "not on WhatsApp", 2));
        assert!(!s.receipt(&[ID.into()], ReceiptKind::Delivered, 3));
        let st = s.get(ID).unwrap();
        assert_eq!(st.state, DeliveryState::Failed);
        assert_eq!(st.error.as_deref(), Some("not on WhatsApp"));
    }

    #[test]
    fn finished_statuses_expire_and_are_bounded_but_queued_ones_stay() {
        let mut s = MessageStatuses::default();
        s.queued("old", "x", 0);
        s.sent("old", 0);
        s.queued("waiting", "x", 0);
        s.prune(STATUS_RETENTION_MS + 1);
        assert!(s.get("old").is_none());
        assert!(s.get("waiting").is_some());
        for i in 0..MAX_FINISHED_STATUSES + 5 {
            let id = format!("m{i}");
            s.queued(&id, "x", 10);
            s.sent(&id, 10);
        }
        s.prune(10);
        assert_eq!(s.len(), MAX_FINISHED_STATUSES + 1);
        assert!(s.get("m0").is_none(), "the oldest finished go first");
        assert!(s.get("waiting").is_some());
    }

    #[test]
    fn message_ids_are_checked_for_shape() {
        assert!(is_message_id(ID));
        assert!(is_message_id(&crate::core::outbox::message_id([7; 10])));
        assert!(!is_message_id("3EB0"));
        assert!(!is_message_id("../../etc/passwd"));
        assert!(!is_message_id("3eb0000000000000000000aa"));
    }

    #[test]
    fn recipient_answers_expire_and_are_bounded() {
        let mut checks = RecipientChecks::default();
        checks.remember("a", false, 0);
        assert_eq!(checks.lookup("a", 1), Some(false));
        assert_eq!(checks.lookup("a", RECIPIENT_CHECK_TTL_MS), None);
        for i in 0..MAX_CHECKED_RECIPIENTS + 3 {
            checks.remember(&format!("r{i}"), true, 1 + i as u64);
        }
        assert_eq!(checks.len(), MAX_CHECKED_RECIPIENTS);
    }
}
