//! Cluster mode: a request about a phone run by another node is forwarded to
//! that node, so that any node answers any request with the same API,
//! status codes and errors.
//!
//! The middleware reads which phone a request is about (the `{phone}` path
//! segment, or the `phone` of a create), and asks the cluster who serves it
//! (`Cluster::route`): this node, when it holds the phone or claims it now,
//! or the holder, whose `LILA_NODE_URL` gets the request as it came, with
//! the caller's token. A forwarded request is marked, and is never
//! forwarded again: a phone that moved in between is answered 503, retry.
//! Only an authenticated request can make a node claim a phone; anything
//! else goes to the handlers here, which answer it as a single node does.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lila_pgstore::{notify, reset_requests};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::json::Success;
use super::reset::ClearBody;
use super::sessions::{CreateSessionRequest, SessionBody};
use super::{ApiError, AppState};
use crate::cluster::{Cluster, ClusterError, Route};
use crate::core::tenant::{Caller, TenantId};
use crate::phone::Phone;

/// Marks a request one node forwarded to another (its value: the sender's id).
pub const FORWARDED_FROM: &str = "x-lila-forwarded-from";

/// The largest body read to find a create's phone (bodies are small JSON).
const BODY_LIMIT: usize = 1 << 20;

/// How long the holder may take to answer (a reset runs its hooks).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(120);

