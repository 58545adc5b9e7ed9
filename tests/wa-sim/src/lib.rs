//! `wa_sim`: a WhatsApp Web server simulator for tests and local development.
//!
//! It speaks enough of the real protocol (Noise XX/IK handshake, binary stanzas,
//! pairing, login, the post-login IQs, Signal-encrypted messages) that the real
//! `whatsapp-rust` client connects to it unmodified, with only its WebSocket URL
//! changed and `danger-skip-cert-chain-verify` enabled. A simulated phone links
//! devices when told to scan a QR code; simulated contacts receive and decrypt
//! what the client sends, and send it text, media, replies, reactions and group
//! messages (Signal- and sender-key-encrypted, queued while it is offline). Everything is driven and observed through
//! [`SimHandle`] in-process, or the same operations over HTTP under `/admin`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), wa_sim::SimError> {
//! let sim = wa_sim::Simulator::start("127.0.0.1:0".parse().unwrap()).await?;
//! // Point the client at sim.ws_url() ...
//! # Ok(()) }
//! ```

mod admin;
mod app_state;
mod connection;
mod error;
mod inbound;
mod iq;
mod media;
mod messages;
mod noise;
mod phone;
mod signal;
mod stanza;
mod world;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex as AsyncMutex;

pub use error::SimError;
pub use inbound::{ContactMessage, Content, DeviceDelivery, InboundStatus, Media};
pub use media::{LoopbackMediaHttpClient, MediaKind};
pub use world::{DeviceStatus, Group, GroupParticipant, ReceivedMessage, RemovedDevice};

use world::{ConnCommand, Contact, DeviceJid, Shared};

/// Entry point: binds the listener and starts serving.
pub struct Simulator;

impl Simulator {
    /// Serves the WebSocket at `/ws/chat` and the admin API at `/admin/...` on
    /// `addr` (use port 0 in tests and read [`SimHandle::addr`]).
    pub async fn start(addr: SocketAddr) -> Result<SimHandle, SimError> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(addr));
        let control = SimControl { shared };
        let router = admin::router(control.clone());
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            };
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!("simulator server failed: {e}");
            }
        });
        Ok(SimHandle {
            addr,
            control,
            stop: stop_tx,
            task,
        })
    }
}

/// What to seed as a group.
#[derive(Clone, Debug, Default)]
pub struct GroupSpec {
    /// The group id without `@g.us`; generated when `None`.
    pub id: Option<String>,
    pub subject: String,
    /// Participant JIDs (`user@s.whatsapp.net`); the first is the creator and an admin.
    pub participants: Vec<String>,
}

