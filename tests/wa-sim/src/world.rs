//! The simulator's model of the WhatsApp world: phones and their linked devices,
//! contacts, groups, live connections, and what the simulator recorded.
//!
//! Everything here is plain data guarded by one mutex in `Shared`; nothing holds
//! that lock across an `.await`. Signal parties have their own async mutexes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{Mutex as AsyncMutex, mpsc};
use whatsapp_rust::wacore::libsignal::protocol::KeyPair;
use whatsapp_rust::wacore_binary::Node;

use crate::error::SimError;
use crate::inbound::InboundRecord;
use crate::noise::ServerIdentity;
use crate::signal::{PublicBundle, SignalParty};

pub type ConnId = u64;

/// What the rest of the simulator can ask a connection task to do.
#[derive(Debug)]
pub enum ConnCommand {
    /// Encrypt and send a node.
    Send(Node),
    /// Send a node (a `<stream:error>` or `<failure>`), then close the socket.
    SendAndClose(Node),
    /// Close the socket without a word, as a network failure would.
    Drop,
    /// Send a contact's message (queued for the device until it acknowledges
    /// it) and note that it went out.
    Deliver { id: String, node: Node },
}

/// A live socket, and what we know about who is on the other end.
pub struct Connection {
    pub commands: mpsc::UnboundedSender<ConnCommand>,
    /// Set once the socket logged in as a linked device.
    pub device: Option<DeviceJid>,
    /// Set while the socket is an unpaired client showing QR codes.
    pub registration: Option<Registration>,
    /// Set after the phone sent `pair-success`, until the client signs it.
    pub pending_link: Option<PendingLink>,
    /// Set once the device went active and got its offline queue: from then on
    /// contacts' messages go to the socket as they are sent.
    pub active: bool,
}

/// The keys an unpaired client sends in its registration payload.
#[derive(Clone, Debug)]
pub struct Registration {
    pub noise_static: [u8; 32],
    pub identity: [u8; 32],
    pub registration_id: u32,
    pub signed_pre_key_id: u32,
    pub signed_pre_key: [u8; 32],
    pub signed_pre_key_signature: Vec<u8>,
    pub refs: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct PendingLink {
    pub phone: String,
    pub device_id: u16,
    pub key_index: u32,
    pub request_id: String,
}

/// `user:device`, the identity of a linked companion device.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceJid {
    pub user: String,
    pub device: u16,
}

impl DeviceJid {
    pub fn jid(&self) -> String {
        format!("{}:{}@s.whatsapp.net", self.user, self.device)
    }

    /// Parses `user:device@s.whatsapp.net` (or `user.0:device@...`).
    pub fn parse(s: &str) -> Option<Self> {
        let (left, server) = s.split_once('@')?;
        if server != "s.whatsapp.net" {
            return None;
        }
        let (user, device) = left.split_once(':')?;
        let user = user.split('.').next()?.to_string();
        if user.is_empty() || !user.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Self {
            user,
            device: device.parse().ok()?,
        })
    }
}

/// A companion device linked to a simulated phone.
pub struct LinkedDevice {
    pub device_id: u16,
    pub key_index: u32,
    pub registration: Registration,
    pub connection: Option<ConnId>,
    /// Pre-keys the client uploaded (`id`, public key).
    pub uploaded_pre_keys: Vec<(u32, [u8; 32])>,
    /// How many pre-key uploads the client made (each a batch).
    pub pre_key_uploads: u32,
    /// Whether the phone already shared its app-state key with this device.
    pub app_state_key_shared: bool,
    /// One-time pre-keys already handed to a sender (each is used once).
    pub handed_out_pre_keys: HashSet<u32>,
    /// Contacts' messages the device has not acknowledged yet, oldest first:
    /// what the server redelivers when the device comes back.
    pub pending: Vec<PendingDelivery>,
}

impl LinkedDevice {
    /// A one-time pre-key no sender has used yet, marked as used.
    pub fn take_pre_key(&mut self) -> Option<(u32, [u8; 32])> {
        let key = self
            .uploaded_pre_keys
            .iter()
            .find(|(id, _)| !self.handed_out_pre_keys.contains(id))
            .copied()?;
        self.handed_out_pre_keys.insert(key.0);
        Some(key)
    }

