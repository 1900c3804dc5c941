//! The durable store's history API without an agent: paging, filters and who may read it.
//! (Queued webhooks delivered, retried and replayed through agents are in e2e's `store`.)

use crate::common::*;
use bytes::Bytes;
use relay_server::Config;

#[tokio::test]
async fn history_pages_newest_first_and_filters_by_status() {
    let server = start_server(Config::default()).await;
    let client = client();
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            post_queued(
                &client,
                &format!("{}/h/hist/{i}", server.url()),
                body_for(i),
            )
            .await,
        );
    }
    let base = format!("{}/api/channels/hist/events", server.url());
    let mut pages = Vec::new();
    let mut url = format!("{base}?limit=3");
    loop {
        let doc = get_json(&client, &url).await;
        let page: Vec<String> = doc["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["id"].as_str().expect("id").to_owned())
            .collect();
        pages.push(page);
        match doc["next_before"].as_str() {
            Some(cursor) => url = format!("{base}?limit=3&before={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    let listed: Vec<String> = pages.concat();
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(listed, newest_first);

    let doc = get_json(&client, &format!("{base}?status=queued")).await;
    assert_eq!(doc["events"].as_array().map(Vec::len), Some(7));
    assert_eq!(doc["events"][0]["path"], "/6");
    assert_eq!(doc["events"][0]["body_bytes"], body_for(6).len());
    let doc = get_json(&client, &format!("{base}?status=delivered")).await;
    assert_eq!(doc["events"].as_array().map(Vec::len), Some(0));

    for (query, status) in [
        ("limit=0", 400),
        ("limit=501", 400),
        ("limit=abc", 400),
        ("status=lost", 400),
        ("before=nope", 400),
        (&format!("before={}", uuid::Uuid::new_v4()), 404),
    ] {
        let answer = send(
            &client,
            "GET",
            &format!("{base}?{query}"),
            &[],
            Bytes::new(),
        )
        .await;
        assert_eq!(answer.status, status, "{query}: {:?}", answer.body);
        assert!(
            answer.json()["error"].is_string(),
            "{query}: {:?}",
            answer.body
        );
    }
    let unknown = format!("{base}/{}", uuid::Uuid::new_v4());
    assert_eq!(
        send(&client, "GET", &unknown, &[], Bytes::new())
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn history_needs_the_agent_token_when_the_server_has_one() {
    let config = Config {
        agent_token: Some("s3cret".to_owned()),
        ..Config::default()
    };
    let server = start_server(config).await;
    let client = client();
    post_queued(
        &client,
        &format!("{}/h/private/x", server.url()),
        body_for(0),
    )
    .await;
    let url = format!("{}/api/channels/private/events", server.url());
    for auth in [None, Some("Bearer wrong"), Some("s3cret")] {
        let headers: Vec<(&str, &[u8])> = auth
            .map(|a| vec![("authorization", a.as_bytes())])
            .unwrap_or_default();
        let answer = send(&client, "GET", &url, &headers, Bytes::new()).await;
        assert_eq!(answer.status, 401, "{auth:?}");
        assert_eq!(answer.headers["www-authenticate"], "Bearer");
    }
    let answer = send(
        &client,
        "GET",
        &url,
        &[("authorization", b"Bearer s3cret")],
        Bytes::new(),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["events"].as_array().map(Vec::len), Some(1));
}
