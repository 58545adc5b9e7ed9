//! `/api/sessions` and a session's own routes: list, create, status, QR,
//! pairing code, groups and contacts, with their bodies. The messages of a
//! session are `messages.rs`; its disconnect and reset, `reset.rs`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;
use utoipa::{IntoResponses, ToSchema};

use super::extract::{ApiJson, AuthCaller, PhoneParam, PhonePath};
use super::json::{ErrorBody, StringOrNumber, Success, string_or_phone_number_schema};
use super::qr::png_data_url;
use super::responses::{BadPhone, HostFailed, NoSession, NoToken, SessionTimeout, WhatsAppFailed};
use super::{ApiError, AppState};
use crate::cluster::peers::FORWARDED_FROM;
use crate::core::tenant::{Caller, TenantId};
use crate::phone::Phone;
use crate::session::SessionView;
use crate::whatsapp::GroupInfo;

/// The caller's sessions (an operator's: every tenant's, with `companyId`).
/// In cluster mode, every node's: the records in PostgreSQL, with the live
/// view of each session from the node running it.
#[utoipa::path(
    get, path = "/api/sessions", tag = "sessions",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's sessions", body = Success<SessionListBody>),
        (status = 503, description = "Cluster mode: the cluster's database is unreachable", body = ErrorBody),
        NoToken,
    )
)]
pub async fn list_sessions(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    headers: HeaderMap,
) -> Result<Success<SessionListBody>, ApiError> {
    let bodies = |views: &[SessionView]| -> Vec<SessionBody> {
        views.iter().map(|v| SessionBody::new(v, &caller)).collect()
    };
    let Some(cluster) = &state.cluster else {
        let sessions = bodies(&state.gateway.list(&caller));
        return Ok(Success::new(SessionListBody { sessions }));
    };
    let here = bodies(&state.gateway.list_running_here(&caller));
    // A peer gathering the cluster's sessions asks for this node's own.
    if headers.contains_key(FORWARDED_FROM) {
        return Ok(Success::new(SessionListBody { sessions: here }));
    }
    let mut sessions: BTreeMap<String, SessionBody> =
        bodies(&cluster.sessions_at_rest(&caller).await?)
            .into_iter()
            .map(|b| (b.phone_number.clone(), b))
            .collect();
    let running_elsewhere: Vec<SessionBody> = cluster.sessions_of_peers(&caller).await?;
    for body in running_elsewhere.into_iter().chain(here) {
        sessions.insert(body.phone_number.clone(), body);
    }
    Ok(Success::new(SessionListBody {
        sessions: sessions.into_values().collect(),
    }))
}

/// Creates or starts a session; lifts a previous reset. The QR flow begins.
#[utoipa::path(
    post, path = "/api/sessions", tag = "sessions",
    security(("bearer" = [])),
    request_body = CreateSessionRequest,
    responses(
        (status = 200, description = "The session, starting", body = Success<SessionBody>,
            links(
                ("status" = (operation_id = "session_status",
                    parameters(("phone" = "$response.body#/phoneNumber")))),
                ("qr" = (operation_id = "session_qr",
                    parameters(("phone" = "$response.body#/phoneNumber")))),
                ("sendMessage" = (operation_id = "enqueue_message",
                    parameters(("phone" = "$response.body#/phoneNumber")))),
                ("outbox" = (operation_id = "outbox",
                    parameters(("phone" = "$response.body#/phoneNumber")))),
                ("clear" = (operation_id = "clear_session",
                    parameters(("phone" = "$response.body#/phoneNumber")))),
            )),
        (status = 400, description = "A missing or invalid `phoneNumber` or `companyId`, or a body that is not JSON", body = ErrorBody),
        (status = 409, description = "The phone is not available to this tenant (another tenant's, or files without an owner: the answer does not say which)", body = ErrorBody),
        (status = 429, description = "The tenant owns as many sessions as it may (`max_sessions_per_tenant`; an operator's create is exempt)", body = ErrorBody),
        (status = 503, description = "The session did not answer in time, or the node is out of file descriptors (the sentence says which)", body = ErrorBody),
        NoToken, HostFailed,
    )
)]
pub async fn create_session(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    ApiJson(body): ApiJson<CreateSessionRequest>,
) -> Result<Success<SessionBody>, ApiError> {
    let (phone, owner) = body.into_parts(&caller)?;
    let view = state.gateway.create(&phone, &caller, owner).await?;
    Ok(Success::new(SessionBody::new(&view, &caller)))
}

