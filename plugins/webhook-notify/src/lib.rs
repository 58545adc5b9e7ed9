//! webhook-notify: a lila reset plugin that, in `after-clear`, POSTs a signed
//! `session.cleared` event (tenant, phone, time, what was removed, how each
//! `before-clear` plugin ended) to every configured endpoint, retrying with
//! backoff inside its time budget.
//!
//! `before-clear` always allows. The logic below is plain Rust behind the
//! [`delivery::Transport`] trait; `component.rs` binds it to the WIT imports.

pub mod config;
pub mod delivery;
pub mod event;
pub mod signature;

#[cfg(target_arch = "wasm32")]
mod component;

use config::WebhookConfig;
use delivery::{Delivery, EndpointDelivery, Transport};

/// The plugin's view of the WIT `reset-report`: only what the event carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetReport {
    pub tenant: String,
    pub phone: String,
    pub reset_id: String,
    pub finished_at_ms: u64,
    pub session_status: String,
    pub own_jid: Option<String>,
    pub paired: bool,
    pub logged_out: bool,
    pub removed_paths: Vec<String>,
    pub session_files_removed: u32,
    pub backups_removed: u32,
    pub outbox_dropped_ids: Vec<String>,
    pub before_clear: Vec<PluginOutcome>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Vetoed,
    Failed,
    TimedOut,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginOutcome {
    pub plugin: String,
    pub outcome: Outcome,
    pub duration_ms: u64,
    pub detail: Option<String>,
}

/// The `after-clear` hook: build the event once, deliver it everywhere. An
/// `Err` (bad config) makes the component trap, which the host records as a
/// failed call; it never affects the reset itself.
pub fn after_clear(
    config_json: &str,
    report: &ResetReport,
    transport: &mut impl Transport,
) -> Result<Vec<EndpointDelivery>, String> {
    let config = WebhookConfig::parse(config_json).map_err(|error| error.to_string())?;
    let body = event::event_body(report)
        .map_err(|error| format!("could not encode the event: {error}"))?;
    Ok(delivery::deliver(
        &config,
        event::EVENT_NAME,
        &report.reset_id,
        &body,
        transport,
    ))
}

/// An event of lila's event stream (the `on-event` hook of lila:hooks@0.2.0),
/// with its type's fields as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    pub id: u64,
    pub at_ms: u64,
    pub event_type: String,
    pub tenant: String,
    pub phone: String,
    pub payload: serde_json::Map<String, serde_json::Value>,
}

/// The `on-event` hook: forwards the event to every endpoint when its type
/// is one of the config's `events`; `Ok(empty)` when it is not. The delivery
/// id (`X-Lila-Delivery`) is the event's id, the same on every retry.
pub fn on_event(
    config_json: &str,
    event: &StreamEvent,
    transport: &mut impl Transport,
) -> Result<Vec<EndpointDelivery>, String> {
    let config = WebhookConfig::parse(config_json).map_err(|error| error.to_string())?;
    if !config.events.contains(&event.event_type) {
        return Ok(Vec::new());
    }
    let body = event::stream_event_body(event)
        .map_err(|error| format!("could not encode the event: {error}"))?;
    Ok(delivery::deliver(
        &config,
        &event.event_type,
        &event.id.to_string(),
        &body,
        transport,
    ))
}

/// One log line per endpoint.
pub fn describe(result: &EndpointDelivery) -> String {
    let url = &result.url;
    match &result.delivery {
        Delivery::Delivered { attempts, status } => {
            format!("delivered to {url}: HTTP {status} after {attempts} attempt(s)")
        }
        Delivery::Rejected { attempts, status } => {
            format!("{url} rejected the event: HTTP {status} after {attempts} attempt(s)")
        }
        Delivery::Refused { reason } => format!("the host refused to send to {url}: {reason}"),
        Delivery::GaveUp {
            attempts,
            last_error,
        } => format!("gave up on {url} after {attempts} attempt(s): {last_error}"),
    }
}

