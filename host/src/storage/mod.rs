//! The imperative shell's file I/O: every read and write of the data root.
//!
//! Each on-disk format here is a stability boundary and carries a `version`
//! field; the core never sees these serde types, only its own.

pub mod atomic;
pub mod backups;
pub mod contacts;
pub mod message_status_file;
pub mod outbox_file;
pub mod phone_records;
pub mod phone_store;
pub mod postgres_store;
pub mod purge;
pub mod versioned;

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid {what} file: {reason}")]
    Corrupt {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("SQLite error on {path}: {reason}")]
    Sqlite { path: PathBuf, reason: String },
    #[error("refusing to touch {path}: it is outside the data root")]
    OutsideRoot { path: PathBuf },
    #[error("database error: {source}")]
    Database {
        #[source]
        source: lila_pgstore::PgStoreError,
    },
    /// A blocking file task (on the blocking pool) panicked or was cancelled.
    #[error("a storage task did not finish: {source}")]
    Task {
        #[source]
        source: tokio::task::JoinError,
    },
    /// Cluster mode: this node does not (or no longer) hold the phone's
    /// lease, so it may not write the phone's state; nothing was written.
    #[error("this node no longer holds phone {phone}; another node runs it now")]
    LeaseLost { phone: String },
}

impl StorageError {
    pub fn io(path: &Path, source: std::io::Error) -> StorageError {
        StorageError::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub fn corrupt(path: &Path, what: &'static str, reason: impl ToString) -> StorageError {
        StorageError::Corrupt {
            path: path.to_owned(),
            what,
            reason: reason.to_string(),
        }
    }
}
