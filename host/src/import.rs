//! `lila import`: a single node's data root into PostgreSQL, for cluster
//! mode. For each phone: its record, outbox, message statuses, and its
//! WhatsApp store (credentials and Signal state, from its SQLite file), then
//! its contacts (kept only where a device exists). Each phone is written
//! under a lease the import claims and gives up at once, so an import never
//! writes a phone a running node holds. Run it with lila stopped; running it
//! again rewrites the same rows.

use std::time::Duration;

use lila_pgstore::import::{ImportError, import_sqlite_store};
use lila_pgstore::{PgBackend, PgStoreError, Pool};

use crate::layout::DataLayout;
use crate::phone::Phone;
use crate::storage::StorageError;
use crate::storage::phone_store::PhoneStore;
use crate::storage::postgres_store::PgPhoneStore;

/// How long the import may hold one phone (it gives the lease up at once).
const IMPORT_LEASE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ImportRootError {
    #[error("the database: {0}")]
    Database(#[from] PgStoreError),
    #[error("phone {phone}: {source}")]
    Phone {
        phone: Phone,
        #[source]
        source: PhoneImportError,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PhoneImportError {
    #[error("another node holds this phone now; stop every lila node before importing")]
    Held,
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("its WhatsApp store: {0}")]
    WhatsAppStore(#[from] ImportError),
    #[error(transparent)]
    Database(#[from] PgStoreError),
}

/// What was imported.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub phones: usize,
    /// Phones whose WhatsApp store (a paired or pairing session) came along.
    pub stores: usize,
    /// Rows written into the WhatsApp store's tables, all phones together.
    pub store_rows: u64,
    /// Messages still to send, all outboxes together.
    pub pending_messages: usize,
}

/// Imports every phone of the data root at `layout` into the (migrated)
/// database behind `pool`, as node `node_id`.
pub async fn import_data_root(
    layout: &DataLayout,
    pool: &Pool,
    node_id: &str,
) -> Result<ImportSummary, ImportRootError> {
    lila_pgstore::migrate(pool).await?;
    let files = PhoneStore::files(layout.clone());
    let db = PgPhoneStore::new(pool.clone());
    let mut summary = ImportSummary::default();
    let phones = files.known_phones().await.unwrap_or_default();
    for phone in phones {
        import_phone(layout, &files, &db, pool, node_id, &phone, &mut summary)
            .await
            .map_err(|source| ImportRootError::Phone {
                phone: phone.clone(),
                source,
            })?;
    }
    Ok(summary)
}

async fn import_phone(
    layout: &DataLayout,
    files: &PhoneStore,
    db: &PgPhoneStore,
    pool: &Pool,
    node_id: &str,
    phone: &Phone,
    summary: &mut ImportSummary,
) -> Result<(), PhoneImportError> {
    let fence = lila_pgstore::claim_lease(pool, phone.as_str(), node_id, IMPORT_LEASE)
        .await?
        .ok_or(PhoneImportError::Held)?;
    db.hold(phone, fence.clone());
    let result = async {
        if let Some(record) = files.load_record(phone).await? {
            db.save_record(phone, &record).await?;
        }
        let outbox = files.load_outbox(phone).await?;
        db.save_outbox(phone, &outbox).await?;
        db.save_statuses(phone, &files.load_statuses(phone).await?)
            .await?;
        let store = layout.store_file(phone);
        if store.is_file() {
            let backend = PgBackend::new(pool.clone(), fence.clone());
            let report = import_sqlite_store(&store, &backend).await?;
            summary.stores += 1;
            summary.store_rows += report.rows.values().sum::<u64>();
        }
        db.save_contacts(phone, &files.load_contacts(phone).await?)
            .await?;
        summary.phones += 1;
        summary.pending_messages += outbox.len();
        Ok::<(), PhoneImportError>(())
    }
    .await;
    db.release(phone);
    lila_pgstore::release_lease(pool, &fence).await?;
    result
}
