//! `ApiError`: the one error type of the HTTP layer.
//!
//! User mistakes become 4xx with a sentence in `error`; internal failures
//! become a generic 500, logged once here with the request's span.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::json::{ErrorBody, json_response};

use crate::auth::AuthError;
use crate::cluster::ClusterError;
use crate::session::SessionError;
use crate::storage::StorageError;
use crate::whatsapp::WhatsAppError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A limit of the caller's is reached; retrying later may succeed.
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    BadGateway(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        ApiError::Unauthorized(e.to_string())
    }
}

/// Cluster mode: the database is unreachable, the phone is moving, or its
/// holder did not answer; a reset asked through the database that its
/// session refused answers as the session's error does.
impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> ApiError {
        match e {
            ClusterError::Session(e) => ApiError::from(e),
            e => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> ApiError {
        match e {
            SessionError::NotFound | SessionError::MessageNotFound => {
                ApiError::NotFound(e.to_string())
            }
            SessionError::Conflict(m) => ApiError::Conflict(m),
            SessionError::Invalid(m) => ApiError::BadRequest(m),
            SessionError::Vetoed { .. } => ApiError::Conflict(e.to_string()),
            SessionError::WhatsApp(WhatsAppError::NotConnected | WhatsAppError::AlreadyPaired) => {
                ApiError::Conflict(e.to_string())
            }
            SessionError::WhatsApp(WhatsAppError::Timeout) => ApiError::Unavailable(e.to_string()),
            SessionError::WhatsApp(_) => ApiError::BadGateway(e.to_string()),
            // Cluster mode: the phone moved to another node, or the
            // database is unreachable; a retry finds the new holder.
            SessionError::Storage(
                StorageError::LeaseLost { .. } | StorageError::Database { .. },
            ) => ApiError::Unavailable(e.to_string()),
            SessionError::Storage(_) => ApiError::Internal(e.to_string()),
            SessionError::LimitReached(m) => ApiError::TooManyRequests(m),
            SessionError::TooLarge(m) => ApiError::PayloadTooLarge(m),
            SessionError::Unavailable | SessionError::OutOfDescriptors { .. } => {
                ApiError::Unavailable(e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status(), &self.error_body())
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The body the client gets. An internal failure is logged here, once,
    /// in the request's span, and the client gets a generic sentence.
    pub(crate) fn error_body(&self) -> ErrorBody {
        let error = match self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error; the server log has the details".to_owned()
            }
            other => other.to_string(),
        };
        ErrorBody {
            error,
            success: false,
        }
    }
}
