//! The error responses several routes share, each documented once: a route
//! lists the type in `#[utoipa::path(responses(...))]` (`NoToken`,
//! `BadPhone`, …) instead of writing the response out again.
//!
//! Each expands to exactly the response a route's own
//! `(status = …, description = …, body = ErrorBody)` would (utoipa inlines
//! it; no `components/responses`), so the document does not change. The
//! example sentences come from `openapi::ErrorExamples`, per route. These
//! types document; no handler builds them (`ApiError` is what answers).

#![allow(dead_code)] // The types are read by the OpenAPI derive only.

use utoipa::IntoResponses;

use super::json::ErrorBody;

/// 401: every route with `security(("bearer" = []))`.
#[derive(IntoResponses)]
#[response(status = 401, description = "No valid token")]
pub struct NoToken(ErrorBody);

/// 403: the operators' routes.
#[derive(IntoResponses)]
#[response(status = 403, description = "A tenant's token (operators only)")]
pub struct OperatorsOnly(ErrorBody);

/// 400: a `{phone}` route whose only path parameter is the phone.
#[derive(IntoResponses)]
#[response(
    status = 400,
    description = "The phone in the path is not 8 to 15 digits"
)]
pub struct BadPhone(ErrorBody);

/// 404: a `{phone}` route that needs the caller's session and nothing else.
#[derive(IntoResponses)]
#[response(status = 404, description = "No such session for this caller")]
pub struct NoSession(ErrorBody);

/// 500: a route that writes files or renders (`ApiError::Internal`).
#[derive(IntoResponses)]
#[response(status = 500, description = "The host failed (details in its log)")]
pub struct HostFailed(ErrorBody);

/// 503: a route the session's actor answers.
#[derive(IntoResponses)]
#[response(status = 503, description = "The session did not answer in time")]
pub struct SessionTimeout(ErrorBody);

/// 502 and 503: a route the session answers by asking WhatsApp.
#[derive(IntoResponses)]
pub enum WhatsAppFailed {
    #[response(status = 502, description = "WhatsApp refused")]
    Refused(ErrorBody),
    #[response(
        status = 503,
        description = "WhatsApp (or the session) did not answer in time"
    )]
    TimedOut(ErrorBody),
}
