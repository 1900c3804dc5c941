//! Router assembly: which handler answers which path. Each handler translates its request for
//! the part of the server that does the work, and the answer back.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, delete, get, post};

use crate::AppState;
use crate::error::Error;

pub mod access;
pub mod admin;
pub mod api;
pub mod events;
pub mod ingress;
pub mod inspector;

/// The router of `--metrics-listen`: `/metrics` without a token, and `/healthz` and `/readyz`
/// as on the main listener, so a probe can ask over plain HTTP while the main one waits for
/// its certificate.
pub fn metrics_app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(api::metrics_open))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .fallback(|| async { Error::NotFound })
        .with_state(state)
}

/// `/api/admin/...`, with a small body limit of its own: every body there is a little JSON.
fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/channels", get(admin::list).post(admin::create))
        .route(
            "/channels/{name}",
            delete(admin::revoke).patch(admin::update),
        )
        .route("/channels/{name}/rotate", post(admin::rotate))
        .layer(DefaultBodyLimit::max(ADMIN_BODY_LIMIT))
}

/// Largest body the admin API reads.
const ADMIN_BODY_LIMIT: usize = 64 * 1024;

/// The relay's routes. Ingress bodies are limited by `--max-body` as they stream, so axum's
/// own buffered-body limit is off.
pub fn app(state: AppState) -> Router {
    let replay_limit = DefaultBodyLimit::max(events::replay_body_limit(&state));
    Router::new()
        .route("/h/{*rest}", any(ingress::ingress))
        .route("/ws", get(crate::agents::ws::upgrade))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(api::metrics))
        .route("/api/token/channel", get(api::token_channel))
        .route("/api/channels/{channel}", get(api::channel))
        .route("/api/channels/{channel}/events", get(events::list))
        .route("/api/channels/{channel}/events/{id}", get(events::get))
        .route(
            "/api/channels/{channel}/events/{id}/replay",
            post(events::replay).layer(replay_limit),
        )
        .route("/api/channels/{channel}/live", get(inspector::live))
        .route("/c/{channel}", get(inspector::page))
        .route("/c/assets/inspector.js", get(inspector::script))
        .route("/c/assets/inspector.css", get(inspector::style))
        .route("/c/assets/favicon.svg", get(inspector::favicon))
        .nest("/api/admin", admin_routes())
        .fallback(|| async { Error::NotFound })
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}
