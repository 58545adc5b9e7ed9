//! The admin HTTP API (`/admin/...`) and the WebSocket route (`/ws/chat`), on one
//! router. Every admin route is a thin wrapper over a `SimControl` method.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use serde::Deserialize;
use serde_json::json;

use crate::connection::serve_socket;
use crate::error::SimError;
use crate::{ContactMessage, Content, GroupSpec, Media, MediaKind, SimControl};

impl IntoResponse for SimError {
    fn into_response(self) -> Response {
        let status = match &self {
            SimError::NotFound(_) => StatusCode::NOT_FOUND,
            SimError::BadRequest(_) => StatusCode::BAD_REQUEST,
            SimError::Conflict(_) => StatusCode::CONFLICT,
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
        .route("/admin/messages/{id}", get(inbound_message))
        .route("/admin/messages/{id}/read", post(read_message))
        .route("/admin/contacts/{from}/send", post(send_from_contact))
        .route("/v/{*rest}", get(crate::media::download))
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
    lid: Option<String>,
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
    let jid =
        control.add_contact_with_lid(&contact.phone, &contact.name, contact.lid.as_deref())?;
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

async fn inbound_message(
    State(control): State<SimControl>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, SimError> {
    let status = control
        .inbound_message(&id)
        .ok_or_else(|| SimError::NotFound(format!("no contact sent a message {id}")))?;
    Ok(Json(json!({ "success": true, "message": status })))
}

#[derive(Deserialize)]
struct SendQuery {
    to: Option<String>,
}

/// The body of `POST /admin/contacts/{from}/send`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SendBody {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    mimetype: Option<String>,
    data_base64: Option<String>,
    caption: Option<String>,
    file_name: Option<String>,
    ptt: Option<bool>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    name: Option<String>,
    display_name: Option<String>,
    vcard: Option<String>,
    message_id: Option<String>,
    emoji: Option<String>,
    quoted_id: Option<String>,
    #[serde(default)]
    mentions: Vec<String>,
    group: Option<String>,
}

fn required<T>(value: Option<T>, kind: &str, field: &str) -> Result<T, SimError> {
    value.ok_or_else(|| SimError::BadRequest(format!("a {kind} message needs \"{field}\"")))
}

impl SendBody {
    fn into_message(self) -> Result<ContactMessage, SimError> {
        let kind = self.kind.as_str();
        let media_kind = match kind {
            "image" => Some(MediaKind::Image),
            "video" => Some(MediaKind::Video),
            "audio" => Some(MediaKind::Audio),
            "document" => Some(MediaKind::Document),
            "sticker" => Some(MediaKind::Sticker),
            _ => None,
        };
        let content = match (kind, media_kind) {
            ("text", _) => Content::Text(required(self.text, kind, "text")?),
            (_, Some(media_kind)) => {
                let data = BASE64_STANDARD
                    .decode(required(self.data_base64, kind, "dataBase64")?)
                    .map_err(|_| SimError::BadRequest("\"dataBase64\" is not base64".into()))?;
                Content::Media {
                    kind: media_kind,
                    media: Media {
                        mimetype: required(self.mimetype, kind, "mimetype")?,
                        data,
                        caption: self.caption,
                        file_name: self.file_name,
                        ptt: self.ptt.unwrap_or(false),
                    },
                }
            }
            ("location", _) => Content::Location {
                latitude: required(self.latitude, kind, "latitude")?,
                longitude: required(self.longitude, kind, "longitude")?,
                name: self.name,
            },
            ("contact", _) => Content::Contact {
                display_name: required(self.display_name, kind, "displayName")?,
                vcard: required(self.vcard, kind, "vcard")?,
            },
            ("reaction", _) => Content::Reaction {
                message_id: required(self.message_id, kind, "messageId")?,
                emoji: required(self.emoji, kind, "emoji")?,
            },
            (other, _) => {
                return Err(SimError::BadRequest(format!(
                    "unknown message type {other:?} (text, image, video, audio, document, \
                     sticker, location, contact or reaction)"
                )));
            }
        };
        Ok(ContactMessage {
            content,
            quoted_id: self.quoted_id,
            mentions: self.mentions,
            group: self.group,
        })
    }
}

async fn send_from_contact(
    State(control): State<SimControl>,
    Path(from): Path<String>,
    Query(query): Query<SendQuery>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, SimError> {
    let to = query
        .to
        .ok_or_else(|| SimError::BadRequest("say which phone with ?to=DIGITS".into()))?;
    let body: SendBody = serde_json::from_slice(&body)
        .map_err(|e| SimError::BadRequest(format!("the body is not a message: {e}")))?;
    let id = control
        .send_from_contact(&from, &to, body.into_message()?)
        .await?;
    Ok(Json(json!({ "success": true, "id": id })))
}
