//! What the relay keeps when it must not refuse, where no agent is needed: forged webhooks up
//! to a cap, and a full disk said plainly. (Bursts and floods delivered to agents are in e2e's
//! `never_refuse`.)

use crate::common::*;
use relay_server::Config;
use serde_json::json;

#[tokio::test]
async fn forged_webhooks_are_kept_up_to_a_cap_per_channel() {
    let mut config = closed();
    config.quota.max_rejected = 3;
    let server = start_server(config).await;
    create_channel(
        &server,
        "signed",
        json!({"verify": {"kind": "github", "secret": "s3cret"}}),
    )
    .await;
    let hook = format!("{}/h/signed", server.url());
    let mut ids = Vec::new();
    for n in 0..5 {
        let header: &[u8] = b"sha256=0000";
        let answer = send(
            &client(),
            "POST",
            &hook,
            &[("x-hub-signature-256", header)],
            n.to_string(),
        )
        .await;
        assert_eq!(answer.status, 401);
        ids.push(
            answer.headers["x-hookrelay-delivery"]
                .to_str()
                .expect("ascii")
                .to_owned(),
        );
    }
    let history = admin(&server, "GET", "/api/channels/signed/events", String::new()).await;
    let kept: Vec<String> = history.json()["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    let newest: Vec<String> = ids.iter().rev().take(3).cloned().collect();
    assert_eq!(kept, newest, "the newest three, the oldest dropped");
}

/// POSTs a webhook to an open channel of `server`.
async fn post_any(server: &TestServer) -> Answer {
    let url = format!("{}/h/any", server.url());
    send(&client(), "POST", &url, &[], "x").await
}

#[tokio::test]
async fn a_low_disk_refuses_webhooks_with_503_and_readyz_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_server(Config {
        // More free space than any disk has: the guard is always tripped.
        min_free_space: u64::MAX,
        ..durable_config(dir.path())
    })
    .await;
    let answer = post_any(&server).await;
    assert_eq!(answer.status, 503);
    assert_eq!(retry_after(&answer), 60);
    assert!(
        answer.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("low on disk space"))
    );
    let ready = get_with(&format!("{}/readyz", server.url()), None).await;
    assert_eq!(ready.status, 503);
    let reason = ready.json()["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("data dir low on space"), "{reason}");
    server.stop().await;

    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_server(durable_config(dir.path())).await;
    let answer = post_any(&server).await;
    assert_eq!(answer.status, 202, "the default threshold leaves room");
    server.stop().await;
}
