//! Simulated contacts messaging the paired devices: each message is a
//! `waproto` `Message`, Signal-encrypted from the contact's device to every
//! linked device of the phone (a `pkmsg` until the device answers, `msg`
//! after), in a `<message>` stanza as WhatsApp's server delivers one. A device
//! that is offline, or has not acknowledged a message yet, gets it (again) when
//! it next goes active, marked `offline`, before the offline marker.

use std::collections::BTreeMap;

use serde::Serialize;
use whatsapp_rust::buffa::{Message as _, MessageField};
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::waproto::whatsapp as wa;

use crate::SimControl;
use crate::error::SimError;
use crate::media::{self, MediaKind};
use crate::signal;
use crate::stanza;
use crate::world::{ConnCommand, DeviceJid, PendingDelivery, World};

/// The bytes and description of a media message.
#[derive(Clone, Debug, Default)]
pub struct Media {
    pub mimetype: String,
    pub data: Vec<u8>,
    pub caption: Option<String>,
    /// A document's file name.
    pub file_name: Option<String>,
    /// An audio message recorded as a voice note (push-to-talk).
    pub ptt: bool,
}

/// What a contact sends.
#[derive(Clone, Debug)]
pub enum Content {
    Text(String),
    Media {
        kind: MediaKind,
        media: Media,
    },
    Location {
        latitude: f64,
        longitude: f64,
        name: Option<String>,
    },
    /// A contact card.
    Contact {
        display_name: String,
        vcard: String,
    },
    /// A reaction to message `message_id` (one the device sent or a contact
    /// sent to it).
    Reaction {
        message_id: String,
        emoji: String,
    },
}

/// A message a simulated contact sends to a phone's linked devices.
#[derive(Clone, Debug)]
pub struct ContactMessage {
    pub content: Content,
    /// Reply to this message (its stanza id).
    pub quoted_id: Option<String>,
    /// Phone JIDs (`user@s.whatsapp.net`) mentioned in the text or caption.
    pub mentions: Vec<String>,
    /// Send in this group (`id@g.us`) instead of the 1:1 chat.
    pub group: Option<String>,
}

impl ContactMessage {
    pub fn new(content: Content) -> Self {
        Self {
            content,
            quoted_id: None,
            mentions: Vec::new(),
            group: None,
        }
    }

    pub fn text(text: impl Into<String>) -> Self {
        Self::new(Content::Text(text.into()))
    }

    pub fn media(kind: MediaKind, mimetype: impl Into<String>, data: Vec<u8>) -> Self {
        Self::new(Content::Media {
            kind,
            media: Media {
                mimetype: mimetype.into(),
                data,
                ..Media::default()
            },
        })
    }

    pub fn location(latitude: f64, longitude: f64, name: Option<String>) -> Self {
        Self::new(Content::Location {
            latitude,
            longitude,
            name,
        })
    }

    pub fn contact_card(display_name: impl Into<String>, vcard: impl Into<String>) -> Self {
        Self::new(Content::Contact {
            display_name: display_name.into(),
            vcard: vcard.into(),
        })
    }

    pub fn reaction(message_id: impl Into<String>, emoji: impl Into<String>) -> Self {
        Self::new(Content::Reaction {
            message_id: message_id.into(),
            emoji: emoji.into(),
        })
    }

    /// A media message's caption.
    pub fn with_caption(mut self, caption: impl Into<String>) -> Self {
        if let Content::Media { media, .. } = &mut self.content {
            media.caption = Some(caption.into());
        }
        self
    }

    /// A document's file name.
    pub fn with_file_name(mut self, name: impl Into<String>) -> Self {
        if let Content::Media { media, .. } = &mut self.content {
            media.file_name = Some(name.into());
        }
        self
    }

    /// An audio message as a voice note.
    pub fn as_voice_note(mut self) -> Self {
        if let Content::Media { media, .. } = &mut self.content {
            media.ptt = true;
        }
        self
    }

    pub fn quoting(mut self, id: impl Into<String>) -> Self {
        self.quoted_id = Some(id.into());
        self
    }

    pub fn mentioning(mut self, jids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.mentions = jids.into_iter().map(Into::into).collect();
        self
    }

