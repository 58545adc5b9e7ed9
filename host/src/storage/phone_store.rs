//! The seam between the session actors and where a phone's durable state
//! lives: its record (owner, desired state, tombstone, purge journal), its
//! outbox, its message statuses and its contacts.
//!
//! One node keeps them in files under the data root (`Files`, the default,
//! no external service). A cluster keeps them in PostgreSQL, as a
//! second variant with the same methods. Both take and give the core's own
//! types, so an actor, the boot and the reset never know which one they
//! talk to. The WhatsApp credentials are not here: the client has its own
//! store (`whatsapp/real.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::postgres_store::PgPhoneStore;
use super::{
    StorageError, backups, contacts, message_status_file, outbox_file, phone_records, purge,
};
use crate::core::message_status::MessageStatuses;
use crate::core::outbox::{Outbox, OutboxChange};
use crate::core::record::PhoneRecord;
use crate::core::reset_plan::{PlannedRemoval, PurgeTarget, RemovedTarget, ResetPlan};
use crate::layout::DataLayout;
use crate::phone::Phone;
use crate::whatsapp::ClientStore;

/// Runs a file operation on `phone` on the blocking pool: file I/O (and its
/// fsyncs) never holds one of the runtime's few worker threads.
async fn on_files<T: Send + 'static>(
    layout: &DataLayout,
    phone: &Phone,
    op: impl FnOnce(&DataLayout, &Phone) -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    let (layout, phone) = (layout.clone(), phone.clone());
    tokio::task::spawn_blocking(move || op(&layout, &phone))
        .await
        .map_err(|source| StorageError::Task { source })?
}

/// A phone's WhatsApp store, ready for a client to start on.
#[derive(Debug)]
pub struct ReadyClientStore {
    pub store: ClientStore,
    /// The backup a missing or damaged store was restored from, if any.
    pub restored_from: Option<PathBuf>,
}

/// Where phone state is kept.
#[derive(Debug, Clone)]
pub enum PhoneStore {
    /// Files under the data root (`layout.rs` says where each one goes).
    Files(DataLayout),
    /// PostgreSQL, for a cluster (`postgres_store.rs`).
    Postgres(PgPhoneStore),
}

impl PhoneStore {
    /// The file store over `layout`.
    pub fn files(layout: DataLayout) -> PhoneStore {
        PhoneStore::Files(layout)
    }

    /// Whether boot resumes this node's phones itself: on files, every
    /// phone is this node's; in a cluster the lease loop decides which
    /// phones run here, and indexes each as it claims it.
    pub fn resumes_at_boot(&self) -> bool {
        matches!(self, PhoneStore::Files(_))
    }

    /// Whether this node runs `phone`: always on files; in a cluster, while
    /// it holds the phone's lease.
    pub fn runs_here(&self, phone: &Phone) -> bool {
        match self {
            PhoneStore::Files(_) => true,
            PhoneStore::Postgres(db) => db.holds(phone),
        }
    }

    /// Whether a connected session's WhatsApp store is snapshotted: a
    /// SQLite file is; PostgreSQL keeps its own copies.
    pub fn takes_snapshots(&self) -> bool {
        matches!(self, PhoneStore::Files(_))
    }

    /// Makes `phone`'s WhatsApp store ready for a client. On files its
    /// directory exists and a missing or damaged store is replaced by the
    /// newest good backup (on the blocking pool); on PostgreSQL it is a
    /// backend under the phone's fence, with nothing to restore.
    pub async fn client_store(&self, phone: &Phone) -> Result<ReadyClientStore, StorageError> {
        match self {
            PhoneStore::Files(layout) => {
                let store = ClientStore::Sqlite(layout.store_file(phone));
                let (layout, phone) = (layout.clone(), phone.clone());
                let restored_from =
                    tokio::task::spawn_blocking(move || backups::prepare_store(&layout, &phone))
                        .await
                        .map_err(|source| StorageError::Task { source })??;
                Ok(ReadyClientStore {
                    store,
                    restored_from,
                })
            }
            PhoneStore::Postgres(db) => Ok(ReadyClientStore {
                store: ClientStore::Postgres(db.client_backend(phone)?),
                restored_from: None,
            }),
        }
    }

