//! `GET /api/events`: the session and message events as Server-Sent Events,
//! and the JSON types of their payloads.
//!
//! A tenant sees the events of its own sessions, an operator every event;
//! a QR or pairing code goes only to the session's owner. `Last-Event-ID`
//! resumes from the bus's buffer (`events.missed` says what it no longer
//! has); a client that reads too slowly loses events (`events.dropped` says
//! how many of its own), never slows a session. An SSE comment line every
//! `events.heartbeat` keeps proxies from closing an idle stream.
//!
//! A stream lives as long as its token is accepted: when the token
//! expires (its `exp`, plus the leeway allowed for clock skew), the stream
//! sends `events.ended` and ends. Every token has an `exp` (`auth.rs`
//! requires one). A caller holds at most `events.max_streams_per_caller`
//! streams at once (`caller_limits.rs`); a stream gives its slot back when
//! it ends or its client goes away.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::Serialize;

use super::caller_limits::{CallerLimits, Slot};
use super::extract::AuthCallerUntil;
use super::json::ErrorBody;
use super::reset::ClearBody;
use super::responses::NoToken;
use super::{ApiError, AppState};
use crate::clock::now_ms;
use crate::core::event::{Event, EventKind};
use crate::core::tenant::Caller;
use crate::events::{Missed, Received, Subscription};
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use utoipa::ToSchema;

/// One event of the stream as its lines carry it (what an SSE client sees
/// per event); `data` is the JSON of an [`EventBody`], or of
/// `EventsMissedBody` / `EventsDroppedBody` for the two markers.
#[derive(Debug, Serialize, ToSchema)]
pub struct SseEventBody {
    /// The `event:` line: the event's type.
    pub event: String,
    /// The `id:` line; absent on the `events.missed` and `events.dropped` markers.
    pub id: Option<String>,
    /// The `data:` line: one JSON object (EventBody, EventsMissedBody or EventsDroppedBody).
    pub data: String,
}

/// One event as the stream's `data:` line carries it: the common fields,
/// then the payload of its type.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventBody {
    /// `session.status`, `session.qr`, `session.cleared`,
    /// `session.logged_out` or `message.status` (also the `event:` line).
    #[serde(rename = "type")]
    pub event_type: &'static str,
    /// The same as the `id:` line: increases with every event of this node.
    pub id: u64,
    /// Unix milliseconds, UTC.
    pub at: u64,
    /// The session's owner; `null` for a phone without one (operators only).
    pub tenant: Option<String>,
    pub phone: String,
    #[serde(flatten)]
    pub payload: EventPayload,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EventPayload {
    Status(SessionStatusPayload),
    Qr(SessionQrPayload),
    Cleared(SessionClearedPayload),
    LoggedOut(SessionLoggedOutPayload),
    MessageStatus(MessageStatusPayload),
}

/// `session.status`: the same names and values as `GET /api/sessions/{phone}/status`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatusPayload {
    pub status: &'static str,
    pub ready: bool,
    pub last_error: Option<String>,
    /// The session's own WhatsApp JID once paired, as the status endpoint's `me`.
    pub me: Option<String>,
}

/// `session.qr`: a new QR code or pairing code is available. The codes
/// themselves go only to the session's owner; others get both `null`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionQrPayload {
    pub qr: Option<String>,
    pub pairing_code: Option<String>,
    /// Whether a code is available (false once the QR went away).
    pub available: bool,
}

/// `session.cleared`: the report, as the reset's response shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionClearedPayload {
    pub report: ClearBody,
}

/// `session.logged_out`: WhatsApp ended the session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionLoggedOutPayload {
    pub reason: String,
}

/// `message.status`: a message moved on.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageStatusPayload {
    pub message_id: String,
    /// `queued`, `sent`, `delivered`, `read` or `failed`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `events.missed` (no `id:`): a resume asked for events the buffer no
/// longer holds; ids `from` through `to` are gone.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsMissedBody {
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub from: u64,
    pub to: u64,
}

/// `events.dropped` (no `id:`): this stream fell behind and lost `count`
/// of the events it would have shown (its caller's only).
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsDroppedBody {
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub count: u64,
}

/// `events.ended` (no `id:`), the stream's last event: why it ends.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsEndedBody {
    #[serde(rename = "type")]
    pub event_type: &'static str,
    /// `token_expired`: the token the stream was opened with is no longer accepted.
    pub reason: &'static str,
    /// The same, as a sentence.
    pub error: &'static str,
}

