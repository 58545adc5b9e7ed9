//! The admin API over HTTP, as a person or another process drives the simulator.

mod common;

use common::{TestClient, http, start_sim};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_is_linked_and_listed_through_the_http_admin_api() {
    let sim = start_sim().await;
    let (status, body) = http(
        &sim,
        "POST",
        "/admin/contacts",
        "application/json",
        r#"{"phone":"15557770003","name":"Carol"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = http(&sim, "GET", "/admin/contacts", "text/plain", "").await;
    assert_eq!(body["contacts"][0]["jid"], "15557770003@s.whatsapp.net");

    let dir = tempfile::tempdir().unwrap();
    let mut client = TestClient::start(&sim, dir.path()).await;
    let qr = client.wait_qr().await;
    let (status, body) = http(
        &sim,
        "POST",
        "/admin/scan-qr?phone=15550004444",
        "text/plain",
        &qr,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let jid = body["jid"].as_str().unwrap().to_string();
    assert!(jid.starts_with("15550004444:"));
    client.wait_connected().await;

    let (_, body) = http(&sim, "GET", "/admin/devices", "text/plain", "").await;
    let devices = body["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["jid"], jid.as_str());
    assert_eq!(devices[0]["connected"], true);

    let (status, _) = http(
        &sim,
        "POST",
        "/admin/scan-qr",
        "text/plain",
        "not,a,qr,code",
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = http(
        &sim,
        "POST",
        "/admin/devices/1:1@s.whatsapp.net/drop",
        "text/plain",
        "",
    )
    .await;
    assert_eq!(status, 404);

    let (status, _) = http(
        &sim,
        "POST",
        &format!("/admin/devices/{jid}/logout"),
        "text/plain",
        "",
    )
    .await;
    assert_eq!(status, 200);
    client
        .wait_for("LoggedOut", |e| {
            matches!(e, whatsapp_rust::prelude::Event::LoggedOut(_)).then_some(())
        })
        .await;
    client.stop().await;
}
