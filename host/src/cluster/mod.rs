//! Cluster mode: this node among others on one PostgreSQL database.
//!
//! A phone is run by the one node holding its lease (see `lila-pgstore`).
//! This module owns this node's side of that: its row in `nodes`, the
//! lease loop, and the answer to "who runs this phone?" for a request.
//!
//! - **The lease loop** runs every `ttl / 3`. It renews every lease the node
//!   holds in one statement; a phone whose lease was not renewed (expired
//!   during a pause, or taken over) is let go at once: its writes are
//!   refused from that moment and its client is stopped. When renewals
//!   fail for a whole ttl (the database is unreachable), every phone is let
//!   go, since other nodes may already run them. Then it claims free phones
//!   (records that want a node, with no live lease) up to its fair share,
//!   `ceil(phones wanting a node / live nodes)`, and adopts each: a fresh
//!   actor loads the phone's state from the database and resumes it, or
//!   finishes its interrupted reset. A phone held without wanting a node
//!   (stopped, or cleared) for two rounds is given back, and a node above
//!   its fair share hands one phone per round to a node below it.
//! - **Routing.** A request for a phone is served by the node holding it:
//!   here when this node holds it or can claim it, otherwise forwarded to
//!   the holder's `LILA_NODE_URL` (`forward.rs`, over the peer client of
//!   `peers.rs`; `http/forward.rs` is the middleware that asks). A reset
//!   whose holder cannot be reached over HTTP is asked of it through the
//!   database (`reset.rs`). `events.rs` relays every node's events.
//!
//! Everything here answers in typed values (`Route`, `Served`,
//! `ClusterError`, …); what the API shows of them, `http/` renders, and it
//! hands in the renderings the cluster stores or relays (a reset's answer,
//! an event's payload).
//!
//! Takeover after a node dies is bounded by the ttl plus one round plus a
//! reconnect: 9 + 3 + about 1 s. A node that gives phones back (it leaves,
//! or hands one over) wakes the others over LISTEN/NOTIFY, so they claim
//! them at once: that gap is a reconnect.

pub mod events;
pub mod forward;
pub mod peers;
pub mod proof;
pub mod reset;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lila_pgstore::{Pool, claim_lease, cluster, notify, release_lease};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use crate::core::record::DesiredState;
use crate::core::tenant::Caller;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::phone::Phone;
use crate::session::{IndexEntry, SessionView};
use crate::storage::postgres_store::PgPhoneStore;

/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(9);

