//! `lila/phones/{phone}.json`: the persisted [`PhoneRecord`], one file per phone.
//!
//! Format (version 1):
//! `{"version":1,"owner":"acme"|null,"desired":"running","purge":{"startedAtMs":1}|null,"updatedAtMs":1}`

use std::collections::BTreeSet;
use std::fs;

use serde::{Deserialize, Serialize};

use super::StorageError;
use super::atomic::write_atomic;
use crate::core::record::{DesiredState, PhoneRecord, PurgeJournal};
use crate::core::tenant::TenantId;
use crate::layout::DataLayout;
use crate::phone::Phone;

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordFile {
    version: u32,
    owner: Option<String>,
    desired: String,
    purge: Option<PurgeFile>,
    updated_at_ms: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PurgeFile {
    started_at_ms: u64,
}

pub fn load(layout: &DataLayout, phone: &Phone) -> Result<Option<PhoneRecord>, StorageError> {
    let path = layout.phone_record_file(phone);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io(&path, e)),
    };
    let corrupt = |reason: String| StorageError::Corrupt {
        path: path.clone(),
        what: "phone record",
        reason,
    };
    let file: RecordFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if file.version != VERSION {
        return Err(corrupt(format!("unknown version {}", file.version)));
    }
    let owner = match file.owner {
        Some(owner) => Some(TenantId::parse(&owner).map_err(|e| corrupt(e.to_string()))?),
        None => None,
    };
    let desired = DesiredState::parse(&file.desired)
        .ok_or_else(|| corrupt(format!("unknown desired state {:?}", file.desired)))?;
    Ok(Some(PhoneRecord {
        owner,
        desired,
        purge: file.purge.map(|p| PurgeJournal {
            started_at_ms: p.started_at_ms,
        }),
        updated_at_ms: file.updated_at_ms,
    }))
}

pub fn save(layout: &DataLayout, phone: &Phone, record: &PhoneRecord) -> Result<(), StorageError> {
    let file = RecordFile {
        version: VERSION,
        owner: record.owner.as_ref().map(|o| o.as_str().to_owned()),
        desired: record.desired.as_str().to_owned(),
        purge: record.purge.map(|p| PurgeFile {
            started_at_ms: p.started_at_ms,
        }),
        updated_at_ms: record.updated_at_ms,
    };
    let bytes = serde_json::to_vec_pretty(&file).map_err(|e| StorageError::Corrupt {
        path: layout.phone_record_file(phone),
        what: "phone record",
        reason: e.to_string(),
    })?;
    write_atomic(&layout.phone_record_file(phone), &bytes)
}

/// Every phone the data root knows of: those with a record, a session
/// directory, backups or an outbox. Names that are not valid phones are
/// skipped (they can never have been written by the host).
pub fn known_phones(layout: &DataLayout) -> BTreeSet<Phone> {
    let mut phones = BTreeSet::new();
    let mut scan = |dir: std::path::PathBuf, suffix: &str| {
        let Ok(entries) = fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(stem) = name.strip_suffix(suffix) else {
                continue;
            };
            if let Ok(phone) = Phone::parse(stem) {
                phones.insert(phone);
            }
        }
    };
    scan(layout.phone_records_dir(), ".json");
    scan(layout.sessions_dir(), "");
    scan(layout.backups_root(), "");
    scan(layout.outbox_dir(), ".json");
    phones
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_a_damaged_one_is_an_error_not_a_default() {
        let dir = tempfile::tempdir().unwrap();
        let layout = DataLayout::new(dir.path());
        let phone = Phone::parse("51987654321").unwrap();
        assert_eq!(load(&layout, &phone).unwrap(), None);
        let mut record = PhoneRecord::new(
            Some(TenantId::parse("acme").unwrap()),
            DesiredState::Running,
            5,
        );
        record.purge = Some(PurgeJournal { started_at_ms: 7 });
        save(&layout, &phone, &record).unwrap();
        assert_eq!(load(&layout, &phone).unwrap(), Some(record));
        fs::write(layout.phone_record_file(&phone), b"{\"version\":1,").unwrap();
        assert!(matches!(
            load(&layout, &phone),
            Err(StorageError::Corrupt { .. })
        ));
    }
}
