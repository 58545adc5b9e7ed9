//! The WebAssembly component: binds the `reset-and-event-hook` world's
//! exports (lila:hooks@0.2.0) to the plain logic in the crate root, and the
//! `Transport` trait to the host imports.

wit_bindgen::generate!({
    world: "reset-and-event-hook",
    path: "../../wit/lila-hooks-0.2.0",
});

use exports::lila::hooks::events::{self, EventKind};
use exports::lila::hooks::reset::Guest;
use lila::hooks::host::{self, LogLevel};
use lila::hooks::http;
use lila::hooks::types::{self, Decision, ResetContext, ResetReport};
use serde_json::{Map, Value, json};

use crate::delivery::Transport;
use crate::{Outcome, PluginOutcome};

struct WitTransport;

impl Transport for WitTransport {
    fn now_ms(&mut self) -> u64 {
        host::now_ms()
    }

    fn deadline_ms(&mut self) -> u64 {
        host::deadline_ms()
    }

    fn sleep_ms(&mut self, ms: u32) {
        host::sleep_ms(ms);
    }

    fn post(
        &mut self,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
        timeout_ms: u32,
    ) -> Result<u16, String> {
        http::http_post(url, headers, body, timeout_ms).map(|response| response.status)
    }
}

// WIT types stay at this edge; the logic sees only the crate's own types.
fn plain_report(report: ResetReport) -> crate::ResetReport {
    crate::ResetReport {
        tenant: report.tenant,
        phone: report.phone,
        reset_id: report.reset_id,
        finished_at_ms: report.finished_at_ms,
        session_status: report.session.status,
        own_jid: report.session.own_jid,
        paired: report.session.paired,
        logged_out: report.logged_out,
        removed_paths: report.removed_paths,
        session_files_removed: report.session_files_removed,
        backups_removed: report.backups_removed,
        outbox_dropped_ids: report
            .outbox_dropped
            .into_iter()
            .map(|message| message.id)
            .collect(),
        before_clear: report
            .before_clear
            .into_iter()
            .map(|outcome| PluginOutcome {
                plugin: outcome.plugin,
                outcome: match outcome.outcome {
                    types::Outcome::Ok => Outcome::Ok,
                    types::Outcome::Vetoed => Outcome::Vetoed,
                    types::Outcome::Failed => Outcome::Failed,
                    types::Outcome::TimedOut => Outcome::TimedOut,
                },
                duration_ms: outcome.duration_ms,
                detail: outcome.detail,
            })
            .collect(),
    }
}

/// Logs why and traps, so the host counts this call as failed (it never
/// affects the reset, which is already done).
fn fail(message: &str) -> ! {
    host::log(LogLevel::Error, message);
    panic!("{message}");
}

struct WebhookNotify;

impl Guest for WebhookNotify {
    /// Nothing to decide: the event is about a reset that happened.
    fn before_clear(_ctx: ResetContext) -> Decision {
        Decision::Allow
    }

    fn after_clear(report: ResetReport) {
        let results =
            match crate::after_clear(&host::config(), &plain_report(report), &mut WitTransport) {
                Ok(results) => results,
                Err(message) => fail(&message),
            };
        report_deliveries(&results);
    }
}

/// The type's fields, named as lila's event stream names them.
fn payload(kind: EventKind) -> Map<String, Value> {
    let value = match kind {
        EventKind::SessionStatus(s) => {
            json!({ "status": s.status, "ready": s.ready, "lastError": s.last_error, "me": s.me })
        }
        EventKind::SessionQr(available) => json!({ "available": available }),
        EventKind::SessionCleared(report) => {
            let report = crate::event::event_body(&plain_report(report))
                .ok()
                .and_then(|body| serde_json::from_slice::<Value>(&body).ok())
                .unwrap_or(Value::Null);
            json!({ "report": report })
        }
        EventKind::SessionLoggedOut(reason) => json!({ "reason": reason }),
        EventKind::MessageStatus(m) => {
            json!({ "messageId": m.message_id, "status": m.status, "error": m.error })
        }
    };
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

impl events::Guest for WebhookNotify {
    fn on_event(event: events::Event) {
        let event = crate::StreamEvent {
            id: event.id,
            at_ms: event.at_ms,
            event_type: event.event_type,
            tenant: event.tenant,
            phone: event.phone,
            payload: payload(event.kind),
        };
        let results = match crate::on_event(&host::config(), &event, &mut WitTransport) {
            Ok(results) => results,
            Err(message) => fail(&message),
        };
        report_deliveries(&results);
    }
}

/// Logs each endpoint's outcome; traps when any endpoint did not get the event.
fn report_deliveries(results: &[crate::delivery::EndpointDelivery]) {
    {
        for result in results {
            let level = if result.delivery.is_delivered() {
                LogLevel::Info
            } else {
                LogLevel::Warn
            };
            host::log(level, &crate::describe(result));
        }
        if let Some(summary) = crate::failure_summary(results) {
            fail(&summary);
        }
    }
}

export!(WebhookNotify);
