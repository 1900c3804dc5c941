//! The server's error type and the one place that maps each error to an HTTP answer.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use protocol::ChannelId;

/// Why an ingress or API request failed. Each variant has one HTTP status, chosen in
/// [`IntoResponse`]; the body is `{"error": "..."}` and never shows internal details.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not found")]
    NotFound,
    #[error("no agent connected to channel {0}")]
    NoAgent(ChannelId),
    #[error("{}", no_taker(channel, event_type.as_deref()))]
    NoTaker {
        channel: ChannelId,
        event_type: Option<String>,
    },
    #[error("agent disconnected before answering")]
    AgentGone,
    #[error("agent failed the delivery: {0}")]
    AgentAborted(String),
    /// A webhook another node delivered failed there before the target answered: the
    /// status that node's error has, and why.
    #[error("the delivery through another node failed: {reason}")]
    Elsewhere { status: u16, reason: String },
    #[error("no answer from the agent within {0} s")]
    Timeout(u64),
    #[error("body exceeds the limit of {0} bytes")]
    BodyTooLarge(u64),
    #[error("request body not received in time")]
    BodyTimeout,
    #[error("could not read request body")]
    BodyRead,
    #[error("the webhook could not be stored")]
    Store(#[source] crate::store::StoreError),
    #[error("missing or wrong token")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("no event {0} in this channel")]
    UnknownEvent(protocol::DeliveryId),
    #[error("a client certificate signed by --client-ca is required")]
    ClientCertRequired,
    #[error("no channel {0}")]
    UnknownChannel(ChannelId),
    /// A channel name in a path that no channel can have (as it appears in the path).
    #[error("{0:?} is not a valid channel name: {rule}", rule = protocol::CHANNEL_NAME_RULE)]
    InvalidChannel(String),
    #[error("channel {0} already exists")]
    ChannelExists(ChannelId),
    #[error("too many wrong tokens from this address; try again in {} s", retry_secs(*.0))]
    TooManyFailures(std::time::Duration),
    #[error("the admin API is off: start the server with --admin-token")]
    AdminDisabled,
    #[error("{ip} is over its rate for webhooks nobody vouches for ({what}); try again in {} s", retry_secs(*.wait))]
    SourceRateLimited {
        ip: std::net::IpAddr,
        what: &'static str,
        wait: std::time::Duration,
    },
    /// The channel's store quota is full (the message says which part).
    #[error("{0}")]
    ChannelFull(String),
    #[error("the relay is low on disk space ({0} bytes free); try again later")]
    DiskLow(u64),
    #[error("the server is handling too many webhooks; try again shortly")]
    Busy,
    #[error("source address {0} may not send webhooks to this channel")]
    SourceNotAllowed(std::net::IpAddr),
    #[error("signature check failed: {0}")]
    Signature(#[source] crate::verify::VerifyError),
    #[error("{0}")]
    Conflict(String),
}

/// `Retry-After` for a full channel: time for its agent to take some of what it holds.
const FULL_RETRY_AFTER_SECS: u64 = 60;
/// `Retry-After` while the disk is low: time for an operator, or retention, to free some.
const DISK_RETRY_AFTER_SECS: u64 = 60;

/// Whole seconds to wait, rounded up, for `Retry-After` and messages.
fn retry_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::UnknownEvent(id) => Error::UnknownEvent(id),
            crate::store::StoreError::UnknownChannel(name) => Error::UnknownChannel(name),
            crate::store::StoreError::ChannelExists(name) => Error::ChannelExists(name),
            e @ crate::store::StoreError::Full { .. } => Error::ChannelFull(e.to_string()),
            e => Error::Store(e),
        }
    }
}

impl Error {
    /// The channel named `name` in a path, or why there cannot be one.
    pub fn channel_in_path(name: &str) -> Result<ChannelId, Error> {
        ChannelId::parse(name).map_err(|_| Error::InvalidChannel(name.to_owned()))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::NotFound
            | Error::UnknownEvent(_)
            | Error::UnknownChannel(_)
            | Error::InvalidChannel(_) => StatusCode::NOT_FOUND,
            Error::ChannelExists(_) => StatusCode::CONFLICT,
            Error::TooManyFailures(_) | Error::SourceRateLimited { .. } | Error::ChannelFull(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Error::Busy | Error::DiskLow(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::SourceNotAllowed(_) => StatusCode::FORBIDDEN,
            Error::AdminDisabled => StatusCode::FORBIDDEN,
            Error::NoAgent(_) | Error::NoTaker { .. } | Error::Store(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Unauthorized | Error::Signature(_) => StatusCode::UNAUTHORIZED,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::ClientCertRequired => StatusCode::FORBIDDEN,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::AgentGone | Error::AgentAborted(_) => StatusCode::BAD_GATEWAY,
            Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::Elsewhere { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            Error::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Error::BodyRead => StatusCode::BAD_REQUEST,
        }
    }
}

/// Why a replay has no agent to go to although agents are connected.
fn no_taker(channel: &ChannelId, event_type: Option<&str>) -> String {
    match event_type {
        Some(t) => format!("no agent connected to channel {channel} takes event type {t}"),
        None => format!(
            "every agent connected to channel {channel} takes only some event types, and this webhook has none"
        ),
    }
}

impl Error {
    /// The `Retry-After` of a refusal that says when to come back.
    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Error::TooManyFailures(wait) | Error::SourceRateLimited { wait, .. } => {
                Some(retry_secs(*wait))
            }
            Error::ChannelFull(_) => Some(FULL_RETRY_AFTER_SECS),
            Error::DiskLow(_) => Some(DISK_RETRY_AFTER_SECS),
            Error::Busy => Some(1),
            _ => None,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = protocol::api::ErrorBody::new(self.to_string());
        let mut response = (self.status(), Json(body)).into_response();
        if matches!(self, Error::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
