//! The OpenAPI 3.1 document of the HTTP API, generated from the handlers'
//! `#[utoipa::path]` annotations (each resource's module: `sessions.rs`,
//! `messages.rs`, …), the body types next to them and the shared error
//! responses of `responses.rs`; and `GET /api/openapi.json`, which serves it.
//!
//! Served at `GET /api/openapi.json` and committed as `docs/openapi.json`;
//! `lila openapi > docs/openapi.json` regenerates the file, and a test fails
//! when the two differ.

use std::sync::OnceLock;

use serde_json::Value;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr};
use utoipa::{Modify, OpenApi};

use super::cluster;
use super::json::{ErrorBody, Success};
use super::messages;
use super::plugins;
use super::reset;
use super::service;
use super::sessions;

/// Every route of `router()`. A new route is one line in `paths(...)` (its
/// handler carries its `#[utoipa::path]`), plus its body types in
/// `components(schemas(...))` when they are not reachable from a path.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "lila",
        description = "The HTTP API of lila, a multi-tenant WhatsApp session gateway.\n\n\
Every response is JSON with `success`; every error also has `error`, a sentence the Portal \
shows as is. Every `/api` route but this document needs `Authorization: Bearer <JWT>` \
(see the `bearer` security scheme). A session belongs to the tenant that created it; another \
tenant gets 404 for it, exactly as for a session that does not exist. Every response carries \
an `x-request-id` header (the client's own when sane, else a new one).",
        license(name = "MIT"),
    ),
    paths(
        sessions::list_sessions,
        sessions::create_session,
        sessions::session_status,
        sessions::session_qr,
        sessions::pairing_code,
        sessions::request_pairing_code,
        sessions::groups,
        sessions::contacts,
        messages::enqueue_message,
        messages::message_status,
        messages::outbox,
        reset::disconnect_session,
        reset::clear_session,
        plugins::list_plugins,
        cluster::cluster,
        service::health,
        service::metrics,
        openapi_json,
        super::events::event_stream,
    ),
    components(schemas(
        // Named by `responses.rs`' shared responses, which do not register it.
        ErrorBody,
        // Named by `sessions::PairingCodeAnswers` only, which does not register them.
        Success<sessions::PairingCodeBody>,
        sessions::PairingCodeBody,
        super::sessions::SessionStatus,
        super::messages::MessageState,
        super::reset::HookName,
        super::events::EventBody,
        super::events::EventsMissedBody,
        super::events::EventsDroppedBody,
        super::events::EventsEndedBody,
    )),
    modifiers(&BearerJwt, &ErrorExamples),
    tags(
        (name = "sessions", description = "Sessions: create, pair, inspect, disconnect, reset"),
        (name = "messages", description = "The durable outbox and message statuses"),
        (name = "events", description = "Live session and message events (Server-Sent Events)"),
        (name = "plugins", description = "The reset plugins (operators only)"),
        (name = "service", description = "Liveness, metrics and this document (no auth)"),
    ),
)]
pub struct ApiDoc;

/// The `bearer` security scheme the annotated routes name.
struct BearerJwt;

impl Modify for BearerJwt {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An HS256 JWT signed with `LILA_JWT_SECRET`, with `exp`. A tenant's \
token (the Portal's) has `companyId`, the tenant, and acts on that tenant's sessions only. An \
operator's token has `role: \"operator\"` and acts on every tenant's sessions (and may list \
plugins). A missing, malformed, expired, wrongly signed or `alg: none` token gets 401. \
`lila token --company <companyId>` and `lila token --operator` mint them. A tenant with \
`[http] max_requests_per_tenant` requests in flight gets 429 with a sentence and Retry-After \
on any route (operators are not counted).",
                    ))
                    .build(),
            ),
        );
    }
}

/// Gives every error response an example `ErrorBody`, with a sentence the
/// route really answers, so each is written once here and not per route.
struct ErrorExamples;

