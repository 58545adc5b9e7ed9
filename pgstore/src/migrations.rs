//! The versioned schema: numbered SQL files applied in order at start, each once.
//!
//! `schema_migrations(version, applied_at)` records what was applied. All
//! pending files run in one transaction under an advisory lock, so nodes
//! starting together apply each file exactly once and a failure leaves the
//! schema as it was. A database already at a version newer than this code
//! knows is refused: an older node must not write into a schema it does not
//! understand.

use deadpool_postgres::Pool;

use crate::error::PgStoreError;

/// One schema version.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. Versions are 1, 2, 3… with no gap; a new one is
/// appended, never edited once released.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "whatsapp_store",
        sql: include_str!("../migrations/0001_whatsapp_store.sql"),
    },
    Migration {
        version: 2,
        name: "phone_state",
        sql: include_str!("../migrations/0002_phone_state.sql"),
    },
    Migration {
        version: 3,
        name: "cluster",
        sql: include_str!("../migrations/0003_cluster.sql"),
    },
    Migration {
        version: 4,
        name: "plugin_state",
        sql: include_str!("../migrations/0004_plugin_state.sql"),
    },
    Migration {
        version: 5,
        name: "reset_requests",
        sql: include_str!("../migrations/0005_reset_requests.sql"),
    },
    Migration {
        version: 6,
        name: "outbox_messages",
        sql: include_str!("../migrations/0006_outbox_messages.sql"),
    },
];

/// Serialises concurrent migrators across the cluster (an arbitrary constant,
/// "lila" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6c69_6c61;

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The version the database was at before.
    pub from: i32,
    /// The version it is at now.
    pub to: i32,
}

/// The newest version this code knows.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings the database to [`latest_version`], applying what is missing.
pub async fn migrate(pool: &Pool) -> Result<MigrationReport, PgStoreError> {
    migrate_with(pool, MIGRATIONS).await
}

/// [`migrate`] with an explicit list (tests use a shorter or longer one).
pub async fn migrate_with(
    pool: &Pool,
    migrations: &[Migration],
) -> Result<MigrationReport, PgStoreError> {
    let known = migrations.last().map_or(0, |m| m.version);
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let row = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?;
    let from: i32 = row.try_get(0)?;
    if from > known {
        return Err(PgStoreError::SchemaTooNew { found: from, known });
    }
    for migration in migrations.iter().filter(|m| m.version > from) {
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applying a schema migration"
        );
        tx.batch_execute(migration.sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&migration.version],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(MigrationReport { from, to: known })
}
