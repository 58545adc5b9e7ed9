//! The outbox's rules: what may be queued, and in what order it leaves.
//!
//! Messages leave strictly in the order they were accepted, one at a time: a
//! message is removed only when the head of the queue is confirmed sent, so a
//! transient failure retries the same head instead of letting a later message
//! overtake it. A head that can never be delivered (a permanent failure) is
//! given up and leaves the queue as failed, so it holds nothing behind it. The id given to the caller is also the WhatsApp message id, so a resend
//! after a crash is recognised by the recipient's client as the same message.

use std::collections::VecDeque;

/// Longest text accepted in one message (WhatsApp's own limit is about 65,536 characters).
pub const MAX_TEXT_BYTES: usize = 65_536;
/// What one queued message costs on disk beside its id, recipient and text
/// (the field names and the line's punctuation).
const RECORD_OVERHEAD_BYTES: u64 = 96;

/// How much one phone's queue may hold. Beyond either bound, enqueueing is
/// refused rather than letting one tenant fill the disk and the memory
/// (a queue is kept in memory while its session runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub max_messages: usize,
    /// Bytes as stored: the sum of each message's `weight`.
    pub max_bytes: u64,
}

impl Default for QueueLimits {
    fn default() -> QueueLimits {
        QueueLimits {
            max_messages: 10_000,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Where a message goes: a user (`…@s.whatsapp.net`) or a group (`…@g.us`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboxError {
    #[error(
        "'to' must be a phone number (8 to 15 digits), a user JID (digits@s.whatsapp.net) or a group JID (…@g.us)"
    )]
    BadRecipient,
    #[error("'text' must not be empty")]
    EmptyText,
    #[error("'text' is longer than {MAX_TEXT_BYTES} bytes")]
    TextTooLong,
    #[error(
        "the outbox already holds {held} messages, the most one phone may queue; wait until they are sent"
    )]
    FullOfMessages { held: usize },
    #[error(
        "the outbox already holds {held} bytes; this message ({weight} bytes) would pass the {max} bytes one phone may queue; wait until they are sent"
    )]
    FullOfBytes { held: u64, weight: u64, max: u64 },
    #[error(
        "this message takes {weight} bytes stored, more than the {max} bytes one phone may queue at all"
    )]
    TooLarge { weight: u64, max: u64 },
    #[error(
        "this account's phones already hold {held} queued messages, the most it may queue; wait until they are sent"
    )]
    TenantFullOfMessages { held: usize },
    #[error(
        "this account's phones already hold {held} queued bytes; this message ({weight} bytes) would pass the {max} bytes it may queue; wait until they are sent"
    )]
    TenantFullOfBytes { held: u64, weight: u64, max: u64 },
}

impl OutboxError {
    /// Whether waiting helps: the queue is full now but drains as it sends.
    pub fn is_full(&self) -> bool {
        matches!(
            self,
            OutboxError::FullOfMessages { .. }
                | OutboxError::FullOfBytes { .. }
                | OutboxError::TenantFullOfMessages { .. }
                | OutboxError::TenantFullOfBytes { .. }
        )
    }

    /// The label of `lila_outbox_refused_total` for a refusal by a limit.
    pub fn limit_label(&self) -> Option<&'static str> {
        match self {
            OutboxError::FullOfMessages { .. } => Some("phone_messages"),
            OutboxError::FullOfBytes { .. } | OutboxError::TooLarge { .. } => Some("phone_bytes"),
            OutboxError::TenantFullOfMessages { .. } => Some("tenant_messages"),
            OutboxError::TenantFullOfBytes { .. } => Some("tenant_bytes"),
            _ => None,
        }
    }
}

/// What a set of queues holds together (a tenant's phones).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueUsage {
    pub messages: usize,
    pub bytes: u64,
}

impl QueueUsage {
    /// Whether one more message of `weight` fits under a tenant's `limits`.
    pub fn admits(&self, weight: u64, limits: &QueueLimits) -> Result<(), OutboxError> {
        if self.messages >= limits.max_messages {
            return Err(OutboxError::TenantFullOfMessages {
                held: self.messages,
            });
        }
        if self.bytes.saturating_add(weight) > limits.max_bytes {
            return Err(OutboxError::TenantFullOfBytes {
                held: self.bytes,
                weight,
                max: limits.max_bytes,
            });
        }
        Ok(())
    }
}

