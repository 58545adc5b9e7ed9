//! `PgBackend`: one phone's whatsapp-rust store in PostgreSQL, over a shared pool.
//!
//! The trait implementations live in one module per trait; this module holds
//! the backend, the fenced-transaction plumbing they share, the pool, and
//! `delete_phone`.

mod app_sync;
mod device;
mod msg_secret;
mod protocol;
mod signal;

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime, Transaction,
};
use futures_util::future::try_join_all;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql};
use wacore::store::error::StoreError;

use crate::error::PgStoreError;
use crate::lease::{Fence, check_fence};
use crate::phone_state::StateKind;
use crate::tls::{ConnectSettings, connect_settings};

/// Statement parameters, as tokio-postgres takes them.
type Params<'a> = [&'a (dyn ToSql + Sync)];

/// One phone's whatsapp-rust store. Reads are plain; every write runs in a
/// transaction that first checks the phone's lease under [`Fence`], and fails
/// with [`PgStoreError::LeaseLost`] without writing when the lease is gone.
#[derive(Clone)]
pub struct PgBackend {
    pool: Pool,
    fence: Fence,
}

impl std::fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackend")
            .field("fence", &self.fence)
            .finish_non_exhaustive()
    }
}

impl PgBackend {
    /// The store of `fence.phone`, writing as `fence.node_id` at `fence.epoch`.
    /// The schema must be migrated ([`crate::migrate`]) first.
    pub fn new(pool: Pool, fence: Fence) -> Self {
        Self { pool, fence }
    }

    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The phone whose rows this backend reads and writes.
    fn phone(&self) -> &str {
        &self.fence.phone
    }

    async fn client(&self) -> Result<Object, PgStoreError> {
        Ok(self.pool.get().await?)
    }

    /// Opens a transaction on `client` that holds the phone's lease row
    /// share-locked, or fails with `LeaseLost` (the transaction is then
    /// dropped, which rolls it back).
    async fn fenced<'c>(&self, client: &'c mut Object) -> Result<Transaction<'c>, PgStoreError> {
        let tx = client.transaction().await?;
        check_fence(&tx, &self.fence).await?;
        Ok(tx)
    }

    /// One fenced statement; returns the rows it changed.
    async fn write(&self, sql: &str, params: &Params<'_>) -> Result<u64, PgStoreError> {
        let mut client = self.client().await?;
        let tx = self.fenced(&mut client).await?;
        let changed = exec(&tx, sql, params).await?;
        tx.commit().await?;
        Ok(changed)
    }

    /// `sql` once per row of parameters, in order, in one fenced
    /// transaction. The statements are pipelined (sent without waiting for
    /// each answer), so a batch costs about one round trip, not one per row;
    /// the server still runs them one after the other, so a key repeated in a
    /// batch ends with its last row, as the SQLite store's loops do.
    async fn write_many<const N: usize>(
        &self,
        sql: &str,
        rows: &[[&(dyn ToSql + Sync); N]],
    ) -> Result<u64, PgStoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let mut client = self.client().await?;
        let tx = self.fenced(&mut client).await?;
        let statement = tx.prepare_cached(sql).await?;
        let changed = try_join_all(
            rows.iter()
                .map(|params| tx.execute(&statement, params.as_slice())),
        )
        .await?;
        tx.commit().await?;
        Ok(changed.iter().sum())
    }

    /// One fenced statement, for a trait method that returns nothing.
    async fn write_unit(&self, sql: &str, params: &Params<'_>) -> Result<(), StoreError> {
        run(self.write(sql, params)).await.map(drop)
    }

    /// The first column of the row `sql` finds, if it finds one.
    async fn read_value<T: for<'r> FromSql<'r>>(
        &self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Option<T>, StoreError> {
        run(async {
            match self.read_opt(sql, params).await? {
                Some(row) => Ok(Some(row.try_get(0)?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn read_opt(&self, sql: &str, params: &Params<'_>) -> Result<Option<Row>, PgStoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client.query_opt(&statement, params).await?)
    }

    async fn read_all(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, PgStoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client.query(&statement, params).await?)
    }
}

/// Runs one statement inside a transaction, with the statement cached per
/// connection (one round trip instead of two on the next call).
async fn exec(tx: &Transaction<'_>, sql: &str, params: &Params<'_>) -> Result<u64, PgStoreError> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&statement, params).await?)
}

/// Runs a body written against [`PgStoreError`] and hands its error to
/// whatsapp-rust as a `StoreError` (whose source chain keeps the original, so
/// [`PgStoreError::is_lease_lost`] finds a lost lease).
async fn run<T>(body: impl Future<Output = Result<T, PgStoreError>>) -> Result<T, StoreError> {
    body.await.map_err(StoreError::from)
}

/// A stored id back to the `u32` the traits use.
fn to_u32(value: i64, what: &str) -> Result<u32, PgStoreError> {
    u32::try_from(value).map_err(|_| PgStoreError::Invalid(format!("{what} {value} is not a u32")))
}

/// How long a statement may wait for a connection, and a connection for the
/// server, before the store reports the database unreachable (instead of the
/// client hanging while PostgreSQL is down).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection may sit in an open transaction before the server
/// ends it: the longest a paused node can hold up a takeover of its phones.
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(5);

/// A pool of connections to `database_url` (`postgres://…`), at most
/// `max_size` at once. Connections are opened lazily; none waits longer than
/// [`CONNECTION_TIMEOUT`] to be had.
///
/// The URL may carry libpq's `sslmode` and `sslrootcert` (see
/// [`crate::SslMode`]); the CA file is read here, once for the pool.
pub fn connect_pool(database_url: &str, max_size: usize) -> Result<Pool, PgStoreError> {
    let ConnectSettings {
        mut config,
        tls,
        ssl_mode,
    } = connect_settings(database_url)?;
    tracing::debug!(sslmode = %ssl_mode, max_size, "database pool");
    // A node paused (SIGSTOP, a long GC, a partition) in the middle of a
    // write holds the lease row share-locked, which would stall a takeover
    // for as long as the pause. The server ends such a session instead.
    let options = format!(
        "{} -c idle_in_transaction_session_timeout={}",
        config.get_options().unwrap_or_default(),
        IDLE_IN_TRANSACTION_TIMEOUT.as_millis()
    );
    config.options(options.trim());
    let manager = Manager::from_config(
        config,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECTION_TIMEOUT))
        .create_timeout(Some(CONNECTION_TIMEOUT))
        .recycle_timeout(Some(CONNECTION_TIMEOUT))
        .build()?)
}

