//! Router assembly.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};

use crate::AppState;
use crate::error::Error;

pub mod api;
pub mod events;
pub mod ingress;

/// The relay's routes. Ingress bodies are limited by `--max-body` as they stream, so axum's
/// own buffered-body limit is off.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/h/{*rest}", any(ingress::ingress))
        .route("/ws", get(crate::ws::upgrade))
        .route("/healthz", get(api::healthz))
        .route("/api/channels/{channel}", get(api::channel))
        .route("/api/channels/{channel}/events", get(events::list))
        .route("/api/channels/{channel}/events/{id}", get(events::get))
        .route(
            "/api/channels/{channel}/events/{id}/replay",
            post(events::replay),
        )
        .fallback(|| async { Error::NotFound })
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}
