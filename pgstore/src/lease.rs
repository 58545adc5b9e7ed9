//! Phone leases and the fencing token every write of a phone's state carries.
//!
//! A lease row `leases(phone, node_id, epoch, expires_at)` names the one node
//! that may run a phone. Each claim takes a fresh epoch from a cluster-wide
//! sequence, so epochs only grow, even across a `delete_phone` that removed the
//! row: an old holder's epoch never comes back. A node writes a phone's state
//! only inside a transaction that first locks the lease row `FOR SHARE` with
//! its own node and epoch ([`check_fence`]); a takeover updates that row, so it
//! waits for in-flight writes of the old holder and every later one fails.

use std::time::Duration;

use deadpool_postgres::{Pool, Transaction};

use crate::error::PgStoreError;

/// Who may write a phone's state: the node holding its lease, at that epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub phone: String,
    pub node_id: String,
    pub epoch: i64,
}

impl Fence {
    /// The error a write under this fence returns once the lease is gone.
    pub fn lost(&self) -> PgStoreError {
        PgStoreError::LeaseLost {
            phone: self.phone.clone(),
            node_id: self.node_id.clone(),
            epoch: self.epoch,
        }
    }
}

/// Checks, inside the caller's transaction, that `fence` still holds the
/// phone's lease, and keeps the row share-locked until the transaction ends,
/// so no takeover can commit in between.
pub async fn check_fence(tx: &Transaction<'_>, fence: &Fence) -> Result<(), PgStoreError> {
    // Cached per connection: the check costs one round trip, not two.
    let statement = tx
        .prepare_cached(
            "SELECT 1 FROM leases
             WHERE phone = $1 AND node_id = $2 AND epoch = $3 AND expires_at > now()
             FOR SHARE",
        )
        .await?;
    let held = tx
        .query_opt(&statement, &[&fence.phone, &fence.node_id, &fence.epoch])
        .await?;
    match held {
        Some(_) => Ok(()),
        None => Err(fence.lost()),
    }
}

fn seconds(ttl: Duration) -> f64 {
    ttl.as_secs_f64()
}

/// Claims the phone's lease for `node_id` for `ttl`, when it is free, expired,
/// or already this node's (a restarted node re-claims with a new epoch, which
/// fences its own previous incarnation). `None` when another node holds it.
pub async fn claim_lease(
    pool: &Pool,
    phone: &str,
    node_id: &str,
    ttl: Duration,
) -> Result<Option<Fence>, PgStoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "INSERT INTO leases (phone, node_id, epoch, expires_at)
             VALUES ($1, $2, nextval('lease_epochs'), now() + make_interval(secs => $3))
             ON CONFLICT (phone) DO UPDATE
                SET node_id = excluded.node_id,
                    epoch = excluded.epoch,
                    expires_at = excluded.expires_at
                WHERE leases.expires_at <= now() OR leases.node_id = excluded.node_id
             RETURNING epoch",
            &[&phone, &node_id, &seconds(ttl)],
        )
        .await?;
    match row {
        Some(row) => Ok(Some(Fence {
            phone: phone.to_owned(),
            node_id: node_id.to_owned(),
            epoch: row.try_get(0)?,
        })),
        None => Ok(None),
    }
}

/// Extends a lease still held under `fence` to `ttl` from now. An expired
/// lease is not renewed: its holder already counted as gone and must stop.
pub async fn renew_lease(pool: &Pool, fence: &Fence, ttl: Duration) -> Result<(), PgStoreError> {
    let client = pool.get().await?;
    let renewed = client
        .execute(
            "UPDATE leases SET expires_at = now() + make_interval(secs => $4)
             WHERE phone = $1 AND node_id = $2 AND epoch = $3 AND expires_at > now()",
            &[&fence.phone, &fence.node_id, &fence.epoch, &seconds(ttl)],
        )
        .await?;
    if renewed == 1 {
        Ok(())
    } else {
        Err(fence.lost())
    }
}

/// Gives the phone's lease up at once (its row expires now), when `fence`
/// still holds it: another node may claim the phone without waiting for
/// the lease to run out. Returns whether it was still held.
pub async fn release_lease(pool: &Pool, fence: &Fence) -> Result<bool, PgStoreError> {
    let client = pool.get().await?;
    let released = client
        .execute(
            "UPDATE leases SET expires_at = now()
             WHERE phone = $1 AND node_id = $2 AND epoch = $3 AND expires_at > now()",
            &[&fence.phone, &fence.node_id, &fence.epoch],
        )
        .await?;
    Ok(released == 1)
}
