//! A lila whose WhatsApp client does not verify the certificate chain (the
//! tests' build: the `simulator` feature) says so, and talks to this machine
//! only. The other half, a plain `cargo build --release` that verifies the
//! chain and refuses the simulator's, is `tests/release/certificate-check.sh`
//! (a CI step: it needs a release build).

#[path = "support/process.rs"]
mod process;

use std::process::{Command, Stdio};

use process::{Server, free_port};

const SECRET: &str = "certificate-test-secret-certificate";

/// Runs `lila serve` over an empty data root with `wa_url` as LILA_WA_URL
/// (none when `None`) and returns its exit status and output.
fn serve_without_the_check(wa_url: Option<&str>) -> (bool, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut command = Command::new(env!("CARGO_BIN_EXE_lila"));
    command
        .arg("serve")
        .current_dir(dir.path())
        .env("LILA_DATA_DIR", &data)
        .env("LILA_BIND", format!("127.0.0.1:{}", free_port()))
        .env("LILA_JWT_SECRET", SECRET)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .env_remove("LILA_CONFIG")
        .env_remove("LILA_DATABASE_URL")
        .env_remove("LILA_WA_URL")
        .stdin(Stdio::null());
    if let Some(url) = wa_url {
        command.env("LILA_WA_URL", url);
    }
    let output = command.output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said, dir)
}

#[test]
fn without_the_check_it_refuses_whatsapp_itself_before_touching_anything() {
    let (ok, said, dir) = serve_without_the_check(None);
    assert!(!ok, "lila started without the certificate check: {said}");
    assert!(
        said.contains("refuses to connect to WhatsApp itself"),
        "{said}"
    );
    assert!(said.contains("certificate_verification=\"off\""), "{said}");
    assert!(
        !dir.path().join("data").exists(),
        "nothing is created before the refusal"
    );
}

#[test]
fn without_the_check_it_refuses_any_server_but_loopback() {
    // `.invalid` never resolves: were the refusal broken, nothing would be reached.
    let (ok, said, _dir) = serve_without_the_check(Some("wss://whatsapp.invalid/ws/chat"));
    assert!(!ok, "lila started without the certificate check: {said}");
    assert!(said.contains("is not a loopback address"), "{said}");
}

#[test]
fn without_the_check_it_serves_a_simulator_on_loopback_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, SECRET, "ws://127.0.0.1:9/ws/chat", None);
    let (status, body) = server.request("GET", "/health", None, None).unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["certificateVerification"], false, "{body}");
}