/// `Some(sentence)` when any endpoint did not get the event.
pub fn failure_summary(results: &[EndpointDelivery]) -> Option<String> {
    let failed: Vec<&str> = results
        .iter()
        .filter(|result| !result.delivery.is_delivered())
        .map(|result| result.url.as_str())
        .collect();
    if failed.is_empty() {
        return None;
    }
    Some(format!(
        "the event reached {} of {} endpoint(s); not delivered to: {}",
        results.len() - failed.len(),
        results.len(),
        failed.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct AlwaysDown;

    impl Transport for AlwaysDown {
        fn now_ms(&mut self) -> u64 {
            0
        }
        fn deadline_ms(&mut self) -> u64 {
            10_000
        }
        fn sleep_ms(&mut self, _ms: u32) {}
        fn post(
            &mut self,
            url: &str,
            _headers: &[(String, String)],
            _body: &[u8],
            _timeout_ms: u32,
        ) -> Result<u16, String> {
            if url.contains("up") {
                Ok(200)
            } else {
                Err("connection refused".to_owned())
            }
        }
    }

    fn report() -> ResetReport {
        ResetReport {
            tenant: "acme".to_owned(),
            phone: "5511999998888".to_owned(),
            reset_id: "r-42".to_owned(),
            finished_at_ms: 1_777_664_579_999,
            session_status: "absent".to_owned(),
            own_jid: None,
            paired: false,
            logged_out: false,
            removed_paths: vec![],
            session_files_removed: 0,
            backups_removed: 0,
            outbox_dropped_ids: vec![],
            before_clear: vec![],
        }
    }

    #[test]
    fn partial_delivery_is_summarised_as_a_failure() {
        let config = r#"{"endpoints": [{"url": "https://up.example", "secret": "s"},
                                       {"url": "https://down.example", "secret": "s"}],
                         "backoff_ms": 0}"#;
        let results = after_clear(config, &report(), &mut AlwaysDown).unwrap();
        assert_eq!(
            describe(&results[0]),
            "delivered to https://up.example: HTTP 200 after 1 attempt(s)"
        );
        assert_eq!(
            describe(&results[1]),
            "gave up on https://down.example after 3 attempt(s): connection refused"
        );
        assert_eq!(
            failure_summary(&results).as_deref(),
            Some(
                "the event reached 1 of 2 endpoint(s); \
                 not delivered to: https://down.example"
            )
        );
    }

    fn stream_event(event_type: &str) -> StreamEvent {
        let mut payload = serde_json::Map::new();
        payload.insert("status".into(), "connected".into());
        StreamEvent {
            id: 7,
            at_ms: 1_777_664_579_999,
            event_type: event_type.to_owned(),
            tenant: "acme".to_owned(),
            phone: "5511999998888".to_owned(),
            payload,
        }
    }

    #[test]
    fn only_the_chosen_event_types_are_forwarded() {
        let config = r#"{"endpoints": [{"url": "https://up.example", "secret": "s"}],
                         "events": ["session.status"]}"#;
        let sent = on_event(config, &stream_event("session.status"), &mut AlwaysDown).unwrap();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].delivery.is_delivered());
        let skipped = on_event(config, &stream_event("message.status"), &mut AlwaysDown).unwrap();
        assert!(skipped.is_empty());
        // No `events`: nothing is forwarded (after-clear still works as before).
        let none = r#"{"endpoints": [{"url": "https://up.example", "secret": "s"}]}"#;
        assert!(
            on_event(none, &stream_event("session.status"), &mut AlwaysDown)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn full_delivery_has_no_failure() {
        let config = r#"{"endpoints": [{"url": "https://up.example", "secret": "s"}]}"#;
        let results = after_clear(config, &report(), &mut AlwaysDown).unwrap();
        assert_eq!(failure_summary(&results), None);
    }

    #[test]
    fn a_bad_config_is_an_error_naming_the_plugin() {
        let error = after_clear(r#"{"endpoint": []}"#, &report(), &mut AlwaysDown).unwrap_err();
        assert!(
            error.starts_with("invalid webhook-notify config"),
            "{error}"
        );
    }
}
