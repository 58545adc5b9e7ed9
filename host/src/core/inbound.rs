//! Incoming messages, as plain values: what a contact sent to a session,
//! in the shape lila's events and inbox carry it (issue 18, item 1).
//!
//! `whatsapp/inbound.rs` builds these from whatsapp-rust's messages; nothing
//! here knows the protocol. What a later download of a message's media needs
//! (its key and path on WhatsApp's servers) is kept apart, in
//! [`MediaReference`]: it never goes into an event, a log line or anything a
//! tenant reads.

/// One incoming message, or a change to an earlier one.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMessage {
    /// WhatsApp's id of this message (unique within its chat and sender).
    pub message_id: String,
    /// The chat: the contact's JID in a 1:1 chat, the group's (`…@g.us`) in a group.
    pub chat: String,
    /// The sender's phone JID (`…@s.whatsapp.net`) when the client knows
    /// it; the LID otherwise (then `from_lid` is the same).
    pub from: String,
    /// The sender's LID (`…@lid`), when WhatsApp addressed the sender by it
    /// or gave it beside the phone JID.
    pub from_lid: Option<String>,
    /// The name the sender set in WhatsApp, if it came with the message.
    pub push_name: Option<String>,
    /// When the sender sent it, Unix milliseconds.
    pub timestamp_ms: i64,
    pub is_group: bool,
    /// Sent from the session's own account (its phone or another linked
    /// device), not by a contact.
    pub from_me: bool,
    pub change: Change,
}

/// What the message is.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A new message (`message.received`); boxed, as it is most of the size.
    Received(Box<Received>),
    /// An edit of an earlier message of the same sender (`message.updated`).
    Updated {
        target_id: String,
        /// The new text (or caption).
        text: Option<String>,
    },
    /// The sender deleted an earlier message for everyone (`message.revoked`).
    Revoked { target_id: String },
    /// The message arrived but could not be decrypted (a `message.received`
    /// of type `unknown`, so that nothing is dropped in silence).
    Undecryptable { reason: String },
}

/// A new message's content.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Received {
    pub kind: MessageKind,
    /// The text of a text message, or a media message's caption.
    pub text: Option<String>,
    /// The id of the message this one replies to.
    pub quoted_id: Option<String>,
    /// The JIDs the message mentions.
    pub mentions: Vec<String>,
    pub media: Option<Media>,
    pub location: Option<Location>,
    /// Contact cards: one for a contact message, several for a contacts array.
    pub contacts: Vec<ContactCard>,
    pub reaction: Option<Reaction>,
}

/// The kind of a new message, with its wire name ([`MessageKind::as_str`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MessageKind {
    #[default]
    Text,
    Image,
    Video,
    /// An audio file, or a voice note (`Media::ptt`).
    Audio,
    Document,
    Sticker,
    Location,
    Contact,
    Reaction,
    /// Anything else, with the WhatsApp kind that was set (the protobuf
    /// field's name, e.g. `pollCreationMessage`), or why it could not be read.
    Unknown {
        whatsapp_kind: String,
    },
}

impl MessageKind {
    /// The event's `type`.
    pub fn as_str(&self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Image => "image",
            MessageKind::Video => "video",
            MessageKind::Audio => "audio",
            MessageKind::Document => "document",
            MessageKind::Sticker => "sticker",
            MessageKind::Location => "location",
            MessageKind::Contact => "contact",
            MessageKind::Reaction => "reaction",
            MessageKind::Unknown { .. } => "unknown",
        }
    }
}

/// What a tenant may know of a media message's file: never its key, its
/// path or a URL.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Media {
    pub mimetype: Option<String>,
    pub size_bytes: Option<u64>,
    /// The SHA-256 of the decrypted file, lowercase hex.
    pub sha256: Option<String>,
    pub file_name: Option<String>,
    /// The length of an audio or a video.
    pub seconds: Option<u32>,
    /// Whether an audio is a voice note.
    pub ptt: bool,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    pub name: Option<String>,
    pub address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactCard {
    pub display_name: Option<String>,
    pub vcard: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaction {
    /// The message reacted to.
    pub target_id: String,
    /// The emoji; empty when the sender took the reaction back.
    pub emoji: String,
}

/// What downloading a received media message needs: stored by the host,
/// never shown. Its `Debug` leaves the key and the path out.
#[derive(Clone, PartialEq, Eq)]
pub struct MediaReference {
    pub kind: MessageKind,
    pub direct_path: String,
    pub media_key: Vec<u8>,
    pub file_enc_sha256: Vec<u8>,
    pub file_sha256: Vec<u8>,
    pub file_length: u64,
}

impl std::fmt::Debug for MediaReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaReference")
            .field("kind", &self.kind.as_str())
            .field("file_length", &self.file_length)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_media_reference_never_shows_its_key_or_path_in_a_log() {
        let reference = MediaReference {
            kind: MessageKind::Image,
            direct_path: "/v/t62/secret-path".into(),
            media_key: vec![0xAB; 32],
            file_enc_sha256: vec![1; 32],
            file_sha256: vec![2; 32],
            file_length: 1234,
        };
        let shown = format!("{reference:?}");
        assert!(shown.contains("image") && shown.contains("1234"), "{shown}");
        assert!(
            !shown.contains("secret-path") && !shown.contains("171"),
            "{shown}"
        );
    }
}
