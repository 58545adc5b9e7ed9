//! Simulated contacts message the paired device over the real protocol, and
//! the real client decrypts what they send.

mod common;

use common::{TestClient, WAIT, http, paired_client, start_sim};
use wa_sim::{ContactMessage, MediaKind, SimHandle};
use whatsapp_rust::download::Downloadable;
use whatsapp_rust::prelude::*;
use whatsapp_rust::waproto::whatsapp as wa;

fn phone_of(device_jid: &str) -> String {
    device_jid.split(':').next().unwrap().to_string()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    let mut h =
        whatsapp_rust::wacore::libsignal::crypto::CryptographicHash::new("SHA-256").unwrap();
    h.update(data);
    h.finalize()
}

/// The contact sends `message` to `phone`; waits until the client decrypted it.
async fn deliver(
    sim: &SimHandle,
    client: &mut TestClient,
    contact: &str,
    phone: &str,
    message: ContactMessage,
) -> (String, wa::Message, MessageInfo) {
    let id = sim
        .send_from_contact(contact, phone, message)
        .await
        .expect("the contact sends");
    let (message, info) = client.wait_message(&id).await;
    (id, message, info)
}

async fn download(client: &TestClient, media: &dyn Downloadable) -> Vec<u8> {
    tokio::time::timeout(WAIT, client.client.download(media))
        .await
        .expect("download in time")
        .expect("download succeeds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contacts_text_reaches_the_client_decrypted_and_is_acknowledged() {
    let sim = start_sim().await;
    let contact = sim.add_contact("15557770010", "Carol").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut client, jid) = paired_client(&sim, dir.path()).await;
    let phone = phone_of(&jid);

    let id = sim
        .send_from_contact(&contact, &phone, ContactMessage::text("hello there"))
        .await
        .unwrap();
    let (message, info) = client.wait_message(&id).await;
    assert_eq!(message.conversation.as_deref(), Some("hello there"));
    assert_eq!(info.source.sender.to_string(), contact);
    assert_eq!(info.source.chat.to_string(), contact);
    assert!(!info.source.is_from_me);
    assert!(!info.source.is_group);
    assert_eq!(info.push_name, "Carol");

    assert!(
        sim.wait_until(WAIT, |s| s
            .inbound_message(&id)
            .is_some_and(|m| m.acknowledged && m.delivered))
            .await,
        "{:?}",
        sim.inbound_message(&id)
    );
    let status = sim.inbound_message(&id).unwrap();
    assert_eq!(status.devices.len(), 1);
    assert_eq!(status.devices[0].jid, jid);
    assert_eq!(
        status.devices[0].enc, "pkmsg",
        "a first message starts the session"
    );
    assert!(status.devices[0].sent);
    assert_eq!(status.kind, "text");

    // The device answers; the contact's next message rides the session (msg).
    let to: Jid = contact.parse().unwrap();
    tokio::time::timeout(
        WAIT,
        client.client.send_message(
            to,
            wa::Message {
                conversation: Some("hi Carol".into()),
                ..Default::default()
            },
        ),
    )
    .await
    .expect("send in time")
    .expect("send succeeds");
    assert!(sim.wait_until(WAIT, |s| !s.messages().is_empty()).await);
    let second = sim
        .send_from_contact(&contact, &phone, ContactMessage::text("second"))
        .await
        .unwrap();
    let (message, _) = client.wait_message(&second).await;
    assert_eq!(message.conversation.as_deref(), Some("second"));
    assert_eq!(sim.inbound_message(&second).unwrap().devices[0].enc, "msg");
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_and_a_document_download_to_the_same_bytes() {
    let sim = start_sim().await;
    let contact = sim.add_contact("15557770011", "Dave").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut client, jid) = paired_client(&sim, dir.path()).await;
    let phone = phone_of(&jid);

    let image: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let (id, message, _) = deliver(
        &sim,
        &mut client,
        &contact,
        &phone,
        ContactMessage::media(MediaKind::Image, "image/jpeg", image.clone())
            .with_caption("a picture"),
    )
    .await;
    let img = message.image_message.as_option().expect("an image message");
    assert_eq!(img.caption.as_deref(), Some("a picture"));
    assert_eq!(img.mimetype.as_deref(), Some("image/jpeg"));
    assert_eq!(img.file_length, Some(image.len() as u64));
    assert_eq!(img.file_sha256.as_deref(), Some(sha256(&image).as_slice()));
    assert_eq!(sha256(&download(&client, img).await), sha256(&image));
    assert_eq!(sim.inbound_message(&id).unwrap().kind, "media");

    let pdf = b"%PDF-1.4 not really a pdf, but bytes all the same".repeat(50);
    let (_, message, _) = deliver(
        &sim,
        &mut client,
        &contact,
        &phone,
        ContactMessage::media(MediaKind::Document, "application/pdf", pdf.clone())
            .with_file_name("report.pdf"),
    )
    .await;
    let doc = message
        .document_message
        .as_option()
        .expect("a document message");
    assert_eq!(doc.file_name.as_deref(), Some("report.pdf"));
    assert_eq!(download(&client, doc).await, pdf);
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_sends_and_reports_the_acknowledgement() {
    let sim = start_sim().await;
    sim.add_contact("15557770012", "Erin").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut client, jid) = paired_client(&sim, dir.path()).await;
    let phone = phone_of(&jid);

    let (status, body) = http(
        &sim,
        "POST",
        &format!("/admin/contacts/15557770012/send?to={phone}"),
        "application/json",
        r#"{"type": "text", "text": "over http"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let (message, _) = client.wait_message(&id).await;
    assert_eq!(message.conversation.as_deref(), Some("over http"));
    assert!(
        sim.wait_until(WAIT, |s| s
            .inbound_message(&id)
            .is_some_and(|m| m.acknowledged))
            .await
    );
    let (status, body) = http(&sim, "GET", &format!("/admin/messages/{id}"), "", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"]["acknowledged"], true, "{body}");
    assert_eq!(body["message"]["devices"][0]["jid"], jid.as_str(), "{body}");

    let cases = [
        (
            "/admin/contacts/15550000000/send?to=".to_string() + &phone,
            r#"{"type": "text", "text": "x"}"#,
            404,
        ),
        (
            "/admin/contacts/15557770012/send?to=15559999999".to_string(),
            r#"{"type": "text", "text": "x"}"#,
            409,
        ),
        (
            "/admin/contacts/15557770012/send".to_string(),
            r#"{"type": "text", "text": "x"}"#,
            400,
        ),
        (
            format!("/admin/contacts/15557770012/send?to={phone}"),
            r#"{"type": "text"}"#,
            400,
        ),
        (
            format!("/admin/contacts/15557770012/send?to={phone}"),
            r#"{"type": "hologram"}"#,
            400,
        ),
        (
            format!("/admin/contacts/15557770012/send?to={phone}"),
            r#"{"type": "image", "mimetype": "image/png", "dataBase64": "***"}"#,
            400,
        ),
        (
            format!("/admin/contacts/15557770012/send?to={phone}"),
            "not json",
            400,
        ),
        (
            format!("/admin/contacts/15557770012/send?to={phone}"),
            r#"{"type": "text", "text": "x", "quotedId": "NOPE"}"#,
            404,
        ),
    ];
    for (path, body, expected) in cases {
        let (status, answer) = http(&sim, "POST", &path, "application/json", body).await;
        assert_eq!(status, expected, "{path} {body}: {answer}");
        assert_eq!(answer["success"], false, "{answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| e.len() > 10),
            "{answer}"
        );
    }
    let (status, _) = http(&sim, "GET", "/admin/messages/NOPE", "", "").await;
    assert_eq!(status, 404);
    client.stop().await;
}