    /// Descriptors a connected session holds on this store (`limits.rs`).
    pub fn fds_per_session(&self) -> u64 {
        match self {
            PhoneStore::Files(_) => crate::limits::FDS_PER_SESSION_ON_FILES,
            PhoneStore::Postgres(_) => crate::limits::FDS_PER_SESSION_ON_POSTGRES,
        }
    }

    /// Every phone with a record or a session (credentials).
    pub async fn known_phones(&self) -> Result<BTreeSet<Phone>, StorageError> {
        match self {
            PhoneStore::Files(layout) => {
                let layout = layout.clone();
                Ok(
                    tokio::task::spawn_blocking(move || phone_records::known_phones(&layout))
                        .await
                        .unwrap_or_default(),
                )
            }
            PhoneStore::Postgres(db) => db.known_phones().await,
        }
    }

    /// The phone's record; `None` when it has none.
    pub async fn load_record(&self, phone: &Phone) -> Result<Option<PhoneRecord>, StorageError> {
        match self {
            PhoneStore::Files(layout) => on_files(layout, phone, phone_records::load).await,
            PhoneStore::Postgres(db) => db.load_record(phone).await,
        }
    }

    /// Replaces the phone's record, durably, before it returns.
    pub async fn save_record(
        &self,
        phone: &Phone,
        record: &PhoneRecord,
    ) -> Result<(), StorageError> {
        match self {
            PhoneStore::Files(layout) => {
                let record = record.clone();
                on_files(layout, phone, move |l, p| {
                    phone_records::save(l, p, &record)
                })
                .await
            }
            PhoneStore::Postgres(db) => db.save_record(phone, record).await,
        }
    }

    /// The phone's outbox (empty when it has none).
    pub async fn load_outbox(&self, phone: &Phone) -> Result<Outbox, StorageError> {
        match self {
            PhoneStore::Files(layout) => on_files(layout, phone, outbox_file::load).await,
            PhoneStore::Postgres(db) => db.load_outbox(phone).await,
        }
    }

    /// Replaces the phone's outbox, durably, before it returns: O(the
    /// queue), for writing a whole queue at once (an import). A session
    /// records each change instead (`record_outbox`).
    pub async fn save_outbox(&self, phone: &Phone, outbox: &Outbox) -> Result<(), StorageError> {
        match self {
            PhoneStore::Files(layout) => {
                let outbox = outbox.clone();
                on_files(layout, phone, move |l, p| outbox_file::save(l, p, &outbox)).await
            }
            PhoneStore::Postgres(db) => db.save_outbox(phone, outbox).await,
        }
    }

    /// Records one change of the phone's outbox, durably, before it
    /// returns; `after` is the queue with the change applied. On files it
    /// appends one line to the log (O(the change)); now and then the log is
    /// compacted to `after` (`outbox_file`): then it returns true.
    pub async fn record_outbox(
        &self,
        phone: &Phone,
        change: &OutboxChange,
        after: &Outbox,
    ) -> Result<bool, StorageError> {
        match self {
            PhoneStore::Files(layout) => {
                let line = outbox_file::encode_change(change)?;
                let (bytes, empty) = (after.bytes(), after.is_empty());
                let appended = on_files(layout, phone, move |l, p| {
                    outbox_file::append(l, p, &line, bytes, empty)
                })
                .await?;
                if appended == outbox_file::Appended::WantsCompaction {
                    let after = after.clone();
                    on_files(layout, phone, move |l, p| outbox_file::save(l, p, &after)).await?;
                    return Ok(true);
                }
                Ok(false)
            }
            PhoneStore::Postgres(db) => {
                db.record_outbox(phone, change, after).await.map(|()| false)
            }
        }
    }

    /// The statuses of the phone's recent messages.
    pub async fn load_statuses(&self, phone: &Phone) -> Result<MessageStatuses, StorageError> {
        match self {
            PhoneStore::Files(layout) => on_files(layout, phone, message_status_file::load).await,
            PhoneStore::Postgres(db) => db.load_statuses(phone).await,
        }
    }

