//! End to end: the real `lila` binary (a child process) against the in-process
//! WhatsApp simulator, driven only over HTTP as the Portal drives it.
//!
//! Built as a test target of the `lila` package (see `host/Cargo.toml`), so
//! that cargo builds the binary for it; the simulator is a dev-dependency,
//! which also turns on whatsapp-rust's `danger-skip-cert-chain-verify` for
//! test builds only.

#[path = "../../host/tests/support/process.rs"]
mod process;

use std::time::Duration;

use lila::auth::JwtAuth;
use lila::core::tenant::TenantId;
use lila::layout::DataLayout;
use lila::phone::Phone;
use process::{Server, wait_until};
use serde_json::{Value, json};
use wa_sim::{SimHandle, Simulator};

const SECRET: &str = "e2e-secret-e2e-secret-e2e-secret";
const PHONE: &str = "51987654321";
const CONTACT: &str = "51900000001";

/// One test's world: a simulator with a contact, a data root, and lila over it.
struct Stage {
    sim: SimHandle,
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    layout: DataLayout,
    phone: Phone,
    token: String,
}

impl Stage {
    async fn new() -> Stage {
        let sim = Simulator::start("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("simulator");
        sim.control().add_contact(CONTACT, "Ana").expect("contact");
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("data");
        let auth = JwtAuth::new(SECRET.as_bytes()).expect("key");
        let tenant = TenantId::parse("acme").expect("tenant");
        let token = auth
            .mint(Some(&tenant), false, Duration::from_secs(600))
            .expect("token");
        Stage {
            layout: DataLayout::new(&root),
            phone: Phone::parse(PHONE).expect("phone"),
            sim,
            _dir: dir,
            root,
            token,
        }
    }

    /// Starts (or starts again) the real lila binary over this stage's data root.
    fn lila(&self) -> Server {
        tokio::task::block_in_place(|| Server::start(&self.root, SECRET, &self.sim.ws_url(), None))
    }

    async fn finish(self) {
        self.sim.shutdown().await;
    }
}

fn status(server: &Server, token: &str) -> Value {
    server.status(PHONE, token)
}

fn wait_status(server: &Server, token: &str, wanted: &str) -> Value {
    server.wait_status(PHONE, token, wanted)
}

/// Creates the session, has the simulated phone scan the QR the API shows, and waits for `connected`.
fn pair(server: &Server, sim: &SimHandle, token: &str) -> Value {
    let (code, body) = server.create(PHONE, token);
    assert_eq!(code, 200, "{body}");
    let qr = server.wait_qr(PHONE, token);
    assert!(
        qr["qrImage"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,")
    );
    sim.control()
        .scan_qr_as(qr["qr"].as_str().unwrap(), PHONE)
        .expect("the phone scans");
    wait_status(server, token, "connected")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_to_connected_to_messages_to_reset_to_a_fresh_qr() {
    let stage = Stage::new().await;
    let sim = &stage.sim;
    let layout = &stage.layout;
    let phone = &stage.phone;
    let token = stage.token.clone();

    let server = stage.lila();
    let connected = tokio::task::block_in_place(|| pair(&server, sim, &token));
    assert_eq!(connected["ready"], true);
    assert!(
        connected["me"].as_str().unwrap().starts_with(PHONE),
        "{connected}"
    );
    assert!(layout.store_file(phone).exists(), "credentials on disk");

    // Three messages: delivered in order, each once.
    let mut ids = Vec::new();
    for text in ["uno", "dos", "tres"] {
        let (code, body) = server.send_text(PHONE, &token, CONTACT, text);
        assert_eq!(code, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    assert!(
        sim.control()
            .wait_until(Duration::from_secs(20), |s| s.messages().len() >= 3)
            .await,
        "three deliveries"
    );
    let delivered: Vec<_> = sim
        .control()
        .messages()
        .into_iter()
        .map(|m| (m.id, m.text.unwrap_or_default()))
        .collect();
    assert_eq!(
        delivered,
        vec![
            (ids[0].clone(), "uno".into()),
            (ids[1].clone(), "dos".into()),
            (ids[2].clone(), "tres".into())
        ]
    );

    assert!(
        layout.message_status_file(phone).exists(),
        "statuses are kept on disk until the reset"
    );

    // A restart resumes from disk without a new QR.
    server.kill();
    let server = stage.lila();
    tokio::task::block_in_place(|| wait_status(&server, &token, "connected"));

    // The reset: the simulator sees the device removed, every file goes, and
    // after a restart nothing for this phone reaches the simulator again.
    let (code, body) = server.clear(PHONE, &token).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["loggedOut"], true, "{body}");
    assert!(
        sim.control()
            .wait_until(Duration::from_secs(10), |s| !s.removed_devices().is_empty())
            .await,
        "remove-companion-device"
    );
    for path in [
        layout.session_dir(phone),
        layout.backup_dir(phone),
        layout.outbox_file(phone),
        layout.message_status_file(phone),
    ] {
        assert!(!path.exists(), "{} survived the reset", path.display());
    }
    server.kill();
    let attempts = sim.control().connection_attempts(PHONE);
    let server = stage.lila();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sim.control().connection_attempts(PHONE),
        attempts,
        "no reconnection attempt after the reset"
    );
    assert_eq!(
        tokio::task::block_in_place(|| status(&server, &token))["success"],
        false
    );

    // Creating it again gives a new QR.
    let (code, _) = server.create(PHONE, &token);
    assert_eq!(code, 200);
    tokio::task::block_in_place(|| {
        wait_until("a fresh QR", || {
            server
                .request(
                    "GET",
                    &format!("/api/sessions/{PHONE}/qr"),
                    Some(&token),
                    None,
                )
                .is_ok_and(|(c, b)| c == 200 && b["qr"].is_string())
        })
    });
    server.kill();
    stage.finish().await;
}

/// `GET /api/sessions/{PHONE}/messages/{id}`: the HTTP code and body.
fn message_status(server: &Server, token: &str, id: &str) -> (u16, Value) {
    server
        .request(
            "GET",
            &format!("/api/sessions/{PHONE}/messages/{id}"),
            Some(token),
            None,
        )
        .unwrap_or((0, Value::Null))
}

/// Polls a message's status until it is `wanted`; returns the last body.
fn wait_message_status(server: &Server, token: &str, id: &str, wanted: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..1000 {
        last = message_status(server, token, id).1;
        if last["status"] == wanted {
            return last;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("message {id} never became {wanted}; last: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_without_whatsapp_fails_with_a_reason_and_the_next_message_is_delivered_then_read()
{
    const NOT_ON_WHATSAPP: &str = "51900000099";
    let stage = Stage::new().await;
    let sim = &stage.sim;
    let token = stage.token.clone();
    let server = stage.lila();
    tokio::task::block_in_place(|| pair(&server, sim, &token));

    let (code, body) = server.send_text(PHONE, &token, NOT_ON_WHATSAPP, "hola");
    assert_eq!(code, 202, "{body}");
    let lost = body["id"].as_str().unwrap().to_owned();
    let (code, body) = server.send_text(PHONE, &token, CONTACT, "hola Ana");
    assert_eq!(code, 202, "{body}");
    let kept = body["id"].as_str().unwrap().to_owned();

    let failed =
        tokio::task::block_in_place(|| wait_message_status(&server, &token, &lost, "failed"));
    assert_eq!(failed["success"], true, "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("not on WhatsApp")),
        "{failed}"
    );
    assert!(failed["failedAtMs"].is_u64(), "{failed}");
    let delivered =
        tokio::task::block_in_place(|| wait_message_status(&server, &token, &kept, "delivered"));
    assert!(delivered["sentAtMs"].is_u64(), "{delivered}");
    assert!(delivered.get("error").is_none(), "{delivered}");
    let received = sim.control().messages();
    assert_eq!(received.len(), 1, "only the contact received a message");
    assert_eq!(received[0].id, kept);

    sim.control()
        .read_message(&kept)
        .expect("the contact reads it");
    let read = tokio::task::block_in_place(|| wait_message_status(&server, &token, &kept, "read"));
    assert!(read["readAtMs"].is_u64(), "{read}");

    // The queue holds neither; an unknown id is a 404 and a malformed one a 400.
    let (_, outbox) = server
        .request(
            "GET",
            &format!("/api/sessions/{PHONE}/outbox"),
            Some(&token),
            None,
        )
        .expect("outbox");
    assert_eq!(outbox["count"], 0, "{outbox}");
    let (code, body) = message_status(&server, &token, "3EB000000000000000000000");
    assert_eq!(
        (code, body["success"].clone()),
        (404, json!(false)),
        "{body}"
    );
    assert!(body["error"].is_string());
    let (code, body) = message_status(&server, &token, "not-an-id");
    assert_eq!(
        (code, body["success"].clone()),
        (400, json!(false)),
        "{body}"
    );

    // A restart keeps the statuses.
    server.kill();
    let server = stage.lila();
    let (code, body) = message_status(&server, &token, &kept);
    assert_eq!(
        (code, body["status"].clone()),
        (200, json!("read")),
        "{body}"
    );
    server.kill();
    stage.finish().await;
}

/// The JID of the phone's linked device, as the simulator knows it.
fn device_jid(sim: &SimHandle) -> String {
    sim.control()
        .devices()
        .into_iter()
        .find(|d| d.phone == PHONE)
        .map(|d| d.jid)
        .expect("a linked device")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_queued_before_pairing_survive_kill_9_and_are_delivered_once_in_order() {
    let stage = Stage::new().await;
    let sim = &stage.sim;
    let token = stage.token.clone();
    let server = stage.lila();
    let (code, _) = server.create(PHONE, &token);
    assert_eq!(code, 200);
    let mut ids = Vec::new();
    for text in ["first", "second", "third"] {
        let (code, body) = server.send_text(PHONE, &token, CONTACT, text);
        assert_eq!(code, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    // kill -9 with the three messages queued (the session is not paired yet).
    server.kill();
    assert!(sim.control().messages().is_empty());
    let server = stage.lila();
    tokio::task::block_in_place(|| pair(&server, sim, &token));
    assert!(
        sim.control()
            .wait_until(Duration::from_secs(20), |s| s.messages().len() >= 3)
            .await,
        "three deliveries"
    );
    // Give a duplicate every chance to show up before counting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let delivered: Vec<_> = sim
        .control()
        .messages()
        .into_iter()
        .map(|m| (m.id, m.text.unwrap_or_default()))
        .collect();
    assert_eq!(
        delivered,
        vec![
            (ids[0].clone(), "first".into()),
            (ids[1].clone(), "second".into()),
            (ids[2].clone(), "third".into())
        ],
        "in order, each exactly once"
    );
    let (_, outbox) = server
        .request(
            "GET",
            &format!("/api/sessions/{PHONE}/outbox"),
            Some(&token),
            None,
        )
        .unwrap();
    assert_eq!(outbox["count"], 0);
    server.kill();
    stage.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phone_unlinking_the_device_shows_logged_out_removes_credentials_and_does_not_loop() {
    let stage = Stage::new().await;
    let sim = &stage.sim;
    let layout = &stage.layout;
    let phone = &stage.phone;
    let token = stage.token.clone();
    let server = stage.lila();
    tokio::task::block_in_place(|| pair(&server, sim, &token));
    sim.control()
        .logout_device(&device_jid(sim))
        .expect("server-side unlink");
    let unlinked = tokio::task::block_in_place(|| wait_status(&server, &token, "logged_out"));
    assert_eq!(unlinked["ready"], false);
    assert!(
        !layout.session_dir(phone).exists(),
        "the dead credentials are removed"
    );
    let handshakes = sim.control().handshakes();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sim.control().handshakes(),
        handshakes,
        "no reconnect and no QR loop"
    );
    let (code, _) = server
        .request(
            "GET",
            &format!("/api/sessions/{PHONE}/qr"),
            Some(&token),
            None,
        )
        .unwrap();
    assert_eq!(code, 404);
    // Not after a restart either.
    server.kill();
    let server = stage.lila();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sim.control().handshakes(), handshakes);
    assert_eq!(
        tokio::task::block_in_place(|| status(&server, &token))["status"],
        "logged_out"
    );
    server.kill();
    stage.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_reconnects_by_itself_and_a_reset_during_the_backoff_does_not_resurrect() {
    let stage = Stage::new().await;
    let sim = &stage.sim;
    let layout = &stage.layout;
    let phone = &stage.phone;
    let token = stage.token.clone();
    let server = stage.lila();
    tokio::task::block_in_place(|| pair(&server, sim, &token));
    let jid = device_jid(sim);

    // A drop: the client reconnects on its own.
    let logins = sim.control().connection_attempts(PHONE);
    sim.control().drop_device(&jid).expect("drop");
    assert!(
        sim.control()
            .wait_until(Duration::from_secs(20), |s| s.connection_attempts(PHONE)
                > logins
                && s.is_connected(&jid))
            .await,
        "the client reconnected"
    );
    tokio::task::block_in_place(|| wait_status(&server, &token, "connected"));

    // Another drop, and a reset while the client is backing off.
    sim.control().drop_device(&jid).expect("drop");
    tokio::task::block_in_place(|| wait_status(&server, &token, "reconnecting"));
    let (code, body) = server.clear(PHONE, &token).unwrap();
    assert_eq!(code, 200, "{body}");
    let logins = sim.control().connection_attempts(PHONE);
    let handshakes = sim.control().handshakes();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        sim.control().connection_attempts(PHONE),
        logins,
        "the pending reconnect never fired"
    );
    assert_eq!(sim.control().handshakes(), handshakes);
    for path in [
        layout.session_dir(phone),
        layout.backup_dir(phone),
        layout.outbox_file(phone),
    ] {
        assert!(!path.exists(), "{} came back", path.display());
    }
    server.kill();
    stage.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_codes_groups_and_contacts_come_through_the_real_client() {
    let stage = Stage::new().await;
    let sim = &stage.sim;
    let group = sim
        .control()
        .add_group(wa_sim::GroupSpec {
            id: None,
            subject: "Ventas".into(),
            participants: vec![format!("{CONTACT}@s.whatsapp.net")],
        })
        .expect("group");
    let token = stage.token.clone();
    let server = stage.lila();
    let (code, _) = server.create(PHONE, &token);
    assert_eq!(code, 200);
    tokio::task::block_in_place(|| wait_status(&server, &token, "qr"));
    // The Portal's path and the original one both reach the client's real pairing-code flow.
    // WhatsApp keeps one code valid at a time: asking again repeats it.
    let mut codes = Vec::new();
    for path in ["pairing-code", "request-pairing-code"] {
        let (code, body) = server
            .request(
                "POST",
                &format!("/api/sessions/{PHONE}/{path}"),
                Some(&token),
                Some(&json!({})),
            )
            .unwrap();
        assert_eq!(code, 200, "{path}: {body}");
        assert_eq!(body["code"].as_str().map(str::len), Some(8), "{body}");
        codes.push(body["code"].clone());
    }
    assert_eq!(codes[0], codes[1]);
    tokio::task::block_in_place(|| pair(&server, sim, &token));
    let (code, groups) = server
        .request(
            "GET",
            &format!("/api/sessions/{PHONE}/groups"),
            Some(&token),
            None,
        )
        .unwrap();
    assert_eq!(code, 200, "{groups}");
    let listed = groups["groups"].as_array().expect("groups");
    assert!(
        listed.iter().any(|g| g["id"] == group.as_str()
            && g["subject"] == "Ventas"
            && g["participants"].as_u64() >= Some(1)),
        "{groups}"
    );
    let mut contacts = Value::Null;
    tokio::task::block_in_place(|| {
        wait_until("the contact from the phone's address book", || {
            contacts = server
                .request(
                    "GET",
                    &format!("/api/sessions/{PHONE}/contacts"),
                    Some(&token),
                    None,
                )
                .map(|(_, b)| b)
                .unwrap_or(Value::Null);
            contacts["contacts"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["name"] == "Ana"))
        })
    });
    server.kill();
    stage.finish().await;
}

/// The files under `dir` that process `pid` holds open (deleted ones too).
fn open_files_under(pid: u32, dir: &std::path::Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .filter(|target| target.starts_with(&dir))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_session_lets_go_of_its_store_while_pairing_after_a_disconnect_and_after_a_reset()
{
    let stage = Stage::new().await;
    let token = stage.token.clone();
    let server = stage.lila();
    let session_dir = stage.layout.session_dir(&stage.phone);
    let holds_store = || !open_files_under(server.pid(), &session_dir).is_empty();
    // `DELETE` stops the client: its store's database, WAL and shared-memory
    // files must be closed, not just unlinked.
    let disconnect_and_wait_closed = |what: &str| {
        let (code, body) = server
            .request(
                "DELETE",
                &format!("/api/sessions/{PHONE}"),
                Some(&token),
                None,
            )
            .unwrap();
        assert_eq!(code, 200, "{body}");
        wait_until(what, || !holds_store());
    };
    tokio::task::block_in_place(|| {
        // A pairing first: the client's QR rotation outlives its disconnect
        // (up to 160 s, holding the client and its store) unless lila ends it.
        let (code, body) = server.create(PHONE, &token);
        assert_eq!(code, 200, "{body}");
        server.wait_qr(PHONE, &token);
        assert!(holds_store(), "a pairing session holds its store open");
        disconnect_and_wait_closed("the stopped pairing's files closed");
        pair(&server, &stage.sim, &token);
        assert!(holds_store(), "a connected session holds its store open");
        disconnect_and_wait_closed("the disconnected session's files closed");
        // Again with a reset.
        pair(&server, &stage.sim, &token);
        let (code, body) = server.clear(PHONE, &token).unwrap();
        assert_eq!(code, 200, "{body}");
        wait_until("the reset session's files closed", || !holds_store());
    });
    server.kill();
    stage.finish().await;
}

/// Every entry under `root` (itself included) whose mode is not private:
/// folders other than 0700, files other than 0600. Symlinks are reported too.
fn not_private(root: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut wrong = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(path) = pending.pop() {
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue; // removed while we walked (a rotated snapshot)
        };
        let mode = metadata.permissions().mode() & 0o777;
        let wanted = if metadata.is_dir() { 0o700 } else { 0o600 };
        if metadata.file_type().is_symlink() || mode != wanted {
            wrong.push(format!("{} {mode:o}", path.display()));
        }
        if metadata.is_dir() {
            for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                pending.push(entry.path());
            }
        }
    }
    wrong
}

/// Credentials at rest: started with umask 000, lila still creates every
/// file 0600 and every folder 0700: the generated JWT secret, the paired
/// session's store and its WAL, the snapshot of it, the outbox, the
/// message statuses, the phone's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_lila_writes_is_private_even_under_a_permissive_umask() {
    let stage = Stage::new().await;
    let sim = &stage.sim;
    std::fs::write(
        stage.root.with_extension("toml"),
        "[backups]\ninterval_secs = 1\n",
    )
    .expect("config");
    let server = tokio::task::block_in_place(|| {
        Server::start_under_umask(&stage.root, &sim.ws_url(), "000")
    });
    let secret_file = stage.layout.jwt_secret_file();
    let secret = std::fs::read_to_string(&secret_file).expect("a generated secret");
    let token = process::tenant_token(secret.trim(), "acme");
    tokio::task::block_in_place(|| {
        pair(&server, sim, &token);
        let (code, body) = server.send_text(PHONE, &token, CONTACT, "hello");
        assert_eq!(code, 202, "{body}");
        let backups = stage.layout.backup_dir(&stage.phone);
        wait_until("a snapshot of the store", || {
            std::fs::read_dir(&backups).is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|e| !e.file_name().to_string_lossy().starts_with('.'))
            })
        });
    });
    let files = not_private(&stage.root);
    for expected in [
        secret_file,
        stage.layout.store_file(&stage.phone),
        stage.layout.phone_record_file(&stage.phone),
        stage.layout.message_status_file(&stage.phone),
    ] {
        assert!(expected.exists(), "{} was written", expected.display());
    }
    assert!(files.is_empty(), "not private: {files:#?}");
    server.kill();
    stage.finish().await;
}
