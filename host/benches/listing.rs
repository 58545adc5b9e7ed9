//! Listing and lookup throughput on a node with many phones, with `wrk`.
//!
//! Writes 10,000 phone records owned by one tenant and 10 owned by another
//! (all stopped, so no client runs), starts the real `lila` binary (bench
//! profile) over them, and drives it with `wrk` (Debian's package) on
//! loopback:
//! - `GET /api/sessions` as the tenant with 10 phones;
//! - `GET /api/sessions/{phone}/status` of one of its phones;
//! - `GET /health`.
//!
//! Each figure is the median of 3 runs of 10 s; p99 latency from the same
//! runs. Run: `cargo bench -p lila --bench listing` (needs `wrk` on PATH).

#[path = "../tests/support/process.rs"]
mod process;

use std::process::Command;
use std::time::Duration;

use lila::auth::JwtAuth;
use lila::core::tenant::TenantId;
use process::Server;

const SECRET: &str = "bench-secret-bench-secret-bench-secret";
const BULK_PHONES: usize = 10_000;
const OWN_PHONES: usize = 10;
const RUNS: usize = 3;

fn write_record(root: &std::path::Path, phone: &str, owner: &str) {
    let dir = root.join("lila/phones");
    std::fs::create_dir_all(&dir).expect("records dir");
    std::fs::write(
        dir.join(format!("{phone}.json")),
        format!(
            "{{\"version\":2,\"owner\":\"{owner}\",\"desired\":\"stopped\",\"purge\":null,\"updatedAtMs\":1}}"
        ),
    )
    .expect("record");
}

/// Requests per second and p99 latency (ms) of one `wrk` run.
fn wrk(url: &str, token: Option<&str>) -> (f64, f64) {
    let mut command = Command::new("wrk");
    command.args(["-t2", "-c32", "-d10s", "--latency"]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let output = command
        .arg(url)
        .output()
        .expect("run wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    let rate = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| {
            let v = v.trim();
            let (number, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap_or(v.len()));
            let number: f64 = number.parse().unwrap_or(0.0);
            match unit {
                "us" => number / 1000.0,
                "s" => number * 1000.0,
                _ => number,
            }
        })
        .unwrap_or(0.0);
    if !text.contains("Non-2xx") {
        (rate, p99)
    } else {
        panic!("wrk saw errors:\n{text}")
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("data");
    for i in 0..BULK_PHONES {
        write_record(&root, &format!("5180{i:07}"), "bulk");
    }
    for i in 0..OWN_PHONES {
        write_record(&root, &format!("5190{i:07}"), "acme");
    }
    let auth = JwtAuth::new(SECRET.as_bytes()).expect("key");
    let token = auth
        .mint(
            Some(&TenantId::parse("acme").expect("tenant")),
            false,
            Duration::from_secs(3600),
        )
        .expect("token");
    let server = Server::start(&root, SECRET, "ws://127.0.0.1:9/ws/chat", None);
    let (code, body) = server
        .request("GET", "/api/sessions", Some(&token), None)
        .expect("list");
    assert_eq!(code, 200);
    assert_eq!(
        body["sessions"].as_array().map(Vec::len),
        Some(OWN_PHONES),
        "{body}"
    );
    let base = server.base_url();
    for (name, url, token) in [
        (
            "GET /api/sessions (10 of 10,010 phones)",
            format!("{base}/api/sessions"),
            Some(token.as_str()),
        ),
        (
            "GET /api/sessions/{phone}/status",
            format!("{base}/api/sessions/51900000000/status"),
            Some(token.as_str()),
        ),
        ("GET /health", format!("{base}/health"), None),
    ] {
        let runs: Vec<(f64, f64)> = (0..RUNS).map(|_| wrk(&url, token)).collect();
        println!(
            "{name}: {:.0} requests/s (median of {RUNS}: {:?}), p99 {:.2} ms",
            median(runs.iter().map(|r| r.0).collect()),
            runs.iter().map(|r| r.0.round()).collect::<Vec<_>>(),
            median(runs.iter().map(|r| r.1).collect()),
        );
    }
    server.kill();
}
