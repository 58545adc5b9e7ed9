//! whatsapp-rust's storage `Backend` on PostgreSQL, for lila's cluster mode.
//!
//! Any node of a cluster must be able to run any phone, so a phone's WhatsApp
//! credentials and Signal state live in PostgreSQL: one [`PgBackend`] per
//! phone, over a pool shared by all phones of a node. Every table that holds a
//! phone's state has a `phone` column leading its primary key (it replaces the
//! per-phone SQLite file). The schema is versioned ([`migrate`]).
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
//! from one sequence, so they are never reused. [`delete_phone`] removes the
//! lease row with the phone's state, so after a reset no write of the phone
//! succeeds until the phone is claimed anew. Reads are not fenced.

mod backend;
pub mod cluster;
mod error;
mod lease;
mod migrations;
pub mod notify;
pub mod phone_state;
pub mod plugin_state;
pub mod reset_requests;

#[cfg(feature = "sqlite-import")]
pub mod import;
#[cfg(feature = "testing")]
pub mod testing;

pub use backend::{
    CONNECTION_TIMEOUT, IDLE_IN_TRANSACTION_TIMEOUT, PgBackend, PhoneRows, PurgePart,
    TABLES_KEPT_BY_DELETE_PHONE, connect_pool, delete_phone, phone_rows, purge_phone,
    tables_with_phone_column,
};
pub use error::PgStoreError;
pub use lease::{Fence, check_fence, claim_lease, release_lease, renew_lease};
pub use migrations::{
    MIGRATIONS, Migration, MigrationReport, latest_version, migrate, migrate_with,
};

/// The pool type [`connect_pool`] builds, for callers that hold one.
pub use deadpool_postgres::Pool;
