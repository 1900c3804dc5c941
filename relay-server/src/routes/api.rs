//! Small JSON endpoints: health and channel status.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::Error;
use crate::routes::ChannelAccess;

/// `GET /healthz`: 200 while the server is serving.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /api/channels/{channel}`: whether the channel is registered, its mode and the agents
/// serving it (needs the channel's token, as its history does). A valid name no agent serves
/// reports no agents.
pub async fn channel(
    State(state): State<AppState>,
    ChannelAccess(channel): ChannelAccess,
) -> Result<Json<Value>, Error> {
    let record = state.channels.get(&channel);
    let agents: Vec<Value> = state
        .registry
        .agents(&channel)
        .iter()
        .map(|agent| {
            let info = agent.info();
            json!({
                "id": agent.id().to_string(),
                "peer": info.peer.to_string(),
                "client": info.client,
                "connected_at": crate::routes::events::time_json(info.connected_at),
                "in_flight": agent.in_flight(),
            })
        })
        .collect();
    Ok(Json(json!({
        "channel": channel.as_str(),
        "registered": record.is_some(),
        "mode": record.map_or(crate::channels::Mode::Balance, |r| r.settings.mode).as_str(),
        "agent_count": agents.len(),
        "agents": agents,
    })))
}
