//! Cluster mode's commands: `lila migrate` brings a real PostgreSQL (a
//! throwaway server) to the schema this lila knows, `lila import` moves a
//! data root into it, and a node whose database is unreachable stops.
//! The nodes themselves are tested end to end in `tests/e2e/cluster.rs`.

use std::process::{Command, Output};
use std::time::Duration;

use lila_pgstore::testing::TempPostgres;

/// The cluster secret the tests' nodes share.
const CLUSTER_SECRET: &str = "cluster-test-cluster-secret-of-32-bytes";

/// Runs the `lila` binary with `args` in an empty directory (no lila.toml).
fn lila(args: &[&str], database_url: Option<&str>) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_lila"));
    command
        .args(args)
        .current_dir(dir.path())
        .env("LILA_DATA_DIR", dir.path().join("data"))
        .env("LILA_JWT_SECRET", "cluster-test-secret-cluster-test-secret")
        .env("LILA_BIND", "127.0.0.1:0")
        // The tests' lila accepts any certificate chain, so it runs against
        // loopback only (a closed port: no session connects here).
        .env("LILA_WA_URL", "ws://127.0.0.1:9/ws/chat")
        .env_remove("LILA_CONFIG")
        .env_remove("LILA_DATABASE_URL")
        .env_remove("LILA_CLUSTER_SECRET");
    if let Some(url) = database_url {
        command.env("LILA_DATABASE_URL", url);
    }
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The command's answer: its last line (log lines come before it).
fn answer(output: &Output) -> String {
    text(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn lila_migrate_brings_the_database_to_the_latest_schema_once() {
    let server = TempPostgres::shared().unwrap_or_else(|e| panic!("{e}"));
    let url = server.create_database().unwrap();
    let latest = lila_pgstore::latest_version();

    let first = lila(&["migrate"], Some(&url));
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert_eq!(
        answer(&first),
        format!("database schema migrated from version 0 to {latest}")
    );
    let again = lila(&["migrate"], Some(&url));
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(
        answer(&again),
        format!("database schema at version {latest}: up to date")
    );
    // The password of a URL never reaches the output.
    assert!(!text(&first.stdout).contains(&url) && !text(&first.stderr).contains(&url));
}

#[test]
fn without_a_database_url_migrate_says_what_to_set_and_a_node_without_its_database_stops() {
    let none = lila(&["migrate"], None);
    assert!(!none.status.success());
    assert!(
        text(&none.stderr).contains("set LILA_DATABASE_URL"),
        "{}",
        text(&none.stderr)
    );
    let bad = lila(&["migrate"], Some("mysql://db/lila"));
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("must be a PostgreSQL URL"),
        "{}",
        text(&bad.stderr)
    );
    // A cluster node whose database cannot be reached says so and exits,
    // instead of running alone.
    let serve = lila(&["serve"], Some("postgres://lila@127.0.0.1:1/lila"));
    assert!(!serve.status.success());
    assert!(
        text(&serve.stderr).contains("migrating the database"),
        "{}",
        text(&serve.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lila_import_moves_a_data_root_into_postgres_and_again_changes_nothing() {
    use std::collections::BTreeMap;

    use lila::core::message_status::MessageStatuses;
    use lila::core::outbox::{Outbox, OutboxMessage, Recipient};
    use lila::core::record::{DesiredState, PhoneRecord};
    use lila::core::tenant::TenantId;
    use lila::layout::DataLayout;
    use lila::phone::Phone;
    use lila::storage::phone_store::PhoneStore;
    use lila::storage::postgres_store::PgPhoneStore;
    use wacore::store::traits::DeviceStore;

    // A single node's data root: a paired phone with two messages to send,
    // and a stopped phone with a record only.
    let root = tempfile::tempdir().unwrap();
    let layout = DataLayout::new(root.path());
    let files = PhoneStore::files(layout.clone());
    let paired = Phone::parse("51987650001").unwrap();
    let stopped = Phone::parse("51987650002").unwrap();
    let acme = TenantId::parse("acme").ok();
    let running = PhoneRecord::new(acme.clone(), DesiredState::Running, 1_700_000_000_000);
    let down = PhoneRecord::new(acme, DesiredState::Stopped, 1_700_000_000_001);
    files.save_record(&paired, &running).await.unwrap();
    files.save_record(&stopped, &down).await.unwrap();
    std::fs::create_dir_all(layout.session_dir(&paired)).unwrap();
    let store_path = layout.store_file(&paired);
    let sqlite = whatsapp_rust::store::SqliteStore::new(store_path.to_str().unwrap())
        .await
        .unwrap();
    sqlite.create().await.unwrap();
    drop(sqlite);
    let mut outbox = Outbox::default();
    let mut statuses = MessageStatuses::default();
    for (i, text) in ["uno", "dos"].into_iter().enumerate() {
        let id = format!("3EB0A1B2C3D4E5F6A7B8C9D{i}");
        let to = Recipient::parse("51900000001").unwrap();
        statuses.queued(&id, to.as_jid(), 1_700_000_000_000);
        outbox
            .enqueue(
                OutboxMessage::new(id, to, text.to_owned(), 1_700_000_000_000).unwrap(),
                &Default::default(),
            )
            .unwrap();
    }
    files.save_outbox(&paired, &outbox).await.unwrap();
    files.save_statuses(&paired, &statuses).await.unwrap();
    let names = BTreeMap::from([("51900000001@s.whatsapp.net".to_owned(), "Ana".to_owned())]);
    files.save_contacts(&paired, &names).await.unwrap();

    let server = TempPostgres::shared().unwrap_or_else(|e| panic!("{e}"));
    let url = server.create_database().unwrap();
    let import = |url: String, dir: std::path::PathBuf| {
        std::thread::spawn(move || {
            Command::new(env!("CARGO_BIN_EXE_lila"))
                .arg("import")
                .current_dir(&dir)
                .env("LILA_DATA_DIR", &dir)
                .env("LILA_DATABASE_URL", url)
                .env_remove("LILA_CONFIG")
                .output()
                .unwrap()
        })
        .join()
        .unwrap()
    };
    let first = import(url.clone(), root.path().to_owned());
    assert!(first.status.success(), "{}", text(&first.stderr));
    let said = answer(&first);
    assert!(
        said.starts_with("imported 2 phones from ")
            && said.contains(": 1 WhatsApp stores (")
            && said.ends_with(" rows), 2 messages still to send"),
        "{said}"
    );

    let pool = lila_pgstore::connect_pool(&url, 2).unwrap();
    let db = PgPhoneStore::new(pool.clone());
    let check = || async {
        assert_eq!(
            db.known_phones().await.unwrap(),
            [paired.clone(), stopped.clone()].into()
        );
        assert_eq!(
            db.load_record(&paired).await.unwrap(),
            Some(running.clone())
        );
        assert_eq!(db.load_record(&stopped).await.unwrap(), Some(down.clone()));
        assert_eq!(db.load_outbox(&paired).await.unwrap(), outbox);
        assert_eq!(db.load_statuses(&paired).await.unwrap().len(), 2);
        assert_eq!(db.load_contacts(&paired).await.unwrap(), names);
        assert!(db.load_outbox(&stopped).await.unwrap().is_empty());
    };
    check().await;
    // The import gave every lease up: a node may take the phones at once.
    assert!(
        lila_pgstore::claim_lease(&pool, paired.as_str(), "node-a", Duration::from_secs(5))
            .await
            .unwrap()
            .is_some()
    );
    // Held by a running node, a phone is not imported over.
    let refused = import(url.clone(), root.path().to_owned());
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("another node holds this phone now"),
        "{}",
        text(&refused.stderr)
    );
    pool.get()
        .await
        .unwrap()
        .execute("UPDATE leases SET expires_at = now()", &[])
        .await
        .unwrap();
    // Once more: the same answer and the same rows.
    let again = import(url, root.path().to_owned());
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(answer(&again), said);
    check().await;
}

/// Found by the 10,000-session run on PostgreSQL: a restarted node claimed
/// every free phone in one round of its lease loop, and renewed nothing until
/// the round ended, longer than a lease; it then lost its own leases, stopped
/// those sessions, claimed them again, and so on (54,881 leases lost in
/// five minutes). A round now claims for a third of a lease at most, and the
/// next round (renewing first) starts at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_claiming_more_phones_than_one_lease_lasts_keeps_every_lease() {
    use std::sync::atomic::Ordering;

    use lila::core::record::{DesiredState, PhoneRecord};
    use lila::core::tenant::TenantId;

    // Claiming them all takes about twice as long as a lease lasts.
    const PHONES: usize = 3_000;
    let ttl = Duration::from_secs(2);
    let server = TempPostgres::shared().unwrap_or_else(|e| panic!("{e}"));
    let url = server.create_database().unwrap();
    let pool = lila_pgstore::connect_pool(&url, 8).unwrap();
    lila_pgstore::migrate(&pool).await.unwrap();
    // Phones meant to run that no node holds, written as `lila import` would.
    let record = PhoneRecord::new(TenantId::parse("acme").ok(), DesiredState::Running, 1);
    let body = lila::storage::phone_records::encode_bytes(&record).unwrap();
    let phones: Vec<String> = (0..PHONES).map(|i| format!("5190{i:07}")).collect();
    pool.get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO phone_records (phone, body, wants_node)
             SELECT p, $2, true FROM unnest($1::text[]) AS p",
            &[&phones, &body],
        )
        .await
        .unwrap();

    let (_dir, store, gateway, cluster) = in_process_node(&pool, &url, ttl).await;
    let lease_loop = cluster.spawn_lease_loop(gateway.clone());

    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while store.held().len() < PHONES {
        assert!(
            std::time::Instant::now() < deadline,
            "claimed {} of {PHONES}",
            store.held().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Two more leases' time: every lease is renewed, none lost.
    tokio::time::sleep(2 * ttl).await;
    let lost = gateway
        .metrics()
        .cluster_leases_lost
        .load(Ordering::Relaxed);
    let claimed = gateway
        .metrics()
        .cluster_leases_claimed
        .load(Ordering::Relaxed);
    assert_eq!(lost, 0, "leases lost while claiming ({claimed} claims)");
    assert_eq!(store.held().len(), PHONES);
    assert_eq!(claimed, PHONES as u64, "each phone claimed once");
    lease_loop.abort();
    gateway.shutdown().await;
}

/// A request about a free phone that the caller may not touch moves
/// nothing: the node answers it (404, or a create's refusal) without
/// claiming the phone's lease; its owner's request claims it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_about_another_tenants_free_phone_claims_no_lease() {
    use lila::cluster::Route;
    use lila::core::record::{DesiredState, PhoneRecord};
    use lila::core::tenant::{Caller, TenantId};
    use lila::phone::Phone;

    let server = TempPostgres::shared().unwrap_or_else(|e| panic!("{e}"));
    let url = server.create_database().unwrap();
    let pool = lila_pgstore::connect_pool(&url, 4).unwrap();
    lila_pgstore::migrate(&pool).await.unwrap();
    // acme's phone, stopped, held by no node.
    let phone = Phone::parse("51900000077").unwrap();
    let record = PhoneRecord::new(TenantId::parse("acme").ok(), DesiredState::Stopped, 1);
    let body = lila::storage::phone_records::encode_bytes(&record).unwrap();
    pool.get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO phone_records (phone, body, wants_node) VALUES ($1, $2, false)",
            &[&phone.as_str(), &body],
        )
        .await
        .unwrap();
    let (_dir, store, gateway, cluster) =
        in_process_node(&pool, &url, Duration::from_secs(9)).await;
    let zeta = Caller::Tenant(TenantId::parse("zeta").unwrap());
    for create in [false, true] {
        let route = cluster.route(&gateway, &phone, &zeta, false, create).await;
        assert!(matches!(route, Ok(Route::Here)), "{route:?}");
        assert!(
            !store.holds(&phone),
            "zeta's request (create: {create}) claimed acme's phone"
        );
        assert_eq!(
            lila_pgstore::cluster::holder(&pool, phone.as_str())
                .await
                .unwrap(),
            None
        );
    }
    let acme = Caller::Tenant(TenantId::parse("acme").unwrap());
    let route = cluster.route(&gateway, &phone, &acme, false, false).await;
    assert!(matches!(route, Ok(Route::Here)), "{route:?}");
    assert!(store.holds(&phone), "its owner's request claims it");
    gateway.shutdown().await;
}

/// One cluster node in this process ("node-a", scripted WhatsApp, no
/// plugins) on the database at `url`, not yet running its lease loop: its
/// data folder (kept alive by the caller), store, gateway and membership.
async fn in_process_node(
    pool: &lila_pgstore::Pool,
    url: &str,
    ttl: Duration,
) -> (
    tempfile::TempDir,
    lila::storage::postgres_store::PgPhoneStore,
    std::sync::Arc<lila::gateway::Gateway>,
    std::sync::Arc<lila::cluster::Cluster>,
) {
    use std::sync::Arc;

    use lila::storage::phone_store::PhoneStore;
    use lila::storage::postgres_store::PgPhoneStore;

    let dir = tempfile::tempdir().unwrap();
    let config = lila::config::Config {
        data_dir: dir.path().join("data"),
        ..lila::config::Config::default()
    };
    let store = PgPhoneStore::new(pool.clone());
    let gateway = lila::gateway::Gateway::with_store(
        config,
        PhoneStore::Postgres(store.clone()),
        Arc::new(lila::whatsapp::scripted::ScriptedWhatsApp::new()),
        Arc::new(lila::hooks::NoHooks),
    );
    let lease_pool = lila_pgstore::connect_pool(url, 4).unwrap();
    let cluster = lila::cluster::Cluster::join(
        lease_pool,
        store.clone(),
        "node-a".into(),
        String::new(),
        ttl,
        Arc::new(lila::cluster::proof::Proofs::new(CLUSTER_SECRET.as_bytes())),
    )
    .await
    .unwrap();
    (dir, store, gateway, cluster)
}

#[test]
fn a_cluster_node_without_a_cluster_secret_refuses_to_start() {
    let server = TempPostgres::shared().unwrap_or_else(|e| panic!("{e}"));
    let url = server.create_database().unwrap();
    let serve = lila(&["serve"], Some(&url));
    assert!(!serve.status.success());
    assert!(
        text(&serve.stderr).contains("set LILA_CLUSTER_SECRET"),
        "{}",
        text(&serve.stderr)
    );
}