/// A session's state: `status`, `ready`, `me`, `lastError`, `pendingMessages`.
#[utoipa::path(
    get, path = "/api/sessions/{phone}/status", tag = "sessions",
    security(("bearer" = [])),
    params(PhonePath),
    responses(
        (status = 200, description = "The session", body = Success<SessionBody>),
        BadPhone, NoToken, NoSession, SessionTimeout,
    )
)]
pub async fn session_status(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    PhoneParam(phone): PhoneParam,
) -> Result<Success<SessionBody>, ApiError> {
    let view = state.gateway.lookup(&phone)?.view(caller.clone()).await?;
    Ok(Success::new(SessionBody::new(&view, &caller)))
}

/// The current QR, raw and as a PNG data URL.
#[utoipa::path(
    get, path = "/api/sessions/{phone}/qr", tag = "sessions",
    security(("bearer" = [])),
    params(PhonePath),
    responses(
        (status = 200, description = "The QR to scan", body = Success<QrBody>),
        (status = 404, description = "No such session for this caller, or no QR right now (already paired, or not yet)", body = ErrorBody),
        BadPhone, NoToken, HostFailed, SessionTimeout,
    )
)]
pub async fn session_qr(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    PhoneParam(phone): PhoneParam,
) -> Result<Success<QrBody>, ApiError> {
    let view = state.gateway.lookup(&phone)?.view(caller).await?;
    let Some(qr) = view.qr else {
        let why = match view.status {
            "connected" => "the session is already paired, so there is no QR code".to_owned(),
            // A paired session reconnecting, or a pairing whose connection
            // dropped: which one, `lastError` of the status says.
            "reconnecting" if view.me.is_some() => {
                "the session is already paired, so there is no QR code".to_owned()
            }
            status => {
                format!("there is no QR code right now (status: {status}); try again in a moment")
            }
        };
        return Err(ApiError::NotFound(why));
    };
    let image = png_data_url(&qr).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Success::new(QrBody {
        phone_number: phone.as_str().to_owned(),
        qr,
        qr_image: image,
    }))
}

/// An 8-character code to link the device by phone number instead of a QR.
#[utoipa::path(
    post, path = "/api/sessions/{phone}/pairing-code", tag = "sessions",
    security(("bearer" = [])),
    params(PhonePath),
    responses(PairingCodeAnswers, BadPhone, NoToken, NoSession, WhatsAppFailed)
)]
pub async fn pairing_code(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    PhoneParam(phone): PhoneParam,
) -> Result<Success<PairingCodeBody>, ApiError> {
    let code = state.gateway.lookup(&phone)?.pairing_code(caller).await?;
    Ok(Success::new(PairingCodeBody {
        phone_number: phone.as_str().to_owned(),
        code,
    }))
}

/// The same as `POST /api/sessions/{phone}/pairing-code` (the older path).
#[utoipa::path(
    post, path = "/api/sessions/{phone}/request-pairing-code", tag = "sessions",
    security(("bearer" = [])),
    params(PhonePath),
    responses(PairingCodeAnswers, BadPhone, NoToken, NoSession, WhatsAppFailed)
)]
pub async fn request_pairing_code(
    state: State<AppState>,
    caller: AuthCaller,
    phone: PhoneParam,
) -> Result<Success<PairingCodeBody>, ApiError> {
    pairing_code(state, caller, phone).await
}

/// The groups the session has joined.
#[utoipa::path(
    get, path = "/api/sessions/{phone}/groups", tag = "sessions",
    security(("bearer" = [])),
    params(PhonePath),
    responses(
        (status = 200, description = "Joined groups", body = Success<GroupsBody>),
        (status = 409, description = "The session is not connected", body = ErrorBody),
        BadPhone, NoToken, NoSession, WhatsAppFailed,
    )
)]
pub async fn groups(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    PhoneParam(phone): PhoneParam,
) -> Result<Success<GroupsBody>, ApiError> {
    let groups = state.gateway.lookup(&phone)?.groups(caller).await?;
    Ok(Success::new(GroupsBody {
        groups: groups.iter().map(GroupBody::from).collect(),
    }))
}

