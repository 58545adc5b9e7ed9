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
/// Most messages one phone may have waiting; beyond it, enqueueing is refused
/// rather than letting one tenant fill the disk.
pub const MAX_PENDING: usize = 10_000;

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
    #[error("the outbox already holds {MAX_PENDING} messages; wait until they are sent")]
    Full,
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
}

/// A WhatsApp-style message id (`3EB0` and 20 upper-case hex digits) from 10 random bytes.
pub fn message_id(random: [u8; 10]) -> String {
    let mut id = String::from("3EB0");
    for byte in random {
        id.push_str(&format!("{byte:02X}"));
    }
    id
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outbox {
    messages: VecDeque<OutboxMessage>,
}

impl Outbox {
    pub fn from_messages(messages: Vec<OutboxMessage>) -> Outbox {
        Outbox {
            messages: messages.into(),
        }
    }

    pub fn enqueue(&mut self, message: OutboxMessage) -> Result<(), OutboxError> {
        if self.messages.len() >= MAX_PENDING {
            return Err(OutboxError::Full);
        }
        self.messages.push_back(message);
        Ok(())
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
        if self.messages.front().is_some_and(|m| m.id == id) {
            self.messages.pop_front();
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
            outbox.enqueue(msg(id)).unwrap();
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
    fn the_outbox_is_bounded() {
        let mut outbox = Outbox::default();
        for i in 0..MAX_PENDING {
            outbox.enqueue(msg(&i.to_string())).unwrap();
        }
        assert_eq!(outbox.enqueue(msg("one-too-many")), Err(OutboxError::Full));
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
