//! The gateway at scale: listings and lookups that cost O(the caller's
//! sessions) and start no task, and a shutdown that stops every session at
//! once within its deadline.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use lila::phone::Phone;
use support::Harness;

fn phones(body: &serde_json::Value) -> Vec<(String, String)> {
    body["sessions"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|s| {
            (
                s["phoneNumber"].as_str().unwrap_or("").to_owned(),
                s["status"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_listing_reads_the_index_starts_no_actor_and_shows_only_the_callers_phones() {
    let h = Harness::new().await;
    let acme = h.token("acme");
    let zeta = h.token("zeta");
    for phone in ["51900000001", "51900000002", "51900000003"] {
        h.paired(phone, &acme).await;
    }
    h.paired("51900000009", &zeta).await;
    let (status, body) = h
        .call(
            Method::DELETE,
            "/api/sessions/51900000002",
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = h.clear("51900000003", &acme).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A new process: boot resumes the two running sessions, and only those get a task.
    let h = h.restart().await;
    assert_eq!(
        h.gateway.live_actors(),
        2,
        "a stopped or cleared phone costs no task"
    );
    let (status, body) = h.get("/api/sessions", &acme).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed = phones(&body);
    assert_eq!(
        listed.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        ["51900000001", "51900000002"],
        "its own, the cleared one excluded: {body}"
    );
    assert_eq!(listed[1].1, "stopped");
    assert_eq!(h.gateway.live_actors(), 2, "listing started nothing");
    let (_, body) = h.get("/api/sessions", &zeta).await;
    assert_eq!(phones(&body).len(), 1);
    let (_, body) = h.get("/api/sessions", &h.operator()).await;
    assert_eq!(phones(&body).len(), 3);
    // A live session's listing follows its state without asking its actor.
    h.wait_status("51900000001", &acme, "connected").await;
    let (_, body) = h.get("/api/sessions", &acme).await;
    assert_eq!(phones(&body)[0].1, "connected", "{body}");
}

#[tokio::test]
async fn a_request_about_a_phone_the_host_never_saw_is_404_and_starts_no_task() {
    let h = Harness::new().await;
    let acme = h.token("acme");
    for path in [
        "/api/sessions/51911111111/status",
        "/api/sessions/51911111111/qr",
        "/api/sessions/51911111111/outbox",
        "/api/sessions/51911111111/contacts",
    ] {
        let (status, body) = h.get(path, &acme).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    assert_eq!(h.gateway.live_actors(), 0);
}

/// A reset or a refused create of a number nobody has costs nothing that
/// outlives the request: the actor the request needed ends, and the
/// gateway forgets it (10,000 such resets used to keep 10,000 actors).
#[tokio::test]
async fn resets_of_numbers_nobody_has_leave_no_actor_behind() {
    let h = Harness::new().await;
    let acme = h.token("acme");
    let operator = h.operator();
    const PHONES: usize = 1000;
    for i in 0..PHONES {
        let phone = format!("5197{i:07}");
        let token = if i % 2 == 0 { &acme } else { &operator };
        let (status, body) = h.clear(&phone, token).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{phone}: {body}");
    }
    h.wait_for("every actor retired", || h.gateway.actors_held() == 0)
        .await;
    assert_eq!(h.gateway.live_actors(), 0);
    assert!(
        h.gateway.metrics().actors_retired.load(Ordering::SeqCst) >= PHONES as u64,
        "counted in lila_actors_retired_total"
    );
    assert_eq!(
        h.gateway.metrics().actor_panics.load(Ordering::SeqCst),
        0,
        "a retired actor is not a panic"
    );
    // The phones are still nobody's, and a create works as before: its
    // actor keeps the record, and stays.
    let (status, body) = h.create("51970000001", &acme).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(h.gateway.actors_held(), 1);
    let (status, _) = h.status("51970000002", &acme).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        !h.layout()
            .phone_record_file(&Phone::parse("51970000002").unwrap())
            .exists()
    );
}

#[tokio::test]
async fn shutdown_stops_every_session_at_once_without_logging_out_and_all_resume() {
    let h = Harness::new().await;
    let acme = h.token("acme");
    let phones: Vec<String> = (0..30).map(|i| format!("5190000{i:04}")).collect();
    for phone in &phones {
        h.paired(phone, &acme).await;
    }
    let clients: Vec<_> = phones
        .iter()
        .map(|p| h.wa.latest(&Phone::parse(p).unwrap()).unwrap())
        .collect();
    // Each socket takes 400 ms to close: one after another they would need
    // 12 s, far past the deadline.
    h.wa.behaviour.stop_delay_ms.store(400, Ordering::SeqCst);
    let summary = h.gateway.shutdown_within(Duration::from_secs(3)).await;
    assert_eq!((summary.stopped, summary.abandoned), (30, 0));
    assert!(clients.iter().all(|c| c.is_stopped() && !c.logged_out()));

    let h = h.restart().await;
    for phone in &phones {
        // Back without a QR: the credentials were kept.
        h.wait_status(phone, &acme, "connected").await;
    }
}

#[tokio::test]
async fn a_session_that_will_not_stop_does_not_hold_the_shutdown_past_its_deadline() {
    let h = Harness::new().await;
    let acme = h.token("acme");
    h.paired("51900000001", &acme).await;
    h.paired("51900000002", &acme).await;
    h.wa.behaviour
        .stop_delay_ms
        .store(600_000, Ordering::SeqCst);
    let summary = h.gateway.shutdown_within(Duration::from_millis(200)).await;
    assert_eq!((summary.stopped, summary.abandoned), (0, 2));
}

/// Regression (found by the reset race campaign, seed
/// 1796236180498239542): a reset, a create, a send and a status of a new
/// number at once. The actor the reset started retires; no request may
/// reach it as it does and answer 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_racing_a_retiring_actor_never_answer_a_server_error() {
    let h = std::sync::Arc::new(Harness::new().await);
    let acme = h.token("acme");
    for i in 0..200 {
        let phone = format!("5195{i:07}");
        let mut tasks = Vec::new();
        for op in 0..4 {
            let (h, token, phone) = (h.clone(), acme.clone(), phone.clone());
            tasks.push(tokio::spawn(async move {
                match op {
                    0 => h.clear(&phone, &token).await,
                    1 => h.create(&phone, &token).await,
                    2 => {
                        h.post(
                            &format!("/api/sessions/{phone}/messages"),
                            &token,
                            serde_json::json!({"to": "51900000001", "text": "x"}),
                        )
                        .await
                    }
                    _ => h.status(&phone, &token).await,
                }
            }));
        }
        for task in tasks {
            let (status, body) = task.await.expect("a request task");
            assert!(!status.is_server_error(), "{phone}: {status} {body}");
        }
    }
}

/// Regression (the reset race campaign, seeds 1796314912235877244 and
/// 1796314912235877279: "Clear answered 503"): many resets and creates of a
/// number with no record at once. Each actor carries out one of them and
/// retires, dropping the others unseen; they go to the next actor, however
/// many rounds that takes, and none answers a server error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_resets_racing_for_a_new_number_all_get_through() {
    let h = std::sync::Arc::new(Harness::new().await);
    let acme = h.token("acme");
    for i in 0..20 {
        let phone = format!("5194{i:07}");
        let mut tasks = Vec::new();
        for op in 0..24 {
            let (h, token, phone) = (h.clone(), acme.clone(), phone.clone());
            tasks.push(tokio::spawn(async move {
                // One create among many resets: the record it makes is the
                // last reset's to remove.
                if op == 12 {
                    h.create(&phone, &token).await
                } else {
                    h.clear(&phone, &token).await
                }
            }));
        }
        for task in tasks {
            let (status, body) = task.await.expect("a request task");
            assert!(!status.is_server_error(), "{phone}: {status} {body}");
        }
    }
}
