//! An unreachable WhatsApp, with the real `lila` binary and the real client
//! pointed at a local port where nothing listens: every session must say
//! why it is not connecting, and retry at a bounded, backed-off pace.

#[path = "support/process.rs"]
mod process;

use std::time::{Duration, Instant};

use process::{Server, free_port, tenant_token, wait_until};
use serde_json::Value;

const SECRET: &str = "reach-test-secret-reach-test-secret";
const SESSIONS: usize = 10;
const OBSERVE: Duration = Duration::from_secs(8);

fn token() -> String {
    tenant_token(SECRET, "acme")
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// The most attempts one session can make in `window` with the back-off
/// (steps of 1, 2, 4, … s capped at `cap_secs`, each waited at least half).
fn most_attempts(window: Duration, cap_secs: u64) -> u64 {
    let mut elapsed = Duration::ZERO;
    let mut attempts = 1;
    for step in 0.. {
        let ceiling = Duration::from_secs(1u64 << step.min(20)).min(Duration::from_secs(cap_secs));
        elapsed += ceiling / 2;
        if elapsed > window {
            break;
        }
        attempts += 1;
    }
    attempts
}

#[test]
fn sessions_that_cannot_reach_whatsapp_say_so_and_back_off() {
    let data = tempfile::tempdir().expect("temp dir");
    let root = data.path().join("data");
    let log = data.path().join("lila.log");
    std::fs::write(
        root.with_extension("toml"),
        "[sessions]\nmax_restart_backoff_secs = 4\n",
    )
    .expect("config");
    let url = format!("ws://127.0.0.1:{}/ws/chat", free_port());
    let server = Server::start_logging_to(&root, SECRET, &url, "warn", &log);
    let token = token();
    let phones: Vec<String> = (0..SESSIONS).map(|i| format!("5198765{i:04}")).collect();
    let started = Instant::now();
    for phone in &phones {
        let (status, body) = server.create(phone, &token);
        assert_eq!(status, 200, "{body}");
    }

    let status_of = |phone: &str| -> Value {
        server
            .request(
                "GET",
                &format!("/api/sessions/{phone}/status"),
                Some(&token),
                None,
            )
            .map(|(_, b)| b)
            .unwrap_or(Value::Null)
    };
    for phone in &phones {
        wait_until("reconnecting with a reason", || {
            let s = status_of(phone);
            s["status"] == "reconnecting"
                && s["lastError"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("cannot reach WhatsApp"))
        });
    }
    let sample = status_of(&phones[0]);
    let error = sample["lastError"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("cannot reach WhatsApp: the connection was refused at ")
            && error.contains(&url),
        "{sample}"
    );

    std::thread::sleep(OBSERVE.saturating_sub(started.elapsed()));
    let window = started.elapsed();
    let metrics = server.get_text("/metrics").expect("metrics");
    let failures = metric(
        &metrics,
        "lila_connection_failures_total{cause=\"refused\"}",
    );
    let bound = most_attempts(window, 4) * SESSIONS as u64;
    assert!(
        failures >= 2 * SESSIONS as u64 && failures <= bound,
        "{failures} failed connects of {SESSIONS} sessions in {window:?} (at most {bound}):\n{metrics}"
    );
    // Status stays `reconnecting` between attempts (not back to `starting`).
    for phone in &phones {
        assert_eq!(status_of(phone)["status"], "reconnecting");
    }
    server.kill();

    // Each client made one attempt and was stopped: whatsapp-rust's own
    // retries ("Failed to connect … Will retry") did not run beside lila's.
    let text = std::fs::read_to_string(&log).expect("log");
    let client_attempts = text.matches("Failed to connect").count() as u64;
    let lila_lines = text.matches("cannot reach WhatsApp").count() as u64;
    assert!(
        client_attempts <= failures + SESSIONS as u64,
        "{client_attempts} client connect attempts for {failures} counted failures"
    );
    assert!(
        lila_lines <= failures + SESSIONS as u64 && lila_lines >= failures.min(1),
        "{lila_lines} log lines for {failures} failures"
    );
    // Even at RUST_LOG=warn, each such line names its phone (the session
    // span is kept), and none is logged inside the request that created it.
    for line in text.lines().filter(|l| l.contains("cannot reach WhatsApp")) {
        assert!(line.contains("session{phone=5198765"), "{line}");
        assert!(!line.contains("http{"), "{line}");
    }
}

/// How many sessions the outage deploy runs, and how soon it must be gone.
const OUTAGE_SESSIONS: usize = 1000;
const EXIT_DEADLINE: Duration = Duration::from_secs(5);

/// A deploy during an outage: 1,000 sessions whose WhatsApp address does
/// not answer (a listener that never accepts: its first connections hang
/// in the handshake, the rest in the TCP connect, as when packets are
/// dropped), then SIGTERM. The process is gone within 5 s of the signal,
/// whatever its sessions' dials, lookups and stores are doing.
#[test]
fn a_deploy_during_an_outage_exits_within_five_seconds() {
    let data = tempfile::tempdir().expect("temp dir");
    let root = data.path().join("data");
    let log = data.path().join("lila.log");
    std::fs::write(root.with_extension("toml"), "").expect("config");
    // Bound, never accepted: the kernel completes the first connections
    // (the backlog) and drops the SYNs of the others.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let url = format!(
        "ws://127.0.0.1:{}/ws/chat",
        silent.local_addr().expect("addr").port()
    );
    let server = Server::start_logging_to(&root, SECRET, &url, "info", &log);
    let token = token();
    for i in 0..OUTAGE_SESSIONS {
        let (status, body) = server.create(&format!("5198{i:07}"), &token);
        assert_eq!(status, 200, "{body}");
    }
    // Every client dialling (or queued to): none has given up yet, since
    // a dial waits up to 15 s.
    std::thread::sleep(Duration::from_secs(2));
    let exit = server.terminate();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let summary = text
        .lines()
        .rfind(|l| l.contains("sessions stopped"))
        .unwrap_or("no 'sessions stopped' line")
        .to_owned();
    assert!(
        exit <= EXIT_DEADLINE,
        "exited {exit:?} after SIGTERM with {OUTAGE_SESSIONS} unreachable sessions ({summary})"
    );
    println!("{OUTAGE_SESSIONS} unreachable sessions: exited {exit:?} after SIGTERM ({summary})");
    drop(silent);
}
