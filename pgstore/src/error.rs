//! The errors of the PostgreSQL store, and how they cross into whatsapp-rust's `StoreError`.

use std::path::PathBuf;

use wacore::store::error::StoreError;

use crate::tls::SslMode;

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

    /// The database URL (its TLS settings included) cannot be used.
    #[error(transparent)]
    Url(#[from] DatabaseUrlError),

    #[error("the connection pool could not be built")]
    BuildPool(#[from] deadpool_postgres::BuildError),

    #[error("a database statement failed")]
    Database(#[from] tokio_postgres::Error),
}

/// Why a database URL cannot be used, in one sentence that never holds
/// the URL (it usually carries a password): only the parameter at fault.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseUrlError {
    /// tokio-postgres refused the URL (its message names the option at
    /// fault, never a value of the credentials).
    #[error("the database URL is invalid")]
    Invalid(#[source] tokio_postgres::Error),

    #[error(
        "sslmode={0:?} is not one lila knows: use disable, prefer, require, verify-ca or verify-full"
    )]
    UnknownSslMode(String),

    #[error(
        "sslmode={0} verifies the server's certificate, so the URL needs sslrootcert=/path/to/ca.pem (the CA that signed it)"
    )]
    NoRootCertificate(SslMode),

    #[error(
        "sslrootcert=system trusts every public CA, so it needs sslmode=verify-full (the host name check), not {0}"
    )]
    SystemRootsNeedVerifyFull(SslMode),

    #[error("the CA file {path} (sslrootcert) cannot be read")]
    UnreadableRootCertificate {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("the CA file {0} (sslrootcert) holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NotPem(PathBuf),

    #[error("the CA file {path} (sslrootcert) holds a certificate that cannot be a trust anchor")]
    BadRootCertificate {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },

    #[error("{0} is set, but lila presents no client certificate: remove it from the database URL")]
    ClientCertificate(String),

    #[error("{0} in the database URL is not valid percent-encoded UTF-8")]
    NotUtf8(&'static str),

    #[error("the TLS configuration could not be built")]
    Tls(#[source] rustls::Error),
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
            PgStoreError::Pool(_) | PgStoreError::Url(_) | PgStoreError::BuildPool(_) => {
                StoreError::Connection(Box::new(error))
            }
            PgStoreError::SchemaTooNew { .. } => StoreError::Migration(Box::new(error)),
            other => StoreError::Database(Box::new(other)),
        }
    }
}
