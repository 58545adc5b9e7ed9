//! `DataLayout`: every path under the data root, computed and never touched.
//!
//! The operator-facing paths are the ones the replaced service used, so
//! runbooks keep working:
//!
//! ```text
//! {root}/sessions/{phone}/              the session's store (whatsapp-rust's SQLite db) and contacts
//! {root}/sessions/backups/{phone}/      consistent snapshots of that store
//! {root}/whatsapp/outbox/{phone}.json   the durable queue of messages not yet sent
//! {root}/whatsapp/status/{phone}.json   what became of each accepted message (sent, read, failed…)
//! ```
//!
//! The host's own bookkeeping lives under `{root}/lila/`, one file per phone,
//! so that a reset of one phone can never touch another phone's data and no
//! recovery code that looks under `sessions/` can mistake it for credentials:
//!
//! ```text
//! {root}/lila/phones/{phone}.json       owner, desired state, tombstone, purge journal
//! {root}/lila/jwt.secret                the generated secret when none is configured
//! ```

use std::path::{Path, PathBuf};

use crate::phone::Phone;

/// File name of whatsapp-rust's SQLite database inside a session directory.
pub const STORE_FILE: &str = "whatsapp.db";
/// File name of the contacts the host collects from the client's events.
pub const CONTACTS_FILE: &str = "contacts.json";

#[derive(Debug, Clone)]
pub struct DataLayout {
    root: PathBuf,
}

impl DataLayout {
    pub fn new(root: impl Into<PathBuf>) -> DataLayout {
        DataLayout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn sessions_dir(&self) -> PathBuf {
        self.root.join("sessions")
    }

    pub fn session_dir(&self, phone: &Phone) -> PathBuf {
        self.sessions_dir().join(phone.as_str())
    }

    pub fn store_file(&self, phone: &Phone) -> PathBuf {
        self.session_dir(phone).join(STORE_FILE)
    }

    pub fn contacts_file(&self, phone: &Phone) -> PathBuf {
        self.session_dir(phone).join(CONTACTS_FILE)
    }

    pub fn backups_root(&self) -> PathBuf {
        self.sessions_dir().join("backups")
    }

    pub fn backup_dir(&self, phone: &Phone) -> PathBuf {
        self.backups_root().join(phone.as_str())
    }

    pub fn outbox_dir(&self) -> PathBuf {
        self.root.join("whatsapp").join("outbox")
    }

    pub fn outbox_file(&self, phone: &Phone) -> PathBuf {
        self.outbox_dir().join(format!("{phone}.json"))
    }

    pub fn message_status_dir(&self) -> PathBuf {
        self.root.join("whatsapp").join("status")
    }

    pub fn message_status_file(&self, phone: &Phone) -> PathBuf {
        self.message_status_dir().join(format!("{phone}.json"))
    }

    pub fn host_dir(&self) -> PathBuf {
        self.root.join("lila")
    }

    pub fn phone_records_dir(&self) -> PathBuf {
        self.host_dir().join("phones")
    }

    pub fn phone_record_file(&self, phone: &Phone) -> PathBuf {
        self.phone_records_dir().join(format!("{phone}.json"))
    }

    pub fn jwt_secret_file(&self) -> PathBuf {
        self.host_dir().join("jwt.secret")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_the_replaced_service() {
        let layout = DataLayout::new("/data");
        let phone = Phone::parse("51987654321").unwrap();
        assert_eq!(
            layout.session_dir(&phone),
            Path::new("/data/sessions/51987654321")
        );
        assert_eq!(
            layout.backup_dir(&phone),
            Path::new("/data/sessions/backups/51987654321")
        );
        assert_eq!(
            layout.outbox_file(&phone),
            Path::new("/data/whatsapp/outbox/51987654321.json")
        );
        assert_eq!(
            layout.phone_record_file(&phone),
            Path::new("/data/lila/phones/51987654321.json")
        );
    }

    #[test]
    fn the_backups_folder_is_not_a_phone() {
        // `sessions/backups` sits beside the phone folders; "backups" can never
        // be a Phone, so no phone's session dir is ever the backups root.
        assert!(Phone::parse("backups").is_err());
    }
}
