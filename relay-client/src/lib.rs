//! hookrelay's agent: holds a WebSocket to a relay server, replays each webhook it receives
//! against a local target, and sends the target's answer back. [`api`] reads a channel's
//! past webhooks from the server and replays them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), relay_client::Error> {
//! let config = relay_client::AgentConfig::new("http://127.0.0.1:8080", "http://localhost:3000")?;
//! let agent = relay_client::Agent::connect(config, None).await?;
//! println!("{}", agent.public_url());
//! agent.run(tokio_util::sync::CancellationToken::new()).await
//! # }
//! ```

//!
//! The modules form a tree, leaves first: [`error`]; `event` (the vocabulary the others share:
//! [`Event`], [`Delivery`], [`Disconnect`], [`BodyPrefix`]), `wire` (frames on the WebSocket)
//! and [`pool`] (keep-alive connections to the target); [`forward`] (one delivery against the
//! target); `session` (one connection) and `agent` (connecting, reconnecting); [`edit`] (a
//! replay's changes to a stored request), [`api`] (the server's HTTP API) and [`inspect`];
//! [`report`] (what lines say) and [`output`] (where they go).

mod agent;
pub mod api;
pub mod config;
pub mod edit;
pub mod error;
mod event;
pub mod forward;
pub mod inspect;
pub mod output;
pub mod pool;
pub mod report;
pub mod route;
mod session;
pub mod tls;
mod wire;

pub use agent::{Agent, backoff};
pub use api::Api;
pub use config::{
    AgentConfig, ApiConfig, Args, Command, EventsQuery, Identity, Invocation, TlsConfig,
};
pub use error::Error;
pub use event::{
    BodyPrefix, Delivery, Disconnect, Event, Outcome, SHOWN_BODY_BYTES, Via, shown_path,
};
pub use forward::TargetError;
pub use protocol::api::{ATTEMPT_HEADER, AttemptKind};
