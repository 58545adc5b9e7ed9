//! Answers to the `<iq>` requests a client sends, by namespace.
//!
//! The ones a client waits on before `Connected` (passive/active, pre-keys,
//! critical app-state collections) get real answers; the rest an empty result,
//! which the client logs and moves past.

use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::wacore_binary::{Node, NodeRef};

use crate::connection::{Flow, Session};
use crate::error::SimError;
use crate::stanza::{self, attr, iq_error, iq_result};
use crate::world::{DeviceJid, RemovedDevice};
use crate::{app_state, phone};

impl Session {
    pub(crate) async fn handle_iq(&mut self, node: &NodeRef<'_>) -> Result<Flow, SimError> {
        let kind = attr(node, "type").unwrap_or_default();
        if kind == "result" || kind == "error" {
            return self.handle_iq_answer(node).await;
        }
        let xmlns = attr(node, "xmlns").unwrap_or_default();
        let first = node
            .children()
            .and_then(|c| c.first())
            .map(|c| c.tag.to_string())
            .unwrap_or_default();
        match (xmlns.as_str(), first.as_str()) {
            ("passive", "active") => {
                let answer = iq_result(node, vec![]);
                self.send(&answer).await?;
                self.deliver_offline_queue().await?;
                Ok(Flow::Continue)
            }
            ("encrypt", "key") => {
                let answer = self.pre_key_bundles(node).await?;
                self.reply(answer).await
            }
            ("encrypt", "count") => {
                let count = self.uploaded_pre_key_count();
                self.reply(iq_result(
                    node,
                    vec![
                        NodeBuilder::new("count")
                            .attr("value", count.to_string())
                            .build(),
                    ],
                ))
                .await
            }
            ("encrypt", "digest") => {
                let answer = self.key_bundle_digest(node);
                self.reply(answer).await
            }
            ("encrypt", _) => {
                self.record_pre_key_upload(node);
                self.reply(iq_result(node, vec![])).await
            }
            ("usync", _) => {
                let answer = self.usync(node);
                self.reply(answer).await
            }
            ("md", "remove-companion-device") => self.remove_companion_device(node).await,
            ("md", "link_code_companion_reg") => {
                let answer = iq_result(
                    node,
                    vec![
                        NodeBuilder::new("link_code_companion_reg")
                            .children([NodeBuilder::new("link_code_pairing_ref")
                                .bytes(stanza::random_token(16).into_bytes())
                                .build()])
                            .build(),
                    ],
                );
                self.reply(answer).await
            }
            ("w:m", "media_conn") => {
                let auth = self.shared.with_world(|w| w.media_auth.clone());
                let conn = crate::media::media_conn(self.shared.addr, &auth);
                self.reply(iq_result(node, vec![conn])).await
            }
            ("w:sync:app:state", _) => {
                let answer = self.app_state_sync(node);
                self.reply(answer).await
            }
            ("w:g2", "participating") => {
                let answer = self.participating_groups(node);
                self.reply(answer).await
            }
            // WhatsApp Web asks for its A/B props under `abt`.
            ("w", "props") | ("abt", "props") => {
                let props = NodeBuilder::new("props")
                    .attrs([("protocol", "2"), ("hash", "sim")])
                    .build();
                self.reply(iq_result(node, vec![props])).await
            }
            ("privacy", "privacy") => {
                let privacy = NodeBuilder::new("privacy")
                    .children(
                        [
                            "last",
                            "online",
                            "profile",
                            "status",
                            "readreceipts",
                            "groupadd",
                        ]
                        .into_iter()
                        .map(|name| {
                            NodeBuilder::new("category")
                                .attrs([("name", name), ("value", "all")])
                                .build()
                        }),
                    )
                    .build();
                self.reply(iq_result(node, vec![privacy])).await
            }
            _ => self.reply(iq_result(node, vec![])).await,
        }
    }

    /// The client's answers to our own IQs: the pair-device acknowledgement and,
    /// after `pair-success`, its counter-signed device identity.
    async fn handle_iq_answer(&mut self, node: &NodeRef<'_>) -> Result<Flow, SimError> {
        let Some(sign) = node.get_optional_child("pair-device-sign") else {
            return Ok(Flow::Continue);
        };
        let identity = sign
            .get_optional_child("device-identity")
            .and_then(|n| n.content_bytes());
        let answer_id = attr(node, "id");
        match phone::finish_link(&self.shared, self.conn_id, answer_id.as_deref(), identity) {
            Ok(restart) => {
                self.shared.changed();
                self.send(&restart).await?;
                Ok(Flow::Close)
            }
            Err(e) => {
                tracing::warn!("pairing failed: {e}");
                Ok(Flow::Continue)
            }
        }
    }

