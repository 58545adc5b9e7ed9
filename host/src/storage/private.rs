//! The data root holds credentials (WhatsApp's keys, their backups, the JWT
//! secret) and tenants' data: everything lila creates there is private to
//! the user it runs as, whatever the umask. Files are created 0600 and
//! directories 0700 (a umask can only take bits away, so never more), and
//! `serve` also sets its umask to 0077 (`main.rs`), for the files a library
//! creates by itself (SQLite's database, its WAL and the snapshots' copies).
//!
//! Every directory and new file under the data root goes through here.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::path::Path;

use super::StorageError;
use crate::layout::DataLayout;

/// The mode of every directory lila creates.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file lila creates.
pub const FILE_MODE: u32 = 0o600;

/// `fs::create_dir_all`, each directory it creates 0700.
pub fn create_dir_all(dir: &Path) -> Result<(), StorageError> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder.create(dir).map_err(|e| StorageError::io(dir, e))
}

/// Creates `path`, which must not exist, 0600 from its first byte (never
/// created wider and narrowed after).
pub fn create_new(path: &Path) -> Result<File, StorageError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    options.open(path).map_err(|e| StorageError::io(path, e))
}

/// Narrows an existing directory to 0700 (one that an older version, or an
/// operator, created wider). A directory that is absent is left absent; one
/// whose mode cannot be set is an error, not a warning.
pub fn narrow_dir(dir: &Path) -> Result<(), StorageError> {
    let metadata = match fs::symlink_metadata(dir) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StorageError::io(dir, e)),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if metadata.is_dir() && metadata.permissions().mode() & 0o777 != DIR_MODE {
            fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
                .map_err(|e| StorageError::io(dir, e))?;
        }
    }
    #[cfg(not(unix))]
    let _ = metadata;
    Ok(())
}

/// Narrows the data root and the folders under it that hold credentials or
/// tenants' data to 0700, for a data root an older version or an operator
/// created wider. `serve` calls it before it reads or writes anything there.
pub fn narrow_data_root(layout: &DataLayout) -> Result<(), StorageError> {
    let root = layout.root();
    for dir in [
        root.to_owned(),
        layout.sessions_dir(),
        layout.backups_root(),
        layout.host_dir(),
        root.join("whatsapp"),
        root.join("plugins"),
    ] {
        narrow_dir(&dir)?;
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn directories_and_files_are_created_private() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        for dir in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&root.path().join(dir)), 0o700, "{dir}");
        }
        let file = deep.join("secret");
        drop(create_new(&file).unwrap());
        assert_eq!(mode(&file), 0o600);
        assert!(create_new(&file).is_err(), "an existing file is not reused");
    }

    #[test]
    fn a_wide_directory_is_narrowed_and_an_absent_one_left_absent() {
        let root = tempfile::tempdir().unwrap();
        let wide = root.path().join("wide");
        fs::create_dir(&wide).unwrap();
        fs::set_permissions(&wide, fs::Permissions::from_mode(0o755)).unwrap();
        narrow_dir(&wide).unwrap();
        assert_eq!(mode(&wide), 0o700);
        let absent = root.path().join("absent");
        narrow_dir(&absent).unwrap();
        assert!(!absent.exists());
    }
}
