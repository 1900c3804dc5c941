//! One relay node on a PostgreSQL store (`--store postgres://...`), end to end: a real server
//! in-process, a real agent and target on 127.0.0.1, and a fresh database of the test
//! binary's throwaway cluster (`hookrelay_e2e::postgres`; PostgreSQL must be installed), or
//! of a cluster of its own for the test that stops the database.

use std::process::Command;
use std::time::Duration;

use hookrelay_e2e::*;
use relay_server::{Config, StoreConfig};

/// A server config on a fresh database, in open mode (loopback).
fn on_postgres(url: &str) -> Config {
    Config {
        store: StoreConfig::Postgres(url.parse().expect("the test cluster's URL is valid")),
        ..Config::default()
    }
}

/// [`on_postgres`] as the node named `id` (`--node-id`), for tests with several nodes on one
/// database.
fn node_on(url: &str, id: &str) -> Config {
    Config {
        node_id: Some(id.to_owned()),
        ..on_postgres(url)
    }
}

#[tokio::test]
async fn a_node_on_postgres_relays_queues_offline_webhooks_and_keeps_history_across_restarts() {
    let url = postgres::database();
    let server = start_server(on_postgres(&url)).await;
    let mut target = start_target().await;
    let client = client();
    let hook = format!("{}/h/pg/hook?n=1", server.url());

    // No agent yet: the webhook is queued in PostgreSQL, then delivered once one connects.
    let queued = post_queued(&client, &hook, body_for(0)).await;
    let agent = start_agent(pinned_agent(&server.url(), "pg", &target.url)).await;
    let seen = next_seen(&mut target).await;
    assert_eq!(seen.header("x-hookrelay-delivery"), [queued.as_bytes()]);
    assert_eq!(seen.header("x-hookrelay-attempt"), [b"queued"]);
    assert_eq!(seen.body, body_for(0), "byte for byte");
    assert_eq!(seen.uri, "/hook?n=1");

    // With the agent connected, the sender gets the target's own answer.
    let answer = send(&client, "POST", &hook, &[], body_for(1)).await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert_eq!(answer.body, body_for(1), "the target echoes the body");
    let live = answer.delivery().expect("delivery id header");
    assert_eq!(next_seen(&mut target).await.body, body_for(1));

    let events = format!("{}/api/channels/pg/events?status=delivered", server.url());
    poll_json(&client, &events, |doc| {
        doc["events"].as_array().map_or(0, Vec::len) == 2
    })
    .await;
    agent.shutdown.cancel();
    server.stop().await;

    // A new server on the same database has the whole history.
    let server = start_server(on_postgres(&url)).await;
    let events = format!("{}/api/channels/pg/events", server.url());
    let doc = get_json(&client, &events).await;
    let ids: Vec<&str> = doc["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|event| event["id"].as_str())
        .collect();
    assert_eq!(ids, [live.as_str(), queued.as_str()], "newest first: {doc}");
    let first = get_json(&client, &format!("{events}/{queued}")).await;
    assert_eq!(first["status"], "delivered");
    assert_eq!(first["attempts"][0]["kind"], "queued");
    assert_eq!(first["attempts"][0]["status"], 201);
    server.stop().await;
}

#[tokio::test]
async fn the_channels_command_manages_channels_in_the_database_store_names() {
    // A password the cluster does not ask for (trust): it must not show anywhere.
    let url = postgres::database().replace("postgres@", "postgres:pg-s3cret@");
    let server = start_server(Config {
        open: Some(false),
        channel_reload: Duration::from_millis(50),
        ..on_postgres(&url)
    })
    .await;
    let target = start_target().await;
    let run = |args: &[&str]| {
        let output = Command::new(server_binary())
            .args(args)
            .args(["--store", &url, "--public-url", "https://relay.example.com"])
            .output()
            .expect("run relay-server");
        let out = String::from_utf8_lossy(&output.stdout).into_owned();
        let err = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            !out.contains("pg-s3cret") && !err.contains("pg-s3cret"),
            "{out}{err}"
        );
        (output.status.success(), out, err)
    };
    let (ok, out, err) = run(&["channels", "create", "pg-made"]);
    assert!(ok, "{out}{err}");
    let token = out
        .split_whitespace()
        .find(|word| word.starts_with("hrt_"))
        .expect("token printed")
        .to_owned();

    // The running server, on the same database, picks the channel up by itself.
    let connect = async {
        loop {
            let mut config = agent_config(&server, &target.url);
            config.channel = Some(protocol::ChannelId::parse("pg-made").expect("valid"));
            config.token = Some(token.clone());
            if let Ok(agent) = relay_client::Agent::connect(config, None).await {
                return agent;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let agent = tokio::time::timeout(DEADLINE, connect)
        .await
        .expect("server reloads channels in time");
    assert_eq!(agent.channel(), "pg-made");
    let (ok, out, err) = run(&["channels", "list"]);
    assert!(ok && out.contains("pg-made"), "{out}{err}");
    let (ok, out, err) = run(&["channels", "revoke", "pg-made"]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run(&["channels", "list"]);
    assert!(ok && out.contains("No channels registered"), "{out}{err}");
    drop(agent);
    server.stop().await;
}

// Multi-threaded: stopping and starting the cluster blocks a worker (`block_in_place`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_get_503_while_the_database_is_down_and_are_stored_again_once_it_is_back() {
    let cluster = tokio::task::spawn_blocking(postgres::Cluster::start)
        .await
        .expect("start cluster");
    let server = start_server(on_postgres(&cluster.database())).await;
    let client = client();
    let hook = format!("{}/h/outage/x", server.url());
    let ready = format!("{}/readyz", server.url());
    post_queued(&client, &hook, body_for(0)).await;

    tokio::task::block_in_place(|| cluster.stop());
    let answer = send(&client, "POST", &hook, &[], body_for(1)).await;
    assert_eq!(answer.status, 503, "{:?}", answer.body);
    let answer = send(&client, "GET", &ready, &[], "").await;
    assert_eq!(answer.status, 503);
    assert!(answer.text().contains("store"), "{}", answer.text());

    tokio::task::block_in_place(|| cluster.start_again());
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while send(&client, "GET", &ready, &[], "").await.status != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    post_queued(&client, &hook, body_for(2)).await;
    let events = format!("{}/api/channels/outage/events", server.url());
    let doc = get_json(&client, &events).await;
    assert_eq!(doc["events"].as_array().map(Vec::len), Some(2), "{doc}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_lists_every_nodes_agents_until_that_node_leaves() {
    let url = postgres::database();
    let node = |id: &str| node_on(&url, id);
    let a = start_server(node("node-a")).await;
    let b = start_server(node("node-b")).await;
    let target = start_target().await;
    let agent = start_agent(pinned_agent(&b.url(), "shared", &target.url)).await;
    let client = client();
    // Node a learns of it from b's lease, within a renewal or two.
    let status = format!("{}/api/channels/shared", a.url());
    let doc = poll_json(&client, &status, |doc| doc["agent_count"] == 1).await;
    assert_eq!(doc["agents"][0]["node"], "node-b");
    assert_eq!(
        doc["agents"][0]["client"],
        format!("relay-client/{}", env!("CARGO_PKG_VERSION"))
    );
    let on_b = get_json(&client, &format!("{}/api/channels/shared", b.url())).await;
    assert_eq!(on_b["agents"], doc["agents"], "both nodes answer the same");

    // Node b leaves: it gives its leases up, and a stops listing its agent.
    agent.shutdown.cancel();
    b.stop().await;
    poll_json(&client, &status, |doc| doc["agent_count"] == 0).await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_draining_one_queue_deliver_each_webhook_once_in_order() {
    let url = postgres::database();
    let node = |id: &str| node_on(&url, id);
    let (a, b) = (
        start_server(node("node-a")).await,
        start_server(node("node-b")).await,
    );
    let client = client();
    // Queued on node a while no agent is connected anywhere.
    let hook = format!("{}/h/drained/hold", a.url());
    let mut queued = Vec::new();
    for i in 0..40 {
        queued.push(post_queued(&client, &hook, body_for(i)).await);
    }
    // One agent on each node: both nodes may drain the same queue from the shared database,
    // one at a time, so it arrives in order as from one node.
    let mut target = start_target().await;
    let _on_a = start_agent(pinned_agent(&a.url(), "drained", &target.url)).await;
    let first = next_seen(&mut target).await;
    let _on_b = start_agent(pinned_agent(&b.url(), "drained", &target.url)).await;
    let status = format!("{}/api/channels/drained", b.url());
    poll_json(&client, &status, |doc| doc["agent_count"] == 2).await;
    // The target holds the first delivery. While it does, the other node, whose agent is
    // idle and whose lease renewals (every 2 s) find the queue due, must not deliver the
    // next: an absence, so it is watched for a bounded time, two renewals.
    let early = tokio::time::timeout(Duration::from_secs(5), target.seen.recv()).await;
    assert!(
        early.is_err(),
        "delivered out of turn: {:?}",
        early.map(|s| s.map(|s| s.uri))
    );
    target.release();
    let mut delivered =
        vec![String::from_utf8(first.header("x-hookrelay-delivery")[0].to_vec()).expect("an id")];
    while delivered.len() < queued.len() {
        let seen = next_seen(&mut target).await;
        let id = String::from_utf8(seen.header("x-hookrelay-delivery")[0].to_vec()).expect("an id");
        assert!(!delivered.contains(&id), "{id} delivered twice");
        delivered.push(id);
    }
    assert_eq!(delivered, queued, "in the order they came");
    // Nothing more comes: no node delivers one a second time afterwards.
    let events = format!(
        "{}/api/channels/drained/events?status=delivered&limit=100",
        a.url()
    );
    poll_json(&client, &events, |doc| {
        doc["events"].as_array().map_or(0, Vec::len) == 40
    })
    .await;
    assert!(target.seen.try_recv().is_err(), "a duplicate delivery");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_to_nodes_without_the_agent_get_the_targets_own_answer_through_the_database() {
    let url = postgres::database();
    let node = |id: &str| node_on(&url, id);
    let a = start_server(node("node-a")).await;
    let b = start_server(node("node-b")).await;
    let c = start_server(node("node-c")).await;
    let mut target = start_target().await;
    let _on_b = start_agent(pinned_agent(&b.url(), "across", &target.url)).await;
    let client = client();
    for other in [&a, &c] {
        let status = format!("{}/api/channels/across", other.url());
        poll_json(&client, &status, |doc| doc["agent_count"] == 1).await;
    }
    // Nodes a and c hold no agent of the channel: each hands the webhook to node b through
    // the database, and its sender gets the target's answer, byte for byte.
    for (i, node) in [&a, &c, &a, &c].into_iter().enumerate() {
        let hook = format!("{}/h/across/deep/path?n={i}", node.url());
        let answer = send(&client, "POST", &hook, &[("x-sig", b"abc")], body_for(i)).await;
        assert_eq!(answer.status, 201, "{:?}", answer.body);
        assert_eq!(answer.body, body_for(i), "the target echoes the body");
        let id = answer.delivery().expect("a delivery id");
        let seen = next_seen(&mut target).await;
        assert_eq!(seen.header("x-hookrelay-delivery"), [id.as_bytes()]);
        assert_eq!(seen.header("x-hookrelay-attempt"), [b"live"]);
        assert_eq!(seen.header("x-sig"), [b"abc"]);
        assert_eq!(seen.uri, format!("/deep/path?n={i}"));
        assert_eq!(seen.body, body_for(i), "byte for byte");
    }
    // Each is delivered once, and every node's history says so.
    let events = format!("{}/api/channels/across/events?status=delivered", c.url());
    poll_json(&client, &events, |doc| {
        doc["events"].as_array().map_or(0, Vec::len) == 4
    })
    .await;
    assert!(target.seen.try_recv().is_err(), "a duplicate delivery");
    for node in [a, b, c] {
        node.stop().await;
    }
}