/// The `data:` JSON of `event` as `caller` may see it; `None` when it is
/// not theirs to see.
pub fn event_data(event: &Event, caller: &Caller) -> Option<String> {
    match &event.kind {
        EventKind::Relayed { payload, .. } => relayed_data(event, payload, caller),
        _ => serde_json::to_string(&event_body(event, caller)?).ok(),
    }
}

/// Another node's event (as it rendered it for the owner), for `caller`:
/// the same JSON an [`EventBody`] of this node makes, the codes of a
/// `session.qr` withheld from anyone but the owner.
fn relayed_data(event: &Event, payload: &serde_json::Value, caller: &Caller) -> Option<String> {
    if !caller.may_access(event.tenant.as_ref()) {
        return None;
    }
    let mut object = serde_json::Map::new();
    object.insert("type".into(), event.kind.type_name().into());
    object.insert("id".into(), event.id.into());
    object.insert("at".into(), event.at_ms.into());
    object.insert(
        "tenant".into(),
        event.tenant.as_ref().map(|t| t.as_str()).into(),
    );
    object.insert("phone".into(), event.phone.as_str().into());
    let is_owner = caller.tenant().is_some();
    for (key, value) in payload.as_object()? {
        let secret = matches!(key.as_str(), "qr" | "pairingCode");
        let value = if secret && !is_owner {
            serde_json::Value::Null
        } else {
            value.clone()
        };
        object.insert(key.clone(), value);
    }
    serde_json::to_string(&object).ok()
}

/// The payload of `event` (the fields after the common ones) as its owner
/// sees it: what a cluster node relays to the others (`cli.rs` hands it to
/// `cluster::events::spawn_relay`). `None` for an event that is already
/// another node's.
pub fn owner_payload(event: &Event) -> Option<serde_json::Value> {
    let owner = match &event.tenant {
        Some(tenant) => Caller::Tenant(tenant.clone()),
        None => Caller::Operator,
    };
    if event.kind.is_relayed() {
        return None;
    }
    let body = event_body(event, &owner)?;
    serde_json::to_value(&body.payload).ok()
}

/// `event` as `caller` may see it; `None` when it is not theirs to see (or
/// another node's: see [`event_data`]).
pub fn event_body(event: &Event, caller: &Caller) -> Option<EventBody> {
    if !caller.may_access(event.tenant.as_ref()) {
        return None;
    }
    let is_owner = caller.tenant().is_some();
    let payload = match &event.kind {
        EventKind::Status {
            status,
            ready,
            last_error,
            me,
        } => EventPayload::Status(SessionStatusPayload {
            status,
            ready: *ready,
            last_error: last_error.clone(),
            me: me.clone(),
        }),
        EventKind::Qr { qr, pairing_code } => EventPayload::Qr(SessionQrPayload {
            qr: qr.clone().filter(|_| is_owner),
            pairing_code: pairing_code.clone().filter(|_| is_owner),
            available: qr.is_some() || pairing_code.is_some(),
        }),
        EventKind::Cleared { report } => EventPayload::Cleared(SessionClearedPayload {
            report: ClearBody::new(&report.phone, report),
        }),
        EventKind::LoggedOut { reason } => EventPayload::LoggedOut(SessionLoggedOutPayload {
            reason: reason.clone(),
        }),
        EventKind::MessageStatus {
            message_id,
            status,
            error,
        } => EventPayload::MessageStatus(MessageStatusPayload {
            message_id: message_id.clone(),
            status: status.as_str(),
            error: error.clone(),
        }),
        EventKind::Relayed { .. } => return None,
    };
    Some(EventBody {
        event_type: event.kind.type_name(),
        id: event.id,
        at: event.at_ms,
        tenant: event.tenant.as_ref().map(|t| t.as_str().to_owned()),
        phone: event.phone.as_str().to_owned(),
        payload,
    })
}

fn sse_json(name: &'static str, body: &impl Serialize) -> SseEvent {
    // These types always serialize; an empty object would still be valid SSE.
    let data = serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned());
    SseEvent::default().event(name).data(data)
}

/// Where one stream is: the marker still to send, then the subscription,
/// until the token expires.
struct StreamState {
    missed: Option<Missed>,
    subscription: Subscription,
    caller: Caller,
    /// When the token stops being accepted.
    expires: tokio::time::Instant,
    /// `events.ended` was sent: nothing follows.
    ended: bool,
    gateway: Arc<Gateway>,
    /// The caller's stream slot, given back when the stream is dropped.
    _slot: Slot,
}

