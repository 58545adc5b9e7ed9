//! backup-archive: a lila reset plugin that, in `before-clear`, writes one
//! archive file of what the reset will drop (pending outbox messages, session
//! metadata, and the credential files only when both its config and the
//! operator allow it) through the host's `write-archive` import.
//!
//! It allows every reset, except when the archive cannot be made and its
//! config says `veto_on_failure`. `after-clear` does nothing. The logic below
//! is plain Rust behind the [`ArchiveHost`] trait; `component.rs` binds it to
//! the WIT imports.

pub mod archive;
pub mod config;

#[cfg(target_arch = "wasm32")]
mod component;

use serde::Serialize;

use archive::CredentialsPart;
use config::{BackupConfig, ConfigError};

/// The plugin's view of the WIT `reset-context`. The serde names are part of
/// the archive format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetSnapshot {
    pub tenant: String,
    pub phone: String,
    pub reset_id: String,
    pub requested_at_ms: u64,
    pub session: SessionState,
    pub session_files: Vec<FileInfo>,
    pub backup_count: u32,
    pub outbox: Vec<OutboxMessage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionState {
    pub status: String,
    pub own_jid: Option<String>,
    pub paired: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileInfo {
    pub path: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxMessage {
    pub id: String,
    pub to: String,
    pub text: String,
    pub created_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// What the plugin needs from the host.
pub trait ArchiveHost {
    /// The gated `read-credentials` import.
    fn read_credentials(&mut self) -> Result<Vec<CredentialFile>, String>;
    /// The `write-archive` import: the stored path, or why not.
    fn write_archive(&mut self, name: &str, bytes: &[u8]) -> Result<String, String>;
    fn info(&mut self, message: &str);
    fn error(&mut self, message: &str);
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// A sentence for the Portal's toast.
    Veto(String),
}

/// The `before-clear` hook. A bad config is an `Err`: the component traps on
/// it, so the operator's fail-open/fail-closed choice decides the reset.
pub fn before_clear(
    config_json: &str,
    reset: &ResetSnapshot,
    host: &mut impl ArchiveHost,
) -> Result<Verdict, ConfigError> {
    let config = BackupConfig::parse(config_json)?;

    // Credentials are read only on the plugin's own opt-in; the host checks
    // the operator's grant on top of that.
    let credentials = if config.include_credentials {
        Some(host.read_credentials())
    } else {
        None
    };
    let credentials_part = match &credentials {
        None => CredentialsPart::NotRequested,
        Some(Ok(files)) => CredentialsPart::Included(files),
        Some(Err(why)) => {
            let problem = format!("could not read the credentials: {why}");
            if config.veto_on_failure {
                return Ok(refuse(reset, &problem));
            }
            host.error(&format!("{problem}; archiving without them"));
            CredentialsPart::Unavailable(why)
        }
    };

    let name = archive::archive_name(&reset.tenant, &reset.phone, reset.requested_at_ms);
    let written = archive::archive_bytes(reset, credentials_part)
        .map_err(|error| format!("could not encode the archive: {error}"))
        .and_then(|bytes| host.write_archive(&name, &bytes));
    match written {
        Ok(stored) => {
            host.info(&format!(
                "archived {} outbox message(s) and the session metadata of +{} to {stored}",
                reset.outbox.len(),
                reset.phone
            ));
            Ok(Verdict::Allow)
        }
        Err(why) if config.veto_on_failure => Ok(refuse(reset, &why)),
        Err(why) => {
            host.error(&format!(
                "could not write the archive {name}: {why}; the reset goes on without it"
            ));
            Ok(Verdict::Allow)
        }
    }
}

fn refuse(reset: &ResetSnapshot, why: &str) -> Verdict {
    Verdict::Veto(format!(
        "The reset of +{} was stopped because its backup archive could not be written ({why}). \
         Nothing was deleted; try again or ask an administrator.",
        reset.phone
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// The host imports, in memory, with switches for each failure.
    #[derive(Default)]
    struct FakeHost {
        credentials: Option<Result<Vec<CredentialFile>, String>>,
        credential_reads: usize,
        refuse_writes: bool,
        written: Vec<(String, Vec<u8>)>,
        errors: Vec<String>,
    }

    impl ArchiveHost for FakeHost {
        fn read_credentials(&mut self) -> Result<Vec<CredentialFile>, String> {
            self.credential_reads += 1;
            self.credentials
                .clone()
                .unwrap_or_else(|| Err("credentials not granted".to_owned()))
        }
        fn write_archive(&mut self, name: &str, bytes: &[u8]) -> Result<String, String> {
            if self.refuse_writes {
                return Err("archive directory is full".to_owned());
            }
            self.written.push((name.to_owned(), bytes.to_vec()));
            Ok(format!("archives/backup-archive/acme/{name}"))
        }
        fn info(&mut self, _message: &str) {}
        fn error(&mut self, message: &str) {
            self.errors.push(message.to_owned());
        }
    }

    impl FakeHost {
        fn granting(files: Vec<CredentialFile>) -> Self {
            FakeHost {
                credentials: Some(Ok(files)),
                ..FakeHost::default()
            }
        }

        /// The one archive written, parsed.
        fn archive(&self) -> (String, Value) {
            assert_eq!(self.written.len(), 1, "exactly one archive per reset");
            let (name, bytes) = &self.written[0];
            (name.clone(), serde_json::from_slice(bytes).unwrap())
        }
    }

    fn reset() -> ResetSnapshot {
        ResetSnapshot {
            tenant: "acme".to_owned(),
            phone: "5511999998888".to_owned(),
            reset_id: "r-42".to_owned(),
            // 2026-05-01T19:42:59.999Z
            requested_at_ms: 1_777_664_579_999,
            session: SessionState {
                status: "connected".to_owned(),
                own_jid: Some("5511999998888@s.whatsapp.net".to_owned()),
                paired: true,
            },
            session_files: vec![FileInfo {
                path: "sessions/5511999998888/whatsapp.db".to_owned(),
                size: 4096,
            }],
            backup_count: 2,
            outbox: vec![OutboxMessage {
                id: "m-1".to_owned(),
                to: "5511988887777".to_owned(),
                text: "olá".to_owned(),
                created_at_ms: 1_777_664_000_000,
            }],
        }
    }

    fn secret_db() -> Vec<CredentialFile> {
        vec![CredentialFile {
            path: "sessions/5511999998888/whatsapp.db".to_owned(),
            bytes: b"SQLite format 3\0secret".to_vec(),
        }]
    }

    #[test]
    fn archives_outbox_and_metadata_and_allows() {
        let mut host = FakeHost::default();
        assert_eq!(before_clear("{}", &reset(), &mut host), Ok(Verdict::Allow));
        let (name, archive) = host.archive();
        assert_eq!(name, "acme-5511999998888-20260501T194259Z.json");
        assert_eq!(archive["format"], "lila.backup-archive.v1");
        assert_eq!(archive["tenant"], "acme");
        assert_eq!(archive["phone"], "5511999998888");
        assert_eq!(archive["reset_id"], "r-42");
        assert_eq!(archive["requested_at"], "2026-05-01T19:42:59.999Z");
        assert_eq!(archive["session"]["status"], "connected");
        assert_eq!(
            archive["session"]["own_jid"],
            "5511999998888@s.whatsapp.net"
        );
        assert_eq!(archive["session_files"][0]["size"], 4096);
        assert_eq!(archive["backup_count"], 2);
        assert_eq!(archive["outbox"][0]["id"], "m-1");
        assert_eq!(archive["outbox"][0]["text"], "olá");
        assert_eq!(archive["outbox"][0]["created_at_ms"], 1_777_664_000_000_u64);
    }

    #[test]
    fn credentials_are_excluded_unless_opted_in() {
        // Even a host that would hand them over is not asked.
        let mut host = FakeHost::granting(secret_db());
        before_clear("{}", &reset(), &mut host).unwrap();
        assert_eq!(host.credential_reads, 0);
        let (_, archive) = host.archive();
        assert_eq!(archive["credentials_included"], false);
        assert_eq!(archive["credentials"], Value::Array(vec![]));
        let text = String::from_utf8(host.written[0].1.clone()).unwrap();
        assert!(!text.contains("U1FMaXRl"), "no base64 of the db may leak");
    }

    #[test]
    fn opted_in_credentials_are_archived_as_base64() {
        let mut host = FakeHost::granting(secret_db());
        let config = r#"{"include_credentials": true}"#;
        assert_eq!(
            before_clear(config, &reset(), &mut host),
            Ok(Verdict::Allow)
        );
        let (_, archive) = host.archive();
        assert_eq!(archive["credentials_included"], true);
        let file = &archive["credentials"][0];
        assert_eq!(file["path"], "sessions/5511999998888/whatsapp.db");
        assert_eq!(file["size"], 22);
        // `printf 'SQLite format 3\0secret' | base64`
        assert_eq!(file["base64"], "U1FMaXRlIGZvcm1hdCAzAHNlY3JldA==");
    }

    #[test]
    fn credentials_not_granted_by_the_operator_still_archive_the_rest() {
        let mut host = FakeHost::default();
        let config = r#"{"include_credentials": true}"#;
        assert_eq!(
            before_clear(config, &reset(), &mut host),
            Ok(Verdict::Allow)
        );
        let (_, archive) = host.archive();
        assert_eq!(archive["credentials_included"], false);
        assert_eq!(archive["credentials_error"], "credentials not granted");
        assert_eq!(archive["outbox"][0]["id"], "m-1");
        assert_eq!(host.errors.len(), 1);
    }

    #[test]
    fn credentials_not_granted_vetoes_when_configured_to() {
        let mut host = FakeHost::default();
        let config = r#"{"include_credentials": true, "veto_on_failure": true}"#;
        let verdict = before_clear(config, &reset(), &mut host).unwrap();
        let Verdict::Veto(reason) = verdict else {
            panic!("expected a veto, got {verdict:?}");
        };
        assert!(reason.contains("credentials not granted"), "{reason}");
        assert!(host.written.is_empty());
    }

    #[test]
    fn write_failure_allows_by_default_and_vetoes_when_configured_to() {
        let mut host = FakeHost {
            refuse_writes: true,
            ..FakeHost::default()
        };
        assert_eq!(before_clear("{}", &reset(), &mut host), Ok(Verdict::Allow));
        assert!(host.errors[0].contains("archive directory is full"));

        let verdict = before_clear(r#"{"veto_on_failure": true}"#, &reset(), &mut host);
        assert_eq!(
            verdict,
            Ok(Verdict::Veto(
                "The reset of +5511999998888 was stopped because its backup archive could not \
                 be written (archive directory is full). Nothing was deleted; try again or ask \
                 an administrator."
                    .to_owned()
            ))
        );
    }

    #[test]
    fn a_reset_with_nothing_to_drop_still_leaves_one_archive() {
        let mut host = FakeHost::default();
        let empty = ResetSnapshot {
            session: SessionState {
                status: "absent".to_owned(),
                own_jid: None,
                paired: false,
            },
            session_files: vec![],
            backup_count: 0,
            outbox: vec![],
            ..reset()
        };
        before_clear("{}", &empty, &mut host).unwrap();
        let (_, archive) = host.archive();
        assert_eq!(archive["outbox"], Value::Array(vec![]));
        assert_eq!(archive["session"]["own_jid"], Value::Null);
    }

    #[test]
    fn a_bad_config_is_an_error() {
        let mut host = FakeHost::default();
        assert!(before_clear("{\"veto\": 1}", &reset(), &mut host).is_err());
        assert!(host.written.is_empty());
    }
}
