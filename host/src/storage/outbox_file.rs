//! `whatsapp/outbox/{phone}.json`: the durable queue, rewritten atomically on every change.
//!
//! Format (version 1):
//! `{"version":1,"messages":[{"id":"3EB0…","to":"…@s.whatsapp.net","text":"…","createdAtMs":1,"attempts":0}]}`
//! An empty queue is stored as no file at all.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::StorageError;
use super::atomic::write_json_or_remove;
use super::versioned::{Versioned, parse, read_if_present};
use crate::core::outbox::{Outbox, OutboxMessage, Recipient};
use crate::layout::DataLayout;
use crate::phone::Phone;

const VERSION: u32 = 1;
const WHAT: &str = "outbox";

#[derive(Serialize, Deserialize)]
struct OutboxFile {
    version: u32,
    messages: Vec<MessageFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageFile {
    id: String,
    to: String,
    text: String,
    created_at_ms: u64,
    attempts: u32,
}

impl Versioned for OutboxFile {
    fn version(&self) -> u32 {
        self.version
    }
}

pub fn load(layout: &DataLayout, phone: &Phone) -> Result<Outbox, StorageError> {
    let path = layout.outbox_file(phone);
    match read_if_present(&path)? {
        Some(bytes) => decode(&path, &bytes),
        None => Ok(Outbox::default()),
    }
}

/// The outbox stored in `bytes` (read from `path`, named in errors).
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Outbox, StorageError> {
    let file: OutboxFile = parse(path, WHAT, bytes, &[VERSION])?;
    let mut messages = Vec::with_capacity(file.messages.len());
    for m in file.messages {
        let to = Recipient::parse(&m.to).map_err(|e| StorageError::corrupt_from(path, WHAT, e))?;
        messages.push(OutboxMessage {
            id: m.id,
            to,
            text: m.text,
            created_at_ms: m.created_at_ms,
            attempts: m.attempts,
        });
    }
    Ok(Outbox::from_messages(messages))
}

/// The file `save` writes for `outbox` (an empty outbox is stored as no file).
fn encode(outbox: &Outbox) -> Option<OutboxFile> {
    let file = OutboxFile {
        version: VERSION,
        messages: outbox
            .iter()
            .map(|m| MessageFile {
                id: m.id.clone(),
                to: m.to.as_jid().to_owned(),
                text: m.text.clone(),
                created_at_ms: m.created_at_ms,
                attempts: m.attempts,
            })
            .collect(),
    };
    (!outbox.is_empty()).then_some(file)
}

/// The bytes `save` writes for `outbox`, `None` when it writes no file.
pub fn encode_bytes(outbox: &Outbox) -> Result<Option<Vec<u8>>, StorageError> {
    encode(outbox)
        .map(|file| serde_json::to_vec(&file))
        .transpose()
        .map_err(|e| StorageError::corrupt_from(Path::new("outbox"), WHAT, e))
}

pub fn save(layout: &DataLayout, phone: &Phone, outbox: &Outbox) -> Result<(), StorageError> {
    write_json_or_remove(&layout.outbox_file(phone), encode(outbox).as_ref(), WHAT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_round_trips_in_order_and_an_empty_queue_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let layout = DataLayout::new(dir.path());
        let phone = Phone::parse("51987654321").unwrap();
        let mut outbox = Outbox::default();
        for (i, text) in ["uno", "dos", "tres"].iter().enumerate() {
            let to = Recipient::parse("51911111111").unwrap();
            outbox
                .enqueue(
                    OutboxMessage::new(format!("id{i}"), to, (*text).into(), i as u64).unwrap(),
                )
                .unwrap();
        }
        save(&layout, &phone, &outbox).unwrap();
        assert_eq!(load(&layout, &phone).unwrap(), outbox);
        save(&layout, &phone, &Outbox::default()).unwrap();
        assert!(!layout.outbox_file(&phone).exists());
        assert!(load(&layout, &phone).unwrap().is_empty());
    }
}
