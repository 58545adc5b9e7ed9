//! Cluster trust (issue 17, item 6), against the real binary on a
//! throwaway PostgreSQL: a node believes no request marked as from another
//! node without a proof made with the cluster secret, a row forged into
//! `nodes` collects no caller's token, and NOTIFY payloads not sealed with
//! the secret are dropped and counted. The database connection itself is
//! TLS when the URL asks for it (`sslmode=verify-full`).

#[path = "support/process.rs"]
mod process;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use lila_pgstore::testing::TempPostgres;
use process::{Server, tenant_token, wait_until};

const SECRET: &str = "cluster-trust-test-secret-cluster-trust";
/// No session connects anywhere in these tests.
const WA_URL: &str = "ws://127.0.0.1:9/ws/chat";

struct Node {
    dir: tempfile::TempDir,
    server: Server,
    pool: lila_pgstore::Pool,
}

fn start() -> Node {
    let postgres = TempPostgres::shared().unwrap_or_else(|e| panic!("{e}"));
    let url = postgres.create_database().expect("a database");
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_node(&dir.path().join("node"), SECRET, WA_URL, &url);
    let pool = lila_pgstore::connect_pool(&url, 2).expect("a pool");
    Node { dir, server, pool }
}

fn port(server: &Server) -> u16 {
    server
        .base_url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

/// Sends `head` (request line and headers, without the blank line) with no
/// body; the status and the whole answer.
fn raw(server: &Server, head: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port(server))).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "{head}\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

fn refused_total(server: &Server) -> u64 {
    let metrics = server.get_text("/metrics").expect("metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("lila_cluster_proofs_refused_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no lila_cluster_proofs_refused_total in\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_marked_as_from_another_node_needs_a_valid_proof() {
    let node = start();
    let token = tenant_token(SECRET, "acme");
    assert_eq!(refused_total(&node.server), 0);
    // A tenant's own token does not make a request from a node.
    let (status, answer) = raw(
        &node.server,
        &format!(
            "GET /api/sessions HTTP/1.1\r\nAuthorization: Bearer {token}\r\nx-lila-forwarded-from: evil"
        ),
    );
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("needs a valid cluster proof"), "{answer}");
    // Nor does a proof not made with the cluster secret.
    let forged = lila::cluster::proof::Proofs::new(b"not-the-cluster-secret-not-the-one");
    let proof = forged.sign(&lila::cluster::proof::Signed {
        method: "GET",
        path_and_query: "/api/sessions",
        from: "evil",
        caller: "operator",
        body: b"",
    });
    let (status, answer) = raw(
        &node.server,
        &format!(
            "GET /api/sessions HTTP/1.1\r\nx-lila-forwarded-from: evil\r\nx-lila-caller: operator\r\nx-lila-proof: {proof}"
        ),
    );
    assert_eq!(status, 401, "{answer}");
    // The real secret's proof is accepted, once.
    let ours = lila::cluster::proof::Proofs::new(process::CLUSTER_SECRET.as_bytes());
    let proof = ours.sign(&lila::cluster::proof::Signed {
        method: "GET",
        path_and_query: "/api/sessions",
        from: "peer",
        caller: "tenant:acme",
        body: b"",
    });
    let head = format!(
        "GET /api/sessions HTTP/1.1\r\nx-lila-forwarded-from: peer\r\nx-lila-caller: tenant:acme\r\nx-lila-proof: {proof}"
    );
    let (status, answer) = raw(&node.server, &head);
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = raw(&node.server, &head);
    assert_eq!(status, 401, "a replayed proof: {answer}");
    assert!(answer.contains("already used"), "{answer}");
    assert_eq!(refused_total(&node.server), 3);
}

/// A fake "node" on loopback: every request it gets, as raw text, answered
/// 200 with an empty listing.
fn forged_node() -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let body = r#"{"success":true,"sessions":[]}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if tx
                .send(String::from_utf8_lossy(&seen).into_owned())
                .is_err()
            {
                return;
            }
        }
    });
    (url, rx)
}