async fn next_item(mut state: StreamState) -> Option<(Result<SseEvent, Infallible>, StreamState)> {
    if state.ended {
        return None;
    }
    if let Some(missed) = state.missed.take() {
        let body = EventsMissedBody {
            event_type: "events.missed",
            from: missed.from,
            to: missed.to,
        };
        return Some((Ok(sse_json("events.missed", &body)), state));
    }
    loop {
        let expires = state.expires;
        let received = tokio::select! {
            received = state.subscription.next() => received,
            () = tokio::time::sleep_until(expires) => {
                state.ended = true;
                Metrics::inc(&state.gateway.metrics().http_edge.event_streams_expired);
                let body = EventsEndedBody {
                    event_type: "events.ended",
                    reason: "token_expired",
                    error: "the token expired; open a new stream with a fresh token",
                };
                return Some((Ok(sse_json("events.ended", &body)), state));
            }
        };
        match received? {
            Received::Dropped(count) => {
                let body = EventsDroppedBody {
                    event_type: "events.dropped",
                    count,
                };
                return Some((Ok(sse_json("events.dropped", &body)), state));
            }
            Received::Event(event) => {
                if let Some(data) = event_data(&event, &state.caller) {
                    let sse = SseEvent::default()
                        .event(event.kind.type_name())
                        .data(data)
                        .id(event.id.to_string());
                    return Some((Ok(sse), state));
                }
            }
        }
    }
}

/// Server-Sent Events about sessions: a tenant gets its own sessions'
/// events, an operator every tenant's. Each event is `event: {type}`,
/// `id: {n}`, `data: {EventBody as JSON}`; `Last-Event-ID` resumes after
/// the last one seen. Comment lines keep the stream alive. The stream ends
/// with `events.ended` when its token expires.
#[utoipa::path(
    get, path = "/api/events", tag = "events",
    security(("bearer" = [])),
    params(("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event id")),
    responses(
        (status = 200, description = "The stream: one `data:` line per event, each an EventBody; `events.missed` (EventsMissedBody) when a resume is older than the buffer, `events.dropped` (EventsDroppedBody) when this stream fell behind, counting only events this caller would have been shown; `events.ended` (EventsEndedBody), the last, when the token expires", content_type = "text/event-stream", body = SseEventBody),
        (status = 400, description = "Last-Event-ID is not a whole number", body = ErrorBody),
        NoToken,
        (status = 429, description = "This caller already holds events.max_streams_per_caller streams (Retry-After says when to try again)", body = ErrorBody),
    )
)]
pub async fn event_stream(
    State(state): State<AppState>,
    Extension(limits): Extension<CallerLimits>,
    AuthCallerUntil(caller, accepted_until): AuthCallerUntil,
    headers: HeaderMap,
) -> Response {
    match open_stream(&state, &limits, caller, accepted_until, &headers) {
        Ok(stream) => stream.into_response(),
        Err(refused) => *refused,
    }
}

fn open_stream(
    state: &AppState,
    limits: &CallerLimits,
    caller: Caller,
    accepted_until: u64,
    headers: &HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>> + use<>>, Box<Response>> {
    let after = match headers.get("last-event-id") {
        None => None,
        Some(raw) => Some(
            raw.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    let refused = ApiError::BadRequest(
                        "Last-Event-ID must be the id of an event this stream sent (a whole number)"
                            .into(),
                    )
                    .into_response();
                    Box::new(refused)
                })?,
        ),
    };
    let slot = limits
        .stream_slot(&caller)
        .ok_or_else(|| Box::new(limits.streams_refused(state.gateway.metrics())))?;
    let (subscription, missed) = state.gateway.events().subscribe_for(caller.clone(), after);
    let heartbeat = state.gateway.config().events.heartbeat;
    let lives_for = Duration::from_secs(accepted_until.saturating_sub(now_ms() / 1000));
    let items = stream::unfold(
        StreamState {
            missed,
            subscription,
            caller,
            expires: tokio::time::Instant::now() + lives_for,
            ended: false,
            gateway: state.gateway.clone(),
            _slot: slot,
        },
        next_item,
    );
    Ok(Sse::new(items).keep_alive(KeepAlive::new().interval(heartbeat)))
}
