//! A phone's record, outbox, statuses and contacts in PostgreSQL (cluster
//! mode): the `PhoneStore::Postgres` variant, with the same methods as the
//! files and the same encodings (each value is the bytes of its versioned
//! file format, decoded by the same functions; the outbox is a row per
//! message, each the JSON a `queued` line of the files' log carries).
//!
//! Every write is fenced by the phone's lease (see `lila-pgstore`): the
//! store writes a phone only while this node holds it (`hold`), and a write
//! under a lease another node took over fails with `LeaseLost`, having
//! written nothing. Reads need no lease.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use lila_pgstore::phone_state::{self, StateKind};
use lila_pgstore::{Fence, PgBackend, PgStoreError, Pool, PurgePart};

use super::{StorageError, contacts, message_status_file, outbox_file, phone_records};
use crate::core::message_status::MessageStatuses;
use crate::core::outbox::{Outbox, OutboxChange, OutboxMessage};
use crate::core::record::{DesiredState, PhoneRecord};
use crate::core::reset_plan::{PlannedRemoval, PurgeTargetKind, RemovedTarget, ResetPlan};
use crate::phone::Phone;

/// The PostgreSQL store of one node.
#[derive(Clone)]
pub struct PgPhoneStore {
    pool: Pool,
    /// The leases this node holds, by phone: the fence of each write.
    held: Arc<Mutex<HashMap<Phone, Fence>>>,
}

impl std::fmt::Debug for PgPhoneStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPhoneStore").finish_non_exhaustive()
    }
}

/// Names a row in errors the way a file path names a file.
fn place(phone: &Phone, what: &str) -> String {
    format!("postgres:{what}/{phone}")
}

fn database(e: PgStoreError) -> StorageError {
    match e {
        PgStoreError::LeaseLost { phone, .. } => StorageError::LeaseLost { phone },
        source => StorageError::Database { source },
    }
}

impl PgPhoneStore {
    pub fn new(pool: Pool) -> PgPhoneStore {
        PgPhoneStore {
            pool,
            held: Arc::default(),
        }
    }

    /// This node holds `phone`'s lease under `fence` (from `claim_lease`):
    /// its writes of the phone go under that fence from now on.
    pub fn hold(&self, phone: &Phone, fence: Fence) {
        self.held_leases().insert(phone.clone(), fence);
    }

    /// This node no longer holds `phone`: its writes of the phone are
    /// refused. Returns the fence it held, if any.
    pub fn release(&self, phone: &Phone) -> Option<Fence> {
        self.held_leases().remove(phone)
    }

    /// Whether this node holds `phone`'s lease.
    pub fn holds(&self, phone: &Phone) -> bool {
        self.held_leases().contains_key(phone)
    }

    /// Every lease this node holds: the phone and its fence.
    pub fn held(&self) -> Vec<(Phone, Fence)> {
        self.held_leases()
            .iter()
            .map(|(phone, fence)| (phone.clone(), fence.clone()))
            .collect()
    }

