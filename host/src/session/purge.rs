//! Carrying out a reset plan on disk: inventory before, removal, summary after.

use std::path::{Path, PathBuf};

use crate::core::reset_plan::{PurgeTargetKind, ResetPlan};
use crate::hooks::{PlannedRemoval, RemovedTarget};
use crate::layout::DataLayout;
use crate::storage::StorageError;
use crate::storage::purge::remove_target;

/// One removed target, as responses report it.
pub type RemovedSummary = RemovedTarget;

fn relative(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| path.to_path_buf())
}

/// What each target holds now (for `before_clear` hooks). Blocking.
pub fn inventory(layout: &DataLayout, plan: &ResetPlan) -> Vec<PlannedRemoval> {
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
