//! The extractors every handler shares: the caller (`AuthCaller`, always
//! first, so that a bad token is a 401 whatever else is wrong), the
//! `{phone}` and `{id}` path segments, validated before anything looks at
//! them, and `ApiJson`, a JSON body whose rejections are JSON errors; with
//! the path parameters as the OpenAPI document describes them.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::cluster::proof::ProvenCaller;
use crate::core::message_status::is_message_id;
use crate::core::tenant::Caller;
use crate::phone::Phone;

/// The authenticated caller. Runs first in every handler, so a bad token is
/// a 401 whatever else is wrong with the request.
pub struct AuthCaller(pub Caller);

impl FromRequestParts<AppState> for AuthCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // A request another node forwarded names its caller under a proof
        // the forwarding middleware checked (`http/forward.rs`).
        if let Some(ProvenCaller(caller)) = parts.extensions.get::<ProvenCaller>() {
            return Ok(AuthCaller(caller.clone()));
        }
        let AuthCallerUntil(caller, _) = AuthCallerUntil::from_request_parts(parts, state).await?;
        Ok(AuthCaller(caller))
    }
}

/// The authenticated caller, and the Unix second after which its token is
/// no longer accepted (an event stream ends then).
pub struct AuthCallerUntil(pub Caller, pub u64);

impl FromRequestParts<AppState> for AuthCallerUntil {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or(""));
        let (caller, until) = state.auth.authenticate_until(header)?;
        Ok(AuthCallerUntil(caller, until))
    }
}

/// 403 for a tenant's token on an operator's route: "only an operator
/// token may {doing}".
pub fn operator_only(caller: &Caller, doing: &str) -> Result<(), ApiError> {
    match caller {
        Caller::Operator => Ok(()),
        Caller::Tenant(_) => Err(ApiError::Forbidden(format!(
            "only an operator token may {doing}"
        ))),
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

/// The `{phone}` path parameter, as the OpenAPI document describes it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the OpenAPI derive only; `PhoneParam` parses the segment.
pub struct PhonePath {
    /// The session's phone: 8 to 15 ASCII digits (E.164 without `+`).
    #[param(pattern = "^[0-9]{8,15}$", example = "51987654321")]
    phone: String,
}

/// The `{phone}` and `{id}` path parameters of a message's status.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the OpenAPI derive only; `PhoneAndMessageId` parses them.
pub struct MessagePath {
    /// The session's phone: 8 to 15 ASCII digits (E.164 without `+`).
    #[param(pattern = "^[0-9]{8,15}$", example = "51987654321")]
    phone: String,
    /// The id `POST /api/sessions/{phone}/messages` returned.
    #[param(pattern = "^3EB0[0-9A-F]{20}$", example = "3EB0A1B2C3D4E5F6A7B8C9D0")]
    id: String,
}
