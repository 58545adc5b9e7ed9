//! The backends under test: whatsapp-rust's SQLite store and `PgBackend` on a throwaway server.

#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lila_pgstore::testing::TempPostgres;
use lila_pgstore::{Fence, PgBackend, Pool, claim_lease, connect_pool, migrate};
use wacore::store::traits::Backend;
use whatsapp_rust_sqlite_storage::SqliteStore;

/// The node id the tests write as.
pub const NODE: &str = "node-a";
/// Long enough that no lease expires during a test.
pub const TTL: Duration = Duration::from_secs(600);

/// A SQLite store in a fresh file, as lila opens one per phone.
pub async fn sqlite_store() -> (tempfile::TempDir, Arc<dyn Backend>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("whatsapp.db");
    let store = SqliteStore::new(path.to_str().expect("a UTF-8 path"))
        .await
        .expect("the SQLite store opens");
    (dir, Arc::new(store))
}

/// A migrated pool on the process's shared server (one per test: each
/// `#[tokio::test]` has its own runtime, and a pool's connections live on the
/// runtime that opened them).
pub async fn pg_pool() -> Pool {
    let server = TempPostgres::shared().unwrap_or_else(|e| panic!("{e}"));
    let pool = connect_pool(&server.database_url(), 4).expect("a pool");
    migrate(&pool).await.expect("the schema migrates");
    pool
}

