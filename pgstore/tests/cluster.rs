//! The cluster's statements on a real PostgreSQL: membership, the fair
//! share's census, renewing every lease of a node at once, free phones,
//! who holds a phone, a reset's fenced purge, LISTEN/NOTIFY and resets
//! asked through the database.

mod support;

use std::time::Duration;

use lila_pgstore::cluster::{self, NodeRow};
use lila_pgstore::phone_state::{self, StateKind};
use lila_pgstore::testing::TempPostgres;
use lila_pgstore::{
    PgBackend, PhoneRows, Pool, PurgePart, claim_lease, connect_pool, migrate, phone_rows,
    purge_phone, release_lease,
};
use lila_pgstore::{notify, reset_requests};
use support::{TTL, expire_lease, fill_every_table, rows_of};

async fn migrated_database() -> Pool {
    let server = TempPostgres::shared().unwrap_or_else(|e| panic!("{e}"));
    let url = server.create_database().expect("a database");
    let pool = connect_pool(&url, 4).expect("a pool");
    migrate(&pool).await.expect("migrations");
    pool
}

/// A phone with a record, claimed by `node` for the write and released.
async fn record(pool: &Pool, phone: &str, wants_node: bool) {
    let fence = claim_lease(pool, phone, "writer", TTL)
        .await
        .unwrap()
        .unwrap();
    phone_state::save_record(pool, &fence, b"record", wants_node)
        .await
        .unwrap();
    assert!(release_lease(pool, &fence).await.unwrap());
}

/// A node known to be gone (its successor on the same data directory holds
/// its lock) is retired: its live leases are free at once, for any node,
/// and its row goes; other nodes' leases stay as they are.
#[tokio::test]
async fn a_retired_node_frees_its_leases_at_once_and_leaves_the_others_alone() {
    let pool = migrated_database().await;
    cluster::heartbeat(&pool, "gone", "http://127.0.0.1:1")
        .await
        .unwrap();
    cluster::heartbeat(&pool, "other", "http://127.0.0.1:2")
        .await
        .unwrap();
    for phone in ["5511000000101", "5511000000102"] {
        record(&pool, phone, true).await;
        claim_lease(&pool, phone, "gone", TTL)
            .await
            .unwrap()
            .unwrap();
    }
    record(&pool, "5511000000103", true).await;
    claim_lease(&pool, "5511000000103", "other", TTL)
        .await
        .unwrap()
        .unwrap();
    assert!(cluster::free_phones(&pool, 10).await.unwrap().is_empty());

    assert_eq!(cluster::retire(&pool, "gone").await.unwrap(), 2);
    let mut free = cluster::free_phones(&pool, 10).await.unwrap();
    free.sort();
    assert_eq!(free, ["5511000000101", "5511000000102"]);
    assert!(
        claim_lease(&pool, "5511000000101", "new", TTL)
            .await
            .unwrap()
            .is_some(),
        "claimable by any node at once"
    );
    assert_eq!(
        cluster::holder(&pool, "5511000000103")
            .await
            .unwrap()
            .map(|(node, _)| node)
            .as_deref(),
        Some("other")
    );
    let nodes = cluster::nodes(&pool).await.unwrap();
    assert!(nodes.iter().all(|n| n.node_id != "gone"), "{nodes:?}");
    // Retiring it again finds nothing.
    assert_eq!(cluster::retire(&pool, "gone").await.unwrap(), 0);
}

