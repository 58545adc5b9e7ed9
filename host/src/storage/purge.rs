//! Deleting a reset's targets on disk, and reporting what was there: the
//! inventory `before_clear` hooks see, and each target's removal.

use std::fs;
use std::path::{Path, PathBuf};

use super::StorageError;
use super::atomic::sync_dir;
use crate::core::reset_plan::{PlannedRemoval, PurgeTargetKind, RemovedTarget, ResetPlan};
use crate::layout::DataLayout;

/// What one removal found and removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    /// Whether the target was there at all.
    pub existed: bool,
    /// Files removed, relative to the target (the target itself for a file).
    pub files: Vec<PathBuf>,
    pub bytes: u64,
}

/// Removes `target` (a file or a whole directory) if it exists. `root` is the
/// data root: a target outside it is refused, and a symbolic link is removed
/// as a link, never followed, so a purge cannot reach outside the data root.
pub fn remove_target(root: &Path, target: &Path) -> Result<Removed, StorageError> {
    if !target.starts_with(root) || target == root {
        return Err(StorageError::OutsideRoot {
            path: target.to_owned(),
        });
    }
    let meta = match fs::symlink_metadata(target) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Removed::default()),
        Err(e) => return Err(StorageError::io(target, e)),
    };
    let mut removed = Removed {
        existed: true,
        ..Removed::default()
    };
    if meta.is_dir() {
        inventory(target, Path::new(""), &mut removed);
        remove_dir_all_settled(target)?;
    } else {
        removed
            .files
            .push(PathBuf::from(target.file_name().unwrap_or_default()));
        removed.bytes = meta.len();
        fs::remove_file(target).map_err(|e| StorageError::io(target, e))?;
    }
    if let Some(parent) = target.parent() {
        sync_dir(parent)?;
    }
    Ok(removed)
}

/// How many times a directory that gained an entry while it was being
/// emptied is emptied again.
const REMOVE_DIR_ATTEMPTS: u32 = 20;

/// `remove_dir_all`, again when something wrote into the directory while it
/// was being emptied (a writer that had not yet stopped): the purge must not
/// fail, nor leave that file behind.
fn remove_dir_all_settled(target: &Path) -> Result<(), StorageError> {
    let mut attempt = 1;
    loop {
        match fs::remove_dir_all(target) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e)
                if e.kind() == std::io::ErrorKind::DirectoryNotEmpty
                    && attempt < REMOVE_DIR_ATTEMPTS =>
            {
                attempt += 1;
            }
            Err(e) => return Err(StorageError::io(target, e)),
        }
    }
}

/// Lists the files under `dir` for the report. Symbolic links are listed, not followed.
fn inventory(dir: &Path, relative: &Path, removed: &mut Removed) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let rel = relative.join(entry.file_name());
        match entry.file_type() {
            Ok(t) if t.is_dir() => inventory(&entry.path(), &rel, removed),
            Ok(_) => {
                removed.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                removed.files.push(rel);
            }
            Err(_) => removed.files.push(rel),
        }
    }
}

// --- a reset plan on disk ---

fn relative(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| path.to_path_buf())
}

/// What each target holds now (for `before_clear` hooks). Blocking.
pub fn plan_inventory(layout: &DataLayout, plan: &ResetPlan) -> Vec<PlannedRemoval> {
    plan.targets
        .iter()
        .map(|t| {
            let mut files = Vec::new();
            collect(&t.path, &mut files);
            PlannedRemoval {
                kind: t.kind,
                path: relative(layout.root(), &t.path),
                files: files
                    .into_iter()
                    .map(|(p, n)| (relative(layout.root(), &p), n))
                    .collect(),
            }
        })
        .collect()
}

fn collect(path: &Path, out: &mut Vec<(PathBuf, u64)>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            collect(&entry.path(), out);
        }
    } else {
        out.push((path.to_owned(), meta.len()));
    }
}

/// Removes one target. Blocking.
pub fn remove(
    layout: &DataLayout,
    kind: PurgeTargetKind,
    path: &Path,
) -> Result<RemovedTarget, StorageError> {
    let removed = remove_target(layout.root(), path)?;
    Ok(RemovedTarget {
        kind,
        path: relative(layout.root(), path),
        existed: removed.existed,
        files: removed.files.len(),
        bytes: removed.bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Regression (found by the reset race campaign): a file written into the
    // session directory while it was being emptied made the purge fail with
    // "directory not empty", and the reset answer 500.
    #[test]
    fn a_file_written_during_the_purge_does_not_fail_it_nor_survive_it() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("sessions/51987654321");
        for round in 0..50 {
            fs::create_dir_all(&target).unwrap();
            for i in 0..50 {
                fs::write(target.join(format!("old-{i}")), b"x").unwrap();
            }
            let writer = {
                let target = target.clone();
                std::thread::spawn(move || {
                    for i in 0..10 {
                        let _ = fs::write(target.join(format!("late-{i}")), b"y");
                    }
                })
            };
            let result = remove_target(root.path(), &target);
            writer.join().unwrap();
            assert!(result.is_ok(), "round {round}: {result:?}");
            // A write after the directory is gone fails; nothing recreates it.
            assert!(!target.exists(), "round {round}");
        }
    }

    #[test]
    fn removes_a_tree_and_reports_its_files() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("sessions/51987654321");
        fs::create_dir_all(target.join("sub")).unwrap();
        fs::write(target.join("whatsapp.db"), b"1234").unwrap();
        fs::write(target.join("sub/x"), b"12").unwrap();
        let removed = remove_target(root.path(), &target).unwrap();
        assert_eq!(
            removed.files,
            [PathBuf::from("sub/x"), PathBuf::from("whatsapp.db")]
        );
        assert_eq!(removed.bytes, 6);
        assert!(!target.exists());
        assert_eq!(
            remove_target(root.path(), &target).unwrap(),
            Removed::default(),
            "idempotent"
        );
    }

    #[test]
    fn a_symlink_is_removed_as_a_link_and_what_it_points_to_survives() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("precious"), b"keep").unwrap();
        let target = root.path().join("sessions/51987654321");
        fs::create_dir_all(root.path().join("sessions")).unwrap();
        std::os::unix::fs::symlink(outside.path(), &target).unwrap();
        remove_target(root.path(), &target).unwrap();
        assert!(!target.exists());
        assert_eq!(fs::read(outside.path().join("precious")).unwrap(), b"keep");
    }

    #[test]
    fn refuses_targets_outside_the_root() {
        let root = tempfile::tempdir().unwrap();
        assert!(matches!(
            remove_target(root.path(), Path::new("/etc")),
            Err(StorageError::OutsideRoot { .. })
        ));
        assert!(matches!(
            remove_target(root.path(), root.path()),
            Err(StorageError::OutsideRoot { .. })
        ));
    }
}
