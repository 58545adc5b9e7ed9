//! Atomic file replacement: write a temporary file, fsync it, rename it over
//! the target, fsync the directory. A crash leaves either the old or the new
//! content, never a torn file.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::StorageError;

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let dir = path
        .parent()
        .ok_or_else(|| StorageError::io(path, std::io::ErrorKind::InvalidInput.into()))?;
    super::private::create_dir_all(dir)?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    // The temporary name is unique per process and write, and starts with a
    // dot so that nothing listing the directory mistakes it for a real entry.
    let tmp = dir.join(format!(
        ".{file_name}.tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = super::private::create_new(&tmp)?;
        file.write_all(bytes)
            .map_err(|e| StorageError::io(&tmp, e))?;
        file.sync_all().map_err(|e| StorageError::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| StorageError::io(path, e))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Stores `value` as JSON at `path` atomically, or, when there is nothing to
/// keep (`None`), removes the file durably: "empty" is stored as no file.
pub fn write_json_or_remove<T: serde::Serialize>(
    path: &Path,
    value: Option<&T>,
    what: &'static str,
) -> Result<(), StorageError> {
    let Some(value) = value else {
        return match fs::remove_file(path) {
            Ok(()) => path.parent().map_or(Ok(()), sync_dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io(path, e)),
        };
    };
    let bytes = serde_json::to_vec(value).map_err(|e| StorageError::corrupt_from(path, what, e))?;
    write_atomic(path, &bytes)
}

/// Makes a rename or unlink in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}

/// Removes leftovers of writes that a crash interrupted (`.name.tmp-*`).
pub fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(".tmp") {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/file.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["file.json"]);
    }

    #[test]
    fn stale_temporaries_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".x.json.tmp-1-2"), b"torn").unwrap();
        fs::write(dir.path().join("x.json"), b"whole").unwrap();
        remove_stale_temporaries(dir.path());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["x.json"]);
    }
}
