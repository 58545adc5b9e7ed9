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

/// A simulator with one contact and a paired, connected client.
struct Linked {
    sim: SimHandle,
    dir: tempfile::TempDir,
    client: TestClient,
    /// The client's device JID.
    jid: String,
    contact: String,
    /// The client's phone number.
    phone: String,
}

async fn linked(contact_phone: &str, contact_name: &str) -> Linked {
    let sim = start_sim().await;
    let contact = sim.add_contact(contact_phone, contact_name).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (client, jid) = paired_client(&sim, dir.path()).await;
    let phone = phone_of(&jid);
    Linked {
        sim,
        dir,
        client,
        jid,
        contact,
        phone,
    }
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

/// The client sends `text` to `to`; returns the message id.
async fn device_sends(client: &TestClient, to: &str, text: &str) -> String {
    let message = wa::Message {
        conversation: Some(text.into()),
        ..Default::default()
    };
    let sent = tokio::time::timeout(
        WAIT,
        client
            .client
            .send_message(to.parse::<Jid>().unwrap(), message),
    )
    .await
    .expect("send in time")
    .expect("send succeeds");
    sent.message_id
}

async fn download(client: &TestClient, media: &dyn Downloadable) -> Vec<u8> {
    tokio::time::timeout(WAIT, client.client.download(media))
        .await
        .expect("download in time")
        .expect("download succeeds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contacts_text_reaches_the_client_decrypted_and_is_acknowledged() {
    let Linked {
        sim,
        dir: _dir,
        mut client,
        jid,
        contact,
        phone,
    } = linked("15557770010", "Carol").await;

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
    device_sends(&client, &contact, "hi Carol").await;
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
    let Linked {
        sim,
        dir: _dir,
        mut client,
        jid: _,
        contact,
        phone,
    } = linked("15557770011", "Dave").await;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_mentions_reactions_and_the_other_kinds_arrive_as_sent() {
    let Linked {
        sim,
        dir: _dir,
        mut client,
        jid: _,
        contact,
        phone,
    } = linked("15557770013", "Frank").await;
    let phone_jid = format!("{phone}@s.whatsapp.net");
    let c = &contact;
    let p = phone.as_str();

    let (original, _, _) = deliver(&sim, &mut client, c, p, ContactMessage::text("original")).await;

    // A reply to the contact's own message, mentioning the phone's user.
    let reply = ContactMessage::text("replying, @you")
        .quoting(&original)
        .mentioning([phone_jid.clone()]);
    let (_, message, _) = deliver(&sim, &mut client, c, p, reply).await;
    let ext = message
        .extended_text_message
        .as_option()
        .expect("extended text");
    assert_eq!(ext.text.as_deref(), Some("replying, @you"));
    let ctx = ext.context_info.as_option().expect("context info");
    assert_eq!(ctx.stanza_id.as_deref(), Some(original.as_str()));
    assert_eq!(ctx.participant.as_deref(), Some(contact.as_str()));
    assert_eq!(
        ctx.quoted_message
            .as_option()
            .and_then(|q| q.conversation.as_deref()),
        Some("original")
    );
    assert_eq!(ctx.mentioned_jid, std::slice::from_ref(&phone_jid));

    // A reply to what the device sent: the quote names the phone's user.
    let device_msg = device_sends(&client, &contact, "from the device").await;
    let wanted = device_msg.clone();
    assert!(
        sim.wait_until(WAIT, |s| s.messages().iter().any(|m| m.id == wanted))
            .await
    );
    let (_, message, _) = deliver(
        &sim,
        &mut client,
        c,
        p,
        ContactMessage::text("got it").quoting(&device_msg),
    )
    .await;
    let ctx = message
        .extended_text_message
        .as_option()
        .and_then(|e| e.context_info.as_option())
        .expect("context info");
    assert_eq!(ctx.participant.as_deref(), Some(phone_jid.as_str()));
    assert_eq!(
        ctx.quoted_message
            .as_option()
            .and_then(|q| q.conversation.as_deref()),
        Some("from the device")
    );

    // A reaction to the device's message.
    let (id, message, _) = deliver(
        &sim,
        &mut client,
        c,
        p,
        ContactMessage::reaction(&device_msg, "👍"),
    )
    .await;
    let reaction = message.reaction_message.as_option().expect("a reaction");
    assert_eq!(reaction.text.as_deref(), Some("👍"));
    let key = reaction.key.as_option().expect("a key");
    assert_eq!(key.id.as_deref(), Some(device_msg.as_str()));
    assert_eq!(
        key.from_me,
        Some(false),
        "the reacted message is not the contact's"
    );
    assert_eq!(sim.inbound_message(&id).unwrap().kind, "reaction");

    let (_, message, _) = deliver(
        &sim,
        &mut client,
        c,
        p,
        ContactMessage::location(48.8584, 2.2945, Some("Tour Eiffel".into())),
    )
    .await;
    let loc = message.location_message.as_option().expect("a location");
    assert_eq!(loc.degrees_latitude, Some(48.8584));
    assert_eq!(loc.degrees_longitude, Some(2.2945));
    assert_eq!(loc.name.as_deref(), Some("Tour Eiffel"));

    let vcard =
        "BEGIN:VCARD\nVERSION:3.0\nFN:Grace\nTEL;waid=15557770099:+1 555 777 0099\nEND:VCARD";
    let (_, message, _) = deliver(
        &sim,
        &mut client,
        c,
        p,
        ContactMessage::contact_card("Grace", vcard),
    )
    .await;
    let card = message.contact_message.as_option().expect("a contact card");
    assert_eq!(card.display_name.as_deref(), Some("Grace"));
    assert_eq!(card.vcard.as_deref(), Some(vcard));

    let webp = b"RIFF\x10\x00\x00\x00WEBPVP8 sticker".to_vec();
    let (_, message, _) = deliver(
        &sim,
        &mut client,
        c,
        p,
        ContactMessage::media(MediaKind::Sticker, "image/webp", webp.clone()),
    )
    .await;
    let sticker = message.sticker_message.as_option().expect("a sticker");
    assert_eq!(download(&client, sticker).await, webp);

    let ogg = vec![0x4f_u8; 3000];
    let (_, message, _) = deliver(
        &sim,
        &mut client,
        c,
        p,
        ContactMessage::media(MediaKind::Audio, "audio/ogg; codecs=opus", ogg.clone())
            .as_voice_note(),
    )
    .await;
    let audio = message.audio_message.as_option().expect("a voice note");
    assert_eq!(audio.ptt, Some(true));
    assert_eq!(download(&client, audio).await, ogg);

    let mp4 = vec![0x22_u8; 5000];
    let (_, message, _) = deliver(
        &sim,
        &mut client,
        c,
        p,
        ContactMessage::media(MediaKind::Video, "video/mp4", mp4.clone()).with_caption("clip"),
    )
    .await;
    let video = message.video_message.as_option().expect("a video");
    assert_eq!(video.caption.as_deref(), Some("clip"));
    assert_eq!(download(&client, video).await, mp4);
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_while_the_device_is_offline_arrive_when_it_reconnects() {
    let Linked {
        sim,
        dir,
        client,
        jid,
        contact,
        phone,
    } = linked("15557770014", "Heidi").await;
    client.stop().await;
    assert!(sim.wait_until(WAIT, |s| !s.is_connected(&jid)).await);

    let mut ids = Vec::new();
    for text in ["while", "you", "were", "away"] {
        ids.push(
            sim.send_from_contact(&contact, &phone, ContactMessage::text(text))
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        let status = sim.inbound_message(id).unwrap();
        assert!(!status.devices[0].sent, "nothing reaches an offline device");
        assert!(!status.acknowledged);
    }

    let mut again = TestClient::start(&sim, dir.path()).await;
    let mut texts = Vec::new();
    for (message, info) in again.wait_messages(&ids).await {
        assert!(info.is_offline, "{} is marked as offline delivery", info.id);
        texts.push(message.conversation.unwrap_or_default());
    }
    assert_eq!(texts, ["while", "you", "were", "away"]);
    let all_acknowledged = |s: &wa_sim::SimControl| {
        ids.iter()
            .all(|id| s.inbound_message(id).is_some_and(|m| m.acknowledged))
    };
    assert!(
        sim.wait_until(WAIT, all_acknowledged).await,
        "{:?}",
        ids.iter()
            .map(|id| sim.inbound_message(id))
            .collect::<Vec<_>>()
    );

    // Acknowledged messages are not delivered again at the next login.
    again.stop().await;
    assert!(sim.wait_until(WAIT, |s| !s.is_connected(&jid)).await);
    let mut third = TestClient::start(&sim, dir.path()).await;
    third.wait_connected().await;
    let late = sim
        .send_from_contact(&contact, &phone, ContactMessage::text("live again"))
        .await
        .unwrap();
    let replayed = third
        .wait_for("the live message", |e| match e {
            Event::Messages(batch) => batch
                .iter()
                .find(|m| ids.contains(&m.info.id) || m.info.id == late)
                .map(|m| m.info.id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(replayed, late, "an acknowledged message came back");
    third.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_messages_are_sender_key_encrypted_after_a_distribution_message() {
    let Linked {
        sim,
        dir: _dir,
        mut client,
        jid: _,
        contact,
        phone,
    } = linked("15557770015", "Ivan").await;
    let group = sim
        .add_group(wa_sim::GroupSpec {
            id: Some("120363000000000042".into()),
            subject: "Friends".into(),
            participants: vec![contact.clone(), format!("{phone}@s.whatsapp.net")],
        })
        .unwrap();

    let (first, message, info) = deliver(
        &sim,
        &mut client,
        &contact,
        &phone,
        ContactMessage::text("hello group").in_group(&group),
    )
    .await;
    assert_eq!(message.conversation.as_deref(), Some("hello group"));
    assert_eq!(info.source.chat.to_string(), group);
    assert_eq!(info.source.sender.to_string(), contact);
    assert!(info.source.is_group);
    assert_eq!(info.push_name, "Ivan");
    assert_eq!(
        sim.inbound_message(&first).unwrap().devices[0].enc,
        "pkmsg,skmsg"
    );

    let (second, message, _) = deliver(
        &sim,
        &mut client,
        &contact,
        &phone,
        ContactMessage::text("still here")
            .in_group(&group)
            .quoting(&first),
    )
    .await;
    let ctx = message
        .extended_text_message
        .as_option()
        .and_then(|e| e.context_info.as_option())
        .expect("context info");
    assert_eq!(ctx.stanza_id.as_deref(), Some(first.as_str()));
    assert_eq!(ctx.participant.as_deref(), Some(contact.as_str()));
    assert_eq!(
        sim.inbound_message(&second).unwrap().devices[0].enc,
        "skmsg",
        "the sender key is distributed once"
    );
    assert!(
        sim.wait_until(WAIT, |s| [&first, &second]
            .iter()
            .all(|id| s.inbound_message(id).is_some_and(|m| m.delivered)))
            .await,
        "{:?}",
        sim.inbound_message(&second)
    );

    let (status, _) = http(
        &sim,
        "POST",
        &format!("/admin/contacts/15557770015/send?to={phone}"),
        "application/json",
        r#"{"type": "text", "text": "x", "group": "999@g.us"}"#,
    )
    .await;
    assert_eq!(status, 404, "an unknown group");
    sim.add_contact("15557770016", "Judy").unwrap();
    let outsider = sim
        .send_from_contact(
            "15557770016",
            &phone,
            ContactMessage::text("x").in_group(&group),
        )
        .await;
    assert!(
        matches!(outsider, Err(wa_sim::SimError::Conflict(_))),
        "{outsider:?}"
    );
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lid_addressed_contact_writes_from_its_lid_with_its_phone_number_alongside() {
    let Linked {
        sim,
        dir: _dir,
        mut client,
        jid: _,
        contact: _,
        phone,
    } = linked("15557770018", "Unused").await;
    let pn = sim
        .add_contact_with_lid("15557770017", "Kim", Some("200000000000017"))
        .unwrap();
    let lid = "200000000000017@lid";

    let (id, message, info) = deliver(
        &sim,
        &mut client,
        &pn,
        &phone,
        ContactMessage::text("from my lid"),
    )
    .await;
    assert_eq!(message.conversation.as_deref(), Some("from my lid"));
    assert_eq!(info.source.sender.to_string(), lid);
    assert_eq!(info.source.chat.to_string(), lid);
    assert_eq!(
        info.source.sender_alt.as_ref().map(|j| j.to_string()),
        Some(pn.clone()),
        "sender_pn names the phone number"
    );
    assert!(
        sim.wait_until(WAIT, |s| s
            .inbound_message(&id)
            .is_some_and(|m| m.delivered))
            .await
    );

    // The device answers in the LID chat; the contact decrypts it.
    device_sends(&client, lid, "hello Kim").await;
    assert!(
        sim.wait_until(WAIT, |s| s
            .messages()
            .iter()
            .any(|m| m.text.as_deref() == Some("hello Kim")))
            .await,
        "{:?}",
        sim.messages()
    );

    let group = sim
        .add_group(wa_sim::GroupSpec {
            id: Some("120363000000000043".into()),
            subject: "LID group".into(),
            participants: vec![pn.clone(), format!("{phone}@s.whatsapp.net")],
        })
        .unwrap();
    let (_, message, info) = deliver(
        &sim,
        &mut client,
        &pn,
        &phone,
        ContactMessage::text("in the group").in_group(&group),
    )
    .await;
    assert_eq!(message.conversation.as_deref(), Some("in the group"));
    assert_eq!(info.source.chat.to_string(), group);
    assert_eq!(info.source.sender.to_string(), lid);
    assert_eq!(
        info.source.sender_alt.as_ref().map(|j| j.to_string()),
        Some(pn.clone()),
        "participant_pn names the phone number"
    );
    client.stop().await;
}
