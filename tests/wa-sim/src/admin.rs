//! The admin HTTP API (`/admin/...`) and the WebSocket route (`/ws/chat`), on one
//! router. Every admin route is a thin wrapper over a `SimControl` method.

use std::collections::BTreeMap;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::connection::serve_socket;
use crate::error::SimError;
use crate::{GroupSpec, SimControl};

impl IntoResponse for SimError {
    fn into_response(self) -> Response {
        let status = match &self {
            SimError::NotFound(_) => StatusCode::NOT_FOUND,
            SimError::BadRequest(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (
            status,
            Json(json!({ "success": false, "error": self.to_string() })),
        )
            .into_response()
    }
}

pub fn router(control: SimControl) -> Router {
    Router::new()
        .route("/ws/chat", get(websocket))
        .route(
            "/admin/health",
            get(|| async { Json(json!({ "success": true })) }),
        )
        .route("/admin/scan-qr", post(scan_qr))
        .route("/admin/devices", get(devices))
        .route("/admin/devices/{jid}/logout", post(logout))
        .route("/admin/devices/{jid}/drop", post(drop_socket))
        .route("/admin/devices/{jid}/replace", post(replace))
        .route("/admin/messages", get(messages))
        .route("/admin/messages/{id}/read", post(read_message))
        .route("/admin/removed", get(removed))
        .route("/admin/attempts/{phone}", get(attempts))
        .route("/admin/contacts", get(contacts).post(add_contact))
        .route("/admin/groups", get(groups).post(add_group))
        .with_state(control)
}

async fn websocket(State(control): State<SimControl>, ws: WebSocketUpgrade) -> Response {
    let shared = control.shared.clone();
    ws.max_message_size(16 << 20)
        .on_upgrade(move |socket| serve_socket(shared, socket))
}

#[derive(Deserialize)]
struct ScanQuery {
    phone: Option<String>,
}

async fn scan_qr(
    State(control): State<SimControl>,
    Query(query): Query<ScanQuery>,
    body: String,
) -> Result<Json<serde_json::Value>, SimError> {
    let jid = match query.phone {
        Some(phone) => control.scan_qr_as(&body, &phone)?,
        None => control.scan_qr(&body)?,
    };
    Ok(Json(json!({ "success": true, "jid": jid })))
}

async fn devices(State(control): State<SimControl>) -> Json<serde_json::Value> {
    Json(json!({ "success": true, "devices": control.devices() }))
}

async fn logout(
    State(control): State<SimControl>,
    Path(jid): Path<String>,
) -> Result<Json<serde_json::Value>, SimError> {
    control.logout_device(&jid)?;
    Ok(Json(json!({ "success": true })))
}

async fn drop_socket(
    State(control): State<SimControl>,
    Path(jid): Path<String>,
) -> Result<Json<serde_json::Value>, SimError> {
    control.drop_device(&jid)?;
    Ok(Json(json!({ "success": true })))
}

async fn replace(
    State(control): State<SimControl>,
    Path(jid): Path<String>,
) -> Result<Json<serde_json::Value>, SimError> {
    control.replace_stream(&jid)?;
    Ok(Json(json!({ "success": true })))
}

async fn messages(State(control): State<SimControl>) -> Json<serde_json::Value> {
    let by_recipient: BTreeMap<_, _> = control.messages_by_recipient();
    Json(json!({ "success": true, "messages": by_recipient }))
}

async fn read_message(
    State(control): State<SimControl>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, SimError> {
    control.read_message(&id)?;
    Ok(Json(json!({ "success": true })))
}

async fn removed(State(control): State<SimControl>) -> Json<serde_json::Value> {
    Json(json!({ "success": true, "removed": control.removed_devices() }))
}

async fn attempts(
    State(control): State<SimControl>,
    Path(phone): Path<String>,
) -> Json<serde_json::Value> {
    Json(
        json!({ "success": true, "phone": phone, "attempts": control.connection_attempts(&phone) }),
    )
}

#[derive(Deserialize)]
struct NewContact {
    phone: String,
    name: String,
}

async fn contacts(State(control): State<SimControl>) -> Json<serde_json::Value> {
    let contacts: Vec<_> = control
        .contacts()
        .into_iter()
        .map(|(jid, name)| json!({ "jid": jid, "name": name }))
        .collect();
    Json(json!({ "success": true, "contacts": contacts }))
}

async fn add_contact(
    State(control): State<SimControl>,
    Json(contact): Json<NewContact>,
) -> Result<Json<serde_json::Value>, SimError> {
    let jid = control.add_contact(&contact.phone, &contact.name)?;
    Ok(Json(json!({ "success": true, "jid": jid })))
}

#[derive(Deserialize)]
struct NewGroup {
    id: Option<String>,
    subject: String,
    #[serde(default)]
    participants: Vec<String>,
}

async fn groups(State(control): State<SimControl>) -> Json<serde_json::Value> {
    Json(json!({ "success": true, "groups": control.groups() }))
}

async fn add_group(
    State(control): State<SimControl>,
    Json(group): Json<NewGroup>,
) -> Result<Json<serde_json::Value>, SimError> {
    let jid = control.add_group(GroupSpec {
        id: group.id,
        subject: group.subject,
        participants: group.participants,
    })?;
    Ok(Json(json!({ "success": true, "jid": jid })))
}
