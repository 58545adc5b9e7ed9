//! The errors of the PostgreSQL store, and how they cross into whatsapp-rust's `StoreError`.

use wacore::store::error::StoreError;

/// What can go wrong in the PostgreSQL store.
#[derive(Debug, thiserror::Error)]
pub enum PgStoreError {
    /// The phone's lease row no longer names this node and epoch (or has
    /// expired): another node owns the phone now, or a reset removed it. The
    /// transaction was rolled back before writing anything; the caller must
    /// stop the phone's client.
    #[error(
        "the lease of phone {phone} was lost: node {node_id} at epoch {epoch} may no longer write its state"
    )]
    LeaseLost {
        phone: String,
        node_id: String,
        epoch: i64,
    },

    /// The database was migrated by a newer lila than this one.
    #[error(
        "the database schema is at version {found}, newer than the {known} this lila knows: upgrade lila"
    )]
    SchemaTooNew { found: i32, known: i32 },

    /// A value does not fit its column (e.g. an id over the column's range).
    #[error("a value does not fit the database: {0}")]
    OutOfRange(String),

    /// A stored value could not be read back.
    #[error("a stored value is invalid: {0}")]
    Invalid(String),

    /// The caller's own check refused the write (its sentence, as is).
    #[error("{0}")]
    Refused(String),

    #[error("no database connection could be had from the pool")]
    Pool(#[from] deadpool_postgres::PoolError),

    #[error("the database URL is invalid")]
    Config(#[source] tokio_postgres::Error),

    #[error("the connection pool could not be built")]
    BuildPool(#[from] deadpool_postgres::BuildError),

    #[error("a database statement failed")]
    Database(#[from] tokio_postgres::Error),
}

impl PgStoreError {
    /// Whether `error`, as whatsapp-rust reports it, comes from a lost lease:
    /// the signal for the session to stop its client.
    pub fn is_lease_lost(error: &StoreError) -> bool {
        let mut layer: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(current) = layer {
            if let Some(PgStoreError::LeaseLost { .. }) = current.downcast_ref::<PgStoreError>() {
                return true;
            }
            layer = current.source();
        }
        false
    }
}

impl From<PgStoreError> for StoreError {
    fn from(error: PgStoreError) -> Self {
        match error {
            PgStoreError::Pool(_) | PgStoreError::Config(_) | PgStoreError::BuildPool(_) => {
                StoreError::Connection(Box::new(error))
            }
            PgStoreError::SchemaTooNew { .. } => StoreError::Migration(Box::new(error)),
            other => StoreError::Database(Box::new(other)),
        }
    }
}
