//! The peer client: one node's HTTP requests to another, async (hyper's
//! HTTP/1 client over a tokio connection, rustls for an `https://` node
//! URL), so a request waiting on a slow peer holds no thread: it waits at
//! most [`CONNECT_TIMEOUT`] to connect, then [`FORWARD_TIMEOUT`] (or
//! [`LIST_TIMEOUT`]) for the whole answer.
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

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::warn;

use super::proof::{self, Proofs, Signed};
use super::{Cluster, ClusterError};
use crate::core::tenant::Caller;

/// Marks a request one node forwarded to another (its value: the sender's id).
pub const FORWARDED_FROM: &str = "x-lila-forwarded-from";

/// How long the holder may take to answer (a reset runs its hooks).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a peer may take to list the sessions it runs.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long connecting to a peer may take (a node that does not accept in
/// that time is treated as gone, like one that refuses).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer read from a peer (a listing of many sessions).
const MAX_ANSWER_BYTES: usize = 64 << 20;

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
            asking.spawn(async move {
                let target = format!("{}/api/sessions", url.trim_end_matches('/'));
                (node_id, list(&target, &caller, &from, &proofs).await)
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

/// The sessions the peer at `target` lists.
async fn list<T: DeserializeOwned>(
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
    let mut headers = HeaderMap::new();
    for (name, value) in [(proof::CALLER, caller), (proof::PROOF, &proof)] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    let answer = exchange(
        target,
        &Method::GET,
        &headers,
        from,
        Vec::new(),
        LIST_TIMEOUT,
    )
    .await
    .map_err(|e| match e {
        Exchange::Connect(e) | Exchange::Other(e) => e,
    })?;
    serde_json::from_slice::<ListAnswer<T>>(&answer.body)
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
    let body = outgoing.body.to_vec();
    match exchange(
        &target,
        outgoing.method,
        &headers,
        outgoing.from,
        body,
        FORWARD_TIMEOUT,
    )
    .await
    {
        Ok(answer) => Hop::Answered(answer),
        Err(Exchange::Connect(e)) => Hop::Unreachable(e),
        Err(Exchange::Other(e)) => Hop::Failed(e),
    }
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

/// The TLS client for `https://` node URLs: the web's roots, as browsers.
fn tls() -> tokio_rustls::TlsConnector {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = match rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(builder) => builder.with_root_certificates(roots).with_no_client_auth(),
            // The ring provider supports the default versions.
            Err(_) => rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        };
        Arc::new(config)
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

/// Sends the request to `target` and reads the answer as it came (status,
/// content type, body): connecting within [`CONNECT_TIMEOUT`] (else it is
/// `Connect`: the request never left), answered within `timeout`.
async fn exchange(
    target: &str,
    method: &Method,
    headers: &HeaderMap,
    from: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<PeerAnswer, Exchange> {
    let other = |e: &dyn std::fmt::Display| Exchange::Other(e.to_string());
    let uri: Uri = target.parse().map_err(|e| other(&e))?;
    let https = uri.scheme_str() == Some("https");
    let host = uri
        .host()
        .ok_or_else(|| Exchange::Other(format!("no host in {target}")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let mut request = Request::builder()
        .method(method.clone())
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    for (name, value) in headers {
        if !is_hop_by_hop(name.as_str()) && name.as_str() != FORWARDED_FROM {
            request = request.header(name, value);
        }
    }
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(&host);
    let request = request
        .header(header::HOST, authority)
        .header(FORWARDED_FROM, from)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| other(&e))?;
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port)))
        .await
    {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(Exchange::Connect(e.to_string())),
        Err(_) => {
            return Err(Exchange::Connect(format!(
                "no connection within {} s",
                CONNECT_TIMEOUT.as_secs()
            )));
        }
    };
    let answer = async {
        if https {
            let name =
                rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
            let tls = tls().connect(name, tcp).await.map_err(|e| e.to_string())?;
            over(tls, request).await
        } else {
            over(tcp, request).await
        }
    };
    match tokio::time::timeout(timeout, answer).await {
        Ok(answer) => answer.map_err(Exchange::Other),
        Err(_) => Err(Exchange::Other(format!(
            "no answer within {} s",
            timeout.as_secs()
        ))),
    }
}

/// One HTTP/1.1 exchange over `io`.
async fn over<IO>(io: IO, request: Request<Full<Bytes>>) -> Result<PeerAnswer, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    let driving = tokio::spawn(connection);
    let answer = sender.send_request(request).await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            driving.abort();
            return Err(e.to_string());
        }
    };
    let status = answer.status();
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let body = Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes()
        .to_vec();
    driving.abort();
    Ok(PeerAnswer {
        status,
        content_type,
        body,
    })
}