pub async fn to_holder(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(cluster) = state.cluster.clone() else {
        return next.run(request).await;
    };
    let caller = state.auth.authenticate(
        request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let Ok(caller) = caller else {
        return next.run(request).await;
    };
    if !request.uri().path().starts_with("/api/sessions") {
        return next.run(request).await;
    }
    let forwarded = request.headers().contains_key(FORWARDED_FROM);
    let (parts, body) = request.into_parts();
    let body = match to_bytes(body, BODY_LIMIT).await {
        Ok(body) => body,
        Err(_) => {
            return ApiError::BadRequest(format!("the request body is over {BODY_LIMIT} bytes"))
                .into_response();
        }
    };
    let Some((phone, create)) = phone_of(&parts.method, parts.uri.path(), &body, &caller) else {
        return next.run(Request::from_parts(parts, Body::from(body))).await;
    };
    let (mut holder, mut holder_url) = match cluster
        .route(&state.gateway, &phone, forwarded, create)
        .await
    {
        Ok(Route::Here) => return next.run(Request::from_parts(parts, Body::from(body))).await,
        Ok(Route::Elsewhere { node_id, url }) => (node_id, url),
        Err(e) => return ApiError::from(e).into_response(),
    };
    // A holder that refuses connections is gone: the request never reached
    // it, so it is safe to serve anywhere. It waits for the dead node's
    // lease to run out (another node, or this one, then runs the phone)
    // rather than failing while a takeover is under way.
    let deadline = Instant::now() + cluster.ttl() + cluster.ttl() / 3 + Duration::from_secs(1);
    loop {
        info!(phone = %phone, holder = %holder, "forwarding to the node that runs the phone");
        let target = format!(
            "{}{}",
            holder_url.trim_end_matches('/'),
            parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or_default()
        );
        let (from, method, headers, sent_body) = (
            cluster.node_id().to_owned(),
            parts.method.clone(),
            parts.headers.clone(),
            body.clone(),
        );
        let hop =
            tokio::task::spawn_blocking(move || send(&target, &method, &headers, &from, sent_body))
                .await
                .unwrap_or_else(|e| Hop::Failed(e.to_string()));
        match hop {
            Hop::Answered(response) => return response,
            Hop::Unreachable(e) if Instant::now() < deadline => {
                debug!(phone = %phone, holder = %holder, error = %e, "the node that ran the phone is gone; waiting for its lease to run out");
                tokio::time::sleep(Duration::from_millis(500)).await;
                match cluster
                    .route(&state.gateway, &phone, forwarded, create)
                    .await
                {
                    Ok(Route::Here) => {
                        return next.run(Request::from_parts(parts, Body::from(body))).await;
                    }
                    Ok(Route::Elsewhere { node_id, url }) => (holder, holder_url) = (node_id, url),
                    Err(e) => return ApiError::from(e).into_response(),
                }
            }
            // Past the lease: the holder is alive (it renews) but this node
            // cannot reach it. A reset goes through the database instead.
            Hop::Unreachable(_) if is_a_reset(&parts.method, parts.uri.path()) => {
                return reset_through_the_database(&cluster, &phone, &caller, &holder).await;
            }
            Hop::Unreachable(e) | Hop::Failed(e) => {
                warn!(phone = %phone, holder = %holder, error = %e, "the node that runs the phone did not answer");
                return ApiError::Unavailable(format!(
                    "the node running this phone ({holder}) did not answer; retry the request"
                ))
                .into_response();
            }
        }
    }
}

/// The channel a node asks a holder it cannot reach to run a reset on.
pub const RESET_CHANNEL: &str = "lila_reset";

/// How long a reset asked through the database may take to be answered.
const RESET_ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// `POST /api/sessions/{phone}/clear`.
fn is_a_reset(method: &Method, path: &str) -> bool {
    method == Method::POST && path.ends_with("/clear")
}

/// The caller as a reset request carries it.
fn caller_label(caller: &Caller) -> String {
    match caller {
        Caller::Operator => "operator".to_owned(),
        Caller::Tenant(tenant) => format!("tenant:{}", tenant.as_str()),
    }
}

fn caller_from_label(label: &str) -> Option<Caller> {
    match label.strip_prefix("tenant:") {
        Some(tenant) => TenantId::parse(tenant).ok().map(Caller::Tenant),
        None => (label == "operator").then_some(Caller::Operator),
    }
}

/// A reset for a holder this node cannot reach over HTTP, while it still
/// holds the phone's lease: the request is written to the database, the
/// holder is told over LISTEN/NOTIFY, runs the reset, and writes the
/// answer this node returns as it is.
async fn reset_through_the_database(
    cluster: &Cluster,
    phone: &Phone,
    caller: &Caller,
    holder: &str,
) -> Response {
    let pool = cluster.pool();
    let id = match reset_requests::request(pool, phone.as_str(), &caller_label(caller)).await {
        Ok(id) => id,
        Err(e) => return ApiError::from(ClusterError::from(e)).into_response(),
    };
    info!(phone = %phone, holder = %holder, request = id, "the holder cannot be reached over HTTP; asking it through the database");
    if let Err(e) = notify::notify(pool, RESET_CHANNEL, &format!("{holder} {id}")).await {
        let _ = reset_requests::forget(pool, id).await;
        return ApiError::from(ClusterError::from(e)).into_response();
    }
    let started = Instant::now();
    while started.elapsed() < RESET_ANSWER_WITHIN {
        match reset_requests::take_answer(pool, id).await {
            Ok(Some((status, body))) => {
                let status = axum::http::StatusCode::from_u16(status)
                    .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
                return (status, [(header::CONTENT_TYPE, "application/json")], body)
                    .into_response();
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => return ApiError::from(ClusterError::from(e)).into_response(),
        }
    }
    let _ = reset_requests::forget(pool, id).await;
    ApiError::Unavailable(format!(
        "the node running this phone ({holder}) did not answer; retry the request"
    ))
    .into_response()
}

/// The holder's side: runs the resets other nodes ask of it through the
/// database.
pub fn spawn_reset_listener(state: AppState, cluster: Arc<Cluster>, database_url: String) {
    tokio::spawn(async move {
        notify::listen_forever(&database_url, RESET_CHANNEL, |text| {
            let mut words = text.split(' ');
            if let (Some(node), Some(Ok(id))) = (words.next(), words.next().map(str::parse::<i64>))
                && node == cluster.node_id()
            {
                tokio::spawn(run_asked_reset(state.clone(), id));
            }
        })
        .await
    });
}

/// Runs reset request `id` here and writes its answer, as the HTTP API
/// would have answered it.
async fn run_asked_reset(state: AppState, id: i64) {
    let Some(cluster) = &state.cluster else {
        return;
    };
    let pool = cluster.pool();
    let Ok(Some((target, caller))) = reset_requests::pending(pool, id).await else {
        return;
    };
    let answer = match (Phone::parse(&target), caller_from_label(&caller)) {
        (Ok(phone), Some(caller)) if cluster.holds(&phone) => {
            match state.gateway.session(&phone).clear(caller).await {
                Ok(report) => serde_json::to_value(Success::new(ClearBody::new(&phone, &report)))
                    .map(|body| (200, body.to_string()))
                    .map_err(|e| e.to_string()),
                Err(e) => {
                    let e = ApiError::from(e);
                    serde_json::to_value(e.error_body())
                        .map(|body| (e.status().as_u16(), body.to_string()))
                        .map_err(|e| e.to_string())
                }
            }
        }
        (Ok(_), Some(_)) => {
            let e = ApiError::from(ClusterError::Moving);
            serde_json::to_value(e.error_body())
                .map(|body| (e.status().as_u16(), body.to_string()))
                .map_err(|e| e.to_string())
        }
        _ => Err(format!(
            "a reset request this node cannot read: {target} {caller}"
        )),
    };
    match answer {
        Ok((status, body)) => {
            if let Err(e) = reset_requests::answer(pool, id, status, &body).await {
                warn!(request = id, error = %e, "could not answer a reset asked through the database");
            }
        }
        Err(e) => {
            warn!(request = id, error = %e, "could not run a reset asked through the database")
        }
    }
}

/// How long a peer may take to list the sessions it runs.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// The sessions each peer runs, for a cluster-wide listing: `GET
/// /api/sessions` on every peer at once, with the caller's token, marked
/// forwarded so that each answers with its own sessions only. A peer that
/// does not answer in time is left out: its sessions show as their records
/// describe them.
pub async fn sessions_of_peers(
    peers: Vec<(String, String)>,
    from: &str,
    authorization: Option<&HeaderValue>,
) -> Vec<SessionBody> {
    let Some(authorization) = authorization.cloned() else {
        return Vec::new();
    };
    let mut asking = tokio::task::JoinSet::new();
    for (node_id, url) in peers {
        let (from, authorization) = (from.to_owned(), authorization.clone());
        asking.spawn_blocking(move || {
            let target = format!("{}/api/sessions", url.trim_end_matches('/'));
            let agent = agent(LIST_TIMEOUT);
            let listed = agent
                .get(&target)
                .header(header::AUTHORIZATION.as_str(), authorization.as_bytes())
                .header(FORWARDED_FROM, from.as_str())
                .call()
                .map_err(|e| e.to_string())
                .and_then(|mut answer| {
                    let text = answer
                        .body_mut()
                        .read_to_string()
                        .map_err(|e| e.to_string())?;
                    serde_json::from_str::<ListAnswer>(&text).map_err(|e| e.to_string())
                });
            (node_id, listed)
        });
    }
    let mut sessions = Vec::new();
    while let Some(answer) = asking.join_next().await {
        match answer {
            Ok((_, Ok(listed))) => sessions.extend(listed.sessions),
            Ok((node_id, Err(e))) => {
                warn!(peer = %node_id, error = %e, "a node did not list its sessions; they show at rest")
            }
            Err(e) => warn!(error = %e, "listing a node's sessions failed"),
        }
    }
    sessions
}

/// A peer's `GET /api/sessions` answer (the `success` envelope around it).
#[derive(serde::Deserialize)]
struct ListAnswer {
    sessions: Vec<SessionBody>,
}

/// The phone a request is about, and whether it creates the session: the
/// `{phone}` segment of `/api/sessions/{phone}…`, or the `phone` of a
/// create's body. `None` when there is none, or it is not a phone number:
/// the handlers answer those (a listing, or a 400) here.
fn phone_of(method: &Method, path: &str, body: &Bytes, caller: &Caller) -> Option<(Phone, bool)> {
    let rest = path.strip_prefix("/api/sessions")?;
    let rest = rest.trim_start_matches('/');
    if rest.is_empty() {
        if method != Method::POST {
            return None;
        }
        // The create handler's own reading of its body, so both agree.
        let create: CreateSessionRequest = serde_json::from_slice(body).ok()?;
        let (phone, _owner) = create.into_parts(caller).ok()?;
        return Some((phone, true));
    }
    let segment = rest.split('/').next()?;
    Phone::parse(segment).ok().map(|p| (p, false))
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

/// What became of a request sent to another node.
enum Hop {
    /// Its answer, as it came.
    Answered(Response),
    /// No connection: the request never reached it (it is gone).
    Unreachable(String),
    /// Anything else (a timeout, a broken answer): it may have acted.
    Failed(String),
}

/// Sends the request to `target`. Blocking.
fn send(target: &str, method: &Method, headers: &HeaderMap, from: &str, body: Bytes) -> Hop {
    match exchange(target, method, headers, from, body) {
        Ok(response) => Hop::Answered(response),
        Err(Exchange::Connect(e)) => Hop::Unreachable(e),
        Err(Exchange::Other(e)) => Hop::Failed(e),
    }
}

/// Why an exchange with a node failed: before it was reached, or after
/// (a small error type: `Hop` carries a whole response).
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

/// Sends the request to `target` and turns the answer into a response as
/// it came (status, content type, body). Blocking.
fn exchange(
    target: &str,
    method: &Method,
    headers: &HeaderMap,
    from: &str,
    body: Bytes,
) -> Result<Response, Exchange> {
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
        .body(body.to_vec())
        .map_err(|e| Exchange::Other(e.to_string()))?;
    let answer = agent.run(request)?;
    let status = answer.status().as_u16();
    let content_type = answer
        .headers()
        .get("content-type")
        .map(|v| v.as_bytes().to_vec());
    let mut bytes = Vec::new();
    answer
        .into_body()
        .into_reader()
        .read_to_end(&mut bytes)
        .map_err(|e| Exchange::Other(e.to_string()))?;
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() =
        axum::http::StatusCode::from_u16(status).map_err(|e| Exchange::Other(e.to_string()))?;
    if let Some(content_type) = content_type
        && let Ok(value) = HeaderValue::from_bytes(&content_type)
    {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_phone_comes_from_the_path_or_from_a_create() {
        let none = Bytes::new();
        let tenant = Caller::Tenant(TenantId::parse("acme").unwrap());
        let of = |method: &Method, path: &str, body: &Bytes| phone_of(method, path, body, &tenant);
        let phone = |raw: &str| Phone::parse(raw).unwrap();
        assert_eq!(
            of(&Method::GET, "/api/sessions/5511999990001/status", &none),
            Some((phone("5511999990001"), false))
        );
        assert_eq!(
            of(&Method::DELETE, "/api/sessions/5511999990001", &none),
            Some((phone("5511999990001"), false))
        );
        let create = Bytes::from_static(br#"{"phoneNumber":"5511999990002"}"#);
        assert_eq!(
            of(&Method::POST, "/api/sessions", &create),
            Some((phone("5511999990002"), true))
        );
        let numeric = Bytes::from_static(br#"{"phoneNumber":5511999990003}"#);
        assert_eq!(
            of(&Method::POST, "/api/sessions/", &numeric),
            Some((phone("5511999990003"), true))
        );
        // A listing, a bad phone or a bad body: the handlers answer here.
        assert_eq!(of(&Method::GET, "/api/sessions", &none), None);
        assert_eq!(of(&Method::GET, "/api/sessions/abc/status", &none), None);
        assert_eq!(
            of(&Method::POST, "/api/sessions", &Bytes::from_static(b"{")),
            None
        );
        assert_eq!(of(&Method::GET, "/api/plugins", &none), None);
    }
}
