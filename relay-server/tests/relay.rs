//! The relay's ingress with no agent connected: queueing, unknown routes and invalid channel
//! names. (Webhooks relayed through an agent are in e2e's `relay`.)

use crate::common::*;
use relay_server::Config;

#[tokio::test]
async fn no_agent_queues_the_webhook_with_202_or_the_configured_503() {
    let server = start_server(Config::default()).await;
    let client = client();
    let url = format!("{}/h/nobody-here/x", server.url());
    let answer = send(&client, "POST", &url, &[], "x").await;
    assert_eq!(answer.status, 202);
    let json = answer.json();
    assert_eq!(json["status"], "queued");
    let id = json["id"].as_str().expect("id");
    assert_eq!(answer.headers["x-hookrelay-delivery"], id);

    let config = Config {
        offline_status: 503,
        ..Config::default()
    };
    let server = start_server(config).await;
    let url = format!("{}/h/nobody-here/x", server.url());
    let answer = send(&client, "POST", &url, &[], "x").await;
    assert_eq!(answer.status, 503);
    assert_eq!(
        answer.json()["error"],
        "no agent connected to channel nobody-here; the webhook is queued"
    );
    assert_eq!(answer.json()["status"], "queued");
}

#[tokio::test]
async fn unknown_routes_give_404_and_invalid_channel_names_say_why() {
    let server = start_server(Config::default()).await;
    let client = client();
    let rule =
        "is not a valid channel name: use 1 to 64 characters from A-Z, a-z, 0-9, '-' and '_'";
    let long = "a".repeat(65);
    for (path, error) in [
        ("/nope".to_owned(), "not found".to_owned()),
        ("/h/".to_owned(), "not found".to_owned()),
        ("/h/a%20b".to_owned(), format!(r#""a%20b" {rule}"#)),
        (
            "/h/bad%20name/x".to_owned(),
            format!(r#""bad%20name" {rule}"#),
        ),
        (
            "/h/caf%C3%A9/x".to_owned(),
            format!(r#""caf%C3%A9" {rule}"#),
        ),
        (format!("/h/{long}"), format!(r#""{long}" {rule}"#)),
        (
            "/api/channels/bad%20name".to_owned(),
            format!(r#""bad name" {rule}"#),
        ),
        ("/c/bad%20name".to_owned(), format!(r#""bad name" {rule}"#)),
    ] {
        let answer = send(&client, "GET", &format!("{}{path}", server.url()), &[], "").await;
        assert_eq!(answer.status, 404, "{path}");
        assert_eq!(answer.json()["error"], error, "{path}");
    }
    // 64 characters is a valid name.
    let answer = send(
        &client,
        "POST",
        &format!("{}/h/{}", server.url(), "a".repeat(64)),
        &[],
        "",
    )
    .await;
    assert_eq!(answer.status, 202);
    let health = send(
        &client,
        "GET",
        &format!("{}/healthz", server.url()),
        &[],
        "",
    )
    .await;
    assert_eq!(health.status, 200);
}
