//! The reset (`POST /api/sessions/{phone}/clear`): the seed analysis's testing
//! checklist, one test per item, and the properties SPEC section 4 requires.

mod support;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use lila::phone::Phone;
use serde_json::json;
use support::{Harness, files_under, snapshot};

const PHONE: &str = "51987654321";
const OTHER: &str = "51911111111";

/// A paired session with backups taken, a queued message and stray files of
/// the kind the replaced service left (creds.json and friends).
async fn lived_in_session(h: &Harness, phone: &str, token: &str) {
    h.paired(phone, token).await;
    let layout = h.layout();
    let p = Phone::parse(phone).unwrap();
    h.wait_for("a backup", || {
        std::fs::read_dir(layout.backup_dir(&p))
            .map(|d| d.count() > 0)
            .unwrap_or(false)
    })
    .await;
    // One message sent, so that its status is on disk.
    let (status, _) = h
        .post(
            &format!("/api/sessions/{phone}/messages"),
            token,
            json!({"to": "51900000001", "text": "primero"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let statuses = layout.root().join(format!("whatsapp/status/{phone}.json"));
    h.wait_for("a sent message's status", || {
        std::fs::read_to_string(&statuses).is_ok_and(|s| s.contains("\"sent\""))
    })
    .await;
    h.client(phone).await.drop_connection();
    h.wait_status(phone, token, "reconnecting").await;
    let (status, _) = h
        .post(
            &format!("/api/sessions/{phone}/messages"),
            token,
            json!({"to": "51900000001", "text": "hola"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    for stray in ["creds.json", "app-state-sync-key-1.json", "session-x.json"] {
        std::fs::write(layout.session_dir(&p).join(stray), b"{}").unwrap();
    }
    assert!(layout.outbox_file(&p).exists());
}

// Checklist: "Portal 'Reset Session' button calls endpoint successfully".
#[tokio::test]
async fn checklist_portal_reset_button_gets_a_success_response() {
    let h = Harness::new().await;
    let token = h.token("acme");
    lived_in_session(&h, PHONE, &token).await;
    // The Portal's proxy: POST with an empty JSON body and the company's token.
    let (status, body) = h
        .call(
            Method::POST,
            &format!("/api/sessions/{PHONE}/clear"),
            Some(&token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["phoneNumber"], PHONE);
    assert_eq!(body["loggedOut"], true);
    assert_eq!(body["outboxMessagesDropped"], 1);
    let kinds: Vec<_> = body["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["session", "backups", "outbox", "message-statuses"]);
    assert!(
        body["removed"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["existed"] == true),
        "{body}"
    );
}

// Checklist: "Physical session files deleted from data/sessions/{phone}/".
#[tokio::test]
async fn checklist_session_files_are_deleted() {
    let h = Harness::new().await;
    let token = h.token("acme");
    lived_in_session(&h, PHONE, &token).await;
    let dir = h.layout().session_dir(&Phone::parse(PHONE).unwrap());
    assert!(dir.join("whatsapp.db").exists() && dir.join("creds.json").exists());
    assert_eq!(h.clear(PHONE, &token).await.0, StatusCode::OK);
    assert!(!dir.exists(), "{} still exists", dir.display());
}

// Checklist: "Queue file deleted from data/whatsapp/outbox/{phone}.json".
#[tokio::test]
async fn checklist_queue_file_is_deleted() {
    let h = Harness::new().await;
    let token = h.token("acme");
    lived_in_session(&h, PHONE, &token).await;
    let file = h.layout().outbox_file(&Phone::parse(PHONE).unwrap());
    assert_eq!(h.clear(PHONE, &token).await.0, StatusCode::OK);
    assert!(!file.exists());
    let (_, body) = h.create(PHONE, &token).await;
    assert_eq!(
        body["pendingMessages"], 0,
        "the dropped message must not come back"
    );
}

// Checklist: "Backup files deleted (if exist)".
#[tokio::test]
async fn checklist_backups_are_deleted() {
    let h = Harness::new().await;
    let token = h.token("acme");
    lived_in_session(&h, PHONE, &token).await;
    let backups = h.layout().backup_dir(&Phone::parse(PHONE).unwrap());
    assert!(backups.exists());
    assert_eq!(h.clear(PHONE, &token).await.0, StatusCode::OK);
    // Wait well past the backup interval: no snapshot may be written afterwards.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!backups.exists());
}

// Checklist: "Session does NOT auto-reconnect after reset".
#[tokio::test]
async fn checklist_session_does_not_auto_reconnect_after_reset() {
    let h = Harness::new().await;
    let token = h.token("acme");
    lived_in_session(&h, PHONE, &token).await;
    let phone = Phone::parse(PHONE).unwrap();
    let old = h.client(PHONE).await;
    assert_eq!(h.clear(PHONE, &token).await.0, StatusCode::OK);
    assert!(old.logged_out(), "the reset logs the device out");
    let starts = h.wa.starts(&phone);
    // The old socket's pending reconnect fires late: it must change nothing.
    old.emit_late(lila::core::status::SessionEvent::Connected { me: Some(old.me()) });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(h.wa.starts(&phone), starts, "no restart after a reset");
    assert_eq!(h.wa.live(&phone), 0);
    assert!(h.gateway.session(&phone).is_idle().await);
    assert_eq!(h.status(PHONE, &token).await.0, StatusCode::NOT_FOUND);

    // Nor after a restart of the process.
    let h = h.restart().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.wa.starts(&phone), 0, "boot must not resume a reset phone");
    assert!(!h.layout().session_dir(&phone).exists());
}

// Checklist: "New QR generated successfully when creating session again".
#[tokio::test]
async fn checklist_creating_again_after_reset_gives_a_fresh_qr() {
    let h = Harness::new().await;
    let token = h.token("acme");
    lived_in_session(&h, PHONE, &token).await;
    let (_, before) = h.status(PHONE, &token).await;
    assert!(before["me"].is_string());
    assert_eq!(h.clear(PHONE, &token).await.0, StatusCode::OK);
    let (status, body) = h.create(PHONE, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let status = h.wait_status(PHONE, &token, "qr").await;
    assert_eq!(
        status["me"],
        json!(null),
        "a fresh session knows nothing of the old pairing"
    );
    let (status, qr) = h.get(&format!("/api/sessions/{PHONE}/qr"), &token).await;
    assert_eq!(status, StatusCode::OK, "{qr}");
    assert!(qr["qr"].as_str().unwrap().starts_with("2@"));
    assert!(
        qr["qrImage"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,")
    );
}

// Checklist: "No orphaned files remain in data directories".
#[tokio::test]
async fn checklist_no_orphaned_files_remain() {
    let h = Harness::new().await;
    let token = h.token("acme");
    lived_in_session(&h, PHONE, &token).await;
    assert_eq!(h.clear(PHONE, &token).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let left: Vec<_> = files_under(h.root())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(PHONE))
        .collect();
    // Only the host's own tombstone remains, outside sessions/ and whatsapp/.
    assert_eq!(
        left,
        [std::path::PathBuf::from(format!(
            "lila/phones/{PHONE}.json"
        ))]
    );
}

// The original bug: files left by an earlier run, and no session in memory.
#[tokio::test]
async fn reset_purges_files_of_a_session_that_is_not_in_memory() {
    let h = Harness::new().await;
    let token = h.token("acme");
    lived_in_session(&h, PHONE, &token).await;
    // A fresh process in which the session never came up (its client fails to
    // start), so nothing about it is in memory but the files on disk.
    let h = h.restart().await;
    h.wa.behaviour
        .fail_starts
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let phone = Phone::parse(PHONE).unwrap();
    assert!(h.layout().session_dir(&phone).exists());
    let (status, body) = h.clear(PHONE, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!h.layout().session_dir(&phone).exists());
    assert!(!h.layout().backup_dir(&phone).exists());
    assert!(!h.layout().outbox_file(&phone).exists());
}

// Same, with files written by another program and no record at all: only an operator may purge them.
#[tokio::test]
async fn an_operator_purges_ownerless_files_left_by_the_old_service() {
    let h = Harness::new().await;
    let layout = h.layout();
    let phone = Phone::parse(PHONE).unwrap();
    std::fs::create_dir_all(layout.session_dir(&phone)).unwrap();
    std::fs::write(
        layout.session_dir(&phone).join("creds.json"),
        b"{\"noiseKey\":1}",
    )
    .unwrap();
    std::fs::create_dir_all(layout.backup_dir(&phone)).unwrap();
    std::fs::write(layout.backup_dir(&phone).join("2026-02-09.json"), b"{}").unwrap();
    std::fs::create_dir_all(layout.outbox_dir()).unwrap();
    std::fs::write(layout.outbox_file(&phone), b"[]").unwrap();
    let h = h.restart().await;
    assert_eq!(h.wa.starts(&phone), 0, "files alone never resume a session");
    assert_eq!(
        h.clear(PHONE, &h.token("acme")).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = h.clear(PHONE, &h.operator()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        !layout.session_dir(&phone).exists()
            && !layout.backup_dir(&phone).exists()
            && !layout.outbox_file(&phone).exists()
    );
}

#[tokio::test]
async fn reset_is_idempotent_for_its_owner() {
    let h = Harness::new().await;
    let token = h.token("acme");
    lived_in_session(&h, PHONE, &token).await;
    assert_eq!(h.clear(PHONE, &token).await.0, StatusCode::OK);
    let (status, body) = h.clear(PHONE, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["removed"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["existed"] == false)
    );
    assert_eq!(body["loggedOut"], false);
}

#[tokio::test]
async fn a_reset_of_one_phone_leaves_another_phones_files_byte_identical() {
    let h = Harness::new().await;
    let token = h.token("acme");
    lived_in_session(&h, PHONE, &token).await;
    lived_in_session(&h, OTHER, &token).await;
    // Quiesce the other phone's writers (backups) so its files stop changing on their own.
    let other = Phone::parse(OTHER).unwrap();
    h.gateway
        .session(&other)
        .disconnect(lila::core::tenant::Caller::Operator)
        .await
        .ok();
    let (_, _) = h.create(OTHER, &token).await;
    h.wait_status(OTHER, &token, "qr").await;
    let before: Vec<_> = snapshot(h.root())
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().contains(OTHER))
        .collect();
    assert!(!before.is_empty());
    assert_eq!(h.clear(PHONE, &token).await.0, StatusCode::OK);
    let after: Vec<_> = snapshot(h.root())
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().contains(OTHER))
        .collect();
    assert_eq!(before, after);
    assert_eq!(h.status(OTHER, &token).await.1["status"], "qr");
}

#[tokio::test]
async fn a_logout_that_hangs_does_not_hold_up_the_reset() {
    let h = Harness::new().await;
    let token = h.token("acme");
    h.paired(PHONE, &token).await;
    h.wa.behaviour
        .hang_logout
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let started = std::time::Instant::now();
    let (status, body) = h.clear(PHONE, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["loggedOut"], false);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        !h.layout()
            .session_dir(&Phone::parse(PHONE).unwrap())
            .exists()
    );
}

/// Reset racing a pending reconnect, a start, a send and another reset,
/// many times: one consistent end state, and never a resurrection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reset_racing_reconnect_start_send_and_reset_never_resurrects() {
    let h = std::sync::Arc::new(Harness::new().await);
    let token = h.token("acme");
    let phone = Phone::parse(PHONE).unwrap();
    let layout = h.layout();
    for round in 0..40 {
        h.paired(PHONE, &token).await;
        let client = h.client(PHONE).await;
        let tasks = vec![
            tokio::spawn({
                let h = h.clone();
                let t = token.clone();
                async move { h.clear(PHONE, &t).await.0 }
            }),
            tokio::spawn({
                let h = h.clone();
                let t = token.clone();
                async move { h.create(PHONE, &t).await.0 }
            }),
            tokio::spawn({
                let h = h.clone();
                let t = token.clone();
                async move {
                    h.post(
                        &format!("/api/sessions/{PHONE}/messages"),
                        &t,
                        json!({"to": "51900000001", "text": "x"}),
                    )
                    .await
                    .0
                }
            }),
            tokio::spawn({
                let h = h.clone();
                let t = token.clone();
                async move { h.clear(PHONE, &t).await.0 }
            }),
            tokio::spawn(async move {
                client.drop_and_reconnect();
                StatusCode::OK
            }),
        ];
        for task in tasks {
            let status = task.await.unwrap();
            assert!(
                status.is_success() || status == StatusCode::NOT_FOUND,
                "round {round}: {status}"
            );
        }
        // One consistent state: either cleared with nothing on disk, or
        // running with exactly one live client.
        let (status, body) = h.status(PHONE, &token).await;
        if status == StatusCode::NOT_FOUND {
            assert!(
                !layout.session_dir(&phone).exists(),
                "round {round}: cleared but files remain"
            );
            assert!(!layout.outbox_file(&phone).exists(), "round {round}");
            assert_eq!(h.wa.live(&phone), 0, "round {round}");
        } else {
            // Running: once any start in flight has settled, exactly one client lives.
            let settled = h.wait_status(PHONE, &token, "qr").await;
            assert_eq!(h.wa.live(&phone), 1, "round {round}: {body} then {settled}");
        }
        // The final reset: afterwards nothing comes back.
        assert_eq!(h.clear(PHONE, &token).await.0, StatusCode::OK);
        let starts = h.wa.starts(&phone);
        for client in h.wa.clients(&phone) {
            client.emit_late(lila::core::status::SessionEvent::Connected { me: None });
            client.emit_late(lila::core::status::SessionEvent::ClientExited { error: None });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(h.wa.starts(&phone), starts, "round {round}: resurrected");
        assert_eq!(h.wa.live(&phone), 0, "round {round}");
        assert!(h.gateway.session(&phone).is_idle().await, "round {round}");
        assert!(
            !layout.session_dir(&phone).exists() && !layout.backup_dir(&phone).exists(),
            "round {round}"
        );
        assert_eq!(h.status(PHONE, &token).await.0, StatusCode::NOT_FOUND);
    }
}
