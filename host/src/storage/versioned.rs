//! What every versioned JSON file of the data root shares: it may be absent,
//! and it is parsed with its `version` checked, a damaged or foreign file
//! being a [`StorageError::Corrupt`] that names the file.
//!
//! Each format module splits its `load` into a read and a pure `decode` of
//! bytes, so that the fuzz targets (`fuzz/`) reach the same code as the host.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::StorageError;

/// A file format with a `version` field.
pub trait Versioned: DeserializeOwned {
    fn version(&self) -> u32;
}

/// The bytes of `path`, or `None` when there is no such file.
pub fn read_if_present(path: &Path) -> Result<Option<Vec<u8>>, StorageError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// Parses `bytes` as a `T` whose version is one of `accepted`.
pub fn parse<T: Versioned>(
    path: &Path,
    what: &'static str,
    bytes: &[u8],
    accepted: &[u32],
) -> Result<T, StorageError> {
    let file: T =
        serde_json::from_slice(bytes).map_err(|e| StorageError::corrupt_from(path, what, e))?;
    if !accepted.contains(&file.version()) {
        return Err(StorageError::corrupt(
            path,
            what,
            format!("unknown version {}", file.version()),
        ));
    }
    Ok(file)
}
