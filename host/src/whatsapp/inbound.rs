//! An incoming WhatsApp message as lila's own value (`core::inbound`).
//!
//! whatsapp-rust hands over each decrypted message as a `wa::Message` (the
//! protobuf) and its `MessageInfo` (who, where, when). This is the one place
//! that reads them: wrappers (ephemeral, view once, document with caption)
//! are taken off with the library's own `MessageExt::get_base_message`, an
//! edit and a revoke (protocol messages) become changes to an earlier
//! message, and a kind lila does not know keeps the name of the protobuf
//! field that carried it. The media's key and path go into a separate
//! `MediaReference`, never into the message a tenant sees.

use whatsapp_rust::wacore::proto_helpers::MessageExt;
use whatsapp_rust::wacore::types::events::UndecryptableMessage;
use whatsapp_rust::wacore::types::message::MessageInfo;
use whatsapp_rust::waproto::whatsapp as wa;

use crate::core::inbound::{
    Change, ContactCard, InboundMessage, Location, Media, MediaReference, MessageKind, Reaction,
    Received,
};

/// `message`, which `info` describes, as lila's value, with what a later
/// download of its media needs (`None` for a message without media).
pub fn translate(
    message: &wa::Message,
    info: &MessageInfo,
) -> (InboundMessage, Option<MediaReference>) {
    let base = message.get_base_message();
    let (change, reference) = match base.protocol_message.as_option() {
        Some(protocol) => (protocol_change(protocol), None),
        None => {
            let (received, reference) = received(base);
            (Change::Received(Box::new(received)), reference)
        }
    };
    (envelope(info, change), reference)
}

/// A message that arrived but could not be decrypted: an event too, with
/// the reason, so that nothing is dropped in silence.
pub fn undecryptable(event: &UndecryptableMessage) -> InboundMessage {
    let reason = if event.is_unavailable {
        format!(
            "WhatsApp delivered it without its content ({})",
            format!("{:?}", event.unavailable_type).to_lowercase()
        )
    } else {
        "it could not be decrypted".to_owned()
    };
    envelope(&event.info, Change::Undecryptable { reason })
}

/// Who sent it, where and when. A sender addressed by LID is shown by its
/// phone JID when WhatsApp gave it alongside (`sender_alt`), with the LID
/// beside it; a sender addressed by phone keeps a LID given alongside too.
fn envelope(info: &MessageInfo, change: Change) -> InboundMessage {
    let sender = info.source.sender.to_non_ad();
    let alt = info.source.sender_alt.as_ref().map(|jid| jid.to_non_ad());
    let (from, from_lid) = if sender.is_lid() {
        let lid = sender.to_string();
        match alt.filter(|jid| jid.is_pn()) {
            Some(pn) => (pn.to_string(), Some(lid)),
            None => (lid.clone(), Some(lid)),
        }
    } else {
        let lid = alt.filter(|jid| jid.is_lid()).map(|jid| jid.to_string());
        (sender.to_string(), lid)
    };
    InboundMessage {
        message_id: info.id.to_string(),
        chat: info.source.chat.to_non_ad().to_string(),
        from,
        from_lid,
        push_name: Some(info.push_name.clone()).filter(|name| !name.is_empty()),
        timestamp_ms: info.timestamp.timestamp_millis(),
        is_group: info.source.is_group,
        from_me: info.source.is_from_me,
        change,
    }
}

/// An edit or a revoke of an earlier message; any other protocol message
/// (history sync, key shares: the client's business) is an unknown kind.
fn protocol_change(protocol: &wa::message::ProtocolMessage) -> Change {
    use wa::message::protocol_message::Type;
    let target_id = protocol
        .key
        .as_option()
        .and_then(|key| key.id.clone())
        .unwrap_or_default();
    match protocol.r#type {
        Some(Type::REVOKE) => Change::Revoked { target_id },
        Some(Type::MESSAGE_EDIT) => {
            let edited = protocol.edited_message.as_option();
            Change::Updated {
                target_id,
                text: edited.and_then(|m| {
                    m.text_content()
                        .or_else(|| m.get_caption())
                        .map(str::to_owned)
                }),
            }
        }
        other => Change::Received(Box::new(Received {
            kind: MessageKind::Unknown {
                whatsapp_kind: match other {
                    Some(kind) => format!("protocolMessage:{kind:?}"),
                    None => "protocolMessage".to_owned(),
                },
            },
            ..Received::default()
        })),
    }
}