/// Tables whose rows `delete_phone` keeps although they have a `phone`
/// column: `phone_records`, which holds the reset's tombstone and journal
/// and so must outlive the phone's other rows. Everything else goes.
pub const TABLES_KEPT_BY_DELETE_PHONE: &[&str] = &["phone_records"];

/// Removes every row of `phone` from every table of the current schema that
/// has a `phone` column (found in `information_schema`, so a table added later
/// is covered without touching this code), its lease first. In one
/// transaction: deleting the lease row waits for the holder's in-flight writes
/// and fences every later one (no lease row, no write), so nothing of the
/// phone comes back after this returns. Returns the number of rows removed.
pub async fn delete_phone(pool: &Pool, phone: &str) -> Result<u64, PgStoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let mut removed = tx
        .execute("DELETE FROM leases WHERE phone = $1", &[&phone])
        .await?;
    for table in tables_a_purge_empties(&*tx).await? {
        let sql = format!("DELETE FROM {} WHERE phone = $1", quote_identifier(&table));
        removed += tx.execute(sql.as_str(), &[&phone]).await?;
    }
    tx.commit().await?;
    tracing::info!(phone, rows = removed, "deleted every row of the phone");
    Ok(removed)
}

/// What one step of a reset's purge removes. The parts are those of a
/// single node's files, so that a reset reads alike on both backends and a
/// crash between two parts is finished from the same journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgePart {
    /// The WhatsApp credentials and Signal state (every table of the store)
    /// and the contacts: what `sessions/{phone}/` holds on one node.
    Session,
    /// One kind of the host's state (the outbox, or the message statuses).
    State(StateKind),
}

/// Rows of one phone in one place: a table, or one kind of `phone_state`
/// (`phone_state:outbox`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneRows {
    pub place: String,
    pub rows: u64,
    /// Their size as stored (`pg_column_size` of each row).
    pub bytes: u64,
}

impl PhoneRows {
    /// The purge part these rows belong to.
    pub fn part(&self) -> PurgePart {
        if self.place == crate::outbox::TABLE {
            return PurgePart::State(StateKind::Outbox);
        }
        match self.place.strip_prefix("phone_state:") {
            Some("outbox") => PurgePart::State(StateKind::Outbox),
            Some("statuses") => PurgePart::State(StateKind::Statuses),
            _ => PurgePart::Session,
        }
    }
}