#[tokio::test]
async fn nodes_say_they_are_alive_and_leave() {
    let pool = migrated_database().await;
    cluster::heartbeat(&pool, "a", "http://127.0.0.1:1")
        .await
        .unwrap();
    cluster::heartbeat(&pool, "b", "http://127.0.0.1:2")
        .await
        .unwrap();
    // A heartbeat refreshes the row, and the address with it.
    cluster::heartbeat(&pool, "a", "http://127.0.0.1:3")
        .await
        .unwrap();
    claim_lease(&pool, "5511000000001", "a", TTL)
        .await
        .unwrap()
        .unwrap();

    let nodes = cluster::nodes(&pool).await.unwrap();
    let by_id = |id: &str| -> NodeRow { nodes.iter().find(|n| n.node_id == id).unwrap().clone() };
    assert_eq!(nodes.len(), 2);
    assert_eq!(by_id("a").url, "http://127.0.0.1:3");
    assert_eq!((by_id("a").leases, by_id("b").leases), (1, 0));
    assert!(by_id("a").seen_secs_ago < 5.0);

    record(&pool, "5511000000002", true).await;
    record(&pool, "5511000000003", false).await;
    assert_eq!(cluster::census(&pool, TTL).await.unwrap(), (2, 1));

    // A node not seen within the ttl no longer counts.
    let client = pool.get().await.unwrap();
    client
        .execute(
            "UPDATE nodes SET seen_at = now() - interval '1 hour' WHERE node_id = 'b'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(cluster::census(&pool, TTL).await.unwrap(), (1, 1));

    cluster::leave(&pool, "a").await.unwrap();
    let left: Vec<String> = cluster::nodes(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.node_id)
        .collect();
    assert_eq!(left, vec!["b".to_owned()]);
}

#[tokio::test]
async fn one_statement_renews_what_is_held_and_names_what_was_lost() {
    let pool = migrated_database().await;
    let held = claim_lease(&pool, "5511000000011", "a", TTL)
        .await
        .unwrap()
        .unwrap();
    let expired = claim_lease(&pool, "5511000000012", "a", TTL)
        .await
        .unwrap()
        .unwrap();
    let taken = claim_lease(&pool, "5511000000013", "a", TTL)
        .await
        .unwrap()
        .unwrap();
    expire_lease(&pool, "5511000000012").await;
    expire_lease(&pool, "5511000000013").await;
    claim_lease(&pool, "5511000000013", "b", TTL)
        .await
        .unwrap()
        .unwrap();

    let fences = [held.clone(), expired, taken];
    let renewed = cluster::renew_leases(&pool, "a", &fences, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(renewed, vec!["5511000000011".to_owned()]);
    // Renewed for the ttl asked: about a minute from now.
    let client = pool.get().await.unwrap();
    let left: f64 = client
        .query_one(
            "SELECT extract(epoch FROM expires_at - now())::float8 FROM leases WHERE phone = $1",
            &[&"5511000000011"],
        )
        .await
        .unwrap()
        .get(0);
    assert!((50.0..=60.0).contains(&left), "{left} s left");

    // Another node's fence under this node's name renews nothing.
    let wrong_node = cluster::renew_leases(&pool, "b", &[held], TTL)
        .await
        .unwrap();
    assert!(wrong_node.is_empty());
    assert!(
        cluster::renew_leases(&pool, "a", &[], TTL)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn free_phones_want_a_node_and_have_no_live_lease() {
    let pool = migrated_database().await;
    record(&pool, "5511000000021", true).await; // released: free
    record(&pool, "5511000000022", false).await; // cleared: wants none
    record(&pool, "5511000000023", true).await;
    claim_lease(&pool, "5511000000023", "a", TTL)
        .await
        .unwrap()
        .unwrap(); // held
    record(&pool, "5511000000024", true).await;
    claim_lease(&pool, "5511000000024", "a", TTL)
        .await
        .unwrap()
        .unwrap();
    expire_lease(&pool, "5511000000024").await; // its holder died

    let free = cluster::free_phones(&pool, 10).await.unwrap();
    assert_eq!(cluster::unheld(&pool).await.unwrap(), 2);
    assert_eq!(
        free,
        vec!["5511000000021".to_owned(), "5511000000024".to_owned()]
    );
    assert_eq!(cluster::free_phones(&pool, 1).await.unwrap().len(), 1);
    assert!(cluster::free_phones(&pool, 0).await.unwrap().is_empty());

    cluster::heartbeat(&pool, "a", "http://10.0.0.1:3000")
        .await
        .unwrap();
    assert_eq!(
        cluster::holder(&pool, "5511000000023").await.unwrap(),
        Some(("a".to_owned(), "http://10.0.0.1:3000".to_owned()))
    );
    assert_eq!(cluster::holder(&pool, "5511000000024").await.unwrap(), None);
    assert_eq!(cluster::holder(&pool, "5511000000029").await.unwrap(), None);
}

#[tokio::test]
async fn a_purge_removes_part_by_part_only_under_the_lease_and_keeps_the_record() {
    let pool = migrated_database().await;
    let phone = "5511000000031";
    let fence = claim_lease(&pool, phone, "a", TTL).await.unwrap().unwrap();
    let backend = PgBackend::new(pool.clone(), fence.clone());
    fill_every_table(&backend).await;
    phone_state::save_record(&pool, &fence, b"tombstone", true)
        .await
        .unwrap();
    for kind in [StateKind::Outbox, StateKind::Statuses] {
        phone_state::save_state(&pool, &fence, kind, Some(b"some state"))
            .await
            .unwrap();
    }
    assert!(
        phone_state::save_contacts_if_session(&pool, &fence, b"names")
            .await
            .unwrap()
    );

    let counted = phone_rows(&pool, phone).await.unwrap();
    let places: Vec<&str> = counted.iter().map(|r| r.place.as_str()).collect();
    for place in [
        "phone_state:contacts",
        "phone_state:outbox",
        "phone_state:statuses",
        "wa_device",
    ] {
        assert!(places.contains(&place), "{place} counted: {places:?}");
    }
    assert!(!places.contains(&"phone_records") && !places.contains(&"leases"));
    assert!(counted.iter().all(|r| r.rows > 0 && r.bytes > 0));

    // A node that lost the phone purges nothing.
    expire_lease(&pool, phone).await;
    let newer = claim_lease(&pool, phone, "b", TTL).await.unwrap().unwrap();
    assert!(
        purge_phone(&pool, &fence, PurgePart::Session)
            .await
            .is_err()
    );
    assert_eq!(phone_rows(&pool, phone).await.unwrap(), counted);

    // Part by part, each removing exactly what was counted for it.
    for part in [
        PurgePart::Session,
        PurgePart::State(StateKind::Outbox),
        PurgePart::State(StateKind::Statuses),
    ] {
        let expected: Vec<PhoneRows> = counted
            .iter()
            .filter(|r| r.part() == part)
            .cloned()
            .collect();
        assert!(!expected.is_empty());
        let removed = purge_phone(&pool, &newer, part).await.unwrap();
        assert_eq!(removed, expected, "{part:?}");
        let left = phone_rows(&pool, phone).await.unwrap();
        assert!(
            left.iter().all(|r| r.part() != part),
            "{part:?} left {left:?}"
        );
    }
    assert!(phone_rows(&pool, phone).await.unwrap().is_empty());
    let left: Vec<(String, i64)> = rows_of(&pool, phone)
        .await
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(
        left,
        vec![("leases".to_owned(), 1), ("phone_records".to_owned(), 1)],
        "the record and the lease stay, for the reset's last writes"
    );
}

#[tokio::test]
async fn a_notification_reaches_every_listener_in_order() {
    let server = TempPostgres::shared().unwrap_or_else(|e| panic!("{e}"));
    let url = server.create_database().expect("a database");
    let pool = connect_pool(&url, 2).expect("a pool");
    let mut first = notify::listen(&url, "test_channel").await.unwrap();
    let mut second = notify::listen(&url, "test_channel").await.unwrap();
    let mut elsewhere = notify::listen(&url, "other_channel").await.unwrap();
    for text in ["one", "two", "three"] {
        notify::notify(&pool, "test_channel", text).await.unwrap();
    }
    for listener in [&mut first, &mut second] {
        let mut heard = Vec::new();
        for _ in 0..3 {
            let next = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await;
            heard.push(next.expect("in time").expect("a payload"));
        }
        assert_eq!(heard, ["one", "two", "three"]);
    }
    let quiet = tokio::time::timeout(Duration::from_millis(300), elsewhere.recv()).await;
    assert!(quiet.is_err(), "another channel hears nothing");
    let too_big = "x".repeat(notify::MAX_PAYLOAD + 1);
    assert!(
        notify::notify(&pool, "test_channel", &too_big)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_reset_request_is_answered_once() {
    let pool = migrated_database().await;
    let id = reset_requests::request(&pool, "5511000000041", "tenant:acme")
        .await
        .unwrap();
    assert_eq!(
        reset_requests::pending(&pool, id).await.unwrap(),
        Some(("5511000000041".to_owned(), "tenant:acme".to_owned()))
    );
    assert_eq!(reset_requests::take_answer(&pool, id).await.unwrap(), None);
    reset_requests::answer(&pool, id, 200, r#"{"success":true}"#)
        .await
        .unwrap();
    assert_eq!(
        reset_requests::pending(&pool, id).await.unwrap(),
        None,
        "answered"
    );
    assert_eq!(
        reset_requests::take_answer(&pool, id).await.unwrap(),
        Some((200, r#"{"success":true}"#.to_owned()))
    );
    assert_eq!(
        reset_requests::take_answer(&pool, id).await.unwrap(),
        None,
        "once"
    );
    // A reset's purge of that phone leaves requests alone (no `phone` column).
    let tables = lila_pgstore::tables_with_phone_column(&**pool.get().await.unwrap())
        .await
        .unwrap();
    assert!(!tables.contains(&"reset_requests".to_owned()));
    assert!(!tables.contains(&"plugin_state".to_owned()));
}
