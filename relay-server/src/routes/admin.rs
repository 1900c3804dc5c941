//! The admin API, `/api/admin/...`: channels created, listed, rotated and revoked by an
//! operator's script, with the admin token (`--admin-token`) as `Authorization: Bearer`.
//! The same operations as `relay-server channels`, applied to the running server at once.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use protocol::ChannelId;
use protocol::api::{self, AdminChannel, AdminChannels};
use serde::Deserialize;
use tracing::info;

use crate::AppState;
use crate::channel::{ChannelRecord, ChannelSettings, Mode, RateLimit, SettingsChange};
use crate::channels;
use crate::error::Error;
use crate::event_type::TypeSource;
use crate::verify::Verify;

/// A request that carries the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        if state.config.admin_token.is_none() {
            return Err(Error::AdminDisabled);
        }
        if crate::auth::is_admin(state, crate::auth::bearer(&parts.headers)) {
            return Ok(Admin);
        }
        let peer = state.client_ip(&parts.extensions, &parts.headers);
        let scope = crate::auth::Scope::Admin;
        state.token_refused(peer, &scope, "wrong or missing admin token")?;
        Err(Error::Unauthorized)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateChannel {
    name: String,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    rate_limit: Option<RateLimit>,
    #[serde(default)]
    allow_from: Vec<ipnet::IpNet>,
    #[serde(default)]
    verify: Option<Verify>,
    #[serde(default)]
    event_type: Option<TypeSource>,
}

/// `PATCH /api/admin/channels/{name}`: each field given replaces that setting; `null` for
/// `rate_limit`, `verify` or `event_type` turns it back to the server's default or off.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateChannel {
    #[serde(default)]
    mode: Option<Mode>,
    #[serde(default, deserialize_with = "present")]
    rate_limit: Option<Option<RateLimit>>,
    #[serde(default)]
    allow_from: Option<Vec<ipnet::IpNet>>,
    #[serde(default, deserialize_with = "present")]
    verify: Option<Option<Verify>>,
    #[serde(default, deserialize_with = "present")]
    event_type: Option<Option<TypeSource>>,
}

/// A field that is present (`Some`), even as `null` (`Some(None)`); absent ones stay `None`.
fn present<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `GET /api/admin/channels`: every registered channel, without tokens.
pub async fn list(State(state): State<AppState>, _: Admin) -> Result<Json<AdminChannels>, Error> {
    let (_, records) = state.store.channels().await?;
    let channels = records
        .iter()
        .map(|record| AdminChannel {
            agent_count: Some(state.registry.agent_count(&record.name)),
            ..channel(&state, record)
        })
        .collect();
    Ok(Json(AdminChannels { channels }))
}

/// `POST /api/admin/channels` with `{"name", "mode"?}`: 201 with the channel and its token,
/// shown this once.
pub async fn create(
    State(state): State<AppState>,
    _: Admin,
    body: Result<Json<CreateChannel>, JsonRejection>,
) -> Result<(StatusCode, Json<AdminChannel>), Error> {
    let Json(body) = body.map_err(|e| Error::BadRequest(e.body_text()))?;
    let name = ChannelId::parse(&body.name).map_err(|e| Error::BadRequest(e.to_string()))?;
    if let Some(verify) = &body.verify {
        verify
            .validate()
            .map_err(|e| Error::BadRequest(format!("verify: {e}")))?;
    }
    let settings = ChannelSettings {
        mode: body.mode,
        rate_limit: body.rate_limit,
        allow_from: body.allow_from,
        verify: body.verify,
        event_type: body.event_type,
    };
    let issued = channels::create(state.store.as_ref(), name, settings).await?;
    channels::reload(&state).await?;
    info!(channel = %issued.record.name, "channel created through the admin API");
    let doc = AdminChannel {
        token: Some(issued.token),
        ..channel(&state, &issued.record)
    };
    Ok((StatusCode::CREATED, Json(doc)))
}

/// `POST /api/admin/channels/{name}/rotate`: a new token, shown this once; agents holding
/// the old one are disconnected.
pub async fn rotate(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<Json<AdminChannel>, Error> {
    let name = Error::channel_in_path(&name)?;
    let issued = channels::rotate(state.store.as_ref(), &name).await?;
    channels::reload(&state).await?;
    Ok(Json(AdminChannel {
        token: Some(issued.token),
        ..channel(&state, &issued.record)
    }))
}

/// `PATCH /api/admin/channels/{name}`: changes the settings given; the token and the agents
/// stay. Answers the channel as it is now.
pub async fn update(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    body: Result<Json<UpdateChannel>, JsonRejection>,
) -> Result<Json<AdminChannel>, Error> {
    let name = Error::channel_in_path(&name)?;
    let Json(body) = body.map_err(|e| Error::BadRequest(e.body_text()))?;
    if let Some(Some(verify)) = &body.verify {
        verify
            .validate()
            .map_err(|e| Error::BadRequest(format!("verify: {e}")))?;
    }
    let change = SettingsChange {
        mode: body.mode,
        rate_limit: body.rate_limit,
        allow_from: body.allow_from,
        verify: body.verify,
        event_type: body.event_type,
    };
    let record = channels::update(state.store.as_ref(), &name, change).await?;
    channels::reload(&state).await?;
    info!(channel = %name, "channel updated through the admin API");
    Ok(Json(channel(&state, &record)))
}

/// `DELETE /api/admin/channels/{name}`: 204; its agents are disconnected, its events stay
/// until retention removes them.
pub async fn revoke(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, Error> {
    let name = Error::channel_in_path(&name)?;
    if !state.store.delete_channel(&name).await? {
        return Err(Error::UnknownChannel(name));
    }
    channels::reload(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `record` as the admin API shows it, without its agent count or token.
fn channel(state: &AppState, record: &ChannelRecord) -> AdminChannel {
    let settings = &record.settings;
    AdminChannel {
        agent_count: None,
        allow_from: settings
            .allow_from
            .iter()
            .map(ToString::to_string)
            .collect(),
        created_at: crate::routes::events::time_json(record.created_at),
        event_type: settings.event_type.as_ref().map(ToString::to_string),
        mode: settings.mode.as_str().to_owned(),
        name: record.name.to_string(),
        rate_limit: settings.rate_limit.map(|r| r.to_string()),
        token: None,
        url: format!("{}{}", state.public_url, api::path::webhooks(&record.name)),
        verify: settings.verify.as_ref().map(|v| v.kind().to_owned()),
    }
}
