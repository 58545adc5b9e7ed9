//! Cluster mode, the HTTP side: a request about a phone run by another node
//! is answered by that node.
//!
//! The middleware reads which phone a request is about (the `{phone}` path
//! segment, or the `phone` of a create), and hands the request to
//! `Cluster::forward` (`cluster/forward.rs`), which serves it here or has
//! the phone's holder answer it; the holder's answer is returned as it
//! came. Only an authenticated request can make a node claim a phone;
//! anything else goes to the handlers here, which answer it as a single
//! node does. `asked_reset_answer` renders a reset another node asked of
//! this one through the database (`cluster/reset.rs`) as `POST
//! /api/sessions/{phone}/clear` answers it.

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::json::Success;
use super::reset::ClearBody;
use super::sessions::CreateSessionRequest;
use super::{ApiError, AppState};
use crate::cluster::ClusterError;
use crate::cluster::forward::{Incoming, Served};
use crate::cluster::peers::{FORWARDED_FROM, PeerAnswer};
use crate::cluster::proof::ProvenCaller;
use crate::cluster::reset::StoredAnswer;
use crate::core::reset_report::ResetReport;
use crate::core::tenant::Caller;
use crate::metrics::Metrics;
use crate::phone::Phone;

/// The largest body read to find a create's phone (bodies are small JSON).
const BODY_LIMIT: usize = 1 << 20;

pub async fn to_holder(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(cluster) = state.cluster.clone() else {
        return next.run(request).await;
    };
    // A request another node forwarded carries its caller under a proof,
    // never a token; any other is the caller's own, with its token.
    let (caller, request) = if request.headers().contains_key(FORWARDED_FROM) {
        match from_a_peer(&state, &cluster, request).await {
            Ok(proven) => proven,
            Err(refusal) => return refusal,
        }
    } else {
        let caller = state.auth.authenticate(
            request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        );
        match caller {
            Ok(caller) => (caller, request),
            Err(_) => return next.run(request).await,
        }
    };
    if !request.uri().path().starts_with("/api/sessions") {
        return next.run(request).await;
    }
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
    let incoming = Incoming {
        phone: &phone,
        create,
        caller: &caller,
        reset_by: is_a_reset(&parts.method, parts.uri.path()).then_some(&caller),
        force: super::reset::asks_force(&parts.uri),
        method: &parts.method,
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or_default(),
        headers: &parts.headers,
        body: &body,
    };
    match cluster.forward(&state.gateway, incoming).await {
        Ok(Served::Here) => next.run(Request::from_parts(parts, Body::from(body))).await,
        Ok(Served::Elsewhere(answer)) => as_it_came(answer),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// A request another node forwarded: its caller (which the handlers see
/// too, as a [`ProvenCaller`]) once its proof holds, or a 401 (counted)
/// without a valid proof. Its own `Authorization`, if any, is dropped.
async fn from_a_peer(
    state: &AppState,
    cluster: &crate::cluster::Cluster,
    request: Request,
) -> Result<(Caller, Request), Response> {
    let (mut parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, BODY_LIMIT).await else {
        return Err(
            ApiError::BadRequest(format!("the request body is over {BODY_LIMIT} bytes"))
                .into_response(),
        );
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or_default();
    match cluster.proven_caller(&parts.method, path_and_query, &parts.headers, &body) {
        Ok(caller) => {
            parts.headers.remove(header::AUTHORIZATION);
            parts.extensions.insert(ProvenCaller(caller.clone()));
            Ok((caller, Request::from_parts(parts, Body::from(body))))
        }
        Err(e) => {
            Metrics::inc(&state.gateway.metrics().cluster_proofs_refused);
            tracing::warn!(error = %e, "refused a request marked as from another node");
            Err(ApiError::Unauthorized(format!(
                "a request marked as from another node needs a valid cluster proof: {e}"
            ))
            .into_response())
        }
    }
}

/// `POST /api/sessions/{phone}/clear`.
fn is_a_reset(method: &Method, path: &str) -> bool {
    method == Method::POST && path.ends_with("/clear")
}

/// Another node's answer, returned as it came.
fn as_it_came(answer: PeerAnswer) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    if let Some(content_type) = answer.content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
}

/// A reset another node asked of this one through the database, answered
/// as `POST /api/sessions/{phone}/clear` answers it: the status and the
/// JSON body its `reset_requests` row stores (`cluster/reset.rs`).
pub fn asked_reset_answer(
    phone: &Phone,
    outcome: Result<ResetReport, ClusterError>,
) -> serde_json::Result<StoredAnswer> {
    let (status, body) = match outcome {
        Ok(report) => (
            StatusCode::OK,
            serde_json::to_value(Success::new(ClearBody::new(phone, &report)))?,
        ),
        Err(e) => {
            let e = ApiError::from(e);
            (e.status(), serde_json::to_value(e.error_body())?)
        }
    };
    Ok(StoredAnswer {
        status: status.as_u16(),
        body: body.to_string(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::tenant::TenantId;

    #[test]
    fn an_asked_reset_that_cannot_run_is_stored_as_the_api_answers_it() {
        let phone = Phone::parse("5511999990001").unwrap();
        let moving = asked_reset_answer(&phone, Err(ClusterError::Moving)).unwrap();
        assert_eq!(moving.status, 503);
        assert_eq!(
            moving.body,
            r#"{"error":"the phone is moving between nodes; retry the request","success":false}"#
        );
        let refused = asked_reset_answer(
            &phone,
            Err(ClusterError::Session(
                crate::session::SessionError::NotFound,
            )),
        )
        .unwrap();
        assert_eq!(refused.status, 404);
        assert_eq!(
            refused.body,
            r#"{"error":"no session for this phone number","success":false}"#
        );
    }

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
