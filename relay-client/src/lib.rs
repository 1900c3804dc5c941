//! hookrelay's agent: holds a WebSocket to a relay server, replays each webhook it receives
//! against a local target, and sends the target's answer back. [`history`] reads a channel's
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

mod agent;
pub mod config;
pub mod error;
pub mod forward;
pub mod history;
pub mod inspect;
pub mod output;
mod session;
pub mod tls;

pub use agent::{ATTEMPT_HEADER, Agent, AttemptKind, Delivery, Disconnect, Event, backoff};
pub use config::{
    AgentConfig, ApiConfig, Args, Command, EventsQuery, Identity, Invocation, TlsConfig,
};
pub use error::Error;
pub use history::Api;