    /// Replaces the statuses of the phone's recent messages.
    pub async fn save_statuses(
        &self,
        phone: &Phone,
        statuses: &MessageStatuses,
    ) -> Result<(), StorageError> {
        match self {
            PhoneStore::Files(layout) => {
                let statuses = statuses.clone();
                on_files(layout, phone, move |l, p| {
                    message_status_file::save(l, p, &statuses)
                })
                .await
            }
            PhoneStore::Postgres(db) => db.save_statuses(phone, statuses).await,
        }
    }

    /// The names the phone's contacts go by (JID → name).
    pub async fn load_contacts(
        &self,
        phone: &Phone,
    ) -> Result<BTreeMap<String, String>, StorageError> {
        match self {
            PhoneStore::Files(layout) => on_files(layout, phone, contacts::load).await,
            PhoneStore::Postgres(db) => db.load_contacts(phone).await,
        }
    }

    /// Replaces the names the phone's contacts go by. They are kept only
    /// while the phone has a session (credentials): a save racing a reset
    /// never brings back what the reset removed.
    pub async fn save_contacts(
        &self,
        phone: &Phone,
        names: &BTreeMap<String, String>,
    ) -> Result<(), StorageError> {
        match self {
            PhoneStore::Files(layout) => {
                let names = names.clone();
                on_files(layout, phone, move |l, p| contacts::save(l, p, &names)).await
            }
            PhoneStore::Postgres(db) => db.save_contacts(phone, names).await,
        }
    }
}

impl PhoneStore {
    /// What each target of a reset plan holds now (for `before_clear` hooks).
    pub async fn reset_inventory(
        &self,
        phone: &Phone,
        plan: &ResetPlan,
    ) -> Result<Vec<PlannedRemoval>, StorageError> {
        match self {
            PhoneStore::Files(layout) => {
                let (layout, plan) = (layout.clone(), plan.clone());
                let root = layout.root().to_owned();
                tokio::task::spawn_blocking(move || purge::plan_inventory(&layout, &plan))
                    .await
                    .map_err(|e| StorageError::io(&root, std::io::Error::other(e)))
            }
            PhoneStore::Postgres(db) => db.reset_inventory(phone, plan).await,
        }
    }

