//! `GET /api/events`: who sees which event, resuming with `Last-Event-ID`,
//! the missed and dropped markers, and a stream nobody reads never holding
//! up a session.

mod support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use http_body_util::BodyExt;
use lila::core::message_status::ReceiptKind;
use serde_json::Value;
use support::Harness;

/// One SSE frame: the `event:` name, the `id:` (if any) and the `data:` JSON.
#[derive(Debug, Clone)]
struct Frame {
    name: String,
    id: Option<u64>,
    data: Value,
}

/// Reads SSE frames from a streaming response body.
struct SseReader {
    body: Body,
    buffer: String,
}

impl SseReader {
    async fn open(h: &Harness, token: &str, last_event_id: Option<u64>) -> SseReader {
        let id = last_event_id.map(|id| id.to_string());
        let headers: Vec<(&str, &str)> = id
            .as_deref()
            .map(|id| vec![("last-event-id", id)])
            .unwrap_or_default();
        let response = h
            .respond(Method::GET, "/api/events", Some(token), None, &headers)
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap_or(""),
            "text/event-stream"
        );
        SseReader {
            body: response.into_body(),
            buffer: String::new(),
        }
    }

    /// The next frame with data (comments skipped), or `None` after `wait` of silence.
    async fn next(&mut self, wait: Duration) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let raw: String = self.buffer.drain(..end + 2).collect();
                let mut frame = Frame {
                    name: String::new(),
                    id: None,
                    data: Value::Null,
                };
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        frame.name = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        frame.id = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        frame.data = serde_json::from_str(v).expect("data is JSON");
                    }
                }
                if frame.data.is_null() {
                    continue; // a heartbeat comment
                }
                return Some(frame);
            }
            let chunk = tokio::time::timeout(wait, self.body.frame()).await.ok()??;
            if let Ok(data) = chunk.expect("body frame").into_data() {
                self.buffer.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    /// Frames until one matches `done` (included), failing after 5 s without it.
    async fn until(&mut self, mut done: impl FnMut(&Frame) -> bool) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next(Duration::from_secs(5)).await {
            let last = done(&frame);
            frames.push(frame);
            if last {
                return frames;
            }
        }
        panic!("the stream ended or went quiet; got {frames:?}");
    }

    /// Every frame that arrives before `wait` of silence.
    async fn drain(&mut self, wait: Duration) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next(wait).await {
            frames.push(frame);
        }
        frames
    }
}

fn is(frame: &Frame, name: &str, status: Option<&str>) -> bool {
    frame.name == name && status.is_none_or(|s| frame.data["status"] == s)
}

const PHONE_A: &str = "5511999990001";
const PHONE_B: &str = "5511999990002";

