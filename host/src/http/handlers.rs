//! Route handlers and the extractors they share.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::Instrument;

use super::qr::png_data_url;
use super::{ApiError, AppState};
use crate::core::message_status::is_message_id;
use crate::core::tenant::{Caller, TenantId};
use crate::hooks::{HookRun, RemovedTarget};
use crate::phone::Phone;
use crate::request_id::{self, RequestId};
use crate::session::SessionView;

/// The authenticated caller. Runs first in every handler, so a bad token is
/// a 401 whatever else is wrong with the request.
pub struct AuthCaller(pub Caller);

impl FromRequestParts<AppState> for AuthCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or(""));
        Ok(AuthCaller(state.auth.authenticate(header)?))
    }
}

/// The `{phone}` path segment, validated before anything else looks at it.
pub struct PhoneParam(pub Phone);

impl FromRequestParts<AppState> for PhoneParam {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| bad_phone_path())?;
        parse_phone_param(&raw).map(PhoneParam)
    }
}

fn bad_phone_path() -> ApiError {
    ApiError::BadRequest("the phone number in the path is not valid".into())
}

fn parse_phone_param(raw: &str) -> Result<Phone, ApiError> {
    Phone::parse(raw).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// The `{phone}` and `{id}` segments of `/api/sessions/{phone}/messages/{id}`.
pub struct PhoneAndMessageId(pub Phone, pub String);

impl FromRequestParts<AppState> for PhoneAndMessageId {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Path((raw_phone, id)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| bad_phone_path())?;
        let phone = parse_phone_param(&raw_phone)?;
        if !is_message_id(&id) {
            return Err(ApiError::BadRequest(
                "the message id in the path is not valid (it looks like 3EB0 and 20 hex digits)"
                    .into(),
            ));
        }
        Ok(PhoneAndMessageId(phone, id))
    }
}

/// A JSON body whose rejections are JSON errors like every other.
pub struct ApiJson<T>(pub T);

