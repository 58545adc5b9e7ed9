//! The plugins' `on-event` hooks (lila:hooks@0.2.0 on), off the session's path.
//!
//! One dispatcher task listens on the event bus and hands each event to a
//! bounded queue per plugin; one worker per plugin calls its `on-event`,
//! in order, with the plugin's own time budget and memory cap. A full queue
//! drops the event and counts it (`lila_plugin_events_dropped_total`): a
//! slow or failing plugin never delays a session, a reset or another plugin.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::warn;

use super::imports::HookKind;
use super::wit::latest::exports::lila::hooks::events as wit_events;
use super::{Runtime, elapsed_ms, wit_report};
use crate::core::event::{Event, EventKind};
use crate::core::reset_report::{HookOutcome, HookRun};
use crate::events::{EventBus, Received};

/// Starts the dispatcher on the current tokio runtime (none: nothing to do,
/// and said so).
pub(super) fn start(runtime: Arc<Runtime>, bus: &EventBus) {
    let Ok(tokio) = tokio::runtime::Handle::try_current() else {
        warn!("no async runtime: plugin event hooks are off");
        return;
    };
    let subscription = bus.subscribe_live();
    let queue = bus.plugin_queue();
    tokio.spawn(dispatch(runtime, subscription, queue));
}

async fn dispatch(runtime: Arc<Runtime>, mut events: crate::events::Subscription, queue: usize) {
    let mut workers: HashMap<String, mpsc::Sender<Arc<Event>>> = HashMap::new();
    while let Some(received) = events.next().await {
        let event = match received {
            Received::Event(event) => event,
            Received::Dropped(count) => {
                warn!(count, "plugin event dispatcher fell behind; events dropped");
                runtime.metrics.events_dropped("*", count);
                continue;
            }
        };
        // Another node's event: that node's plugins heard it.
        if event.kind.is_relayed() {
            continue;
        }
        let registry = runtime.registry();
        for plugin in registry.for_events(event.tenant.as_ref()) {
            let key = &plugin.spec.key;
            let worker = workers.entry(key.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(queue);
                tokio::spawn(work(runtime.clone(), key.clone(), rx));
                tx
            });
            if worker.try_send(event.clone()).is_err() {
                plugin
                    .counters
                    .events_dropped
                    .fetch_add(1, Ordering::Relaxed);
                runtime.metrics.events_dropped(key, 1);
            }
        }
    }
}

/// Calls plugin `key`'s `on-event` for each queued event, in order, with the
/// version of the plugin loaded at the time of the call.
async fn work(runtime: Arc<Runtime>, key: String, mut queue: mpsc::Receiver<Arc<Event>>) {
    while let Some(event) = queue.recv().await {
        let registry = runtime.registry();
        // Removed, disabled or narrowed since the event was queued: skip it.
        let Some(plugin) = registry
            .for_events(event.tenant.as_ref())
            .into_iter()
            .find(|p| p.spec.key == key)
        else {
            continue;
        };
        let tenant = event
            .tenant
            .as_ref()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default();
        let Some(wit) = wit_event(&event, &tenant) else {
            continue;
        };
        let started = Instant::now();
        let env = runtime.env(
            &plugin,
            HookKind::OnEvent,
            &tenant,
            &event.phone,
            &event.id.to_string(),
            started + plugin.spec.time_budget,
        );
        let end = runtime
            .call(&plugin.spec, env, async |env, limits| {
                runtime
                    .engine
                    .on_event(&plugin.code, env, limits, &wit)
                    .await
            })
            .await;
        let run = HookRun {
            plugin: key.clone(),
            hook: HookKind::OnEvent.as_str(),
            outcome: end.err().unwrap_or(HookOutcome::Ok),
            duration_ms: elapsed_ms(started),
        };
        runtime.record(&plugin, &run, &tenant, &event.phone);
    }
}

/// The event as `on-event` gets it. QR and pairing codes are never passed
/// on; another node's events (`Relayed`) are not this node's to hand out.
fn wit_event(event: &Event, tenant: &str) -> Option<wit_events::Event> {
    let kind = match &event.kind {
        EventKind::Status {
            status,
            ready,
            last_error,
            me,
        } => wit_events::EventKind::SessionStatus(wit_events::SessionStatus {
            status: (*status).to_owned(),
            ready: *ready,
            last_error: last_error.clone(),
            me: me.clone(),
        }),
        EventKind::Qr { qr, pairing_code } => {
            wit_events::EventKind::SessionQr(qr.is_some() || pairing_code.is_some())
        }
        EventKind::Cleared { report } => wit_events::EventKind::SessionCleared(wit_report(report)),
        EventKind::LoggedOut { reason } => wit_events::EventKind::SessionLoggedOut(reason.clone()),
        EventKind::MessageStatus {
            message_id,
            status,
            error,
        } => wit_events::EventKind::MessageStatus(wit_events::MessageStatus {
            message_id: message_id.clone(),
            status: status.as_str().to_owned(),
            error: error.clone(),
        }),
        EventKind::Relayed { .. } => return None,
    };
    Some(wit_events::Event {
        id: event.id,
        at_ms: event.at_ms,
        event_type: event.kind.type_name().to_owned(),
        tenant: tenant.to_owned(),
        phone: event.phone.as_str().to_owned(),
        kind,
    })
}