/// A running simulator. Every admin operation is available here as a method.
pub struct SimHandle {
    addr: SocketAddr,
    control: SimControl,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to give `TokioWebSocketTransportFactory::with_url`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws/chat", self.addr)
    }

    /// The base URL of the admin API.
    pub fn admin_url(&self) -> String {
        format!("http://{}/admin", self.addr)
    }

    /// An HTTP client for a whatsapp-rust client under test
    /// (`Bot::builder().with_http_client(..)`): media downloads from the
    /// simulator's address go over plain HTTP, everything else through
    /// whatsapp-rust's default (ureq) client unchanged.
    pub fn media_http_client(&self) -> LoopbackMediaHttpClient {
        LoopbackMediaHttpClient::new(
            Arc::new(whatsapp_rust::http::UreqHttpClient::new()),
            self.addr,
        )
    }

    /// A cheap, cloneable handle to the simulator's state and admin operations.
    pub fn control(&self) -> SimControl {
        self.control.clone()
    }

    /// Stops accepting connections and closes every socket.
    pub async fn shutdown(self) {
        let senders: Vec<_> = self
            .control
            .shared
            .with_world(|w| w.connections.values().map(|c| c.commands.clone()).collect());
        for s in senders {
            let _ = s.send(ConnCommand::Drop);
        }
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

impl std::ops::Deref for SimHandle {
    type Target = SimControl;

    fn deref(&self) -> &SimControl {
        &self.control
    }
}

/// The admin operations, usable from tests in-process (through [`SimHandle`],
/// which dereferences to this) and behind the HTTP admin API.
#[derive(Clone)]
pub struct SimControl {
    shared: Arc<Shared>,
}

impl SimControl {
    /// The phone scans `qr` and links the client showing it as a device of a
    /// freshly allocated phone number. Returns the new device's JID.
    pub fn scan_qr(&self, qr: &str) -> Result<String, SimError> {
        let jid = phone::scan_qr(&self.shared, qr, None)?;
        self.shared.changed();
        Ok(jid.jid())
    }

    /// Like [`scan_qr`](Self::scan_qr), as the phone with number `phone` (digits).
    pub fn scan_qr_as(&self, qr: &str, phone: &str) -> Result<String, SimError> {
        validate_phone(phone)?;
        let jid = phone::scan_qr(&self.shared, qr, Some(phone))?;
        self.shared.changed();
        Ok(jid.jid())
    }

    /// Linked devices and whether each has a live socket.
    pub fn devices(&self) -> Vec<DeviceStatus> {
        self.shared.with_world(|w| w.device_statuses())
    }

    /// Whether the device `jid` currently has a logged-in socket.
    pub fn is_connected(&self, jid: &str) -> bool {
        self.devices().iter().any(|d| d.jid == jid && d.connected)
    }

    /// Server-side unlink (the phone removed the device): the device is forgotten
    /// and its socket, if any, gets `<stream:error code="401">`.
    pub fn logout_device(&self, jid: &str) -> Result<(), SimError> {
        let device = parse_device(jid)?;
        let commands = self.shared.with_world(|w| {
            let phone = w
                .phones
                .get_mut(&device.user)
                .ok_or_else(|| SimError::NotFound(jid.to_string()))?;
            let removed = phone
                .devices
                .remove(&device.device)
                .ok_or_else(|| SimError::NotFound(jid.to_string()))?;
            Ok::<_, SimError>(
                removed
                    .connection
                    .and_then(|c| w.connections.get(&c))
                    .map(|c| c.commands.clone()),
            )
        })?;
        if let Some(commands) = commands {
            let _ = commands.send(ConnCommand::SendAndClose(stanza::stream_error_code(401)));
        }
        self.shared.changed();
        Ok(())
    }

    /// Closes the device's socket without a word, as a network failure would.
    pub fn drop_device(&self, jid: &str) -> Result<(), SimError> {
        self.command_device(jid, ConnCommand::Drop)
    }

    /// Tells the device's socket that another session replaced it
    /// (`<stream:error><conflict type="replaced"/>`).
    /// The recipient of message `id` reads it: a `type="read"` receipt goes
    /// to the device that sent it (which must be connected).
    pub fn read_message(&self, id: &str) -> Result<(), SimError> {
        let message = self
            .messages()
            .into_iter()
            .find(|m| m.id == id)
            .ok_or_else(|| SimError::NotFound(format!("no message {id} reached a contact")))?;
        let receipt = messages::receipt_for(
            &message.id,
            &message.to,
            &message.recipient_device,
            Some("read"),
        );
        self.command_device(&message.from, ConnCommand::Send(receipt))
    }

    pub fn replace_stream(&self, jid: &str) -> Result<(), SimError> {
        self.command_device(
            jid,
            ConnCommand::SendAndClose(stanza::stream_error_replaced()),
        )
    }

    fn command_device(&self, jid: &str, command: ConnCommand) -> Result<(), SimError> {
        let device = parse_device(jid)?;
        let commands = self.shared.with_world(|w| {
            let conn = w
                .device(&device)
                .ok_or_else(|| SimError::NotFound(jid.to_string()))?
                .connection
                .ok_or_else(|| SimError::NotFound(format!("{jid} is not connected")))?;
            w.connections
                .get(&conn)
                .map(|c| c.commands.clone())
                .ok_or_else(|| SimError::NotFound(format!("{jid} is not connected")))
        })?;
        commands
            .send(command)
            .map_err(|_| SimError::NotFound(format!("{jid} is not connected")))
    }

    /// The contact `from` (digits or `user@s.whatsapp.net`) sends `message`
    /// to every linked device of phone `to`, Signal-encrypted to each; a
    /// device that is offline gets it when it next logs in. Returns the
    /// message id (see [`inbound_message`](Self::inbound_message)).
    pub async fn send_from_contact(
        &self,
        from: &str,
        to: &str,
        message: ContactMessage,
    ) -> Result<String, SimError> {
        inbound::send(self, from, to, message).await
    }

    /// A contact's message by id, with whether each linked device got it,
    /// acknowledged it and sent its delivery receipt.
    pub fn inbound_message(&self, id: &str) -> Option<InboundStatus> {
        self.shared
            .with_world(|w| w.inbound.get(id).map(inbound::InboundRecord::status))
    }

    /// Every message the simulated contacts received, in arrival order
    /// (duplicates included: a test checks exactly-once itself).
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.shared.with_world(|w| w.messages.clone())
    }

    /// Messages grouped by recipient chat, each list in arrival order.
    pub fn messages_by_recipient(&self) -> BTreeMap<String, Vec<ReceivedMessage>> {
        let mut out: BTreeMap<String, Vec<ReceivedMessage>> = BTreeMap::new();
        for m in self.messages() {
            out.entry(m.to.clone()).or_default().push(m);
        }
        out
    }

    /// `remove-companion-device` requests (a client's own logout), in order.
    pub fn removed_devices(&self) -> Vec<RemovedDevice> {
        self.shared.with_world(|w| w.removed.clone())
    }

    /// How many logins (handshakes with a login payload) reached the simulator
    /// for this phone number, across all its devices.
    pub fn connection_attempts(&self, phone: &str) -> u32 {
        self.shared
            .with_world(|w| w.login_attempts.get(phone).copied().unwrap_or(0))
    }

    /// How many pre-key uploads the linked device `jid` made.
    pub fn pre_key_uploads(&self, jid: &str) -> u32 {
        let Some(device) = DeviceJid::parse(jid) else {
            return 0;
        };
        self.shared
            .with_world(|w| w.device(&device).map_or(0, |d| d.pre_key_uploads))
    }

    /// All handshakes so far, including unpaired clients asking for QR codes.
    pub fn handshakes(&self) -> u64 {
        self.shared.with_world(|w| w.handshakes)
    }

    /// Handshakes that used Noise IK (a paired client resuming with the server
    /// key it cached from an earlier XX handshake).
    pub fn ik_handshakes(&self) -> u64 {
        self.shared.with_world(|w| w.ik_handshakes)
    }

    /// Adds a simulated contact (one device with fresh Signal keys) the client can
    /// message. Returns its JID.
    pub fn add_contact(&self, phone: &str, name: &str) -> Result<String, SimError> {
        self.add_contact_with_lid(phone, name, None)
    }

    /// Like [`add_contact`](Self::add_contact), for a LID-addressed contact
    /// when `lid` (digits) is given: its messages come from `lid@lid` with
    /// `sender_pn` (1:1) or `participant_pn` (groups) naming its phone number.
    pub fn add_contact_with_lid(
        &self,
        phone: &str,
        name: &str,
        lid: Option<&str>,
    ) -> Result<String, SimError> {
        validate_phone(phone)?;
        if let Some(lid) = lid {
            validate_phone(lid)?;
        }
        let party = signal::SignalParty::generate()?;
        self.shared.with_world(|w| {
            w.contacts.insert(
                phone.to_string(),
                Contact {
                    user: phone.to_string(),
                    name: name.to_string(),
                    lid: lid.map(str::to_string),
                    devices: BTreeMap::from([(0u16, Arc::new(AsyncMutex::new(party)))]),
                },
            );
        });
        self.shared.changed();
        Ok(format!("{phone}@s.whatsapp.net"))
    }

    /// Seeded contacts as (JID, name).
    pub fn contacts(&self) -> Vec<(String, String)> {
        self.shared.with_world(|w| {
            w.contacts
                .values()
                .map(|c| (format!("{}@s.whatsapp.net", c.user), c.name.clone()))
                .collect()
        })
    }

    /// Seeds a group every client is a member of. Returns its JID.
    pub fn add_group(&self, spec: GroupSpec) -> Result<String, SimError> {
        let id = spec
            .id
            .unwrap_or_else(|| format!("1203630{:011}", rand::random::<u32>()));
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
            return Err(SimError::BadRequest(
                "a group id is digits (and dashes)".into(),
            ));
        }
        let creator = spec.participants.first().cloned().unwrap_or_default();
        let group = Group {
            id: id.clone(),
            subject: spec.subject,
            creator,
            creation: stanza::now_secs(),
            participants: spec
                .participants
                .iter()
                .enumerate()
                .map(|(i, jid)| GroupParticipant {
                    jid: jid.clone(),
                    admin: i == 0,
                })
                .collect(),
        };
        self.shared.with_world(|w| {
            w.groups.retain(|g| g.id != id);
            w.groups.push(group);
        });
        self.shared.changed();
        Ok(format!("{id}@g.us"))
    }

    pub fn groups(&self) -> Vec<Group> {
        self.shared.with_world(|w| w.groups.clone())
    }

    /// Waits until `condition` holds, re-checking whenever the simulator's state
    /// changes. Returns `false` if `timeout` passed first.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        condition: impl Fn(&SimControl) -> bool,
    ) -> bool {
        let mut changes = self.shared.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if condition(self) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return condition(self),
            }
        }
    }
}

fn validate_phone(phone: &str) -> Result<(), SimError> {
    if (5..=20).contains(&phone.len()) && phone.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(SimError::BadRequest(format!(
            "{phone:?} is not a phone number (digits only)"
        )))
    }
}

fn parse_device(jid: &str) -> Result<DeviceJid, SimError> {
    DeviceJid::parse(jid).ok_or_else(|| {
        SimError::BadRequest(format!(
            "{jid:?} is not a device JID (user:device@s.whatsapp.net)"
        ))
    })
}