/// A media message's kind, what a tenant may know of its file (with the
/// kind's own facts, `$field: $value`), its media reference and its context.
/// Every media type of the protobuf has the common fields under the same
/// names.
macro_rules! media_parts {
    ($m:expr, $kind:ident $(, $field:ident : $value:expr)* $(,)?) => {
        (
            MessageKind::$kind,
            Media {
                mimetype: $m.mimetype.clone(),
                size_bytes: $m.file_length,
                sha256: $m.file_sha256.as_deref().map(hex::encode),
                $($field: $value,)*
                ..Media::default()
            },
            media_reference(
                MessageKind::$kind,
                &$m.direct_path,
                &$m.media_key,
                &$m.file_enc_sha256,
                &$m.file_sha256,
                $m.file_length,
            ),
            $m.context_info.as_option(),
        )
    };
}

/// A new message's content, and its media reference.
fn received(base: &wa::Message) -> (Received, Option<MediaReference>) {
    let mut out = Received {
        text: base
            .text_content()
            .or_else(|| base.get_caption())
            .map(str::to_owned),
        ..Received::default()
    };
    let found_media = base
        .image_message
        .as_option()
        .map(|m| media_parts!(m, Image, width: m.width, height: m.height))
        .or_else(|| {
            base.video_message.as_option().map(
                |m| media_parts!(m, Video, seconds: m.seconds, width: m.width, height: m.height),
            )
        })
        .or_else(|| {
            base.audio_message
                .as_option()
                .map(|m| media_parts!(m, Audio, seconds: m.seconds, ptt: m.ptt == Some(true)))
        })
        .or_else(|| {
            base.document_message
                .as_option()
                .map(|m| media_parts!(m, Document, file_name: m.file_name.clone()))
        })
        .or_else(|| {
            base.sticker_message
                .as_option()
                .map(|m| media_parts!(m, Sticker, width: m.width, height: m.height))
        });
    let mut reference = None;
    let context = if base.conversation.is_some() {
        None
    } else if let Some(m) = base.extended_text_message.as_option() {
        m.context_info.as_option()
    } else if let Some((kind, media, media_reference, context)) = found_media {
        out.kind = kind;
        out.media = Some(media);
        reference = media_reference;
        context
    } else if let Some(m) = base.location_message.as_option() {
        out.kind = MessageKind::Location;
        out.location = Some(Location {
            latitude: m.degrees_latitude.unwrap_or_default(),
            longitude: m.degrees_longitude.unwrap_or_default(),
            name: m.name.clone(),
            address: m.address.clone(),
        });
        m.context_info.as_option()
    } else if let Some(m) = base.contact_message.as_option() {
        out.kind = MessageKind::Contact;
        out.contacts = vec![card(m)];
        m.context_info.as_option()
    } else if let Some(m) = base.contacts_array_message.as_option() {
        out.kind = MessageKind::Contact;
        out.contacts = m.contacts.iter().map(card).collect();
        m.context_info.as_option()
    } else if let Some(m) = base.reaction_message.as_option() {
        out.kind = MessageKind::Reaction;
        out.reaction = Some(Reaction {
            target_id: m
                .key
                .as_option()
                .and_then(|key| key.id.clone())
                .unwrap_or_default(),
            emoji: m.text.clone().unwrap_or_default(),
        });
        None
    } else {
        out.kind = MessageKind::Unknown {
            whatsapp_kind: kind_name(base),
        };
        None
    };
    if let Some(context) = context {
        out.quoted_id = context.stanza_id.clone();
        out.mentions = context.mentioned_jid.clone();
    }
    (out, reference)
}

