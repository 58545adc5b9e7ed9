//! The OpenAPI document: the committed `docs/openapi.json` is the one the
//! code generates, the server serves it without auth, it documents every
//! route the router answers, auth and error bodies; and the typed bodies
//! keep the exact bytes the Portal has always received.

mod support;

use axum::http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use support::Harness;

const PHONE: &str = "51987654321";

fn committed_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json")
}

fn generated() -> String {
    lila::http::openapi::document_json().expect("the document renders")
}

fn document() -> Value {
    serde_json::from_str(&generated()).expect("the document is JSON")
}

#[test]
fn the_committed_document_is_the_generated_one() {
    let committed = std::fs::read_to_string(committed_path()).unwrap_or_default();
    assert!(
        committed == generated(),
        "docs/openapi.json differs from the document the code generates. \
         Regenerate it with `cargo run -q -p lila -- openapi > docs/openapi.json` \
         (or, after `cargo test`, `target/debug/lila openapi > docs/openapi.json`), \
         review the diff and commit it."
    );
}

#[tokio::test]
async fn the_server_serves_the_document_without_auth() {
    let h = Harness::new().await;
    let response = h
        .respond(Method::GET, "/api/openapi.json", None, None, &[])
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "served as JSON"
    );
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(String::from_utf8_lossy(&bytes), generated());
}

/// Every (method, path) of the document, with `{phone}` and `{id}` filled in.
fn documented_operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let concrete = path
                .replace("{phone}", PHONE)
                .replace("{id}", "3EB0A1B2C3D4E5F6A7B8C9D0");
            out.push((method.to_uppercase(), concrete, operation.clone()));
        }
    }
    out
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_every_route_is_documented() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let operations = documented_operations(&doc);
    let mut listed: Vec<(String, String)> = operations
        .iter()
        .map(|(m, p, _)| (m.clone(), p.clone()))
        .collect();
    listed.sort();
    // The router's routes (http/mod.rs), written out: a route added there
    // and not to the ApiDoc fails here.
    let mut routes: Vec<(String, String)> = [
        ("GET", "/api/sessions".to_owned()),
        ("POST", "/api/sessions".to_owned()),
        ("DELETE", format!("/api/sessions/{PHONE}")),
        ("GET", format!("/api/sessions/{PHONE}/status")),
        ("GET", format!("/api/sessions/{PHONE}/qr")),
        (
            "POST",
            format!("/api/sessions/{PHONE}/request-pairing-code"),
        ),
        ("POST", format!("/api/sessions/{PHONE}/pairing-code")),
        ("GET", format!("/api/sessions/{PHONE}/groups")),
        ("GET", format!("/api/sessions/{PHONE}/contacts")),
        ("POST", format!("/api/sessions/{PHONE}/messages")),
        (
            "GET",
            format!("/api/sessions/{PHONE}/messages/3EB0A1B2C3D4E5F6A7B8C9D0"),
        ),
        ("GET", format!("/api/sessions/{PHONE}/outbox")),
        ("POST", format!("/api/sessions/{PHONE}/clear")),
        ("GET", "/api/plugins".to_owned()),
        ("GET", "/api/cluster".to_owned()),
        ("GET", "/api/events".to_owned()),
        ("GET", "/api/openapi.json".to_owned()),
        ("GET", "/health".to_owned()),
        ("GET", "/metrics".to_owned()),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p))
    .collect();
    routes.sort();
    assert_eq!(listed, routes);

    // And the router answers each of them (not with its "no such endpoint"
    // fallback nor 405), with a status the document lists for it.
    let h = Harness::new().await;
    let token = h.token("acme");
    for (method, path, operation) in operations {
        if path == "/api/events" {
            // A stream that never ends: host/tests/events.rs reads it.
            continue;
        }
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let (status, body) = h.call(method.clone(), &path, Some(&token), None).await;
        assert_ne!(body["error"], "no such endpoint", "{method} {path}");
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            operation["responses"][status.as_str()].is_object(),
            "{method} {path} answered {status}, which its document does not list: {body}"
        );
    }
}

#[test]
fn auth_is_a_bearer_jwt_on_every_api_route_but_the_document() {
    let doc = document();
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert_eq!(scheme["bearerFormat"], "JWT");
    let described = scheme["description"].as_str().expect("a description");
    assert!(
        described.contains("`companyId`") && described.contains(r#"`role: "operator"`"#),
        "{described}"
    );
    for (method, path, operation) in documented_operations(&doc) {
        let public = !path.starts_with("/api/") || path == "/api/openapi.json";
        if public {
            assert!(operation.get("security").is_none(), "{method} {path}");
            continue;
        }
        assert_eq!(
            operation["security"],
            json!([{ "bearer": [] }]),
            "{method} {path}"
        );
        assert!(
            operation["responses"]["401"].is_object(),
            "{method} {path} documents no 401"
        );
    }
}

#[test]
fn every_error_response_has_the_error_body_and_an_example() {
    let doc = document();
    let error_body = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(
        error_body["required"],
        json!(["error", "success"]),
        "{error_body}"
    );
    for (method, path, operation) in documented_operations(&doc) {
        for (status, response) in operation["responses"].as_object().expect("responses") {
            if !status.starts_with('4') && !status.starts_with('5') {
                continue;
            }
            let content = &response["content"]["application/json"];
            assert_eq!(
                content["schema"]["$ref"], "#/components/schemas/ErrorBody",
                "{method} {path} {status}"
            );
            assert_eq!(
                content["example"]["success"], false,
                "{method} {path} {status}"
            );
            assert!(
                content["example"]["error"].is_string(),
                "{method} {path} {status}"
            );
        }
    }
}

/// The typed bodies serialize to the bytes the `json!` bodies they replaced
/// produced (keys in alphabetical order, `success` among them).
#[tokio::test]
async fn responses_keep_their_exact_bytes() {
    let h = Harness::new().await;
    let raw = |response: axum::response::Response| async move {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    };
    assert_eq!(
        raw(h.respond(Method::GET, "/health", None, None, &[]).await).await,
        // The tests' build accepts the simulator's chain, and says so.
        r#"{"certificateVerification":false,"status":"ok","success":true}"#
    );
    assert_eq!(
        raw(h
            .respond(Method::GET, "/api/sessions", None, None, &[])
            .await)
        .await,
        r#"{"error":"missing Authorization header (expected 'Bearer <token>')","success":false}"#
    );
    let token = h.token("acme");
    h.create(PHONE, &token).await;
    h.wait_status(PHONE, &token, "qr").await;
    assert_eq!(
        raw(h
            .respond(Method::GET, "/api/sessions", Some(&token), None, &[])
            .await)
        .await,
        r#"{"sessions":[{"lastError":null,"me":null,"pendingMessages":0,"phoneNumber":"51987654321","qrAvailable":true,"ready":false,"status":"qr"}],"success":true}"#
    );
    let operator = h.operator();
    assert_eq!(
        raw(h
            .respond(
                Method::GET,
                &format!("/api/sessions/{PHONE}/status"),
                Some(&operator),
                None,
                &[]
            )
            .await)
        .await,
        r#"{"companyId":"acme","lastError":null,"me":null,"pendingMessages":0,"phoneNumber":"51987654321","qrAvailable":true,"ready":false,"status":"qr","success":true}"#
    );
}