/// The length of `s` as a JSON string's contents (serde_json's escaping).
fn json_escaped_len(s: &str) -> u64 {
    s.chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8() as u64,
        })
        .sum()
}

impl Recipient {
    pub fn parse(raw: &str) -> Result<Recipient, OutboxError> {
        let raw = raw.trim();
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let user_ok = |s: &str| all_digits(s) && (8..=15).contains(&s.len());
        if user_ok(raw) {
            return Ok(Recipient(format!("{raw}@s.whatsapp.net")));
        }
        if let Some(user) = raw.strip_suffix("@s.whatsapp.net")
            && user_ok(user)
        {
            return Ok(Recipient(raw.to_owned()));
        }
        if let Some(group) = raw.strip_suffix("@g.us") {
            let mut parts = group.splitn(2, '-');
            let first_ok = parts.next().is_some_and(all_digits);
            let rest_ok = parts.next().is_none_or(all_digits);
            if first_ok && rest_ok && group.len() <= 40 {
                return Ok(Recipient(raw.to_owned()));
            }
        }
        Err(OutboxError::BadRecipient)
    }

    pub fn as_jid(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub id: String,
    pub to: Recipient,
    pub text: String,
    pub created_at_ms: u64,
    pub attempts: u32,
}

impl OutboxMessage {
    pub fn new(
        id: String,
        to: Recipient,
        text: String,
        now_ms: u64,
    ) -> Result<OutboxMessage, OutboxError> {
        if text.trim().is_empty() {
            return Err(OutboxError::EmptyText);
        }
        if text.len() > MAX_TEXT_BYTES {
            return Err(OutboxError::TextTooLong);
        }
        Ok(OutboxMessage {
            id,
            to,
            text,
            created_at_ms: now_ms,
            attempts: 0,
        })
    }