/// What a download needs; `None` when the message lacks part of it (then
/// it cannot be downloaded at all).
fn media_reference(
    kind: MessageKind,
    direct_path: &Option<String>,
    media_key: &Option<Vec<u8>>,
    file_enc_sha256: &Option<Vec<u8>>,
    file_sha256: &Option<Vec<u8>>,
    file_length: Option<u64>,
) -> Option<MediaReference> {
    Some(MediaReference {
        kind,
        direct_path: direct_path.clone()?,
        media_key: media_key.clone()?,
        file_enc_sha256: file_enc_sha256.clone()?,
        file_sha256: file_sha256.clone()?,
        file_length: file_length?,
    })
}

fn card(m: &wa::message::ContactMessage) -> ContactCard {
    ContactCard {
        display_name: m.display_name.clone(),
        vcard: m.vcard.clone(),
    }
}

/// The name of the protobuf field that carries a message lila does not
/// read, as WhatsApp's own JSON names it (`pollCreationMessage`, …), from
/// the message's serialization (field names in snake case): the first field
/// set, apart from the ones every message may carry.
fn kind_name(message: &wa::Message) -> String {
    const NOT_A_KIND: [&str; 2] = ["message_context_info", "sender_key_distribution_message"];
    serde_json::to_value(message)
        .ok()
        .and_then(|value| {
            value.as_object().and_then(|fields| {
                fields
                    .iter()
                    .find(|(name, value)| !value.is_null() && !NOT_A_KIND.contains(&name.as_str()))
                    .map(|(name, _)| lower_camel_case(name))
            })
        })
        .unwrap_or_else(|| "empty".to_owned())
}