impl Modify for ErrorExamples {
    fn modify(&self, openapi: &mut Document) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [item.get.as_mut(), item.post.as_mut(), item.delete.as_mut()];
            for operation in operations.into_iter().flatten() {
                let id = operation.operation_id.clone().unwrap_or_default();
                for (status, response) in operation.responses.responses.iter_mut() {
                    let (RefOr::T(response), Some(sentence)) =
                        (response, error_example(&id, status))
                    else {
                        continue;
                    };
                    let example = ErrorBody {
                        error: sentence.to_owned(),
                        success: false,
                    };
                    if let (Some(content), Ok(value)) = (
                        response.content.get_mut("application/json"),
                        serde_json::to_value(&example),
                    ) {
                        content.example = Some(value);
                    }
                }
            }
        }
    }
}

/// An error sentence operation `id` answers with `status`; `None` for a success.
fn error_example(id: &str, status: &str) -> Option<&'static str> {
    Some(match (status, id) {
        ("400", "create_session") => "phoneNumber is required",
        ("400", "enqueue_message") => "'text' must not be empty",
        ("400", "message_status") => {
            "the message id in the path is not valid (it looks like 3EB0 and 20 hex digits)"
        }
        ("400", _) => {
            "phone number must contain only the digits 0-9 (E.164 without '+', spaces or separators)"
        }
        ("401", _) => "missing Authorization header (expected 'Bearer <token>')",
        ("403", _) => "only an operator token may list plugins",
        ("404", "session_qr") => {
            "there is no QR code right now (status: starting); try again in a moment"
        }
        ("404", "message_status") => "no message with this id is known for this phone",
        ("404", _) => "no session for this phone number",
        ("409", "create_session") => crate::session::NOT_AVAILABLE,
        ("413", "enqueue_message") => {
            "this message takes 400096 bytes stored, more than the 67108864 bytes one phone may queue at all"
        }
        ("429", "enqueue_message") => {
            "the outbox already holds 10000 messages, the most one phone may queue; wait until they are sent"
        }
        ("429", "create_session") => {
            "this account already has 5000 sessions, the most it may have (5000); reset one it no longer needs, or ask an operator to raise the limit"
        }
        ("409", "clear_session") => {
            "reset refused by plugin 'tenant-policy': this phone is protected"
        }
        ("409", "pairing_code" | "request_pairing_code") => "the session is already paired",
        ("409", _) => "the session is not connected (status: qr)",
        ("429", "event_stream") => {
            "this caller already holds 16 event streams, the most it may; close one before opening another"
        }
        ("500", _) => "internal error; the server log has the details",
        ("502", _) => "WhatsApp refused the request: not-authorized",
        ("503", _) => "WhatsApp did not answer in time",
        _ => return None,
    })
}

/// The document, built once.
pub fn document() -> &'static Document {
    static DOCUMENT: OnceLock<Document> = OnceLock::new();
    DOCUMENT.get_or_init(ApiDoc::openapi)
}

/// The document as `docs/openapi.json` holds it: pretty JSON and a final newline.
pub fn document_json() -> Result<String, serde_json::Error> {
    let mut value = serde_json::to_value(document())?;
    name_link_fields_as_openapi_does(&mut value);
    serde_json::to_string_pretty(&value).map(|json| json + "\n")
}

/// utoipa 5.5 writes a Link Object's fields in snake case (`operation_id`);
/// OpenAPI spells them `operationId`, `operationRef`, `requestBody`, and
/// clients (schemathesis' stateful phase among them) ignore the others.
fn name_link_fields_as_openapi_does(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let responses = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses"))
        .filter_map(Value::as_object_mut)
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        let Some(links) = response.get_mut("links").and_then(Value::as_object_mut) else {
            continue;
        };
        for link in links.values_mut().filter_map(Value::as_object_mut) {
            for (snake, camel) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(field) = link.remove(snake) {
                    link.insert(camel.to_owned(), field);
                }
            }
        }
    }
}

/// This document.
#[utoipa::path(
    get, path = "/api/openapi.json", tag = "service",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json"))
)]
pub async fn openapi_json() -> Response {
    match document_json() {
        Ok(json) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response(),
        Err(e) => super::ApiError::Internal(format!("rendering the OpenAPI document: {e}"))
            .into_response(),
    }
}
