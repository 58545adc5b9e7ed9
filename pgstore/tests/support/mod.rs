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
