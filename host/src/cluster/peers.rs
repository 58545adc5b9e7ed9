//! The peer client: one node's HTTP requests to another, over `ureq`.
//!
//! Two uses: a request about a phone another node runs, sent to that node
//! as it came (`forward.rs`), and a cluster-wide listing, which asks every
//! live peer for the sessions it runs. Each request is marked with
//! [`FORWARDED_FROM`], so a peer answers it itself and never sends it on.
//! Answers come back as they are, as [`PeerAnswer`]s: rendering them is
//! `http/`'s business.
//!
//! A caller's token never goes to a peer: each request carries instead the
//! caller this node authenticated ([`proof::CALLER`]) under a proof made
//! with the cluster secret ([`proof::PROOF`]), which the peer checks before
//! it believes either (`proof.rs`). A row forged into `nodes` points
//! requests at an address that learns no token, and a node answers no
//! request marked forwarded without a valid proof.

use std::io::Read;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tracing::warn;
use ureq::http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use super::proof::{self, Proofs, Signed};
use super::{Cluster, ClusterError};
use crate::core::tenant::Caller;

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
    /// /api/sessions` on every live peer at once, for `caller` under a
    /// proof, marked forwarded so that each answers with its own sessions
    /// only; each answer's `sessions`, read as `T`. A peer that does not
    /// answer in time is left out: its sessions show as their records
    /// describe them.
    pub async fn sessions_of_peers<T>(&self, caller: &Caller) -> Result<Vec<T>, ClusterError>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let peers = self.peers().await?;
        let caller = proof::caller_label(caller);
        let mut asking = tokio::task::JoinSet::new();
        for (node_id, url) in peers {
            let (from, caller, proofs) =
                (self.node_id.clone(), caller.clone(), self.proofs.clone());
            asking.spawn_blocking(move || {
                let target = format!("{}/api/sessions", url.trim_end_matches('/'));
                (node_id, list(&target, &caller, &from, &proofs))
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

impl Cluster {
    /// The caller of a request marked as forwarded by another node, once
    /// its proof holds: over its method, path and query, sender, caller
    /// and body, made with the cluster secret, within the window, once.
    pub fn proven_caller(
        &self,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Caller, proof::ProofError> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(from), Some(caller), Some(proof)) = (
            text(FORWARDED_FROM),
            text(proof::CALLER),
            text(proof::PROOF),
        ) else {
            return Err(proof::ProofError::Missing);
        };
        let signed = Signed {
            method: method.as_str(),
            path_and_query,
            from,
            caller,
            body,
        };
        self.proofs.verify(&signed, proof)?;
        proof::caller_from_label(caller).ok_or(proof::ProofError::Malformed)
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
    caller: &str,
    from: &str,
    proofs: &Proofs,
) -> Result<Vec<T>, String> {
    let proof = proofs.sign(&Signed {
        method: "GET",
        path_and_query: "/api/sessions",
        from,
        caller,
        body: b"",
    });
    let mut answer = agent(LIST_TIMEOUT)
        .get(target)
        .header(proof::CALLER, caller)
        .header(proof::PROOF, proof)
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

/// What one node sends another about a caller's request.
pub(super) struct Outgoing<'a> {
    /// The holder's URL.
    pub node_url: &'a str,
    pub method: &'a Method,
    pub path_and_query: &'a str,
    /// The request's headers as they came (its token is not passed on).
    pub headers: &'a HeaderMap,
    /// This node's id.
    pub from: &'a str,
    /// The caller this node authenticated.
    pub caller: &'a Caller,
    pub body: &'a [u8],
}

/// Sends a request to the holder (its URL and the request's path), as it
/// came but for the caller's token, marked as coming from this node, for
/// the caller this node authenticated, under a proof.
pub(super) async fn send(outgoing: Outgoing<'_>, proofs: &Proofs) -> Hop {
    let target = format!(
        "{}{}",
        outgoing.node_url.trim_end_matches('/'),
        outgoing.path_and_query
    );
    let caller = proof::caller_label(outgoing.caller);
    let proof = proofs.sign(&Signed {
        method: outgoing.method.as_str(),
        path_and_query: outgoing.path_and_query,
        from: outgoing.from,
        caller: &caller,
        body: outgoing.body,
    });
    let mut headers = outgoing.headers.clone();
    headers.remove(header::AUTHORIZATION);
    headers.remove(proof::CALLER);
    headers.remove(proof::PROOF);
    for (name, value) in [(proof::CALLER, caller), (proof::PROOF, proof)] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    let (method, from, body) = (
        outgoing.method.clone(),
        outgoing.from.to_owned(),
        outgoing.body.to_vec(),
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