    pub fn in_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }
}

/// How one linked device dealt with a contact's message.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DeviceDelivery {
    /// The linked device, `user:device@s.whatsapp.net`.
    pub jid: String,
    /// The `<enc type>`s it carried, comma-separated: `pkmsg` until the device
    /// has answered the contact (then `msg`); in a group `skmsg`, after a
    /// `pkmsg`/`msg` with the sender key the first time.
    pub enc: String,
    /// The stanza reached the device's socket (at least once).
    pub sent: bool,
    /// The device answered with `<ack class="message">`.
    pub acked: bool,
    /// The device's `<receipt>` types for it, in order (`delivery` for a
    /// receipt without a type; `inactive`, `read`, `retry`, ...).
    pub receipts: Vec<String>,
}

impl DeviceDelivery {
    fn delivered(&self) -> bool {
        self.receipts
            .iter()
            .any(|r| r != "retry" && r != "enc_rekey_retry")
    }
}

/// A contact's message and what each linked device did with it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct InboundStatus {
    pub id: String,
    /// The sending contact, `user@s.whatsapp.net`.
    pub from: String,
    /// The recipient phone, `user@s.whatsapp.net`.
    pub to: String,
    /// The chat: the contact's JID, or the group's.
    pub chat: String,
    /// The stanza's `type` (`text`, `media`, `reaction`).
    #[serde(rename = "type")]
    pub kind: String,
    pub devices: Vec<DeviceDelivery>,
    /// Every device acknowledged it (an `<ack>` or a delivery receipt).
    pub acknowledged: bool,
    /// Every device sent a delivery receipt for it.
    pub delivered: bool,
}

/// What the simulator keeps about a contact's message.
#[derive(Clone, Debug)]
pub struct InboundRecord {
    pub id: String,
    pub from: String,
    pub to: String,
    pub chat: String,
    pub kind: String,
    pub message: wa::Message,
    pub devices: BTreeMap<String, DeviceDelivery>,
}

impl InboundRecord {
    pub fn status(&self) -> InboundStatus {
        let devices: Vec<DeviceDelivery> = self.devices.values().cloned().collect();
        InboundStatus {
            id: self.id.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            chat: self.chat.clone(),
            kind: self.kind.clone(),
            acknowledged: !devices.is_empty() && devices.iter().all(|d| d.acked || d.delivered()),
            delivered: !devices.is_empty() && devices.iter().all(DeviceDelivery::delivered),
            devices,
        }
    }
}

/// `digits` or `digits@s.whatsapp.net` → digits.
fn user_of(jid_or_phone: &str) -> &str {
    jid_or_phone
        .strip_suffix("@s.whatsapp.net")
        .unwrap_or(jid_or_phone)
}

fn pn_jid(user: &str) -> String {
    format!("{user}@s.whatsapp.net")
}

/// A message the quote or reaction refers to: who sent it and what it said.
struct Referenced {
    sender: String,
    message: wa::Message,
}

fn find_referenced(w: &World, id: &str) -> Option<Referenced> {
    if let Some(r) = w.inbound.get(id) {
        let mut message = r.message.clone();
        strip_context(&mut message);
        return Some(Referenced {
            sender: r.from.clone(),
            message,
        });
    }
    let sent = w.messages.iter().find(|m| m.id == id)?;
    let sender = DeviceJid::parse(&sent.from)
        .map(|d| pn_jid(&d.user))
        .unwrap_or_else(|| sent.from.clone());
    Some(Referenced {
        sender,
        message: wa::Message {
            conversation: sent.text.clone(),
            ..Default::default()
        },
    })
}

/// A quoted message is quoted without its own quote.
fn strip_context(message: &mut wa::Message) {
    if let Some(ext) = message.extended_text_message.as_option() {
        message.conversation = ext.text.clone();
        message.extended_text_message = MessageField::none();
    }
    if let Some(m) = message.image_message.as_option_mut() {
        m.context_info = MessageField::none();
    }
    if let Some(m) = message.video_message.as_option_mut() {
        m.context_info = MessageField::none();
    }
    if let Some(m) = message.document_message.as_option_mut() {
        m.context_info = MessageField::none();
    }
    if let Some(m) = message.audio_message.as_option_mut() {
        m.context_info = MessageField::none();
    }
    if let Some(m) = message.sticker_message.as_option_mut() {
        m.context_info = MessageField::none();
    }
}