    fn held_leases(&self) -> std::sync::MutexGuard<'_, HashMap<Phone, Fence>> {
        // A map of finished values: a panic elsewhere cannot have left it half-written.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fence(&self, phone: &Phone) -> Result<Fence, StorageError> {
        self.held_leases()
            .get(phone)
            .cloned()
            .ok_or_else(|| StorageError::LeaseLost {
                phone: phone.as_str().to_owned(),
            })
    }

    /// The WhatsApp store of `phone`, writing under the lease this node holds.
    pub fn client_backend(&self, phone: &Phone) -> Result<PgBackend, StorageError> {
        Ok(PgBackend::new(self.pool.clone(), self.fence(phone)?))
    }

    pub async fn known_phones(&self) -> Result<BTreeSet<Phone>, StorageError> {
        let phones = phone_state::known_phones(&self.pool)
            .await
            .map_err(database)?;
        // A row whose key is not a phone was not written by lila: skipped.
        Ok(phones.iter().filter_map(|p| Phone::parse(p).ok()).collect())
    }

    pub async fn load_record(&self, phone: &Phone) -> Result<Option<PhoneRecord>, StorageError> {
        match phone_state::load_record(&self.pool, phone.as_str())
            .await
            .map_err(database)?
        {
            Some(bytes) => {
                let place = place(phone, "phone_records");
                phone_records::decode(Path::new(&place), phone, &bytes).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Whether `phone` has a record (read or not: a damaged one counts).
    pub async fn has_record(&self, phone: &Phone) -> Result<bool, StorageError> {
        Ok(phone_state::load_record(&self.pool, phone.as_str())
            .await
            .map_err(database)?
            .is_some())
    }

    /// Every phone's record, in phone order: the base of a cluster-wide
    /// listing. A row whose key is not a phone, or whose record does not
    /// decode, was not written by this lila: it is left out, with a warning.
    pub async fn all_records(&self) -> Result<Vec<(Phone, PhoneRecord)>, StorageError> {
        let rows = phone_state::all_records(&self.pool)
            .await
            .map_err(database)?;
        Ok(rows
            .into_iter()
            .filter_map(|(phone, bytes)| {
                let phone = Phone::parse(&phone).ok()?;
                let place = place(&phone, "phone_records");
                match phone_records::decode(Path::new(&place), &phone, &bytes) {
                    Ok(record) => Some((phone, record)),
                    Err(e) => {
                        tracing::warn!(phone = %phone, error = %e, "a damaged phone record; left out");
                        None
                    }
                }
            })
            .collect())
    }

    pub async fn save_record(
        &self,
        phone: &Phone,
        record: &PhoneRecord,
    ) -> Result<(), StorageError> {
        let bytes = phone_records::encode_bytes(record)?;
        // Some node should hold the phone while it is meant to run, or while
        // a reset of it is unfinished (whoever claims it next finishes it).
        let wants_node = record.desired == DesiredState::Running || record.purge.is_some();
        phone_state::save_record(&self.pool, &self.fence(phone)?, &bytes, wants_node)
            .await
            .map_err(database)
    }

    async fn load_state(
        &self,
        phone: &Phone,
        kind: StateKind,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        phone_state::load_state(&self.pool, phone.as_str(), kind)
            .await
            .map_err(database)
    }

    async fn save_state(
        &self,
        phone: &Phone,
        kind: StateKind,
        bytes: Option<Vec<u8>>,
    ) -> Result<(), StorageError> {
        phone_state::save_state(&self.pool, &self.fence(phone)?, kind, bytes.as_deref())
            .await
            .map_err(database)
    }

    /// The phone's queue: its rows (`lila_pgstore::outbox`), after an
    /// outbox stored the old way (one `phone_state` value) if one is left.
    /// Under the phone's lease such an old value is moved into rows here,
    /// so that every later change finds its message's row.
    pub async fn load_outbox(&self, phone: &Phone) -> Result<Outbox, StorageError> {
        let old = match self.load_state(phone, StateKind::Outbox).await? {
            Some(bytes) => Some(outbox_file::decode(
                Path::new(&place(phone, "outbox")),
                &bytes,
            )?),
            None => None,
        };
        let rows = lila_pgstore::outbox::load(&self.pool, phone.as_str())
            .await
            .map_err(database)?;
        let path = place(phone, lila_pgstore::outbox::TABLE);
        let mut messages: Vec<OutboxMessage> = old.iter().flat_map(|o| o.iter().cloned()).collect();
        for body in &rows {
            messages.push(outbox_file::decode_message(Path::new(&path), body)?);
        }
        let outbox = Outbox::from_messages(messages);
        if old.is_some() && self.holds(phone) {
            self.save_outbox(phone, &outbox).await?;
        }
        Ok(outbox)
    }

    /// Replaces the phone's whole queue (an import, the move of an old one).
    pub async fn save_outbox(&self, phone: &Phone, outbox: &Outbox) -> Result<(), StorageError> {
        let rows = outbox
            .iter()
            .map(|m| Ok((m.id.clone(), outbox_file::encode_message(m)?)))
            .collect::<Result<Vec<_>, StorageError>>()?;
        lila_pgstore::outbox::replace(&self.pool, &self.fence(phone)?, &rows)
            .await
            .map_err(database)
    }

    /// One change of the outbox, O(the message): a row inserted, rewritten
    /// or deleted. A change to a message with no row (it was in an old
    /// outbox value not moved yet) writes `after`, the queue with the change
    /// applied, whole, once.
    pub async fn record_outbox(
        &self,
        phone: &Phone,
        change: &OutboxChange,
        after: &Outbox,
    ) -> Result<(), StorageError> {
        let fence = self.fence(phone)?;
        let found = match change {
            OutboxChange::Queued(message) => {
                let body = outbox_file::encode_message(message)?;
                lila_pgstore::outbox::push(&self.pool, &fence, &message.id, &body)
                    .await
                    .map_err(database)?;
                true
            }
            OutboxChange::Attempted { id, .. } => match after.iter().find(|m| &m.id == id) {
                Some(message) => {
                    let body = outbox_file::encode_message(message)?;
                    lila_pgstore::outbox::update(&self.pool, &fence, id, &body)
                        .await
                        .map_err(database)?
                }
                None => false,
            },
            OutboxChange::Left { id } => lila_pgstore::outbox::remove(&self.pool, &fence, id)
                .await
                .map_err(database)?,
        };
        if !found {
            self.save_outbox(phone, after).await?;
        }
        Ok(())
    }

    pub async fn load_statuses(&self, phone: &Phone) -> Result<MessageStatuses, StorageError> {
        match self.load_state(phone, StateKind::Statuses).await? {
            Some(bytes) => {
                message_status_file::decode(Path::new(&place(phone, "statuses")), &bytes)
            }
            None => Ok(MessageStatuses::default()),
        }
    }

    pub async fn save_statuses(
        &self,
        phone: &Phone,
        statuses: &MessageStatuses,
    ) -> Result<(), StorageError> {
        let bytes = message_status_file::encode_bytes(statuses)?;
        self.save_state(phone, StateKind::Statuses, bytes).await
    }

    pub async fn load_contacts(
        &self,
        phone: &Phone,
    ) -> Result<BTreeMap<String, String>, StorageError> {
        match self.load_state(phone, StateKind::Contacts).await? {
            Some(bytes) => contacts::decode(Path::new(&place(phone, "contacts")), &bytes),
            None => Ok(BTreeMap::new()),
        }
    }

    pub async fn save_contacts(
        &self,
        phone: &Phone,
        names: &BTreeMap<String, String>,
    ) -> Result<(), StorageError> {
        let bytes = contacts::encode_bytes(names)?;
        phone_state::save_contacts_if_session(&self.pool, &self.fence(phone)?, &bytes)
            .await
            .map(|_| ())
            .map_err(database)
    }

    /// What each target of a reset plan holds in the database: one entry
    /// per table (or kind of state) with rows of the phone, with its size.
    pub async fn reset_inventory(
        &self,
        phone: &Phone,
        plan: &ResetPlan,
    ) -> Result<Vec<PlannedRemoval>, StorageError> {
        let rows = lila_pgstore::phone_rows(&self.pool, phone.as_str())
            .await
            .map_err(database)?;
        Ok(plan
            .targets
            .iter()
            .map(|target| PlannedRemoval {
                kind: target.kind,
                path: target_place(phone, target.kind),
                files: rows
                    .iter()
                    .filter(|r| Some(r.part()) == part_of(target.kind))
                    .map(|r| (PathBuf::from(format!("postgres:{}", r.place)), r.bytes))
                    .collect(),
            })
            .collect())
    }

    /// Removes one target's rows, under the phone's lease.
    pub async fn purge_target(
        &self,
        phone: &Phone,
        kind: PurgeTargetKind,
    ) -> Result<RemovedTarget, StorageError> {
        let removed = match part_of(kind) {
            Some(part) => lila_pgstore::purge_phone(&self.pool, &self.fence(phone)?, part)
                .await
                .map_err(database)?,
            None => Vec::new(),
        };
        Ok(RemovedTarget {
            kind,
            path: target_place(phone, kind),
            existed: !removed.is_empty(),
            files: removed.len(),
            bytes: removed.iter().map(|r| r.bytes).sum(),
        })
    }
}

/// The rows a reset target stands for in the database. Backups have none:
/// PostgreSQL keeps its own copies, and lila takes no snapshots there.
fn part_of(kind: PurgeTargetKind) -> Option<PurgePart> {
    match kind {
        PurgeTargetKind::SessionDir => Some(PurgePart::Session),
        PurgeTargetKind::Backups => None,
        PurgeTargetKind::Outbox => Some(PurgePart::State(StateKind::Outbox)),
        PurgeTargetKind::MessageStatuses => Some(PurgePart::State(StateKind::Statuses)),
    }
}

/// A target as reports name it: `postgres:session/5511…`.
fn target_place(phone: &Phone, kind: PurgeTargetKind) -> PathBuf {
    PathBuf::from(place(phone, kind.as_str()))
}
