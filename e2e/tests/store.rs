//! The durable store seen from outside: webhooks queued while no agent is connected, delivered
//! in order once one is; retries; replay; history; `--ack-after`. Real server, agent and
//! target in-process on 127.0.0.1, the SQLite store in a temporary directory.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use hookrelay_e2e::*;
use relay_server::Config;

fn pinned(server: &TestServer, target: &str, channel: &str) -> relay_client::AgentConfig {
    pinned_agent(&server.url(), channel, target)
}

#[tokio::test]
async fn offline_events_arrive_once_each_in_order_byte_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_server(durable_config(dir.path())).await;
    let mut target = start_target().await;
    let client = client();
    let url = format!("{}/h/offline/hook?n=1", server.url());
    let mut ids = Vec::new();
    for i in 0..500 {
        ids.push(post_queued(&client, &url, body_for(i)).await);
    }

    let _agent = start_agent(pinned(&server, &target.url, "offline")).await;
    for (i, id) in ids.iter().enumerate() {
        let seen = next_seen(&mut target).await;
        assert_eq!(seen.header("x-hookrelay-delivery"), [id.as_bytes()], "#{i}");
        assert_eq!(seen.body, body_for(i), "#{i}");
        assert_eq!(seen.uri, "/hook?n=1");
        assert_eq!(seen.header("x-sig"), [b"abc".as_slice()]);
        assert_eq!(seen.header("x-hookrelay-attempt"), [b"queued"], "#{i}");
    }
    let events = format!("{}/api/channels/offline/events", server.url());
    poll_json(
        &client,
        &format!("{events}?status=delivered&limit=500"),
        |doc| doc["events"].as_array().map_or(0, Vec::len) == 500,
    )
    .await;
    assert!(
        target.seen.try_recv().is_err(),
        "an event was delivered twice"
    );
    let doc = get_json(&client, &format!("{events}/{}", ids[0])).await;
    assert_eq!(doc["status"], "delivered");
    assert_eq!(doc["attempts"][0]["kind"], "queued");
    assert_eq!(doc["attempts"][0]["status"], 201);
}

#[tokio::test]
async fn agent_killed_while_the_queue_drains_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_server(durable_config(dir.path())).await;
    let mut target = start_target().await;
    let client = client();
    let url = format!("{}/h/drain/x", server.url());
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(post_queued(&client, &url, body_for(i)).await);
    }

    let agent = start_agent(pinned(&server, &target.url, "drain")).await;
    let mut seen = HashSet::new();
    while seen.len() < 50 {
        let s = next_seen(&mut target).await;
        seen.insert(String::from_utf8_lossy(s.header("x-hookrelay-delivery")[0]).into_owned());
    }
    agent.task.abort();
    wait_for_agents(&client, &server.url(), "drain", 0).await;

    let _agent = start_agent(pinned(&server, &target.url, "drain")).await;
    let all: HashSet<String> = ids.iter().cloned().collect();
    while !all.is_subset(&seen) {
        let s = next_seen(&mut target).await;
        seen.insert(String::from_utf8_lossy(s.header("x-hookrelay-delivery")[0]).into_owned());
    }
    let events = format!("{}/api/channels/drain/events", server.url());
    poll_json(
        &client,
        &format!("{events}?status=delivered&limit=500"),
        |doc| doc["events"].as_array().map_or(0, Vec::len) == 200,
    )
    .await;
}

#[tokio::test]
async fn failed_queued_delivery_is_retried_with_backoff_until_it_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = durable_config(dir.path());
    config.retry.min = Duration::from_millis(50);
    config.retry.max = Duration::from_millis(200);
    let server = start_server(config).await;
    let mut target = start_target().await;
    let client = client();
    let id = post_queued(
        &client,
        &format!("{}/h/retry/flaky", server.url()),
        body_for(1),
    )
    .await;

    let _agent = start_agent(pinned(&server, &target.url, "retry")).await;
    for _ in 0..3 {
        let seen = next_seen(&mut target).await;
        assert_eq!(seen.header("x-hookrelay-delivery"), [id.as_bytes()]);
    }
    target.release();
    let url = format!("{}/api/channels/retry/events/{id}", server.url());
    let doc = poll_json(&client, &url, |doc| doc["status"] == "delivered").await;
    let attempts = doc["attempts"].as_array().expect("attempts");
    assert!(attempts.len() >= 4, "{doc}");
    for (i, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt["n"], i + 1);
        assert_eq!(attempt["kind"], "queued");
    }
    assert_eq!(attempts[0]["status"], 503);
    assert_eq!(attempts[0]["body"], "not yet");
    let last = attempts.last().expect("an attempt");
    assert_eq!(last["status"], 200);
    assert_eq!(last["body"], "finally");
    assert_eq!(doc["response_status"], 200);
}

