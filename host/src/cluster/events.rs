//! Events across the cluster: every node's `GET /api/events` carries the
//! events of every session, whichever node runs it.
//!
//! Each node relays the events its own sessions make to the others over
//! PostgreSQL's LISTEN/NOTIFY (channel `lila_events`), rendered as the
//! session's owner sees them, and publishes what the others relay on its
//! own bus as `Relayed` events: numbered by this node like its own, shown
//! to each caller as its own are (codes only to the owner), and never
//! handed to this node's plugins (the node running the session did that).
//! What is relayed while a node is not listening (it is starting, or its
//! listening connection is being re-opened) is not seen by that node's
//! streams.
//!
//! The payload is the API's JSON of the event (what `GET /api/events`
//! shows its owner), which the receiving node's stream splices in as it
//! is: `http/` renders it, and the wiring hands that rendering in as a
//! [`RenderPayload`]. On the wire it is sealed with the cluster secret
//! (`proof.rs`): encrypted, so a QR or pairing code is never in clear in
//! the database, and authenticated, so a payload forged by someone who
//! can `NOTIFY` (or replayed) is dropped and counted
//! (`lila_cluster_proofs_refused_total`).

use std::sync::Arc;

use lila_pgstore::Pool;
use lila_pgstore::notify::{self, MAX_PAYLOAD};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tracing::{Instrument, warn};

use super::proof::Proofs;
use crate::core::event::{Event, EventKind, known_event_type};
use crate::core::tenant::TenantId;
use crate::events::{EventBus, Received};
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::phone::Phone;

/// The channel the nodes relay events on.
pub const CHANNEL: &str = "lila_events";

/// One relayed event on the wire.
#[derive(Debug, Serialize, Deserialize)]
struct Relayed {
    /// The node whose session made it (a node skips its own).
    node: String,
    tenant: Option<String>,
    phone: String,
    #[serde(rename = "type")]
    event_type: String,
    /// The fields after the common ones, as the owner sees them.
    payload: serde_json::Value,
}

/// The payload of an event (the fields after the common ones) as its owner
/// sees it; `None` for one not to relay (another node's already).
pub type RenderPayload = fn(&Event) -> Option<serde_json::Value>;

/// Starts relaying: this node's events out, each payload rendered by
/// `render`, the other nodes' events in.
pub fn spawn_relay(
    node_id: String,
    pool: Pool,
    database_url: String,
    gateway: Arc<Gateway>,
    proofs: Arc<Proofs>,
    render: RenderPayload,
) -> (JoinHandle<()>, JoinHandle<()>) {
    let span = tracing::info_span!("event_relay", node_id = %node_id);
    let bus = gateway.events().clone();
    let outgoing = tokio::spawn(
        send_out(node_id.clone(), pool, bus, proofs.clone(), render).instrument(span.clone()),
    );
    let incoming = tokio::spawn(take_in(node_id, database_url, gateway, proofs).instrument(span));
    (outgoing, incoming)
}

/// Sends every event this node's sessions make to the other nodes.
async fn send_out(
    node_id: String,
    pool: Pool,
    bus: Arc<EventBus>,
    proofs: Arc<Proofs>,
    render: RenderPayload,
) {
    let mut events = bus.subscribe_live();
    while let Some(received) = events.next().await {
        let event = match received {
            Received::Event(event) => event,
            Received::Dropped(count) => {
                warn!(
                    count,
                    "the event relay fell behind; other nodes miss these events"
                );
                continue;
            }
        };
        let Some(payload) = render(&event) else {
            continue;
        };
        let wire = Relayed {
            node: node_id.clone(),
            tenant: event.tenant.as_ref().map(|t| t.as_str().to_owned()),
            phone: event.phone.as_str().to_owned(),
            event_type: event.kind.type_name().to_owned(),
            payload,
        };
        let Ok(text) = serde_json::to_string(&wire) else {
            continue;
        };
        let text = proofs.seal(CHANNEL, &text);
        if text.len() > MAX_PAYLOAD {
            warn!(
                phone = %event.phone,
                event_type = event.kind.type_name(),
                bytes = text.len(),
                "an event too large to relay; only this node's streams carry it"
            );
            continue;
        }
        if let Err(e) = notify::notify(&pool, CHANNEL, &text).await {
            warn!(error = %e, event_type = event.kind.type_name(), "could not relay an event to the other nodes");
        }
    }
}

/// Publishes the other nodes' events on this node's bus.
async fn take_in(
    node_id: String,
    database_url: String,
    gateway: Arc<Gateway>,
    proofs: Arc<Proofs>,
) {
    notify::listen_forever(&database_url, CHANNEL, |sealed| {
        match proofs.open(CHANNEL, &sealed) {
            Ok(text) => publish_relayed(&node_id, &text, gateway.events()),
            Err(e) => {
                Metrics::inc(&gateway.metrics().cluster_proofs_refused);
                warn!(error = %e, "dropped a relayed event without a valid cluster proof");
            }
        }
    })
    .await
}

/// One relayed event onto this node's bus, unless it is this node's own or
/// not understood (a newer node's event type, a damaged payload).
fn publish_relayed(node_id: &str, text: &str, bus: &EventBus) {
    let Ok(wire) = serde_json::from_str::<Relayed>(text) else {
        warn!("a relayed event that is not understood; skipped");
        return;
    };
    if wire.node == node_id {
        return;
    }
    let (Some(event_type), Ok(phone)) = (
        known_event_type(&wire.event_type),
        Phone::parse(&wire.phone),
    ) else {
        warn!(event_type = %wire.event_type, "a relayed event of an unknown type or phone; skipped");
        return;
    };
    let tenant = match wire.tenant.as_deref().map(TenantId::parse) {
        None => None,
        Some(Ok(tenant)) => Some(tenant),
        Some(Err(_)) => {
            warn!("a relayed event with an invalid tenant; skipped");
            return;
        }
    };
    if !wire.payload.is_object() {
        return;
    }
    bus.publish(
        tenant.as_ref(),
        &phone,
        EventKind::Relayed {
            event_type,
            payload: Arc::new(wire.payload),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EventsConfig;

    #[test]
    fn another_nodes_event_is_published_and_this_nodes_own_is_not() {
        let bus = EventBus::new(&EventsConfig::default());
        let (mut subscription, _) = bus.subscribe(None);
        let wire = |node: &str, event_type: &str| {
            serde_json::json!({
                "node": node,
                "tenant": "acme",
                "phone": "5511999990001",
                "type": event_type,
                "payload": {"status": "connected", "ready": true, "lastError": null, "me": null},
            })
            .to_string()
        };
        publish_relayed("me", &wire("me", "session.status"), &bus);
        publish_relayed("me", &wire("other", "session.unheard-of"), &bus);
        publish_relayed("me", "not json", &bus);
        publish_relayed("me", &wire("other", "session.status"), &bus);
        let event = futures_util::FutureExt::now_or_never(subscription.next())
            .flatten()
            .expect("one event");
        let Received::Event(event) = event else {
            panic!("an event");
        };
        assert_eq!(event.kind.type_name(), "session.status");
        assert!(event.kind.is_relayed());
        assert_eq!(event.tenant.as_ref().map(|t| t.as_str()), Some("acme"));
        assert!(futures_util::FutureExt::now_or_never(subscription.next()).is_none());
    }
}