    /// Removes one target of a reset plan (or of a disconnect), and says
    /// what was there. Removing what is already gone succeeds.
    pub async fn purge_target(
        &self,
        phone: &Phone,
        target: &PurgeTarget,
    ) -> Result<RemovedTarget, StorageError> {
        match self {
            PhoneStore::Files(layout) => {
                let layout = layout.clone();
                let (kind, path) = (target.kind, target.path.clone());
                let at = path.clone();
                tokio::task::spawn_blocking(move || purge::remove(&layout, kind, &path))
                    .await
                    .map_err(|e| StorageError::io(&at, std::io::Error::other(e)))?
            }
            PhoneStore::Postgres(db) => db.purge_target(phone, target.kind).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::DesiredState;
    use crate::core::reset_plan::PurgeTargetKind;
    use crate::core::tenant::TenantId;
    use lila_pgstore::phone_state::StateKind;

    fn phone() -> Phone {
        Phone::parse("51987654321").unwrap()
    }

    /// What any store must do: give back what it was given, know the phone,
    /// and keep contacts only while the phone has a session (`open_session`
    /// makes one, as the WhatsApp client does when it first stores credentials).
    async fn keeps_what_it_is_given(
        store: &PhoneStore,
        open_session: impl std::future::Future<Output = ()>,
    ) {
        let phone = phone();
        assert_eq!(store.load_record(&phone).await.unwrap(), None);
        assert!(store.load_outbox(&phone).await.unwrap().is_empty());
        let owner = TenantId::parse("acme").ok();
        let record = PhoneRecord::new(owner, DesiredState::Running, 1_700_000_000_000);
        store.save_record(&phone, &record).await.unwrap();
        assert_eq!(store.load_record(&phone).await.unwrap(), Some(record));
        assert_eq!(
            store.known_phones().await.unwrap(),
            BTreeSet::from([phone.clone()])
        );
        let mut names = BTreeMap::new();
        names.insert("51900000001@s.whatsapp.net".to_owned(), "Ana".to_owned());
        store.save_contacts(&phone, &names).await.unwrap();
        assert!(store.load_contacts(&phone).await.unwrap().is_empty());
        open_session.await;
        store.save_contacts(&phone, &names).await.unwrap();
        assert_eq!(store.load_contacts(&phone).await.unwrap(), names);
        let mut statuses = MessageStatuses::default();
        statuses.queued("3EB0A1B2C3D4E5F6A7B8C9D0", "51900000001@s.whatsapp.net", 1);
        store.save_statuses(&phone, &statuses).await.unwrap();
        assert_eq!(
            store.load_statuses(&phone).await.unwrap().len(),
            statuses.len()
        );
        let outbox = record_some_changes(store).await;
        assert_eq!(store.load_outbox(&phone).await.unwrap(), outbox);
    }

    /// Three messages queued one change at a time, the head tried twice and
    /// then sent: the queue the store must give back (the second and third,
    /// in order, untried).
    async fn record_some_changes(store: &PhoneStore) -> Outbox {
        let mut outbox = Outbox::default();
        let record = |outbox: &mut Outbox, change: OutboxChange| {
            outbox.replay(change.clone());
            (change, outbox.clone())
        };
        let mut changes = Vec::new();
        for (i, text) in ["uno", "dos", "tres"].into_iter().enumerate() {
            let to = crate::core::outbox::Recipient::parse("51900000001").unwrap();
            let id = format!("3EB0A1B2C3D4E5F6A7B8C9E{i}");
            let message = crate::core::outbox::OutboxMessage::new(id, to, text.into(), 1).unwrap();
            changes.push(record(&mut outbox, OutboxChange::Queued(message)));
        }
        let head = "3EB0A1B2C3D4E5F6A7B8C9E0".to_owned();
        for attempts in [1, 2] {
            let id = head.clone();
            changes.push(record(
                &mut outbox,
                OutboxChange::Attempted { id, attempts },
            ));
        }
        changes.push(record(&mut outbox, OutboxChange::Left { id: head }));
        for (change, after) in &changes {
            store.record_outbox(&phone(), change, after).await.unwrap();
        }
        assert_eq!(outbox.len(), 2);
        assert!(outbox.iter().all(|m| m.attempts == 0));
        outbox
    }

    #[tokio::test]
    async fn the_file_store_keeps_what_it_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let layout = DataLayout::new(dir.path());
        let store = PhoneStore::files(layout.clone());
        keeps_what_it_is_given(&store, async {
            std::fs::create_dir_all(layout.session_dir(&phone())).unwrap();
        })
        .await;
    }

    /// A fresh database on the tests' throwaway PostgreSQL server, migrated.
    async fn fresh_database() -> lila_pgstore::Pool {
        let server =
            lila_pgstore::testing::TempPostgres::shared().unwrap_or_else(|e| panic!("{e}"));
        let url = server.create_database().unwrap();
        let pool = lila_pgstore::connect_pool(&url, 4).unwrap();
        lila_pgstore::migrate(&pool).await.unwrap();
        pool
    }

    /// A fresh database and a store of this node holding `phone()`'s lease.
    async fn holding_the_phone() -> (lila_pgstore::Pool, PgPhoneStore, lila_pgstore::Fence) {
        let pool = fresh_database().await;
        let db = PgPhoneStore::new(pool.clone());
        let fence = lila_pgstore::claim_lease(&pool, phone().as_str(), "node-a", LEASE)
            .await
            .unwrap()
            .unwrap();
        db.hold(&phone(), fence.clone());
        (pool, db, fence)
    }

    #[tokio::test]
    async fn the_postgres_store_keeps_what_it_is_given() {
        use wacore::store::traits::DeviceStore;
        let (pool, db, fence) = holding_the_phone().await;
        let store = PhoneStore::Postgres(db);
        keeps_what_it_is_given(&store, async {
            lila_pgstore::PgBackend::new(pool.clone(), fence)
                .create()
                .await
                .unwrap();
        })
        .await;
    }

    const LEASE: std::time::Duration = std::time::Duration::from_secs(30);

    /// In a cluster a change of the outbox is one row (O(the message)): the
    /// table holds a row per queued message, a sent one's row is gone; an
    /// outbox stored the old way (one `phone_state` value) is moved into
    /// rows at load under the lease; and a reset's outbox part empties it.
    #[tokio::test]
    async fn the_postgres_outbox_is_a_row_per_message_and_a_reset_empties_it() {
        let (pool, db, fence) = holding_the_phone().await;
        let store = PhoneStore::Postgres(db.clone());
        let outbox = record_some_changes(&store).await;
        let rows = |pool: lila_pgstore::Pool| async move {
            let client = pool.get().await.unwrap();
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM outbox_messages WHERE phone = $1),
                            (SELECT count(*) FROM phone_state WHERE phone = $1 AND kind = 'outbox')",
                    &[&phone().as_str()],
                )
                .await
                .unwrap();
            (row.get::<_, i64>(0), row.get::<_, i64>(1))
        };
        assert_eq!(rows(pool.clone()).await, (2, 0));

