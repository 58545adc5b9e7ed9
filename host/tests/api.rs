//! The Portal's HTTP API: auth, tenant isolation, input validation and every
//! route of SPEC section 3, against the scripted WhatsApp fake.

mod support;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use base64::Engine;
use lila::phone::Phone;
use lila::whatsapp::GroupInfo;
use serde_json::json;
use support::{Harness, files_under, snapshot};

const PHONE: &str = "51987654321";

#[tokio::test]
async fn bad_tokens_get_401_with_a_json_error() {
    let h = Harness::new().await;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let none_alg = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&format!(r#"{{"companyId":"acme","exp":{}}}"#, exp + 600))
    );
    let other_secret = lila::auth::JwtAuth::new(b"some-other-secret-some-other-secret").unwrap();
    let wrong_secret = other_secret
        .mint(
            Some(&lila::core::tenant::TenantId::parse("acme").unwrap()),
            false,
            Duration::from_secs(600),
        )
        .unwrap();
    let expired = {
        use jsonwebtoken::{EncodingKey, Header, encode};
        encode(
            &Header::default(),
            &json!({"companyId": "acme", "exp": exp - 3600}),
            &EncodingKey::from_secret(support::SECRET).unwrap(),
        )
        .unwrap()
    };
    let no_exp = {
        use jsonwebtoken::{EncodingKey, Header, encode};
        encode(
            &Header::default(),
            &json!({"companyId": "acme"}),
            &EncodingKey::from_secret(support::SECRET).unwrap(),
        )
        .unwrap()
    };
    for (what, token) in [
        ("missing", None),
        ("malformed", Some("definitely-not-a-jwt".to_owned())),
        ("alg none", Some(none_alg)),
        ("wrong secret", Some(wrong_secret)),
        ("expired", Some(expired)),
        ("no exp", Some(no_exp)),
    ] {
        for (method, path) in [
            (Method::GET, "/api/sessions".to_owned()),
            (Method::POST, format!("/api/sessions/{PHONE}/clear")),
        ] {
            let (status, body) = h.call(method, &path, token.as_deref(), None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what} {path}: {body}");
            assert_eq!(body["success"], false);
            assert!(body["error"].is_string());
        }
    }
}