#[tokio::test]
async fn a_tenant_sees_its_own_session_connect_and_reset_in_order_and_nothing_of_others() {
    let h = Harness::new().await;
    let (acme, other) = (h.token("acme"), h.token("other"));
    let mut acme_stream = SseReader::open(&h, &acme, None).await;
    let mut other_stream = SseReader::open(&h, &other, None).await;

    h.paired(PHONE_A, &acme).await;
    let (status, _) = h.clear(PHONE_A, &acme).await;
    assert_eq!(status, StatusCode::OK);

    let frames = acme_stream.until(|f| is(f, "session.cleared", None)).await;
    let names: Vec<&str> = frames.iter().map(|f| f.name.as_str()).collect();
    let position = |name: &str, status: Option<&str>| {
        frames
            .iter()
            .position(|f| is(f, name, status))
            .unwrap_or_else(|| panic!("no {name} {status:?} in {names:?}"))
    };
    assert!(position("session.status", Some("qr")) < position("session.qr", None));
    assert!(position("session.qr", None) < position("session.status", Some("connected")));
    assert!(position("session.status", Some("connected")) < position("session.cleared", None));
    // The status first, then the report: a client reading the report finds
    // the session cleared already.
    assert!(position("session.status", Some("cleared")) < position("session.cleared", None));
    // Every frame: ids strictly increasing, the same id in `id:` and `data`,
    // the common fields, and only this tenant's phone.
    for pair in frames.windows(2) {
        assert!(pair[0].id < pair[1].id, "{names:?}");
    }
    for frame in &frames {
        assert_eq!(frame.id, frame.data["id"].as_u64());
        assert_eq!(frame.data["type"], frame.name.as_str());
        assert_eq!(frame.data["tenant"], "acme");
        assert_eq!(frame.data["phone"], PHONE_A);
        assert!(frame.data["at"].as_u64().is_some());
    }
    let connected = &frames[position("session.status", Some("connected"))];
    assert_eq!(connected.data["ready"], true);
    assert!(connected.data.get("lastError").is_some());
    // The own JID comes with a status event once paired, so a listing kept
    // from events alone shows it without asking again.
    assert!(
        frames[..position("session.cleared", None)]
            .iter()
            .any(|f| f.name == "session.status"
                && f.data["me"].as_str().is_some_and(|me| me.contains('@'))),
        "no session.status with the own JID in {names:?}"
    );
    // The owner gets the QR code itself.
    let qr = &frames[position("session.qr", None)];
    assert!(
        qr.data["qr"].as_str().is_some_and(|q| !q.is_empty()),
        "{qr:?}"
    );
    assert_eq!(qr.data["available"], true);
    // The cleared event carries the reset's report, as the response shows it.
    let report = &frames.last().expect("cleared").data["report"];
    assert_eq!(report["phoneNumber"], PHONE_A);
    assert_eq!(report["loggedOut"], true);
    assert!(report["removed"].as_array().is_some_and(|r| !r.is_empty()));

    // The other tenant saw none of it.
    assert!(
        other_stream
            .drain(Duration::from_millis(300))
            .await
            .is_empty(),
        "another tenant's events leaked"
    );
}

#[tokio::test]
async fn an_operator_sees_every_tenant_but_never_a_qr_code() {
    let h = Harness::new().await;
    let mut operator = SseReader::open(&h, &h.operator(), None).await;
    let (acme, other) = (h.token("acme"), h.token("other"));
    h.create(PHONE_A, &acme).await;
    h.create(PHONE_B, &other).await;
    let mut tenants = std::collections::BTreeSet::new();
    let mut qr_frames = Vec::new();
    operator
        .until(|f| {
            if f.name == "session.qr" {
                tenants.insert(f.data["tenant"].as_str().unwrap_or("").to_owned());
                qr_frames.push(f.clone());
            }
            tenants.len() == 2
        })
        .await;
    for frame in qr_frames {
        assert_eq!(frame.data["qr"], Value::Null, "{frame:?}");
        assert_eq!(frame.data["pairingCode"], Value::Null);
        assert_eq!(frame.data["available"], true);
    }
}