/// The contacts the session has collected.
#[utoipa::path(
    get, path = "/api/sessions/{phone}/contacts", tag = "sessions",
    security(("bearer" = [])),
    params(PhonePath),
    responses(
        (status = 200, description = "Contacts", body = Success<ContactsBody>),
        BadPhone, NoToken, NoSession, SessionTimeout,
    )
)]
pub async fn contacts(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    PhoneParam(phone): PhoneParam,
) -> Result<Success<ContactsBody>, ApiError> {
    let contacts = state.gateway.lookup(&phone)?.contacts(caller).await?;
    let contacts = contacts
        .into_iter()
        .map(|(id, name)| ContactBody { id, name })
        .collect();
    Ok(Success::new(ContactsBody { contacts }))
}

/// `POST /api/sessions`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateSessionRequest {
    /// The phone to create or start.
    #[schema(schema_with = phone_in_body_schema, required = true)]
    pub phone_number: Option<StringOrNumber>,
    /// Operator tokens only: the tenant the new session belongs to (a
    /// tenant's token always creates its own session, and this is ignored).
    #[schema(value_type = Option<String>, min_length = 1, max_length = 128, example = "acme")]
    pub company_id: Option<StringOrNumber>,
}

impl CreateSessionRequest {
    /// The phone to create and the tenant it belongs to, as `caller` may
    /// ask: a tenant's token always creates its own session; an operator
    /// names the tenant, or none.
    pub fn into_parts(self, caller: &Caller) -> Result<(Phone, Option<TenantId>), ApiError> {
        let raw = self
            .phone_number
            .ok_or_else(|| ApiError::BadRequest("phoneNumber is required".into()))?;
        let phone = Phone::parse(&raw.into_string("phoneNumber")?)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let owner = match (caller, self.company_id) {
            (Caller::Tenant(tenant), _) => Some(tenant.clone()),
            (Caller::Operator, Some(id)) => Some(
                TenantId::parse(&id.into_string("companyId")?)
                    .map_err(|e| ApiError::BadRequest(e.to_string()))?,
            ),
            (Caller::Operator, None) => None,
        };
        Ok((phone, owner))
    }
}

/// The documented shape of a phone sent in a body: digits as a string (or a number).
fn phone_in_body_schema() -> impl Into<RefOr<Schema>> {
    string_or_phone_number_schema(
        PHONE_PATTERN,
        "E.164 without `+`: 8 to 15 ASCII digits, as a string (or a JSON number)",
        "51987654321",
    )
}

/// A phone: 8 to 15 ASCII digits (E.164 without `+`).
pub const PHONE_PATTERN: &str = "^[0-9]{8,15}$";

/// What `status` a session can have. The document's list of values: the
/// session code spells them as `&'static str` (`SessionView::status`), so
/// this enum is never built; a test checks the two agree.
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Starting,
    Qr,
    Connected,
    Reconnecting,
    Stopped,
    LoggedOut,
    Failed,
    /// A reset's tombstone: only `POST /api/sessions` brings the phone back.
    Cleared,
}

/// A session, as the list, create and status calls show it. Also read back,
/// when a cluster node gathers the sessions its peers run.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionBody {
    #[schema(example = "51987654321")]
    pub phone_number: String,
    /// `starting`, `qr`, `connected`, `reconnecting`, `stopped`, `logged_out`, `failed` or `cleared`.
    #[schema(value_type = SessionStatus)]
    pub status: String,
    /// True exactly when `status` is `connected`.
    pub ready: bool,
    /// The session's own JID, once paired.
    #[schema(example = "51987654321@s.whatsapp.net")]
    pub me: Option<String>,
    /// Why the last connection attempt failed; cleared once WhatsApp answers again.
    pub last_error: Option<String>,
    /// Whether `GET /api/sessions/{phone}/qr` has a QR to show.
    pub qr_available: bool,
    /// Messages still in the outbox.
    pub pending_messages: usize,
    /// Operator tokens only: the tenant that owns the session (`null` for none).
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "present"
    )]
    #[schema(value_type = Option<String>, required = false)]
    pub company_id: Option<Option<String>>,
}

