//! lila's PostgreSQL store, for cluster mode: whatsapp-rust's storage
//! `Backend` on PostgreSQL, the host's own per-phone state, and the
//! cluster's leases, membership and messages between nodes.
//!
//! Any node of a cluster must be able to run any phone, so a phone's WhatsApp
//! credentials and Signal state live in PostgreSQL: one [`PgBackend`] per
//! phone, over a pool shared by all phones of a node ([`connect_pool`]).
//! Every table that holds a phone's state has a `phone` column leading its
//! primary key (it replaces the per-phone SQLite file). The schema is
//! versioned ([`migrate`], the SQL files in `migrations/`).
//!
//! - [`PgBackend`]: the WhatsApp store of one phone, every write fenced.
//! - [`claim_lease`], [`renew_lease`], [`release_lease`], [`check_fence`]:
//!   the lease of one phone and its [`Fence`].
//! - [`phone_state`]: the host's record, message statuses and contacts of
//!   a phone, as the bytes of their single-node formats; [`outbox`]: its
//!   outbox, a row per queued message.
//! - [`phone_rows`] and [`purge_phone`]: what a reset will remove, and its
//!   removal one [`PurgePart`] at a time under the lease, keeping the record
//!   (tombstone and journal) and the lease. [`delete_phone`] removes the
//!   lease and every row of a phone but its record; the host does not call it.
//! - [`cluster`]: the lease loop's statements (nodes, census, renewing every
//!   lease at once, free phones, who holds a phone, retiring a dead node).
//! - [`notify`]: LISTEN/NOTIFY between nodes. [`reset_requests`]: resets
//!   asked of a holder that cannot be reached over HTTP. [`plugin_state`]:
//!   the plugins' key-value stores.
//! - [`connect_pool`] and [`notify::listen`] take libpq's `sslmode`
//!   ([`SslMode`]) and `sslrootcert` ([`RootCertificates`]) in the URL: TLS
//!   with rustls, the same for the pool and the listeners; a URL they cannot
//!   use is a [`DatabaseUrlError`].
//! - `testing::TempPostgres` (feature `testing`) and
//!   `import::import_sqlite_store` (feature `sqlite-import`).
//!
//! # The fencing invariant
//!
//! **A write of a phone's state commits only if, inside its own transaction,
//! the phone's lease row names this backend's node and epoch and has not
//! expired (by the database's clock).** Every mutating method opens a
//! transaction, locks the `leases` row `FOR SHARE` with `node_id` and `epoch`
//! equal to its [`Fence`] and `expires_at > now()`, and only then writes; when
//! no such row exists it rolls back and returns [`PgStoreError::LeaseLost`]
//! (inside whatsapp-rust's `StoreError`; [`PgStoreError::is_lease_lost`] finds
//! it), having written nothing. Because a takeover must update that row, it
//! waits for the old holder's in-flight write transactions, and every write
//! the old holder starts afterwards fails: a node that lost a phone (pause,
//! partition, clock jump) can no longer change that phone's state. Epochs come
//! from one sequence, so they are never reused, even after the lease row was
//! deleted. This holds for the WhatsApp store, [`phone_state`]'s and
//! [`outbox`]'s writes, and
//! [`purge_phone`]. Reads are not fenced, nor are rows that belong to no
//! phone (`nodes`, `reset_requests`, `plugin_state`).

mod backend;
pub mod cluster;
mod error;
mod lease;
mod migrations;
pub mod notify;
pub mod outbox;
pub mod phone_state;
pub mod plugin_state;
pub mod reset_requests;
mod tls;

#[cfg(feature = "sqlite-import")]
pub mod import;
#[cfg(feature = "testing")]
pub mod testing;

pub use backend::{
    CONNECTION_TIMEOUT, IDLE_IN_TRANSACTION_TIMEOUT, PgBackend, PhoneRows, PurgePart,
    TABLES_KEPT_BY_DELETE_PHONE, connect_pool, delete_phone, phone_rows, purge_phone,
    tables_with_phone_column,
};
pub use error::{DatabaseUrlError, PgStoreError};
pub use lease::{Fence, check_fence, claim_lease, release_lease, renew_lease};
pub use migrations::{
    MIGRATIONS, Migration, MigrationReport, latest_version, migrate, migrate_with,
};
pub use tls::{RootCertificates, SslMode};

/// The pool type [`connect_pool`] builds, for callers that hold one.
pub use deadpool_postgres::Pool;
