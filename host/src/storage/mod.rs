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
pub mod private;
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
        /// The decoder's (or encoder's) own error, when there is one; its
        /// sentence is `reason`.
        #[source]
        source: Option<BoxedError>,
    },
    #[error("SQLite error on {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: BoxedError,
    },
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

    /// A file that breaks a rule of its format, in a sentence of our own.
    pub fn corrupt(path: &Path, what: &'static str, reason: impl Into<String>) -> StorageError {
        StorageError::Corrupt {
            path: path.to_owned(),
            what,
            reason: reason.into(),
            source: None,
        }
    }

    /// A file its decoder (or encoder) refused, with the decoder's error as the source.
    pub fn corrupt_from(
        path: &Path,
        what: &'static str,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> StorageError {
        StorageError::Corrupt {
            path: path.to_owned(),
            what,
            reason: error.to_string(),
            source: Some(Box::new(error)),
        }
    }
}

/// The error of a library whose error types vary (SQLite's connection and
/// query errors, a decoder's).
pub type BoxedError = Box<dyn std::error::Error + Send + Sync>;
