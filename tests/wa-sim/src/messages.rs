//! Serving the keys and device lists a client needs to send a message, and
//! receiving (decrypting and recording) what it sends.

use std::sync::Arc;

use tokio::sync::Mutex as AsyncMutex;
use whatsapp_rust::buffa::Message as _;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::wacore_binary::{Node, NodeRef};
use whatsapp_rust::waproto::whatsapp as wa;

use crate::connection::Session;
use crate::error::SimError;
use crate::signal::{self, PublicBundle, SignalParty};
use crate::stanza::{self, attr, iq_result};
use crate::world::{DeviceJid, ReceivedMessage, World};

/// A JID split into the parts the simulator routes on.
struct Addr {
    user: String,
    server: String,
    device: u16,
}

fn parse_addr(jid: &str) -> Option<Addr> {
    let (left, server) = jid.split_once('@')?;
    let (user, device) = match left.split_once(':') {
        Some((u, d)) => (u, d.parse().ok()?),
        None => (left, 0),
    };
    let user = user.split('.').next()?.to_string();
    Some(Addr {
        user,
        server: server.to_string(),
        device,
    })
}

/// Who a key request or a message is for.
enum Target {
    Party(Arc<AsyncMutex<SignalParty>>),
    Companion(PublicBundle),
}

/// Resolves a phone number (or a phone's LID) to its PN user.
fn pn_user(w: &World, addr: &Addr) -> String {
    if addr.server == "lid" {
        if let Some(p) = w.phones.values().find(|p| p.lid == addr.user) {
            return p.user.clone();
        }
        if let Some(c) = w
            .contacts
            .values()
            .find(|c| c.lid.as_deref() == Some(addr.user.as_str()))
        {
            return c.user.clone();
        }
    }
    addr.user.clone()
}

fn target(w: &World, addr: &Addr) -> Option<Target> {
    let user = pn_user(w, addr);
    if let Some(contact) = w.contacts.get(&user) {
        return contact
            .devices
            .get(&addr.device)
            .cloned()
            .map(Target::Party);
    }
    let phone = w.phones.get(&user)?;
    if addr.device == 0 {
        return Some(Target::Party(phone.primary.clone()));
    }
    let dev = phone.devices.get(&addr.device)?;
    let reg = &dev.registration;
    Some(Target::Companion(PublicBundle {
        registration_id: reg.registration_id,
        identity: reg.identity,
        signed_pre_key_id: reg.signed_pre_key_id,
        signed_pre_key: reg.signed_pre_key,
        signed_pre_key_signature: reg.signed_pre_key_signature.clone(),
        pre_key: dev.uploaded_pre_keys.last().copied(),
    }))
}

impl Session {
    pub(crate) async fn pre_key_bundles(&mut self, node: &NodeRef<'_>) -> Result<Node, SimError> {
        let jids: Vec<String> = node
            .get_optional_child("key")
            .map(|k| {
                k.get_children_by_tag("user")
                    .filter_map(|u| attr(u, "jid"))
                    .collect()
            })
            .unwrap_or_default();
        let mut users = Vec::new();
        for jid in jids {
            let found = parse_addr(&jid).and_then(|a| self.shared.with_world(|w| target(w, &a)));
            let children = match found {
                Some(Target::Party(party)) => Some(party.lock().await.bundle()?.to_nodes()),
                Some(Target::Companion(bundle)) => Some(bundle.to_nodes()),
                None => None,
            };
            let user = NodeBuilder::new("user").attr("jid", jid);
            users.push(match children {
                Some(c) => user.children(c).build(),
                None => user
                    .children([NodeBuilder::new("error")
                        .attrs([("code", "404"), ("text", "item-not-found")])
                        .build()])
                    .build(),
            });
        }
        Ok(iq_result(
            node,
            vec![NodeBuilder::new("list").children(users).build()],
        ))
    }

