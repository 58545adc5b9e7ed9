//! Cluster membership and the lease loop's statements: which nodes are
//! alive and where they are reached, renewing every lease a node holds in
//! one statement, finding phones that want a node, and who holds a phone.
//!
//! Liveness is judged by the database's clock only (`seen_at`,
//! `expires_at` against `now()`), so nodes whose clocks disagree still
//! agree on who is alive and who holds what.

use std::time::Duration;

use deadpool_postgres::Pool;

use crate::error::PgStoreError;
use crate::lease::Fence;

fn seconds(ttl: Duration) -> f64 {
    ttl.as_secs_f64()
}

/// A node as the cluster sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    pub node_id: String,
    /// Where the other nodes reach it (`LILA_NODE_URL`).
    pub url: String,
    /// Seconds since it last said it was alive, by the database's clock.
    pub seen_secs_ago: f64,
    /// Leases it holds that have not expired.
    pub leases: i64,
}

impl NodeRow {
    /// Seen within `ttl`: counted in the fair share, asked for its sessions.
    pub fn alive_within(&self, ttl: Duration) -> bool {
        self.seen_secs_ago < ttl.as_secs_f64()
    }
}

/// Says that `node_id` is alive and reached at `url` (inserted or refreshed).
pub async fn heartbeat(pool: &Pool, node_id: &str, url: &str) -> Result<(), PgStoreError> {
    let client = pool.get().await?;
    client
        .execute(
            "INSERT INTO nodes (node_id, url) VALUES ($1, $2)
             ON CONFLICT (node_id) DO UPDATE SET url = excluded.url, seen_at = now()",
            &[&node_id, &url],
        )
        .await?;
    Ok(())
}

/// Removes the node's row: it is leaving, and counts no more in anyone's
/// fair share.
pub async fn leave(pool: &Pool, node_id: &str) -> Result<(), PgStoreError> {
    let client = pool.get().await?;
    client
        .execute("DELETE FROM nodes WHERE node_id = $1", &[&node_id])
        .await?;
    Ok(())
}

/// Retires a node known to be gone (its process ended; its successor on
/// the same data directory holds the lock that proves it): its live leases
/// expire now, so any node may claim its phones at once instead of after a
/// ttl, and its row goes. Returns how many leases it still held.
pub async fn retire(pool: &Pool, node_id: &str) -> Result<u64, PgStoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let freed = tx
        .execute(
            "UPDATE leases SET expires_at = now()
             WHERE node_id = $1 AND expires_at > now()",
            &[&node_id],
        )
        .await?;
    tx.execute("DELETE FROM nodes WHERE node_id = $1", &[&node_id])
        .await?;
    tx.commit().await?;
    Ok(freed)
}

/// Every node with a row, the most recently seen first, with how many live
/// leases each holds.
pub async fn nodes(pool: &Pool) -> Result<Vec<NodeRow>, PgStoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT n.node_id, n.url,
                    extract(epoch FROM now() - n.seen_at)::float8,
                    (SELECT count(*) FROM leases l
                      WHERE l.node_id = n.node_id AND l.expires_at > now())
             FROM nodes n ORDER BY n.seen_at DESC, n.node_id",
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(NodeRow {
                node_id: row.try_get(0)?,
                url: row.try_get(1)?,
                seen_secs_ago: row.try_get(2)?,
                leases: row.try_get(3)?,
            })
        })
        .collect()
}

/// How many nodes were seen within `ttl`, and how many phones want a node:
/// the two terms of a node's fair share.
pub async fn census(pool: &Pool, ttl: Duration) -> Result<(i64, i64), PgStoreError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM nodes
                      WHERE seen_at > now() - make_interval(secs => $1)),
                    (SELECT count(*) FROM phone_records WHERE wants_node)",
            &[&seconds(ttl)],
        )
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// Extends, in one statement, every lease in `held` that is still held
/// under its fence, to `ttl` from now. Returns the phones renewed; a phone
/// of `held` missing from the answer is lost (expired, or taken over).
pub async fn renew_leases(
    pool: &Pool,
    node_id: &str,
    held: &[Fence],
    ttl: Duration,
) -> Result<Vec<String>, PgStoreError> {
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let phones: Vec<&str> = held.iter().map(|f| f.phone.as_str()).collect();
    let epochs: Vec<i64> = held.iter().map(|f| f.epoch).collect();
    let client = pool.get().await?;
    let rows = client
        .query(
            "UPDATE leases l SET expires_at = now() + make_interval(secs => $4)
             FROM unnest($2::text[], $3::int8[]) AS h(phone, epoch)
             WHERE l.phone = h.phone AND l.epoch = h.epoch
               AND l.node_id = $1 AND l.expires_at > now()
             RETURNING l.phone",
            &[&node_id, &phones, &epochs, &seconds(ttl)],
        )
        .await?;
    rows.iter()
        .map(|row| row.try_get::<_, String>(0).map_err(PgStoreError::from))
        .collect()
}

/// Up to `limit` phones that want a node and have no live lease, oldest
/// record first (a claim may still lose the race for any of them).
pub async fn free_phones(pool: &Pool, limit: i64) -> Result<Vec<String>, PgStoreError> {
    if limit <= 0 {
        return Ok(Vec::new());
    }
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT r.phone FROM phone_records r
             LEFT JOIN leases l ON l.phone = r.phone AND l.expires_at > now()
             WHERE r.wants_node AND l.phone IS NULL
             ORDER BY r.updated_at, r.phone
             LIMIT $1",
            &[&limit],
        )
        .await?;
    rows.iter()
        .map(|row| row.try_get::<_, String>(0).map_err(PgStoreError::from))
        .collect()
}

/// The node holding a live lease on `phone`, with the address it is
/// reached at (`None` when no node holds it).
pub async fn holder(pool: &Pool, phone: &str) -> Result<Option<(String, String)>, PgStoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT l.node_id, coalesce(n.url, '') FROM leases l
             LEFT JOIN nodes n ON n.node_id = l.node_id
             WHERE l.phone = $1 AND l.expires_at > now()",
            &[&phone],
        )
        .await?;
    Ok(match row {
        Some(row) => Some((row.try_get(0)?, row.try_get(1)?)),
        None => None,
    })
}

/// How many phones want a node but have no live lease: waiting for a
/// claim (a node just died, or every node is at its fair share).
pub async fn unheld(pool: &Pool) -> Result<i64, PgStoreError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT count(*) FROM phone_records r
             WHERE r.wants_node AND NOT EXISTS
                (SELECT 1 FROM leases l WHERE l.phone = r.phone AND l.expires_at > now())",
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}
