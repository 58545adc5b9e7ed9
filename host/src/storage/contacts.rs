//! `sessions/{phone}/contacts.json`: the contacts the host collected from the
//! client's events (whatsapp-rust has no "list contacts" call). It lives in
//! the session's own directory, so a reset removes it with the credentials.
//!
//! Format (version 1): `{"version":1,"contacts":[{"id":"…@s.whatsapp.net","name":"…"}]}`

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::StorageError;
use super::atomic::write_atomic;
use super::versioned::{Versioned, parse, read_if_present};
use crate::layout::DataLayout;
use crate::phone::Phone;

const VERSION: u32 = 1;
const WHAT: &str = "contacts";

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

impl Versioned for ContactsFile {
    fn version(&self) -> u32 {
        self.version
    }
}

/// Contacts by JID. A damaged file is reported and treated as empty: contacts
/// are a cache that the next sync refills, not data the host must not lose.
pub fn load(layout: &DataLayout, phone: &Phone) -> Result<BTreeMap<String, String>, StorageError> {
    let path = layout.contacts_file(phone);
    match read_if_present(&path)? {
        Some(bytes) => decode(&path, &bytes),
        None => Ok(BTreeMap::new()),
    }
}

/// The contacts stored in `bytes` (read from `path`, named in errors).
pub fn decode(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, String>, StorageError> {
    let file: ContactsFile = parse(path, WHAT, bytes, &[VERSION])?;
    Ok(file.contacts.into_iter().map(|c| (c.id, c.name)).collect())
}

/// The bytes `save` writes for `contacts`.
pub fn encode_bytes(contacts: &BTreeMap<String, String>) -> Result<Vec<u8>, StorageError> {
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
    serde_json::to_vec(&file)
        .map_err(|e| StorageError::corrupt_from(Path::new("contacts"), WHAT, e))
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
    write_atomic(&layout.contacts_file(phone), &encode_bytes(contacts)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_round_trip_and_another_version_is_refused() {
        let path = Path::new("contacts.json");
        let contacts =
            BTreeMap::from([("51911111111@s.whatsapp.net".to_owned(), "Ana".to_owned())]);
        let bytes = encode_bytes(&contacts).unwrap();
        assert_eq!(decode(path, &bytes).unwrap(), contacts);
        let future = br#"{"version":2,"contacts":[]}"#;
        let err = decode(path, future).unwrap_err().to_string();
        assert!(err.contains("unknown version 2"), "{err}");
    }
}
