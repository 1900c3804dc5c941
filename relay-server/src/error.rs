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
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::NoAgent(_) | Error::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
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
        (self.status(), Json(body)).into_response()
    }
}
