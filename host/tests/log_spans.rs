//! Log spans, read from the formatted log output: a session actor's lines are
//! not logged inside the span of the request that first started the actor,
//! each request has an id (echoed in `x-request-id`), and the actor's lines
//! for a command carry the id of the request that sent it.

mod support;

use axum::http::{Method, StatusCode};
use support::{Captured, Harness};

const PHONE: &str = "51987654321";

/// Sends `method path` with `token` and, when given, an `x-request-id`;
/// returns the status and the `x-request-id` the response carries.
async fn send(
    h: &Harness,
    method: Method,
    path: &str,
    token: &str,
    request_id: Option<&str>,
    body: Option<serde_json::Value>,
) -> (StatusCode, String) {
    let headers: Vec<(&str, &str)> = request_id
        .map(|id| ("x-request-id", id))
        .into_iter()
        .collect();
    let response = h.respond(method, path, Some(token), body, &headers).await;
    let echoed = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (response.status(), echoed)
}

#[tokio::test]
async fn actor_lines_carry_the_request_id_of_their_command_and_no_http_parent() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = Harness::new().await;
    let token = h.token("acme");
    let (status, echoed) = send(
        &h,
        Method::POST,
        "/api/sessions",
        &token,
        Some("create-req-1"),
        Some(serde_json::json!({ "phoneNumber": PHONE })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echoed, "create-req-1", "a sane client id is echoed");
    h.wait_status(PHONE, &token, "qr").await;

    // A later request on the same actor: a reset.
    let (status, echoed) = send(
        &h,
        Method::POST,
        &format!("/api/sessions/{PHONE}/clear"),
        &token,
        Some("reset-req-2"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echoed, "reset-req-2");

    // Without an id, or with one that could forge a log line, a new one is made.
    for sent in [None, Some("two words")] {
        let (_, echoed) = send(
            &h,
            Method::GET,
            &format!("/api/sessions/{PHONE}/status"),
            &token,
            sent,
            None,
        )
        .await;
        assert_eq!(echoed.len(), 16, "{echoed:?}");
        assert!(echoed.bytes().all(|b| b.is_ascii_hexdigit()), "{echoed:?}");
    }

    let lines = captured.lines();
    let all = lines.join("\n");
    let actor_lines: Vec<&String> = lines.iter().filter(|l| l.contains("session{")).collect();
    assert!(!actor_lines.is_empty(), "no actor lines captured:\n{all}");
    for line in &actor_lines {
        assert!(
            !line.contains("http{"),
            "an actor line inside a request's span:\n{line}"
        );
        assert_eq!(line.matches("tenant=").count(), 1, "{line}");
    }

    let created = lines
        .iter()
        .find(|l| l.contains("session created"))
        .unwrap_or_else(|| panic!("no 'session created' line:\n{all}"));
    assert!(
        created.contains(
            "session{phone=51987654321 tenant=acme}:command{kind=create request_id=create-req-1}"
        ),
        "{created}"
    );
    let cleared = lines
        .iter()
        .find(|l| l.contains("session cleared"))
        .unwrap_or_else(|| panic!("no 'session cleared' line:\n{all}"));
    assert!(
        cleared.contains(
            "session{phone=51987654321 tenant=acme}:command{kind=clear request_id=reset-req-2}"
        ),
        "{cleared}"
    );
    // The request's own line carries the same id.
    assert!(
        lines.iter().any(|l| l.contains("http{method=POST")
            && l.contains("request_id=reset-req-2")
            && l.contains(" request ")),
        "{all}"
    );
}
