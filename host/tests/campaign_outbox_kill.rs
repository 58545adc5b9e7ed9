//! Reliability campaign: the outbox under SIGKILL. A paired session (the
//! real binary against the simulator) queues a burst of messages, and the
//! process is killed at a random moment while it sends them; the next start
//! resumes the session without a QR and sends what is left. At the end,
//! every message accepted with 202 must have reached the contact exactly
//! once, as counted at the simulator by message id:
//!
//! - **lost**: an accepted id that never arrived;
//! - **sent twice**: a text that arrived under two ids, or an id that
//!   arrived again after it had been confirmed sent (the outbox file no
//!   longer listed it);
//! - **retransmitted**: an id whose stanza arrived twice because the kill
//!   fell between WhatsApp's ack and the outbox file's rename. The same id
//!   is one message to the recipient (WhatsApp's clients key messages by
//!   id), so this is reported, not counted as sent twice.
//!
//! Odd runs kill while the burst is still being queued (an append to the
//! outbox log may be cut half-way: what got its 202 must still arrive);
//! even runs kill while the queued burst is sent.
//!
//! It runs twice: on one node's files (the outbox log
//! `whatsapp/outbox/{phone}.json`), and as a cluster node on a throwaway
//! PostgreSQL (a row of `outbox_messages` per message; the restarted node
//! takes its leases back at once, as it holds its data directory's lock).
//!
//! CI runs a smoke run (3 kills each). The long campaign, with its results in
//! `docs/RELIABILITY.md`:
//!
//! ```sh
//! LILA_CAMPAIGN_RUNS=100 cargo test -p lila --test campaign_outbox_kill -- --nocapture
//! ```
//! `LILA_CAMPAIGN_SEED` replays a schedule; the seed is printed first.

#[path = "support/process.rs"]
mod process;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lila_pgstore::testing::TempPostgres;
use process::{Server, tenant_token};
use wa_sim::Simulator;

const SECRET: &str = "outbox-campaign-secret-outbox-campaign";
const PHONE: &str = "51987654321";
const CONTACT: &str = "51900000001";
/// Messages queued per run, before the kill.
const BURST: usize = 30;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// A xorshift schedule: the same seed gives the same kill delays.
struct Schedule(u64);

