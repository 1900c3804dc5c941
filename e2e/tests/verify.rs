//! Signature checks at the edge: a channel with `verify` forwards only webhooks whose
//! signature holds over the exact bytes received; the rest get 401, are kept as `rejected`
//! and never reach the target.

use hmac::{Hmac, Mac};
use hookrelay_e2e::*;
use serde_json::json;
use sha2::Sha256;

const SECRET: &str = "It's a Secret to Everybody";

fn hex_hmac(key: &[u8], message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(message);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn now() -> i64 {
    relay_server::store::now_ms() / 1000
}

async fn signed_agent(
    server: &TestServer,
    target: &TestTarget,
    name: &str,
    verify: serde_json::Value,
) -> String {
    let token = create_channel(server, name, json!({ "verify": verify })).await;
    let mut config = agent_config(server, &target.url);
    config.channel = protocol::ChannelId::parse(name).ok();
    config.token = Some(token.clone());
    start_agent(config).await;
    token
}

/// POSTs `body` to `url` with one signature header.
async fn post_signed(url: &str, header: &str, value: &[u8], body: &[u8]) -> Answer {
    send(&client(), "POST", url, &[(header, value)], body.to_vec()).await
}

async fn history(server: &TestServer, channel: &str) -> serde_json::Value {
    let answer = admin(
        server,
        "GET",
        &format!("/api/channels/{channel}/events"),
        String::new(),
    )
    .await;
    answer.json()
}

#[tokio::test]
async fn github_signatures_are_checked_on_the_raw_bytes() {
    let server = start_server(closed()).await;
    let mut target = start_target().await;
    signed_agent(
        &server,
        &target,
        "gh",
        json!({"kind": "github", "secret": SECRET}),
    )
    .await;
    let url = format!("{}/h/gh/payload", server.url());
    // Not canonical JSON: re-serialising it would change the bytes and break the signature.
    let body: &[u8] = b"{ \"zen\":  \"Keep it logically awesome.\" ,\"hook_id\":1}\xff";
    let good = format!("sha256={}", hex_hmac(SECRET.as_bytes(), body));

    let answer = post_signed(&url, "x-hub-signature-256", good.as_bytes(), body).await;
    assert_eq!(answer.status, 201);
    assert_eq!(next_seen(&mut target).await.body, body);

    let mut tampered = body.to_vec();
    tampered[8] ^= 1;
    let wrong_secret = format!("sha256={}", hex_hmac(b"guess", body));
    for (what, headers, body) in [
        (
            "tampered body",
            vec![("x-hub-signature-256", good.as_bytes())],
            tampered,
        ),
        (
            "wrong secret",
            vec![("x-hub-signature-256", wrong_secret.as_bytes())],
            body.to_vec(),
        ),
        ("no signature", vec![], body.to_vec()),
        (
            "garbage",
            vec![("x-hub-signature-256", &b"sha256=zz\xff"[..])],
            body.to_vec(),
        ),
    ] {
        let answer = send(&client(), "POST", &url, &headers, body).await;
        assert_eq!(answer.status, 401, "{what}");
        let error = answer.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            error.starts_with("signature check failed: "),
            "{what}: {error}"
        );
        assert!(!error.contains(SECRET), "{what}: the secret never shows");
    }
    // The good webhook still goes through after the refusals, and nothing else reached
    // the target.
    let answer = post_signed(&url, "x-hub-signature-256", good.as_bytes(), body).await;
    assert_eq!(answer.status, 201);
    assert_eq!(next_seen(&mut target).await.body, body);
    assert!(
        target.seen.try_recv().is_err(),
        "no rejected webhook was forwarded"
    );

    let doc = history(&server, "gh").await;
    let statuses: Vec<&str> = doc["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["status"].as_str())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "rejected").count(),
        4,
        "{doc}"
    );
    let rejected = doc["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["status"] == "rejected")
        .expect("a rejected event");
    let id = rejected["id"].as_str().expect("id");
    let event = admin(
        &server,
        "GET",
        &format!("/api/channels/gh/events/{id}"),
        String::new(),
    )
    .await
    .json();
    assert_eq!(event["attempts"][0]["status"], 401);
    assert!(
        event["attempts"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not forwarded")),
        "{event}"
    );
    let replay = admin(
        &server,
        "POST",
        &format!("/api/channels/gh/events/{id}/replay"),
        String::new(),
    )
    .await;
    assert_eq!(replay.status, 409, "a rejected webhook is never replayed");
}

#[tokio::test]
async fn stripe_signatures_are_refused_when_stale_or_replayed_with_another_body() {
    let server = start_server(closed()).await;
    let mut target = start_target().await;
    let secret = "whsec_test_secret";
    signed_agent(
        &server,
        &target,
        "stripe",
        json!({"kind": "stripe", "secrets": [secret], "tolerance_secs": 300}),
    )
    .await;
    let url = format!("{}/h/stripe", server.url());
    let sign = |t: i64, body: &[u8]| {
        let mut message = format!("{t}.").into_bytes();
        message.extend_from_slice(body);
        format!("t={t},v1={}", hex_hmac(secret.as_bytes(), &message))
    };
    let body = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
    let fresh = sign(now(), body);
    let answer = post_signed(&url, "stripe-signature", fresh.as_bytes(), body).await;
    assert_eq!(answer.status, 201);
    assert_eq!(next_seen(&mut target).await.body, &body[..]);

    let stale = sign(now() - 3600, body);
    let answer = post_signed(&url, "stripe-signature", stale.as_bytes(), body).await;
    assert_eq!(answer.status, 401);
    assert!(
        answer.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("tolerance is 300 s")),
        "{:?}",
        answer.body
    );
    // A captured signature does not carry over to another body.
    let other = br#"{"id":"evt_2","type":"charge.refunded"}"#;
    let answer = post_signed(&url, "stripe-signature", fresh.as_bytes(), other).await;
    assert_eq!(answer.status, 401);
    assert!(
        target.seen.try_recv().is_err(),
        "nothing refused was forwarded"
    );
}
