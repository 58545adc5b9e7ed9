//! One client socket: the Noise handshake, then the encrypted stanza loop.
//!
//! Each socket is owned by one task. Other parts of the simulator (the admin API,
//! the simulated phone) reach it only through its `ConnCommand` channel, so the
//! transport counters are never shared.

use std::sync::Arc;

use axum::extract::ws::{Message as WsMessage, WebSocket};
use tokio::sync::mpsc;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::wacore_binary::marshal::{marshal, unmarshal_ref};
use whatsapp_rust::wacore_binary::util::unpack;
use whatsapp_rust::wacore_binary::{Node, NodeRef};
use whatsapp_rust::waproto::whatsapp as wa;

use crate::error::SimError;
use crate::noise::{self, Established, FrameIo, FrameReader, TransportCiphers};
use crate::world::{ConnCommand, ConnId, Connection, DeviceJid, Registration, Shared};
use crate::{inbound, stanza};

/// The WebSocket seen as a stream of Noise frames.
struct WsFrames {
    socket: WebSocket,
    reader: FrameReader,
}

impl FrameIo for WsFrames {
    async fn recv_frame(&mut self) -> Result<Vec<u8>, SimError> {
        loop {
            if let Some(frame) = self.reader.next_frame() {
                return Ok(frame);
            }
            match self.socket.recv().await {
                Some(Ok(WsMessage::Binary(data))) => self.reader.feed(&data)?,
                Some(Ok(WsMessage::Close(_))) | None => return Err(SimError::Closed),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(SimError::WebSocket(e.to_string())),
            }
        }
    }

    async fn send_frame(&mut self, payload: &[u8]) -> Result<(), SimError> {
        let framed = noise::frame(payload)?;
        self.socket
            .send(WsMessage::Binary(framed.into()))
            .await
            .map_err(|e| SimError::WebSocket(e.to_string()))
    }
}

