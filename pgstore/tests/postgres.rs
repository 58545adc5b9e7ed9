//! What only the PostgreSQL store has: fencing by lease, versioned migrations,
//! `delete_phone`, phones side by side in one database, and `TempPostgres`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use lila_pgstore::phone_state::{self, StateKind};
use lila_pgstore::testing::TempPostgres;
use lila_pgstore::{
    Fence, MIGRATIONS, Migration, PgBackend, PgStoreError, Pool, TABLES_KEPT_BY_DELETE_PHONE,
    check_fence, claim_lease, connect_pool, delete_phone, latest_version, migrate, migrate_with,
    renew_lease,
};
use support::{
    NODE, TTL, expire_lease, fill_every_table, pg_phone, pg_pool, rows_of, unique_phone,
};
use wacore::store::traits::{DeviceStore, ProtocolStore, SignalStore};

/// A fresh, empty database on the shared server, and a pool on it.
async fn fresh_database() -> Pool {
    let server = TempPostgres::shared().unwrap_or_else(|e| panic!("{e}"));
    let url = server.create_database().expect("a database");
    connect_pool(&url, 4).expect("a pool")
}

fn assert_lease_lost(result: Result<(), wacore::store::error::StoreError>, what: &str) {
    let error = result.expect_err(what);
    assert!(
        PgStoreError::is_lease_lost(&error),
        "{what}: expected a lost lease, got {error:?}"
    );
}

// --- fencing ---

#[tokio::test]
async fn a_write_with_a_stale_epoch_fails_and_changes_nothing() {
    let a = pg_phone("stale-epoch").await;
    a.backend.put_session("5511.0", b"from-a").await.unwrap();
    a.backend
        .put_identity("5511@s.whatsapp.net", [1; 32])
        .await
        .unwrap();

    // Another node cannot take a live lease; once it has expired, it can.
    assert!(
        claim_lease(&a.pool, &a.fence.phone, "node-b", TTL)
            .await
            .unwrap()
            .is_none()
    );
    expire_lease(&a.pool, &a.fence.phone).await;
    let b_fence = claim_lease(&a.pool, &a.fence.phone, "node-b", TTL)
        .await
        .unwrap()
        .expect("an expired lease is free");
    assert!(
        b_fence.epoch > a.fence.epoch,
        "a takeover moves the epoch forward"
    );
    let b = PgBackend::new(a.pool.clone(), b_fence);

    // Every kind of write of the old holder fails, and writes nothing.
    let old = &a.backend;
    assert_lease_lost(old.put_session("5511.0", b"from-a-late").await, "upsert");
    assert_lease_lost(old.delete_identity("5511@s.whatsapp.net").await, "delete");
    assert_lease_lost(
        old.put_sessions_batch(&[(Arc::from("other.0"), bytes::Bytes::from_static(b"x"))])
            .await,
        "batch",
    );
    assert_lease_lost(old.save(&wacore::store::Device::new()).await, "device save");
    assert!(
        old.take_sent_message("c", "m").await.is_err(),
        "take is a write"
    );

    assert_eq!(
        b.get_session("5511.0").await.unwrap().as_deref(),
        Some(&b"from-a"[..]),
        "the last write of the old holder stays, the late one never landed"
    );
    assert_eq!(
        b.load_identity("5511@s.whatsapp.net").await.unwrap(),
        Some([1; 32])
    );
    assert!(b.get_session("other.0").await.unwrap().is_none());
    assert!(!b.exists().await.unwrap());

    // Reads need no lease.
    assert!(old.get_session("5511.0").await.unwrap().is_some());

    // The new holder writes.
    b.put_session("5511.0", b"from-b").await.unwrap();
    assert_eq!(
        b.get_session("5511.0").await.unwrap().as_deref(),
        Some(&b"from-b"[..])
    );
}

#[tokio::test]
async fn a_restarted_node_fences_its_own_previous_incarnation() {
    let a = pg_phone("same-node").await;
    let again = claim_lease(&a.pool, &a.fence.phone, NODE, TTL)
        .await
        .unwrap()
        .expect("the holder may claim again");
    assert!(again.epoch > a.fence.epoch);
    assert_lease_lost(
        a.backend.put_session("s", b"old").await,
        "the old incarnation",
    );
    PgBackend::new(a.pool.clone(), again)
        .put_session("s", b"new")
        .await
        .unwrap();
}