/// The stanza `type` and the `<enc mediatype>` of a message.
fn stanza_kinds(message: &wa::Message) -> (&'static str, Option<&'static str>) {
    if message.reaction_message.is_set() {
        return ("reaction", None);
    }
    if message.conversation.is_some() || message.extended_text_message.is_set() {
        return ("text", None);
    }
    let media_type = if message.image_message.is_set() {
        "image"
    } else if message.video_message.is_set() {
        "video"
    } else if let Some(audio) = message.audio_message.as_option() {
        if audio.ptt == Some(true) {
            "ptt"
        } else {
            "audio"
        }
    } else if message.document_message.is_set() {
        "document"
    } else if message.sticker_message.is_set() {
        "sticker"
    } else if message.location_message.is_set() {
        "location"
    } else {
        "vcard"
    };
    ("media", Some(media_type))
}

/// A media message of type `$ty` referring to the uploaded file `$up`, with
/// the kind's own fields after the common ones.
macro_rules! media_message {
    ($($ty:ident)::+, $up:expr, $mimetype:expr, $context:expr $(, $field:ident : $value:expr)* $(,)?) => {
        MessageField::some($($ty)::+ {
            url: Some($up.url),
            mimetype: $mimetype,
            file_sha256: Some($up.file_sha256),
            file_length: Some($up.file_length),
            media_key: Some($up.media_key),
            file_enc_sha256: Some($up.file_enc_sha256),
            direct_path: Some($up.direct_path),
            media_key_timestamp: Some($up.media_key_timestamp),
            context_info: $context,
            $($field: $value,)*
            ..Default::default()
        })
    };
}

/// Builds the `waproto` message (uploading media on the way).
fn build_message(
    control: &SimControl,
    message: &ContactMessage,
    from_jid: &str,
    chat_for_sender: &str,
    quoted: Option<Referenced>,
    reacted: Option<Referenced>,
) -> Result<wa::Message, SimError> {
    let context = if quoted.is_some() || !message.mentions.is_empty() {
        let mut context = wa::ContextInfo {
            mentioned_jid: message.mentions.clone(),
            ..Default::default()
        };
        if let (Some(id), Some(q)) = (&message.quoted_id, quoted) {
            context.stanza_id = Some(id.clone());
            context.participant = Some(q.sender);
            context.quoted_message = MessageField::some(q.message);
        }
        MessageField::some(context)
    } else {
        MessageField::none()
    };
    let mut out = wa::Message::default();
    match &message.content {
        Content::Text(text) => {
            if context.is_set() {
                out.extended_text_message = MessageField::some(wa::message::ExtendedTextMessage {
                    text: Some(text.clone()),
                    context_info: context,
                    ..Default::default()
                });
            } else {
                out.conversation = Some(text.clone());
            }
        }
        Content::Media { kind, media } => {
            if media.mimetype.is_empty() {
                return Err(SimError::BadRequest(
                    "a media message needs a mimetype".into(),
                ));
            }
            let up = media::upload(control, *kind, &media.data)?;
            let mimetype = Some(media.mimetype.clone());
            let caption = media.caption.clone();
            match kind {
                MediaKind::Image => {
                    out.image_message = media_message!(wa::message::ImageMessage, up, mimetype,
                        context, caption: caption)
                }
                MediaKind::Video => {
                    out.video_message = media_message!(wa::message::VideoMessage, up, mimetype,
                        context, caption: caption)
                }
                MediaKind::Audio => {
                    out.audio_message = media_message!(wa::message::AudioMessage, up, mimetype,
                        context, ptt: Some(media.ptt))
                }
                MediaKind::Document => {
                    out.document_message = media_message!(wa::message::DocumentMessage, up,
                        mimetype, context, caption: caption, title: media.file_name.clone(),
                        file_name: media.file_name.clone())
                }
                MediaKind::Sticker => {
                    out.sticker_message =
                        media_message!(wa::message::StickerMessage, up, mimetype, context)
                }
            }
        }
        Content::Location {
            latitude,
            longitude,
            name,
        } => {
            if !(-90.0..=90.0).contains(latitude) || !(-180.0..=180.0).contains(longitude) {
                return Err(SimError::BadRequest(
                    "latitude is within ±90 and longitude within ±180".into(),
                ));
            }
            out.location_message = MessageField::some(wa::message::LocationMessage {
                degrees_latitude: Some(*latitude),
                degrees_longitude: Some(*longitude),
                name: name.clone(),
                context_info: context,
                ..Default::default()
            });
        }
        Content::Contact {
            display_name,
            vcard,
        } => {
            out.contact_message = MessageField::some(wa::message::ContactMessage {
                display_name: Some(display_name.clone()),
                vcard: Some(vcard.clone()),
                context_info: context,
                ..Default::default()
            });
        }
        Content::Reaction { message_id, emoji } => {
            let reacted = reacted.ok_or_else(|| {
                SimError::NotFound(format!("no message {message_id} to react to"))
            })?;
            let from_me = reacted.sender == from_jid;
            out.reaction_message = MessageField::some(wa::message::ReactionMessage {
                key: MessageField::some(wa::MessageKey {
                    remote_jid: Some(chat_for_sender.to_string()),
                    from_me: Some(from_me),
                    id: Some(message_id.clone()),
                    participant: message.group.as_ref().map(|_| reacted.sender.clone()),
                }),
                text: Some(emoji.clone()),
                sender_timestamp_ms: Some(whatsapp_rust::wacore::time::now_millis()),
                ..Default::default()
            });
        }
    }
    Ok(out)
}

