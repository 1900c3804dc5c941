//! Small JSON endpoints: health and channel status.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use protocol::api::{self, Health};
use tracing::warn;

use crate::AppState;
use crate::error::Error;
use crate::routes::access::ChannelAccess;
use crate::store::AgentLease;

/// `GET /healthz`: 200 while the server is serving.
pub async fn healthz() -> Json<Health> {
    Json(Health::ok())
}

/// `GET /readyz`: 200 while the store takes writes, the server is not shutting down and, with
/// ACME, a certificate is being served; else 503 with the reason, so a load balancer stops
/// sending webhooks here.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let not_ready = |reason| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health::not_ready(reason)),
        )
    };
    if state.shutdown.is_cancelled() {
        return not_ready("shutting down".to_owned());
    }
    if state.acme.get().is_some_and(|acme| !acme.has_certificate()) {
        return not_ready("waiting for a certificate from ACME".to_owned());
    }
    if let Some(free) = state.disk.low() {
        let reason = format!(
            "data dir low on space: {free} bytes free, under --min-free-space {}",
            state.disk.min_free()
        );
        return not_ready(reason);
    }
    match state.store.ready().await {
        Ok(()) => (StatusCode::OK, Json(Health::ready())),
        Err(e) => {
            warn!(error = %e, "not ready: the store cannot take writes");
            not_ready(format!("store: {e}"))
        }
    }
}

/// `GET /metrics` on the main listener: needs the admin token, since metrics name channels
/// and their traffic. With `--metrics-listen`, [`metrics_open`] serves them there instead.
pub async fn metrics(
    State(state): State<AppState>,
    _: crate::routes::admin::Admin,
) -> Result<Response, Error> {
    metrics_open(State(state)).await
}

/// `GET /metrics` on `--metrics-listen`, an address the operator keeps private.
pub async fn metrics_open(State(state): State<AppState>) -> Result<Response, Error> {
    let text = state.metrics.render(&state).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// `GET /api/channels/{channel}`: whether the channel is registered, its mode and the agents
/// serving it (needs the channel's token, as its history does). A valid name no agent serves
/// reports no agents.
pub async fn channel(
    State(state): State<AppState>,
    ChannelAccess(channel): ChannelAccess,
) -> Result<Json<api::ChannelStatus>, Error> {
    let record = state.channels.get(&channel);
    let mut agents: Vec<AgentLease> = (state.registry.agents(&channel).iter())
        .map(|agent| crate::agents::leases::lease_of(&state, agent))
        .collect();
    // Agents other nodes of a shared store hold (this node's own are the registry's, fresher).
    if state.store.shares_agents() {
        let leased = state
            .store
            .leased_agents(&channel, crate::store::now_ms())
            .await?;
        agents.extend(
            leased
                .into_iter()
                .filter(|lease| lease.node != state.node_id),
        );
        agents.sort_by_key(|lease| lease.connected_at);
    }
    let agents: Vec<api::AgentStatus> = (agents.into_iter())
        .map(|lease| api::AgentStatus {
            client: lease.client,
            connected_at: crate::routes::events::time_json(lease.connected_at),
            events: lease.events,
            id: lease.agent_id.to_string(),
            in_flight: usize::try_from(lease.in_flight).unwrap_or(usize::MAX),
            node: lease.node,
            peer: lease.peer,
        })
        .collect();
    let registered = record.is_some();
    let mode = record.map_or(crate::channel::Mode::Balance, |r| r.settings.mode);
    Ok(Json(api::ChannelStatus {
        agent_count: agents.len(),
        agents,
        channel: channel.to_string(),
        mode: mode.as_str().to_owned(),
        registered,
        url: format!("{}{}", state.public_url, api::path::webhooks(&channel)),
    }))
}

/// `GET /api/token/channel`: the registered channel whose token is the bearer token, so a
/// client that holds only the token (`relay-client events --token hrt_...`) can find the
/// channel's API. The token authenticates the request itself; any other token (none, a wrong
/// one, the admin or agent token, which name no one channel) is 401 and counts as wrong.
pub async fn token_channel(
    State(state): State<AppState>,
    parts: axum::http::request::Parts,
) -> Result<Json<api::TokenChannel>, Error> {
    let peer = state.client_ip(&parts.extensions, &parts.headers);
    let record = crate::auth::bearer(&parts.headers)
        .filter(|token| !token.is_empty())
        .and_then(|token| state.channels.find_by_token(token));
    let Some(record) = record else {
        // A right token always passes; wrong ones name no channel, so they share one count.
        state.token_refused(peer, &crate::auth::Scope::Unnamed, "token names no channel")?;
        return Err(Error::Unauthorized);
    };
    Ok(Json(api::TokenChannel {
        channel: record.name.to_string(),
        url: format!("{}{}", state.public_url, api::path::webhooks(&record.name)),
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::extract::State;
    use axum::http::StatusCode;
    use tokio_util::sync::CancellationToken;

    use crate::store::MemoryStore;
    use crate::{Config, ServerState};

    #[tokio::test]
    async fn readyz_turns_503_once_shutdown_begins() {
        let shutdown = CancellationToken::new();
        let state = ServerState::new(
            Config::default(),
            "http://127.0.0.1:1".to_owned(),
            Arc::new(MemoryStore::new()),
            crate::Reach {
                open: true,
                public: false,
            },
            shutdown.clone(),
        );
        let (status, body) = super::readyz(State(Arc::clone(&state))).await;
        assert_eq!(status, StatusCode::OK, "{:?}", body.0);
        shutdown.cancel();
        let (status, body) = super::readyz(State(state)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body.0.reason.as_deref(), Some("shutting down"));
    }
}
