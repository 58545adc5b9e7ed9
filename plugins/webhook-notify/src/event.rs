//! The `session.cleared` event: the JSON body every endpoint receives.
//!
//! ```json
//! {
//!   "event": "session.cleared",
//!   "reset_id": "...", "tenant": "acme", "phone": "5511999998888",
//!   "occurred_at": "2026-05-01T19:42:59.999Z", "occurred_at_ms": 1777664579999,
//!   "session": { "status": "connected", "own_jid": "...", "paired": true },
//!   "logged_out": true,
//!   "removed": { "paths": ["sessions/5511999998888"], "session_files": 3, "backups": 2,
//!                "outbox_messages": 1, "outbox_message_ids": ["m-1"] },
//!   "plugins": [{ "plugin": "backup-archive", "outcome": "ok", "duration_ms": 12, "detail": null }]
//! }
//! ```
//!
//! Dropped messages are listed by id only: their text and recipients are the
//! tenant's customers' data and stay out of third-party endpoints.

use serde::Serialize;
use time::OffsetDateTime;

use crate::{Outcome, ResetReport};

pub const EVENT_NAME: &str = "session.cleared";

#[derive(Serialize)]
struct Event<'a> {
    event: &'static str,
    reset_id: &'a str,
    tenant: &'a str,
    phone: &'a str,
    occurred_at: Option<String>,
    occurred_at_ms: u64,
    session: Session<'a>,
    logged_out: bool,
    removed: Removed<'a>,
    plugins: Vec<Plugin<'a>>,
}

#[derive(Serialize)]
struct Session<'a> {
    status: &'a str,
    own_jid: Option<&'a str>,
    paired: bool,
}

#[derive(Serialize)]
struct Removed<'a> {
    paths: &'a [String],
    session_files: u32,
    backups: u32,
    outbox_messages: usize,
    outbox_message_ids: &'a [String],
}

#[derive(Serialize)]
struct Plugin<'a> {
    plugin: &'a str,
    outcome: &'static str,
    duration_ms: u64,
    detail: Option<&'a str>,
}

fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Ok => "ok",
        Outcome::Vetoed => "vetoed",
        Outcome::Failed => "failed",
        Outcome::TimedOut => "timed_out",
    }
}

/// `2026-05-01T19:42:59.999Z`; `None` for a clock past year 9999.
pub fn rfc3339_utc(ms: u64) -> Option<String> {
    let nanos = i128::from(ms).checked_mul(1_000_000)?;
    let t = OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    ))
}

/// The body, built once per reset so every endpoint and every retry sends (and
/// signs) the same bytes.
pub fn event_body(report: &ResetReport) -> Result<Vec<u8>, serde_json::Error> {
    let event = Event {
        event: EVENT_NAME,
        reset_id: &report.reset_id,
        tenant: &report.tenant,
        phone: &report.phone,
        occurred_at: rfc3339_utc(report.finished_at_ms),
        occurred_at_ms: report.finished_at_ms,
        session: Session {
            status: &report.session_status,
            own_jid: report.own_jid.as_deref(),
            paired: report.paired,
        },
        logged_out: report.logged_out,
        removed: Removed {
            paths: &report.removed_paths,
            session_files: report.session_files_removed,
            backups: report.backups_removed,
            outbox_messages: report.outbox_dropped_ids.len(),
            outbox_message_ids: &report.outbox_dropped_ids,
        },
        plugins: report
            .before_clear
            .iter()
            .map(|outcome| Plugin {
                plugin: &outcome.plugin,
                outcome: outcome_name(outcome.outcome),
                duration_ms: outcome.duration_ms,
                detail: outcome.detail.as_deref(),
            })
            .collect(),
    };
    serde_json::to_vec(&event)
}

/// The body of a forwarded stream event: `event` (its type), `id`, `tenant`,
/// `phone`, `occurred_at(_ms)`, then the type's own fields, as lila's
/// `GET /api/events` names them.
pub fn stream_event_body(event: &crate::StreamEvent) -> Result<Vec<u8>, serde_json::Error> {
    let mut body = serde_json::Map::new();
    body.insert("event".into(), event.event_type.clone().into());
    body.insert("id".into(), event.id.into());
    body.insert("tenant".into(), event.tenant.clone().into());
    body.insert("phone".into(), event.phone.clone().into());
    body.insert("occurred_at".into(), rfc3339_utc(event.at_ms).into());
    body.insert("occurred_at_ms".into(), event.at_ms.into());
    for (key, value) in &event.payload {
        body.insert(key.clone(), value.clone());
    }
    serde_json::to_vec(&body)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::PluginOutcome;

    fn report() -> ResetReport {
        ResetReport {
            tenant: "acme".to_owned(),
            phone: "5511999998888".to_owned(),
            reset_id: "r-42".to_owned(),
            // 2026-05-01T19:42:59.999Z
            finished_at_ms: 1_777_664_579_999,
            session_status: "connected".to_owned(),
            own_jid: Some("5511999998888@s.whatsapp.net".to_owned()),
            paired: true,
            logged_out: true,
            removed_paths: vec![
                "sessions/5511999998888".to_owned(),
                "whatsapp/outbox/5511999998888.json".to_owned(),
            ],
            session_files_removed: 3,
            backups_removed: 2,
            outbox_dropped_ids: vec!["m-1".to_owned()],
            before_clear: vec![
                PluginOutcome {
                    plugin: "backup-archive".to_owned(),
                    outcome: Outcome::Ok,
                    duration_ms: 12,
                    detail: None,
                },
                PluginOutcome {
                    plugin: "slow-one".to_owned(),
                    outcome: Outcome::TimedOut,
                    duration_ms: 2_000,
                    detail: Some("ran past its 2000 ms budget".to_owned()),
                },
            ],
        }
    }

    #[test]
    fn event_carries_who_when_what_and_plugin_outcomes() {
        let body = event_body(&report()).unwrap();
        let event: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            event,
            json!({
                "event": "session.cleared",
                "reset_id": "r-42",
                "tenant": "acme",
                "phone": "5511999998888",
                "occurred_at": "2026-05-01T19:42:59.999Z",
                "occurred_at_ms": 1_777_664_579_999_u64,
                "session": {
                    "status": "connected",
                    "own_jid": "5511999998888@s.whatsapp.net",
                    "paired": true
                },
                "logged_out": true,
                "removed": {
                    "paths": ["sessions/5511999998888", "whatsapp/outbox/5511999998888.json"],
                    "session_files": 3,
                    "backups": 2,
                    "outbox_messages": 1,
                    "outbox_message_ids": ["m-1"]
                },
                "plugins": [
                    {"plugin": "backup-archive", "outcome": "ok", "duration_ms": 12, "detail": null},
                    {"plugin": "slow-one", "outcome": "timed_out", "duration_ms": 2000,
                     "detail": "ran past its 2000 ms budget"}
                ]
            })
        );
    }

    #[test]
    fn body_is_compact_and_deterministic() {
        // Receivers verify the signature over the exact bytes, so the same
        // report must always give the same body.
        assert_eq!(
            event_body(&report()).unwrap(),
            event_body(&report()).unwrap()
        );
        assert!(!event_body(&report()).unwrap().contains(&b'\n'));
    }
}