/// What someone with database access can write: a node of their own, at
/// `url`, holding `phone`'s lease.
async fn forge_holder(node: &Node, node_id: &str, url: &str, phone: &str) {
    let client = node.pool.get().await.expect("a connection");
    client
        .execute(
            "INSERT INTO nodes (node_id, url) VALUES ($1, $2)",
            &[&node_id, &url],
        )
        .await
        .expect("a forged node");
    client
        .execute(
            "INSERT INTO leases (phone, node_id, epoch, expires_at)
             VALUES ($1, $2, nextval('lease_epochs'), now() + interval '10 minutes')",
            &[&phone, &node_id],
        )
        .await
        .expect("a forged lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_forged_into_nodes_collects_no_callers_token() {
    let node = start();
    let token = tenant_token(SECRET, "acme");
    let (url, requests) = forged_node();
    // Someone with database access makes a node of their own hold a phone.
    forge_holder(&node, "forged", &url, "5511999990001").await;
    let status_of = |server: &Server| {
        raw(
            server,
            &format!(
                "GET /api/sessions/5511999990001/status HTTP/1.1\r\nAuthorization: Bearer {token}"
            ),
        )
    };
    let (status, answer) = tokio::task::block_in_place(|| status_of(&node.server));
    assert_eq!(status, 200, "the forged node's answer comes back: {answer}");
    let (_, listing) = tokio::task::block_in_place(|| {
        raw(
            &node.server,
            &format!("GET /api/sessions HTTP/1.1\r\nAuthorization: Bearer {token}"),
        )
    });
    let mut seen = Vec::new();
    wait_until("the forged node is asked twice", || {
        seen.extend(requests.try_iter());
        seen.len() >= 2
    });
    for request in &seen {
        let lower = request.to_ascii_lowercase();
        assert!(!request.contains(&token), "a token reached it: {request}");
        assert!(!lower.contains("authorization:"), "{request}");
        assert!(lower.contains("x-lila-proof: v1."), "{request}");
        assert!(lower.contains("x-lila-caller: tenant:acme"), "{request}");
    }
    assert!(listing.starts_with("HTTP/1.1 200"), "{listing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_not_sealed_with_the_cluster_secret_are_dropped_and_counted() {
    let node = start();
    let client = node.pool.get().await.expect("a connection");
    let node_id: String = client
        .query_one("SELECT node_id FROM nodes", &[])
        .await
        .expect("the node's row")
        .get(0);
    // The node listens a moment after it is up: send until it hears.
    let event = serde_json::json!({
        "node": "forged", "tenant": "acme", "phone": "5511999990001",
        "type": "session.qr", "payload": {"qr": "2@forged", "available": true},
    })
    .to_string();
    let reset = format!("{node_id} 1");
    wait_until("the forged event and reset are refused", || {
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                for (channel, payload) in [("lila_events", &event), ("lila_reset", &reset)] {
                    client
                        .execute("SELECT pg_notify($1, $2)", &[&channel, payload])
                        .await
                        .expect("notify");
                }
            })
        });
        std::thread::sleep(Duration::from_millis(200));
        let log = std::fs::read_to_string(node.dir.path().join("node.log")).unwrap_or_default();
        log.contains("dropped a relayed event without a valid cluster proof")
            && log.contains("dropped a reset request without a valid cluster proof")
    });
    assert!(refused_total(&node.server) >= 2);
}

/// The threads of process `pid`, as `/proc` counts them.
fn threads_of(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_forwarded_to_a_silent_holder_hold_no_thread_each() {
    const REQUESTS: usize = 100;
    let node = start();
    let token = tenant_token(SECRET, "acme");
    // A holder that accepts every connection and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", silent.local_addr().expect("addr"));
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming() {
            held.push(stream);
        }
    });
    forge_holder(&node, "silent", &url, "5511999990002").await;
    let pid = node.server.pid();
    let before = threads_of(pid);
    let port = port(&node.server);
    let callers: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let token = token.clone();
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                let _ = write!(
                    stream,
                    "GET /api/sessions/5511999990002/status HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n"
                );
                // Held open while the node waits on the silent holder.
                std::thread::sleep(Duration::from_secs(4));
                drop(stream);
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = threads_of(pid);
    eprintln!("threads: {before} before, {during} with {REQUESTS} forwards waiting");
    for caller in callers {
        let _ = caller.join();
    }
    // Each forwarded request waiting on a blocking thread added one (100
    // more); async, they add none (the pools' own threads aside).
    assert!(
        during < before + 20,
        "{REQUESTS} waiting forwards took the node from {before} to {during} threads"
    );
    // And the node answers the rest meanwhile.
    let (status, answer) = raw(&node.server, "GET /health HTTP/1.1");
    assert_eq!(status, 200, "{answer}");
}

/// A node on a PostgreSQL that takes TLS connections only (`hostssl`),
/// with `sslmode=verify-full` and the server's CA: it starts and answers
/// `/health`, and every session it opened (the pools', the listeners') is
/// encrypted. The same URL without the CA is refused at start, in one
/// sentence that names what is missing and not the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_connects_to_its_database_over_verified_tls() {
    let postgres = TempPostgres::start_with(&lila_pgstore::testing::ServerOptions {
        tls: true,
        hba: Some(
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n"
                .into(),
        ),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let ca = postgres.ca_file().expect("a CA").display().to_string();
    let database = postgres.create_database().expect("a database");
    let name = database.rsplit('/').next().expect("a database name");
    let base = format!(
        "postgres://postgres:hunter2@localhost:{}/{name}?sslmode=verify-full",
        postgres.port()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("node");
    std::fs::write(data.with_extension("toml"), "").expect("config file");
    let printed = Server::refused_to_start_with_env(
        &data,
        SECRET,
        WA_URL,
        &[
            ("LILA_DATABASE_URL", base.as_str()),
            ("LILA_CLUSTER_SECRET", process::CLUSTER_SECRET),
        ],
    );
    assert!(
        printed.contains("sslmode=verify-full verifies the server's certificate")
            && printed.contains("sslrootcert"),
        "{printed}"
    );
    assert!(!printed.contains("hunter2"), "{printed}");

    let url = format!("{base}&sslrootcert={ca}");
    let server = Server::start_node(&data, SECRET, WA_URL, &url);
    let (status, answer) = raw(&server, "GET /health HTTP/1.1");
    assert_eq!(status, 200, "{answer}");
    let pool = lila_pgstore::connect_pool(&url, 1).expect("a pool");
    let client = pool.get().await.expect("a connection");
    let sessions = "SELECT count(*), bool_and(s.ssl) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.datname = current_database() \
         AND a.pid <> pg_backend_pid() AND a.query LIKE 'LISTEN%'";
    // The listeners start beside the lease loop: give them a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let row = client.query_one(sessions, &[]).await.expect("the sessions");
        let (listeners, encrypted): (i64, Option<bool>) = (row.get(0), row.get(1));
        if listeners >= 3 {
            assert_eq!(encrypted, Some(true), "{listeners} listeners");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{listeners} of the node's 3 listeners after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
