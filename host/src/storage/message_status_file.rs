//! `whatsapp/status/{phone}.json`: the statuses of the messages a phone
//! accepted, rewritten atomically on every change.
//!
//! Format (version 1):
//! `{"version":1,"statuses":[{"id":"3EB0…","to":"…@s.whatsapp.net","status":"read","error":null,
//! "queuedAtMs":1,"sentAtMs":2,"deliveredAtMs":3,"readAtMs":4,"failedAtMs":null}]}`
//! No statuses are stored as no file at all. A reset removes the file.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::StorageError;
use super::atomic::write_json_or_remove;
use super::versioned::{Versioned, parse, read_if_present};
use crate::core::message_status::{DeliveryState, MessageStatus, MessageStatuses};
use crate::layout::DataLayout;
use crate::phone::Phone;

const VERSION: u32 = 1;
const WHAT: &str = "message statuses";

#[derive(Serialize, Deserialize)]
struct StatusFile {
    version: u32,
    statuses: Vec<StatusEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusEntry {
    id: String,
    to: String,
    status: String,
    error: Option<String>,
    queued_at_ms: u64,
    sent_at_ms: Option<u64>,
    delivered_at_ms: Option<u64>,
    read_at_ms: Option<u64>,
    failed_at_ms: Option<u64>,
}

impl Versioned for StatusFile {
    fn version(&self) -> u32 {
        self.version
    }
}

pub fn load(layout: &DataLayout, phone: &Phone) -> Result<MessageStatuses, StorageError> {
    let path = layout.message_status_file(phone);
    match read_if_present(&path)? {
        Some(bytes) => decode(&path, &bytes),
        None => Ok(MessageStatuses::default()),
    }
}

/// The statuses stored in `bytes` (read from `path`, named in errors).
pub fn decode(path: &Path, bytes: &[u8]) -> Result<MessageStatuses, StorageError> {
    let file: StatusFile = parse(path, WHAT, bytes, &[VERSION])?;
    let mut entries = Vec::with_capacity(file.statuses.len());
    for e in file.statuses {
        let state = DeliveryState::parse(&e.status).ok_or_else(|| {
            StorageError::corrupt(path, WHAT, format!("unknown status {:?}", e.status))
        })?;
        entries.push(MessageStatus {
            id: e.id,
            to: e.to,
            state,
            error: e.error,
            queued_at_ms: e.queued_at_ms,
            sent_at_ms: e.sent_at_ms,
            delivered_at_ms: e.delivered_at_ms,
            read_at_ms: e.read_at_ms,
            failed_at_ms: e.failed_at_ms,
        });
    }
    Ok(MessageStatuses::from_entries(entries))
}

/// The file `save` writes (no statuses are stored as no file).
fn encode(statuses: &MessageStatuses) -> Option<StatusFile> {
    let file = StatusFile {
        version: VERSION,
        statuses: statuses
            .iter()
            .map(|s| StatusEntry {
                id: s.id.clone(),
                to: s.to.clone(),
                status: s.state.as_str().to_owned(),
                error: s.error.clone(),
                queued_at_ms: s.queued_at_ms,
                sent_at_ms: s.sent_at_ms,
                delivered_at_ms: s.delivered_at_ms,
                read_at_ms: s.read_at_ms,
                failed_at_ms: s.failed_at_ms,
            })
            .collect(),
    };
    (!statuses.is_empty()).then_some(file)
}

/// The bytes `save` writes for `statuses`, `None` when it writes no file.
pub fn encode_bytes(statuses: &MessageStatuses) -> Result<Option<Vec<u8>>, StorageError> {
    encode(statuses)
        .map(|file| serde_json::to_vec(&file))
        .transpose()
        .map_err(|e| StorageError::corrupt_from(Path::new("status"), WHAT, e))
}

pub fn save(
    layout: &DataLayout,
    phone: &Phone,
    statuses: &MessageStatuses,
) -> Result<(), StorageError> {
    write_json_or_remove(
        &layout.message_status_file(phone),
        encode(statuses).as_ref(),
        WHAT,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::message_status::ReceiptKind;

    #[test]
    fn statuses_round_trip_and_an_unknown_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let layout = DataLayout::new(dir.path());
        let phone = Phone::parse("51987654321").unwrap();
        let mut statuses = MessageStatuses::default();
        statuses.queued("a", "51911111111@s.whatsapp.net", 1);
        statuses.queued("b", "51922222222@s.whatsapp.net", 1);
        statuses.sent("a", 2);
        statuses.receipt(&["a".into()], ReceiptKind::Read, 3);
        statuses.failed("b", "not on WhatsApp", 2);
        save(&layout, &phone, &statuses).unwrap();
        assert_eq!(load(&layout, &phone).unwrap(), statuses);

        let path = layout.message_status_file(&phone);
        std::fs::write(&path, br#"{"version":2,"statuses":[]}"#).unwrap();
        assert!(matches!(
            load(&layout, &phone),
            Err(StorageError::Corrupt { .. })
        ));
        save(&layout, &phone, &MessageStatuses::default()).unwrap();
        assert!(!path.exists());
    }
}