    /// What a real server holds back until the client goes active: the
    /// phone's app-state key share for a fresh companion, then contacts'
    /// messages the device has not acknowledged (marked `offline`), then the
    /// end marker. From here on contacts' messages go out as they are sent.
    async fn deliver_offline_queue(&mut self) -> Result<(), SimError> {
        let mut count = 0;
        if let Some(jid) = self.device.clone() {
            match phone::app_state_key_share(&self.shared, &jid).await {
                Ok(Some(message)) => {
                    self.send(&message).await?;
                    count += 1;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("could not share the app-state key: {e}"),
            }
            let conn_id = self.conn_id;
            let pending = self.shared.with_world(|w| {
                if let Some(conn) = w.connections.get_mut(&conn_id) {
                    conn.active = true;
                }
                w.device(&jid)
                    .map(|d| d.pending.clone())
                    .unwrap_or_default()
            });
            for p in pending {
                let mut node = p.node;
                node.attrs.insert("offline", "1");
                self.deliver(&p.id, &node).await?;
                count += 1;
            }
        }
        let end = NodeBuilder::new("ib")
            .attr("from", "s.whatsapp.net")
            .children([NodeBuilder::new("offline")
                .attr("count", count.to_string())
                .build()])
            .build();
        self.send(&end).await
    }

    /// The digest of the key bundle the server holds for this device, as
    /// the client checks it at every login. A device that never uploaded
    /// keys gets 404, which makes the client upload them (and only then):
    /// a server without the bundle is the one case WhatsApp asks for it again.
    fn key_bundle_digest(&self, node: &NodeRef<'_>) -> Node {
        let Some(jid) = &self.device else {
            return iq_error(node, 404, "item-not-found");
        };
        let bundle = self.shared.with_world(|w| {
            w.device(jid)
                .map(|d| (d.registration.clone(), d.uploaded_pre_keys.clone()))
        });
        let Some((registration, keys)) = bundle.filter(|(_, keys)| !keys.is_empty()) else {
            return iq_error(node, 404, "item-not-found");
        };
        let public_keys: Vec<&[u8]> = keys.iter().map(|(_, key)| key.as_slice()).collect();
        let hash = whatsapp_rust::wacore::prekeys::compute_key_bundle_digest(
            &registration.identity,
            &registration.signed_pre_key,
            &registration.signed_pre_key_signature,
            &public_keys,
        );
        let id3 = |id: u32| id.to_be_bytes()[1..].to_vec();
        let digest = NodeBuilder::new("digest")
            .children([
                NodeBuilder::new("registration")
                    .bytes(registration.registration_id.to_be_bytes().to_vec())
                    .build(),
                NodeBuilder::new("type").bytes(vec![5u8]).build(),
                NodeBuilder::new("identity")
                    .bytes(registration.identity.to_vec())
                    .build(),
                NodeBuilder::new("skey")
                    .children([
                        NodeBuilder::new("id")
                            .bytes(id3(registration.signed_pre_key_id))
                            .build(),
                        NodeBuilder::new("value")
                            .bytes(registration.signed_pre_key.to_vec())
                            .build(),
                        NodeBuilder::new("signature")
                            .bytes(registration.signed_pre_key_signature.clone())
                            .build(),
                    ])
                    .build(),
                NodeBuilder::new("list")
                    .children(
                        keys.iter()
                            .map(|(id, _)| NodeBuilder::new("id").bytes(id3(*id)).build()),
                    )
                    .build(),
                NodeBuilder::new("hash").bytes(hash).build(),
            ])
            .build();
        iq_result(node, vec![digest])
    }

    fn uploaded_pre_key_count(&self) -> usize {
        let Some(jid) = &self.device else { return 0 };
        self.shared
            .with_world(|w| w.device(jid).map_or(0, |d| d.uploaded_pre_keys.len()))
    }

    fn record_pre_key_upload(&self, node: &NodeRef<'_>) {
        let Some(jid) = &self.device else { return };
        let Some(list) = node.get_optional_child("list") else {
            return;
        };
        let mut keys = Vec::new();
        for key in list.get_children_by_tag("key") {
            let id = key
                .get_optional_child("id")
                .and_then(|n| n.content_bytes())
                .map(|b| b.iter().fold(0u32, |acc, x| (acc << 8) | u32::from(*x)));
            let value = key
                .get_optional_child("value")
                .and_then(|n| n.content_bytes())
                .and_then(|b| <[u8; 32]>::try_from(b).ok());
            if let (Some(id), Some(value)) = (id, value) {
                keys.push((id, value));
            }
        }
        self.shared.with_world(|w| {
            if let Some(dev) = w.device_mut(jid) {
                dev.uploaded_pre_keys.extend(keys);
                dev.pre_key_uploads += 1;
            }
        });
    }

    async fn remove_companion_device(&mut self, node: &NodeRef<'_>) -> Result<Flow, SimError> {
        let target = node
            .get_optional_child("remove-companion-device")
            .map(|n| (attr(n, "jid"), attr(n, "reason")));
        let (jid, reason) = target.unwrap_or((None, None));
        let jid = jid.unwrap_or_default();
        let requested_by = self.device.as_ref().map(DeviceJid::jid).unwrap_or_default();
        let unlinked = DeviceJid::parse(&jid);
        self.shared.with_world(|w| {
            w.removed.push(RemovedDevice {
                requested_by,
                jid: jid.clone(),
                reason,
            });
            if let Some(d) = &unlinked
                && let Some(phone) = w.phones.get_mut(&d.user)
            {
                phone.devices.remove(&d.device);
            }
        });
        self.shared.changed();
        self.reply(iq_result(node, vec![])).await
    }

    fn participating_groups(&self, node: &NodeRef<'_>) -> Node {
        let groups = self.shared.with_world(|w| w.groups.clone());
        let group_nodes: Vec<Node> = groups
            .iter()
            .map(|g| {
                let participants: Vec<Node> = g
                    .participants
                    .iter()
                    .map(|p| {
                        let mut b = NodeBuilder::new("participant").attr("jid", p.jid.clone());
                        if p.admin {
                            b = b.attr("type", "admin");
                        }
                        b.build()
                    })
                    .collect();
                NodeBuilder::new("group")
                    .attrs([
                        ("id", g.id.clone()),
                        ("subject", g.subject.clone()),
                        ("creator", g.creator.clone()),
                        ("creation", g.creation.to_string()),
                        ("s_t", g.creation.to_string()),
                        ("s_o", g.creator.clone()),
                        ("size", g.participants.len().to_string()),
                    ])
                    .children(participants)
                    .build()
            })
            .collect();
        let container = NodeBuilder::new("groups");
        let container = if group_nodes.is_empty() {
            container.build()
        } else {
            container.children(group_nodes).build()
        };
        iq_result(node, vec![container])
    }
}

impl Session {
    /// Collections the client syncs from version 0 get the phone's first patch
    /// (push name, address book) when the phone has shared its key with this
    /// device; everything else is answered as empty and up to date.
    fn app_state_sync(&self, node: &NodeRef<'_>) -> Node {
        let requested: Vec<(String, u64)> = node
            .get_optional_child("sync")
            .map(|sync| {
                sync.get_children_by_tag("collection")
                    .filter_map(|c| {
                        let name = attr(c, "name")?;
                        let version = attr(c, "version").and_then(|v| v.parse().ok()).unwrap_or(0);
                        Some((name, version))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let collections: Vec<Node> = requested
            .into_iter()
            .map(|(name, version)| {
                let patch = if version == 0 {
                    self.first_patch_for(&name)
                } else {
                    None
                };
                match patch {
                    Some(bytes) => NodeBuilder::new("collection")
                        .attrs([("name", name), ("version", "1".to_string())])
                        .children([NodeBuilder::new("patches")
                            .children([NodeBuilder::new("patch").bytes(bytes).build()])
                            .build()])
                        .build(),
                    None => NodeBuilder::new("collection")
                        .attrs([("name", name), ("version", version.to_string())])
                        .build(),
                }
            })
            .collect();
        let sync = NodeBuilder::new("sync");
        let sync = if collections.is_empty() {
            sync.build()
        } else {
            sync.children(collections).build()
        };
        iq_result(node, vec![sync])
    }

    fn first_patch_for(&self, collection: &str) -> Option<Vec<u8>> {
        let jid = self.device.as_ref()?;
        let (key_id, key, mutations) = self.shared.with_world(|w| {
            let phone = w.phones.get(&jid.user)?;
            if !phone.devices.get(&jid.device)?.app_state_key_shared {
                return None;
            }
            let mutations = match collection {
                "critical_block" => vec![app_state::push_name(&phone.push_name)],
                "critical_unblock_low" => w
                    .contacts
                    .values()
                    .map(|c| app_state::contact(&format!("{}@s.whatsapp.net", c.user), &c.name))
                    .collect(),
                _ => Vec::new(),
            };
            Some((
                phone.app_state_key_id.clone(),
                phone.app_state_key,
                mutations,
            ))
        })?;
        if mutations.is_empty() {
            return None;
        }
        match app_state::first_patch(collection, &key_id, &key, &mutations) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                tracing::warn!("could not build the {collection} patch: {e}");
                None
            }
        }
    }
}
