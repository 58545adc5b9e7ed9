//! `sessions/{phone}/contacts.json`: the contacts the host collected from the
//! client's events (whatsapp-rust has no "list contacts" call). It lives in
//! the session's own directory, so a reset removes it with the credentials.
//!
//! Format (version 1): `{"version":1,"contacts":[{"id":"…@s.whatsapp.net","name":"…"}]}`

use std::collections::BTreeMap;
use std::fs;

use serde::{Deserialize, Serialize};

use super::StorageError;
use super::atomic::write_atomic;
use crate::layout::DataLayout;
use crate::phone::Phone;

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct ContactsFile {
    version: u32,
    contacts: Vec<ContactEntry>,
}

#[derive(Serialize, Deserialize)]
struct ContactEntry {
    id: String,
    name: String,
}

/// Contacts by JID. A damaged file is reported and treated as empty: contacts
/// are a cache that the next sync refills, not data the host must not lose.
pub fn load(layout: &DataLayout, phone: &Phone) -> Result<BTreeMap<String, String>, StorageError> {
    let path = layout.contacts_file(phone);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(StorageError::io(&path, e)),
    };
    let file: ContactsFile = serde_json::from_slice(&bytes).map_err(|e| StorageError::Corrupt {
        path: path.clone(),
        what: "contacts",
        reason: e.to_string(),
    })?;
    Ok(file.contacts.into_iter().map(|c| (c.id, c.name)).collect())
}

/// Saves only into an existing session directory: contacts must never
/// re-create a directory that a reset removed.
pub fn save(
    layout: &DataLayout,
    phone: &Phone,
    contacts: &BTreeMap<String, String>,
) -> Result<(), StorageError> {
    if !layout.session_dir(phone).is_dir() {
        return Ok(());
    }
    let file = ContactsFile {
        version: VERSION,
        contacts: contacts
            .iter()
            .map(|(id, name)| ContactEntry {
                id: id.clone(),
                name: name.clone(),
            })
            .collect(),
    };
    let path = layout.contacts_file(phone);
    let bytes = serde_json::to_vec(&file).map_err(|e| StorageError::Corrupt {
        path: path.clone(),
        what: "contacts",
        reason: e.to_string(),
    })?;
    write_atomic(&path, &bytes)
}
