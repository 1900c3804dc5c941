//! Limits on what a sender may send, where no agent is needed: hyper's own limits and
//! refusals, answered in JSON like every other refusal. (Limits with an agent on the channel
//! are in e2e's `limits`.)

use crate::common::*;
use relay_server::Config;

#[tokio::test]
async fn a_uri_over_hypers_limit_gets_414_in_json() {
    let server = start_server(Config {
        http: relay_server::HttpLimits {
            max_head_bytes: 128 * 1024,
            ..relay_server::HttpLimits::default()
        },
        ..closed()
    })
    .await;
    let long = format!("/h/x/{}", "a".repeat(70_000));
    let answer = raw_exchange(&server, head_of_len(&long, "", 71_000).as_bytes()).await;
    let (status, error) = json_refusal(&answer);
    assert_eq!(status, 414, "{answer:?}");
    assert!(error.contains("URI"), "{error}");
    let answer = get_with(&format!("{}/metrics", server.url()), Some(ADMIN)).await;
    let text = String::from_utf8_lossy(&answer.body);
    assert!(
        text.contains(r#"hookrelay_rejected_total{reason="uri_too_long"} 1"#),
        "{text}"
    );
    // Under the default head limit the same request is a head too large.
    let server = start_server(Config::default()).await;
    let answer = raw_exchange(&server, head_of_len(&long, "", 71_000).as_bytes()).await;
    assert_eq!(json_refusal(&answer).0, 431, "{answer:?}");
}

#[tokio::test]
async fn the_routers_own_400_is_not_mistaken_for_hyper_s() {
    // hyper buffers a small response whole and drops its body before writing any of it.
    let server = start_server(Config::default()).await;
    let client = client();
    let url = format!("{}/api/channels/nothing/events?limit=100000", server.url());
    for _ in 0..3 {
        let answer = send(&client, "GET", &url, &[], "").await;
        assert_eq!(answer.status, 400);
        let error = answer.json()["error"].as_str().map(str::to_owned);
        assert!(
            error.as_deref().is_some_and(|e| e.contains("limit")),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn bytes_that_are_not_http_get_400_in_json() {
    let server = start_server(Config::default()).await;
    let answer = raw_exchange(&server, b"NOT HTTP AT ALL\r\n\r\n").await;
    let (status, error) = json_refusal(&answer);
    assert_eq!(status, 400, "{answer:?}");
    assert_eq!(error, "malformed HTTP request");
}

#[tokio::test]
async fn a_replay_body_past_the_limit_is_refused_before_it_is_read_whole() {
    let server = start_server(Config {
        max_body_bytes: 1000,
        ..Config::default()
    })
    .await;
    let url = format!(
        "{}/api/channels/big-edit/events/{}/replay",
        server.url(),
        uuid::Uuid::nil()
    );
    // Far more than an edit of a 1,000-byte body needs (base64 and headers included).
    let huge = vec![b' '; 3 * 1024 * 1024];
    let answer = send(&client(), "POST", &url, &[], huge).await;
    assert_eq!(answer.status, 413, "{}", answer.text());
    assert!(
        answer.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("limit"))
    );
    let small = send(&client(), "POST", &url, &[], "{}").await;
    assert_eq!(small.status, 404, "a small body is read: {}", small.text());
}
