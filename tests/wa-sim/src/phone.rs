//! The simulated primary phone: scanning a QR code (ADV device identity signed with
//! the account key, HMAC'd with the QR's secret), accepting the client's
//! counter-signature, and sharing the app-state key with a new companion.

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use whatsapp_rust::buffa::{Message as _, MessageField};
use whatsapp_rust::wacore::libsignal::crypto::CryptographicMac;
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::waproto::whatsapp as wa;

use crate::error::SimError;
use crate::signal;
use crate::stanza;
use crate::world::{ConnCommand, DeviceJid, LinkedDevice, PendingLink, Shared};

const ADV_PREFIX_ACCOUNT_SIGNATURE: &[u8] = &[6, 0];
const ADV_PREFIX_KEY_INDEX_LIST: &[u8] = &[6, 2];

/// The parts of a WhatsApp Web QR string.
struct QrCode {
    pairing_ref: String,
    noise: [u8; 32],
    identity: [u8; 32],
    adv_secret: Vec<u8>,
}

/// How a phone's camera app may show a QR code's text: as a link to the
/// linked-devices screen, with the code after the `#`.
const LINKED_DEVICES_LINK: &str = "https://wa.me/settings/linked_devices#";

fn parse_qr(qr: &str) -> Result<QrCode, SimError> {
    let qr = qr.trim();
    let qr = qr.strip_prefix(LINKED_DEVICES_LINK).unwrap_or(qr);
    let parts: Vec<&str> = qr.split(',').collect();
    if parts.len() < 4 {
        return Err(SimError::BadRequest(
            "a QR code has at least 4 comma-separated parts".into(),
        ));
    }
    let decode = |s: &str, what: &str| {
        BASE64_STANDARD
            .decode(s)
            .map_err(|_| SimError::BadRequest(format!("QR {what} is not base64")))
    };
    let key = |s: &str, what: &str| -> Result<[u8; 32], SimError> {
        decode(s, what)?
            .try_into()
            .map_err(|_| SimError::BadRequest(format!("QR {what} is not 32 bytes")))
    };
    Ok(QrCode {
        pairing_ref: parts[0].to_string(),
        noise: key(parts[1], "noise key")?,
        identity: key(parts[2], "identity key")?,
        adv_secret: decode(parts[3], "adv secret")?,
    })
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Result<Vec<u8>, SimError> {
    let mut mac =
        CryptographicMac::new("HmacSha256", key).map_err(|e| SimError::Signal(e.to_string()))?;
    mac.update(data);
    Ok(mac.finalize())
}

/// The phone scans `qr`: it links the showing client as a new device of `phone`
/// (a fresh number when `None`) by sending it a signed `pair-success`.
pub fn scan_qr(shared: &Shared, qr: &str, phone: Option<&str>) -> Result<DeviceJid, SimError> {
    let code = parse_qr(qr)?;
    let (commands, node, jid) = shared.with_world(|w| {
        let conn_id = *w
            .qr_refs
            .get(&code.pairing_ref)
            .ok_or_else(|| SimError::NotFound("no connected client shows that QR code".into()))?;
        let registration = w
            .connections
            .get(&conn_id)
            .and_then(|c| c.registration.clone())
            .ok_or_else(|| SimError::NotFound("that client is no longer waiting".into()))?;
        if registration.noise_static != code.noise || registration.identity != code.identity {
            return Err(SimError::BadRequest(
                "the QR keys do not match the client showing it".into(),
            ));
        }
        let user = match phone {
            Some(p) => p.to_string(),
            None => w.fresh_phone_number(),
        };
        let phone = w.ensure_phone(&user)?;
        let device_id = phone.next_device_id;
        phone.next_device_id += 1;
        let key_index = phone.next_key_index;
        phone.next_key_index += 1;

        let details = wa::ADVDeviceIdentity {
            raw_id: Some(rand::random()),
            timestamp: Some(stanza::now_secs()),
            key_index: Some(key_index),
            account_type: Some(wa::ADVEncryptionType::E2EE),
            device_type: Some(wa::ADVEncryptionType::E2EE),
        }
        .encode_to_vec();
        let to_sign = [ADV_PREFIX_ACCOUNT_SIGNATURE, &details, &code.identity].concat();
        let account_signature = phone
            .account_key
            .private_key
            .calculate_signature(&to_sign, &mut rand::rng())
            .map_err(|e| SimError::Signal(e.to_string()))?
            .to_vec();
        let signed = wa::ADVSignedDeviceIdentity {
            details: Some(details),
            account_signature_key: Some(phone.account_key.public_key.public_key_bytes().to_vec()),
            account_signature: Some(account_signature),
            device_signature: None,
        }
        .encode_to_vec();
        let container = wa::ADVSignedDeviceIdentityHMAC {
            hmac: Some(hmac_sha256(&code.adv_secret, &signed)?),
            details: Some(signed),
            account_type: Some(wa::ADVEncryptionType::E2EE),
        }
        .encode_to_vec();

        let jid = DeviceJid {
            user: user.clone(),
            device: device_id,
        };
        let request_id = stanza::random_token(10);
        let node = NodeBuilder::new("iq")
            .attrs([
                ("from", "s.whatsapp.net".to_string()),
                ("type", "set".to_string()),
                ("id", request_id.clone()),
                ("xmlns", "md".to_string()),
                ("t", stanza::now_secs().to_string()),
            ])
            .children([NodeBuilder::new("pair-success")
                .children([
                    NodeBuilder::new("device-identity").bytes(container).build(),
                    NodeBuilder::new("device")
                        .attrs([
                            ("jid", jid.jid()),
                            ("lid", format!("{}:{}@lid", phone.lid, device_id)),
                        ])
                        .build(),
                    NodeBuilder::new("platform").attr("name", "android").build(),
                ])
                .build()])
            .build();
        let conn = w
            .connections
            .get_mut(&conn_id)
            .ok_or_else(|| SimError::NotFound("that client is no longer waiting".into()))?;
        conn.pending_link = Some(PendingLink {
            phone: user,
            device_id,
            key_index,
            request_id,
        });
        Ok((conn.commands.clone(), node, jid))
    })?;
    commands
        .send(ConnCommand::Send(node))
        .map_err(|_| SimError::NotFound("that client just disconnected".into()))?;
    Ok(jid)
}

/// The client answered `pair-success` with its counter-signed identity: the
/// device is linked. Returns the `<stream:error code="515">` to restart with.
pub fn finish_link(
    shared: &Shared,
    conn_id: u64,
    answer_id: Option<&str>,
    signed_identity: Option<&[u8]>,
) -> Result<Node, SimError> {
    shared.with_world(|w| {
        let conn = w
            .connections
            .get_mut(&conn_id)
            .ok_or_else(|| SimError::NotFound("connection".into()))?;
        let link = conn
            .pending_link
            .take()
            .ok_or_else(|| SimError::Protocol("pair-device-sign without a pair-success".into()))?;
        if answer_id != Some(link.request_id.as_str()) {
            return Err(SimError::Protocol(
                "pair-device-sign answers another request".into(),
            ));
        }
        let registration = conn.registration.take().ok_or_else(|| {
            SimError::Protocol("pair-device-sign from a registered socket".into())
        })?;
        for r in &registration.refs {
            w.qr_refs.remove(r);
        }
        let phone = w
            .phones
            .get_mut(&link.phone)
            .ok_or_else(|| SimError::NotFound(link.phone.clone()))?;
        if let Some(bytes) = signed_identity {
            let account: [u8; 32] = phone
                .account_key
                .public_key
                .public_key_bytes()
                .try_into()
                .map_err(|_| SimError::Signal("account key".into()))?;
            let verdict = whatsapp_rust::wacore::adv::validate_adv_with_identity_key(
                bytes,
                &registration.identity,
                Some(&account),
            );
            if verdict != whatsapp_rust::wacore::adv::AdvValidation::Valid {
                return Err(SimError::Protocol(format!(
                    "device signature did not verify: {verdict:?}"
                )));
            }
        }
        phone.devices.insert(
            link.device_id,
            LinkedDevice {
                device_id: link.device_id,
                key_index: link.key_index,
                registration,
                connection: None,
                uploaded_pre_keys: Vec::new(),
                pre_key_uploads: 0,
                app_state_key_shared: false,
                handed_out_pre_keys: Default::default(),
                pending: Vec::new(),
            },
        );
        Ok(stanza::stream_error_code(515))
    })
}

/// The phone's first message to a fresh companion: its app-state sync key,
/// Signal-encrypted from the primary device. Returns `None` when already shared.
pub async fn app_state_key_share(
    shared: &Shared,
    jid: &DeviceJid,
) -> Result<Option<Node>, SimError> {
    let prepared = shared.with_world(|w| {
        let phone = w.phones.get_mut(&jid.user)?;
        let device = phone.devices.get_mut(&jid.device)?;
        if device.app_state_key_shared {
            return None;
        }
        let bundle = device.bundle_for_sender();
        Some((
            phone.primary.clone(),
            bundle,
            phone.app_state_key_id.clone(),
            phone.app_state_key,
            device.key_index,
        ))
    });
    let Some((primary, bundle, key_id, key_data, key_index)) = prepared else {
        return Ok(None);
    };
    let message = wa::Message {
        protocol_message: MessageField::some(wa::message::ProtocolMessage {
            r#type: Some(wa::message::protocol_message::Type::APP_STATE_SYNC_KEY_SHARE),
            app_state_sync_key_share: MessageField::some(wa::message::AppStateSyncKeyShare {
                keys: vec![wa::message::AppStateSyncKey {
                    key_id: MessageField::some(wa::message::AppStateSyncKeyId {
                        key_id: Some(key_id),
                    }),
                    key_data: MessageField::some(wa::message::AppStateSyncKeyData {
                        key_data: Some(key_data.to_vec()),
                        fingerprint: MessageField::some(wa::message::AppStateSyncKeyFingerprint {
                            raw_id: Some(rand::random()),
                            current_index: Some(key_index),
                            device_indexes: vec![0, key_index],
                        }),
                        timestamp: Some(whatsapp_rust::wacore::time::now_millis()),
                    }),
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let peer = signal::address(&jid.user, "s.whatsapp.net", jid.device);
    let (kind, ciphertext) = {
        let mut party = primary.lock().await;
        if !party.has_session(&peer) {
            party
                .start_session(&peer, &bundle, u32::from(jid.device))
                .await?;
        }
        party
            .encrypt(&peer, &signal::pad(message.encode_to_vec()))
            .await?
    };
    shared.with_world(|w| {
        if let Some(d) = w.device_mut(jid) {
            d.app_state_key_shared = true;
        }
    });
    Ok(Some(
        NodeBuilder::new("message")
            .attrs([
                ("from", format!("{}@s.whatsapp.net", jid.user)),
                ("id", stanza::random_token(16)),
                ("type", "text".to_string()),
                ("t", stanza::now_secs().to_string()),
            ])
            .children([NodeBuilder::new("enc")
                .attrs([("v", "2"), ("type", kind)])
                .bytes(ciphertext)
                .build()])
            .build(),
    ))
}

/// The phone's signed list of valid companion key indexes (for device lists),
/// with its timestamp. `None` only if signing fails.
pub fn signed_key_index_list(phone: &crate::world::Phone) -> Option<(u64, Vec<u8>)> {
    let ts = stanza::now_secs();
    let valid: Vec<u32> = phone.devices.values().map(|d| d.key_index).collect();
    let details = wa::ADVKeyIndexList {
        raw_id: Some(1),
        timestamp: Some(ts),
        current_index: valid.iter().copied().max(),
        valid_indexes: valid,
        account_type: Some(wa::ADVEncryptionType::E2EE),
    }
    .encode_to_vec();
    let signature = phone
        .account_key
        .private_key
        .calculate_signature(
            &[ADV_PREFIX_KEY_INDEX_LIST, &details].concat(),
            &mut rand::rng(),
        )
        .ok()?
        .to_vec();
    let signed = wa::ADVSignedKeyIndexList {
        details: Some(details),
        account_signature: Some(signature),
        account_signature_key: Some(phone.account_key.public_key.public_key_bytes().to_vec()),
    }
    .encode_to_vec();
    Some((ts, signed))
}