    /// What the message costs stored: its id, recipient and text as JSON
    /// escapes them (a text of control characters takes six bytes each),
    /// and the record around them. The per-phone and per-tenant byte limits
    /// count this, so they bound the disk, not only the text.
    pub fn weight(&self) -> u64 {
        json_escaped_len(&self.id)
            + json_escaped_len(self.to.as_jid())
            + json_escaped_len(&self.text)
            + RECORD_OVERHEAD_BYTES
    }
}

/// A WhatsApp-style message id (`3EB0` and 20 upper-case hex digits) from 10 random bytes.
pub fn message_id(random: [u8; 10]) -> String {
    let mut id = String::from("3EB0");
    for byte in random {
        id.push_str(&format!("{byte:02X}"));
    }
    id
}

/// One change of a queue, as its durable log records it (`storage::outbox_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxChange {
    Queued(OutboxMessage),
    /// The head left the queue: sent, or given up.
    Left {
        id: String,
    },
    /// The head failed once more; it stays at the head.
    Attempted {
        id: String,
        attempts: u32,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outbox {
    messages: VecDeque<OutboxMessage>,
    /// The sum of the messages' weights.
    bytes: u64,
}

impl Outbox {
    pub fn from_messages(messages: Vec<OutboxMessage>) -> Outbox {
        let bytes = messages.iter().map(OutboxMessage::weight).sum();
        Outbox {
            messages: messages.into(),
            bytes,
        }
    }

    /// Whether `message` fits under `limits`; nothing changes.
    pub fn admits(&self, message: &OutboxMessage, limits: &QueueLimits) -> Result<(), OutboxError> {
        let weight = message.weight();
        if weight > limits.max_bytes {
            return Err(OutboxError::TooLarge {
                weight,
                max: limits.max_bytes,
            });
        }
        if self.messages.len() >= limits.max_messages {
            return Err(OutboxError::FullOfMessages {
                held: self.messages.len(),
            });
        }
        if self.bytes.saturating_add(weight) > limits.max_bytes {
            return Err(OutboxError::FullOfBytes {
                held: self.bytes,
                weight,
                max: limits.max_bytes,
            });
        }
        Ok(())
    }

    pub fn enqueue(
        &mut self,
        message: OutboxMessage,
        limits: &QueueLimits,
    ) -> Result<(), OutboxError> {
        self.admits(&message, limits)?;
        self.push(message);
        Ok(())
    }

    fn push(&mut self, message: OutboxMessage) {
        self.bytes += message.weight();
        self.messages.push_back(message);
    }

    /// Replays one change read back from the durable log, whatever the
    /// limits are now (a queue accepted under higher limits still loads).
    /// A `Left` or `Attempted` for a message the queue does not hold
    /// changes nothing.
    pub fn replay(&mut self, change: OutboxChange) {
        match change {
            OutboxChange::Queued(message) => self.push(message),
            OutboxChange::Left { id } => {
                if let Some(at) = self.messages.iter().position(|m| m.id == id)
                    && let Some(gone) = self.messages.remove(at)
                {
                    self.bytes -= gone.weight();
                }
            }
            OutboxChange::Attempted { id, attempts } => {
                if let Some(m) = self.messages.iter_mut().find(|m| m.id == id) {
                    m.attempts = attempts;
                }
            }
        }
    }

    /// The stored bytes of the queue: the sum of its messages' weights.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn usage(&self) -> QueueUsage {
        QueueUsage {
            messages: self.messages.len(),
            bytes: self.bytes,
        }
    }

    /// The next message to send. Nothing else may be sent before it succeeds.
    pub fn head(&self) -> Option<&OutboxMessage> {
        self.messages.front()
    }

    /// Removes the head if it is `id`. A confirmation for anything else (a
    /// late answer for a message already handled) changes nothing.
    pub fn confirm_sent(&mut self, id: &str) -> bool {
        self.remove_head(id)
    }

    /// Removes the head if it is `id` because it can never be delivered (not
    /// on WhatsApp, invalid JID): the messages behind it are not held up.
    pub fn give_up(&mut self, id: &str) -> bool {
        self.remove_head(id)
    }

    fn remove_head(&mut self, id: &str) -> bool {
        if self.messages.front().is_some_and(|m| m.id == id)
            && let Some(gone) = self.messages.pop_front()
        {
            self.bytes -= gone.weight();
            true
        } else {
            false
        }
    }

    /// Counts a failed attempt of the head, which stays at the head.
    pub fn record_failure(&mut self, id: &str) {
        if let Some(head) = self.messages.front_mut()
            && head.id == id
        {
            head.attempts = head.attempts.saturating_add(1);
        }
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &OutboxMessage> {
        self.messages.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str) -> OutboxMessage {
        OutboxMessage::new(
            id.into(),
            Recipient::parse("51911111111").unwrap(),
            "hi".into(),
            0,
        )
        .unwrap()
    }

    #[test]
    fn messages_leave_in_order_and_only_the_head_can_be_confirmed() {
        let mut outbox = Outbox::default();
        for id in ["a", "b", "c"] {
            outbox.enqueue(msg(id), &QueueLimits::default()).unwrap();
        }
        assert!(!outbox.confirm_sent("b"), "b may not overtake a");
        outbox.record_failure("a");
        assert_eq!(
            outbox.head().map(|m| (m.id.as_str(), m.attempts)),
            Some(("a", 1))
        );
        assert!(outbox.confirm_sent("a"));
        assert!(
            !outbox.confirm_sent("a"),
            "a late second confirmation removes nothing"
        );
        let rest: Vec<_> = outbox.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(rest, ["b", "c"]);
        assert!(!outbox.give_up("c"), "only the head can be given up");
        assert!(outbox.give_up("b"));
        assert_eq!(outbox.head().map(|m| m.id.as_str()), Some("c"));
    }

    #[test]
    fn the_outbox_is_bounded_in_messages_and_in_stored_bytes() {
        let limits = QueueLimits {
            max_messages: 3,
            max_bytes: 1_000_000,
        };
        let mut outbox = Outbox::default();
        for i in 0..3 {
            outbox.enqueue(msg(&i.to_string()), &limits).unwrap();
        }
        assert_eq!(
            outbox.enqueue(msg("one-too-many"), &limits),
            Err(OutboxError::FullOfMessages { held: 3 })
        );
        assert!(outbox.confirm_sent("0"));
        outbox.enqueue(msg("room-again"), &limits).unwrap();

        let to = Recipient::parse("51911111111").unwrap();
        // A text of control characters takes six bytes each once escaped:
        // the byte limit counts what is stored, not the text's length.
        let escaped = OutboxMessage::new("e".into(), to.clone(), "\u{1}".repeat(1_000), 0).unwrap();
        assert!(escaped.weight() >= 6_000, "{}", escaped.weight());
        let small = QueueLimits {
            max_messages: 100,
            max_bytes: 5_000,
        };
        assert!(matches!(
            Outbox::default().admits(&escaped, &small),
            Err(OutboxError::TooLarge { .. })
        ));
        let mut outbox = Outbox::default();
        let half = OutboxMessage::new("h1".into(), to, "x".repeat(2_000), 0).unwrap();
        outbox.enqueue(half.clone(), &small).unwrap();
        outbox
            .enqueue(
                OutboxMessage {
                    id: "h2".into(),
                    ..half.clone()
                },
                &small,
            )
            .unwrap();
        let third = OutboxMessage {
            id: "h3".into(),
            ..half
        };
        assert!(matches!(
            outbox.enqueue(third, &small),
            Err(OutboxError::FullOfBytes { .. })
        ));
        assert_eq!(outbox.bytes(), 2 * outbox.head().unwrap().weight());
    }

    #[test]
    fn a_replayed_log_rebuilds_the_queue_and_its_bytes() {
        let mut live = Outbox::default();
        let mut replayed = Outbox::default();
        let limits = QueueLimits::default();
        for id in ["a", "b", "c"] {
            live.enqueue(msg(id), &limits).unwrap();
            replayed.replay(OutboxChange::Queued(msg(id)));
        }
        live.record_failure("a");
        replayed.replay(OutboxChange::Attempted {
            id: "a".into(),
            attempts: 1,
        });
        live.confirm_sent("a");
        replayed.replay(OutboxChange::Left { id: "a".into() });
        replayed.replay(OutboxChange::Left {
            id: "never-queued".into(),
        });
        assert_eq!(replayed, live);
        assert_eq!(replayed.bytes(), 2 * msg("b").weight());
    }

    #[test]
    fn weight_counts_json_escapes() {
        assert_eq!(json_escaped_len("ab"), 2);
        assert_eq!(json_escaped_len("\"\n"), 4);
        assert_eq!(json_escaped_len("\u{0}"), 6);
        assert_eq!(json_escaped_len("ñ"), 2);
        let text = "a\"\u{1}ñ\\";
        let encoded = serde_json::to_string(text).unwrap();
        assert_eq!(json_escaped_len(text), encoded.len() as u64 - 2);
    }

    #[test]
    fn recipients_are_users_or_groups() {
        let check = |raw: &str, expected: Option<&str>| {
            assert_eq!(
                Recipient::parse(raw).ok().as_ref().map(Recipient::as_jid),
                expected,
                "{raw:?}"
            );
        };
        check("51911111111", Some("51911111111@s.whatsapp.net"));
        check(
            "51911111111@s.whatsapp.net",
            Some("51911111111@s.whatsapp.net"),
        );
        check("120363025246125486@g.us", Some("120363025246125486@g.us"));
        check(
            "51911111111-1596412345@g.us",
            Some("51911111111-1596412345@g.us"),
        );
        check("+51911111111", None);
        check("abc@s.whatsapp.net", None);
        check("../x@g.us", None);
        check("", None);
    }

    #[test]
    fn text_must_be_present_and_bounded() {
        let to = Recipient::parse("51911111111").unwrap();
        assert_eq!(
            OutboxMessage::new("x".into(), to.clone(), "  ".into(), 0),
            Err(OutboxError::EmptyText)
        );
        assert_eq!(
            OutboxMessage::new("x".into(), to, "a".repeat(MAX_TEXT_BYTES + 1), 0),
            Err(OutboxError::TextTooLong)
        );
    }

    #[test]
    fn message_ids_look_like_whatsapp_web_ids() {
        let id = message_id([0xAB; 10]);
        assert_eq!(id.len(), 24);
        assert!(id.starts_with("3EB0ABAB"));
    }
}
