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

fn token() -> String {
    let auth = JwtAuth::new(SECRET.as_bytes()).expect("key");
    auth.mint(
        Some(&TenantId::parse("acme").expect("tenant")),
        false,
        Duration::from_secs(600),
    )
    .expect("token")
}

fn status(server: &Server, token: &str) -> Value {
    server
        .request(
            "GET",
            &format!("/api/sessions/{PHONE}/status"),
            Some(token),
            None,
        )
        .map(|(_, b)| b)
        .unwrap_or(Value::Null)
}

fn wait_status(server: &Server, token: &str, wanted: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..1000 {
        last = status(server, token);
        if last["status"] == wanted {
            return last;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("status never became {wanted}; last: {last}");
}

/// Creates the session, has the simulated phone scan the QR the API shows, and waits for `connected`.
fn pair(server: &Server, sim: &SimHandle, token: &str) -> Value {
    let (code, body) = server
        .request(
            "POST",
            "/api/sessions",
            Some(token),
            Some(&json!({"phoneNumber": PHONE})),
        )
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let mut qr = Value::Null;
    wait_until("a QR from the API", || {
        qr = server
            .request(
                "GET",
                &format!("/api/sessions/{PHONE}/qr"),
                Some(token),
                None,
            )
            .map(|(_, b)| b)
            .unwrap_or(Value::Null);
        qr["qr"].is_string()
    });
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
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator");
    sim.control().add_contact(CONTACT, "Ana").expect("contact");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let layout = DataLayout::new(&root);
    let phone = Phone::parse(PHONE).unwrap();
    let token = token();
    let ws = sim.ws_url();

    let server = tokio::task::block_in_place(|| Server::start(&root, SECRET, &ws, None));
    let connected = tokio::task::block_in_place(|| pair(&server, &sim, &token));
    assert_eq!(connected["ready"], true);
    assert!(
        connected["me"].as_str().unwrap().starts_with(PHONE),
        "{connected}"
    );
    assert!(layout.store_file(&phone).exists(), "credentials on disk");

    // Three messages: delivered in order, each once.
    let mut ids = Vec::new();
    for text in ["uno", "dos", "tres"] {
        let (code, body) = server
            .request(
                "POST",
                &format!("/api/sessions/{PHONE}/messages"),
                Some(&token),
                Some(&json!({"to": CONTACT, "text": text})),
            )
            .unwrap();
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

    // A restart resumes from disk without a new QR.
    server.kill();
    let server = tokio::task::block_in_place(|| Server::start(&root, SECRET, &ws, None));
    tokio::task::block_in_place(|| wait_status(&server, &token, "connected"));

    // The reset: the simulator sees the device removed, every file goes, and
    // after a restart nothing for this phone reaches the simulator again.
    let (code, body) = server
        .request(
            "POST",
            &format!("/api/sessions/{PHONE}/clear"),
            Some(&token),
            None,
        )
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["loggedOut"], true, "{body}");
    assert!(
        sim.control()
            .wait_until(Duration::from_secs(10), |s| !s.removed_devices().is_empty())
            .await,
        "remove-companion-device"
    );
    for path in [
        layout.session_dir(&phone),
        layout.backup_dir(&phone),
        layout.outbox_file(&phone),
    ] {
        assert!(!path.exists(), "{} survived the reset", path.display());
    }
    server.kill();
    let attempts = sim.control().connection_attempts(PHONE);
    let server = tokio::task::block_in_place(|| Server::start(&root, SECRET, &ws, None));
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
    let (code, _) = server
        .request(
            "POST",
            "/api/sessions",
            Some(&token),
            Some(&json!({"phoneNumber": PHONE})),
        )
        .unwrap();
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
    sim.shutdown().await;
}
