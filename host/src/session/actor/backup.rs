//! Backups: periodic consistent snapshots of the store, and restoring one before a start.

use std::path::PathBuf;

use tokio::time::Instant;
use tracing::{info, warn};

use super::SessionActor;
use crate::core::recovery::{StoreHealth, should_restore};
use crate::metrics::Metrics;
use crate::phone::Phone;
use crate::storage::phone_store::PhoneStore;
use crate::storage::{self, StorageError, backups, now_ms};

impl SessionActor {
    /// Whether this session's store is snapshotted: a SQLite file with a
    /// backup interval set (PostgreSQL keeps its own copies).
    pub(super) fn takes_backups(&self) -> bool {
        matches!(self.ctx.store, PhoneStore::Files(_))
            && !self.ctx.config.backups.interval.is_zero()
    }

    pub(super) fn begin_backup(&mut self) {
        let interval = self.ctx.config.backups.interval;
        if !self.takes_backups() || !self.state.ready() {
            return;
        }
        self.next_backup_at = Some(Instant::now() + interval);
        if self.backup_task.is_some() {
            return;
        }
        let store = self.ctx.layout.store_file(&self.phone);
        let dir = self.ctx.layout.backup_dir(&self.phone);
        let retention = self.ctx.config.backups.retention;
        self.backup_task = Some(tokio::task::spawn_blocking(move || {
            backups::snapshot(&store, &dir, now_ms(), retention)
        }));
    }

    pub(super) fn on_backup(
        &mut self,
        result: Result<Result<PathBuf, StorageError>, tokio::task::JoinError>,
    ) {
        match result {
            Ok(Ok(path)) => {
                Metrics::inc(&self.ctx.metrics.backups_taken);
                info!(backup = %path.display(), "store backed up");
            }
            Ok(Err(e)) => {
                Metrics::inc(&self.ctx.metrics.backup_failures);
                warn!(error = %e, "backup failed");
            }
            Err(e) => {
                Metrics::inc(&self.ctx.metrics.backup_failures);
                warn!(error = %e, "backup task failed");
            }
        }
    }
}

/// Makes the store ready for a client: its directory exists, and a missing
/// or damaged store is replaced by the newest good backup. Blocking.
pub(super) fn prepare_store(
    layout: &crate::layout::DataLayout,
    phone: &Phone,
) -> Result<Option<PathBuf>, StorageError> {
    let dir = layout.session_dir(phone);
    std::fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
    storage::atomic::remove_stale_temporaries(&dir);
    let store = layout.store_file(phone);
    let health = backups::health(&store);
    let backup_dir = layout.backup_dir(phone);
    if should_restore(health, !backups::list(&backup_dir).is_empty()) {
        return backups::restore_newest_good(&backup_dir, &store);
    }
    if health == StoreHealth::Corrupt {
        warn!("the store is damaged and there is no good backup; the client will report the error");
    }
    Ok(None)
}
