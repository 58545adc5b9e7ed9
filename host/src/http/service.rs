//! What is not a resource: liveness, the Prometheus counters, the answers
//! to an unknown path or method, and the request log every route runs in.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::Instrument;
use utoipa::ToSchema;

use super::json::{ErrorBody, Success};
use super::{ApiError, AppState};
use crate::core::tenant::Caller;
use crate::metrics::TenantLabels;
use crate::request_id::{self, RequestId};

/// Liveness.
#[utoipa::path(
    get, path = "/health", tag = "service",
    responses((status = 200, description = "The server answers", body = Success<HealthBody>))
)]
pub async fn health() -> Success<HealthBody> {
    Success::new(HealthBody {
        status: "ok",
        certificate_verification: crate::whatsapp::certificate::certificate_check().is_on(),
    })
}

/// `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthBody {
    /// Always `ok`.
    #[schema(value_type = String, example = "ok")]
    pub status: &'static str,
    /// Whether this binary verifies WhatsApp's certificate chain. Only a
    /// build for the simulator says `false`, and it connects to loopback
    /// addresses only.
    #[schema(example = true)]
    pub certificate_verification: bool,
}

/// Prometheus counters. With `LILA_METRICS_TOKEN` set, only that token
/// (or an operator's JWT) may read them; without it anyone may, and the
/// series that would name a tenant (its plugins) are summed without it.
#[utoipa::path(
    get, path = "/metrics", tag = "service",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "LILA_METRICS_TOKEN is set and the request carries neither it nor an operator token", body = ErrorBody),
    )
)]
pub async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let operator = state.auth.authenticate(authorization).ok() == Some(Caller::Operator);
    let metrics_token = state.gateway.config().metrics_token.as_deref();
    let with_metrics_token = match (metrics_token, authorization) {
        (Some(token), Some(given)) => given
            .strip_prefix("Bearer ")
            .is_some_and(|given| same_secret(given.trim().as_bytes(), token.as_bytes())),
        _ => false,
    };
    if metrics_token.is_some() && !operator && !with_metrics_token {
        return Err(ApiError::Unauthorized(
            "/metrics needs the metrics token (LILA_METRICS_TOKEN) or an operator token as 'Bearer <token>'".into(),
        ));
    }
    let tenants = if operator || with_metrics_token {
        TenantLabels::Shown
    } else {
        TenantLabels::Summed
    };
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.gateway.metrics().render()
            + &crate::metrics::HookMetrics::render(state.gateway.hooks().hook_metrics(), tenants),
    )
        .into_response())
}

/// Compares two secrets in time that depends on their lengths only.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("this endpoint does not accept that method".into())
}

/// One span per request, with its request id; one line when it ends.
/// Headers and bodies are never logged (they carry tokens and message text).
/// The id is the client's `x-request-id` when sane, else a new one; the
/// response echoes it, and the session actor's lines for the request carry it.
pub async fn log_request(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(request_id::HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(RequestId::from_client)
        .unwrap_or_else(RequestId::generate);
    // ERROR level so that no log filter drops the span while keeping a
    // warning logged inside it (which would lose the request id).
    let span = tracing::error_span!(
        "http",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %id,
    );
    let started = std::time::Instant::now();
    let mut response = id
        .clone()
        .scope(next.run(request).instrument(span.clone()))
        .await;
    if let Ok(value) = header::HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert(request_id::HEADER, value);
    }
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request"
        );
    });
    response
}
