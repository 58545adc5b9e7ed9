//! Consistent snapshots of a session's SQLite store, and restoring them.
//!
//! The store is a WAL-mode database that the client writes while it runs, so
//! copying its files would capture a torn state. A snapshot is taken with
//! `VACUUM INTO`, which reads one consistent transaction and writes a
//! standalone database (no `-wal`/`-shm` companions). Snapshots are written
//! under a temporary name and renamed, so a half-written one is never listed.
//! All functions here block; callers run them on a blocking thread.

use std::fs;
use std::path::{Path, PathBuf};

use diesel::{Connection, RunQueryDsl, SqliteConnection};

use super::StorageError;
use super::atomic::sync_dir;
use crate::core::recovery::{StoreHealth, should_restore};
use crate::layout::DataLayout;
use crate::phone::Phone;

const PREFIX: &str = "backup-";
const SUFFIX: &str = ".db";

fn sqlite_err(path: &Path, e: impl Into<super::BoxedError>) -> StorageError {
    StorageError::Sqlite {
        path: path.to_owned(),
        source: e.into(),
    }
}

/// Takes a snapshot of `store` into `backup_dir` named by `now_ms`, then keeps
/// only the newest `retention` snapshots. Returns the new snapshot's path.
pub fn snapshot(
    store: &Path,
    backup_dir: &Path,
    now_ms: u64,
    retention: usize,
) -> Result<PathBuf, StorageError> {
    if !store.is_file() {
        return Err(StorageError::io(store, std::io::ErrorKind::NotFound.into()));
    }
    super::private::create_dir_all(backup_dir)?;
    // Only one snapshot of a phone runs at a time (its actor sees to it), so
    // any temporary here is a leftover of a crash.
    super::atomic::remove_stale_temporaries(backup_dir);
    let final_path = backup_dir.join(format!("{PREFIX}{now_ms:013}{SUFFIX}"));
    let tmp = backup_dir.join(format!(".{PREFIX}{now_ms:013}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        // VACUUM INTO fills an empty file it is given, so the snapshot of
        // the credentials is 0600 from its creation, whatever the umask.
        drop(super::private::create_new(&tmp)?);
        let mut conn = SqliteConnection::establish(&store.to_string_lossy())
            .map_err(|e| sqlite_err(store, e))?;
        diesel::sql_query(format!(
            "VACUUM INTO {}",
            sql_string(&tmp.to_string_lossy())
        ))
        .execute(&mut conn)
        .map_err(|e| sqlite_err(store, e))?;
        drop(conn);
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| StorageError::io(&tmp, e))?;
        fs::rename(&tmp, &final_path).map_err(|e| StorageError::io(&final_path, e))?;
        sync_dir(backup_dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    prune(backup_dir, retention)?;
    Ok(final_path)
}

/// A SQL string literal: single quotes doubled.
fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Snapshots in `backup_dir`, newest first.
pub fn list(backup_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(backup_dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(PREFIX) && name.ends_with(SUFFIX)
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found.reverse();
    found
}

fn prune(backup_dir: &Path, retention: usize) -> Result<(), StorageError> {
    for old in list(backup_dir).into_iter().skip(retention.max(1)) {
        fs::remove_file(&old).map_err(|e| StorageError::io(&old, e))?;
    }
    sync_dir(backup_dir)
}

/// Whether the database at `path` exists and passes SQLite's `quick_check`.
pub fn health(path: &Path) -> StoreHealth {
    if !path.is_file() {
        return StoreHealth::Missing;
    }
    // A zero-length file is what SQLite leaves after a create that never got
    // its first page: there is nothing to resume from.
    if fs::metadata(path).map(|m| m.len() == 0).unwrap_or(true) {
        return StoreHealth::Missing;
    }
    if quick_check(path) {
        StoreHealth::Healthy
    } else {
        StoreHealth::Corrupt
    }
}

fn quick_check(path: &Path) -> bool {
    #[derive(diesel::QueryableByName)]
    struct Check {
        #[diesel(sql_type = diesel::sql_types::Text)]
        quick_check: String,
    }
    let Ok(mut conn) = SqliteConnection::establish(&path.to_string_lossy()) else {
        return false;
    };
    match diesel::sql_query("PRAGMA quick_check").load::<Check>(&mut conn) {
        Ok(rows) => rows.len() == 1 && rows[0].quick_check == "ok",
        Err(_) => false,
    }
}

/// Replaces the store at `store` with the newest snapshot in `backup_dir`
/// that passes `quick_check`. Returns the snapshot used, or `None` if no good
/// snapshot exists (the store is then left as it was).
pub fn restore_newest_good(
    backup_dir: &Path,
    store: &Path,
) -> Result<Option<PathBuf>, StorageError> {
    let Some(dir) = store.parent() else {
        return Ok(None);
    };
    for candidate in list(backup_dir) {
        if health(&candidate) != StoreHealth::Healthy {
            continue;
        }
        super::private::create_dir_all(dir)?;
        let tmp = dir.join(".restore.tmp");
        fs::copy(&candidate, &tmp).map_err(|e| StorageError::io(&tmp, e))?;
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| StorageError::io(&tmp, e))?;
        // The old WAL belongs to the damaged database; replaying it over the
        // snapshot would corrupt it again.
        for companion in ["-wal", "-shm", "-journal"] {
            let path = PathBuf::from(format!("{}{companion}", store.display()));
            let _ = fs::remove_file(path);
        }
        fs::rename(&tmp, store).map_err(|e| StorageError::io(store, e))?;
        sync_dir(dir)?;
        return Ok(Some(candidate));
    }
    Ok(None)
}

/// Makes the store ready for a client: its directory exists, and a missing
/// or damaged store is replaced by the newest good backup. Blocking.
pub fn prepare_store(layout: &DataLayout, phone: &Phone) -> Result<Option<PathBuf>, StorageError> {
    let dir = layout.session_dir(phone);
    super::private::create_dir_all(&dir)?;
    super::atomic::remove_stale_temporaries(&dir);
    let store = layout.store_file(phone);
    let health = health(&store);
    let backup_dir = layout.backup_dir(phone);
    if should_restore(health, !list(&backup_dir).is_empty()) {
        return restore_newest_good(&backup_dir, &store);
    }
    if health == StoreHealth::Corrupt {
        tracing::warn!(
            "the store is damaged and there is no good backup; the client will report the error"
        );
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_db(path: &Path, rows: i64) {
        let mut conn = SqliteConnection::establish(&path.to_string_lossy()).unwrap();
        diesel::sql_query("PRAGMA journal_mode = WAL")
            .execute(&mut conn)
            .ok();
        diesel::sql_query("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
            .execute(&mut conn)
            .unwrap();
        for i in 0..rows {
            diesel::sql_query(format!("INSERT INTO t VALUES ({i})"))
                .execute(&mut conn)
                .unwrap();
        }
    }

    #[test]
    fn snapshots_are_consistent_pruned_and_restorable() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s/whatsapp.db");
        fs::create_dir_all(store.parent().unwrap()).unwrap();
        make_db(&store, 3);
        let backups = dir.path().join("b");
        for t in 1..=4 {
            snapshot(&store, &backups, t, 2).unwrap();
        }
        let kept = list(&backups);
        assert_eq!(kept.len(), 2);
        assert!(kept[0].ends_with("backup-0000000000004.db"));
        assert_eq!(health(&kept[0]), StoreHealth::Healthy);

        // Damage the live store: restore brings back the newest good snapshot.
        fs::write(
            &store,
            b"this is not a database at all, not even close to one....",
        )
        .unwrap();
        assert_eq!(health(&store), StoreHealth::Corrupt);
        let used = restore_newest_good(&backups, &store).unwrap();
        assert_eq!(used.as_deref(), Some(kept[0].as_path()));
        assert_eq!(health(&store), StoreHealth::Healthy);
    }

    #[test]
    fn a_damaged_snapshot_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let backups = dir.path().join("b");
        fs::create_dir_all(&backups).unwrap();
        let good = dir.path().join("good.db");
        make_db(&good, 1);
        snapshot(&good, &backups, 1, 5).unwrap();
        fs::write(
            backups.join("backup-0000000000002.db"),
            b"garbage garbage garbage garbage garbage",
        )
        .unwrap();
        let store = dir.path().join("live/whatsapp.db");
        let used = restore_newest_good(&backups, &store).unwrap();
        assert!(used.unwrap().ends_with("backup-0000000000001.db"));
    }
}
