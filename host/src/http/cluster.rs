//! `GET /api/cluster`: the cluster's nodes and lease health (operators
//! only), with its bodies. Forwarding a request to the node that runs its
//! phone is `forward.rs` (the middleware) and `cluster/forward.rs`.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::{AuthCaller, operator_only};
use super::json::{ErrorBody, Success};
use super::responses::{NoToken, OperatorsOnly};
use super::{ApiError, AppState};

/// `GET /api/cluster`: operators only, as `GET /api/plugins`. The nodes,
/// the sessions each runs and how fresh each one's heartbeat is; on a
/// single node, `clustered: false`.
#[utoipa::path(
    get, path = "/api/cluster", tag = "service",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The cluster's nodes and lease health", body = Success<ClusterBody>),
        (status = 503, description = "The cluster's database is unreachable", body = ErrorBody),
        NoToken, OperatorsOnly,
    )
)]
pub async fn cluster(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
) -> Result<Success<ClusterBody>, ApiError> {
    operator_only(&caller, "see the cluster")?;
    let Some(cluster) = &state.cluster else {
        return Ok(Success::new(ClusterBody::single_node()));
    };
    let (nodes, unheld) = cluster.health().await?;
    Ok(Success::new(ClusterBody::new(
        cluster.node_id(),
        cluster.ttl(),
        &nodes,
        unheld,
    )))
}

/// `GET /api/cluster` (operators only).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterBody {
    /// Whether this lila is a cluster node (`LILA_DATABASE_URL` set).
    pub clustered: bool,
    /// The id of the node that answered (`null` on a single node).
    #[schema(example = "lila-a-4242-9f3c2a1b")]
    pub node_id: Option<String>,
    /// How long a lease lasts without renewal; a node renews every third of it.
    pub lease_ttl_ms: u64,
    /// Every node with a row, the most recently seen first.
    pub nodes: Vec<ClusterNodeBody>,
    /// Phones meant to run that no node holds right now (waiting for a claim,
    /// as after a node died, until its leases run out).
    pub unheld_phones: u64,
}

impl ClusterBody {
    /// A single node: no cluster to show.
    pub fn single_node() -> ClusterBody {
        ClusterBody {
            clustered: false,
            node_id: None,
            lease_ttl_ms: 0,
            nodes: Vec::new(),
            unheld_phones: 0,
        }
    }

    pub fn new(
        this_node: &str,
        ttl: std::time::Duration,
        nodes: &[lila_pgstore::cluster::NodeRow],
        unheld: i64,
    ) -> ClusterBody {
        ClusterBody {
            clustered: true,
            node_id: Some(this_node.to_owned()),
            lease_ttl_ms: ttl.as_millis() as u64,
            nodes: nodes
                .iter()
                .map(|n| ClusterNodeBody {
                    node_id: n.node_id.clone(),
                    url: n.url.clone(),
                    alive: n.alive_within(ttl),
                    seen_ms_ago: (n.seen_secs_ago.max(0.0) * 1000.0) as u64,
                    sessions: n.leases.max(0) as u64,
                    this_node: n.node_id == this_node,
                })
                .collect(),
            unheld_phones: unheld.max(0) as u64,
        }
    }
}

/// One node of the cluster.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNodeBody {
    pub node_id: String,
    /// Where the other nodes reach it (`LILA_NODE_URL`).
    #[schema(example = "http://10.0.0.5:3001")]
    pub url: String,
    /// Seen within a lease's ttl: counted in the fair share.
    pub alive: bool,
    /// Milliseconds since it last said it was alive (by the database's clock).
    pub seen_ms_ago: u64,
    /// The sessions it runs: the live leases it holds.
    pub sessions: u64,
    /// Whether this is the node that answered.
    pub this_node: bool,
}