#[tokio::test]
async fn an_expired_lease_neither_writes_nor_renews() {
    let a = pg_phone("expired").await;
    renew_lease(&a.pool, &a.fence, TTL).await.unwrap();
    expire_lease(&a.pool, &a.fence.phone).await;
    assert_lease_lost(a.backend.put_session("s", b"late").await, "write");
    let renewed = renew_lease(&a.pool, &a.fence, TTL).await;
    assert!(
        matches!(renewed, Err(PgStoreError::LeaseLost { .. })),
        "{renewed:?}"
    );
    assert!(a.backend.get_session("s").await.unwrap().is_none());
}

#[tokio::test]
async fn a_phone_without_a_lease_row_takes_no_write() {
    let pool = pg_pool().await;
    let fence = Fence {
        phone: unique_phone("never-claimed"),
        node_id: NODE.into(),
        epoch: 1,
    };
    let backend = PgBackend::new(pool, fence);
    assert_lease_lost(backend.put_session("s", b"x").await, "no lease");
    let error = backend.create().await.expect_err("create is a write");
    assert!(PgStoreError::is_lease_lost(&error));
    assert!(!backend.exists().await.unwrap());
}

/// The fence check holds the lease row share-locked to the end of the
/// writing transaction: a takeover waits for the write in flight, so no write
/// of the old holder commits after the takeover does.
#[tokio::test]
async fn a_takeover_waits_for_the_write_in_flight() {
    let a = pg_phone("in-flight").await;
    let mut writer = a.pool.get().await.unwrap();
    let tx = writer.transaction().await.unwrap();
    check_fence(&tx, &a.fence).await.unwrap();
    tx.execute(
        "INSERT INTO wa_sessions (phone, address, record) VALUES ($1, 's', 'x')",
        &[&a.fence.phone],
    )
    .await
    .unwrap();

    let pool = a.pool.clone();
    let phone = a.fence.phone.clone();
    let takeover = tokio::spawn(async move {
        let client = pool.get().await.unwrap();
        client
            .execute(
                "UPDATE leases SET node_id = 'node-b', epoch = nextval('lease_epochs') WHERE phone = $1",
                &[&phone],
            )
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !takeover.is_finished(),
        "the takeover must wait for the write"
    );
    tx.commit().await.unwrap();
    assert_eq!(takeover.await.unwrap(), 1);
    assert_lease_lost(a.backend.put_session("s", b"y").await, "after the takeover");
}

/// A node paused in the middle of a write (SIGSTOP) holds the lease row
/// locked; the server ends its transaction after
/// `IDLE_IN_TRANSACTION_TIMEOUT`, so the takeover waits that long at most and
/// the paused write never commits.
#[tokio::test]
async fn a_write_paused_in_flight_holds_a_takeover_back_only_briefly() {
    let a = pg_phone("paused").await;
    let mut writer = a.pool.get().await.unwrap();
    let tx = writer.transaction().await.unwrap();
    check_fence(&tx, &a.fence).await.unwrap();
    tx.execute(
        "INSERT INTO wa_sessions (phone, address, record) VALUES ($1, 'paused', 'x')",
        &[&a.fence.phone],
    )
    .await
    .unwrap();

    // The "pause": the transaction stays open and idle. A claim (here the
    // node's own restarted incarnation, which may claim a live lease) waits.
    let started = std::time::Instant::now();
    let claimed = claim_lease(&a.pool, &a.fence.phone, NODE, TTL)
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(claimed.is_some(), "the takeover goes through");
    assert!(
        waited >= lila_pgstore::IDLE_IN_TRANSACTION_TIMEOUT - Duration::from_millis(500)
            && waited < lila_pgstore::IDLE_IN_TRANSACTION_TIMEOUT * 3,
        "the takeover waited {waited:?}"
    );
    assert!(
        tx.commit().await.is_err(),
        "the paused write is ended, not committed"
    );
    let b = PgBackend::new(a.pool.clone(), claimed.unwrap());
    assert!(b.get_session("paused").await.unwrap().is_none());
}

#[tokio::test]
async fn only_a_lost_lease_reads_as_one() {
    let error: wacore::store::error::StoreError =
        PgStoreError::OutOfRange("a version".into()).into();
    assert!(!PgStoreError::is_lease_lost(&error));
    let error: wacore::store::error::StoreError = PgStoreError::LeaseLost {
        phone: "p".into(),
        node_id: "n".into(),
        epoch: 1,
    }
    .into();
    assert!(PgStoreError::is_lease_lost(&error));
    assert!(
        !error.is_database_busy_or_locked(),
        "whatsapp-rust must not retry a lost lease as a busy database"
    );
}

// --- phones side by side ---

#[tokio::test]
async fn phones_in_one_database_do_not_see_each_other() {
    let a = pg_phone("side-a").await;
    let b = pg_phone("side-b").await;
    a.backend.put_session("5511.0", b"a").await.unwrap();
    a.backend.create().await.unwrap();
    assert!(b.backend.get_session("5511.0").await.unwrap().is_none());
    assert!(!b.backend.exists().await.unwrap());
    b.backend.create().await.unwrap();
    let (da, db) = (
        a.backend.load().await.unwrap().unwrap(),
        b.backend.load().await.unwrap().unwrap(),
    );
    assert_ne!(
        da.identity_key.public_key.public_key_bytes(),
        db.identity_key.public_key.public_key_bytes()
    );
}

// --- migrations ---

async fn migration_versions(pool: &Pool) -> Vec<i32> {
    let client = pool.get().await.unwrap();
    client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn migrations_apply_once_in_order() {
    let pool = fresh_database().await;
    let report = migrate(&pool).await.unwrap();
    assert_eq!((report.from, report.to), (0, latest_version()));
    let again = migrate(&pool).await.unwrap();
    assert_eq!((again.from, again.to), (latest_version(), latest_version()));
    let expected: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(migration_versions(&pool).await, expected);
    assert!(
        MIGRATIONS
            .windows(2)
            .all(|w| w[1].version == w[0].version + 1),
        "versions are 1, 2, 3… with no gap"
    );

    // A later version applies only what is missing.
    let mut longer = MIGRATIONS.to_vec();
    longer.push(Migration {
        version: latest_version() + 1,
        name: "test_addition",
        sql: "CREATE TABLE test_addition (phone text PRIMARY KEY)",
    });
    let report = migrate_with(&pool, &longer).await.unwrap();
    assert_eq!(
        (report.from, report.to),
        (latest_version(), latest_version() + 1)
    );
}

#[tokio::test]
async fn a_database_newer_than_the_code_is_refused() {
    let pool = fresh_database().await;
    migrate(&pool).await.unwrap();
    let client = pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&(latest_version() + 1)],
        )
        .await
        .unwrap();
    let refused = migrate(&pool).await;
    assert!(
        matches!(refused, Err(PgStoreError::SchemaTooNew { found, known })
            if found == latest_version() + 1 && known == latest_version()),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_failing_migration_applies_nothing() {
    let pool = fresh_database().await;
    let broken = [
        MIGRATIONS[0],
        Migration {
            version: 2,
            name: "broken",
            sql: "CREATE TABLE half (a int); SELECT no_such_column FROM half",
        },
    ];
    assert!(migrate_with(&pool, &broken).await.is_err());
    let client = pool.get().await.unwrap();
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_name IN ('wa_device', 'half', 'schema_migrations')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "one transaction: all or nothing");
    // And the real list still applies afterwards.
    migrate(&pool).await.unwrap();
}

#[tokio::test]
async fn nodes_starting_together_migrate_once() {
    let pool = fresh_database().await;
    let runs = (0..4).map(|_| {
        let pool = pool.clone();
        tokio::spawn(async move { migrate(&pool).await })
    });
    let mut from_zero = 0;
    for run in runs {
        let report = run.await.unwrap().unwrap();
        from_zero += usize::from(report.from == 0);
    }
    assert_eq!(from_zero, 1, "exactly one node applies the schema");
    assert_eq!(migration_versions(&pool).await.len(), MIGRATIONS.len());
}

// --- delete_phone ---

#[tokio::test]
async fn delete_phone_removes_every_row_of_the_phone_in_every_table() {
    let pool = fresh_database().await;
    migrate(&pool).await.unwrap();
    let mut backends = Vec::new();
    for label in ["deleted", "kept"] {
        let fence = claim_lease(&pool, label, NODE, TTL).await.unwrap().unwrap();
        let backend = PgBackend::new(pool.clone(), fence.clone());
        fill_every_table(&backend).await;
        fill_host_state(&pool, &fence).await;
        backends.push(backend);
    }

    let before = rows_of(&pool, "deleted").await;
    assert!(
        before.len() > 15,
        "the store's tables are found: {before:?}"
    );
    let empty: Vec<&(String, i64)> = before.iter().filter(|(_, n)| *n == 0).collect();
    assert!(
        empty.is_empty(),
        "fill_every_table must write into every table, a new one too: {empty:?}"
    );
    let kept_before = rows_of(&pool, "kept").await;

    let removed = delete_phone(&pool, "deleted").await.unwrap();
    let kept = |table: &str| TABLES_KEPT_BY_DELETE_PHONE.contains(&table);
    assert_eq!(
        removed,
        before
            .iter()
            .filter(|(t, _)| !kept(t))
            .map(|(_, n)| *n as u64)
            .sum::<u64>()
    );
    let after = rows_of(&pool, "deleted").await;
    assert!(
        after.iter().all(|(t, n)| *n == 0 || kept(t)),
        "rows left: {after:?}"
    );
    // The record (which will hold the reset's tombstone) is what stays.
    assert_eq!(
        after.iter().filter(|(_, n)| *n > 0).collect::<Vec<_>>(),
        vec![&("phone_records".to_owned(), 1)]
    );
    assert_eq!(
        rows_of(&pool, "kept").await,
        kept_before,
        "other phones untouched"
    );

    // No lease row is left to write under: nothing of the phone comes back.
    assert_lease_lost(
        backends[0].put_session("5511.0", b"late").await,
        "after the reset",
    );
    assert_eq!(
        rows_of(&pool, "deleted").await,
        after,
        "no write of the phone after its reset"
    );
}

/// The host's own state of a phone, one row in each of its tables.
async fn fill_host_state(pool: &Pool, fence: &Fence) {
    phone_state::save_record(pool, fence, b"record", true)
        .await
        .unwrap();
    phone_state::save_state(pool, fence, StateKind::Outbox, Some(b"outbox"))
        .await
        .unwrap();
    phone_state::save_state(pool, fence, StateKind::Statuses, Some(b"statuses"))
        .await
        .unwrap();
    lila_pgstore::outbox::push(pool, fence, "3EB0A1B2C3D4E5F6A7B8C9D0", b"message")
        .await
        .unwrap();
    assert!(
        phone_state::save_contacts_if_session(pool, fence, b"contacts")
            .await
            .unwrap()
    );
}

// --- the host's phone state ---

#[tokio::test]
async fn phone_state_keeps_what_it_is_given_under_the_lease_only() {
    let pool = fresh_database().await;
    migrate(&pool).await.unwrap();
    let phone = "51987654321";
    let fence = claim_lease(&pool, phone, NODE, TTL).await.unwrap().unwrap();
    assert_eq!(phone_state::load_record(&pool, phone).await.unwrap(), None);
    assert!(phone_state::known_phones(&pool).await.unwrap().is_empty());

    phone_state::save_record(&pool, &fence, b"v1", true)
        .await
        .unwrap();
    phone_state::save_record(&pool, &fence, b"v2", true)
        .await
        .unwrap();
    assert_eq!(
        phone_state::load_record(&pool, phone).await.unwrap(),
        Some(b"v2".to_vec())
    );
    assert_eq!(phone_state::known_phones(&pool).await.unwrap(), [phone]);

    phone_state::save_state(&pool, &fence, StateKind::Outbox, Some(b"queued"))
        .await
        .unwrap();
    assert_eq!(
        phone_state::load_state(&pool, phone, StateKind::Outbox)
            .await
            .unwrap(),
        Some(b"queued".to_vec())
    );
    assert_eq!(
        phone_state::load_state(&pool, phone, StateKind::Statuses)
            .await
            .unwrap(),
        None,
        "kinds are apart"
    );
    // Empty is no row.
    phone_state::save_state(&pool, &fence, StateKind::Outbox, None)
        .await
        .unwrap();
    assert_eq!(
        phone_state::load_state(&pool, phone, StateKind::Outbox)
            .await
            .unwrap(),
        None
    );

    // Contacts only while the phone has a session (a device row).
    assert!(
        !phone_state::save_contacts_if_session(&pool, &fence, b"ana")
            .await
            .unwrap()
    );
    assert_eq!(
        phone_state::load_state(&pool, phone, StateKind::Contacts)
            .await
            .unwrap(),
        None
    );
    PgBackend::new(pool.clone(), fence.clone())
        .create()
        .await
        .unwrap();
    assert!(
        phone_state::save_contacts_if_session(&pool, &fence, b"ana")
            .await
            .unwrap()
    );

    // Another node takes the phone over: the old fence writes nothing more.
    expire_lease(&pool, phone).await;
    let newer = claim_lease(&pool, phone, "node-b", TTL)
        .await
        .unwrap()
        .unwrap();
    let stale = phone_state::save_record(&pool, &fence, b"stale", true).await;
    assert!(
        matches!(stale, Err(PgStoreError::LeaseLost { .. })),
        "{stale:?}"
    );
    let stale = phone_state::save_state(&pool, &fence, StateKind::Outbox, Some(b"stale")).await;
    assert!(
        matches!(stale, Err(PgStoreError::LeaseLost { .. })),
        "{stale:?}"
    );
    assert_eq!(
        phone_state::load_record(&pool, phone).await.unwrap(),
        Some(b"v2".to_vec())
    );
    phone_state::save_record(&pool, &newer, b"v3", true)
        .await
        .unwrap();
    assert_eq!(
        phone_state::load_record(&pool, phone).await.unwrap(),
        Some(b"v3".to_vec())
    );
}

// --- the throwaway server itself ---

#[tokio::test]
async fn temp_postgres_is_a_real_server_gone_after_drop() {
    let server = TempPostgres::start().expect("a server starts");
    let dir = server.dir().to_path_buf();
    let port = server.port();
    let pool = connect_pool(&server.database_url(), 1).unwrap();
    {
        let client = pool.get().await.unwrap();
        let version: String = client
            .query_one("SHOW server_version", &[])
            .await
            .unwrap()
            .get(0);
        assert!(version.starts_with("15."), "{version}");
        let fsync: String = client.query_one("SHOW fsync", &[]).await.unwrap().get(0);
        assert_eq!(fsync, "off");
    }
    let other = server.create_database().unwrap();
    assert_ne!(other, server.database_url());
    assert!(dir.join("data").is_dir());
    drop(pool);

    drop(server);
    assert!(!dir.exists(), "the directory is removed");
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(refused.is_err(), "the server is stopped");
}

#[tokio::test]
async fn the_store_reports_no_process_memory() {
    let a = pg_phone("report").await;
    let report = a.backend.resource_report().await;
    assert_eq!(
        report.memory_bytes,
        Some(0),
        "its data lives in the database"
    );
    a.backend.snapshot_db("name", None).await.unwrap();
}

/// PostgreSQL down: reads and writes fail with a connection error in bounded
/// time (not a hang, and not a lost lease: the phone is not taken elsewhere).
#[tokio::test]
async fn a_database_that_is_down_fails_in_bounded_time() {
    let server = TempPostgres::start().expect("a server starts");
    let pool = connect_pool(&server.database_url(), 2).unwrap();
    migrate(&pool).await.unwrap();
    let fence = claim_lease(&pool, "down", NODE, TTL)
        .await
        .unwrap()
        .unwrap();
    let backend = PgBackend::new(pool, fence);
    backend.put_session("s", b"x").await.unwrap();
    drop(server);

    let started = std::time::Instant::now();
    let write = backend
        .put_session("s", b"y")
        .await
        .expect_err("the server is gone");
    let read = backend
        .get_session("s")
        .await
        .expect_err("the server is gone");
    assert!(
        started.elapsed() < lila_pgstore::CONNECTION_TIMEOUT * 3,
        "took {:?}",
        started.elapsed()
    );
    assert!(!PgStoreError::is_lease_lost(&write) && !PgStoreError::is_lease_lost(&read));
}
