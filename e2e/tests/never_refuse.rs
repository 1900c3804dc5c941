//! A relay keeps what it is sent: bursts are accepted and delivered, a channel's rate paces
//! deliveries instead of refusing senders, and only genuine limits answer 429 or 503: a
//! channel whose store quota is full, one source address flooding what nobody vouches for,
//! a disk running out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hookrelay_e2e::*;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use relay_server::Config;
use serde_json::json;

/// Concurrent senders in the burst tests.
const SENDERS: usize = 16;

/// A client whose connections leave from `ip` (a loopback address other than 127.0.0.1).
fn client_from(ip: &str) -> TestClient {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(ip.parse::<IpAddr>().expect("literal")));
    Client::builder(TokioExecutor::new()).build(connector)
}

/// POSTs `count` webhooks to `url` from `SENDERS` concurrent senders; answers every status.
async fn burst(client: &TestClient, url: &str, count: usize) -> Vec<u16> {
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let (client, url) = (client.clone(), url.to_owned());
        senders.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for n in (sender..count).step_by(SENDERS) {
                let body = format!("{{\"n\":{n}}}");
                statuses.push(send(&client, "POST", &url, &[], body).await.status);
            }
            statuses
        }));
    }
    let mut statuses = Vec::new();
    for sender in senders {
        statuses.extend(sender.await.expect("sender"));
    }
    statuses
}

