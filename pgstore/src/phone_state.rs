//! The host's own per-phone state beside the WhatsApp store: the phone's
//! record (owner, desired state, reset tombstone, purge journal) and its
//! outbox, message statuses and contacts.
//!
//! Each value is the bytes of its versioned format, the same bytes the
//! single-node files hold, so both of the host's backends share one
//! encoding and this crate never needs the host's types. Writes are fenced
//! like every write of a phone's state (see the crate's invariant); reads
//! are not.

use deadpool_postgres::Pool;

use crate::error::PgStoreError;
use crate::lease::{Fence, check_fence};

/// The kinds of state a reset removes with the phone (`phone_state.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    Outbox,
    Statuses,
    Contacts,
}

impl StateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StateKind::Outbox => "outbox",
            StateKind::Statuses => "statuses",
            StateKind::Contacts => "contacts",
        }
    }
}

/// The phone's record, if it has one.
pub async fn load_record(pool: &Pool, phone: &str) -> Result<Option<Vec<u8>>, PgStoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt("SELECT body FROM phone_records WHERE phone = $1", &[&phone])
        .await?;
    Ok(match row {
        Some(row) => Some(row.try_get(0)?),
        None => None,
    })
}

/// Replaces the phone's record, under its lease. `wants_node`: whether some
/// node should hold the phone (its session is meant to run, or a reset of
/// it is unfinished); the lease loops claim only such phones.
pub async fn save_record(
    pool: &Pool,
    fence: &Fence,
    body: &[u8],
    wants_node: bool,
) -> Result<(), PgStoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    check_fence(&tx, fence).await?;
    tx.execute(
        "INSERT INTO phone_records (phone, body, wants_node) VALUES ($1, $2, $3)
         ON CONFLICT (phone) DO UPDATE
            SET body = excluded.body, wants_node = excluded.wants_node, updated_at = now()",
        &[&fence.phone, &body, &wants_node],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The phone's state of `kind`, if any is stored.
pub async fn load_state(
    pool: &Pool,
    phone: &str,
    kind: StateKind,
) -> Result<Option<Vec<u8>>, PgStoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT body FROM phone_state WHERE phone = $1 AND kind = $2",
            &[&phone, &kind.as_str()],
        )
        .await?;
    Ok(match row {
        Some(row) => Some(row.try_get(0)?),
        None => None,
    })
}

/// Replaces the phone's state of `kind` under its lease; `None` removes it
/// ("empty" is stored as no row, as it is stored as no file).
pub async fn save_state(
    pool: &Pool,
    fence: &Fence,
    kind: StateKind,
    body: Option<&[u8]>,
) -> Result<(), PgStoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    check_fence(&tx, fence).await?;
    match body {
        Some(body) => {
            tx.execute(
                "INSERT INTO phone_state (phone, kind, body) VALUES ($1, $2, $3)
                 ON CONFLICT (phone, kind) DO UPDATE SET body = excluded.body, updated_at = now()",
                &[&fence.phone, &kind.as_str(), &body],
            )
            .await?
        }
        None => {
            tx.execute(
                "DELETE FROM phone_state WHERE phone = $1 AND kind = $2",
                &[&fence.phone, &kind.as_str()],
            )
            .await?
        }
    };
    tx.commit().await?;
    Ok(())
}

/// Stores the phone's contacts under its lease, only while the phone has a
/// session (a device row): a save racing a reset never brings back what
/// the reset removed. Returns whether they were stored.
pub async fn save_contacts_if_session(
    pool: &Pool,
    fence: &Fence,
    body: &[u8],
) -> Result<bool, PgStoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    check_fence(&tx, fence).await?;
    let stored = tx
        .execute(
            "INSERT INTO phone_state (phone, kind, body)
             SELECT $1, 'contacts', $2 WHERE EXISTS (SELECT 1 FROM wa_device WHERE phone = $1)
             ON CONFLICT (phone, kind) DO UPDATE SET body = excluded.body, updated_at = now()",
            &[&fence.phone, &body],
        )
        .await?;
    tx.commit().await?;
    Ok(stored == 1)
}

/// Every phone with a record or a WhatsApp device, sorted.
pub async fn known_phones(pool: &Pool) -> Result<Vec<String>, PgStoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT phone FROM phone_records UNION SELECT phone FROM wa_device ORDER BY 1",
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| row.try_get::<_, String>(0).map_err(PgStoreError::from))
        .collect()
}

/// Every phone's record, sorted by phone: a cluster-wide listing's base.
pub async fn all_records(pool: &Pool) -> Result<Vec<(String, Vec<u8>)>, PgStoreError> {
    let client = pool.get().await?;
    let rows = client
        .query("SELECT phone, body FROM phone_records ORDER BY phone", &[])
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}
