//! `lila/phones/{phone}.json`: the persisted [`PhoneRecord`], one file per phone.
//!
//! Format (version 2):
//! `{"version":2,"owner":"acme"|null,"desired":"running","purge":null,"updatedAtMs":1}`
//! where an open purge journal is
//! `{"startedAtMs":1,"stage":"deleting"|"notifying","resetId":"r…","session":{"status":"connected","me":"…"|null,"paired":true},
//!   "loggedOut":false,"removed":[{"kind":"session","path":"sessions/…","existed":true,"files":3,"bytes":9}],
//!   "outboxDropped":[{"id":"3EB0…","to":"…@s.whatsapp.net","text":"…","createdAtMs":1}],
//!   "beforeClear":[{"plugin":"p","hook":"before_clear","outcome":"ok","detail":null,"durationMs":3}]}`.
//! The journal holds the text of the dropped messages only until the
//! reset's `after_clear` hooks have run; then it is closed (`null`).
//!
//! Version 1 (a journal with `startedAtMs` alone) is still read: its reset
//! is finished with an id derived from its start time.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::StorageError;
use super::atomic::write_atomic;
use super::versioned::{Versioned, parse, read_if_present};
use crate::core::outbox::{OutboxMessage, Recipient};
use crate::core::record::{DesiredState, PhoneRecord, PurgeJournal, PurgeStage};
use crate::core::reset_plan::{PurgeTargetKind, RemovedTarget};
use crate::core::reset_report::{HookOutcome, HookRun, ResetReport, SessionSnapshot, hook_name};
use crate::core::tenant::TenantId;
use crate::layout::DataLayout;
use crate::phone::Phone;

const VERSION: u32 = 2;
const WHAT: &str = "phone record";
/// Read, never written: journals without the report's first half.
const VERSION_WITHOUT_REPORT: u32 = 1;

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
    /// The fields below are absent in version 1.
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    reset_id: Option<String>,
    #[serde(default)]
    session: Option<SessionFile>,
    #[serde(default)]
    logged_out: bool,
    #[serde(default)]
    removed: Vec<RemovedFile>,
    #[serde(default)]
    outbox_dropped: Vec<DroppedMessageFile>,
    #[serde(default)]
    before_clear: Vec<HookRunFile>,
    /// Absent (false) in journals written before forced resets existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    forced: bool,
}

#[derive(Serialize, Deserialize)]
struct SessionFile {
    status: String,
    me: Option<String>,
    paired: bool,
}