/// `poll_creation_message_v2` as `pollCreationMessageV2`.
fn lower_camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use whatsapp_rust::Jid;
    use whatsapp_rust::buffa::MessageField;
    use whatsapp_rust::wacore::types::message::MessageSource;

    use super::*;

    const CONTACT: &str = "51900000001@s.whatsapp.net";

    fn jid(text: &str) -> Jid {
        text.parse().expect("a JID")
    }

    fn info_from(sender: &str, chat: &str, sender_alt: Option<&str>) -> MessageInfo {
        MessageInfo {
            source: MessageSource {
                chat: jid(chat),
                sender: jid(sender),
                is_group: chat.ends_with("@g.us"),
                sender_alt: sender_alt.map(jid),
                ..MessageSource::default()
            },
            id: "3EB0A1".into(),
            push_name: "Ana".into(),
            timestamp: whatsapp_rust::wacore::chrono::DateTime::from_timestamp(1_764_000_000, 0)
                .unwrap_or_default(),
            ..MessageInfo::default()
        }
    }

    fn from_contact(message: wa::Message) -> (InboundMessage, Option<MediaReference>) {
        translate(&message, &info_from(CONTACT, CONTACT, None))
    }

    fn received_of(message: wa::Message) -> Received {
        match from_contact(message).0.change {
            Change::Received(received) => *received,
            other => panic!("expected a new message, got {other:?}"),
        }
    }

    fn context(quoted: Option<&str>, mentions: &[&str]) -> MessageField<wa::ContextInfo> {
        MessageField::some(wa::ContextInfo {
            stanza_id: quoted.map(str::to_owned),
            mentioned_jid: mentions.iter().map(|m| (*m).to_owned()).collect(),
            ..Default::default()
        })
    }

    #[test]
    fn a_text_in_a_chat_says_who_sent_it_when_and_what() {
        let (message, reference) = from_contact(wa::Message {
            conversation: Some("hola".into()),
            ..Default::default()
        });
        assert_eq!(message.message_id, "3EB0A1");
        assert_eq!(message.chat, CONTACT);
        assert_eq!(message.from, CONTACT);
        assert_eq!(message.from_lid, None);
        assert_eq!(message.push_name.as_deref(), Some("Ana"));
        assert_eq!(message.timestamp_ms, 1_764_000_000_000);
        assert!(!message.is_group && !message.from_me);
        assert!(reference.is_none());
        match message.change {
            Change::Received(r) => {
                assert_eq!((r.kind.as_str(), r.text.as_deref()), ("text", Some("hola")))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_reply_in_a_group_carries_the_quoted_id_and_the_mentions() {
        let group = "120363000000000001@g.us";
        let (message, _) = translate(
            &wa::Message {
                extended_text_message: MessageField::some(wa::message::ExtendedTextMessage {
                    text: Some("see @51900000002".into()),
                    context_info: context(Some("3EB0QUOTED"), &["51900000002@s.whatsapp.net"]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &info_from("51900000001:3@s.whatsapp.net", group, None),
        );
        assert!(message.is_group);
        assert_eq!(message.chat, group);
        assert_eq!(message.from, CONTACT, "the sender, without its device");
        match message.change {
            Change::Received(r) => {
                assert_eq!(r.kind, MessageKind::Text);
                assert_eq!(r.text.as_deref(), Some("see @51900000002"));
                assert_eq!(r.quoted_id.as_deref(), Some("3EB0QUOTED"));
                assert_eq!(r.mentions, ["51900000002@s.whatsapp.net"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_image_shows_its_caption_and_file_facts_and_keeps_its_key_apart() {
        let (message, reference) = from_contact(wa::Message {
            image_message: MessageField::some(wa::message::ImageMessage {
                caption: Some("the receipt".into()),
                mimetype: Some("image/jpeg".into()),
                file_sha256: Some(vec![0xAB, 0xCD]),
                file_length: Some(2048),
                width: Some(640),
                height: Some(480),
                media_key: Some(vec![7; 32]),
                file_enc_sha256: Some(vec![9; 32]),
                direct_path: Some("/v/t62.7118-24/secret".into()),
                url: Some("https://mmg.whatsapp.net/secret".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        let Change::Received(r) = &message.change else {
            panic!("{message:?}")
        };
        assert_eq!(r.kind, MessageKind::Image);
        assert_eq!(r.text.as_deref(), Some("the receipt"));
        assert_eq!(
            r.media,
            Some(Media {
                mimetype: Some("image/jpeg".into()),
                size_bytes: Some(2048),
                sha256: Some("abcd".into()),
                width: Some(640),
                height: Some(480),
                ..Media::default()
            })
        );
        let shown = format!("{message:?}");
        assert!(
            !shown.contains("secret") && !shown.contains("mmg.whatsapp.net"),
            "{shown}"
        );
        let reference = reference.expect("a media reference");
        assert_eq!(reference.direct_path, "/v/t62.7118-24/secret");
        assert_eq!(reference.media_key, vec![7; 32]);
        assert_eq!(reference.file_length, 2048);
    }

    #[test]
    fn video_voice_note_audio_document_and_sticker_carry_their_own_facts() {
        let video = received_of(wa::Message {
            video_message: MessageField::some(wa::message::VideoMessage {
                mimetype: Some("video/mp4".into()),
                seconds: Some(12),
                caption: Some("look".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(video.kind, MessageKind::Video);
        assert_eq!(video.text.as_deref(), Some("look"));
        assert_eq!(video.media.as_ref().and_then(|m| m.seconds), Some(12));

        let voice = received_of(wa::Message {
            audio_message: MessageField::some(wa::message::AudioMessage {
                mimetype: Some("audio/ogg; codecs=opus".into()),
                seconds: Some(4),
                ptt: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(voice.kind.as_str(), "audio");
        assert!(voice.media.as_ref().is_some_and(|m| m.ptt));
        let song = received_of(wa::Message {
            audio_message: MessageField::some(wa::message::AudioMessage {
                mimetype: Some("audio/mpeg".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(song.media.as_ref().is_some_and(|m| !m.ptt));

        let document = received_of(wa::Message {
            document_message: MessageField::some(wa::message::DocumentMessage {
                mimetype: Some("application/pdf".into()),
                file_name: Some("invoice.pdf".into()),
                caption: Some("your invoice".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(document.kind, MessageKind::Document);
        assert_eq!(document.text.as_deref(), Some("your invoice"));
        assert_eq!(
            document.media.and_then(|m| m.file_name).as_deref(),
            Some("invoice.pdf")
        );

        let sticker = received_of(wa::Message {
            sticker_message: MessageField::some(wa::message::StickerMessage {
                mimetype: Some("image/webp".into()),
                width: Some(512),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(sticker.kind.as_str(), "sticker");
        assert_eq!(sticker.media.and_then(|m| m.width), Some(512));
    }

    #[test]
    fn a_document_with_a_caption_is_unwrapped() {
        let r = received_of(wa::Message {
            document_with_caption_message: MessageField::some(wa::message::FutureProofMessage {
                message: MessageField::some(wa::Message {
                    document_message: MessageField::some(wa::message::DocumentMessage {
                        file_name: Some("a.pdf".into()),
                        caption: Some("here".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        });
        assert_eq!(r.kind, MessageKind::Document);
        assert_eq!(r.text.as_deref(), Some("here"));
    }

    #[test]
    fn location_contacts_and_reactions_are_read() {
        let location = received_of(wa::Message {
            location_message: MessageField::some(wa::message::LocationMessage {
                degrees_latitude: Some(-12.05),
                degrees_longitude: Some(-77.04),
                name: Some("Lima".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(location.kind, MessageKind::Location);
        let place = location.location.expect("a location");
        assert_eq!(
            (place.latitude, place.longitude, place.name.as_deref()),
            (-12.05, -77.04, Some("Lima"))
        );

        let vcard = "BEGIN:VCARD\nVERSION:3.0\nFN:Luis\nEND:VCARD";
        let card = |name: &str| wa::message::ContactMessage {
            display_name: Some(name.into()),
            vcard: Some(vcard.into()),
            ..Default::default()
        };
        let one = received_of(wa::Message {
            contact_message: MessageField::some(card("Luis")),
            ..Default::default()
        });
        assert_eq!(one.kind, MessageKind::Contact);
        assert_eq!(one.contacts[0].display_name.as_deref(), Some("Luis"));
        assert_eq!(one.contacts[0].vcard.as_deref(), Some(vcard));
        let several = received_of(wa::Message {
            contacts_array_message: MessageField::some(wa::message::ContactsArrayMessage {
                contacts: vec![card("Luis"), card("Eva")],
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(several.kind.as_str(), "contact");
        assert_eq!(several.contacts.len(), 2);

        let reaction = received_of(wa::Message {
            reaction_message: MessageField::some(wa::message::ReactionMessage {
                key: MessageField::some(wa::MessageKey {
                    id: Some("3EB0TARGET".into()),
                    ..Default::default()
                }),
                text: Some("👍".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(reaction.kind, MessageKind::Reaction);
        assert_eq!(
            reaction.reaction,
            Some(Reaction {
                target_id: "3EB0TARGET".into(),
                emoji: "👍".into()
            })
        );
    }

    fn protocol(kind: wa::message::protocol_message::Type, edited: Option<&str>) -> wa::Message {
        wa::Message {
            protocol_message: MessageField::some(wa::message::ProtocolMessage {
                key: MessageField::some(wa::MessageKey {
                    id: Some("3EB0EARLIER".into()),
                    ..Default::default()
                }),
                r#type: Some(kind),
                edited_message: match edited {
                    Some(text) => MessageField::some(wa::Message {
                        conversation: Some(text.into()),
                        ..Default::default()
                    }),
                    None => MessageField::none(),
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn an_edit_and_a_revoke_name_the_earlier_message() {
        use wa::message::protocol_message::Type;
        assert_eq!(
            from_contact(protocol(Type::MESSAGE_EDIT, Some("fixed typo")))
                .0
                .change,
            Change::Updated {
                target_id: "3EB0EARLIER".into(),
                text: Some("fixed typo".into())
            }
        );
        assert_eq!(
            from_contact(protocol(Type::REVOKE, None)).0.change,
            Change::Revoked {
                target_id: "3EB0EARLIER".into()
            }
        );
        // Any other protocol message is not dropped either.
        match from_contact(protocol(Type::HISTORY_SYNC_NOTIFICATION, None))
            .0
            .change
        {
            Change::Received(r) => assert_eq!(
                r.kind,
                MessageKind::Unknown {
                    whatsapp_kind: "protocolMessage:HISTORY_SYNC_NOTIFICATION".into()
                }
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_ephemeral_text_is_unwrapped() {
        let r = received_of(wa::Message {
            ephemeral_message: MessageField::some(wa::message::FutureProofMessage {
                message: MessageField::some(wa::Message {
                    conversation: Some("gone in 24 h".into()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        });
        assert_eq!(
            (r.kind, r.text.as_deref()),
            (MessageKind::Text, Some("gone in 24 h"))
        );
    }

    #[test]
    fn a_kind_lila_does_not_read_is_unknown_with_its_whatsapp_name() {
        let r = received_of(wa::Message {
            poll_creation_message: MessageField::some(wa::message::PollCreationMessage {
                name: Some("lunch?".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(r.kind.as_str(), "unknown");
        assert_eq!(
            r.kind,
            MessageKind::Unknown {
                whatsapp_kind: "pollCreationMessage".into()
            }
        );
        let r = received_of(wa::Message {
            poll_creation_message_v3: MessageField::some(wa::message::PollCreationMessage {
                name: Some("lunch?".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(
            r.kind,
            MessageKind::Unknown {
                whatsapp_kind: "pollCreationMessageV3".into()
            }
        );
    }

    #[test]
    fn an_undecryptable_message_is_an_event_with_its_reason() {
        use whatsapp_rust::wacore::types::events::{DecryptFailMode, UnavailableType};
        let info = std::sync::Arc::new(info_from(CONTACT, CONTACT, None));
        let failed = UndecryptableMessage::builder()
            .info(info.clone())
            .is_unavailable(false)
            .unavailable_type(UnavailableType::Unknown)
            .decrypt_fail_mode(DecryptFailMode::Show)
            .build();
        let message = undecryptable(&failed);
        assert_eq!(
            (message.message_id.as_str(), message.from.as_str()),
            ("3EB0A1", CONTACT)
        );
        assert_eq!(
            message.change,
            Change::Undecryptable {
                reason: "it could not be decrypted".into()
            }
        );
        let hosted = UndecryptableMessage::builder()
            .info(info)
            .is_unavailable(true)
            .unavailable_type(UnavailableType::ViewOnce)
            .decrypt_fail_mode(DecryptFailMode::Hide)
            .build();
        assert_eq!(
            undecryptable(&hosted).change,
            Change::Undecryptable {
                reason: "WhatsApp delivered it without its content (viewonce)".into()
            }
        );
    }

    #[test]
    fn a_sender_addressed_by_lid_is_shown_by_phone_when_known_and_by_lid_otherwise() {
        let lid = "123456789012345@lid";
        let text = wa::Message {
            conversation: Some("hi".into()),
            ..Default::default()
        };
        let (known, _) = translate(&text, &info_from(lid, lid, Some(CONTACT)));
        assert_eq!(known.from, CONTACT);
        assert_eq!(known.from_lid.as_deref(), Some(lid));
        let (unknown, _) = translate(&text, &info_from(lid, lid, None));
        assert_eq!(unknown.from, lid);
        assert_eq!(unknown.from_lid.as_deref(), Some(lid));
        // Addressed by phone, with the LID given beside it: both.
        let (both, _) = translate(&text, &info_from(CONTACT, CONTACT, Some(lid)));
        assert_eq!(both.from, CONTACT);
        assert_eq!(both.from_lid.as_deref(), Some(lid));
    }
}