/// Serves one accepted WebSocket until it closes.
pub async fn serve_socket(shared: Arc<Shared>, socket: WebSocket) {
    let mut frames = WsFrames {
        socket,
        reader: FrameReader::new(),
    };
    let established = match noise::accept(&mut frames, &shared.identity).await {
        Ok(e) => e,
        Err(e @ SimError::UnsupportedDictionary { .. }) => {
            // Refused cleanly: a close frame (1002, protocol error) that
            // says why, before any handshake message.
            tracing::info!("refused a client: {e}");
            let close = axum::extract::ws::CloseFrame {
                code: 1002,
                reason: e.to_string().into(),
            };
            let _ = frames.socket.send(WsMessage::Close(Some(close))).await;
            return;
        }
        Err(e) => {
            tracing::debug!("handshake failed: {e}");
            return;
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let resumed_with_ik = established.pattern == noise::HandshakeKind::Ik;
    let conn_id = shared.with_world(|w| {
        w.handshakes += 1;
        if resumed_with_ik {
            w.ik_handshakes += 1;
        }
        w.next_conn_id += 1;
        let id = w.next_conn_id;
        w.connections.insert(
            id,
            Connection {
                commands: tx,
                device: None,
                registration: None,
                pending_link: None,
                active: false,
            },
        );
        id
    });
    shared.changed();
    let mut session = Session {
        shared: shared.clone(),
        conn_id,
        frames,
        ciphers: None,
        commands: rx,
        device: None,
    };
    if let Err(e) = session.run(established).await {
        tracing::debug!(conn_id, "connection ended: {e}");
    }
    session.unregister();
}

pub(crate) struct Session {
    pub(crate) shared: Arc<Shared>,
    pub(crate) conn_id: ConnId,
    frames: WsFrames,
    ciphers: Option<TransportCiphers>,
    commands: mpsc::UnboundedReceiver<ConnCommand>,
    /// The linked device this socket logged in as.
    pub(crate) device: Option<DeviceJid>,
}

pub(crate) enum Flow {
    Continue,
    Close,
}

impl Session {
    async fn run(&mut self, established: Established) -> Result<(), SimError> {
        let Established {
            ciphers,
            client_static,
            payload,
            pattern,
        } = established;
        self.ciphers = Some(ciphers);
        tracing::debug!(conn_id = self.conn_id, ?pattern, "handshake complete");

        if let Some(reg) = payload.device_pairing_data.as_option() {
            self.start_pairing(client_static, reg).await?;
        } else if let Flow::Close = self.login(client_static, &payload).await? {
            return Ok(());
        }

        loop {
            tokio::select! {
                frame = self.frames.recv_frame() => {
                    let frame = frame?;
                    let plaintext = self.decrypt(frame)?;
                    if let Flow::Close = self.handle_frame(&plaintext).await? {
                        return Ok(());
                    }
                }
                command = self.commands.recv() => match command {
                    Some(ConnCommand::Send(node)) => self.send(&node).await?,
                    Some(ConnCommand::Deliver { id, node }) => self.deliver(&id, &node).await?,
                    Some(ConnCommand::SendAndClose(node)) => {
                        self.send(&node).await?;
                        self.close().await;
                        return Ok(());
                    }
                    Some(ConnCommand::Drop) | None => return Ok(()),
                },
            }
        }
    }

    fn decrypt(&mut self, frame: Vec<u8>) -> Result<Vec<u8>, SimError> {
        let ciphers = self.ciphers.as_mut().ok_or(SimError::Closed)?;
        ciphers.decrypt(frame)
    }

    pub(crate) async fn send(&mut self, node: &Node) -> Result<(), SimError> {
        tracing::trace!(conn_id = self.conn_id, "-> {}", stanza::xml(node));
        let plain = marshal(node).map_err(|e| SimError::Protocol(format!("marshal: {e}")))?;
        let ciphers = self.ciphers.as_mut().ok_or(SimError::Closed)?;
        let encrypted = ciphers.encrypt(&plain)?;
        self.frames.send_frame(&encrypted).await
    }

    /// A graceful close: send the close frame, then read (and drop) whatever
    /// the client still sends until it answers with its own close. Tearing
    /// the socket down with unread input would make the kernel send a reset,
    /// and the client could lose the stanza sent just before (a
    /// `stream:error` it must see).
    async fn close(&mut self) {
        let _ = self.frames.socket.send(WsMessage::Close(None)).await;
        let drain = async {
            while let Some(Ok(message)) = self.frames.socket.recv().await {
                if matches!(message, WsMessage::Close(_)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
    }

    fn unregister(&mut self) {
        let conn_id = self.conn_id;
        self.shared.with_world(|w| {
            if let Some(conn) = w.connections.remove(&conn_id) {
                if let Some(reg) = conn.registration {
                    for r in reg.refs {
                        w.qr_refs.remove(&r);
                    }
                }
                if let Some(jid) = conn.device
                    && let Some(dev) = w.device_mut(&jid)
                    && dev.connection == Some(conn_id)
                {
                    dev.connection = None;
                }
            }
        });
        self.shared.changed();
    }

    async fn start_pairing(
        &mut self,
        client_static: [u8; 32],
        reg: &wa::client_payload::DevicePairingRegistrationData,
    ) -> Result<(), SimError> {
        let key = |b: &Option<Vec<u8>>, what: &str| -> Result<[u8; 32], SimError> {
            b.as_deref()
                .unwrap_or_default()
                .try_into()
                .map_err(|_| SimError::Protocol(format!("registration {what} is not 32 bytes")))
        };
        let be = |b: &Option<Vec<u8>>| -> u32 {
            b.as_deref()
                .unwrap_or_default()
                .iter()
                .fold(0u32, |acc, x| (acc << 8) | u32::from(*x))
        };
        let refs: Vec<String> = (0..6)
            .map(|_| format!("2@{}", stanza::random_token(24)))
            .collect();
        let registration = Registration {
            noise_static: client_static,
            identity: key(&reg.e_ident, "identity")?,
            registration_id: be(&reg.e_regid),
            signed_pre_key_id: be(&reg.e_skey_id),
            signed_pre_key: key(&reg.e_skey_val, "signed pre-key")?,
            signed_pre_key_signature: reg.e_skey_sig.clone().unwrap_or_default(),
            refs: refs.clone(),
        };
        let conn_id = self.conn_id;
        self.shared.with_world(|w| {
            for r in &refs {
                w.qr_refs.insert(r.clone(), conn_id);
            }
            if let Some(conn) = w.connections.get_mut(&conn_id) {
                conn.registration = Some(registration);
            }
        });
        self.shared.changed();
        let node = NodeBuilder::new("iq")
            .attrs([
                ("from", "s.whatsapp.net".to_string()),
                ("type", "set".to_string()),
                ("id", stanza::random_token(10)),
                ("xmlns", "md".to_string()),
            ])
            .children([NodeBuilder::new("pair-device")
                .children(
                    refs.iter()
                        .map(|r| NodeBuilder::new("ref").bytes(r.as_bytes().to_vec()).build()),
                )
                .build()])
            .build();
        self.send(&node).await
    }

    async fn login(
        &mut self,
        client_static: [u8; 32],
        payload: &wa::ClientPayload,
    ) -> Result<Flow, SimError> {
        let user = payload.username.map(|u| u.to_string()).unwrap_or_default();
        let jid = DeviceJid {
            user,
            device: payload.device.unwrap_or(0) as u16,
        };
        let conn_id = self.conn_id;
        enum Outcome {
            Unknown,
            Ok {
                lid: String,
                replaced: Option<mpsc::UnboundedSender<ConnCommand>>,
            },
        }
        let outcome = self.shared.with_world(|w| {
            *w.login_attempts.entry(jid.user.clone()).or_default() += 1;
            *w.device_attempts.entry(jid.jid()).or_default() += 1;
            let lid = match w.phones.get(&jid.user) {
                Some(p) => p.lid.clone(),
                None => return Outcome::Unknown,
            };
            let Some(dev) = w.device_mut(&jid) else {
                return Outcome::Unknown;
            };
            if dev.registration.noise_static != client_static {
                return Outcome::Unknown;
            }
            let previous = dev.connection.replace(conn_id);
            if let Some(conn) = w.connections.get_mut(&conn_id) {
                conn.device = Some(jid.clone());
            }
            let replaced = previous
                .filter(|p| *p != conn_id)
                .and_then(|p| w.connections.get(&p))
                .map(|c| c.commands.clone());
            Outcome::Ok { lid, replaced }
        });
        self.shared.changed();
        match outcome {
            Outcome::Unknown => {
                tracing::debug!(jid = %jid.jid(), "login for an unknown device: 401");
                let failure = NodeBuilder::new("failure")
                    .attrs([("reason", "401"), ("location", "sim")])
                    .build();
                self.send(&failure).await?;
                self.close().await;
                Ok(Flow::Close)
            }
            Outcome::Ok { lid, replaced } => {
                if let Some(old) = replaced {
                    let _ = old.send(ConnCommand::SendAndClose(stanza::stream_error_replaced()));
                }
                self.device = Some(jid.clone());
                let now = stanza::now_secs().to_string();
                let success = NodeBuilder::new("success")
                    .attrs([
                        ("t", now.clone()),
                        ("lid", format!("{lid}:{}@lid", jid.device)),
                        ("location", "sim".to_string()),
                        ("creation", now),
                        ("props", "1".to_string()),
                        ("abprops", "1".to_string()),
                    ])
                    .build();
                self.send(&success).await?;
                Ok(Flow::Continue)
            }
        }
    }

    async fn handle_frame(&mut self, plaintext: &[u8]) -> Result<Flow, SimError> {
        let unpacked = unpack(plaintext).map_err(|e| SimError::Protocol(format!("unpack: {e}")))?;
        let node =
            unmarshal_ref(&unpacked).map_err(|e| SimError::Protocol(format!("unmarshal: {e}")))?;
        tracing::trace!(conn_id = self.conn_id, "<- {}", stanza::xml_ref(&node));
        // Owned so that handlers may await while holding it.
        let node = node.to_owned();
        match node.tag.as_ref() {
            "iq" => self.handle_iq(&node.as_node_ref()).await,
            "message" => {
                self.handle_message(&node.as_node_ref()).await?;
                Ok(Flow::Continue)
            }
            "receipt" => {
                self.record_receipt(&node.as_node_ref());
                if let Some(ack) = stanza::ack_for(&node.as_node_ref(), "receipt") {
                    self.send(&ack).await?;
                }
                Ok(Flow::Continue)
            }
            "notification" => {
                if let Some(ack) = stanza::ack_for(&node.as_node_ref(), "notification") {
                    self.send(&ack).await?;
                }
                Ok(Flow::Continue)
            }
            "ack" => {
                let node = node.as_node_ref();
                if stanza::attr(&node, "class").as_deref() == Some("message")
                    && let (Some(device), Some(id)) = (&self.device, stanza::attr(&node, "id"))
                {
                    self.shared
                        .with_world(|w| inbound::record_answer(w, device, &[id], None));
                    self.shared.changed();
                }
                Ok(Flow::Continue)
            }
            _ => Ok(Flow::Continue),
        }
    }

    /// Sends a contact's message and notes that it reached the socket.
    pub(crate) async fn deliver(&mut self, id: &str, node: &Node) -> Result<(), SimError> {
        self.send(node).await?;
        if let Some(device) = &self.device {
            self.shared
                .with_world(|w| inbound::record_sent(w, device, id));
            self.shared.changed();
        }
        Ok(())
    }

    /// A device's receipt for contacts' messages (one id, or a `<list>` of
    /// `<item id>` after it, as aggregate offline receipts carry).
    fn record_receipt(&self, node: &NodeRef<'_>) {
        let Some(device) = &self.device else { return };
        let mut ids: Vec<String> = stanza::attr(node, "id").into_iter().collect();
        if let Some(list) = node.get_optional_child("list") {
            ids.extend(
                list.get_children_by_tag("item")
                    .filter_map(|i| stanza::attr(i, "id")),
            );
        }
        let kind = stanza::attr(node, "type").unwrap_or_else(|| "delivery".to_string());
        self.shared
            .with_world(|w| inbound::record_answer(w, device, &ids, Some(&kind)));
        self.shared.changed();
    }
}

impl Session {
    /// Sends a reply and keeps the connection open.
    pub(crate) async fn reply(&mut self, node: Node) -> Result<Flow, SimError> {
        self.send(&node).await?;
        Ok(Flow::Continue)
    }
}