#[tokio::test]
async fn retries_give_up_after_the_schedule_and_mark_the_event_failed() {
    let mut config = Config::default();
    config.retry.min = Duration::from_millis(20);
    config.retry.max = Duration::from_millis(40);
    config.retry.give_up_after = Duration::from_millis(100);
    let server = start_server(config).await;
    let target = start_target().await;
    let client = client();
    let id = post_queued(
        &client,
        &format!("{}/h/doomed/status/500", server.url()),
        body_for(2),
    )
    .await;
    let _agent = start_agent(pinned(&server, &target.url, "doomed")).await;
    let url = format!("{}/api/channels/doomed/events/{id}", server.url());
    let doc = poll_json(&client, &url, |doc| doc["status"] == "failed").await;
    // 20 + 40 + 40 ms fit in 100 ms, a fourth delay does not: 4 attempts.
    assert_eq!(doc["attempts"].as_array().map(Vec::len), Some(4), "{doc}");
    assert_eq!(doc["next_attempt_at"], serde_json::Value::Null);
}

#[tokio::test]
async fn a_queued_event_shows_as_delivering_while_its_attempt_runs() {
    let server = start_server(Config::default()).await;
    let mut target = start_target().await;
    let client = client();
    let id = post_queued(
        &client,
        &format!("{}/h/busy/hold", server.url()),
        body_for(3),
    )
    .await;
    let _agent = start_agent(pinned(&server, &target.url, "busy")).await;
    next_seen(&mut target).await;
    let url = format!("{}/api/channels/busy/events/{id}", server.url());
    let doc = get_json(&client, &url).await;
    assert_eq!(doc["status"], "delivering", "{doc}");
    target.release();
    let doc = poll_json(&client, &url, |doc| doc["status"] == "delivered").await;
    assert_eq!(doc["attempts"][0]["body"], "released");
}

