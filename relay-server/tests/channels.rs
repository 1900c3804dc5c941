//! Registered channels, their tokens and the admin API, as readers and administrators see
//! them. (What agents may do with those tokens is checked in e2e's `channels`.)

use crate::common::*;
use relay_server::Config;
use serde_json::json;

#[tokio::test]
async fn a_channels_token_names_its_channel_and_nothing_else_does() {
    let server = start_server(closed()).await;
    let token = create_channel(&server, "by-token", json!({})).await;
    let url = format!("{}/api/token/channel", server.url());

    let answer = get_with(&url, Some(&token)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(
        answer.json(),
        json!({"channel": "by-token", "url": format!("{}/h/by-token", server.url())})
    );
    for wrong in [None, Some("hrt_guess"), Some(ADMIN)] {
        let answer = get_with(&url, wrong).await;
        assert_eq!(answer.status, 401, "{wrong:?}: {:?}", answer.body);
        assert_eq!(answer.json()["error"], "missing or wrong token");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_admin_api_needs_its_token_and_answers_precisely() {
    let off = start_server(Config::default()).await;
    let answer = get_with(&format!("{}/api/admin/channels", off.url()), Some(ADMIN)).await;
    assert_eq!(answer.status, 403);
    assert!(
        answer.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("--admin-token")),
        "{:?}",
        answer.body
    );

    let server = start_server(closed()).await;
    let list = format!("{}/api/admin/channels", server.url());
    assert_eq!(get_with(&list, None).await.status, 401);
    assert_eq!(get_with(&list, Some("nope")).await.status, 401);
    create_channel(&server, "listed", json!({"mode": "fanout"})).await;
    let doc = get_with(&list, Some(ADMIN)).await.json();
    assert_eq!(doc["channels"][0]["name"], "listed");
    assert_eq!(doc["channels"][0]["mode"], "fanout");
    assert!(doc["channels"][0].get("token").is_none(), "{doc}");

    let dup = admin(
        &server,
        "POST",
        "/api/admin/channels",
        json!({"name": "listed"}).to_string(),
    )
    .await;
    assert_eq!(dup.status, 409);
    for bad in [
        json!({"name": "no spaces"}),
        json!({"name": "x", "mode": "broadcast"}),
        json!({"name": "x", "unknown": 1}),
        json!({"name": "x", "event_type": "xml:/kind"}),
    ] {
        let answer = admin(&server, "POST", "/api/admin/channels", bad.to_string()).await;
        assert_eq!(answer.status, 400, "{bad}: {:?}", answer.body);
    }
    let missing = admin(
        &server,
        "POST",
        "/api/admin/channels/ghost/rotate",
        String::new(),
    )
    .await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn a_channels_event_type_source_is_set_shown_and_reset() {
    let server = start_server(closed()).await;
    create_channel(&server, "kinds", json!({"event_type": "header:X-Kind"})).await;
    let list = format!("{}/api/admin/channels", server.url());
    let doc = get_with(&list, Some(ADMIN)).await.json();
    assert_eq!(doc["channels"][0]["event_type"], "header:x-kind");
    let patch = |body: serde_json::Value| {
        admin(
            &server,
            "PATCH",
            "/api/admin/channels/kinds",
            body.to_string(),
        )
    };
    let changed = patch(json!({"event_type": "json:/meta/kind"})).await;
    assert_eq!(changed.status, 200, "{:?}", changed.body);
    assert_eq!(changed.json()["event_type"], "json:/meta/kind");
    let reset = patch(json!({"event_type": null})).await;
    assert_eq!(reset.json()["event_type"], serde_json::Value::Null);
    let bad = patch(json!({"event_type": "json:meta"})).await;
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    server.stop().await;
}