#[tokio::test]
async fn another_tenant_gets_404_exactly_as_for_a_missing_session() {
    let h = Harness::new().await;
    let a = h.token("tenant-a");
    let b = h.token("tenant-b");
    h.paired(PHONE, &a).await;
    h.post(
        &format!("/api/sessions/{PHONE}/messages"),
        &a,
        json!({"to": "51900000001", "text": "hi"}),
    )
    .await;
    // Sent, and its files settled, before the snapshot: what changes after
    // it must be B's doing.
    let outbox = h.layout().outbox_file(&Phone::parse(PHONE).unwrap());
    h.wait_for("the message to be sent", || {
        h.wa.sent().len() == 1 && !outbox.exists()
    })
    .await;
    let status_file = h
        .layout()
        .root()
        .join(format!("whatsapp/status/{PHONE}.json"));
    h.wait_for("its status to be recorded", || {
        std::fs::read_to_string(&status_file).is_ok_and(|s| s.contains("\"sent\""))
    })
    .await;
    let files_before = snapshot(h.root());
    let missing = h.status("51900000009", &b).await;
    assert_eq!(missing.0, StatusCode::NOT_FOUND);
    for (method, suffix) in [
        (Method::GET, "/status"),
        (Method::GET, "/qr"),
        (Method::GET, "/groups"),
        (Method::GET, "/contacts"),
        (Method::GET, "/outbox"),
        (Method::POST, "/pairing-code"),
        (Method::POST, "/request-pairing-code"),
        (Method::POST, "/clear"),
        (Method::DELETE, ""),
    ] {
        let (status, body) = h
            .call(
                method,
                &format!("/api/sessions/{PHONE}{suffix}"),
                Some(&b),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{suffix}: {body}");
        assert_eq!(
            body["error"], missing.1["error"],
            "the same answer as for a missing session"
        );
    }
    let (status, _) = h
        .post(
            &format!("/api/sessions/{PHONE}/messages"),
            &b,
            json!({"to": "51900000001", "text": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = h.get("/api/sessions", &b).await;
    assert_eq!(list["sessions"], json!([]));
    // Tenant B cannot take the phone over either, and is not told that
    // another tenant has it: the same sentence as for files that nobody
    // owns (below), and no word of a tenant.
    let (status, taken) = h.create(PHONE, &b).await;
    assert_eq!(status, StatusCode::CONFLICT, "{taken}");
    let sentence = taken["error"].as_str().unwrap_or_default().to_owned();
    assert!(!sentence.contains("tenant"), "{sentence}");
    let ownerless = "51900000042";
    let store = h.layout().store_file(&Phone::parse(ownerless).unwrap());
    std::fs::create_dir_all(store.parent().unwrap()).unwrap();
    std::fs::write(&store, b"left by another program").unwrap();
    let (status, body) = h.create(ownerless, &b).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], sentence.as_str());
    std::fs::remove_dir_all(store.parent().unwrap()).unwrap();
    // Nothing B did touched A's files (backups may have ticked: compare without them).
    let strip = |v: Vec<(std::path::PathBuf, Vec<u8>)>| -> Vec<_> {
        v.into_iter()
            .filter(|(p, _)| {
                !p.starts_with("sessions/backups")
                    && !p.ends_with("whatsapp.db")
                    && !p.to_string_lossy().contains("whatsapp.db-")
            })
            .collect()
    };
    assert_eq!(strip(files_before), strip(snapshot(h.root())));
    assert_eq!(h.status(PHONE, &a).await.1["status"], "connected");
    // The operator sees it, with its owner.
    let (_, list) = h.get("/api/sessions", &h.operator()).await;
    assert_eq!(list["sessions"][0]["companyId"], "tenant-a");
}

#[tokio::test]
async fn hostile_phone_values_get_400_and_touch_nothing() {
    let h = Harness::new().await;
    let token = h.token("acme");
    // A victim file just outside the data root's session folder, and one outside the root.
    let outside = h
        .root()
        .parent()
        .unwrap()
        .join(format!("victim-{}", std::process::id()));
    std::fs::write(&outside, b"keep").unwrap();
    std::fs::create_dir_all(h.root().join("sessions")).unwrap();
    std::fs::write(h.root().join("sessions/keep.txt"), b"keep").unwrap();
    let before = files_under(h.root());
    let hostile = [
        "..",
        "%2e%2e",
        "%2e%2e%2f",
        "..%2f..%2fetc",
        "%2e%2e%2f%2e%2e%2fvictim",
        "+51987654321",
        "%2B51987654321",
        "51%20987654321",
        "51987654321%20",
        "123",
        "1234567",
        &"1".repeat(40),
        "%D9%A5%D9%A1%D9%A9%D9%A8%D9%A7%D9%A6%D9%A5%D9%A4",
        "%EF%BC%95%EF%BC%91%EF%BC%99%EF%BC%98%EF%BC%97%EF%BC%96%EF%BC%95%EF%BC%94",
        "5198765432%00",
        "%00",
        "abc",
        "51987654321.json",
    ];
    for phone in hostile {
        for (method, suffix) in [
            (Method::POST, "/clear"),
            (Method::GET, "/status"),
            (Method::DELETE, ""),
            (Method::GET, "/qr"),
        ] {
            let (status, body) = h
                .call(
                    method.clone(),
                    &format!("/api/sessions/{phone}{suffix}"),
                    Some(&token),
                    None,
                )
                .await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{method} {phone}{suffix}: {body}"
            );
            assert_eq!(body["success"], false);
        }
        let (status, _) = h.create(&urlencoding_decode(phone), &token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "create {phone}");
    }
    assert_eq!(files_under(h.root()), before);
    assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
    std::fs::remove_file(outside).unwrap();
}

/// The body of a create carries the phone decoded; decode the path form for it.
fn urlencoding_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        if bytes[i] == b'%'
            && let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn qr_and_both_pairing_code_paths_work_until_paired() {
    let h = Harness::new().await;
    let token = h.token("acme");
    let (status, body) = h.get(&format!("/api/sessions/{PHONE}/qr"), &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    h.create(PHONE, &token).await;
    h.wait_status(PHONE, &token, "qr").await;
    let (status, qr) = h.get(&format!("/api/sessions/{PHONE}/qr"), &token).await;
    assert_eq!(status, StatusCode::OK);
    assert!(qr["qr"].as_str().unwrap().starts_with("2@scripted"));
    let png = base64::engine::general_purpose::STANDARD
        .decode(
            qr["qrImage"]
                .as_str()
                .unwrap()
                .strip_prefix("data:image/png;base64,")
                .unwrap(),
        )
        .unwrap();
    assert_eq!(&png[1..4], b"PNG");
    for path in ["pairing-code", "request-pairing-code"] {
        let (status, body) = h
            .post(&format!("/api/sessions/{PHONE}/{path}"), &token, json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["code"].as_str().unwrap().len(), 8);
    }
    h.client(PHONE).await.scan();
    let status = h.wait_status(PHONE, &token, "connected").await;
    assert_eq!(status["ready"], true);
    assert_eq!(status["me"], format!("{PHONE}:7@s.whatsapp.net"));
    let (status, body) = h.get(&format!("/api/sessions/{PHONE}/qr"), &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("already paired"));
    let (status, _) = h
        .post(
            &format!("/api/sessions/{PHONE}/pairing-code"),
            &token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn groups_and_contacts_come_from_the_client() {
    let h = Harness::new().await;
    let token = h.token("acme");
    h.create(PHONE, &token).await;
    h.wait_status(PHONE, &token, "qr").await;
    let (status, body) = h
        .get(&format!("/api/sessions/{PHONE}/groups"), &token)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "not connected yet: {body}");
    h.wa.set_groups(vec![GroupInfo {
        id: "120363000000000001@g.us".into(),
        subject: "Ventas".into(),
        participants: 3,
    }]);
    h.client(PHONE).await.scan();
    h.wait_status(PHONE, &token, "connected").await;
    let (status, body) = h
        .get(&format!("/api/sessions/{PHONE}/groups"), &token)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["groups"],
        json!([{"id": "120363000000000001@g.us", "subject": "Ventas", "participants": 3}])
    );
    let client = h.client(PHONE).await;
    client.contact("51900000001@s.whatsapp.net", "Ana");
    client.contact("51900000002@s.whatsapp.net", "Luis");
    let mut contacts = serde_json::Value::Null;
    for _ in 0..200 {
        contacts = h
            .get(&format!("/api/sessions/{PHONE}/contacts"), &token)
            .await
            .1;
        if contacts["contacts"]
            .as_array()
            .is_some_and(|c| c.len() == 2)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        contacts["contacts"][0],
        json!({"id": "51900000001@s.whatsapp.net", "name": "Ana"})
    );
    // They are kept in the session's own directory, so they survive a restart.
    let file = h.layout().contacts_file(&Phone::parse(PHONE).unwrap());
    h.wait_for("contacts on disk", || file.exists()).await;
    let h = h.restart().await;
    let (_, contacts) = h
        .get(&format!("/api/sessions/{PHONE}/contacts"), &token)
        .await;
    assert_eq!(contacts["contacts"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn messages_are_queued_durably_and_sent_in_order_once_connected() {
    let h = Harness::new().await;
    let token = h.token("acme");
    h.create(PHONE, &token).await;
    h.wait_status(PHONE, &token, "qr").await;
    let mut ids = Vec::new();
    for text in ["uno", "dos", "tres"] {
        let (status, body) = h
            .post(
                &format!("/api/sessions/{PHONE}/messages"),
                &token,
                json!({"to": "51900000001", "text": text}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    // On disk before anything is sent.
    let file = h.layout().outbox_file(&Phone::parse(PHONE).unwrap());
    let on_disk = std::fs::read_to_string(&file).unwrap();
    for id in &ids {
        assert!(on_disk.contains(id.as_str()));
    }
    let (_, pending) = h
        .get(&format!("/api/sessions/{PHONE}/outbox"), &token)
        .await;
    assert_eq!(pending["count"], 3);
    h.client(PHONE).await.scan();
    h.wait_for("three sends", || h.wa.sent().len() == 3).await;
    let sent: Vec<_> =
        h.wa.sent()
            .into_iter()
            .map(|m| (m.id, m.text, m.to))
            .collect();
    assert_eq!(
        sent,
        vec![
            (
                ids[0].clone(),
                "uno".into(),
                "51900000001@s.whatsapp.net".into()
            ),
            (
                ids[1].clone(),
                "dos".into(),
                "51900000001@s.whatsapp.net".into()
            ),
            (
                ids[2].clone(),
                "tres".into(),
                "51900000001@s.whatsapp.net".into()
            ),
        ]
    );
    h.wait_for("the outbox file to go", || !file.exists()).await;
    assert_eq!(
        h.get(&format!("/api/sessions/{PHONE}/outbox"), &token)
            .await
            .1["count"],
        0
    );
}

#[tokio::test]
async fn a_failing_send_is_retried_and_nothing_overtakes_it() {
    let h = Harness::new().await;
    let token = h.token("acme");
    h.paired(PHONE, &token).await;
    h.wa.behaviour
        .fail_sends
        .store(true, std::sync::atomic::Ordering::SeqCst);
    for text in ["first", "second"] {
        h.post(
            &format!("/api/sessions/{PHONE}/messages"),
            &token,
            json!({"to": "51900000001", "text": text}),
        )
        .await;
    }
    h.wait_for("a failed attempt", || {
        std::fs::read_to_string(h.layout().outbox_file(&Phone::parse(PHONE).unwrap()))
            .is_ok_and(|s| s.contains("\"attempts\":1"))
    })
    .await;
    assert!(h.wa.sent().is_empty());
    h.wa.behaviour
        .fail_sends
        .store(false, std::sync::atomic::Ordering::SeqCst);
    h.wait_for("both sends", || h.wa.sent().len() == 2).await;
    let texts: Vec<_> = h.wa.sent().into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["first", "second"]);
}

/// Polls `GET …/messages/{id}` until its status is `wanted`; returns the body.
async fn wait_message_status(
    h: &Harness,
    token: &str,
    id: &str,
    wanted: &str,
) -> serde_json::Value {
    let path = format!("/api/sessions/{PHONE}/messages/{id}");
    let mut last = serde_json::Value::Null;
    for _ in 0..500 {
        last = h.get(&path, token).await.1;
        if last["status"] == wanted {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("message {id} never became {wanted}; last: {last}");
}

#[tokio::test]
async fn a_recipient_without_whatsapp_fails_for_good_and_does_not_hold_the_queue() {
    let h = Harness::new().await;
    let token = h.token("acme");
    h.create(PHONE, &token).await;
    h.wait_status(PHONE, &token, "qr").await;
    h.wa.set_not_on_whatsapp("51900000099@s.whatsapp.net");
    let mut ids = Vec::new();
    for (to, text) in [
        ("51900000099", "lost"),
        ("51900000001", "one"),
        ("51900000099", "lost again"),
        ("51900000001", "two"),
    ] {
        let (status, body) = h
            .post(
                &format!("/api/sessions/{PHONE}/messages"),
                &token,
                json!({"to": to, "text": text}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let queued = wait_message_status(&h, &token, &ids[0], "queued").await;
    assert_eq!(queued["success"], true);
    assert!(queued.get("error").is_none(), "{queued}");
    h.client(PHONE).await.scan();
    h.wait_for("both sends to the contact", || h.wa.sent().len() == 2)
        .await;
    let texts: Vec<_> = h.wa.sent().into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["one", "two"]);
    for lost in [&ids[0], &ids[2]] {
        let failed = wait_message_status(&h, &token, lost, "failed").await;
        assert_eq!(
            failed["error"], "51900000099@s.whatsapp.net is not on WhatsApp",
            "{failed}"
        );
    }
    wait_message_status(&h, &token, &ids[1], "sent").await;
    // Each recipient was asked about once; the second message used the cached answer.
    let mut checks = h.wa.recipient_checks();
    checks.sort();
    assert_eq!(
        checks,
        ["51900000001@s.whatsapp.net", "51900000099@s.whatsapp.net"]
    );
    h.wait_for("the outbox to empty", || {
        !h.layout()
            .outbox_file(&Phone::parse(PHONE).unwrap())
            .exists()
    })
    .await;
}

#[tokio::test]
async fn receipts_move_a_status_forward_and_statuses_follow_the_api_conventions() {
    let h = Harness::new().await;
    let token = h.token("acme");
    h.paired(PHONE, &token).await;
    let (_, body) = h.send_text(PHONE, &token, "51900000001", "hola").await;
    let id = body["id"].as_str().unwrap().to_owned();
    wait_message_status(&h, &token, &id, "sent").await;
    let client = h.client(PHONE).await;
    client.receipt(&[&id], lila::core::message_status::ReceiptKind::Delivered);
    let delivered = wait_message_status(&h, &token, &id, "delivered").await;
    assert!(delivered["deliveredAtMs"].is_u64(), "{delivered}");
    assert!(delivered["readAtMs"].is_null(), "{delivered}");
    client.receipt(&[&id], lila::core::message_status::ReceiptKind::Read);
    let read = wait_message_status(&h, &token, &id, "read").await;
    assert_eq!(read["to"], "51900000001@s.whatsapp.net");
    // A late delivery receipt does not move it back.
    client.receipt(&[&id], lila::core::message_status::ReceiptKind::Delivered);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let path = format!("/api/sessions/{PHONE}/messages/{id}");
    assert_eq!(h.get(&path, &token).await.1["status"], "read");

    let (status, body) = h
        .get(
            &format!("/api/sessions/{PHONE}/messages/3EB000000000000000000000"),
            &token,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["success"], false);
    assert!(body["error"].is_string());
    for bad in ["nope", "3eb0abcdef", "3EB0%2F..%2F..%2Fetc"] {
        let (status, body) = h
            .get(&format!("/api/sessions/{PHONE}/messages/{bad}"), &token)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["success"], false);
    }
    // Another tenant gets the same 404 as for a missing session.
    let other = h.token("tenant-b");
    let (status, body) = h.get(&path, &other).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"], "no session for this phone number");

    // A reset removes the statuses with the phone's other files.
    let file = h
        .layout()
        .message_status_file(&Phone::parse(PHONE).unwrap());
    assert!(file.exists());
    let (status, body) = h
        .call(
            Method::POST,
            &format!("/api/sessions/{PHONE}/clear"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!file.exists(), "the statuses survived the reset");
}

#[tokio::test]
async fn a_transient_send_error_is_retried_and_ends_sent_not_failed() {
    let h = Harness::new().await;
    let token = h.token("acme");
    h.paired(PHONE, &token).await;
    h.wa.behaviour
        .fail_sends
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (_, body) = h.send_text(PHONE, &token, "51900000001", "x").await;
    let id = body["id"].as_str().unwrap().to_owned();
    h.wait_for("a failed attempt", || {
        std::fs::read_to_string(h.layout().outbox_file(&Phone::parse(PHONE).unwrap()))
            .is_ok_and(|s| s.contains("\"attempts\":1"))
    })
    .await;
    let path = format!("/api/sessions/{PHONE}/messages/{id}");
    assert_eq!(h.get(&path, &token).await.1["status"], "queued");
    h.wa.behaviour
        .fail_sends
        .store(false, std::sync::atomic::Ordering::SeqCst);
    wait_message_status(&h, &token, &id, "sent").await;
}

#[tokio::test]
async fn bad_message_bodies_get_400_with_a_sentence() {
    let h = Harness::new().await;
    let token = h.token("acme");
    h.create(PHONE, &token).await;
    let path = format!("/api/sessions/{PHONE}/messages");
    for body in [
        json!({}),
        json!({"to": "51900000001"}),
        json!({"text": "x"}),
        json!({"to": "+51 900", "text": "x"}),
        json!({"to": "51900000001", "text": "   "}),
        json!({"to": ["x"], "text": "x"}),
    ] {
        let (status, reply) = h.post(&path, &token, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {reply}");
        assert!(reply["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let (status, reply) = h.call(Method::POST, &path, Some(&token), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    let (status, reply) = h
        .call(
            Method::POST,
            "/api/sessions",
            Some(&token),
            Some(json!({"phone": PHONE})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(reply["error"], "phoneNumber is required");
}

#[tokio::test]
async fn disconnect_logs_out_keeps_the_queue_and_never_reconnects() {
    let h = Harness::new().await;
    let token = h.token("acme");
    h.paired(PHONE, &token).await;
    let phone = Phone::parse(PHONE).unwrap();
    let client = h.client(PHONE).await;
    h.wa.behaviour
        .fail_sends
        .store(true, std::sync::atomic::Ordering::SeqCst);
    h.send_text(PHONE, &token, "51900000001", "later").await;
    let (status, body) = h
        .call(
            Method::DELETE,
            &format!("/api/sessions/{PHONE}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["loggedOut"], true);
    assert_eq!(body["pendingMessagesKept"], 1);
    assert!(client.logged_out());
    assert!(
        !h.layout().session_dir(&phone).exists(),
        "dead credentials are removed"
    );
    assert!(h.layout().outbox_file(&phone).exists(), "the queue is kept");
    let starts = h.wa.starts(&phone);
    client.emit_late(lila::core::status::SessionEvent::Disconnected);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(h.wa.starts(&phone), starts);
    assert_eq!(h.status(PHONE, &token).await.1["status"], "stopped");
    let h = h.restart().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        h.wa.starts(&phone),
        0,
        "a disconnected session is not resumed at boot"
    );
    // Creating it again starts a fresh pairing with the kept queue.
    h.create(PHONE, &token).await;
    let status = h.wait_status(PHONE, &token, "qr").await;
    assert_eq!(status["pendingMessages"], 1);
}

#[tokio::test]
async fn health_metrics_and_unknown_routes() {
    let h = Harness::new().await;
    let (status, body) = h.call(Method::GET, "/health", None, None).await;
    assert_eq!(
        (status, body["success"].clone()),
        (StatusCode::OK, json!(true))
    );
    let token = h.token("acme");
    h.paired(PHONE, &token).await;
    let (status, body) = h.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap();
    assert!(text.contains("lila_client_starts_total 1"), "{text}");
    assert!(text.contains("lila_sessions_connected 1"), "{text}");
    let (status, body) = h.call(Method::GET, "/api/nope", Some(&token), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["success"], false);
    let (status, body) = h
        .call(Method::PUT, "/api/sessions", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["success"], false);
}

#[tokio::test]
async fn with_a_metrics_token_only_it_or_an_operator_reads_the_metrics() {
    const TOKEN: &str = "metrics-token-metrics-token";
    let h = Harness::with_config(|c| c.metrics_token = Some(TOKEN.into())).await;
    let (status, body) = h.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("LILA_METRICS_TOKEN")
    );
    let tenant = h.token("acme");
    let (status, _) = h.call(Method::GET, "/metrics", Some(&tenant), None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a tenant's token is not enough"
    );
    let (status, _) = h
        .call(Method::GET, "/metrics", Some("not-the-token"), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for token in [TOKEN.to_owned(), h.operator()] {
        let (status, body) = h.call(Method::GET, "/metrics", Some(&token), None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.as_str()
                .unwrap_or_default()
                .contains("lila_uptime_seconds")
        );
    }
}

#[tokio::test]
async fn the_session_list_shows_the_callers_sessions_with_status() {
    let h = Harness::new().await;
    let a = h.token("acme");
    h.paired(PHONE, &a).await;
    h.create("51911111111", &a).await;
    h.create("51922222222", &h.token("globex")).await;
    let (status, body) = h.get("/api/sessions", &a).await;
    assert_eq!(status, StatusCode::OK);
    let mut phones: Vec<_> = body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["phoneNumber"].as_str().unwrap().to_owned())
        .collect();
    phones.sort();
    assert_eq!(phones, ["51911111111", PHONE]);
    assert!(
        body["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s.get("status").is_some() && s.get("companyId").is_none())
    );
}

#[tokio::test]
async fn a_node_out_of_descriptors_refuses_a_new_session_with_503_and_records_nothing() {
    let h = Harness::new().await;
    let acme = h.token("acme");
    let phone = "51987650001";
    // A limit this process is already past: starting one more session would fail.
    h.gateway
        .metrics()
        .open_files_limit
        .store(1, std::sync::atomic::Ordering::Relaxed);
    let (status, body) = h.create(phone, &acme).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["success"], false);
    let sentence = body["error"].as_str().unwrap();
    assert!(
        sentence.contains("out of file descriptors") && sentence.contains("ulimit -n"),
        "{sentence}"
    );
    // Nothing was recorded or started: the listing is empty and no file exists.
    let (_, list) = h.get("/api/sessions", &acme).await;
    assert_eq!(list["sessions"], json!([]), "{list}");
    assert!(files_under(&h.dir.path().join("lila")).is_empty());
    let (_, metrics) = h.call(Method::GET, "/metrics", None, None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("lila_sessions_refused_open_files_total 1")
    );
    // With room (no limit), the same request starts the session.
    h.gateway
        .metrics()
        .open_files_limit
        .store(0, std::sync::atomic::Ordering::Relaxed);
    let (status, body) = h.create(phone, &acme).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_single_node_shows_no_cluster_and_only_to_an_operator() {
    let h = Harness::new().await;
    let (code, body) = h.get("/api/cluster", &h.operator()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["clustered"], false);
    assert_eq!(body["nodeId"], serde_json::Value::Null);
    assert_eq!(body["nodes"], serde_json::json!([]));
    let (code, body) = h.get("/api/cluster", &h.token("acme")).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("operator"),
        "{body}"
    );
}