/// A linked device a message is encrypted to.
struct Target {
    jid: DeviceJid,
    /// The device's bundle, when the contact has no session with it yet.
    bundle: Option<signal::PublicBundle>,
    /// In a group: whether the device still needs the contact's sender key.
    needs_skdm: bool,
    skdm_key: String,
}

/// A fresh stanza id, shaped like a phone's.
fn new_message_id() -> String {
    format!("3A{}", stanza::random_token(18))
}

/// The contact `from` sends `message` to every linked device of phone `to`.
/// Returns the stanza id.
pub async fn send(
    control: &SimControl,
    from: &str,
    to: &str,
    message: ContactMessage,
) -> Result<String, SimError> {
    let shared = &control.shared;
    let contact_user = user_of(from).to_string();
    let phone_user = user_of(to).to_string();
    let from_jid = pn_jid(&contact_user);
    let to_jid = pn_jid(&phone_user);
    let group_jid = match &message.group {
        Some(g) if g.strip_suffix("@g.us").is_some_and(|id| !id.is_empty()) => Some(g.clone()),
        Some(g) => {
            return Err(SimError::BadRequest(format!(
                "group {g:?} is not a group JID (id@g.us)"
            )));
        }
        None => None,
    };
    let contact_lid =
        shared.with_world(|w| w.contacts.get(&contact_user).and_then(|c| c.lid.clone()));
    // How the device sees the sender: its LID when it has one.
    let sender_for_device = contact_lid
        .as_ref()
        .map(|lid| format!("{lid}@lid"))
        .unwrap_or_else(|| from_jid.clone());
    let chat_for_sender = group_jid.clone().unwrap_or_else(|| to_jid.clone());
    let chat_for_device = group_jid
        .clone()
        .unwrap_or_else(|| sender_for_device.clone());
    for m in &message.mentions {
        if !m.ends_with("@s.whatsapp.net") && !m.ends_with("@lid") {
            return Err(SimError::BadRequest(format!(
                "mention {m:?} is not a JID (user@s.whatsapp.net)"
            )));
        }
    }

    let (party, push_name, quoted, reacted) = shared.with_world(|w| {
        let contact = w
            .contacts
            .get(&contact_user)
            .ok_or_else(|| SimError::NotFound(format!("no contact {from}")))?;
        let party = contact
            .devices
            .get(&0)
            .cloned()
            .ok_or_else(|| SimError::NotFound(format!("contact {from} has no device")))?;
        let phone = w
            .phones
            .get(&phone_user)
            .ok_or_else(|| SimError::Conflict(format!("phone {to} has no linked device")))?;
        if phone.devices.is_empty() {
            return Err(SimError::Conflict(format!(
                "phone {to} has no linked device"
            )));
        }
        if let Some(g) = &group_jid {
            let id = g.trim_end_matches("@g.us");
            let group = w
                .groups
                .iter()
                .find(|gr| gr.id == id)
                .ok_or_else(|| SimError::NotFound(format!("no group {g}")))?;
            if !group.participants.iter().any(|p| p.jid == from_jid) {
                return Err(SimError::Conflict(format!(
                    "{from_jid} is not a participant of {g}"
                )));
            }
        }
        let quoted = match &message.quoted_id {
            Some(id) => Some(
                find_referenced(w, id)
                    .ok_or_else(|| SimError::NotFound(format!("no message {id} to quote")))?,
            ),
            None => None,
        };
        let reacted = match &message.content {
            Content::Reaction { message_id, .. } => find_referenced(w, message_id),
            _ => None,
        };
        Ok::<_, SimError>((party, contact.name.clone(), quoted, reacted))
    })?;

    let proto = build_message(
        control,
        &message,
        &from_jid,
        &chat_for_sender,
        quoted,
        reacted,
    )?;
    let (kind, media_type) = stanza_kinds(&proto);
    let plaintext = signal::pad(proto.encode_to_vec());
    let id = new_message_id();
    let t = stanza::now_secs().to_string();

    // Encrypt to each linked device, starting sessions from their bundles.
    let mut stanzas: Vec<(DeviceJid, String, Node)> = Vec::new();
    {
        let mut party = party.lock().await;
        // In a group: the sender key's distribution message (for devices that
        // do not have it yet) and the message under the sender key, once.
        let group_cipher = match &group_jid {
            Some(g) => Some((
                party.sender_key_distribution(g).await?,
                party.group_encrypt(g, &plaintext).await?,
            )),
            None => None,
        };
        let targets: Vec<Target> = shared.with_world(|w| {
            let mut targets = Vec::new();
            let Some(phone) = w.phones.get_mut(&phone_user) else {
                return targets;
            };
            for dev in phone.devices.values_mut() {
                let jid = DeviceJid {
                    user: phone_user.clone(),
                    device: dev.device_id,
                };
                let skdm_key = format!("{chat_for_device}|{from_jid}|{}", jid.jid());
                let needs_skdm = group_jid.is_some() && !w.skdm_shared.contains(&skdm_key);
                let peer = signal::address(&jid.user, "s.whatsapp.net", jid.device);
                let pairwise = group_jid.is_none() || needs_skdm;
                let bundle =
                    (pairwise && !party.has_session(&peer)).then(|| dev.bundle_for_sender());
                targets.push(Target {
                    jid,
                    bundle,
                    needs_skdm,
                    skdm_key,
                });
            }
            targets
        });
        for target in targets {
            let jid = target.jid;
            let peer = signal::address(&jid.user, "s.whatsapp.net", jid.device);
            if let Some(bundle) = target.bundle {
                party
                    .start_session(&peer, &bundle, u32::from(jid.device))
                    .await?;
            }
            let mut encs: Vec<(String, Vec<u8>, Option<&str>)> = Vec::new();
            match (&group_cipher, &group_jid) {
                (Some((skdm, skmsg)), Some(group)) => {
                    if target.needs_skdm {
                        let distribution = wa::Message {
                            sender_key_distribution_message: MessageField::some(
                                wa::message::SenderKeyDistributionMessage {
                                    group_id: Some(group.clone()),
                                    axolotl_sender_key_distribution_message: Some(skdm.clone()),
                                },
                            ),
                            ..Default::default()
                        };
                        let (enc_type, bytes) = party
                            .encrypt(&peer, &signal::pad(distribution.encode_to_vec()))
                            .await?;
                        encs.push((enc_type.to_string(), bytes, None));
                        shared.with_world(|w| w.skdm_shared.insert(target.skdm_key.clone()));
                    }
                    encs.push(("skmsg".to_string(), skmsg.clone(), media_type));
                }
                _ => {
                    let (enc_type, bytes) = party.encrypt(&peer, &plaintext).await?;
                    encs.push((enc_type.to_string(), bytes, media_type));
                }
            }
            let types: Vec<&str> = encs.iter().map(|(t, _, _)| t.as_str()).collect();
            let types = types.join(",");
            let mut attrs = vec![
                ("from", chat_for_device.clone()),
                ("id", id.clone()),
                ("t", t.clone()),
                ("type", kind.to_string()),
                ("notify", push_name.clone()),
            ];
            match (&group_jid, &contact_lid) {
                (Some(_), Some(_)) => {
                    attrs.push(("participant", sender_for_device.clone()));
                    attrs.push(("participant_pn", from_jid.clone()));
                    attrs.push(("addressing_mode", "lid".to_string()));
                }
                (Some(_), None) => {
                    attrs.push(("participant", from_jid.clone()));
                    attrs.push(("addressing_mode", "pn".to_string()));
                }
                (None, Some(_)) => attrs.push(("sender_pn", from_jid.clone())),
                (None, None) => {}
            }
            let node = NodeBuilder::new("message")
                .attrs(attrs)
                .children(encs.into_iter().map(|(enc_type, bytes, media_type)| {
                    let mut enc_attrs = vec![("v", "2".to_string()), ("type", enc_type)];
                    if let Some(mt) = media_type {
                        enc_attrs.push(("mediatype", mt.to_string()));
                    }
                    NodeBuilder::new("enc")
                        .attrs(enc_attrs)
                        .bytes(bytes)
                        .build()
                }))
                .build();
            stanzas.push((jid, types, node));
        }
    }

    // Queue for each device until it acknowledges; send now to active ones.
    let live = shared.with_world(|w| {
        let mut devices = BTreeMap::new();
        let mut live = Vec::new();
        for (jid, enc, node) in &stanzas {
            devices.insert(
                jid.jid(),
                DeviceDelivery {
                    jid: jid.jid(),
                    enc: enc.clone(),
                    ..Default::default()
                },
            );
            let connection = w.device(jid).and_then(|d| d.connection);
            if let Some(dev) = w.device_mut(jid) {
                dev.pending.push(PendingDelivery {
                    id: id.clone(),
                    node: node.clone(),
                });
            }
            if let Some(conn) = connection.and_then(|c| w.connections.get(&c))
                && conn.active
            {
                live.push((conn.commands.clone(), node.clone()));
            }
        }
        w.inbound.insert(
            id.clone(),
            InboundRecord {
                id: id.clone(),
                from: from_jid.clone(),
                to: to_jid.clone(),
                chat: chat_for_device.clone(),
                kind: kind.to_string(),
                message: proto,
                devices,
            },
        );
        live
    });
    for (commands, node) in live {
        // A closed socket keeps the message queued for the next login.
        let _ = commands.send(ConnCommand::Deliver {
            id: id.clone(),
            node,
        });
    }
    shared.changed();
    Ok(id)
}

/// The device `device` sent a `<receipt>` (`kind`: its type, `delivery` when
/// it has none) or an `<ack>` (`kind` `None`) for these message ids.
pub fn record_answer(w: &mut World, device: &DeviceJid, ids: &[String], kind: Option<&str>) {
    let jid = device.jid();
    let mut settled = Vec::new();
    for id in ids {
        let Some(record) = w.inbound.get_mut(id) else {
            continue;
        };
        let Some(delivery) = record.devices.get_mut(&jid) else {
            continue;
        };
        match kind {
            None => {
                delivery.acked = true;
                settled.push(id.clone());
            }
            Some(k) => {
                delivery.receipts.push(k.to_string());
                if k != "retry" && k != "enc_rekey_retry" {
                    settled.push(id.clone());
                }
            }
        }
    }
    if let Some(dev) = w.device_mut(device) {
        dev.pending.retain(|p| !settled.contains(&p.id));
    }
}

/// The stanza went out on the device's socket.
pub fn record_sent(w: &mut World, device: &DeviceJid, id: &str) {
    if let Some(d) = w
        .inbound
        .get_mut(id)
        .and_then(|r| r.devices.get_mut(&device.jid()))
    {
        d.sent = true;
    }
}
