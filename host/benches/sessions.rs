//! Session density and restart benchmark, against the WhatsApp simulator.
//!
//! For each N given on the command line (default 100 and 1000): start the
//! real `lila` binary (bench profile), pair N sessions through the HTTP API
//! with the in-process simulator, and report
//! - resident memory of the lila process per connected idle session
//!   (median of samples, minus the process's resident memory before any session);
//! - the time a restarted lila takes to bring all N paired sessions back to
//!   `connected` (median of restarts);
//! - the time SIGTERM takes to stop lila with all N connected.
//!
//! The simulator runs in a process of its own (this binary, re-executed with
//! `LILA_BENCH_SIM=<addr>`), so its CPU is not counted against lila's.
//!
//! Run: `cargo bench -p lila --bench sessions -- 100 1000`
//! (`LILA_BENCH_STARTS` sets `max_concurrent_starts`, default 32;
//! `LILA_BENCH_RESTARTS` the number of restarts, default 5;
//! `LILA_BENCH_PAIR_BATCH` how many sessions are created and scanned at a
//! time, default 250; `LILA_BENCH_POSTGRES=1` runs lila as a one-node
//! cluster on a throwaway PostgreSQL instead of on files, and also reports
//! the database server's memory.)

#[path = "../tests/support/process.rs"]
mod process;

use std::time::{Duration, Instant};

use lila::auth::JwtAuth;
use lila::core::tenant::TenantId;
use lila_pgstore::testing::TempPostgres;
use process::Server;
use serde_json::{Value, json};
use wa_sim::Simulator;

const SECRET: &str = "bench-secret-bench-secret-bench-secret";
const RESTARTS: usize = 5;
const RSS_SAMPLES: usize = 5;

