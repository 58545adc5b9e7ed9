//! The HTTP edge against the real `lila` binary on loopback: a client
//! trickling its headers is cut off by the header timeout, an idle
//! keep-alive connection by the idle timeout; a flood of connections never
//! keeps `/health` or another tenant out; one tenant's flood of requests
//! is answered 429 while other tenants, operators and `/health` are served.

#[path = "support/process.rs"]
mod process;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use process::{Server, free_port, tenant_token, wait_until};

const SECRET: &str = "edge-test-secret-edge-test-secret";

/// A server whose config file has `toml` in it.
fn start(toml: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("data");
    std::fs::write(root.with_extension("toml"), toml).expect("config");
    // Nothing listens there: no test here needs WhatsApp.
    let url = format!("ws://127.0.0.1:{}/ws/chat", free_port());
    let server = Server::start_with_config(&root, SECRET, &url);
    (dir, server)
}

fn connect(server: &Server) -> TcpStream {
    let address = server.base_url().replace("http://", "");
    let stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    stream
}

/// What a connection that the test keeps open says now.
#[derive(Debug, PartialEq)]
enum Peer {
    Open,
    Closed,
    /// The server answered something (it should not have, for a head not finished).
    Answered(String),
}

fn peer(stream: &mut TcpStream) -> Peer {
    let mut buf = [0u8; 512];
    match stream.read(&mut buf) {
        Ok(0) => Peer::Closed,
        Ok(n) => Peer::Answered(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Peer::Open,
        Err(_) => Peer::Closed,
    }
}

/// One request on a new connection; the status, the head and the body.
fn raw(server: &Server, request: &str) -> (u16, String, String) {
    let mut stream = connect(server);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

fn get(server: &Server, path: &str, token: Option<&str>) -> (u16, String, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    raw(
        server,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}\r\n"),
    )
}

/// `/health` answers 200 within `within`.
fn health_answers(server: &Server, within: Duration) {
    let started = Instant::now();
    let (status, _, _) = get(server, "/health", None);
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < within,
        "/health took {:?}",
        started.elapsed()
    );
}

fn metric(server: &Server, series: &str) -> u64 {
    let text = server.get_text("/metrics").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

// Slowloris: a head trickled a byte at a time used to be answered after 45 s.
#[test]
fn a_trickled_head_is_cut_off_by_the_header_timeout_while_health_answers() {
    let (_dir, server) = start("[http]\nheader_timeout_secs = 1\nidle_timeout_secs = 30\n");
    let mut slow = connect(&server);
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        .expect("write");
    let started = Instant::now();
    let mut cut_after = None;
    while started.elapsed() < Duration::from_secs(8) {
        // One more byte of a header that never ends.
        if slow.write_all(b"x").is_err() {
            cut_after = Some(started.elapsed());
            break;
        }
        match peer(&mut slow) {
            Peer::Open => {}
            Peer::Closed => {
                cut_after = Some(started.elapsed());
                break;
            }
            Peer::Answered(text) => panic!("a head never finished was answered: {text:?}"),
        }
        health_answers(&server, Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(150));
    }
    let cut_after = cut_after.expect("the trickling connection was still open after 8 s");
    assert!(
        cut_after < Duration::from_secs(4),
        "cut after {cut_after:?}"
    );
    assert!(metric(&server, "lila_http_header_timeouts_total") >= 1);
}

// An idle connection used to stay open until the client left.
#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let (_dir, server) = start("[http]\nheader_timeout_secs = 1\nidle_timeout_secs = 3\n");
    // A connection that never sends a byte owes its head from the start.
    let mut silent = connect(&server);
    // A keep-alive connection that made one request, then says nothing.
    let mut kept = connect(&server);
    kept.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("write");
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).expect("an answer");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    kept.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let answered = Instant::now();

    wait_until("the silent connection is closed", || {
        peer(&mut silent) == Peer::Closed
    });
    // Past the header timeout, the idle connection is still open: it owes
    // no head until it starts one.
    std::thread::sleep(Duration::from_millis(1_500).saturating_sub(answered.elapsed()));
    assert_eq!(peer(&mut kept), Peer::Open);
    wait_until("the idle connection is closed", || {
        peer(&mut kept) == Peer::Closed
    });
    let idle_for = answered.elapsed();
    assert!(
        idle_for >= Duration::from_millis(2_500) && idle_for < Duration::from_secs(8),
        "closed after {idle_for:?}"
    );
    assert!(metric(&server, "lila_http_idle_connections_closed_total") >= 1);
}

