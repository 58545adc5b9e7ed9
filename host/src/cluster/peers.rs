//! The peer client: one node's HTTP requests to another, over `ureq`.
//!
//! Two uses: a request about a phone another node runs, sent to that node
//! as it came (`forward.rs`), and a cluster-wide listing, which asks every
//! live peer for the sessions it runs. Each request is marked with
//! [`FORWARDED_FROM`], so a peer answers it itself and never sends it on.
//! Answers come back as they are, as [`PeerAnswer`]s: rendering them is
//! `http/`'s business.

use std::io::Read;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tracing::warn;
use ureq::http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use super::{Cluster, ClusterError};

/// Marks a request one node forwarded to another (its value: the sender's id).
pub const FORWARDED_FROM: &str = "x-lila-forwarded-from";

/// How long the holder may take to answer (a reset runs its hooks).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a peer may take to list the sessions it runs.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// Another node's answer, as it came: its status, content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAnswer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: Vec<u8>,
}

/// What became of a request sent to another node.
pub(super) enum Hop {
    /// Its answer, as it came.
    Answered(PeerAnswer),
    /// No connection: the request never reached it (it is gone).
    Unreachable(String),
    /// Anything else (a timeout, a broken answer): it may have acted.
    Failed(String),
}

impl Cluster {
    /// The sessions each peer runs, for a cluster-wide listing: `GET
    /// /api/sessions` on every live peer at once, with the caller's token,
    /// marked forwarded so that each answers with its own sessions only;
    /// each answer's `sessions`, read as `T`. A peer that does not answer
    /// in time is left out: its sessions show as their records describe
    /// them. Without a token there is nothing to ask with.
    pub async fn sessions_of_peers<T>(
        &self,
        authorization: Option<&HeaderValue>,
    ) -> Result<Vec<T>, ClusterError>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let peers = self.peers().await?;
        let Some(authorization) = authorization.cloned() else {
            return Ok(Vec::new());
        };
        let mut asking = tokio::task::JoinSet::new();
        for (node_id, url) in peers {
            let (from, authorization) = (self.node_id.clone(), authorization.clone());
            asking.spawn_blocking(move || {
                let target = format!("{}/api/sessions", url.trim_end_matches('/'));
                (node_id, list(&target, &authorization, &from))
            });
        }
        let mut sessions = Vec::new();
        while let Some(answer) = asking.join_next().await {
            match answer {
                Ok((_, Ok(listed))) => sessions.extend(listed),
                Ok((node_id, Err(e))) => {
                    warn!(peer = %node_id, error = %e, "a node did not list its sessions; they show at rest")
                }
                Err(e) => warn!(error = %e, "listing a node's sessions failed"),
            }
        }
        Ok(sessions)
    }
}

/// A peer's `GET /api/sessions` answer (the `success` envelope around it).
#[derive(serde::Deserialize)]
struct ListAnswer<T> {
    sessions: Vec<T>,
}

/// The sessions the peer at `target` lists. Blocking.
fn list<T: DeserializeOwned>(
    target: &str,
    authorization: &HeaderValue,
    from: &str,
) -> Result<Vec<T>, String> {
    let mut answer = agent(LIST_TIMEOUT)
        .get(target)
        .header(header::AUTHORIZATION.as_str(), authorization.as_bytes())
        .header(FORWARDED_FROM, from)
        .call()
        .map_err(|e| e.to_string())?;
    let text = answer
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    serde_json::from_str::<ListAnswer<T>>(&text)
        .map(|listed| listed.sessions)
        .map_err(|e| e.to_string())
}

/// Sends a request to `target` (the holder's URL and the request's path),
/// as it came, marked as coming from node `from`.
pub(super) async fn send(
    target: String,
    method: &Method,
    headers: &HeaderMap,
    from: &str,
    body: &[u8],
) -> Hop {
    let (method, headers, from, body) = (
        method.clone(),
        headers.clone(),
        from.to_owned(),
        body.to_vec(),
    );
    tokio::task::spawn_blocking(
        move || match exchange(&target, &method, &headers, &from, body) {
            Ok(answer) => Hop::Answered(answer),
            Err(Exchange::Connect(e)) => Hop::Unreachable(e),
            Err(Exchange::Other(e)) => Hop::Failed(e),
        },
    )
    .await
    .unwrap_or_else(|e| Hop::Failed(e.to_string()))
}

/// A client for one hop to a peer: its answer as it is (no status is an
/// error, no redirect followed), within `timeout`.
fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// Headers that belong to one hop, never passed on.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// Why an exchange with a node failed: before it was reached, or after.
enum Exchange {
    Connect(String),
    Other(String),
}

impl From<ureq::Error> for Exchange {
    fn from(e: ureq::Error) -> Exchange {
        let refused = match &e {
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
            ureq::Error::Io(io) => io.kind() == std::io::ErrorKind::ConnectionRefused,
            _ => false,
        };
        if refused {
            Exchange::Connect(e.to_string())
        } else {
            Exchange::Other(e.to_string())
        }
    }
}

/// Sends the request to `target` and reads the answer as it came (status,
/// content type, body). Blocking.
fn exchange(
    target: &str,
    method: &Method,
    headers: &HeaderMap,
    from: &str,
    body: Vec<u8>,
) -> Result<PeerAnswer, Exchange> {
    let agent = agent(FORWARD_TIMEOUT);
    let mut request = ureq::http::Request::builder()
        .method(method.as_str())
        .uri(target);
    for (name, value) in headers {
        if !is_hop_by_hop(name.as_str()) && name.as_str() != FORWARDED_FROM {
            request = request.header(name.as_str(), value.as_bytes());
        }
    }
    request = request.header(FORWARDED_FROM, from);
    let request = request
        .body(body)
        .map_err(|e| Exchange::Other(e.to_string()))?;
    let answer = agent.run(request)?;
    let status = answer.status();
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let mut body = Vec::new();
    answer
        .into_body()
        .into_reader()
        .read_to_end(&mut body)
        .map_err(|e| Exchange::Other(e.to_string()))?;
    Ok(PeerAnswer {
        status,
        content_type,
        body,
    })
}