/// The number after `key` in the `/proc` file at `path` (`Key:   123 kB`
/// lines, as in `status` and `smaps_rollup`); 0 when it cannot be read.
fn proc_number(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    proc_number(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Open file descriptors and threads of `pid`.
fn fds_and_threads(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let threads = proc_number(&format!("/proc/{pid}/status"), "Threads:");
    (fds, threads)
}

/// Proportional set size of `pid` and of its children (a PostgreSQL
/// postmaster and its backends share memory, so their RSS would count it
/// once per process), in KiB.
fn pss_tree_kib(pid: u32) -> u64 {
    let own = proc_number(&format!("/proc/{pid}/smaps_rollup"), "Pss:");
    let children: u64 = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .map(pss_tree_kib)
        .sum();
    own + children
}

/// The postmaster of a throwaway PostgreSQL (first line of its pid file).
fn postmaster_pid(postgres: &TempPostgres) -> Option<u32> {
    std::fs::read_to_string(postgres.dir().join("data/postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn phone(i: usize) -> String {
    format!("5190{i:07}")
}

fn connected_count(server: &Server, token: &str) -> usize {
    let Ok((_, body)) = server.request("GET", "/api/sessions", Some(token), None) else {
        return 0;
    };
    body["sessions"]
        .as_array()
        .map(|s| s.iter().filter(|s| s["status"] == "connected").count())
        .unwrap_or(0)
}

/// How many sessions are connected once `n` are, or once `limit` has passed.
fn connected_within(server: &Server, token: &str, n: usize, limit: Duration) -> usize {
    let started = Instant::now();
    loop {
        let connected = connected_count(server, token);
        if connected >= n || started.elapsed() >= limit {
            return connected;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_connected(server: &Server, token: &str, n: usize, limit: Duration) {
    let connected = connected_within(server, token, n, limit);
    assert!(
        connected >= n,
        "only {connected} of {n} sessions connected after {limit:?}"
    );
}

fn sample_rss(pid: u32) -> f64 {
    median(
        (0..RSS_SAMPLES)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(500));
                rss_kib(pid) as f64
            })
            .collect(),
    )
}

/// The simulator, as a child process of this benchmark.
struct SimProcess {
    child: std::process::Child,
    addr: String,
}

impl SimProcess {
    fn start() -> SimProcess {
        let addr = format!("127.0.0.1:{}", process::free_port());
        let exe = std::env::current_exe().expect("this benchmark's path");
        let child = std::process::Command::new(exe)
            .env("LILA_BENCH_SIM", &addr)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the simulator process");
        let sim = SimProcess { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&sim.addr).is_err() {
            assert!(Instant::now() < deadline, "the simulator did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        sim
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/ws/chat", self.addr)
    }

    /// `POST /admin/scan-qr?phone=`: the simulated phone scans `qr`.
    fn scan(&self, qr: &str, phone: &str) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(&self.addr) else {
            return false;
        };
        let request = format!(
            "POST /admin/scan-qr?phone={phone} HTTP/1.1\r\nHost: sim\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{qr}",
            qr.len()
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.1 200")
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(n: usize) {
    let starts = env_usize("LILA_BENCH_STARTS", 32);
    let restart_runs = env_usize("LILA_BENCH_RESTARTS", RESTARTS);
    let sim = SimProcess::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("data");
    let postgres = std::env::var_os("LILA_BENCH_POSTGRES")
        .map(|_| TempPostgres::start().expect("a throwaway PostgreSQL (see pgstore/README.md)"));
    let database = match &postgres {
        Some(server) => format!(
            "database_url = \"{}\"\n",
            server.create_database().expect("a database")
        ),
        None => String::new(),
    };
    // Backups off: they would add snapshot threads to the idle measurement.
    std::fs::write(
        root.with_extension("toml"),
        format!(
            "{database}[backups]\ninterval_secs = 0\n[sessions]\nmax_concurrent_starts = {starts}\n"
        ),
    )
    .expect("config");
    let auth = JwtAuth::new(SECRET.as_bytes()).expect("key");
    let token = auth
        .mint(None, true, Duration::from_secs(7200))
        .expect("token");
    let tenant = TenantId::parse("bench").expect("tenant");
    let ws = sim.ws_url();

    // Warnings and errors go to a file beside the data, shown when a step fails.
    let log = dir.path().join("lila.log");
    let level = std::env::var("LILA_BENCH_LOG").unwrap_or_else(|_| "warn".into());
    let server = Server::start_logging_to(&root, SECRET, &ws, &level, &log);
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let pid = server.pid();
    let baseline = sample_rss(pid);
    let (baseline_fds, baseline_threads) = fds_and_threads(pid);

    // Paired in batches: a batch is created, then each of its QRs scanned,
    // so that a QR never waits behind thousands of others and expires.
    let pair_started = Instant::now();
    let batch = env_usize("LILA_BENCH_PAIR_BATCH", 250).max(1);
    // The node may run out of descriptors before N: it then refuses the next
    // session with a 503 that says so, and the run goes on with what it has.
    let asked = n;
    let mut n = n;
    let mut refused: Option<String> = None;
    for first in (0..asked).step_by(batch) {
        if refused.is_some() {
            break;
        }
        let mut indices: Vec<usize> = Vec::new();
        for i in first..asked.min(first + batch) {
            let body = json!({"phoneNumber": phone(i), "companyId": tenant.as_str()});
            let (code, reply) = server
                .request("POST", "/api/sessions", Some(&token), Some(&body))
                .expect("create");
            if code == 503
                && reply["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("file descriptors"))
            {
                eprintln!("sessions: session {} refused: {}", i + 1, reply["error"]);
                refused = reply["error"].as_str().map(str::to_owned);
                n = i;
                break;
            }
            assert_eq!(code, 200, "{reply}\n{}", show_log());
            indices.push(i);
        }
        let mut pending = indices;
        let deadline = Instant::now() + Duration::from_secs(60 + batch as u64);
        while !pending.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{} sessions never showed a QR\n{}",
                pending.len(),
                show_log()
            );
            pending.retain(|&i| {
                let qr: Value = server
                    .request(
                        "GET",
                        &format!("/api/sessions/{}/qr", phone(i)),
                        Some(&token),
                        None,
                    )
                    .map(|(_, b)| b)
                    .unwrap_or(Value::Null);
                match qr["qr"].as_str() {
                    Some(code) => !sim.scan(code, &phone(i)),
                    None => true,
                }
            });
        }
        if asked > batch {
            eprintln!(
                "sessions: {} of {asked} scanned after {:.1} s",
                n.min(first + batch),
                pair_started.elapsed().as_secs_f64()
            );
        }
    }
    // A session the simulator lost during pairing (it resets connections
    // under load) can be left showing a QR nobody can scan: it is reported
    // and left out, and the restarts wait for the sessions that did pair.
    let unpaired = n - connected_within(&server, &token, n, Duration::from_secs(120)).min(n);
    if unpaired > 0 {
        eprintln!(
            "sessions: {unpaired} of {n} never connected after their scan; measuring the rest"
        );
    }
    let n_paired = n - unpaired;
    let pair_time = pair_started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let loaded = sample_rss(pid);
    let per_session_kib = (loaded - baseline) / n as f64;
    let (loaded_fds, loaded_threads) = fds_and_threads(pid);
    let database_pss_mib = postgres
        .as_ref()
        .and_then(postmaster_pid)
        .map(|pid| pss_tree_kib(pid) as f64 / 1024.0);

    let mut restarts = Vec::new();
    let mut shutdowns = Vec::new();
    let mut server = server;
    for i in 0..restart_runs {
        // Alternate a crash and a graceful stop; both must come back whole.
        if i % 2 == 0 {
            server.kill();
        } else {
            shutdowns.push(server.terminate().as_secs_f64());
        }
        let started = Instant::now();
        server = Server::start_logging_to(
            &root,
            SECRET,
            &ws,
            &level,
            &dir.path().join(format!("lila-{i}.log")),
        );
        wait_connected(
            &server,
            &token,
            n_paired,
            Duration::from_secs(120 + n as u64),
        );
        restarts.push(started.elapsed().as_secs_f64());
    }
    shutdowns.push(server.terminate().as_secs_f64());
    drop(sim);
    if let Ok(keep) = std::env::var("LILA_BENCH_KEEP_LOGS") {
        let _ = std::fs::create_dir_all(&keep);
        for entry in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_name().to_string_lossy().ends_with(".log") {
                let _ = std::fs::copy(
                    entry.path(),
                    std::path::Path::new(&keep).join(entry.file_name()),
                );
            }
        }
    }

    println!(
        "sessions={n} max_concurrent_starts={starts} baseline_rss_mib={:.1} loaded_rss_mib={:.1} per_session_kib={:.0} fds={baseline_fds}->{loaded_fds} fds_per_session={:.2} threads={baseline_threads}->{loaded_threads} pair_all_s={:.2} restart_to_all_connected_s(median of {restart_runs})={:.2} restarts_s={:?} sigterm_exit_s={:?}",
        baseline / 1024.0,
        loaded / 1024.0,
        per_session_kib,
        (loaded_fds as f64 - baseline_fds as f64) / n as f64,
        pair_time.as_secs_f64(),
        median(restarts.clone()),
        restarts
            .iter()
            .map(|s| (s * 100.0).round() / 100.0)
            .collect::<Vec<_>>(),
        shutdowns
            .iter()
            .map(|s| (s * 100.0).round() / 100.0)
            .collect::<Vec<_>>(),
    );
    if let Some(mib) = database_pss_mib {
        println!(
            "store=postgres database_pss_mib={mib:.1} (the PostgreSQL server and its backends)"
        );
    }
    if unpaired > 0 {
        println!("sessions_unpaired={unpaired} (left out of the restarts)");
    }
    if let Some(sentence) = refused {
        println!(
            "sessions_asked={asked} refused_at={} refusal={sentence:?}",
            n + 1
        );
    }
}

fn main() {
    if let Ok(addr) = std::env::var("LILA_BENCH_SIM") {
        // The simulator's own process: serve until killed.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let _sim = Simulator::start(addr.parse().expect("addr"))
                .await
                .expect("simulator");
            std::future::pending::<()>().await;
        });
        return;
    }
    // `cargo bench` passes `--bench`; every other argument is a session count.
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let counts = if counts.is_empty() {
        vec![100, 1000]
    } else {
        counts
    };
    for n in counts {
        run(n);
    }
}