        // An outbox stored by an older lila: one phone_state value.
        let old = outbox_file::encode_bytes(&outbox).unwrap().unwrap();
        lila_pgstore::outbox::replace(&pool, &fence, &[])
            .await
            .unwrap();
        lila_pgstore::phone_state::save_state(&pool, &fence, StateKind::Outbox, Some(&old))
            .await
            .unwrap();
        assert_eq!(rows(pool.clone()).await, (0, 1));
        assert_eq!(store.load_outbox(&phone()).await.unwrap(), outbox);
        assert_eq!(rows(pool.clone()).await, (2, 0), "moved into rows");
        assert_eq!(store.load_outbox(&phone()).await.unwrap(), outbox);

        // A reset's outbox part removes the rows, and says it did.
        let layout = DataLayout::new(std::path::Path::new("/nonexistent"));
        let plan = ResetPlan::for_phone(&layout, &phone());
        let inventory = db.reset_inventory(&phone(), &plan).await.unwrap();
        let outbox_target = inventory
            .iter()
            .find(|t| t.kind == PurgeTargetKind::Outbox)
            .unwrap();
        assert_eq!(outbox_target.files.len(), 1, "{inventory:?}");
        let session = db
            .purge_target(&phone(), PurgeTargetKind::SessionDir)
            .await
            .unwrap();
        assert!(!session.existed, "the session part leaves the outbox alone");
        assert_eq!(rows(pool.clone()).await, (2, 0));
        let removed = db
            .purge_target(&phone(), PurgeTargetKind::Outbox)
            .await
            .unwrap();
        assert!(removed.existed);
        assert_eq!(rows(pool.clone()).await, (0, 0));
        assert!(store.load_outbox(&phone()).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_postgres_store_writes_a_phone_only_under_its_lease() {
        let pool = fresh_database().await;
        let db = PgPhoneStore::new(pool.clone());
        let record = PhoneRecord::new(None, DesiredState::Running, 1);
        // Not held: refused, nothing written.
        let refused = db.save_record(&phone(), &record).await;
        assert!(
            matches!(refused, Err(StorageError::LeaseLost { .. })),
            "{refused:?}"
        );
        let fence = lila_pgstore::claim_lease(&pool, phone().as_str(), "node-a", LEASE)
            .await
            .unwrap()
            .unwrap();
        db.hold(&phone(), fence);
        db.save_record(&phone(), &record).await.unwrap();
        // Another node took the phone (the lease expired): this node's write fails.
        pool.get()
            .await
            .unwrap()
            .execute(
                "UPDATE leases SET expires_at = now() - interval '1 second'",
                &[],
            )
            .await
            .unwrap();
        let b = lila_pgstore::claim_lease(&pool, phone().as_str(), "node-b", LEASE)
            .await
            .unwrap();
        assert!(b.is_some());
        let mut stopped = record.clone();
        stopped.desired = DesiredState::Stopped;
        let lost = db.save_record(&phone(), &stopped).await;
        assert!(
            matches!(lost, Err(StorageError::LeaseLost { .. })),
            "{lost:?}"
        );
        assert_eq!(db.load_record(&phone()).await.unwrap(), Some(record));
        // Released: refused without asking the database.
        db.release(&phone());
        assert!(matches!(
            db.save_outbox(&phone(), &Outbox::default()).await,
            Err(StorageError::LeaseLost { .. })
        ));
    }
}