impl<T: serde::de::DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::BadRequest(
                "the body must be JSON (Content-Type: application/json)".into(),
            )),
            Err(rejection) => Err(ApiError::BadRequest(format!(
                "invalid JSON body: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// A string or a number, as the Portal may send either for ids and phones.
fn string_or_number(value: &Value, field: &str) -> Result<String, ApiError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(ApiError::BadRequest(format!("'{field}' must be a string"))),
    }
}

fn session_json(view: &SessionView, caller: &Caller) -> Value {
    let mut body = json!({
        "phoneNumber": view.phone.as_str(),
        "status": view.status,
        "ready": view.ready,
        "me": view.me,
        "lastError": view.last_error,
        "qrAvailable": view.qr.is_some(),
        "pendingMessages": view.pending_messages,
    });
    if *caller == Caller::Operator {
        body["companyId"] = json!(view.owner.as_ref().map(TenantId::as_str));
    }
    body
}

fn ok(mut body: Value) -> Json<Value> {
    body["success"] = json!(true);
    Json(body)
}

pub async fn list_sessions(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
) -> Json<Value> {
    let sessions: Vec<Value> = state
        .gateway
        .list(&caller)
        .iter()
        .map(|v| session_json(v, &caller))
        .collect();
    ok(json!({ "sessions": sessions }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateBody {
    phone_number: Option<Value>,
    company_id: Option<Value>,
}

pub async fn create_session(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Json<Value>, ApiError> {
    let raw = body
        .phone_number
        .ok_or_else(|| ApiError::BadRequest("phoneNumber is required".into()))?;
    let phone = Phone::parse(&string_or_number(&raw, "phoneNumber")?)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // A tenant's sessions are its own; an operator may create one for a tenant.
    let owner = match (&caller, body.company_id) {
        (Caller::Tenant(tenant), _) => Some(tenant.clone()),
        (Caller::Operator, Some(id)) => Some(
            TenantId::parse(&string_or_number(&id, "companyId")?)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?,
        ),
        (Caller::Operator, None) => None,
    };
    let view = state
        .gateway
        .session(&phone)
        .create(caller.clone(), owner)
        .await?;
    Ok(ok(session_json(&view, &caller)))
}

pub async fn session_status(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    PhoneParam(phone): PhoneParam,
) -> Result<Json<Value>, ApiError> {
    let view = state.gateway.lookup(&phone)?.view(caller.clone()).await?;
    Ok(ok(session_json(&view, &caller)))
}

pub async fn session_qr(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    PhoneParam(phone): PhoneParam,
) -> Result<Json<Value>, ApiError> {
    let view = state.gateway.lookup(&phone)?.view(caller).await?;
    let Some(qr) = view.qr else {
        let why = match view.status {
            "connected" | "reconnecting" => {
                "the session is already paired, so there is no QR code".to_owned()
            }
            status => {
                format!("there is no QR code right now (status: {status}); try again in a moment")
            }
        };
        return Err(ApiError::NotFound(why));
    };
    let image = png_data_url(&qr).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(ok(
        json!({ "phoneNumber": phone.as_str(), "qr": qr, "qrImage": image }),
    ))
}

pub async fn pairing_code(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    PhoneParam(phone): PhoneParam,
) -> Result<Json<Value>, ApiError> {
    let code = state.gateway.lookup(&phone)?.pairing_code(caller).await?;
    Ok(ok(json!({ "phoneNumber": phone.as_str(), "code": code })))
}

pub async fn groups(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    PhoneParam(phone): PhoneParam,
) -> Result<Json<Value>, ApiError> {
    let groups = state.gateway.lookup(&phone)?.groups(caller).await?;
    let groups: Vec<Value> = groups
        .iter()
        .map(|g| json!({ "id": g.id, "subject": g.subject, "participants": g.participants }))
        .collect();
    Ok(ok(json!({ "groups": groups })))
}

pub async fn contacts(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    PhoneParam(phone): PhoneParam,
) -> Result<Json<Value>, ApiError> {
    let contacts = state.gateway.lookup(&phone)?.contacts(caller).await?;
    let contacts: Vec<Value> = contacts
        .iter()
        .map(|(id, name)| json!({ "id": id, "name": name }))
        .collect();
    Ok(ok(json!({ "contacts": contacts })))
}

#[derive(Deserialize)]
pub struct MessageBody {
    to: Option<Value>,
    text: Option<String>,
}

pub async fn enqueue_message(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    PhoneParam(phone): PhoneParam,
    ApiJson(body): ApiJson<MessageBody>,
) -> Result<Response, ApiError> {
    let to = string_or_number(
        &body
            .to
            .ok_or_else(|| ApiError::BadRequest("'to' is required".into()))?,
        "to",
    )?;
    let text = body
        .text
        .ok_or_else(|| ApiError::BadRequest("'text' is required".into()))?;
    let message = state
        .gateway
        .lookup(&phone)?
        .enqueue(caller, to, text)
        .await?;
    let body = ok(json!({ "id": message.id, "to": message.to.as_jid(), "status": "queued" }));
    Ok((StatusCode::ACCEPTED, body).into_response())
}

pub async fn message_status(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    PhoneAndMessageId(phone, id): PhoneAndMessageId,
) -> Result<Json<Value>, ApiError> {
    let status = state
        .gateway
        .lookup(&phone)?
        .message_status(caller, id)
        .await?;
    let mut body = json!({
        "id": status.id,
        "to": status.to,
        "status": status.state.as_str(),
        "queuedAtMs": status.queued_at_ms,
        "sentAtMs": status.sent_at_ms,
        "deliveredAtMs": status.delivered_at_ms,
        "readAtMs": status.read_at_ms,
        "failedAtMs": status.failed_at_ms,
    });
    if let (Some(error), Some(map)) = (status.error, body.as_object_mut()) {
        map.insert("error".into(), Value::String(error));
    }
    Ok(ok(body))
}

pub async fn outbox(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    PhoneParam(phone): PhoneParam,
) -> Result<Json<Value>, ApiError> {
    let pending = state.gateway.lookup(&phone)?.outbox(caller).await?;
    let pending: Vec<Value> = pending
        .iter()
        .map(|m| json!({ "id": m.id, "to": m.to.as_jid(), "text": m.text, "createdAtMs": m.created_at_ms, "attempts": m.attempts }))
        .collect();
    Ok(ok(json!({ "count": pending.len(), "pending": pending })))
}

fn removed_json(removed: &[RemovedTarget]) -> Vec<Value> {
    removed
        .iter()
        .map(|r| {
            json!({
                "kind": r.kind.as_str(),
                "path": r.path.to_string_lossy(),
                "existed": r.existed,
                "files": r.files,
                "bytes": r.bytes,
            })
        })
        .collect()
}

fn hooks_json(runs: &[HookRun]) -> Vec<Value> {
    runs.iter()
        .map(|r| {
            let detail = match &r.outcome {
                crate::hooks::HookOutcome::Vetoed(reason)
                | crate::hooks::HookOutcome::Failed(reason)
                | crate::hooks::HookOutcome::Skipped(reason) => Some(reason.clone()),
                _ => None,
            };
            json!({ "plugin": r.plugin, "hook": r.hook, "outcome": r.outcome.as_str(), "detail": detail, "durationMs": r.duration_ms })
        })
        .collect()
}

pub async fn disconnect_session(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    PhoneParam(phone): PhoneParam,
) -> Result<Json<Value>, ApiError> {
    let report = state.gateway.lookup(&phone)?.disconnect(caller).await?;
    Ok(ok(json!({
        "phoneNumber": phone.as_str(),
        "status": "stopped",
        "message": format!("Session {phone} disconnected; it will not reconnect until it is created again"),
        "loggedOut": report.logged_out,
        "removed": removed_json(&report.removed),
        "pendingMessagesKept": report.pending_messages_kept,
    })))
}

pub async fn clear_session(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    PhoneParam(phone): PhoneParam,
) -> Result<Json<Value>, ApiError> {
    let report = state.gateway.session(&phone).clear(caller).await?;
    Ok(ok(json!({
        "phoneNumber": phone.as_str(),
        "message": format!("Session {phone} cleared completely"),
        "loggedOut": report.logged_out,
        "removed": removed_json(&report.removed),
        "outboxMessagesDropped": report.outbox_messages_dropped(),
        "hooks": hooks_json(&report.hooks),
        "durationMs": report.duration_ms,
    })))
}

/// `GET /api/plugins`: operators only. A tenant gets 403: the list names
/// other tenants and their plugins, and unlike a session there is nothing
/// whose existence the 404 would hide.
pub async fn list_plugins(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
) -> Result<Json<Value>, ApiError> {
    if !matches!(caller, Caller::Operator) {
        return Err(ApiError::Forbidden(
            "only an operator token may list plugins".into(),
        ));
    }
    let view = state.gateway.hooks().plugins().unwrap_or_default();
    let plugins: Vec<Value> = view
        .plugins
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "owner": p.owner.as_ref().map(|t| t.as_str()),
                "file": p.file.display().to_string(),
                "loaded": p.loaded,
                "state": p.state,
                "compiledFrom": p.compiled_from,
                "compileMs": p.compile_ms,
                "sha256": p.sha256,
                "sizeBytes": p.size_bytes,
                "loadedAtMs": p.loaded_at_ms,
                "enabled": p.enabled,
                "hooks": p.hooks,
                "tenants": p.tenants,
                "failMode": p.fail_mode,
                "timeBudgetMs": p.time_budget_ms,
                "memoryMib": p.memory_mib,
                "capabilities": p.capabilities,
                "lastError": p.last_error,
                "calls": {
                    "ok": p.calls.ok,
                    "vetoed": p.calls.vetoed,
                    "failed": p.calls.failed,
                    "timedOut": p.calls.timed_out,
                    "eventsDropped": p.calls.events_dropped,
                },
            })
        })
        .collect();
    Ok(ok(json!({
        "configFile": view.config_file.map(|f| f.display().to_string()),
        "configError": view.config_error,
        "plugins": plugins,
    })))
}

pub async fn health() -> Json<Value> {
    ok(json!({ "status": "ok" }))
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.gateway.metrics().render()
            + &crate::metrics::HookMetrics::render(state.gateway.hooks().hook_metrics()),
    )
        .into_response()
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