#[tokio::test]
async fn a_webhook_of_several_mib_is_kept_in_a_file_and_replayed_from_it_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The defaults: fsync on, so the body's file is written with direct I/O.
    let config = Config {
        store: relay_server::StoreConfig::Sqlite {
            dir: dir.path().to_owned(),
            fsync: true,
        },
        ..Config::default()
    };
    let server = start_server(config).await;
    let mut target = start_target().await;
    let client = client();
    let agent = start_agent(agent_config(&server, &target.url)).await;
    // Not a multiple of a disk block, and not one byte repeated.
    let body: Bytes = (0..3 * 1024 * 1024 + 1234u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect::<Vec<u8>>()
        .into();
    let url = format!("{}/big", agent.public_url);
    let answer = send(&client, "POST", &url, &[], body.clone()).await;
    assert_eq!(answer.status, 201);
    let id = answer.delivery().expect("delivery id");
    assert!(
        next_seen(&mut target).await.body == body,
        "live body altered"
    );
    let file = dir.path().join("bodies").join(&id);
    assert_eq!(
        std::fs::metadata(&file).expect("body file").len(),
        body.len() as u64
    );

    let event = format!(
        "{}/api/channels/{}/events/{id}",
        server.url(),
        agent.channel
    );
    poll_json(&client, &event, |doc| {
        doc["attempts"].as_array().map_or(0, Vec::len) == 1
    })
    .await;
    let answer = send(
        &client,
        "POST",
        &format!("{event}/replay"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let again = next_seen(&mut target).await;
    assert_eq!(again.header("x-hookrelay-attempt"), [b"replay"]);
    assert!(again.body == body, "replayed body altered");
}

#[tokio::test]
async fn replay_makes_a_new_attempt_with_the_same_delivery_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_server(durable_config(dir.path())).await;
    let mut target = start_target().await;
    let client = client();
    let agent = start_agent(agent_config(&server, &target.url)).await;
    let answer = send(
        &client,
        "PUT",
        &format!("{}/a?b=c", agent.public_url),
        &[],
        body_for(7),
    )
    .await;
    assert_eq!(answer.status, 201);
    let id = answer.delivery().expect("delivery id");
    let first = next_seen(&mut target).await;
    // The live attempt is recorded after the sender has its answer; replay what the history
    // shows, as a user would.
    let url = format!(
        "{}/api/channels/{}/events/{id}",
        server.url(),
        agent.channel
    );
    poll_json(&client, &url, |doc| {
        doc["attempts"].as_array().map_or(0, Vec::len) == 1
    })
    .await;

    let replay = format!(
        "{}/api/channels/{}/events/{id}/replay",
        server.url(),
        agent.channel
    );
    let answer = send(&client, "POST", &replay, &[], Bytes::new()).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let doc = answer.json();
    assert_eq!(doc["id"], id.as_str());
    assert_eq!(doc["attempt"]["kind"], "replay");
    assert_eq!(doc["attempt"]["status"], 201);
    assert_eq!(doc["attempt"]["n"], 2);
    assert_eq!(doc["status"], "delivered");
    assert_eq!(first.header("x-hookrelay-attempt"), [b"live"]);
    let again = next_seen(&mut target).await;
    assert_eq!(again.header("x-hookrelay-delivery"), [id.as_bytes()]);
    assert_eq!(again.header("x-hookrelay-attempt"), [b"replay"]);
    assert_eq!(
        (again.method.as_str(), again.uri.as_str()),
        ("PUT", "/a?b=c")
    );
    assert_eq!(again.body, first.body);

    let doc = poll_json(&client, &url, |doc| {
        doc["attempts"].as_array().map_or(0, Vec::len) == 2
    })
    .await;
    assert_eq!(doc["attempts"][0]["kind"], "live");
    assert_eq!(doc["attempts"][1]["kind"], "replay");
    assert_eq!(doc["body_encoding"], "base64");
    assert_eq!(doc["status"], "delivered");

    let missing = format!(
        "{}/api/channels/{}/events/{}/replay",
        server.url(),
        agent.channel,
        uuid::Uuid::new_v4()
    );
    assert_eq!(
        send(&client, "POST", &missing, &[], Bytes::new())
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn ack_after_answers_202_and_records_the_late_response() {
    let config = Config {
        ack_after: Some(Duration::from_millis(300)),
        timeout: Duration::from_secs(20),
        ..Config::default()
    };
    let server = start_server(config).await;
    let mut target = start_target().await;
    let client = client();
    let agent = start_agent(agent_config(&server, &target.url)).await;
    let answer = send(
        &client,
        "POST",
        &format!("{}/hold", agent.public_url),
        &[],
        "slow",
    )
    .await;
    assert_eq!(answer.status, 202);
    let doc = answer.json();
    assert_eq!(doc["status"], "pending");
    let id = doc["id"].as_str().expect("id").to_owned();
    next_seen(&mut target).await;

    let url = format!(
        "{}/api/channels/{}/events/{id}",
        server.url(),
        agent.channel
    );
    let doc = get_json(&client, &url).await;
    assert_eq!(doc["status"], "delivering");
    target.release();
    let doc = poll_json(&client, &url, |doc| doc["status"] == "delivered").await;
    assert_eq!(doc["attempts"][0]["status"], 200);
    assert_eq!(doc["attempts"][0]["body"], "released");

    // A fast answer still goes straight back to the sender.
    let answer = send(
        &client,
        "POST",
        &format!("{}/fast", agent.public_url),
        &[],
        "quick",
    )
    .await;
    assert_eq!(answer.status, 201);
    assert_eq!(answer.body, "quick");
}

#[tokio::test]
async fn live_delivery_is_recorded_with_request_and_response() {
    let server = start_server(Config::default()).await;
    let target = start_target().await;
    let client = client();
    let agent = start_agent(agent_config(&server, &target.url)).await;
    let answer = send(
        &client,
        "POST",
        &format!("{}/gh?x=1", agent.public_url),
        &[
            ("x-hub-signature-256", b"sha256=00"),
            ("x-bin", b"\xff\xfe"),
        ],
        "{\"a\":1}",
    )
    .await;
    assert_eq!(answer.status, 201);
    let id = answer.delivery().expect("delivery id");
    let url = format!(
        "{}/api/channels/{}/events/{id}",
        server.url(),
        agent.channel
    );
    let doc = poll_json(&client, &url, |doc| doc["status"] == "delivered").await;
    assert_eq!(doc["method"], "POST");
    assert_eq!(doc["path"], "/gh");
    assert_eq!(doc["query"], "x=1");
    assert_eq!(doc["body"], "{\"a\":1}");
    assert_eq!(doc["body_encoding"], "utf8");
    let headers = doc["headers"].as_array().expect("headers");
    assert!(
        headers
            .iter()
            .any(|h| h["name"] == "x-hub-signature-256" && h["value"] == "sha256=00")
    );
    assert!(
        headers
            .iter()
            .any(|h| h["name"] == "x-bin" && h["value_base64"] == "//4=")
    );
    assert!(
        doc["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:"))
    );
    let attempt = &doc["attempts"][0];
    assert_eq!(attempt["kind"], "live");
    assert_eq!(attempt["status"], 201);
    assert_eq!(attempt["body"], "{\"a\":1}");
    assert!(
        attempt["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .any(|h| h["name"] == "x-echo-method")
    );

    // A target error is passed to the sender and recorded as a failed live delivery, not
    // retried by the relay.
    let answer = send(
        &client,
        "POST",
        &format!("{}/status/500", agent.public_url),
        &[],
        "x",
    )
    .await;
    assert_eq!(answer.status, 500);
    let id = answer.delivery().expect("delivery id");
    let url = format!(
        "{}/api/channels/{}/events/{id}",
        server.url(),
        agent.channel
    );
    let doc = poll_json(&client, &url, |doc| doc["status"] == "failed").await;
    assert_eq!(doc["attempts"].as_array().map(Vec::len), Some(1));
}
