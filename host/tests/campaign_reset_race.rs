//! Reliability campaign: a reset racing start, send, reconnect, a server-side
//! logout and another reset, on random schedules, against the scripted
//! client. A resurrection is any client starting or connecting, or any file
//! of the phone existing, after the phone's last reset answered.
//!
//! CI runs a short smoke run (`LILA_CAMPAIGN_ROUNDS`, default 100). The long
//! campaign, with its results in `docs/RELIABILITY.md`:
//!
//! ```sh
//! LILA_CAMPAIGN_ROUNDS=10000 cargo test -p lila --test campaign_reset_race -- --nocapture
//! ```
//!
//! A failure prints its round and seed; `LILA_CAMPAIGN_SEED=<seed>
//! LILA_CAMPAIGN_ROUNDS=1` replays that round's schedule.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use lila::core::status::SessionEvent;
use lila::phone::Phone;
use serde_json::json;
use support::{Captured, Harness};

/// SplitMix64: a small, seedable generator, so a schedule can be replayed.
struct Schedule(u64);

impl Schedule {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Create,
    Send,
    Reconnect,
    ServerLogout,
    Scan,
    Clear,
}

const OPS: [Op; 6] = [
    Op::Create,
    Op::Send,
    Op::Reconnect,
    Op::ServerLogout,
    Op::Scan,
    Op::Clear,
];

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// One round on its own phone; `Err` says what resurrected.
async fn round(h: &Arc<Harness>, token: &str, phone: &Phone, seed: u64) -> Result<(), String> {
    let mut schedule = Schedule(seed);
    let p = phone.as_str().to_owned();
    // Start from a paired session half the time, from nothing otherwise.
    if schedule.below(2) == 0 {
        let (status, body) = h.create(&p, token).await;
        if status != StatusCode::OK {
            return Err(format!("the first create answered {status}: {body}"));
        }
        h.wait_status(&p, token, "qr").await;
        h.client(&p).await.scan();
        h.wait_status(&p, token, "connected").await;
    }
    let n_ops = 3 + schedule.below(6) as usize;
    let mut tasks = Vec::with_capacity(n_ops + 1);
    for i in 0..=n_ops {
        // At least one reset races in every round.
        let op = if i == n_ops {
            Op::Clear
        } else {
            OPS[schedule.below(OPS.len() as u64) as usize]
        };
        let delay = Duration::from_micros(schedule.below(3000));
        let (h, token, p, phone) = (h.clone(), token.to_owned(), p.clone(), phone.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let (status, body) = match op {
                Op::Create => h.create(&p, &token).await,
                Op::Clear => h.clear(&p, &token).await,
                Op::Send => {
                    let path = format!("/api/sessions/{p}/messages");
                    h.post(&path, &token, json!({"to": "51900000001", "text": "x"}))
                        .await
                }
                Op::Reconnect | Op::ServerLogout | Op::Scan => {
                    if let Some(client) = h.wa.latest(&phone) {
                        match op {
                            Op::Reconnect => client.drop_and_reconnect(),
                            Op::ServerLogout => client.server_logout(),
                            _ => client.scan(),
                        }
                    }
                    (StatusCode::OK, serde_json::Value::Null)
                }
            };
            (op, status, body)
        }));
    }
    for task in tasks {
        let (op, status, body) = task
            .await
            .map_err(|e| format!("an operation panicked: {e}"))?;
        if status.is_server_error() {
            return Err(format!("{op:?} answered {status}: {body}"));
        }
    }

    // The phone's last reset; from its answer on, nothing may come back. (A
    // phone no create ever reached is unknown: 404, and nothing to remove.)
    let (status, body) = h.clear(&p, token).await;
    if status != StatusCode::OK && status != StatusCode::NOT_FOUND {
        return Err(format!("the final reset answered {status}: {body}"));
    }
    let starts = h.wa.starts(phone);
    for client in h.wa.clients(phone) {
        client.emit_late(SessionEvent::Connected { me: None });
        client.emit_late(SessionEvent::Qr {
            code: "2@late".into(),
        });
        client.emit_late(SessionEvent::ClientExited { error: None });
        client.drop_and_reconnect();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let layout = h.layout();
    let mut resurrected = Vec::new();
    if h.wa.starts(phone) != starts {
        resurrected.push("a client started".to_owned());
    }
    if h.wa.live(phone) != 0 {
        resurrected.push(format!("{} client(s) live", h.wa.live(phone)));
    }
    for (what, path) in [
        ("session dir", layout.session_dir(phone)),
        ("backups", layout.backup_dir(phone)),
        ("outbox", layout.outbox_file(phone)),
    ] {
        if path.exists() {
            resurrected.push(format!("{what} exists"));
        }
    }
    let (status, body) = h.status(&p, token).await;
    if status != StatusCode::NOT_FOUND {
        resurrected.push(format!("status answered {status}: {body}"));
    }
    if resurrected.is_empty() {
        Ok(())
    } else {
        Err(resurrected.join(", "))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn campaign_reset_races_never_resurrect_a_session() {
    let rounds = env_u64("LILA_CAMPAIGN_ROUNDS").unwrap_or(100);
    let base_seed = env_u64("LILA_CAMPAIGN_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    println!("reset race campaign: {rounds} rounds, LILA_CAMPAIGN_SEED={base_seed}");
    // The host's warnings and errors, shown with a failed round.
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_global_default(subscriber);
    let (mut passed, mut failed) = (0u64, 0u64);
    let mut h = Arc::new(Harness::new().await);
    let mut token = h.token("acme");
    for n in 0..rounds {
        // A fresh gateway (and token: they expire) every 500 rounds keeps
        // the idle actors of earlier rounds from piling up in one process.
        if n > 0 && n % 500 == 0 {
            h = Arc::new(Harness::new().await);
            token = h.token("acme");
        }
        let seed = base_seed.wrapping_add(n);
        let phone = Phone::parse(&format!("5190{:07}", n % 10_000_000)).expect("phone");
        match round(&h, &token, &phone, seed).await {
            Ok(()) => passed += 1,
            Err(what) => {
                failed += 1;
                println!(
                    "round {n} FAILED (replay: LILA_CAMPAIGN_SEED={seed} LILA_CAMPAIGN_ROUNDS=1): {what}"
                );
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    assert_eq!(failed, 0, "resurrections; see the rounds above");
}
