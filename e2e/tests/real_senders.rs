//! Signed webhooks from real senders still verify at the target after the relay.
//!
//! The signing and the verifying are done by the providers' official Node libraries
//! (`@octokit/webhooks-methods` for GitHub, `stripe`, `standardwebhooks`), pinned in
//! `tests/senders/package-lock.json`; `tests/senders/senders.mjs` is both the senders and the
//! verifying target. A hand-written HMAC check here would only prove that we agree with
//! ourselves; the official libraries prove that a real receiver accepts what we forward.
//!
//! Node must be installed: its absence fails the test rather than skipping it, so the
//! guarantee cannot silently go unchecked.

use std::time::Duration;

use hookrelay_e2e::node::{Node, senders};
use hookrelay_e2e::{agent_config, start_agent, start_server};
use tokio::time::{Instant, timeout, timeout_at};

/// Bound on Node loading the libraries and its target listening.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on the whole run of the senders (the script bounds itself at 30 s).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on the relay and the agent stopping once cancelled.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_verify_at_the_target_with_official_libraries() {
    let mut node = Node::spawn(&senders(), "senders.mjs");
    let mut lines = node.stdout_lines();
    let mut transcript = Vec::new();
    let startup = Instant::now() + STARTUP_TIMEOUT;
    let target_port = loop {
        match timeout_at(startup, lines.recv()).await {
            Ok(Some(line)) => match line.strip_prefix("TARGET_PORT=") {
                Some(port) => break port.trim().parse::<u16>().expect("TARGET_PORT is a port"),
                None => transcript.push(line),
            },
            Ok(None) => panic!(
                "senders.mjs exited before its target listened\n{}",
                node.finish(&transcript)
            ),
            Err(_) => panic!(
                "senders.mjs printed no TARGET_PORT within {STARTUP_TIMEOUT:?}\n{}",
                node.finish(&transcript)
            ),
        }
    };

    let server = start_server(relay_server::Config::default()).await;
    let agent = start_agent(agent_config(
        &server,
        &format!("http://127.0.0.1:{target_port}"),
    ))
    .await;
    let url = agent.public_url.clone();

    node.send_line(&url);
    node.close_stdin();
    let run = Instant::now() + RUN_TIMEOUT;
    loop {
        match timeout_at(run, lines.recv()).await {
            Ok(Some(line)) => transcript.push(line),
            Ok(None) => break,
            Err(_) => panic!(
                "senders.mjs did not finish within {RUN_TIMEOUT:?}\n{}",
                node.finish(&transcript)
            ),
        }
    }
    // Its stdout is closed, so Node is exiting: the wait below is short.
    let status = node.wait();
    let report = node.finish(&transcript);
    assert!(
        status.success(),
        "senders through the relay at {url} failed ({status})\n{report}"
    );
    assert!(
        transcript
            .iter()
            .any(|l| l == "senders: 6 passed, 0 failed"),
        "unexpected senders summary\n{report}"
    );

    agent.shutdown.cancel();
    timeout(STOP_TIMEOUT, agent.task)
        .await
        .expect("agent stops within the deadline")
        .expect("agent task not panicked")
        .expect("agent ran without error");
    server.stop().await;
}
