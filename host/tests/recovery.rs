//! Boot-time recovery and auto-recovery: what comes back after a restart,
//! what must not, backups restoring a damaged store, and server-side logouts.

mod support;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use lila::phone::Phone;
use support::Harness;

const PHONE: &str = "51987654321";

#[tokio::test]
async fn a_running_session_resumes_from_disk_without_a_new_qr() {
    let h = Harness::new().await;
    let token = h.token("acme");
    h.paired(PHONE, &token).await;
    let h = h.restart().await;
    let status = h.wait_status(PHONE, &token, "connected").await;
    assert_eq!(status["me"], format!("{PHONE}:7@s.whatsapp.net"));
    assert_eq!(h.wa.starts(&Phone::parse(PHONE).unwrap()), 1);
}

#[tokio::test]
async fn only_sessions_meant_to_run_are_resumed_at_boot() {
    let h = Harness::new().await;
    let token = h.token("acme");
    let running = "51900000001";
    let stopped = "51900000002";
    let logged_out = "51900000003";
    let cleared = "51900000004";
    for phone in [running, stopped, logged_out, cleared] {
        h.paired(phone, &token).await;
    }
    h.call(
        Method::DELETE,
        &format!("/api/sessions/{stopped}"),
        Some(&token),
        None,
    )
    .await;
    h.client(logged_out).await.server_logout();
    h.wait_status(logged_out, &token, "logged_out").await;
    h.clear(cleared, &token).await;
    // Credentials of the stopped and logged-out phones written back by hand, as
    // a careless operator (or the old service) might: still no resume.
    for phone in [stopped, logged_out] {
        let dir = h.layout().session_dir(&Phone::parse(phone).unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("creds.json"), b"{}").unwrap();
    }
    let h = h.restart().await;
    h.wait_status(running, &token, "connected").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for phone in [stopped, logged_out, cleared] {
        assert_eq!(
            h.wa.starts(&Phone::parse(phone).unwrap()),
            0,
            "{phone} was resumed"
        );
    }
    assert_eq!(h.status(stopped, &token).await.1["status"], "stopped");
    assert_eq!(h.status(logged_out, &token).await.1["status"], "logged_out");
    assert_eq!(h.status(cleared, &token).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_server_side_logout_removes_dead_credentials_and_does_not_loop_on_qr() {
    let h = Harness::new().await;
    let token = h.token("acme");
    h.paired(PHONE, &token).await;
    let phone = Phone::parse(PHONE).unwrap();
    let layout = h.layout();
    h.wait_for("a backup", || layout.backup_dir(&phone).exists())
        .await;
    h.client(PHONE).await.server_logout();
    let status = h.wait_status(PHONE, &token, "logged_out").await;
    assert_eq!(status["ready"], false);
    assert!(status["lastError"].as_str().unwrap().contains("logged out"));
    assert!(
        !layout.session_dir(&phone).exists(),
        "dead credentials are removed"
    );
    assert!(
        !layout.backup_dir(&phone).exists(),
        "and so are backups of them"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(h.wa.starts(&phone), 1, "no restart, so no QR loop");
    assert_eq!(
        h.get(&format!("/api/sessions/{PHONE}/qr"), &token).await.0,
        StatusCode::NOT_FOUND
    );
    // The tenant pairs again explicitly.
    h.create(PHONE, &token).await;
    h.wait_status(PHONE, &token, "qr").await;
}

#[tokio::test]
async fn a_damaged_store_is_restored_from_the_newest_good_backup() {
    let h = Harness::new().await;
    let token = h.token("acme");
    h.paired(PHONE, &token).await;
    let phone = Phone::parse(PHONE).unwrap();
    let layout = h.layout();
    h.wait_for("a backup", || layout.backup_dir(&phone).exists())
        .await;
    let h = h.restart().await;
    h.wait_status(PHONE, &token, "connected").await;
    h.gateway.shutdown().await;
    // Damage the live store while the process is down.
    let store = layout.store_file(&phone);
    std::fs::write(&store, vec![0x42; 8192]).unwrap();
    let h = h.restart().await;
    let status = h.wait_status(PHONE, &token, "connected").await;
    assert_eq!(
        status["me"],
        format!("{PHONE}:7@s.whatsapp.net"),
        "the pairing came back from the backup"
    );
    let (_, metrics) = h.call(Method::GET, "/metrics", None, None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("lila_backups_restored_total 1")
    );
}

#[tokio::test]
async fn backups_are_consistent_snapshots_kept_to_the_retention_count() {
    let h = Harness::new().await;
    let token = h.token("acme");
    h.paired(PHONE, &token).await;
    let dir = h.layout().backup_dir(&Phone::parse(PHONE).unwrap());
    // Interval 100 ms, retention 3: after a while exactly three remain.
    tokio::time::sleep(Duration::from_millis(900)).await;
    // Dot-files are a snapshot being written right now.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for name in names {
        assert!(
            name.starts_with("backup-") && name.ends_with(".db"),
            "{name}"
        );
        let health = lila::storage::backups::health(&dir.join(&name));
        assert_eq!(health, lila::core::recovery::StoreHealth::Healthy);
    }
}

#[tokio::test]
async fn unscanned_qr_codes_running_out_stop_the_session() {
    let h = Harness::new().await;
    let token = h.token("acme");
    h.create(PHONE, &token).await;
    h.wait_status(PHONE, &token, "qr").await;
    h.client(PHONE).await.qr_codes_exhausted();
    let status = h.wait_status(PHONE, &token, "failed").await;
    assert!(status["lastError"].as_str().unwrap().contains("QR"));
    let h = h.restart().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        h.wa.starts(&Phone::parse(PHONE).unwrap()),
        0,
        "an abandoned pairing is not restarted at boot"
    );
}

/// Seen at 4,500 sessions: the simulator reset a pairing connection, and the
/// session went on showing a QR code the server had forgotten. A drop during
/// pairing now hides the dead code and pairs again with a new client.
#[tokio::test]
async fn a_connection_dropped_during_pairing_brings_a_fresh_qr_from_a_new_client() {
    let h = Harness::new().await;
    let token = h.token("acme");
    let phone = Phone::parse(PHONE).unwrap();
    h.create(PHONE, &token).await;
    h.wait_status(PHONE, &token, "qr").await;
    let (_, first) = h.get(&format!("/api/sessions/{PHONE}/qr"), &token).await;
    let dropped = h.client(PHONE).await;
    dropped.drop_connection();
    let status = h.wait_status(PHONE, &token, "reconnecting").await;
    assert!(
        status["lastError"]
            .as_str()
            .unwrap_or("")
            .contains("pairing"),
        "{status}"
    );
    let (code, body) = h.get(&format!("/api/sessions/{PHONE}/qr"), &token).await;
    assert_eq!(
        code,
        StatusCode::NOT_FOUND,
        "the dead code is not shown: {body}"
    );
    h.wait_for("a second client", || h.wa.starts(&phone) == 2)
        .await;
    assert!(
        dropped.is_stopped(),
        "the dropped pairing's client is stopped"
    );
    h.wait_status(PHONE, &token, "qr").await;
    let (_, fresh) = h.get(&format!("/api/sessions/{PHONE}/qr"), &token).await;
    assert!(fresh["qr"].is_string(), "{fresh}");
    assert_ne!(fresh["qr"], first["qr"], "a fresh code, not the dead one");
    let (_, metrics) = h.call(Method::GET, "/metrics", None, None).await;
    assert!(
        metrics
            .as_str()
            .is_some_and(|m| m.lines().any(|l| l == "lila_pairing_restarts_total 1")),
        "{metrics}"
    );
    // The fresh code is scanned: the session connects on the new client.
    h.client(PHONE).await.scan();
    h.wait_status(PHONE, &token, "connected").await;
    assert_eq!(h.wa.live(&phone), 1);
}

#[tokio::test]
async fn a_client_that_fails_to_start_is_retried_with_backoff() {
    let h = Harness::new().await;
    let token = h.token("acme");
    h.wa.behaviour
        .fail_starts
        .store(true, std::sync::atomic::Ordering::SeqCst);
    h.create(PHONE, &token).await;
    let status = h.wait_status(PHONE, &token, "failed").await;
    assert!(
        status["lastError"]
            .as_str()
            .unwrap()
            .contains("scripted start failure")
    );
    h.wa.behaviour
        .fail_starts
        .store(false, std::sync::atomic::Ordering::SeqCst);
    h.wait_status(PHONE, &token, "qr").await;
}

#[tokio::test]
async fn a_dropped_socket_reconnects_and_resumes_sending() {
    let h = Harness::new().await;
    let token = h.token("acme");
    h.paired(PHONE, &token).await;
    let client = h.client(PHONE).await;
    client.drop_connection();
    h.wait_status(PHONE, &token, "reconnecting").await;
    let (status, _) = h
        .post(
            &format!("/api/sessions/{PHONE}/messages"),
            &token,
            serde_json::json!({"to": "51900000001", "text": "after"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(h.wa.sent().is_empty(), "nothing is sent while disconnected");
    client.scan();
    h.wait_status(PHONE, &token, "connected").await;
    h.wait_for("the send", || h.wa.sent().len() == 1).await;
}

// Regression: the real client ends its run loop on a 401, and its LoggedOut
// event (delivered on another task) can arrive after that exit. The exit used
// to retire the client's generation at once, so the LoggedOut was dropped and
// the session restarted with dead credentials.
#[tokio::test]
async fn regression_a_logout_reported_after_the_client_exited_still_logs_out() {
    let h = Harness::new().await;
    let token = h.token("acme");
    h.paired(PHONE, &token).await;
    let client = h.client(PHONE).await;
    client.emit_late(lila::core::status::SessionEvent::ClientExited { error: None });
    client.server_logout();
    h.wait_status(PHONE, &token, "logged_out").await;
    assert!(
        !h.layout()
            .session_dir(&Phone::parse(PHONE).unwrap())
            .exists()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        h.wa.starts(&Phone::parse(PHONE).unwrap()),
        1,
        "no restart with dead credentials"
    );
}

/// The value of the metric line that starts with `series` (0 when absent).
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn an_unreachable_whatsapp_shows_reconnecting_and_is_retried_with_backoff() {
    use std::sync::atomic::Ordering;
    let h = Harness::with_config(|c| c.sessions.max_restart_backoff = Duration::from_secs(4)).await;
    let token = h.token("acme");
    let phone = Phone::parse(PHONE).expect("phone");
    h.wa.behaviour.unreachable.store(true, Ordering::SeqCst);
    h.create(PHONE, &token).await;

    let status = h.wait_status(PHONE, &token, "reconnecting").await;
    let error = status["lastError"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("cannot reach WhatsApp: the connection was refused"),
        "{status}"
    );
    assert_eq!(status["ready"], false);

    // Observe for 3 s: lila, not the client, owns the retry. Each failed
    // client is stopped (its own loop would retry at its own pace), and the
    // next start waits 0.5–1 s, then 1–2 s, then 2–4 s: at most 4 starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let starts = h.wa.starts(&phone);
    assert!((2..=4).contains(&starts), "{starts} starts in 3 s");
    assert_eq!(h.wa.live(&phone), 0, "a failed client is stopped at once");
    let (_, body) = h.status(PHONE, &token).await;
    assert_eq!(
        body["status"], "reconnecting",
        "never flips back to starting"
    );

    let (_, metrics) = h.call(Method::GET, "/metrics", None, None).await;
    let text = metrics.as_str().unwrap_or_default();
    let refused = metric(text, "lila_connection_failures_total{cause=\"refused\"}");
    assert!(
        refused as usize >= starts - 1 && refused as usize <= starts,
        "{refused} failures counted for {starts} starts:\n{text}"
    );

    // WhatsApp is back: the next attempt shows a QR and the reason goes away.
    h.wa.behaviour.unreachable.store(false, Ordering::SeqCst);
    for _ in 0..60 {
        if h.status(PHONE, &token).await.1["status"] == "qr" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, body) = h.status(PHONE, &token).await;
    assert_eq!(body["status"], "qr", "{body}");
    assert_eq!(body["lastError"], serde_json::Value::Null);
}
