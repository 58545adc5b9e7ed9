//! QR pairing, login, and resuming from the stored credentials, with the real client.

mod common;

use std::time::Instant;

use common::{TestClient, WAIT, paired_client, start_sim};
use whatsapp_rust::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_scan_links_the_device_and_the_client_connects_as_the_phone() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let mut client = TestClient::start(&sim, dir.path()).await;

    let qr = client.wait_qr().await;
    assert_eq!(
        qr.split(',').count(),
        5,
        "a real WhatsApp Web QR string: {qr}"
    );
    let jid = sim.scan_qr_as(&qr, "15550001111").expect("the phone scans");
    assert!(jid.starts_with("15550001111:"), "{jid}");

    let paired = client
        .wait_for("PairSuccess", |e| match e {
            Event::PairSuccess(p) => Some(p.id.to_string()),
            _ => None,
        })
        .await;
    assert_eq!(paired, jid);
    let started = Instant::now();
    client.wait_connected().await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "connected in {:?}",
        started.elapsed()
    );
    assert_eq!(client.client.pn().map(|j| j.to_string()), Some(jid.clone()));
    assert!(sim.is_connected(&jid));
    assert!(
        dir.path().join("whatsapp.db").exists(),
        "credentials are on disk"
    );
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_client_resumes_from_its_store_without_a_qr() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let (client, jid) = paired_client(&sim, dir.path()).await;
    client.stop().await;
    assert!(
        sim.wait_until(WAIT, |s| !s.is_connected(&jid)).await,
        "the old socket closes"
    );
    let phone = jid.split(':').next().unwrap().to_string();
    let attempts_before = sim.connection_attempts(&phone);

    let mut again = TestClient::start(&sim, dir.path()).await;
    let started = Instant::now();
    let saw_qr = again
        .wait_for("Connected or a QR", |e| match e {
            Event::Connected(_) => Some(false),
            Event::PairingQrCode(_) => Some(true),
            _ => None,
        })
        .await;
    assert!(!saw_qr, "a paired client must not ask for a QR again");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "resumed in {:?}",
        started.elapsed()
    );
    assert_eq!(again.client.pn().map(|j| j.to_string()), Some(jid.clone()));
    assert!(sim.connection_attempts(&phone) > attempts_before);
    assert_eq!(
        sim.ik_handshakes(),
        1,
        "the resumed login uses Noise IK with the cached server key"
    );
    assert!(sim.is_connected(&jid));
    again.stop().await;
}

/// Baileys shows the QR code's text as the phone's camera app would open
/// it: a link to the linked-devices screen with the code after the `#`.
/// The simulated phone scans that form too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qr_code_given_as_the_linked_devices_link_is_scanned_too() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let mut client = TestClient::start(&sim, dir.path()).await;
    let qr = client.wait_qr().await;
    let link = format!("https://wa.me/settings/linked_devices#{qr}");
    let jid = sim
        .scan_qr_as(&link, "15550002222")
        .expect("the phone scans the link");
    assert!(jid.starts_with("15550002222:"), "{jid}");
    client.wait_connected().await;
}

/// A client that speaks another version of the binary dictionary (the
/// connection header's last byte) is refused before the handshake, with a
/// WebSocket close (1002) that names both versions, not cut off inside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_another_dictionary_version_is_refused_with_a_reason() {
    use whatsapp_rust::transport::{
        DisconnectReason, TokioWebSocketTransportFactory, TransportEvent, TransportFactory,
    };
    use whatsapp_rust::wacore_binary::consts::WA_CONN_HEADER;
    let sim = start_sim().await;
    let factory = TokioWebSocketTransportFactory::new().with_url(sim.ws_url());
    let (transport, events) = factory.create_transport().await.expect("a connection");
    let mut header = WA_CONN_HEADER.to_vec();
    header[3] = WA_CONN_HEADER[3] - 1;
    transport
        .send(whatsapp_rust::bytes::Bytes::from(header))
        .await
        .expect("the header is sent");
    let reason = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(TransportEvent::Disconnected(reason)) => return Some(reason),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    })
    .await
    .expect("the simulator answers in time");
    match reason {
        Some(DisconnectReason::ServerClose { code, reason }) => {
            assert_eq!(code, Some(1002), "{reason}");
            assert_eq!(
                reason,
                format!(
                    "the client speaks binary dictionary version {}; this server speaks version {}",
                    WA_CONN_HEADER[3] - 1,
                    WA_CONN_HEADER[3]
                )
            );
        }
        other => panic!("expected a close with a reason, got {other:?}"),
    }
}