/// A phone name no other test of this process uses.
pub fn unique_phone(label: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{label}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A phone's store whose lease this node holds.
pub struct PgPhone {
    pub pool: Pool,
    pub fence: Fence,
    pub backend: Arc<PgBackend>,
}

pub async fn pg_phone(label: &str) -> PgPhone {
    let pool = pg_pool().await;
    let phone = unique_phone(label);
    let fence = claim_lease(&pool, &phone, NODE, TTL)
        .await
        .expect("the claim runs")
        .expect("a new phone's lease is free");
    let backend = Arc::new(PgBackend::new(pool.clone(), fence.clone()));
    PgPhone {
        pool,
        fence,
        backend,
    }
}

/// Writes something into every table of a phone's store, through the
/// traits, as a logged-in client would.
pub async fn fill_every_table(store: &dyn Backend) {
    use bytes::Bytes;
    use wacore::appstate::hash::HashState;
    use wacore::appstate::processor::AppStateMutationMAC;
    use wacore::store::traits::{
        AppStateSyncKey, DeviceListRecord, LidPnMappingEntry, TcTokenEntry,
    };

    store.create().await.expect("device");
    store
        .put_identity("5511@s.whatsapp.net", [1; 32])
        .await
        .expect("identity");
    store
        .put_session("5511.0", b"session")
        .await
        .expect("session");
    store
        .store_prekeys_batch(&[(1, Bytes::from_static(b"prekey"))], false)
        .await
        .expect("pre-key");
    store
        .store_signed_prekey(1, b"signed")
        .await
        .expect("signed pre-key");
    store
        .put_sender_key("group::5511::0", b"sender")
        .await
        .expect("sender key");
    store
        .set_sync_key(
            b"key-id",
            AppStateSyncKey {
                key_data: vec![1; 32],
                fingerprint: vec![2],
                timestamp: 3,
            },
        )
        .await
        .expect("sync key");
    store
        .set_version("regular", HashState::default())
        .await
        .expect("version");
    store
        .put_mutation_macs(
            "regular",
            1,
            &[AppStateMutationMAC {
                index_mac: vec![1; 32],
                value_mac: vec![2; 32],
            }],
        )
        .await
        .expect("mutation MAC");
    store
        .set_sender_key_status("g@g.us", &[("5511:1@s.whatsapp.net", true)])
        .await
        .expect("sender key device");
    store
        .put_lid_mapping(&LidPnMappingEntry {
            lid: "100".into(),
            phone_number: "5511".into(),
            created_at: 1,
            updated_at: 1,
            learning_source: "usync".into(),
        })
        .await
        .expect("LID mapping");
    store
        .save_base_key("5511.0", "m1", b"base")
        .await
        .expect("base key");
    store
        .update_device_list(DeviceListRecord {
            user: "5511".into(),
            devices: vec![],
            timestamp: 1,
            phash: None,
            raw_id: None,
        })
        .await
        .expect("device list");
    store
        .put_group_metadata("g@g.us", b"info")
        .await
        .expect("group");
    store
        .put_tc_token(
            "100@lid",
            &TcTokenEntry {
                token: b"tc".to_vec(),
                token_timestamp: 1,
                sender_timestamp: None,
            },
        )
        .await
        .expect("tc token");
    store
        .store_sent_message("5511@s.whatsapp.net", "m1", b"payload")
        .await
        .expect("sent message");
    store
        .store_pending_inbound("5511@s.whatsapp.net", "5511@s.whatsapp.net", "m2", b"msg")
        .await
        .expect("pending inbound");
    store
        .put_msg_secret("5511@s.whatsapp.net", "5522@s.whatsapp.net", "m1", &[3; 32])
        .await
        .expect("message secret");
}

/// Everything `fill_every_table` wrote, read back through the traits, as
/// text to compare two stores by. Takes the sent message (a take consumes it).
pub async fn read_back_filled(store: &dyn Backend) -> String {
    let device = store.load().await.expect("load").expect("a device");
    let mut text = format!(
        "device: {:?} {} {:?} {:?}\n",
        device.pn.as_ref().map(ToString::to_string),
        device.registration_id,
        device.identity_key.public_key.public_key_bytes(),
        device.noise_key.private_key.serialize(),
    );
    let sync_key = store.get_sync_key(b"key-id").await.expect("sync key");
    let version = store.get_version("regular").await.expect("version");
    let lines = [
        format!("{:?}", store.load_identity("5511@s.whatsapp.net").await),
        format!("{:?}", store.get_session("5511.0").await),
        format!("{:?}", store.load_prekey(1).await),
        format!("{:?}", store.load_all_signed_prekeys().await),
        format!("{:?}", store.get_sender_key("group::5511::0").await),
        format!(
            "{:?}",
            sync_key.map(|k| (k.key_data, k.fingerprint, k.timestamp))
        ),
        format!(
            "{:?}",
            (version.version, version.hash, version.index_value_map)
        ),
        format!("{:?}", store.get_mutation_mac("regular", &[1; 32]).await),
        format!("{:?}", store.get_sender_key_devices("g@g.us").await),
        format!("{:?}", store.get_lid_mapping("100").await),
        format!(
            "{:?}",
            store.has_same_base_key("5511.0", "m1", b"base").await
        ),
        format!("{:?}", store.get_devices("5511").await),
        format!("{:?}", store.get_group_metadata("g@g.us").await),
        format!("{:?}", store.get_tc_token("100@lid").await),
        format!(
            "{:?}",
            store
                .get_pending_inbound("5511@s.whatsapp.net", "5511@s.whatsapp.net", "m2")
                .await
        ),
        format!(
            "{:?}",
            store
                .get_msg_secret_with_ts("5511@s.whatsapp.net", "5522@s.whatsapp.net", "m1")
                .await
        ),
        format!(
            "{:?}",
            store.take_sent_message("5511@s.whatsapp.net", "m1").await
        ),
    ];
    for line in lines {
        let absent = ["None", "Ok(None)", "Ok(false)", "Err"];
        assert!(
            !absent.iter().any(|a| line.starts_with(a)),
            "missing: {line}"
        );
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// How many rows `phone` has in each table with a `phone` column.
pub async fn rows_of(pool: &Pool, phone: &str) -> Vec<(String, i64)> {
    let client = pool.get().await.expect("a connection");
    let mut counts = Vec::new();
    for table in lila_pgstore::tables_with_phone_column(&**client)
        .await
        .expect("the tables")
    {
        let sql = format!("SELECT count(*) FROM \"{table}\" WHERE phone = $1");
        let count: i64 = client
            .query_one(sql.as_str(), &[&phone])
            .await
            .expect("a count")
            .get(0);
        counts.push((table, count));
    }
    counts
}

/// Ends the phone's lease now, as time passing would (its holder died).
pub async fn expire_lease(pool: &Pool, phone: &str) {
    let client = pool.get().await.expect("a connection");
    let changed = client
        .execute(
            "UPDATE leases SET expires_at = now() - interval '1 second' WHERE phone = $1",
            &[&phone],
        )
        .await
        .expect("the lease expires");
    assert_eq!(changed, 1, "{phone} had a lease to expire");
}
