//! Crash safety, with the real `lila` binary as a child process: it is killed
//! (SIGKILL, or an abort at a named reset step) and started again over the
//! same data root. The WhatsApp URL points at a closed local port, so the
//! real client runs but never reaches anything.

#[path = "support/process.rs"]
mod process;

use std::time::Duration;

use lila::core::reset_plan::ResetStep;
use lila::layout::DataLayout;
use lila::phone::Phone;
use process::{Server, tenant_token, wait_until};

const SECRET: &str = "crash-test-secret-crash-test-secret";
const PHONE: &str = "51987654321";
/// A WhatsApp URL on which nothing listens: the real client runs and never connects.
const CLOSED_PORT_URL: &str = "ws://127.0.0.1:9/ws/chat";

fn token() -> String {
    tenant_token(SECRET, "acme")
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

/// A webhook receiver on a thread: records the body of every POST it gets.
struct WebhookReceiver {
    url: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl WebhookReceiver {
    fn start() -> WebhookReceiver {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("receiver socket");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let store = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                if reader.read_exact(&mut body).is_ok()
                    && let Ok(json) = serde_json::from_slice(&body)
                {
                    store.lock().unwrap().push(json);
                }
                let _ = reader
                    .get_mut()
                    .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            }
        });
        WebhookReceiver { url, bodies }
    }

    /// Writes `{data}.toml` with webhook-notify pointed at this receiver.
    fn write_config(&self, data: &std::path::Path) {
        let dist = support_wasm::component("webhook-notify");
        let dir = dist.parent().expect("plugins/dist");
        let url = &self.url;
        std::fs::write(
            data.with_extension("toml"),
            format!(
                "[plugins]\nversion = 1\ndir = \"{}\"\n\n[[plugins.plugin]]\nname = \"webhook-notify\"\nhooks = [\"after-clear\"]\ncapabilities = {{ http = [\"{url}\"] }}\nconfig = {{ endpoints = [{{ url = \"{url}\", secret = \"whsec_test\" }}], max_attempts = 1 }}\n",
                dir.display()
            ),
        )
        .expect("config file");
    }

    /// The reset ids of the `session.cleared` events received so far.
    fn reset_ids(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == "session.cleared")
            .map(|e| e["reset_id"].as_str().unwrap_or("").to_owned())
            .collect()
    }
}

#[path = "support/wasm.rs"]
mod support_wasm;

/// Starts a session with credentials and a queued message, then stops the server.
fn session_on_disk(root: &std::path::Path, token: &str) {
    let layout = DataLayout::new(root);
    let phone = Phone::parse(PHONE).unwrap();
    let server = Server::start_with_config(root, SECRET, CLOSED_PORT_URL);
    server.create(PHONE, token);
    wait_until("the store", || layout.store_file(&phone).exists());
    server.send_text(PHONE, token, "51900000001", "x");
    server.kill();
}

/// Starts lila over `root` and checks that the receiver hears of the reset
/// exactly once, under a reset id.
fn start_and_expect_one_after_clear(
    root: &std::path::Path,
    receiver: &WebhookReceiver,
    label: &str,
) -> Server {
    let server = Server::start_with_config(root, SECRET, CLOSED_PORT_URL);
    wait_until("the after_clear webhook", || {
        receiver.reset_ids().len() == 1
    });
    // Give a wrongly repeated notice time to arrive, then check there is none.
    std::thread::sleep(Duration::from_millis(700));
    let ids = receiver.reset_ids();
    assert_eq!(ids.len(), 1, "{label}: {ids:?}");
    assert!(ids[0].starts_with('r'), "{label}: {ids:?}");
    server
}

// Regression: a crash after the commit point used to finish the purge at boot
// but never run `after_clear`, so the webhook never heard of that reset.
#[test]
fn after_clear_runs_exactly_once_per_reset_whichever_step_a_crash_cuts_it_at() {
    let token = token();
    for step in ResetStep::ALL {
        let data = tempfile::tempdir().expect("temp dir");
        let root = data.path().join("data");
        let receiver = WebhookReceiver::start();
        receiver.write_config(&root);
        session_on_disk(&root, &token);

        let server =
            Server::start_with_config_crashing_at(&root, SECRET, CLOSED_PORT_URL, step.name());
        assert!(
            server.clear(PHONE, &token).is_err(),
            "{}: no crash",
            step.name()
        );
        server.wait_for_exit();

        let server = start_and_expect_one_after_clear(&root, &receiver, step.name());
        let record = std::fs::read_to_string(
            DataLayout::new(&root).phone_record_file(&Phone::parse(PHONE).unwrap()),
        )
        .unwrap();
        assert!(
            record.contains("\"purge\": null"),
            "{}: the journal stays open: {record}",
            step.name()
        );
        server.kill();
    }
}

#[test]
fn a_second_crash_while_boot_finishes_a_reset_still_gives_one_after_clear() {
    let token = token();
    // The first crash leaves files and the journal; the second comes while
    // boot finishes them, before and after `after_clear` ran.
    for boot_crash in [
        ResetStep::Removed(lila::core::reset_plan::PurgeTargetKind::Backups),
        ResetStep::Purged,
        ResetStep::Completed,
    ] {
        let data = tempfile::tempdir().expect("temp dir");
        let root = data.path().join("data");
        let receiver = WebhookReceiver::start();
        receiver.write_config(&root);
        session_on_disk(&root, &token);

        let server = Server::start_with_config_crashing_at(
            &root,
            SECRET,
            CLOSED_PORT_URL,
            ResetStep::JournalWritten.name(),
        );
        assert!(server.clear(PHONE, &token).is_err());
        server.wait_for_exit();
        Server::crash_during_boot(&root, SECRET, CLOSED_PORT_URL, boot_crash.name());

        let server = start_and_expect_one_after_clear(&root, &receiver, boot_crash.name());
        let (status, _) = server
            .request(
                "GET",
                &format!("/api/sessions/{PHONE}/status"),
                Some(&token),
                None,
            )
            .unwrap();
        assert_eq!(status, 404, "{}", boot_crash.name());
        server.kill();
    }
}

/// Two processes on one data directory would run the same sessions, each
/// replacing the other's connection, and one would write back the files a
/// reset by the other had just removed. The second refuses to start and
/// names the first; once the first is gone (even by SIGKILL) a new one starts.
#[test]
fn a_second_process_on_the_same_data_directory_refuses_to_start() {
    let data = tempfile::tempdir().expect("temp dir");
    let root = data.path().join("data");
    let token = token();
    let server = Server::start(&root, SECRET, CLOSED_PORT_URL, None);
    let (code, body) = server.create(PHONE, &token);
    assert_eq!(code, 200, "{body}");

    let printed = Server::refused_to_start(&root, SECRET, CLOSED_PORT_URL);
    assert!(
        printed.contains("another lila process runs on the data directory"),
        "{printed}"
    );
    let holder = std::fs::read_to_string(root.join("lila/node")).expect("the seat file");
    assert!(
        printed.contains(holder.trim()),
        "names the holder {holder}: {printed}"
    );
    // The first is undisturbed.
    assert_eq!(server.status(PHONE, &token)["phoneNumber"], PHONE);

    server.kill();
    let again = Server::start(&root, SECRET, CLOSED_PORT_URL, None);
    assert_eq!(again.status(PHONE, &token)["phoneNumber"], PHONE);
}
