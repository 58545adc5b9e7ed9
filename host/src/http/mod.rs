//! The Portal's HTTP API (SPEC section 3): routes, auth, JSON at the edge.
//!
//! Every response has `success`; every error has `error`, a sentence the
//! Portal shows in a toast. Handlers validate input (phone, token, body),
//! then hand the request to the phone's session actor.

pub(crate) mod body;
mod cluster;
mod console;
mod error;
pub mod events;
mod extract;
pub mod forward;
mod handlers;
pub(crate) mod json;
pub(crate) mod messages;
pub mod openapi;
mod plugins;
mod qr;
mod reset;
mod responses;
pub(crate) mod sessions;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

pub use error::ApiError;

use crate::auth::JwtAuth;
use crate::gateway::Gateway;

#[derive(Clone)]
pub struct AppState {
    pub gateway: Arc<Gateway>,
    pub auth: Arc<JwtAuth>,
}

/// Every route; each is also listed in `openapi::ApiDoc`.
pub fn router(state: AppState) -> Router {
    use cluster::*;
    use handlers::*;
    use messages::*;
    use plugins::*;
    use reset::*;
    use sessions::*;
    let sessions = Router::new()
        .route("/", get(list_sessions).post(create_session))
        .route("/{phone}", axum::routing::delete(disconnect_session))
        .route("/{phone}/status", get(session_status))
        .route("/{phone}/qr", get(session_qr))
        .route("/{phone}/request-pairing-code", post(request_pairing_code))
        .route("/{phone}/pairing-code", post(pairing_code))
        .route("/{phone}/groups", get(groups))
        .route("/{phone}/contacts", get(contacts))
        .route("/{phone}/messages", post(enqueue_message))
        .route("/{phone}/messages/{id}", get(message_status))
        .route("/{phone}/outbox", get(outbox))
        .route("/{phone}/clear", post(clear_session));
    Router::new()
        .nest("/api/sessions", sessions)
        .route("/api/plugins", get(list_plugins))
        .route("/api/cluster", get(cluster))
        .route("/api/events", get(events::event_stream))
        .route("/api/openapi.json", get(openapi_json))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(console::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            forward::to_holder,
        ))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}