/// The channel a node wakes the others' lease loops on.
const WAKE_CHANNEL: &str = "lila_nodes";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("the cluster's database is unreachable: {0}")]
    Database(#[from] lila_pgstore::PgStoreError),
    #[error("the cluster's phone state could not be read: {0}")]
    Storage(#[from] crate::storage::StorageError),
    /// The phone is held by another node although this request was already
    /// forwarded once: the phone just moved; a retry finds its new holder.
    #[error("the phone is moving between nodes; retry the request")]
    Moving,
    /// The node holding the phone did not answer a forwarded request (nor,
    /// for a reset, the one asked of it through the database).
    #[error("the node running this phone ({holder}) did not answer; retry the request")]
    NoAnswer { holder: String },
    /// A reset asked of this node through the database ran, and its
    /// session refused it.
    #[error(transparent)]
    Session(#[from] crate::session::SessionError),
}

/// Who serves a request for a phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node holds the phone's lease.
    Here,
    /// Another node does; forward to it.
    Elsewhere { node_id: String, url: String },
}

/// This node's membership in the cluster.
pub struct Cluster {
    node_id: String,
    url: String,
    pool: Pool,
    store: PgPhoneStore,
    ttl: Duration,
    /// The cluster secret's proofs: requests to and from the other nodes,
    /// and NOTIFY payloads (`proof.rs`).
    proofs: Arc<proof::Proofs>,
    /// Phones held without wanting a node at the last round: given back
    /// when they still want none at the next.
    idle: Mutex<HashSet<Phone>>,
    /// Serializes claiming and letting go of one phone, so a request and
    /// the lease loop never adopt the same phone twice.
    claiming: tokio::sync::Mutex<()>,
    /// Wakes the lease loop for a round now (another node gave phones back).
    woken: tokio::sync::Notify,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A node id unique to this process: the host name, the pid and a random
/// part, so a restarted node never mistakes its previous incarnation's
/// leases for its own.
pub fn new_node_id() -> String {
    let mut random = [0u8; 4];
    let _ = getrandom::fill(&mut random);
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "lila".into());
    format!("{host}-{}-{}", std::process::id(), hex::encode(random))
}

impl Cluster {
    /// Joins the cluster: this node's row says it is alive at `url`.
    pub async fn join(
        pool: Pool,
        store: PgPhoneStore,
        node_id: String,
        url: String,
        ttl: Duration,
        proofs: Arc<proof::Proofs>,
    ) -> Result<Arc<Cluster>, ClusterError> {
        cluster::heartbeat(&pool, &node_id, &url).await?;
        info!(node_id = %node_id, url = %url, ttl_ms = ttl.as_millis() as u64, "joined the cluster");
        Ok(Arc::new(Cluster {
            node_id,
            url,
            pool,
            store,
            ttl,
            proofs,
            idle: Mutex::default(),
            claiming: tokio::sync::Mutex::new(()),
            woken: tokio::sync::Notify::new(),
        }))
    }

    /// Frees the leases of `predecessor`, the node that ran on this data
    /// directory before this process (`crate::seat::Seat` proves it is gone), so
    /// its phones are claimed at once instead of after a ttl. Call before
    /// the lease loop starts.
    pub async fn retire(&self, predecessor: &str) {
        match cluster::retire(&self.pool, predecessor).await {
            Ok(freed) => info!(
                predecessor,
                freed,
                "the node that ran on this data directory before is gone; its leases are free now"
            ),
            Err(e) => {
                warn!(predecessor, error = %e, "could not free the previous node's leases; they expire by themselves")
            }
        }
    }

    /// Whether this node holds `phone`'s lease.
    pub fn holds(&self, phone: &Phone) -> bool {
        self.store.holds(phone)
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The cluster secret's proofs.
    pub fn proofs(&self) -> &Arc<proof::Proofs> {
        &self.proofs
    }

    /// The lease loop, until the gateway shuts down.
    pub fn spawn_lease_loop(self: &Arc<Self>, gateway: Arc<Gateway>) -> JoinHandle<()> {
        let cluster = self.clone();
        let span = tracing::info_span!("lease_loop", node_id = %self.node_id);
        tokio::spawn(
            async move {
                let mut last_renewed = Instant::now();
                let mut tick = tokio::time::interval(cluster.ttl / 3);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    // Every third of a ttl, or at once when another node
                    // gave phones back (it left, or handed one over).
                    tokio::select! {
                        _ = tick.tick() => {}
                        () = cluster.woken.notified() => {}
                    }
                    cluster.round(&gateway, &mut last_renewed).await;
                }
            }
            .instrument(span),
        )
    }

    /// One round of the lease loop.
    async fn round(&self, gateway: &Arc<Gateway>, last_renewed: &mut Instant) {
        if let Err(e) = cluster::heartbeat(&self.pool, &self.node_id, &self.url).await {
            warn!(error = %e, "could not say this node is alive");
        }
        self.renew(gateway, last_renewed).await;
        self.give_back_idle(gateway).await;
        if let Err(e) = self.claim_fair_share(gateway).await {
            warn!(error = %e, "could not claim free phones");
        }
        gateway.metrics().cluster_leases_held.store(
            self.store.held().len() as i64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    async fn renew(&self, gateway: &Arc<Gateway>, last_renewed: &mut Instant) {
        let held = self.store.held();
        let fences: Vec<_> = held.iter().map(|(_, fence)| fence.clone()).collect();
        match cluster::renew_leases(&self.pool, &self.node_id, &fences, self.ttl).await {
            Ok(renewed) => {
                // Measured from before the statement: the lease runs from
                // the database's `now()`, which is no earlier than this.
                *last_renewed = Instant::now();
                let renewed: HashSet<String> = renewed.into_iter().collect();
                for (phone, fence) in held.iter().filter(|(_, f)| !renewed.contains(&f.phone)) {
                    warn!(phone = %phone, epoch = fence.epoch, "lost the phone's lease; stopping its session here");
                    self.lose(gateway, phone);
                }
            }
            Err(e) => {
                warn!(error = %e, held = held.len(), "could not renew the leases");
                if last_renewed.elapsed() >= self.ttl {
                    warn!(
                        held = held.len(),
                        "no renewal for a whole lease; other nodes may run these phones now: stopping every session here"
                    );
                    for (phone, _) in &held {
                        self.lose(gateway, phone);
                    }
                }
            }
        }
    }

    /// A phone whose lease is gone: its writes are refused from now on, and
    /// its actor stops its client (without logging out: the new holder
    /// runs the same session).
    fn lose(&self, gateway: &Arc<Gateway>, phone: &Phone) {
        self.store.release(phone);
        Metrics::inc(&gateway.metrics().cluster_leases_lost);
        let gateway = gateway.clone();
        let phone = phone.clone();
        tokio::spawn(async move { gateway.drop_actor(&phone).await }.in_current_span());
    }

    /// Gives back phones held for two rounds without wanting a node.
    async fn give_back_idle(&self, gateway: &Arc<Gateway>) {
        let idle_now: HashSet<Phone> = self
            .store
            .held()
            .into_iter()
            .map(|(phone, _)| phone)
            .filter(|p| !gateway.wants_a_node(p))
            .collect();
        let idle_before = std::mem::replace(&mut *self.idle_phones(), idle_now.clone());
        for phone in idle_now.intersection(&idle_before) {
            let _claiming = self.claiming.lock().await;
            if gateway.wants_a_node(phone) {
                continue;
            }
            gateway.drop_actor(phone).await;
            self.give_back(phone).await;
            info!(phone = %phone, "gave back a phone that runs nowhere");
        }
    }

    fn idle_phones(&self) -> std::sync::MutexGuard<'_, HashSet<Phone>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims free phones up to this node's fair share, and adopts each.
    async fn claim_fair_share(&self, gateway: &Arc<Gateway>) -> Result<(), ClusterError> {
        let (live, wanting) = cluster::census(&self.pool, self.ttl).await?;
        let share = fair_share(wanting, live);
        let held = self.store.held().len() as i64;
        let room = share - held;
        if room < 0 {
            return self.hand_one_over(gateway, share, held).await;
        }
        if room == 0 {
            return Ok(());
        }
        // A round that claims thousands of phones (a node restarting with
        // every phone of the cluster) must not outlast the leases it holds:
        // the renewal comes at the start of the next round. Claiming stops
        // after a third of a ttl and the next round starts at once.
        let started = Instant::now();
        for phone in cluster::free_phones(&self.pool, room).await? {
            if started.elapsed() >= self.ttl / 3 {
                debug!("claimed for a third of a lease; renewing before claiming more");
                self.woken.notify_one();
                break;
            }
            let Ok(phone) = Phone::parse(&phone) else {
                continue;
            };
            let _claiming = self.claiming.lock().await;
            if self.store.holds(&phone) {
                continue;
            }
            if self.claim(gateway, &phone).await? {
                info!(phone = %phone, "claimed a free phone");
            }
        }
        Ok(())
    }

    /// Above its fair share (a node came back, or requests claimed phones
    /// here), a node gives one phone back per round, when another live node
    /// is below the share: that node claims it at its next round, so the
    /// session is down for at most a round and a reconnect, and the
    /// sessions spread evenly again.
    async fn hand_one_over(
        &self,
        gateway: &Arc<Gateway>,
        share: i64,
        held: i64,
    ) -> Result<(), ClusterError> {
        let below_share = cluster::nodes(&self.pool)
            .await?
            .iter()
            .any(|n| n.node_id != self.node_id && n.alive_within(self.ttl) && n.leases < share);
        if !below_share {
            return Ok(());
        }
        // Only a connected session moves: one showing a QR, or being
        // paired, stays where its user is looking.
        let Some(phone) = self
            .store
            .held()
            .into_iter()
            .map(|(phone, _)| phone)
            .filter(|p| gateway.is_connected_here(p))
            .max()
        else {
            return Ok(());
        };
        let _claiming = self.claiming.lock().await;
        gateway.drop_actor(&phone).await;
        self.give_back(&phone).await;
        Metrics::inc(&gateway.metrics().cluster_sessions_handed_over);
        self.wake_the_others().await;
        info!(phone = %phone, share, held, "handed a phone over to a node below its fair share");
        Ok(())
    }

    /// Who serves a request for `phone`: this node when it holds the phone
    /// or claims it now (the phone is free), else its holder. `forwarded`:
    /// the request already came from another node, so it is not sent on.
    /// `create`: the request creates the session; any other request about
    /// a phone with no record is answered here without a claim (a 404).
    pub async fn route(
        &self,
        gateway: &Arc<Gateway>,
        phone: &Phone,
        caller: &Caller,
        forwarded: bool,
        create: bool,
    ) -> Result<Route, ClusterError> {
        if self.store.holds(phone) {
            return Ok(Route::Here);
        }
        // The common case, a phone another node runs, without the lock.
        if let Some(elsewhere) = self.held_elsewhere(phone, forwarded).await? {
            return elsewhere;
        }
        let _claiming = self.claiming.lock().await;
        if self.store.holds(phone) {
            return Ok(Route::Here);
        }
        loop {
            if let Some(elsewhere) = self.held_elsewhere(phone, forwarded).await? {
                return elsewhere;
            }
            // Free (or held in the database under this node's name but not
            // in memory: a lease this node just let go): claimed here, but
            // only for a caller who may touch the phone. Anyone else is
            // answered here without a claim (a 404, or a create's refusal),
            // so a request about another tenant's free phone moves nothing.
            if !self.may_claim_for(phone, caller, create).await? {
                return Ok(Route::Here);
            }
            if self.claim(gateway, phone).await? {
                return Ok(Route::Here);
            }
            // Another node claimed it in between: ask again who.
        }
    }

    /// Whether a request by `caller` about free `phone` is worth its lease:
    /// the phone has a record `caller` may use (its owner's, an operator's,
    /// or a cleared one for a create), or none and the request creates it.
    async fn may_claim_for(
        &self,
        phone: &Phone,
        caller: &Caller,
        create: bool,
    ) -> Result<bool, ClusterError> {
        Ok(match self.store.load_record(phone).await? {
            None => create,
            Some(record) if record.is_cleared() => {
                create || caller.may_access(record.owner.as_ref())
            }
            Some(record) => caller.may_access(record.owner.as_ref()),
        })
    }

    /// The route to another node holding `phone`, if one does (`Moving`
    /// when the request was forwarded once already, or the holder has no
    /// address); `None` when the phone is free or this node's.
    async fn held_elsewhere(
        &self,
        phone: &Phone,
        forwarded: bool,
    ) -> Result<Option<Result<Route, ClusterError>>, ClusterError> {
        Ok(match cluster::holder(&self.pool, phone.as_str()).await? {
            Some((node_id, _)) if node_id == self.node_id => None,
            Some((_, url)) if forwarded || url.is_empty() => Some(Err(ClusterError::Moving)),
            Some((node_id, url)) => Some(Ok(Route::Elsewhere { node_id, url })),
            None => None,
        })
    }

    /// Claims `phone`'s lease for this node and adopts it; `false` when
    /// another node holds it. The caller holds `claiming`.
    async fn claim(&self, gateway: &Arc<Gateway>, phone: &Phone) -> Result<bool, ClusterError> {
        let Some(fence) = claim_lease(&self.pool, phone.as_str(), &self.node_id, self.ttl).await?
        else {
            return Ok(false);
        };
        Metrics::inc(&gateway.metrics().cluster_leases_claimed);
        self.store.hold(phone, fence);
        gateway.adopt(phone).await;
        Ok(true)
    }

    /// Gives `phone`'s lease back at once (its row expires now), so another
    /// node may claim it without waiting; its writes here are refused from
    /// now on. The caller stopped its session first.
    async fn give_back(&self, phone: &Phone) {
        if let Some(fence) = self.store.release(phone)
            && let Err(e) = release_lease(&self.pool, &fence).await
        {
            warn!(phone = %phone, error = %e, "could not give the lease back; it expires by itself");
        }
    }

    /// Leaves the cluster, after the gateway stopped every session here:
    /// each lease is given back at once, so other nodes take the phones
    /// over without waiting for them to expire, and this node's row goes.
    pub async fn leave(&self) {
        let held = self.store.held();
        for (phone, _) in &held {
            self.give_back(phone).await;
        }
        if let Err(e) = cluster::leave(&self.pool, &self.node_id).await {
            warn!(error = %e, "could not remove this node's row; it ages out");
        }
        self.wake_the_others().await;
        info!(released = held.len(), "left the cluster");
    }

    /// Tells the other nodes that phones were given back, so that their
    /// lease loops claim them now rather than at their next round: the gap
    /// of a handed-over session is then a reconnect.
    async fn wake_the_others(&self) {
        if let Err(e) = notify::notify(&self.pool, WAKE_CHANNEL, &self.node_id).await {
            debug!(error = %e, "could not wake the other nodes; they claim at their next round");
        }
    }

    /// Listens for the other nodes' wake-ups (`wake_the_others`), listening
    /// again whenever the connection ends.
    pub fn spawn_wake_listener(self: &Arc<Self>, database_url: String) -> JoinHandle<()> {
        let cluster = self.clone();
        let span = tracing::info_span!("wake_listener", node_id = %self.node_id);
        tokio::spawn(
            async move {
                notify::listen_forever(&database_url, WAKE_CHANNEL, |from| {
                    if from != cluster.node_id {
                        cluster.woken.notify_one();
                    }
                })
                .await
            }
            .instrument(span),
        )
    }

    /// Every session `caller` may see, as its record describes it at rest
    /// (cleared ones left out), sorted by phone: the base of a cluster-wide
    /// listing, over which the nodes running them lay their live views.
    pub async fn sessions_at_rest(
        &self,
        caller: &Caller,
    ) -> Result<Vec<SessionView>, ClusterError> {
        let mut views = Vec::new();
        for (phone, record) in self.store.all_records().await? {
            if record.desired == DesiredState::Cleared || !caller.may_access(record.owner.as_ref())
            {
                continue;
            }
            let entry = IndexEntry {
                owner: record.owner,
                desired: Some(record.desired),
                pending_at_boot: 0,
            };
            views.push(entry.view_at_rest(&phone));
        }
        Ok(views)
    }

    /// The other nodes seen alive within a ttl: where a listing asks for
    /// the sessions they run.
    pub async fn peers(&self) -> Result<Vec<(String, String)>, ClusterError> {
        Ok(cluster::nodes(&self.pool)
            .await?
            .into_iter()
            .filter(|n| n.node_id != self.node_id && n.alive_within(self.ttl))
            .map(|n| (n.node_id, n.url))
            .collect())
    }

    /// Every node, and how many phones wait for a node, for `GET /api/cluster`.
    pub async fn health(&self) -> Result<(Vec<cluster::NodeRow>, i64), ClusterError> {
        Ok((
            cluster::nodes(&self.pool).await?,
            cluster::unheld(&self.pool).await?,
        ))
    }
}

/// How many phones one node should run: an even share, rounded up so that
/// every phone has room somewhere.
pub fn fair_share(wanting: i64, live_nodes: i64) -> i64 {
    let nodes = live_nodes.max(1);
    (wanting.max(0) + nodes - 1) / nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fair_share_rounds_up_and_survives_no_nodes() {
        assert_eq!(fair_share(10, 3), 4);
        assert_eq!(fair_share(9, 3), 3);
        assert_eq!(fair_share(0, 3), 0);
        assert_eq!(fair_share(5, 0), 5);
        assert_eq!(fair_share(-1, 2), 0);
    }

    #[test]
    fn node_ids_differ_between_incarnations() {
        assert_ne!(new_node_id(), new_node_id());
    }
}
