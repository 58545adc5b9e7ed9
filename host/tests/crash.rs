//! Crash safety, with the real `lila` binary as a child process: it is killed
//! (SIGKILL, or an abort at a named reset step) and started again over the
//! same data root. The WhatsApp URL points at a closed local port, so the
//! real client runs but never reaches anything.

#[path = "support/process.rs"]
mod process;

use std::time::Duration;

use lila::auth::JwtAuth;
use lila::core::reset_plan::ResetStep;
use lila::core::tenant::TenantId;
use lila::layout::DataLayout;
use lila::phone::Phone;
use process::{Server, wait_until};

const SECRET: &str = "crash-test-secret-crash-test-secret";
const PHONE: &str = "51987654321";
/// A WhatsApp URL on which nothing listens: the real client runs and never connects.
const CLOSED_PORT_URL: &str = "ws://127.0.0.1:9/ws/chat";

fn token() -> String {
    let auth = JwtAuth::new(SECRET.as_bytes()).expect("key");
    auth.mint(
        Some(&TenantId::parse("acme").expect("tenant")),
        false,
        Duration::from_secs(600),
    )
    .expect("token")
}

#[test]
fn a_message_accepted_with_202_survives_kill_9_right_after_the_response() {
    let data = tempfile::tempdir().expect("temp dir");
    let root = data.path().join("data");
    let token = token();
    let server = Server::start(&root, SECRET, CLOSED_PORT_URL, None);
    let (status, body) = server.create(PHONE, &token);
    assert_eq!(status, 200, "{body}");
    let mut ids = Vec::new();
    for text in ["uno", "dos", "tres"] {
        let (status, body) = server.send_text(PHONE, &token, "51900000001", text);
        assert_eq!(status, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    server.kill();
    let server = Server::start(&root, SECRET, CLOSED_PORT_URL, None);
    let (status, body) = server
        .request(
            "GET",
            &format!("/api/sessions/{PHONE}/outbox"),
            Some(&token),
            None,
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let pending: Vec<_> = body["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(pending, ids, "all three, in order");
    // No torn temporaries were left beside the queue.
    let outbox_dir = DataLayout::new(&root).outbox_dir();
    let names: Vec<_> = std::fs::read_dir(outbox_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from(format!("{PHONE}.json"))]);
}

#[test]
fn a_reset_killed_at_any_step_finishes_at_the_next_start_and_never_resurrects() {
    let token = token();
    let phone = Phone::parse(PHONE).unwrap();
    for step in ResetStep::ALL {
        let data = tempfile::tempdir().expect("temp dir");
        let root = data.path().join("data");
        let layout = DataLayout::new(&root);

        // A session with credentials, a backup and a queued message.
        let server = Server::start(&root, SECRET, CLOSED_PORT_URL, None);
        server.create(PHONE, &token);
        wait_until("the store", || layout.store_file(&phone).exists());
        server.send_text(PHONE, &token, "51900000001", "x");
        std::fs::create_dir_all(layout.backup_dir(&phone)).unwrap();
        std::fs::copy(
            layout.store_file(&phone),
            layout.backup_dir(&phone).join("backup-0000000000001.db"),
        )
        .unwrap();
        std::fs::write(
            layout.session_dir(&phone).join("creds.json"),
            b"{\"secret\":1}",
        )
        .unwrap();
        server.kill();

        // The reset, killed at `step`.
        let server = Server::start(&root, SECRET, CLOSED_PORT_URL, Some(step.name()));
        let answer = server.clear(PHONE, &token);
        assert!(
            answer.is_err(),
            "{}: the process should have died mid-reset, got {answer:?}",
            step.name()
        );
        server.wait_for_exit();
        if step == ResetStep::JournalWritten {
            assert!(
                layout.session_dir(&phone).exists(),
                "the crash came before any deletion"
            );
        }

        // The next start finishes the reset and resumes nothing.
        let server = Server::start(&root, SECRET, CLOSED_PORT_URL, None);
        let (status, body) = server
            .request(
                "GET",
                &format!("/api/sessions/{PHONE}/status"),
                Some(&token),
                None,
            )
            .unwrap();
        assert_eq!(status, 404, "{}: {body}", step.name());
        std::thread::sleep(Duration::from_millis(500));
        for (what, path) in [
            ("session dir", layout.session_dir(&phone)),
            ("backups", layout.backup_dir(&phone)),
            ("outbox", layout.outbox_file(&phone)),
        ] {
            assert!(!path.exists(), "{}: {what} survived", step.name());
        }
        let record = std::fs::read_to_string(layout.phone_record_file(&phone)).unwrap();
        assert!(
            record.contains("\"desired\": \"cleared\"") && record.contains("\"purge\": null"),
            "{}: {record}",
            step.name()
        );
        // And the owner may start it again afresh.
        let (status, body) = server.create(PHONE, &token);
        assert_eq!(status, 200, "{}: {body}", step.name());
        assert_eq!(body["pendingMessages"], 0, "{}", step.name());
        server.kill();
    }
}