#[derive(Serialize, Deserialize)]
struct RemovedFile {
    kind: String,
    path: String,
    existed: bool,
    files: usize,
    bytes: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DroppedMessageFile {
    id: String,
    to: String,
    text: String,
    created_at_ms: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HookRunFile {
    plugin: String,
    hook: String,
    outcome: String,
    detail: Option<String>,
    duration_ms: u64,
}

impl PurgeFile {
    fn from_journal(journal: &PurgeJournal) -> PurgeFile {
        let report = &journal.report;
        PurgeFile {
            started_at_ms: journal.started_at_ms,
            stage: Some(journal.stage.as_str().to_owned()),
            reset_id: Some(report.reset_id.clone()),
            session: Some(SessionFile {
                status: report.session.status.clone(),
                me: report.session.me.clone(),
                paired: report.session.paired,
            }),
            logged_out: report.logged_out,
            removed: report
                .removed
                .iter()
                .map(|r| RemovedFile {
                    kind: r.kind.as_str().to_owned(),
                    path: r.path.to_string_lossy().into_owned(),
                    existed: r.existed,
                    files: r.files,
                    bytes: r.bytes,
                })
                .collect(),
            outbox_dropped: report
                .outbox_dropped
                .iter()
                .map(|m| DroppedMessageFile {
                    id: m.id.clone(),
                    to: m.to.as_jid().to_owned(),
                    text: m.text.clone(),
                    created_at_ms: m.created_at_ms,
                })
                .collect(),
            before_clear: report
                .hooks
                .iter()
                .map(|r| HookRunFile {
                    plugin: r.plugin.clone(),
                    hook: r.hook.to_owned(),
                    outcome: r.outcome.as_str().to_owned(),
                    detail: r.outcome.detail().map(str::to_owned),
                    duration_ms: r.duration_ms,
                })
                .collect(),
            forced: report.forced,
        }
    }

    /// The journal this file holds, for the record of `phone` owned by `owner`.
    fn into_journal(self, phone: &Phone, owner: Option<&TenantId>) -> Result<PurgeJournal, String> {
        let stage = match self.stage.as_deref() {
            None => PurgeStage::Deleting,
            Some(raw) => PurgeStage::parse(raw).ok_or(format!("unknown purge stage {raw:?}"))?,
        };
        let session = self.session.map_or(
            SessionSnapshot {
                status: "unknown".to_owned(),
                me: None,
                paired: false,
            },
            |s| SessionSnapshot {
                status: s.status,
                me: s.me,
                paired: s.paired,
            },
        );
        let mut removed = Vec::with_capacity(self.removed.len());
        for r in self.removed {
            let kind = PurgeTargetKind::parse(&r.kind)
                .ok_or(format!("unknown purge target {:?}", r.kind))?;
            removed.push(RemovedTarget {
                kind,
                path: r.path.into(),
                existed: r.existed,
                files: r.files,
                bytes: r.bytes,
            });
        }
        let mut outbox_dropped = Vec::with_capacity(self.outbox_dropped.len());
        for m in self.outbox_dropped {
            outbox_dropped.push(OutboxMessage {
                id: m.id,
                to: Recipient::parse(&m.to).map_err(|e| e.to_string())?,
                text: m.text,
                created_at_ms: m.created_at_ms,
                attempts: 0,
            });
        }
        let mut hooks = Vec::with_capacity(self.before_clear.len());
        for r in self.before_clear {
            let hook = hook_name(&r.hook).ok_or(format!("unknown hook {:?}", r.hook))?;
            let outcome = HookOutcome::parse(&r.outcome, r.detail)
                .ok_or(format!("unknown hook outcome {:?}", r.outcome))?;
            hooks.push(HookRun {
                plugin: r.plugin,
                hook,
                outcome,
                duration_ms: r.duration_ms,
            });
        }
        Ok(PurgeJournal {
            started_at_ms: self.started_at_ms,
            stage,
            report: ResetReport {
                // A version-1 journal had no id: derive one from its start,
                // so a second crash still gives the same id.
                reset_id: self
                    .reset_id
                    .unwrap_or_else(|| format!("r{:x}-journal", self.started_at_ms)),
                tenant: owner.cloned(),
                phone: phone.clone(),
                started_at_ms: self.started_at_ms,
                duration_ms: 0,
                session,
                logged_out: self.logged_out,
                removed,
                outbox_dropped,
                hooks,
                finished_at_boot: false,
                forced: self.forced,
            },
        })
    }
}

impl Versioned for RecordFile {
    fn version(&self) -> u32 {
        self.version
    }
}

pub fn load(layout: &DataLayout, phone: &Phone) -> Result<Option<PhoneRecord>, StorageError> {
    let path = layout.phone_record_file(phone);
    read_if_present(&path)?
        .map(|bytes| decode(&path, phone, &bytes))
        .transpose()
}

/// The record of `phone` stored in `bytes` (read from `path`, named in errors).
pub fn decode(path: &Path, phone: &Phone, bytes: &[u8]) -> Result<PhoneRecord, StorageError> {
    let corrupt = |reason: String| StorageError::corrupt(path, WHAT, reason);
    let file: RecordFile = parse(path, WHAT, bytes, &[VERSION, VERSION_WITHOUT_REPORT])?;
    let owner = match file.owner {
        Some(owner) => {
            Some(TenantId::parse(&owner).map_err(|e| StorageError::corrupt_from(path, WHAT, e))?)
        }
        None => None,
    };
    let desired = DesiredState::parse(&file.desired)
        .ok_or_else(|| corrupt(format!("unknown desired state {:?}", file.desired)))?;
    let purge = match file.purge {
        Some(p) => Some(p.into_journal(phone, owner.as_ref()).map_err(corrupt)?),
        None => None,
    };
    Ok(PhoneRecord {
        owner,
        desired,
        purge,
        updated_at_ms: file.updated_at_ms,
    })
}

/// The bytes `save` writes for `record`.
pub fn encode_bytes(record: &PhoneRecord) -> Result<Vec<u8>, StorageError> {
    let file = RecordFile {
        version: VERSION,
        owner: record.owner.as_ref().map(|o| o.as_str().to_owned()),
        desired: record.desired.as_str().to_owned(),
        purge: record.purge.as_ref().map(PurgeFile::from_journal),
        updated_at_ms: record.updated_at_ms,
    };
    serde_json::to_vec_pretty(&file)
        .map_err(|e| StorageError::corrupt_from(Path::new("phone"), WHAT, e))
}

pub fn save(layout: &DataLayout, phone: &Phone, record: &PhoneRecord) -> Result<(), StorageError> {
    write_atomic(&layout.phone_record_file(phone), &encode_bytes(record)?)
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
    use crate::core::reset_report::sample;

    #[test]
    fn a_version_1_journal_is_still_finished_with_a_stable_derived_id() {
        let dir = tempfile::tempdir().unwrap();
        let layout = DataLayout::new(dir.path());
        let phone = Phone::parse("51987654321").unwrap();
        fs::create_dir_all(layout.phone_records_dir()).unwrap();
        fs::write(
            layout.phone_record_file(&phone),
            br#"{"version":1,"owner":"acme","desired":"cleared","purge":{"startedAtMs":255},"updatedAtMs":1}"#,
        )
        .unwrap();
        let record = load(&layout, &phone).unwrap().unwrap();
        let journal = record.purge.unwrap();
        assert_eq!(journal.stage, PurgeStage::Deleting);
        assert_eq!(journal.report.reset_id, "rff-journal");
        assert_eq!(journal.report.tenant, record.owner);
        assert_eq!(
            load(&layout, &phone)
                .unwrap()
                .unwrap()
                .purge
                .unwrap()
                .report
                .reset_id,
            "rff-journal"
        );
    }

    #[test]
    fn a_journal_with_an_unknown_stage_is_damage_not_a_default() {
        let dir = tempfile::tempdir().unwrap();
        let layout = DataLayout::new(dir.path());
        let phone = Phone::parse("51987654321").unwrap();
        fs::create_dir_all(layout.phone_records_dir()).unwrap();
        fs::write(
            layout.phone_record_file(&phone),
            br#"{"version":2,"owner":"acme","desired":"cleared","purge":{"startedAtMs":1,"stage":"halfway"},"updatedAtMs":1}"#,
        )
        .unwrap();
        assert!(matches!(
            load(&layout, &phone),
            Err(StorageError::Corrupt { .. })
        ));
    }

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
        record.purge = Some(PurgeJournal {
            started_at_ms: 7,
            stage: PurgeStage::Notifying,
            report: sample::report("51987654321", "acme"),
        });
        save(&layout, &phone, &record).unwrap();
        assert_eq!(load(&layout, &phone).unwrap(), Some(record));
        fs::write(layout.phone_record_file(&phone), b"{\"version\":1,").unwrap();
        assert!(matches!(
            load(&layout, &phone),
            Err(StorageError::Corrupt { .. })
        ));
    }
}
