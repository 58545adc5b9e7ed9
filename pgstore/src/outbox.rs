//! A phone's outbox as a row per queued message (`outbox_messages`), so
//! that every change costs O(the message): an enqueue inserts a row, a
//! retry rewrites its row, a message that left the queue (sent, or given
//! up) has its row deleted. Each body is the bytes of one message in the
//! host's format; this crate never decodes them.
//!
//! Writes are fenced like every write of a phone's state; reads are not.
//! An outbox stored before schema version 6 is one `phone_state` value of
//! kind `outbox`: [`replace`] removes it as it writes the rows, which is how
//! the host moves it over.

use deadpool_postgres::Pool;

use crate::error::PgStoreError;
use crate::lease::{Fence, check_fence};

/// The table this module keeps: a reset's outbox part empties it.
pub const TABLE: &str = "outbox_messages";

/// The bodies of the phone's queued messages, in the order they were queued.
pub async fn load(pool: &Pool, phone: &str) -> Result<Vec<Vec<u8>>, PgStoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT body FROM outbox_messages WHERE phone = $1 ORDER BY seq",
            &[&phone],
        )
        .await?;
    rows.iter()
        .map(|row| row.try_get(0).map_err(PgStoreError::from))
        .collect()
}

/// Appends message `id` to the phone's queue, under its lease.
pub async fn push(pool: &Pool, fence: &Fence, id: &str, body: &[u8]) -> Result<(), PgStoreError> {
    fenced(
        pool,
        fence,
        "INSERT INTO outbox_messages (phone, id, body) VALUES ($1, $2, $3)",
        id,
        Some(body),
    )
    .await
    .map(|_| ())
}

/// Rewrites message `id` (a retry counted), under the lease. False when the
/// queue has no row of that id.
pub async fn update(
    pool: &Pool,
    fence: &Fence,
    id: &str,
    body: &[u8],
) -> Result<bool, PgStoreError> {
    fenced(
        pool,
        fence,
        "UPDATE outbox_messages SET body = $3 WHERE phone = $1 AND id = $2",
        id,
        Some(body),
    )
    .await
    .map(|rows| rows == 1)
}

/// Removes message `id` from the queue, under the lease. False when the
/// queue has no row of that id.
pub async fn remove(pool: &Pool, fence: &Fence, id: &str) -> Result<bool, PgStoreError> {
    fenced(
        pool,
        fence,
        "DELETE FROM outbox_messages WHERE phone = $1 AND id = $2",
        id,
        None,
    )
    .await
    .map(|rows| rows == 1)
}

/// One fenced statement about message `id` of the fence's phone: `$1` the
/// phone, `$2` the id, `$3` the body when there is one. Returns the rows
/// it touched.
async fn fenced(
    pool: &Pool,
    fence: &Fence,
    sql: &str,
    id: &str,
    body: Option<&[u8]>,
) -> Result<u64, PgStoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    check_fence(&tx, fence).await?;
    let statement = tx.prepare_cached(sql).await?;
    let rows = match body {
        Some(body) => tx.execute(&statement, &[&fence.phone, &id, &body]).await?,
        None => tx.execute(&statement, &[&fence.phone, &id]).await?,
    };
    tx.commit().await?;
    Ok(rows)
}

/// Replaces the phone's whole queue with `messages` (id and body, in
/// order), under its lease, and removes an outbox stored the old way (a
/// `phone_state` value): an import, or the move of an old outbox.
pub async fn replace(
    pool: &Pool,
    fence: &Fence,
    messages: &[(String, Vec<u8>)],
) -> Result<(), PgStoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    check_fence(&tx, fence).await?;
    tx.execute(
        "DELETE FROM phone_state WHERE phone = $1 AND kind = 'outbox'",
        &[&fence.phone],
    )
    .await?;
    tx.execute(
        "DELETE FROM outbox_messages WHERE phone = $1",
        &[&fence.phone],
    )
    .await?;
    let insert = tx
        .prepare_cached("INSERT INTO outbox_messages (phone, id, body) VALUES ($1, $2, $3)")
        .await?;
    for (id, body) in messages {
        tx.execute(&insert, &[&fence.phone, id, body]).await?;
    }
    tx.commit().await?;
    Ok(())
}
