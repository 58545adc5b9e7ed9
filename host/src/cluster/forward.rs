//! Forwarding: a request about a phone run by another node is sent to that
//! node, so that any node answers any request with the same API, status
//! codes and errors.
//!
//! `Cluster::forward` asks who serves the phone (`Cluster::route`): this
//! node, when it holds the phone or claims it now ([`Served::Here`]: the
//! caller runs its own handlers), or the holder, whose `LILA_NODE_URL` gets
//! the request as it came, with the caller this node authenticated under a
//! cluster-secret proof instead of the caller's token (`peers.rs`), and whose
//! answer comes back as it is ([`Served::Elsewhere`]). A forwarded request
//! is never forwarded again: a phone that moved in between is `Moving`.
//! A holder that refuses connections (it died) is waited out until its
//! lease has run out; a reset whose holder keeps its lease but cannot be
//! reached is asked of it through the database (`reset.rs`).

use std::sync::Arc;
use std::time::Duration;

use hyper::http::{HeaderMap, Method};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::peers::{self, FORWARDED_FROM, Hop, PeerAnswer};
use super::{Cluster, ClusterError, Route};
use crate::core::tenant::Caller;
use crate::gateway::Gateway;
use crate::phone::Phone;

/// A request about a phone, as this node received it.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub phone: &'a Phone,
    /// It creates the phone's session (see `Cluster::route`).
    pub create: bool,
    /// Who asks (the token was checked): a free phone is claimed only for
    /// a caller who may touch it.
    pub caller: &'a Caller,
    /// `Some(caller)` for a reset (`POST /api/sessions/{phone}/clear`) by
    /// `caller`: the one request asked through the database when its
    /// holder cannot be reached over HTTP.
    pub reset_by: Option<&'a Caller>,
    /// A reset an operator forces (`?force=true`).
    pub force: bool,
    pub method: &'a Method,
    /// What follows the node's URL: the path and the query.
    pub path_and_query: &'a str,
    /// Its headers (the caller's token among them is never passed on).
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Who answered a request.
#[derive(Debug)]
pub enum Served {
    /// Nobody yet: it is this node's to serve.
    Here,
    /// The phone's holder did, with this answer.
    Elsewhere(PeerAnswer),
}

impl Cluster {
    /// Serves `request` where its phone runs: here, or on the holder. Errs
    /// `Moving` (already forwarded once), `NoAnswer` (the holder did not
    /// answer) or `Database`.
    pub async fn forward(
        &self,
        gateway: &Arc<Gateway>,
        request: Incoming<'_>,
    ) -> Result<Served, ClusterError> {
        let Incoming {
            phone,
            create,
            caller,
            ..
        } = request;
        let forwarded = request.headers.contains_key(FORWARDED_FROM);
        let (mut holder, mut holder_url) = match self
            .route(gateway, phone, caller, forwarded, create)
            .await?
        {
            Route::Here => return Ok(Served::Here),
            Route::Elsewhere { node_id, url } => (node_id, url),
        };
        // A holder that refuses connections is gone: the request never
        // reached it, so it is safe to serve anywhere. It waits for the dead
        // node's lease to run out (another node, or this one, then runs the
        // phone) rather than failing while a takeover is under way.
        let deadline = Instant::now() + self.ttl + self.ttl / 3 + Duration::from_secs(1);
        loop {
            info!(phone = %phone, holder = %holder, "forwarding to the node that runs the phone");
            let outgoing = peers::Outgoing {
                node_url: &holder_url,
                method: request.method,
                path_and_query: request.path_and_query,
                headers: request.headers,
                from: &self.node_id,
                caller,
                body: request.body,
            };
            let hop = peers::send(outgoing, &self.proofs).await;
            let failure = match hop {
                Hop::Answered(answer) => return Ok(Served::Elsewhere(answer)),
                Hop::Unreachable(e) if Instant::now() < deadline => {
                    debug!(phone = %phone, holder = %holder, error = %e, "the node that ran the phone is gone; waiting for its lease to run out");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    match self
                        .route(gateway, phone, caller, forwarded, create)
                        .await?
                    {
                        Route::Here => return Ok(Served::Here),
                        Route::Elsewhere { node_id, url } => (holder, holder_url) = (node_id, url),
                    }
                    continue;
                }
                Hop::Unreachable(e) => match request.reset_by {
                    // Past the lease: the holder is alive (it renews) but
                    // this node cannot reach it. A reset goes through the
                    // database.
                    Some(caller) => {
                        return self
                            .reset_through_the_database(phone, caller, request.force, &holder)
                            .await
                            .map(Served::Elsewhere);
                    }
                    None => e,
                },
                Hop::Failed(e) => e,
            };
            warn!(phone = %phone, holder = %holder, error = %failure, "the node that runs the phone did not answer");
            return Err(ClusterError::NoAnswer { holder });
        }
    }
}
