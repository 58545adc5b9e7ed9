//! The Portal's HTTP API (SPEC section 3): routes, auth, JSON at the edge.
//!
//! Every response has `success`; every error has `error`, a sentence the
//! Portal shows in a toast. Handlers validate input (phone, token, body),
//! then hand the request to the phone's session actor.
//!
//! One module per resource, each with its handlers and the bodies only it
//! answers: `sessions`, `messages`, `reset` (disconnect and clear),
//! `plugins`, `cluster`, `events`, `console`, `service` (health, metrics,
//! fallbacks, the request log) and `openapi` (the document). `edge`
//! serves the router (timeouts, the bound on connections) and
//! `caller_limits` bounds what one caller holds at once. They share
//! `extract` (the caller, the path segments, JSON bodies), `json`
//! (`Success`, `ErrorBody`), `error` (`ApiError`) and, in their
//! documentation, `responses` (the error responses several routes answer).

mod caller_limits;
mod cluster;
mod console;
pub mod edge;
mod error;
pub mod events;
mod extract;
pub mod forward;
pub(crate) mod json;
pub(crate) mod messages;
pub mod openapi;
mod plugins;
mod qr;
mod reset;
mod responses;
mod service;
pub(crate) mod sessions;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

pub use error::ApiError;

use crate::auth::JwtAuth;
use crate::cluster::Cluster;
use crate::gateway::Gateway;

#[derive(Clone)]
pub struct AppState {
    pub gateway: Arc<Gateway>,
    pub auth: Arc<JwtAuth>,
    /// This node's membership, in cluster mode (`cli.rs` joins it).
    pub cluster: Option<Arc<Cluster>>,
}

/// Every route; each is also listed in `openapi::ApiDoc`.
pub fn router(state: AppState) -> Router {
    let config = state.gateway.config();
    let limits = caller_limits::CallerLimits::new(
        config.http.max_requests_per_tenant,
        config.events.max_streams_per_caller,
    );
    let sessions = Router::new()
        .route(
            "/",
            get(sessions::list_sessions).post(sessions::create_session),
        )
        .route("/{phone}", axum::routing::delete(reset::disconnect_session))
        .route("/{phone}/status", get(sessions::session_status))
        .route("/{phone}/qr", get(sessions::session_qr))
        .route(
            "/{phone}/request-pairing-code",
            post(sessions::request_pairing_code),
        )
        .route("/{phone}/pairing-code", post(sessions::pairing_code))
        .route("/{phone}/groups", get(sessions::groups))
        .route("/{phone}/contacts", get(sessions::contacts))
        .route("/{phone}/messages", post(messages::enqueue_message))
        .route("/{phone}/messages/{id}", get(messages::message_status))
        .route("/{phone}/outbox", get(messages::outbox))
        .route("/{phone}/clear", post(reset::clear_session));
    Router::new()
        .nest("/api/sessions", sessions)
        .route("/api/plugins", get(plugins::list_plugins))
        .route("/api/cluster", get(cluster::cluster))
        .route("/api/events", get(events::event_stream))
        .route("/api/openapi.json", get(openapi::openapi_json))
        .route("/health", get(service::health))
        .route("/metrics", get(service::metrics))
        .merge(console::routes())
        .fallback(service::not_found)
        .method_not_allowed_fallback(service::method_not_allowed)
        .layer(axum::Extension(limits.clone()))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            forward::to_holder,
        ))
        // Outside the cluster's middleware, so that a request forwarded
        // to another node still holds its tenant's slot here.
        .layer(axum::middleware::from_fn_with_state(
            (state.clone(), limits),
            caller_limits::limit_tenant_requests,
        ))
        .layer(axum::middleware::from_fn(service::log_request))
        .with_state(state)
}