    pub(crate) fn usync(&self, node: &NodeRef<'_>) -> Node {
        let Some(usync) = node.get_optional_child("usync") else {
            return iq_result(node, vec![]);
        };
        let query: Vec<String> = usync
            .get_optional_child("query")
            .map(stanza::child_tags)
            .unwrap_or_default();
        let wants = |p: &str| query.iter().any(|q| q == p);
        let requested: Vec<(String, Option<String>)> = usync
            .get_optional_child("list")
            .map(|l| {
                l.get_children_by_tag("user")
                    .map(|u| {
                        let contact = u
                            .get_optional_child("contact")
                            .and_then(|c| c.content_as_string())
                            .map(|s| s.to_string());
                        (attr(u, "jid").unwrap_or_default(), contact)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let users: Vec<Node> = self.shared.with_world(|w| {
            requested
                .iter()
                .map(|(jid, contact)| {
                    let addr = parse_addr(jid).or_else(|| {
                        contact.as_ref().map(|c| Addr {
                            user: c.trim_start_matches('+').to_string(),
                            server: "s.whatsapp.net".into(),
                            device: 0,
                        })
                    });
                    let Some(addr) = addr else {
                        return NodeBuilder::new("user").attr("jid", jid.clone()).build();
                    };
                    let user = pn_user(w, &addr);
                    // (device id, key index) pairs; companions carry their key index.
                    let (devices, lid, known, key_index_list) =
                        if let Some(c) = w.contacts.get(&user) {
                            let d = c.devices.keys().map(|d| (*d, None)).collect::<Vec<_>>();
                            (d, c.lid.clone(), true, None)
                        } else if let Some(p) = w.phones.get(&user) {
                            let mut d = vec![(0u16, None)];
                            d.extend(
                                p.devices
                                    .values()
                                    .map(|dev| (dev.device_id, Some(dev.key_index))),
                            );
                            let list = (!p.devices.is_empty())
                                .then(|| crate::phone::signed_key_index_list(p))
                                .flatten();
                            (d, Some(p.lid.clone()), true, list)
                        } else {
                            (Vec::new(), None, false, None)
                        };
                    let mut children = Vec::new();
                    if wants("devices") {
                        let list: Vec<Node> = devices
                            .iter()
                            .map(|(d, key_index)| {
                                let b = NodeBuilder::new("device").attr("id", d.to_string());
                                match key_index {
                                    Some(k) => b.attr("key-index", k.to_string()).build(),
                                    None => b.build(),
                                }
                            })
                            .collect();
                        let device_list = NodeBuilder::new("device-list");
                        let device_list = if list.is_empty() {
                            device_list.build()
                        } else {
                            device_list.children(list).build()
                        };
                        let mut parts = vec![device_list];
                        if let Some((ts, bytes)) = &key_index_list {
                            parts.push(
                                NodeBuilder::new("key-index-list")
                                    .attr("ts", ts.to_string())
                                    .bytes(bytes.clone())
                                    .build(),
                            );
                        }
                        children.push(NodeBuilder::new("devices").children(parts).build());
                    }
                    if wants("contact") {
                        children.push(
                            NodeBuilder::new("contact")
                                .attr("type", if known { "in" } else { "out" })
                                .build(),
                        );
                    }
                    if wants("lid")
                        && let Some(lid) = lid
                    {
                        children.push(
                            NodeBuilder::new("lid")
                                .attr("val", format!("{lid}@lid"))
                                .build(),
                        );
                    }
                    let b = NodeBuilder::new("user").attr("jid", format!("{user}@s.whatsapp.net"));
                    if children.is_empty() {
                        b.build()
                    } else {
                        b.children(children).build()
                    }
                })
                .collect()
        });
        let list = NodeBuilder::new("list");
        let list = if users.is_empty() {
            list.build()
        } else {
            list.children(users).build()
        };
        iq_result(
            node,
            vec![
                NodeBuilder::new("usync")
                    .attrs([
                        ("sid", attr(usync, "sid").unwrap_or_default()),
                        ("index", "0".to_string()),
                        ("last", "true".to_string()),
                    ])
                    .children([list])
                    .build(),
            ],
        )
    }

    /// A client's outgoing `<message>`: decrypt every copy addressed to a device
    /// the simulator plays, record the ones for simulated contacts, and ack it.
    pub(crate) async fn handle_message(&mut self, node: &NodeRef<'_>) -> Result<(), SimError> {
        let id = attr(node, "id").unwrap_or_default();
        let to = attr(node, "to").unwrap_or_default();
        let Some(sender) = self.device.clone() else {
            return Ok(());
        };
        let mut copies: Vec<(String, String, Vec<u8>)> = Vec::new();
        if let Some(participants) = node.get_optional_child("participants") {
            for t in participants.get_children_by_tag("to") {
                let Some(jid) = attr(t, "jid") else { continue };
                for enc in t.get_children_by_tag("enc") {
                    if let (Some(kind), Some(bytes)) = (attr(enc, "type"), enc.content_bytes()) {
                        copies.push((jid.clone(), kind, bytes.to_vec()));
                    }
                }
            }
        }
        for enc in node.get_children_by_tag("enc") {
            if let (Some(kind), Some(bytes)) = (attr(enc, "type"), enc.content_bytes()) {
                copies.push((to.clone(), kind, bytes.to_vec()));
            }
        }
        let mut reached_contact = None;
        for (device_jid, kind, bytes) in copies {
            match self
                .receive_copy(&sender, &id, &to, &device_jid, &kind, &bytes)
                .await
            {
                Ok(true) => reached_contact = Some(device_jid),
                Ok(false) => {}
                Err(e) => tracing::warn!(%device_jid, "could not decrypt a message copy: {e}"),
            }
        }
        if let Some(ack) = stanza::ack_for(node, "message") {
            self.send(&ack).await?;
        }
        // A simulated contact's phone is always online: it confirms delivery
        // at once. The read receipt waits for `POST /admin/messages/{id}/read`.
        if let Some(device_jid) = reached_contact {
            self.send(&receipt_for(&id, &to, &device_jid, None)).await?;
        }
        Ok(())
    }

    async fn receive_copy(
        &mut self,
        sender: &DeviceJid,
        id: &str,
        to: &str,
        device_jid: &str,
        kind: &str,
        bytes: &[u8],
    ) -> Result<bool, SimError> {
        let Some(addr) = parse_addr(device_jid) else {
            return Ok(false);
        };
        let (party, is_contact) = match self.shared.with_world(|w| {
            let user = pn_user(w, &addr);
            (target(w, &addr), w.contacts.contains_key(&user))
        }) {
            (Some(Target::Party(p)), c) => (p, c),
            _ => return Ok(false),
        };
        let peer = signal::address(&sender.user, "s.whatsapp.net", sender.device);
        let plaintext = party.lock().await.decrypt(&peer, kind, bytes).await?;
        let message = wa::Message::decode_from_slice(&signal::unpad(plaintext))
            .map_err(|e| SimError::Protocol(format!("message proto: {e}")))?;
        if !is_contact {
            return Ok(false);
        }
        self.shared.with_world(|w| {
            w.messages.push(ReceivedMessage {
                id: id.to_string(),
                from: sender.jid(),
                to: to.to_string(),
                recipient_device: device_jid.to_string(),
                text: text_of(&message),
            });
        });
        self.shared.changed();
        Ok(true)
    }
}

/// The `<receipt>` a recipient's phone sends for message `id` in chat `to`:
/// a delivery receipt (no `type`) or, with `kind`, e.g. `read`. In a group the
/// contact that received it is named as `participant`.
pub(crate) fn receipt_for(id: &str, to: &str, recipient_device: &str, kind: Option<&str>) -> Node {
    let mut attrs = vec![
        ("id", id.to_string()),
        ("from", to.to_string()),
        ("t", stanza::now_secs().to_string()),
    ];
    if to.ends_with("@g.us")
        && let Some(addr) = parse_addr(recipient_device)
    {
        attrs.push(("participant", format!("{}@s.whatsapp.net", addr.user)));
    }
    if let Some(kind) = kind {
        attrs.push(("type", kind.to_string()));
    }
    NodeBuilder::new("receipt").attrs(attrs).build()
}

fn text_of(message: &wa::Message) -> Option<String> {
    if let Some(t) = &message.conversation {
        return Some(t.clone());
    }
    if let Some(ext) = message.extended_text_message.as_option()
        && let Some(t) = &ext.text
    {
        return Some(t.clone());
    }
    message
        .device_sent_message
        .as_option()
        .and_then(|d| d.message.as_option())
        .and_then(text_of)
}