    /// The public keys a sender starts a session from, with a fresh one-time
    /// pre-key when one is left.
    pub fn bundle_for_sender(&mut self) -> PublicBundle {
        let pre_key = self.take_pre_key();
        let reg = &self.registration;
        PublicBundle {
            registration_id: reg.registration_id,
            identity: reg.identity,
            signed_pre_key_id: reg.signed_pre_key_id,
            signed_pre_key: reg.signed_pre_key,
            signed_pre_key_signature: reg.signed_pre_key_signature.clone(),
            pre_key,
        }
    }
}

/// A message stanza waiting for a device's acknowledgement.
#[derive(Clone, Debug)]
pub struct PendingDelivery {
    pub id: String,
    pub node: Node,
}

/// A simulated primary phone.
pub struct Phone {
    pub user: String,
    pub lid: String,
    pub push_name: String,
    pub account_key: KeyPair,
    pub primary: Arc<AsyncMutex<SignalParty>>,
    pub next_device_id: u16,
    pub next_key_index: u32,
    pub devices: BTreeMap<u16, LinkedDevice>,
    pub app_state_key_id: Vec<u8>,
    pub app_state_key: [u8; 32],
}

impl Phone {
    pub fn new(user: String, lid: String) -> Result<Self, SimError> {
        let account_key = KeyPair::generate(&mut rand::rng());
        let primary = SignalParty::new(account_key.clone())?;
        let mut app_state_key_id = vec![0u8; 6];
        app_state_key_id[2..].copy_from_slice(&rand::random::<u32>().to_be_bytes());
        Ok(Self {
            push_name: format!("Sim {user}"),
            user,
            lid,
            account_key,
            primary: Arc::new(AsyncMutex::new(primary)),
            next_device_id: 1,
            next_key_index: 1,
            devices: BTreeMap::new(),
            app_state_key_id,
            app_state_key: rand::random(),
        })
    }
}

/// A simulated contact the client can message.
pub struct Contact {
    pub user: String,
    pub name: String,
    /// The contact's LID (digits), when it is LID-addressed: its messages
    /// come from `lid@lid` with `sender_pn`/`participant_pn`.
    pub lid: Option<String>,
    pub devices: BTreeMap<u16, Arc<AsyncMutex<SignalParty>>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct GroupParticipant {
    pub jid: String,
    pub admin: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Group {
    /// Without the `@g.us` suffix.
    pub id: String,
    pub subject: String,
    pub creator: String,
    pub creation: u64,
    pub participants: Vec<GroupParticipant>,
}

/// A message the simulator received and decrypted for a simulated recipient.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The stanza id the client chose.
    pub id: String,
    /// The sending device, `user:device@s.whatsapp.net`.
    pub from: String,
    /// The recipient chat, `user@s.whatsapp.net` (or a group JID).
    pub to: String,
    /// The recipient device that decrypted it.
    pub recipient_device: String,
    /// The text, when the message carried one.
    pub text: Option<String>,
}

/// A `remove-companion-device` request the simulator honoured.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RemovedDevice {
    /// The device that asked (the client's own JID).
    pub requested_by: String,
    /// The JID named in the request.
    pub jid: String,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DeviceStatus {
    pub jid: String,
    pub phone: String,
    pub device_id: u16,
    pub connected: bool,
    pub connection_attempts: u32,
}

#[derive(Default)]
pub struct World {
    pub next_conn_id: ConnId,
    pub connections: HashMap<ConnId, Connection>,
    /// QR ref → the unpaired connection showing it.
    pub qr_refs: HashMap<String, ConnId>,
    pub phones: BTreeMap<String, Phone>,
    pub contacts: BTreeMap<String, Contact>,
    pub groups: Vec<Group>,
    pub messages: Vec<ReceivedMessage>,
    /// Messages contacts sent to linked devices, by stanza id.
    pub inbound: BTreeMap<String, InboundRecord>,
    /// Encrypted media files served at their direct path.
    pub media: HashMap<String, Vec<u8>>,
    /// `group|contact|device` for each device a contact's sender key reached.
    pub skdm_shared: HashSet<String>,
    /// The `auth` token handed out in `media_conn`.
    pub media_auth: String,
    pub removed: Vec<RemovedDevice>,
    /// Login attempts (handshakes carrying a login payload), per phone number.
    pub login_attempts: BTreeMap<String, u32>,
    /// Login attempts per device JID.
    pub device_attempts: BTreeMap<String, u32>,
    /// Every handshake, paired or not.
    pub handshakes: u64,
    /// Handshakes that resumed with Noise IK (a paired client's cached server key).
    pub ik_handshakes: u64,
    pub next_phone: u64,
}

impl World {
    pub fn device(&self, jid: &DeviceJid) -> Option<&LinkedDevice> {
        self.phones.get(&jid.user)?.devices.get(&jid.device)
    }

