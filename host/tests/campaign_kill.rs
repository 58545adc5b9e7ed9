//! Reliability campaign: the real binary killed during a reset, at each named
//! step (`LILA_CRASH_AT`) and at random moments (SIGKILL after a random
//! delay), then started again over the same data root. Every run must end
//! with no credentials back, and with any reset that passed its commit point
//! finished by the next start.
//!
//! CI runs a smoke run (1 run per step, 3 random kills). The long campaign,
//! with its results in `docs/RELIABILITY.md`:
//!
//! ```sh
//! LILA_CAMPAIGN_RUNS=100 cargo test -p lila --test campaign_kill -- --nocapture
//! ```

#[path = "support/process.rs"]
mod process;

use std::path::Path;
use std::time::Duration;

use lila::auth::JwtAuth;
use lila::core::reset_plan::ResetStep;
use lila::core::tenant::TenantId;
use lila::layout::DataLayout;
use lila::phone::Phone;
use process::{Server, wait_until};

const SECRET: &str = "kill-campaign-secret-kill-campaign";
const PHONE: &str = "51987654321";
/// Nothing listens there: the real client runs and never connects.
const CLOSED_PORT_URL: &str = "ws://127.0.0.1:9/ws/chat";

fn token() -> String {
    let auth = JwtAuth::new(SECRET.as_bytes()).expect("key");
    auth.mint(
        Some(&TenantId::parse("acme").expect("tenant")),
        false,
        Duration::from_secs(3600),
    )
    .expect("token")
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// A session with credentials, a backup and a queued message, server stopped.
fn session_on_disk(root: &Path, token: &str) {
    let layout = DataLayout::new(root);
    let phone = Phone::parse(PHONE).expect("phone");
    let server = Server::start(root, SECRET, CLOSED_PORT_URL, None);
    server.create(PHONE, token);
    wait_until("the store", || layout.store_file(&phone).exists());
    server.send_text(PHONE, token, "51900000001", "x");
    std::fs::create_dir_all(layout.backup_dir(&phone)).expect("backup dir");
    let _ = std::fs::copy(
        layout.store_file(&phone),
        layout.backup_dir(&phone).join("backup-0000000000001.db"),
    );
    server.kill();
}

/// After the restart that follows a kill: either the reset committed and
/// is finished (nothing of the phone is left, and it stays down), or it had
/// not committed and the session is intact. Anything else is a failure.
fn check_after_restart(root: &Path, token: &str) -> Result<&'static str, String> {
    let layout = DataLayout::new(root);
    let phone = Phone::parse(PHONE).expect("phone");
    let server = Server::start(root, SECRET, CLOSED_PORT_URL, None);
    let record = std::fs::read_to_string(layout.phone_record_file(&phone)).unwrap_or_default();
    let (status, body) = server
        .request(
            "GET",
            &format!("/api/sessions/{PHONE}/status"),
            Some(token),
            None,
        )
        .map_err(|e| format!("status request: {e}"))?;
    let cleared = record.contains("\"desired\": \"cleared\"");
    let outcome = if cleared {
        // Give boot's finishing work (files, then after_clear) a moment.
        std::thread::sleep(Duration::from_millis(300));
        let record = std::fs::read_to_string(layout.phone_record_file(&phone)).unwrap_or_default();
        let mut left = Vec::new();
        for (what, path) in [
            ("credentials", layout.session_dir(&phone)),
            ("backups", layout.backup_dir(&phone)),
            ("outbox", layout.outbox_file(&phone)),
        ] {
            if path.exists() {
                left.push(what);
            }
        }
        if !left.is_empty() {
            return Err(format!("reset committed but {left:?} came back"));
        }
        if !record.contains("\"purge\": null") {
            return Err(format!("the interrupted reset was not finished: {record}"));
        }
        if status != 404 {
            return Err(format!("a cleared phone answered {status}: {body}"));
        }
        "reset finished"
    } else {
        if status != 200 {
            return Err(format!(
                "the reset never committed, yet the session answered {status}: {body}"
            ));
        }
        "reset had not committed; session intact"
    };
    server.kill();
    Ok(outcome)
}

#[test]
fn campaign_kills_during_resets_never_bring_credentials_back() {
    let runs = env_u64("LILA_CAMPAIGN_RUNS").unwrap_or(1);
    let random_kills = env_u64("LILA_CAMPAIGN_RANDOM_KILLS").unwrap_or(runs.max(3));
    let token = token();
    let (mut passed, mut failed) = (0u64, 0u64);
    let mut record = |label: String, result: Result<&'static str, String>| match result {
        Ok(_) => passed += 1,
        Err(why) => {
            failed += 1;
            println!("{label} FAILED: {why}");
        }
    };
    for step in ResetStep::ALL {
        for run in 0..runs {
            let data = tempfile::tempdir().expect("temp dir");
            let root = data.path().join("data");
            session_on_disk(&root, &token);
            let server = Server::start(&root, SECRET, CLOSED_PORT_URL, Some(step.name()));
            if server.clear(PHONE, &token).is_ok() {
                record(
                    format!("step {} run {run}", step.name()),
                    Err("the process answered instead of crashing".into()),
                );
                continue;
            }
            server.wait_for_exit();
            record(
                format!("step {} run {run}", step.name()),
                check_after_restart(&root, &token),
            );
        }
    }
    let seed = env_u64("LILA_CAMPAIGN_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(7)
    });
    println!("random kills: LILA_CAMPAIGN_SEED={seed}");
    for run in 0..random_kills {
        // A kill anywhere in the first 60 ms of the reset.
        let delay_us = (seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(run.wrapping_mul(1442695040888963407))
            >> 33)
            % 60_000;
        let data = tempfile::tempdir().expect("temp dir");
        let root = data.path().join("data");
        session_on_disk(&root, &token);
        let server = Server::start(&root, SECRET, CLOSED_PORT_URL, None);
        let killer = {
            let pid = server.pid();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_micros(delay_us));
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
            })
        };
        let _ = server.clear(PHONE, &token);
        let _ = killer.join();
        server.kill();
        record(
            format!("random kill {run} after {delay_us} us"),
            check_after_restart(&root, &token),
        );
    }
    println!("{passed} passed, {failed} failed");
    assert_eq!(failed, 0, "see the failed runs above");
}
