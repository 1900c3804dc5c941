//! The server's error type and the one place that maps each error to an HTTP answer.

use axum::Json;
use axum::http::StatusCode;
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
    #[error("agent disconnected before answering")]
    AgentGone,
    #[error("agent failed the delivery: {0}")]
    AgentAborted(String),
    #[error("no answer from the agent within {0} s")]
    Timeout(u64),
    #[error("body exceeds the limit of {0} bytes")]
    BodyTooLarge(u64),
    #[error("request body not received in time")]
    BodyTimeout,
    #[error("could not read request body")]
    BodyRead,
    #[error("agent queue is full")]
    Overloaded,
    #[error("the webhook could not be stored")]
    Store(#[source] crate::store::StoreError),
    #[error("missing or wrong token")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("no event {0} in this channel")]
    UnknownEvent(protocol::DeliveryId),
}

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::UnknownEvent(id) => Error::UnknownEvent(id),
            e => Error::Store(e),
        }
    }
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NotFound | Error::UnknownEvent(_) => StatusCode::NOT_FOUND,
            Error::NoAgent(_) | Error::Overloaded | Error::Store(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::AgentGone | Error::AgentAborted(_) => StatusCode::BAD_GATEWAY,
            Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Error::BodyRead => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() });
        let mut response = (self.status(), Json(body)).into_response();
        if matches!(self, Error::Unauthorized) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
