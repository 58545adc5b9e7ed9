//! Resets asked through the database, for a holder the asking node cannot
//! reach over HTTP: the request, then the holder's answer (see migration 5).

use deadpool_postgres::Pool;

use crate::error::PgStoreError;

/// Writes a request to reset `target` on behalf of `caller` (a label the
/// host reads back); its id.
pub async fn request(pool: &Pool, target: &str, caller: &str) -> Result<i64, PgStoreError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "INSERT INTO reset_requests (target, caller) VALUES ($1, $2) RETURNING id",
            &[&target, &caller],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// The request `id`: its target and caller, while it is unanswered.
pub async fn pending(pool: &Pool, id: i64) -> Result<Option<(String, String)>, PgStoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT target, caller FROM reset_requests WHERE id = $1 AND status IS NULL",
            &[&id],
        )
        .await?;
    Ok(match row {
        Some(row) => Some((row.try_get(0)?, row.try_get(1)?)),
        None => None,
    })
}

/// The holder's answer to request `id`: an HTTP status and a JSON body.
pub async fn answer(pool: &Pool, id: i64, status: u16, body: &str) -> Result<(), PgStoreError> {
    let client = pool.get().await?;
    client
        .execute(
            "UPDATE reset_requests SET status = $2, answer = $3 WHERE id = $1",
            &[&id, &i32::from(status), &body],
        )
        .await?;
    Ok(())
}

/// The answer to request `id`, once there is one. Reading it removes the
/// request: it is answered once.
pub async fn take_answer(pool: &Pool, id: i64) -> Result<Option<(u16, String)>, PgStoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "DELETE FROM reset_requests WHERE id = $1 AND status IS NOT NULL
             RETURNING status, answer",
            &[&id],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let status: i32 = row.try_get(0)?;
    let answer: Option<String> = row.try_get(1)?;
    let status = u16::try_from(status)
        .map_err(|_| PgStoreError::Invalid(format!("an answer's status {status}")))?;
    Ok(Some((status, answer.unwrap_or_default())))
}

/// Forgets request `id` (the asking node gave up waiting).
pub async fn forget(pool: &Pool, id: i64) -> Result<(), PgStoreError> {
    let client = pool.get().await?;
    client
        .execute("DELETE FROM reset_requests WHERE id = $1", &[&id])
        .await?;
    Ok(())
}