// A flood of connections that never finish their heads used to hold every
// one of them open.
#[test]
fn a_flood_of_connections_is_bounded_and_never_keeps_health_or_a_tenant_out() {
    let (_dir, server) =
        start("[http]\nmax_connections = 8\nheader_timeout_secs = 60\nidle_timeout_secs = 60\n");
    let mut flood: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut stream = connect(&server);
            let _ = stream.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n");
            stream
        })
        .collect();
    health_answers(&server, Duration::from_secs(2));
    let token = tenant_token(SECRET, "globex");
    let (status, _, body) = get(&server, "/api/sessions", Some(&token));
    assert_eq!(status, 200, "{body}");
    wait_until("the flood is cut down to the limit", || {
        let open = flood
            .iter_mut()
            .map(peer)
            .filter(|now| *now == Peer::Open)
            .count();
        open <= 8
    });
    assert!(metric(&server, "lila_http_connections_evicted_total") >= 32);
    assert!(metric(&server, "lila_http_connections_open") <= 8);
}

// One tenant's requests in flight used to be unbounded.
#[test]
fn a_tenant_over_its_requests_in_flight_gets_429_and_others_are_served() {
    let (_dir, server) = start("[http]\nmax_requests_per_tenant = 3\n");
    let acme = tenant_token(SECRET, "acme");
    // Three requests whose bodies never finish: each holds a slot.
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = connect(&server);
            let head = format!(
                "POST /api/sessions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {acme}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
            );
            stream.write_all(head.as_bytes()).expect("write");
            stream
        })
        .collect();
    wait_until("acme is at its limit", || {
        get(&server, "/api/sessions", Some(&acme)).0 == 429
    });
    let (status, head, body) = get(&server, "/api/sessions", Some(&acme));
    assert_eq!(status, 429);
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["success"], false);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("3 requests in flight")),
        "{body}"
    );

    let globex = tenant_token(SECRET, "globex");
    assert_eq!(get(&server, "/api/sessions", Some(&globex)).0, 200);
    let operator = lila::auth::JwtAuth::new(SECRET.as_bytes())
        .and_then(|auth| auth.mint(None, true, Duration::from_secs(600)))
        .expect("operator token");
    assert_eq!(get(&server, "/api/sessions", Some(&operator)).0, 200);
    health_answers(&server, Duration::from_secs(1));
    assert!(metric(&server, "lila_http_tenant_requests_refused_total") >= 1);

    // The clients vanish: their slots come back.
    for stream in held.iter_mut() {
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    drop(held);
    wait_until("acme is served again", || {
        get(&server, "/api/sessions", Some(&acme)).0 == 200
    });
}

/// Opens `GET /api/events` on a new connection; the status line's code.
fn open_stream(server: &Server, token: &str) -> (u16, TcpStream) {
    let mut stream = connect(server);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let head = format!(
        "GET /api/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("write");
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).unwrap_or(0);
    let status = String::from_utf8_lossy(&buf[..n])
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, stream)
}

// A stream whose client vanished must not keep its caller's slot.
#[test]
fn a_stream_whose_client_vanishes_frees_its_slot() {
    let (_dir, server) = start("[events]\nmax_streams_per_caller = 1\nheartbeat_secs = 1\n");
    let acme = tenant_token(SECRET, "acme");
    let (status, held) = open_stream(&server, &acme);
    assert_eq!(status, 200);
    let (status, _refused) = open_stream(&server, &acme);
    assert_eq!(status, 429);
    // The client goes away without a word.
    drop(held);
    wait_until("acme may open a stream again", || {
        open_stream(&server, &acme).0 == 200
    });
}
