//! Who may read a channel's API, as an extractor: [`ChannelAccess`].

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use protocol::ChannelId;

use crate::AppState;
use crate::error::Error;

/// A channel from the `{channel}` path parameter whose API the request may use, as
/// [`crate::auth::api_access`] decides from its bearer token and source address.
pub struct ChannelAccess(pub ChannelId);

impl FromRequestParts<AppState> for ChannelAccess {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| Error::NotFound)?;
        let name = params.get("channel").ok_or(Error::NotFound)?;
        let channel = Error::channel_in_path(name)?;
        let peer = state.client_ip(&parts.extensions, &parts.headers);
        crate::auth::api_access(state, peer, &channel, crate::auth::bearer(&parts.headers))?;
        Ok(Self(channel))
    }
}
