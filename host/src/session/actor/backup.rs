//! Backups: periodic consistent snapshots of the store, and restoring one before a start.

use std::path::PathBuf;

use tokio::time::Instant;
use tracing::{info, warn};

use super::SessionActor;
use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::storage::{StorageError, backups};

impl SessionActor {
    /// Whether this session's store is snapshotted: a SQLite file with a
    /// backup interval set (PostgreSQL keeps its own copies).
    pub(super) fn takes_backups(&self) -> bool {
        self.ctx.store.takes_snapshots() && !self.ctx.config.backups.interval.is_zero()
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
