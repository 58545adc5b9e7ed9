//! The JSON every resource shares: `Success`, which adds `success: true` to
//! every 2xx body, `ErrorBody`, every error, and `StringOrNumber`, a phone
//! or an id the Portal may send as a string or a number. Each resource's
//! own request and response bodies, with the conversions from the host's
//! types (`SessionView`, `ResetReport`, …), stand next to its handlers
//! (`sessions.rs`, `messages.rs`, `reset.rs`, `plugins.rs`, `cluster.rs`).
//!
//! The JSON names are the Portal contract (SPEC section 3): a renamed
//! field breaks the Portal. Nothing in `http/` builds JSON but through
//! `Success` and `ErrorBody`.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};

use super::ApiError;

/// A successful response: the body's fields plus `success: true`.
// Serialized through a `serde_json::Value`, whose map keeps its keys sorted:
// the bytes stay exactly those of the `json!` bodies this replaced (`success`
// among the other keys in alphabetical order), whatever the order of the
// fields in the structs below.
#[derive(Debug, Serialize, ToSchema)]
pub struct Success<T> {
    /// Always `true` on a 2xx response.
    #[schema(example = true)]
    pub success: bool,
    #[serde(flatten)]
    pub body: T,
}

impl<T> Success<T> {
    pub fn new(body: T) -> Success<T> {
        Success {
            success: true,
            body,
        }
    }
}

impl<T: Serialize> IntoResponse for Success<T> {
    fn into_response(self) -> Response {
        json_response(StatusCode::OK, &self)
    }
}

/// `value` as a JSON response with `status`. Serializing these plain structs
/// cannot fail; if it ever did, the client gets the generic 500 body.
pub fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_value(value) {
        Ok(value) => (status, Json(value)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "internal error: serializing a response");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "application/json")],
                INTERNAL_ERROR_BODY,
            )
                .into_response()
        }
    }
}

/// What `ApiError::Internal` answers, written out for the one place that
/// cannot serialize it.
const INTERNAL_ERROR_BODY: &str =
    r#"{"error":"internal error; the server log has the details","success":false}"#;

/// Every error: `{ "error": "<a sentence the Portal shows as is>", "success": false }`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, as a sentence for a person.
    #[schema(example = "the phone number must be 8 to 15 digits")]
    pub error: String,
    /// Always `false` on an error.
    #[schema(example = false)]
    pub success: bool,
}

/// A value the Portal may send as a JSON string or as a number (phones, ids).
///
/// Any other JSON value is kept, so that the handler answers with a sentence
/// naming the field ("'to' must be a string") rather than a parser's message.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringOrNumber {
    Text(String),
    Number(serde_json::Number),
    /// Any other JSON value: matched so that it gets the sentence, never read.
    Other(#[allow(dead_code)] Value),
}

impl StringOrNumber {
    pub fn into_string(self, field: &str) -> Result<String, ApiError> {
        match self {
            StringOrNumber::Text(s) => Ok(s),
            StringOrNumber::Number(n) => Ok(n.to_string()),
            StringOrNumber::Other(_) => {
                Err(ApiError::BadRequest(format!("'{field}' must be a string")))
            }
        }
    }
}

/// A value the body may carry as a string matching `pattern` or as a JSON
/// number that is a phone (8 to 15 digits): what `StringOrNumber` reads.
pub(super) fn string_or_phone_number_schema(
    pattern: &str,
    description: &str,
    example: &str,
) -> impl Into<RefOr<Schema>> {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::String))
                .pattern(Some(pattern)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::Integer))
                .minimum(Some(10_000_000u64))
                .maximum(Some(999_999_999_999_999u64)),
        )
        .description(Some(description))
        .examples([example])
}

/// The JSON string a unit enum serializes to: the name the API spells.
#[cfg(test)]
pub(super) fn wire_name(value: impl Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
