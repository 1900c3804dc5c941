//! Small JSON endpoints: health and channel status.

use axum::Json;
use axum::extract::{Path, State};
use protocol::ChannelId;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::Error;

/// `GET /healthz`: 200 while the server is serving.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /api/channels/{channel}`: how many agents serve the channel. A valid name no agent
/// serves reports 0 agents; an invalid name is 404.
pub async fn channel(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, Error> {
    let channel = ChannelId::parse(&name).map_err(|_| Error::NotFound)?;
    let agents = state.registry.agent_count(&channel);
    Ok(Json(
        json!({ "channel": channel.as_str(), "agents": agents }),
    ))
}
