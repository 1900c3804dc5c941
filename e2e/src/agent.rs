//! A real agent (relay-client's `Agent`) in-process, connected to a test server.

use std::time::Duration;

use protocol::ChannelId;
use relay_client::{Agent, AgentConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{DEADLINE, TestServer};

/// An agent config for the relay at `server_url` forwarding to `target`, reconnecting fast
/// (20 ms to 200 ms) so tests that restart a server do not wait on the real backoff.
pub fn agent_config_at(server_url: &str, target: &str) -> AgentConfig {
    let mut config = AgentConfig::new(server_url, target).expect("valid agent config");
    config.backoff_min = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(200);
    config
}

/// [`agent_config_at`] for the in-process `server`.
pub fn agent_config(server: &TestServer, target: &str) -> AgentConfig {
    agent_config_at(&server.url(), target)
}

/// [`agent_config_at`] serving `channel` instead of a random one.
pub fn pinned_agent(server_url: &str, channel: &str, target: &str) -> AgentConfig {
    let mut config = agent_config_at(server_url, target);
    config.channel = Some(ChannelId::parse(channel).expect("valid channel"));
    config
}

pub struct TestAgent {
    pub public_url: String,
    pub channel: String,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), relay_client::Error>>,
}

/// Connects a real agent; returns once the server has welcomed it. Cancel `shutdown` to stop
/// it as relay-client does on Ctrl-C.
pub async fn start_agent(config: AgentConfig) -> TestAgent {
    let agent = Agent::connect(config, None).await.expect("agent connects");
    let public_url = agent.public_url().to_owned();
    let channel = agent.channel().to_owned();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(agent.run(shutdown.clone()));
    TestAgent {
        public_url,
        channel,
        shutdown,
        task,
    }
}

/// An in-process agent. Dropping it aborts its task: the socket closes without a goodbye, as
/// when an agent process crashes.
pub struct CrashableAgent(JoinHandle<Result<(), relay_client::Error>>);

impl Drop for CrashableAgent {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Connects an agent that [`CrashableAgent`] can crash; returns once the server has welcomed
/// it.
pub async fn start_crashable_agent(config: AgentConfig) -> CrashableAgent {
    let agent = tokio::time::timeout(DEADLINE, Agent::connect(config, None))
        .await
        .expect("agent connects within the deadline")
        .expect("agent connects");
    CrashableAgent(tokio::spawn(agent.run(CancellationToken::new())))
}
