//! What one phone and one tenant may hold: the outbox's bounds per phone and
//! per tenant (messages and stored bytes), and the sessions a tenant may
//! own. Each refusal is a 429 (waiting helps) or a 413 (it never fits) with
//! a sentence, counted in `/metrics`; other tenants are not affected.

mod support;

use axum::http::{Method, StatusCode};
use serde_json::json;
use support::Harness;

const A: &str = "51987654321";
const B: &str = "51987654322";
const C: &str = "51987654323";
const TO: &str = "51900000001";

async fn metric(h: &Harness, line_start: &str) -> u64 {
    let (status, body) = h.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap_or_default().to_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
}

#[tokio::test]
async fn a_phones_outbox_is_bounded_in_messages_and_in_stored_bytes() {
    let h = Harness::with_config(|c| {
        c.limits.outbox_per_phone.max_messages = 3;
        c.limits.outbox_per_phone.max_bytes = 4_000;
    })
    .await;
    let acme = h.token("acme");
    h.create(A, &acme).await;
    for text in ["uno", "dos", "tres"] {
        let (status, body) = h.send_text(A, &acme, TO, text).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let (status, body) = h.send_text(A, &acme, TO, "cuatro").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let sentence = body["error"].as_str().unwrap();
    assert!(sentence.contains("3 messages"), "{sentence}");
    assert_eq!(body["success"], false);
    assert_eq!(
        metric(&h, "lila_outbox_refused_total{limit=\"phone_messages\"}").await,
        1
    );

    // Bytes: as stored, so a text of control characters (six bytes each
    // once escaped) counts six times its length.
    h.create(B, &acme).await;
    let (status, body) = h.send_text(B, &acme, TO, &"\u{1}".repeat(700)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("4000 bytes"),
        "{body}"
    );
    let (status, body) = h.send_text(B, &acme, TO, &"x".repeat(1_800)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = h.send_text(B, &acme, TO, &"x".repeat(1_800)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = h.send_text(B, &acme, TO, &"x".repeat(1_800)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body["error"].as_str().unwrap().contains("bytes"), "{body}");
    assert_eq!(
        metric(&h, "lila_outbox_refused_total{limit=\"phone_bytes\"}").await,
        2
    );
    // Nothing refused was queued.
    let (_, pending) = h.get(&format!("/api/sessions/{B}/outbox"), &acme).await;
    assert_eq!(pending["count"], 2, "{pending}");
}

#[tokio::test]
async fn a_tenants_phones_share_one_outbox_limit_that_other_tenants_do_not_feel_and_a_restart_remembers()
 {
    let h = Harness::with_config(|c| {
        c.limits.outbox_per_tenant.max_messages = 4;
    })
    .await;
    let (acme, globex) = (h.token("acme"), h.token("globex"));
    h.create(A, &acme).await;
    h.create(B, &acme).await;
    h.create(C, &globex).await;
    for _ in 0..3 {
        assert_eq!(h.send_text(A, &acme, TO, "a").await.0, StatusCode::ACCEPTED);
    }
    assert_eq!(h.send_text(B, &acme, TO, "b").await.0, StatusCode::ACCEPTED);
    let (status, body) = h.send_text(B, &acme, TO, "b").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("account"),
        "{body}"
    );
    for _ in 0..4 {
        let (status, body) = h.send_text(C, &globex, TO, "c").await;
        assert_eq!(status, StatusCode::ACCEPTED, "globex is not acme: {body}");
    }
    assert_eq!(
        metric(&h, "lila_outbox_refused_total{limit=\"tenant_messages\"}").await,
        1
    );

    // A new process counts what is on disk before any session runs.
    let h = h.restart().await;
    let acme = h.token("acme");
    let (status, body) = h.send_text(B, &acme, TO, "b").await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "after a restart: {body}"
    );
    // A reset empties a phone and gives its room back.
    let (status, body) = h.clear(A, &acme).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = h.send_text(B, &acme, TO, "b").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

#[tokio::test]
async fn a_tenant_owns_a_bounded_number_of_sessions_even_when_it_creates_them_at_once() {
    let h = Harness::with_config(|c| c.limits.max_sessions_per_tenant = 2).await;
    let (acme, globex, operator) = (h.token("acme"), h.token("globex"), h.operator());
    let phones: Vec<String> = (0..8).map(|i| format!("5198765430{i}")).collect();
    // All at once, on one task: the creates interleave at every await.
    let (a, b, c, d, e, f, g, i) = tokio::join!(
        h.create(&phones[0], &acme),
        h.create(&phones[1], &acme),
        h.create(&phones[2], &acme),
        h.create(&phones[3], &acme),
        h.create(&phones[4], &acme),
        h.create(&phones[5], &acme),
        h.create(&phones[6], &acme),
        h.create(&phones[7], &acme),
    );
    let answers = [a, b, c, d, e, f, g, i];
    let created = answers.iter().filter(|(s, _)| s.is_success()).count();
    assert_eq!(created, 2, "{answers:?}");
    let refused: Vec<_> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(refused.len(), 6, "{answers:?}");
    assert!(
        refused[0].1["error"]
            .as_str()
            .unwrap()
            .contains("2 sessions"),
        "{:?}",
        refused[0]
    );
    assert_eq!(
        metric(&h, "lila_sessions_refused_tenant_limit_total").await,
        6
    );
    // Creating a session it already has is not a new one.
    let mine: Vec<&String> = phones
        .iter()
        .zip(&answers)
        .filter(|(_, (s, _))| s.is_success())
        .map(|(p, _)| p)
        .collect();
    assert!(h.create(mine[0], &acme).await.0.is_success());
    // Another tenant has its own room; an operator is exempt.
    assert!(h.create(C, &globex).await.0.is_success());
    let (status, body) = h
        .post(
            "/api/sessions",
            &operator,
            json!({"phoneNumber": A, "companyId": "acme"}),
        )
        .await;
    assert!(status.is_success(), "{body}");
    // A reset frees a place.
    let (_, listed) = h.get("/api/sessions", &acme).await;
    assert_eq!(
        listed["sessions"].as_array().map(Vec::len),
        Some(3),
        "{listed}"
    );
    assert_eq!(h.clear(mine[0], &acme).await.0, StatusCode::OK);
    assert_eq!(h.clear(A, &acme).await.0, StatusCode::OK);
    let (status, body) = h.create(&phones[7], &acme).await;
    assert!(status.is_success(), "{body}");
}
