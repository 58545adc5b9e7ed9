//! Groups, contacts and messages served by the simulator, through the real client.

mod common;

use common::{TestClient, WAIT, paired_client, start_sim};
use wa_sim::GroupSpec;
use whatsapp_rust::pair_code::PairCodeOptions;
use whatsapp_rust::prelude::*;
use whatsapp_rust::waproto::whatsapp as wa;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_groups_come_back_from_get_participating() {
    let sim = start_sim().await;
    let group = sim
        .add_group(GroupSpec {
            id: Some("120363000000000001".into()),
            subject: "Team".into(),
            participants: vec![
                "15550002222@s.whatsapp.net".into(),
                "15550003333@s.whatsapp.net".into(),
            ],
        })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (client, _jid) = paired_client(&sim, dir.path()).await;

    let groups = tokio::time::timeout(WAIT, client.client.groups().get_participating())
        .await
        .expect("in time")
        .expect("participating groups");
    assert_eq!(groups.len(), 1);
    let (id, meta) = groups.iter().next().unwrap();
    assert_eq!(id.to_string(), group);
    assert_eq!(meta.subject, "Team");
    assert_eq!(meta.participants.len(), 2);
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_contacts_reach_the_client_through_app_state() {
    let sim = start_sim().await;
    sim.add_contact("15557770001", "Alice Example").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut client = TestClient::start(&sim, dir.path()).await;
    let qr = client.wait_qr().await;
    sim.scan_qr(&qr).unwrap();
    let (jid, name) = client
        .wait_for("a ContactUpdate", |e| match e {
            Event::ContactUpdate(c) => Some((c.jid.to_string(), c.action.full_name.clone())),
            _ => None,
        })
        .await;
    assert_eq!(jid, "15557770001@s.whatsapp.net");
    assert_eq!(name.as_deref(), Some("Alice Example"));
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_texts_are_delivered_decrypted_in_order() {
    let sim = start_sim().await;
    let contact = sim.add_contact("15557770002", "Bob").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (client, jid) = paired_client(&sim, dir.path()).await;

    let to: Jid = contact.parse().unwrap();
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        let sent = tokio::time::timeout(
            WAIT,
            client.client.send_message(
                to.clone(),
                wa::Message {
                    conversation: Some(text.to_string()),
                    ..Default::default()
                },
            ),
        )
        .await
        .expect("send in time")
        .expect("send succeeds");
        ids.push(sent.message_id);
    }
    assert!(
        sim.wait_until(WAIT, |s| s.messages().len() >= 3).await,
        "got {:?}",
        sim.messages()
    );
    let received = sim
        .messages_by_recipient()
        .remove(&contact)
        .unwrap_or_default();
    let texts: Vec<_> = received
        .iter()
        .map(|m| m.text.clone().unwrap_or_default())
        .collect();
    assert_eq!(texts, ["one", "two", "three"]);
    let got_ids: Vec<_> = received.iter().map(|m| m.id.clone()).collect();
    assert_eq!(
        got_ids, ids,
        "each message arrives once, under the id the client chose"
    );
    assert!(received.iter().all(|m| m.from == jid));
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_with_code_returns_an_eight_character_code() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let mut client = TestClient::start(&sim, dir.path()).await;
    // The QR shows once the socket is up and unpaired.
    client.wait_qr().await;
    let code = tokio::time::timeout(
        WAIT,
        client.client.pair_with_code(PairCodeOptions {
            phone_number: "15550009999".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("in time")
    .expect("a pairing code");
    assert_eq!(
        code.chars().filter(|c| c.is_ascii_alphanumeric()).count(),
        8,
        "{code}"
    );
    client.stop().await;
}
