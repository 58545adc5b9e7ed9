//! Session and message events, as plain values: what changed, for whom.
//!
//! The event bus (`crate::events`) numbers them and fans them out to the
//! stream (`GET /api/events`) and to the plugins' `on-event` hooks. Which
//! events a change of a session's view makes is decided here, without I/O.

use std::sync::Arc;

use crate::core::message_status::DeliveryState;
use crate::core::reset_report::ResetReport;
use crate::core::tenant::TenantId;
use crate::phone::Phone;

/// One numbered event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Increases by one per event on this node (see `EventBus` for where it starts).
    pub id: u64,
    /// Unix milliseconds, UTC.
    pub at_ms: u64,
    /// The tenant that owns the session; `None` for a phone without an owner
    /// (only operators see those).
    pub tenant: Option<TenantId>,
    pub phone: Phone,
    pub kind: EventKind,
}

/// What happened. Carries secrets (a QR or pairing code) only where the
/// owner needs them; whoever renders an event for someone else drops them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The status `GET /api/sessions/{phone}/status` reports changed.
    Status {
        status: &'static str,
        ready: bool,
        last_error: Option<String>,
        /// The session's own WhatsApp JID, once paired.
        me: Option<String>,
    },
    /// A new QR code or pairing code is available (or the QR went away: both `None`).
    Qr {
        qr: Option<String>,
        pairing_code: Option<String>,
    },
    /// A reset finished; the report is the one the reset's response shows.
    Cleared { report: Arc<ResetReport> },
    /// WhatsApp ended the session (the phone unlinked this device).
    LoggedOut { reason: String },
    /// A message moved on (queued, sent, delivered, read, failed).
    MessageStatus {
        message_id: String,
        status: DeliveryState,
        error: Option<String>,
    },
    /// Cluster mode: an event of a session another node runs, as that node
    /// rendered it for the session's owner (`payload`: the fields after the
    /// common ones, codes included). That node's plugins heard it; this
    /// node's do not, so a plugin hears each event once in the cluster.
    Relayed {
        event_type: &'static str,
        payload: Arc<serde_json::Value>,
    },
}

impl EventKind {
    /// The event's type as the stream's `event:` line and the JSON's `type` name it.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::Status { .. } => "session.status",
            EventKind::Qr { .. } => "session.qr",
            EventKind::Cleared { .. } => "session.cleared",
            EventKind::LoggedOut { .. } => "session.logged_out",
            EventKind::MessageStatus { .. } => "message.status",
            EventKind::Relayed { event_type, .. } => event_type,
        }
    }

    /// Whether another node made this event (`Relayed`).
    pub fn is_relayed(&self) -> bool {
        matches!(self, EventKind::Relayed { .. })
    }
}

/// The event type named `name`, as a `&'static str`; `None` for a name
/// this version does not know.
pub fn known_event_type(name: &str) -> Option<&'static str> {
    EVENT_TYPES.iter().copied().find(|t| *t == name)
}

/// Every event type, for config checks and documentation.
pub const EVENT_TYPES: [&str; 5] = [
    "session.status",
    "session.qr",
    "session.cleared",
    "session.logged_out",
    "message.status",
];

/// The parts of a session's published view that events are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewFacts<'a> {
    pub status: &'static str,
    pub ready: bool,
    pub last_error: Option<&'a str>,
    pub me: Option<&'a str>,
    pub qr: Option<&'a str>,
}

/// The events a change of a session's view makes, in order: the status
/// first (a client reading `session.qr` then finds the status `qr`), then a
/// new QR code, then a logout. Nothing when nothing an event shows changed.
pub fn view_change_events(before: &ViewFacts<'_>, after: &ViewFacts<'_>) -> Vec<EventKind> {
    let mut events = Vec::new();
    if (before.status, before.ready, before.last_error, before.me)
        != (after.status, after.ready, after.last_error, after.me)
    {
        events.push(EventKind::Status {
            status: after.status,
            ready: after.ready,
            last_error: after.last_error.map(str::to_owned),
            me: after.me.map(str::to_owned),
        });
    }
    if before.qr != after.qr {
        events.push(EventKind::Qr {
            qr: after.qr.map(str::to_owned),
            pairing_code: None,
        });
    }
    if after.status == "logged_out" && before.status != "logged_out" {
        events.push(EventKind::LoggedOut {
            reason: after
                .last_error
                .unwrap_or("the phone unlinked this device")
                .to_owned(),
        });
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(status: &'static str, qr: Option<&'static str>) -> ViewFacts<'static> {
        ViewFacts {
            status,
            ready: status == "connected",
            last_error: None,
            me: None,
            qr,
        }
    }

    #[test]
    fn an_unchanged_view_makes_no_event() {
        let view = facts("connected", None);
        assert!(view_change_events(&view, &view.clone()).is_empty());
    }

    #[test]
    fn a_new_qr_makes_the_status_then_the_code() {
        let events = view_change_events(&facts("starting", None), &facts("qr", Some("2@abc")));
        assert_eq!(
            events,
            vec![
                EventKind::Status {
                    status: "qr",
                    ready: false,
                    last_error: None,
                    me: None,
                },
                EventKind::Qr {
                    qr: Some("2@abc".into()),
                    pairing_code: None
                },
            ]
        );
        // A rotated code alone is one event, no status.
        let rotated = view_change_events(&facts("qr", Some("2@abc")), &facts("qr", Some("2@def")));
        assert_eq!(rotated.len(), 1);
        assert_eq!(rotated[0].type_name(), "session.qr");
    }

    #[test]
    fn pairing_shows_the_own_jid_with_the_status() {
        let mut paired = facts("connected", None);
        paired.me = Some("5511999998888@s.whatsapp.net");
        let events = view_change_events(&facts("connected", None), &paired);
        assert_eq!(
            events,
            vec![EventKind::Status {
                status: "connected",
                ready: true,
                last_error: None,
                me: Some("5511999998888@s.whatsapp.net".into()),
            }]
        );
    }

    #[test]
    fn a_logout_says_why_once() {
        let mut after = facts("logged_out", None);
        after.last_error = Some("the phone removed this device");
        let events = view_change_events(&facts("connected", None), &after);
        assert_eq!(
            events.iter().map(EventKind::type_name).collect::<Vec<_>>(),
            ["session.status", "session.logged_out"]
        );
        assert_eq!(
            events[1],
            EventKind::LoggedOut {
                reason: "the phone removed this device".into()
            }
        );
        assert!(view_change_events(&after, &after.clone()).is_empty());
    }
}