/// Receives from `target` until it has seen `distinct` different delivery ids; answers how
/// many times it saw each.
async fn seen_ids(target: &mut TestTarget, distinct: usize) -> HashMap<Vec<u8>, u32> {
    let mut seen: HashMap<Vec<u8>, u32> = HashMap::new();
    while seen.len() < distinct {
        let request = next_seen(target).await;
        let id = request.header("x-hookrelay-delivery")[0].to_vec();
        *seen.entry(id).or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn default_flags_accept_and_deliver_bursts_online_and_offline_exactly_once() {
    // The binary with its defaults (SQLite with fsync, open mode on loopback), as a new
    // user runs it.
    let server = spawn_server(&["--listen", "127.0.0.1:0"], &[]);
    let url = format!("http://{}", server.addr);
    let mut target = start_target().await;
    let config = relay_client::AgentConfig::new(&url, &target.url).expect("valid");
    let agent = start_agent(config.clone()).await;
    let hook = format!("{}/github", agent.public_url);

    let online = burst(&client(), &hook, 600).await;
    assert!(online.iter().all(|s| *s == 201), "online: {online:?}");
    agent.shutdown.cancel();
    let _ = agent.task.await;
    wait_for_agents(&client(), &url, &agent.channel, 0).await;
    let offline = burst(&client(), &hook, 600).await;
    assert!(offline.iter().all(|s| *s == 202), "offline: {offline:?}");

    let mut config = config;
    config.channel = protocol::ChannelId::parse(&agent.channel).ok();
    let _back = start_agent(config).await;
    let mut seen = seen_ids(&mut target, 1200).await;
    // Everything is delivered once the queue is empty; nothing may come twice.
    let queued = format!("{url}/api/channels/{}/events?status=queued", agent.channel);
    poll_json(&client(), &queued, |doc| doc["events"] == json!([])).await;
    while let Ok(Some(request)) = tokio::time::timeout(Duration::ZERO, target.seen.recv()).await {
        let id = request.header("x-hookrelay-delivery")[0].to_vec();
        *seen.entry(id).or_default() += 1;
    }
    assert_eq!(seen.len(), 1200);
    assert!(seen.values().all(|n| *n == 1), "delivered more than once");
}

#[tokio::test]
async fn a_paced_channel_takes_a_burst_and_delivers_it_in_order_at_its_pace() {
    let server = start_server(closed()).await;
    let mut target = start_target().await;
    let token = create_channel(&server, "paced", json!({"rate_limit": "10/s"})).await;
    let mut config = agent_config(&server, &target.url);
    config.channel = protocol::ChannelId::parse("paced").ok();
    config.token = Some(token);
    start_agent(config).await;

    let hook = format!("{}/h/paced", server.url());
    let mut statuses = Vec::new();
    for n in 0..100 {
        statuses.push(send(&client(), "POST", &hook, &[], n.to_string()).await);
    }
    assert!(statuses.iter().all(|a| a.status == 201 || a.status == 202));
    let queued: Vec<&Answer> = statuses.iter().filter(|a| a.status == 202).collect();
    assert!(
        queued.len() >= 80,
        "a burst of 10 goes live, the rest waits its turn"
    );
    assert_eq!(queued[0].json()["status"], "queued");

    let mut arrivals = Vec::new();
    for _ in 0..100 {
        let request = next_seen(&mut target).await;
        arrivals.push((request.body, Instant::now()));
    }
    let order: Vec<String> = arrivals
        .iter()
        .map(|(body, _)| String::from_utf8_lossy(body).into_owned())
        .collect();
    let expected: Vec<String> = (0..100).map(|n: i32| n.to_string()).collect();
    assert_eq!(order, expected, "delivered in the order sent");
    // 90 past the first burst of 10, at 10/s: about 9 s from the first to the last.
    let span = arrivals[99].1 - arrivals[0].1;
    assert!(
        span >= Duration::from_secs(7) && span <= Duration::from_secs(15),
        "{span:?}"
    );
}

#[tokio::test]
async fn a_flood_from_one_address_does_not_touch_another_senders_webhooks() {
    // Open mode on a public relay (as behind a proxy with a public URL).
    let server = start_server(Config {
        open: Some(true),
        public_url: Some("https://relay.example.test".to_owned()),
        source_rate_limit: "20/m".parse().ok(),
        ..Config::default()
    })
    .await;
    let mut target = start_target().await;
    let mut config = agent_config(&server, &target.url);
    config.channel = protocol::ChannelId::parse("legit-app").ok();
    start_agent(config).await;

    let flooder = client_from("127.0.0.2");
    let flood_url = format!("{}/h/flooded", server.url());
    let flood = tokio::spawn(async move { burst(&flooder, &flood_url, 200).await });
    let legit = burst(
        &client_from("127.0.0.3"),
        &format!("{}/h/legit-app", server.url()),
        20,
    )
    .await;
    let flood = flood.await.expect("flood");

    assert!(legit.iter().all(|s| *s == 201), "legit: {legit:?}");
    assert_eq!(seen_ids(&mut target, 20).await.len(), 20);
    let accepted = flood.iter().filter(|s| **s == 202).count();
    let refused = flood.iter().filter(|s| **s == 429).count();
    assert!(
        (20..=25).contains(&accepted),
        "the flooder's allowance: {accepted}"
    );
    assert_eq!(accepted + refused, 200, "{flood:?}");
    let answer = send(
        &client_from("127.0.0.2"),
        "POST",
        &format!("{}/h/other", server.url()),
        &[],
        "x",
    )
    .await;
    assert_eq!(answer.status, 429, "per address, whatever the channel");
    assert!(retry_after(&answer) >= 1);
    assert!(
        answer.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("127.0.0.2"))
    );
}

#[tokio::test]
async fn a_full_channel_answers_429_until_its_agent_drains_it() {
    let mut config = closed();
    config.quota.max_undelivered = 5;
    let server = start_server(config).await;
    let mut target = start_target().await;
    let token = create_channel(&server, "small", json!({})).await;
    let hook = format!("{}/h/small", server.url());
    for _ in 0..5 {
        assert_eq!(send(&client(), "POST", &hook, &[], "q").await.status, 202);
    }
    let full = send(&client(), "POST", &hook, &[], "q").await;
    assert_eq!(full.status, 429);
    assert_eq!(retry_after(&full), 60);
    let error = full.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains("holds its quota of 5 undelivered"),
        "{error}"
    );
    assert!(full.headers.contains_key("x-hookrelay-delivery"));

    let mut config = agent_config(&server, &target.url);
    config.channel = protocol::ChannelId::parse("small").ok();
    config.token = Some(token);
    start_agent(config).await;
    assert_eq!(seen_ids(&mut target, 5).await.len(), 5);
    let url = format!("{}/metrics", server.url());
    let metrics = get_with(&url, Some(ADMIN)).await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.contains(r#"hookrelay_rejected_total{reason="channel_full"} 1"#),
        "{text}"
    );
    // Drained (its attempts recorded), it takes webhooks again.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let answer = send(&client(), "POST", &hook, &[], "again").await;
        if answer.status == 201 {
            break;
        }
        assert_eq!(answer.status, 429, "{answer:?}");
        assert!(Instant::now() < deadline, "never accepted again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