    pub fn device_mut(&mut self, jid: &DeviceJid) -> Option<&mut LinkedDevice> {
        self.phones.get_mut(&jid.user)?.devices.get_mut(&jid.device)
    }

    pub fn device_statuses(&self) -> Vec<DeviceStatus> {
        let mut out = Vec::new();
        for phone in self.phones.values() {
            for device in phone.devices.values() {
                let jid = DeviceJid {
                    user: phone.user.clone(),
                    device: device.device_id,
                };
                out.push(DeviceStatus {
                    connection_attempts: self.device_attempts.get(&jid.jid()).copied().unwrap_or(0),
                    jid: jid.jid(),
                    phone: phone.user.clone(),
                    device_id: device.device_id,
                    connected: device.connection.is_some(),
                });
            }
        }
        out
    }

    /// Allocates a fresh simulated phone number.
    pub fn fresh_phone_number(&mut self) -> String {
        self.next_phone += 1;
        format!("1555{:07}", self.next_phone)
    }

    pub fn ensure_phone(&mut self, user: &str) -> Result<&mut Phone, SimError> {
        if !self.phones.contains_key(user) {
            let lid = format!("{}", 100_000_000_000_000u64 + rand::random::<u32>() as u64);
            self.phones
                .insert(user.to_string(), Phone::new(user.to_string(), lid)?);
        }
        self.phones
            .get_mut(user)
            .ok_or_else(|| SimError::NotFound(user.to_string()))
    }
}

/// Everything a connection task or the admin API shares.
pub struct Shared {
    pub identity: ServerIdentity,
    /// Where the simulator listens (its media host, too).
    pub addr: SocketAddr,
    pub world: std::sync::Mutex<World>,
    /// Bumped on every observable change so tests can wait instead of sleeping.
    pub changes: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            identity: ServerIdentity::generate(),
            addr,
            world: std::sync::Mutex::new(World {
                media_auth: crate::stanza::random_token(32),
                ..World::default()
            }),
            changes: tokio::sync::watch::channel(0).0,
        }
    }

    /// Runs `f` with the world locked. A poisoned lock is recovered: the data is
    /// simple enough that a panic elsewhere never leaves it half-updated in a way
    /// that matters for a test peer.
    pub fn with_world<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        let mut guard = self
            .world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }

    pub fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::DeviceJid;

    fn check(input: &str, expected: Option<(&str, u16)>) {
        let parsed = DeviceJid::parse(input).map(|d| (d.user, d.device));
        assert_eq!(parsed, expected.map(|(u, d)| (u.to_string(), d)), "{input}");
    }

    #[test]
    fn device_jids_parse() {
        check("15550001111:3@s.whatsapp.net", Some(("15550001111", 3)));
        check("15550001111.0:3@s.whatsapp.net", Some(("15550001111", 3)));
        check("15550001111@s.whatsapp.net", None);
        check("15550001111:3@lid", None);
        check("../x:3@s.whatsapp.net", None);
        check("1555:x@s.whatsapp.net", None);
    }
}