#[tokio::test]
async fn message_statuses_are_streamed_to_the_owner() {
    let h = Harness::new().await;
    let acme = h.token("acme");
    h.paired(PHONE_A, &acme).await;
    let mut stream = SseReader::open(&h, &acme, None).await;
    let (status, body) = h.send_text(PHONE_A, &acme, "5511900000001", "hola").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    let frames = stream
        .until(|f| is(f, "message.status", Some("sent")))
        .await;
    let statuses: Vec<&str> = frames
        .iter()
        .filter(|f| f.name == "message.status")
        .map(|f| f.data["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(statuses, ["queued", "sent"]);
    assert!(frames.iter().all(|f| f.data["messageId"] == id.as_str()));
    h.client(PHONE_A)
        .await
        .receipt(&[id.as_str()], ReceiptKind::Read);
    let read = stream.until(|f| f.name == "message.status").await;
    assert_eq!(read.last().expect("read").data["status"], "read");
    // The text is never part of an event.
    assert!(!read.iter().any(|f| f.data.to_string().contains("hola")));
}

#[tokio::test]
async fn last_event_id_resumes_after_the_last_event_seen() {
    let h = Harness::new().await;
    let acme = h.token("acme");
    let mut first = SseReader::open(&h, &acme, None).await;
    h.create(PHONE_A, &acme).await;
    let seen = first.until(|f| f.name == "session.qr").await;
    let resume_from = seen[0].id.expect("id");
    let later: Vec<u64> = seen[1..].iter().filter_map(|f| f.id).collect();
    assert!(!later.is_empty(), "{seen:?}");

    let mut resumed = SseReader::open(&h, &acme, Some(resume_from)).await;
    let replayed = resumed.drain(Duration::from_millis(300)).await;
    let replayed_ids: Vec<u64> = replayed.iter().filter_map(|f| f.id).collect();
    assert_eq!(replayed_ids[..later.len()], later[..], "{replayed:?}");
    assert!(replayed.iter().all(|f| f.name != "events.missed"));

    // A malformed id is a 400, not a stream.
    let response = h
        .respond(
            Method::GET,
            "/api/events",
            Some(&acme),
            None,
            &[("last-event-id", "yesterday")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_resume_older_than_the_buffer_starts_with_a_missed_marker() {
    let h = Harness::with_config(|c| c.events.buffer = 2).await;
    let acme = h.token("acme");
    let mut first = SseReader::open(&h, &acme, None).await;
    h.paired(PHONE_A, &acme).await;
    let seen = first
        .until(|f| is(f, "session.status", Some("connected")))
        .await;
    assert!(seen.len() > 3, "{seen:?}");
    let oldest = seen[0].id.expect("id");
    let mut resumed = SseReader::open(&h, &acme, Some(oldest)).await;
    let marker = resumed.next(Duration::from_secs(2)).await.expect("marker");
    assert_eq!(marker.name, "events.missed");
    assert_eq!(marker.id, None);
    assert_eq!(marker.data["from"].as_u64(), Some(oldest + 1));
    let to = marker.data["to"].as_u64().expect("to");
    let next = resumed.next(Duration::from_secs(2)).await.expect("event");
    assert_eq!(next.id, Some(to + 1));
}

#[tokio::test]
async fn a_stream_nobody_reads_never_holds_up_a_reset_and_learns_what_it_lost() {
    let h = Harness::with_config(|c| c.events.subscriber_lag = 2).await;
    let acme = h.token("acme");
    // Opened, then never read while the session works.
    let mut stalled = SseReader::open(&h, &acme, None).await;
    h.paired(PHONE_A, &acme).await;
    for n in 0..5 {
        let (status, _) = h
            .send_text(PHONE_A, &acme, "5511900000001", &format!("m{n}"))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let reset = tokio::time::timeout(Duration::from_secs(5), h.clear(PHONE_A, &acme)).await;
    assert_eq!(reset.expect("the reset finished").0, StatusCode::OK);
    let frames = stalled.drain(Duration::from_millis(300)).await;
    let dropped = frames
        .iter()
        .find(|f| f.name == "events.dropped")
        .unwrap_or_else(|| panic!("no drop marker in {frames:?}"));
    assert!(dropped.data["count"].as_u64().is_some_and(|n| n > 0));
    assert_eq!(dropped.id, None);
}

#[tokio::test]
async fn heartbeats_keep_an_idle_stream_alive_and_a_token_is_required() {
    let h = Harness::with_config(|c| c.events.heartbeat = Duration::from_millis(50)).await;
    let response = h
        .respond(
            Method::GET,
            "/api/events",
            Some(&h.token("acme")),
            None,
            &[],
        )
        .await;
    let mut body = response.into_body();
    let chunk = tokio::time::timeout(Duration::from_secs(2), body.frame())
        .await
        .expect("a heartbeat within 2 s")
        .expect("frame")
        .expect("frame");
    let text = String::from_utf8_lossy(chunk.data_ref().expect("data")).into_owned();
    assert!(text.starts_with(':'), "{text:?}");

    let (status, body) = h.call(Method::GET, "/api/events", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["success"], false);
}

/// A tenant token whose `exp` is `exp_from_now` seconds away (negative:
/// already past, still accepted within the 30 s leeway for clock skew).
fn token_expiring(tenant: &str, exp_from_now: i64) -> String {
    let now = lila::clock::now_ms() as i64 / 1000;
    let claims = serde_json::json!({ "companyId": tenant, "exp": now + exp_from_now });
    let key = jsonwebtoken::EncodingKey::from_secret(support::SECRET).expect("key");
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )
    .expect("token")
}

// A stream opened with a token that expired 40 s earlier still delivered events.
#[tokio::test]
async fn a_stream_ends_with_a_last_event_saying_why_when_its_token_expires() {
    let h = Harness::with_config(|c| c.events.heartbeat = Duration::from_millis(200)).await;
    // Accepted for about two more seconds (exp 28 s ago, 30 s of leeway).
    let token = token_expiring("acme", -28);
    let mut stream = SseReader::open(&h, &token, None).await;
    // Heartbeats do not count: the last event must come within 6 s in all.
    let last = tokio::time::timeout(Duration::from_secs(6), stream.next(Duration::from_secs(6)))
        .await
        .ok()
        .flatten()
        .expect("a last event within 6 s");
    assert_eq!(last.name, "events.ended");
    assert_eq!(last.data["reason"], "token_expired");
    assert!(
        last.data["error"]
            .as_str()
            .is_some_and(|e| e.contains("expired"))
    );
    assert_eq!(last.id, None);
    let after =
        tokio::time::timeout(Duration::from_secs(2), stream.next(Duration::from_secs(2))).await;
    assert!(matches!(after, Ok(None)), "the stream ended: {after:?}");
    // Its owner goes on working after the stream ended.
    h.paired(PHONE_A, &h.token("acme")).await;
    assert!(
        h.gateway
            .metrics()
            .http_edge
            .event_streams_expired
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

// Streams per caller used to be unbounded.
#[tokio::test]
async fn a_caller_holds_a_bounded_number_of_streams_and_a_closed_one_frees_its_slot() {
    let h = Harness::with_config(|c| c.events.max_streams_per_caller = 2).await;
    let acme = h.token("acme");
    let first = SseReader::open(&h, &acme, None).await;
    let _second = SseReader::open(&h, &acme, None).await;
    let refused = h
        .respond(Method::GET, "/api/events", Some(&acme), None, &[])
        .await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body = refused
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(body["success"], false);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("already holds 2 event streams")),
        "{body}"
    );
    // Other callers have counts of their own.
    let _globex = SseReader::open(&h, &h.token("globex"), None).await;
    let operator = h.operator();
    let _operator = SseReader::open(&h, &operator, None).await;
    // A client that goes away gives its slot back.
    drop(first);
    let _again = SseReader::open(&h, &acme, None).await;
}

// `events.dropped` used to count every tenant's events a stream fell behind on.
#[tokio::test]
async fn a_drop_count_never_reveals_another_tenants_activity() {
    let h = Harness::with_config(|c| c.events.subscriber_lag = 2).await;
    let mut acme = SseReader::open(&h, &h.token("acme"), None).await;
    // Only globex is busy while acme's stream is not read.
    let globex = h.token("globex");
    h.paired(PHONE_B, &globex).await;
    for n in 0..5 {
        let (status, _) = h
            .send_text(PHONE_B, &globex, "5511900000001", &format!("m{n}"))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let (status, _) = h.clear(PHONE_B, &globex).await;
    assert_eq!(status, StatusCode::OK);
    let frames = acme.drain(Duration::from_millis(300)).await;
    assert!(frames.is_empty(), "acme was shown {frames:?}");
}