impl Schedule {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Where the node under test keeps its outbox.
enum Store {
    Files,
    /// A cluster node on this database (`LILA_DATABASE_URL`).
    Postgres(String),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_loses_nothing_and_sends_nothing_twice_under_sigkill() {
    campaign(Store::Files).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_outbox_loses_nothing_and_sends_nothing_twice_under_sigkill() {
    let postgres = TempPostgres::shared().unwrap_or_else(|e| panic!("{e}"));
    let url = postgres.create_database().expect("a database");
    campaign(Store::Postgres(url)).await;
}

/// The ids still queued for [`PHONE`] after a kill: the outbox log's lines,
/// or the phone's `outbox_messages` rows.
async fn still_queued(store: &Store, root: &std::path::Path) -> BTreeSet<String> {
    match store {
        Store::Files => {
            let layout = lila::layout::DataLayout::new(root);
            let phone = lila::phone::Phone::parse(PHONE).expect("phone");
            let path = layout.outbox_file(&phone);
            match std::fs::read(&path) {
                Ok(bytes) => lila::storage::outbox_file::decode(&path, &bytes)
                    .expect("the outbox log is whole, but for a torn last line")
                    .iter()
                    .map(|m| m.id.clone())
                    .collect(),
                Err(_) => BTreeSet::new(),
            }
        }
        Store::Postgres(url) => {
            let pool = lila_pgstore::connect_pool(url, 1).expect("a pool");
            let client = pool.get().await.expect("a connection");
            let rows = client
                .query("SELECT id FROM outbox_messages WHERE phone = $1", &[&PHONE])
                .await
                .expect("the outbox rows");
            rows.iter().map(|row| row.get::<_, String>(0)).collect()
        }
    }
}

async fn campaign(store: Store) {
    let runs = env_u64("LILA_CAMPAIGN_RUNS").unwrap_or(3);
    let seed = env_u64("LILA_CAMPAIGN_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 | 1)
            .unwrap_or(0x5eed)
    });
    let on = match &store {
        Store::Files => "files",
        Store::Postgres(_) => "PostgreSQL",
    };
    println!("outbox kill campaign on {on}: {runs} runs, LILA_CAMPAIGN_SEED={seed}");
    let mut schedule = Schedule(seed);
    let sim = Simulator::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator");
    sim.control().add_contact(CONTACT, "Ana").expect("contact");
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("data");
    let token = tenant_token(SECRET, "acme");
    let start = || match &store {
        Store::Files => Server::start(&root, SECRET, &sim.ws_url(), None),
        Store::Postgres(url) => Server::start_node(&root, SECRET, &sim.ws_url(), url),
    };

    // Pair once; every later start resumes the session.
    let server = tokio::task::block_in_place(|| {
        let server = start();
        let (code, body) = server.create(PHONE, &token);
        assert_eq!(code, 200, "{body}");
        let qr = server.wait_qr(PHONE, &token);
        let qr = qr["qr"].as_str().expect("qr").to_owned();
        sim.control()
            .scan_qr_as(&qr, PHONE)
            .expect("the phone scans");
        server.wait_status(PHONE, &token, "connected");
        server
    });

    let mut accepted: Vec<(String, String)> = Vec::new();
    let mut confirmed_sent: BTreeMap<String, usize> = BTreeMap::new();
    let mut server = Some(server);
    let mut kills_with_sends_in_flight = 0;
    let mut kills_while_queueing = 0;
    let mut accepted_before_kill: Vec<usize> = Vec::new();
    let mut failed_runs: BTreeSet<usize> = BTreeSet::new();
    // What the store still held after each kill (the next start sends it).
    let mut queued_after_kills: Vec<usize> = Vec::new();
    for run in 0..runs {
        let delay_ms = schedule.below(250);
        let live = server.take().expect("a server");
        let arrived_before = sim.control().messages().len();
        let run_start = accepted.len();
        // Odd runs kill while the burst is being queued (an append may be cut
        // half-way); even runs queue it all, then kill while it is sent.
        let while_queueing = run % 2 == 1;
        tokio::task::block_in_place(|| {
            if while_queueing {
                let pid = live.pid().to_string();
                std::thread::scope(|scope| {
                    let queueing = scope.spawn(|| {
                        let mut ok = Vec::new();
                        for i in 0..BURST {
                            let text = format!("run {run} message {i}");
                            let body = serde_json::json!({ "to": CONTACT, "text": text });
                            let path = format!("/api/sessions/{PHONE}/messages");
                            match live.request("POST", &path, Some(&token), Some(&body)) {
                                Ok((202, body)) => {
                                    ok.push((body["id"].as_str().expect("id").to_owned(), text))
                                }
                                // Killed: this answer never came, so it was never accepted.
                                _ => break,
                            }
                        }
                        ok
                    });
                    std::thread::sleep(Duration::from_millis(delay_ms));
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", &pid])
                        .status();
                    accepted.extend(queueing.join().expect("the queueing thread"));
                });
                live.kill();
            } else {
                for i in 0..BURST {
                    let text = format!("run {run} message {i}");
                    let (code, body) = live.send_text(PHONE, &token, CONTACT, &text);
                    assert_eq!(code, 202, "{body}");
                    accepted.push((body["id"].as_str().expect("id").to_owned(), text));
                }
                std::thread::sleep(Duration::from_millis(delay_ms));
                live.kill();
            }
        });
        let queued_this_run = accepted.len() - run_start;
        if while_queueing {
            kills_while_queueing += 1;
            accepted_before_kill.push(queued_this_run);
        }
        let arrived = sim.control().messages().len() - arrived_before;
        if arrived > 0 && arrived < queued_this_run {
            kills_with_sends_in_flight += 1;
        }
        // Every id the outbox no longer holds was confirmed sent: from now
        // on, it must never arrive again.
        let still_queued = still_queued(&store, &root).await;
        queued_after_kills.push(still_queued.len());
        let counts = arrivals_by_id(&sim);
        for (id, _) in &accepted {
            if !still_queued.contains(id) && !confirmed_sent.contains_key(id) {
                confirmed_sent.insert(id.clone(), counts.get(id).copied().unwrap_or(0));
            }
        }
        let next = tokio::task::block_in_place(|| {
            let next = start();
            next.wait_status(PHONE, &token, "connected");
            next
        });
        server = Some(next);
        // The next start sends what the kill left: this run's messages all
        // arrive before the next burst.
        let run_ids: BTreeSet<String> = accepted[run_start..]
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        let drained = sim
            .control()
            .wait_until(Duration::from_secs(60), |s| {
                let arrived: BTreeSet<String> = s.messages().into_iter().map(|m| m.id).collect();
                run_ids.is_subset(&arrived)
            })
            .await;
        if !drained {
            println!("run {run}: the queue did not drain within 60 s (kill after {delay_ms} ms)");
            failed_runs.insert(run as usize);
        }
    }
    // Give a late duplicate every chance to show up before counting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(server);

    let mut ids_by_text: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in sim.control().messages() {
        ids_by_text
            .entry(m.text.clone().unwrap_or_default())
            .or_default()
            .insert(m.id.clone());
    }
    let mut lost = Vec::new();
    let mut twice = Vec::new();
    // The run each accepted message was queued in (runs queue up to BURST).
    let run_of: Vec<usize> = accepted
        .iter()
        .map(|(_, text)| {
            text.split(' ')
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        })
        .collect();
    let mut retransmitted = 0;
    let counts = arrivals_by_id(&sim);
    for (index, (id, text)) in accepted.iter().enumerate() {
        let count = counts.get(id).copied().unwrap_or(0);
        let before = lost.len() + twice.len();
        if count == 0 {
            lost.push(id.clone());
        }
        if ids_by_text.get(text).is_some_and(|ids| ids.len() > 1) {
            twice.push(format!("{text:?} under several ids"));
        }
        if let Some(at_confirmation) = confirmed_sent.get(id)
            && count > *at_confirmation
            && *at_confirmation > 0
        {
            twice.push(format!("{id} arrived again after it was confirmed sent"));
        }
        if count > 1 {
            retransmitted += 1;
        }
        if lost.len() + twice.len() > before {
            failed_runs.insert(run_of[index]);
        }
    }
    println!("messages still queued in the store after each kill: {queued_after_kills:?}");
    println!(
        "{kills_while_queueing} kills fell while a burst was being queued (messages accepted before each: {accepted_before_kill:?})"
    );
    println!(
        "{} messages accepted in {runs} runs ({kills_with_sends_in_flight} kills fell while a burst was half sent); \
         {} lost, {} sent twice, {retransmitted} retransmitted under the same id",
        accepted.len(),
        lost.len(),
        twice.len()
    );
    // One verdict per run: its queue drained, and none of its messages was
    // lost or sent twice.
    let failed = failed_runs.len();
    println!("{} passed, {failed} failed", runs as usize - failed);
    assert!(
        failed_runs.is_empty(),
        "failed runs: {failed_runs:?} (seed {seed})"
    );
    assert!(lost.is_empty(), "lost: {lost:?} (seed {seed})");
    assert!(twice.is_empty(), "sent twice: {twice:?} (seed {seed})");
    sim.shutdown().await;
}

/// How many times the contact received each stanza id (one pass over the
/// simulator's record, instead of one per id).
fn arrivals_by_id(sim: &wa_sim::SimHandle) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for m in sim.control().messages() {
        *counts.entry(m.id).or_insert(0) += 1;
    }
    counts
}