/// The phone's rows in every place a purge empties (places with none are
/// left out), in a stable order: what a reset is about to remove.
pub async fn phone_rows(pool: &Pool, phone: &str) -> Result<Vec<PhoneRows>, PgStoreError> {
    let client = pool.get().await?;
    let tables = tables_a_purge_empties(&**client).await?;
    count_phone_rows(&**client, phone, &tables).await
}

/// The tables with a `phone` column but the lease and those a purge keeps
/// (`TABLES_KEPT_BY_DELETE_PHONE`): where a phone's rows are removed.
async fn tables_a_purge_empties<C: tokio_postgres::GenericClient>(
    client: &C,
) -> Result<Vec<String>, PgStoreError> {
    let mut tables = tables_with_phone_column(client).await?;
    tables.retain(|t| t != "leases" && !TABLES_KEPT_BY_DELETE_PHONE.contains(&t.as_str()));
    Ok(tables)
}

async fn count_phone_rows<C: tokio_postgres::GenericClient>(
    client: &C,
    phone: &str,
    tables: &[String],
) -> Result<Vec<PhoneRows>, PgStoreError> {
    let mut counts = Vec::new();
    for table in tables {
        let sql = if table == "phone_state" {
            "SELECT 'phone_state:' || kind, count(*), coalesce(sum(pg_column_size(t.*)), 0)::int8
             FROM phone_state t WHERE phone = $1 GROUP BY kind ORDER BY kind"
                .to_owned()
        } else {
            format!(
                "SELECT $2::text, count(*), coalesce(sum(pg_column_size(t.*)), 0)::int8
                 FROM {} t WHERE phone = $1 HAVING count(*) > 0",
                quote_identifier(table)
            )
        };
        let params: Vec<&(dyn ToSql + Sync)> = if table == "phone_state" {
            vec![&phone]
        } else {
            vec![&phone, table]
        };
        for row in client.query(sql.as_str(), &params).await? {
            counts.push(PhoneRows {
                place: row.try_get(0)?,
                rows: to_u64(row.try_get(1)?, "a row count")?,
                bytes: to_u64(row.try_get(2)?, "a size")?,
            });
        }
    }
    Ok(counts)
}

fn to_u64(value: i64, what: &str) -> Result<u64, PgStoreError> {
    u64::try_from(value).map_err(|_| PgStoreError::Invalid(format!("{what} {value} is negative")))
}

/// One step of a reset's purge, under the phone's lease: removes the rows
/// of `part` and returns what they were. The record (tombstone and
/// journal) and the lease (the fence of the reset's last writes) stay. In
/// one fenced transaction, so a node that lost the phone removes nothing.
pub async fn purge_phone(
    pool: &Pool,
    fence: &Fence,
    part: PurgePart,
) -> Result<Vec<PhoneRows>, PgStoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    check_fence(&tx, fence).await?;
    let tables = tables_a_purge_empties(&*tx).await?;
    let removed: Vec<PhoneRows> = count_phone_rows(&*tx, &fence.phone, &tables)
        .await?
        .into_iter()
        .filter(|rows| rows.part() == part)
        .collect();
    match part {
        PurgePart::Session => {
            for table in tables
                .iter()
                .filter(|t| *t != "phone_state" && *t != crate::outbox::TABLE)
            {
                let sql = format!("DELETE FROM {} WHERE phone = $1", quote_identifier(table));
                tx.execute(sql.as_str(), &[&fence.phone]).await?;
            }
            tx.execute(
                "DELETE FROM phone_state WHERE phone = $1 AND kind = 'contacts'",
                &[&fence.phone],
            )
            .await?;
        }
        PurgePart::State(kind) => {
            tx.execute(
                "DELETE FROM phone_state WHERE phone = $1 AND kind = $2",
                &[&fence.phone, &kind.as_str()],
            )
            .await?;
            if kind == StateKind::Outbox {
                tx.execute(
                    "DELETE FROM outbox_messages WHERE phone = $1",
                    &[&fence.phone],
                )
                .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(removed)
}

/// The base tables of the current schema that have a `phone` column.
pub async fn tables_with_phone_column<C: tokio_postgres::GenericClient>(
    client: &C,
) -> Result<Vec<String>, PgStoreError> {
    let rows = client
        .query(
            "SELECT c.table_name::text
             FROM information_schema.columns c
             JOIN information_schema.tables t
               ON t.table_schema = c.table_schema AND t.table_name = c.table_name
             WHERE c.table_schema = current_schema()
               AND c.column_name = 'phone'
               AND t.table_type = 'BASE TABLE'
             ORDER BY 1",
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| row.try_get::<_, String>(0).map_err(PgStoreError::from))
        .collect()
}

/// `name` as a quoted SQL identifier.
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