/// A field that was there, `null` or not: `Some` (absent stays `None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

impl SessionBody {
    pub fn new(view: &SessionView, caller: &Caller) -> SessionBody {
        SessionBody {
            phone_number: view.phone.as_str().to_owned(),
            status: view.status.to_owned(),
            ready: view.ready,
            me: view.me.clone(),
            last_error: view.last_error.clone(),
            qr_available: view.qr.is_some(),
            pending_messages: view.pending_messages,
            company_id: (*caller == Caller::Operator)
                .then(|| view.owner.as_ref().map(|t| t.as_str().to_owned())),
        }
    }
}

/// `GET /api/sessions`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionListBody {
    pub sessions: Vec<SessionBody>,
}

/// `GET /api/sessions/{phone}/qr`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QrBody {
    #[schema(example = "51987654321")]
    pub phone_number: String,
    /// The raw QR string, for a client that draws its own.
    #[schema(example = "2@AbCdEf…,…,…,…")]
    pub qr: String,
    /// The QR as a PNG data URL.
    #[schema(example = "data:image/png;base64,iVBORw0KGgo…")]
    pub qr_image: String,
}

/// What both paths of the pairing code answer but the shared errors: the
/// code, or a 409.
#[derive(IntoResponses)]
#[allow(dead_code)] // Read by the OpenAPI derive only.
pub enum PairingCodeAnswers {
    #[response(status = 200, description = "The pairing code")]
    Code(Success<PairingCodeBody>),
    #[response(
        status = 409,
        description = "The session is already paired, or not running"
    )]
    NotNow(ErrorBody),
}

/// `POST /api/sessions/{phone}/pairing-code`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PairingCodeBody {
    #[schema(example = "51987654321")]
    pub phone_number: String,
    /// 8 characters, to type on the phone (Linked devices → Link with phone number).
    #[schema(example = "ABCD1234")]
    pub code: String,
}

/// One joined group.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupBody {
    #[schema(example = "120363000000000000@g.us")]
    pub id: String,
    #[schema(example = "Equipo")]
    pub subject: String,
    /// How many participants it has.
    pub participants: usize,
}

impl From<&GroupInfo> for GroupBody {
    fn from(g: &GroupInfo) -> GroupBody {
        GroupBody {
            id: g.id.clone(),
            subject: g.subject.clone(),
            participants: g.participants,
        }
    }
}

/// `GET /api/sessions/{phone}/groups`.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupsBody {
    pub groups: Vec<GroupBody>,
}

/// One contact.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactBody {
    #[schema(example = "51900000001@s.whatsapp.net")]
    pub id: String,
    #[schema(example = "Ana")]
    pub name: String,
}

/// `GET /api/sessions/{phone}/contacts`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactsBody {
    pub contacts: Vec<ContactBody>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::status::Status;
    use crate::http::json::wire_name;

    #[test]
    fn the_documented_session_statuses_are_those_the_sessions_report() {
        let documented: Vec<String> = [
            SessionStatus::Starting,
            SessionStatus::Qr,
            SessionStatus::Connected,
            SessionStatus::Reconnecting,
            SessionStatus::Stopped,
            SessionStatus::LoggedOut,
            SessionStatus::Failed,
            SessionStatus::Cleared,
        ]
        .into_iter()
        .map(wire_name)
        .collect();
        let statuses = [
            Status::Stopped,
            Status::Starting,
            Status::Qr,
            Status::Connected,
            Status::Reconnecting,
            Status::LoggedOut,
            Status::Failed,
        ];
        // Plus what a session at rest or cleared says (session/index.rs, actor/commands.rs).
        for reported in statuses
            .map(Status::as_str)
            .into_iter()
            .chain(["logged_out", "cleared"])
        {
            assert!(documented.iter().any(|d| d == reported), "{reported}");
        }
    }
}
