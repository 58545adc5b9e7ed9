//! The plugins' key-value stores (cluster mode): one scope per (plugin,
//! tenant), each entry a row. No lease guards them: a plugin's state
//! belongs to no phone, and a scope's writes are serialized by an advisory
//! lock on its name, so the size limits hold whichever nodes write at once.

use deadpool_postgres::Pool;

use crate::error::PgStoreError;

/// The value of `key` in `scope`, if set.
pub async fn get(pool: &Pool, scope: &str, key: &str) -> Result<Option<String>, PgStoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT value FROM plugin_state WHERE scope = $1 AND key = $2",
            &[&scope, &key],
        )
        .await?;
    Ok(match row {
        Some(row) => Some(row.try_get(0)?),
        None => None,
    })
}

/// Sets `key` in `scope` to `value`, when `check` (given how many entries
/// the scope has and whether `key` is one of them) allows it; its refusal
/// comes back as [`PgStoreError::Refused`] with its sentence.
pub async fn set(
    pool: &Pool,
    scope: &str,
    key: &str,
    value: &str,
    check: impl FnOnce(usize, bool) -> Result<(), String>,
) -> Result<(), PgStoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&scope])
        .await?;
    let row = tx
        .query_one(
            "SELECT count(*), coalesce(bool_or(key = $2), false)
             FROM plugin_state WHERE scope = $1",
            &[&scope, &key],
        )
        .await?;
    let entries: i64 = row.try_get(0)?;
    let exists: bool = row.try_get(1)?;
    check(usize::try_from(entries).unwrap_or(usize::MAX), exists).map_err(PgStoreError::Refused)?;
    tx.execute(
        "INSERT INTO plugin_state (scope, key, value) VALUES ($1, $2, $3)
         ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value, updated_at = now()",
        &[&scope, &key, &value],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Removes `key` from `scope` (nothing when it is not set).
pub async fn remove(pool: &Pool, scope: &str, key: &str) -> Result<(), PgStoreError> {
    let client = pool.get().await?;
    client
        .execute(
            "DELETE FROM plugin_state WHERE scope = $1 AND key = $2",
            &[&scope, &key],
        )
        .await?;
    Ok(())
}
