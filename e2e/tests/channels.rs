//! Channels with owners: registered channels, their tokens, open mode and the admin API,
//! against hostile agents and readers. Each refusal is checked for its answer, and that the
//! rightful owner is still served.

use std::process::Command;
use std::time::Duration;

use hookrelay_e2e::*;
use relay_server::Config;
use serde_json::{Value, json};

fn agent_for(
    server: &TestServer,
    target: &TestTarget,
    channel: Option<&str>,
    token: Option<&str>,
) -> relay_client::AgentConfig {
    let mut config = agent_config(server, &target.url);
    config.channel = channel.map(|c| protocol::ChannelId::parse(c).expect("valid"));
    config.token = token.map(str::to_owned);
    config
}

/// The agent is refused for good, with a message containing `why`.
async fn assert_refused(config: relay_client::AgentConfig, why: &str) {
    let err = relay_client::Agent::connect(config, None)
        .await
        .err()
        .expect("refused");
    assert!(err.is_fatal(), "a refusal is not retried: {err}");
    assert!(err.to_string().contains(why), "{err}");
}

async fn post(url: &str) -> Answer {
    send(&client(), "POST", url, &[], "payload").await
}

#[tokio::test]
async fn a_registered_channel_serves_only_the_holder_of_its_token() {
    let server = start_server(closed()).await;
    let target = start_target().await;
    let token = create_channel(&server, "team-a", json!({})).await;
    let other = create_channel(&server, "team-b", json!({})).await;

    // Stolen name without the token, a wrong token, another channel's token.
    assert_refused(
        agent_for(&server, &target, Some("team-a"), None),
        "pass its token",
    )
    .await;
    assert_refused(
        agent_for(&server, &target, Some("team-a"), Some("hrt_guess")),
        "wrong token for channel team-a",
    )
    .await;
    assert_refused(
        agent_for(&server, &target, Some("team-a"), Some(&other)),
        "wrong token for channel team-a",
    )
    .await;

    // The owner, by name and token, or by token alone.
    let agent = start_agent(agent_for(&server, &target, Some("team-a"), Some(&token))).await;
    assert_eq!(agent.channel, "team-a");
    let by_token = start_agent(agent_for(&server, &target, None, Some(&token))).await;
    assert_eq!(by_token.channel, "team-a");
    let answer = post(&format!("{}/h/team-a/hook", server.url())).await;
    assert_eq!(answer.status, 201);

    // History and channel status: the channel's token or the admin token, nothing else.
    let events = format!("{}/api/channels/team-a/events", server.url());
    for (token, status) in [
        (None, 401),
        (Some("hrt_guess"), 401),
        (Some(other.as_str()), 401),
        (Some(token.as_str()), 200),
        (Some(ADMIN), 200),
    ] {
        let answer = get_with(&events, token).await;
        assert_eq!(answer.status, status, "{token:?}: {:?}", answer.body);
        if status == 401 {
            assert_eq!(answer.headers["www-authenticate"], "Bearer");
        }
    }
    let status = get_with(
        &format!("{}/api/channels/team-a", server.url()),
        Some(&token),
    )
    .await
    .json();
    assert_eq!(status["registered"], true);
    assert_eq!(status["agent_count"], 2);
    assert_eq!(status["agents"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn a_closed_server_refuses_unregistered_channels() {
    let server = start_server(closed()).await;
    let target = start_target().await;
    assert_refused(agent_for(&server, &target, None, None), "no open channels").await;
    assert_refused(
        agent_for(&server, &target, Some("squat"), None),
        "relay-server channels create squat",
    )
    .await;
    let answer = post(&format!("{}/h/squat/x", server.url())).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.json()["error"], "no channel squat");
    let history = get_with(&format!("{}/api/channels/squat/events", server.url()), None).await;
    assert_eq!(history.status, 404);
}

#[tokio::test]
async fn open_mode_still_protects_registered_channels() {
    // The default on loopback: open.
    let server = start_server(Config {
        admin_token: Some(ADMIN.to_owned()),
        ..Config::default()
    })
    .await;
    let target = start_target().await;
    let squatter = start_agent(agent_for(&server, &target, Some("shared"), None)).await;
    assert_eq!(squatter.channel, "shared");

    // Registering the name evicts the agent that took it without a token.
    let token = create_channel(&server, "shared", json!({})).await;
    let ended = tokio::time::timeout(DEADLINE, squatter.task)
        .await
        .expect("squatter disconnected in time")
        .expect("agent task not panicked");
    let err = ended.expect_err("evicted for good");
    assert!(err.to_string().contains("now registered"), "{err}");
    assert_refused(
        agent_for(&server, &target, Some("shared"), None),
        "pass its token",
    )
    .await;
    let owner = start_agent(agent_for(&server, &target, Some("shared"), Some(&token))).await;
    assert_eq!(owner.channel, "shared");
    let answer = post(&format!("{}/h/shared", server.url())).await;
    assert_eq!(answer.status, 201);

    // Unregistered channels work as before.
    assert_agent_serves(&server, &target).await;
}

async fn assert_agent_serves(server: &TestServer, target: &TestTarget) {
    let agent = start_agent(agent_config(server, &target.url)).await;
    let answer = post(&format!("{}/ok", agent.public_url)).await;
    assert_eq!(answer.status, 201);
}

#[tokio::test]
async fn rotating_a_token_disconnects_its_holders_and_revoking_ends_the_channel() {
    let server = start_server(closed()).await;
    let target = start_target().await;
    let old = create_channel(&server, "rot", json!({})).await;
    let agent = start_agent(agent_for(&server, &target, Some("rot"), Some(&old))).await;

    let answer = admin(
        &server,
        "POST",
        "/api/admin/channels/rot/rotate",
        String::new(),
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let new = answer.json()["token"]
        .as_str()
        .expect("new token")
        .to_owned();
    assert_ne!(new, old);
    let err = tokio::time::timeout(DEADLINE, agent.task)
        .await
        .expect("disconnected in time")
        .expect("not panicked")
        .expect_err("refused for good");
    assert!(err.to_string().contains("rotated"), "{err}");
    assert_refused(
        agent_for(&server, &target, Some("rot"), Some(&old)),
        "wrong token",
    )
    .await;
    let agent = start_agent(agent_for(&server, &target, Some("rot"), Some(&new))).await;

    let answer = admin(&server, "DELETE", "/api/admin/channels/rot", String::new()).await;
    assert_eq!(answer.status, 204);
    let err = tokio::time::timeout(DEADLINE, agent.task)
        .await
        .expect("disconnected in time")
        .expect("not panicked")
        .expect_err("refused for good");
    assert!(err.to_string().contains("revoked"), "{err}");
    assert_eq!(post(&format!("{}/h/rot", server.url())).await.status, 404);
    let again = admin(&server, "DELETE", "/api/admin/channels/rot", String::new()).await;
    assert_eq!(again.status, 404);
}

#[tokio::test]
async fn patching_a_channel_changes_only_what_is_given_and_keeps_its_token_and_agents() {
    let server = start_server(closed()).await;
    let mut target = start_target().await;
    let token = create_channel(
        &server,
        "patched",
        json!({"rate_limit": "5/s", "allow_from": ["127.0.0.0/8"]}),
    )
    .await;
    let agent = start_agent(agent_for(&server, &target, Some("patched"), Some(&token))).await;
    let patch = |body: serde_json::Value| {
        let server = &server;
        async move {
            admin(
                server,
                "PATCH",
                "/api/admin/channels/patched",
                body.to_string(),
            )
            .await
        }
    };
    let answer =
        patch(json!({"mode": "fanout", "verify": {"kind": "github", "secret": "s"}})).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let doc = answer.json();
    assert_eq!(
        (
            &doc["mode"],
            &doc["verify"],
            &doc["rate_limit"],
            &doc["allow_from"]
        ),
        (
            &json!("fanout"),
            &json!("github"),
            &json!("5/s"),
            &json!(["127.0.0.0/8"])
        ),
        "what was not given stays"
    );
    assert!(doc.get("token").is_none());
    let hook = format!("{}/h/patched", server.url());
    assert_eq!(post(&hook).await.status, 401, "applied at once");

    let answer = patch(json!({"verify": null, "rate_limit": null, "allow_from": []})).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let doc = answer.json();
    assert_eq!(
        (&doc["verify"], &doc["rate_limit"]),
        (&json!(null), &json!(null))
    );
    assert_eq!(post(&hook).await.status, 201, "the same agent still serves");
    next_seen(&mut target).await;
    assert!(!agent.task.is_finished());

    for (body, status) in [
        (json!({"mode": "broadcast"}), 400),
        (json!({"name": "renamed"}), 400),
        (json!({"verify": {"kind": "github"}}), 400),
    ] {
        assert_eq!(patch(body.clone()).await.status, status, "{body}");
    }
    let ghost = admin(
        &server,
        "PATCH",
        "/api/admin/channels/ghost",
        "{}".to_owned(),
    )
    .await;
    assert_eq!(ghost.status, 404);
}

#[tokio::test]
async fn wrong_tokens_get_429_past_the_limit_but_the_right_token_always_passes() {
    let server = start_server(Config {
        auth_failures: 3,
        ..closed()
    })
    .await;
    let target = start_target().await;
    let token = create_channel(&server, "guarded", json!({})).await;
    let other = create_channel(&server, "other", json!({})).await;
    let events = format!("{}/api/channels/guarded/events", server.url());
    for _ in 0..3 {
        assert_eq!(get_with(&events, Some("hrt_guess")).await.status, 401);
    }
    // Further wrong tokens from this address for this channel are refused with 429...
    let answer = get_with(&events, Some("hrt_guess")).await;
    assert_eq!(answer.status, 429);
    let retry: u64 = answer.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    // ...but the right one passes, and so does the admin token.
    assert_eq!(get_with(&events, Some(&token)).await.status, 200);
    assert_eq!(get_with(&events, Some(ADMIN)).await.status, 200);
    // Another channel's wrong tokens from the same address still get 401, its right one 200.
    let elsewhere = format!("{}/api/channels/other/events", server.url());
    assert_eq!(get_with(&elsewhere, Some("hrt_guess")).await.status, 401);
    assert_eq!(get_with(&elsewhere, Some(&other)).await.status, 200);

    // Agents: the right token connects after the wrong ones...
    let agent = start_agent(agent_for(&server, &target, Some("guarded"), Some(&token))).await;
    assert_eq!(agent.channel, "guarded");
    // ...and a further wrong one is told to wait.
    let err = relay_client::Agent::connect(
        agent_for(&server, &target, Some("guarded"), Some("hrt_guess")),
        None,
    )
    .await
    .err()
    .expect("refused");
    assert!(err.is_fatal(), "{err}");
    assert!(err.to_string().contains("too many wrong tokens"), "{err}");
    assert!(err.to_string().contains("try again in"), "{err}");

    // The admin API counts its own wrong tokens: three get 401, the next 429, the right 200.
    let list = format!("{}/api/admin/channels", server.url());
    for _ in 0..3 {
        assert_eq!(
            get_with(&list, Some("admin-guess-0123456789")).await.status,
            401
        );
    }
    let answer = get_with(&list, Some("admin-guess-0123456789")).await;
    assert_eq!(answer.status, 429);
    assert!(answer.headers.contains_key("retry-after"));
    assert_eq!(get_with(&list, Some(ADMIN)).await.status, 200);
}

#[tokio::test]
async fn an_agent_with_the_right_token_connects_after_wrong_handshakes() {
    let server = start_server(Config {
        auth_failures: 2,
        ..closed()
    })
    .await;
    let target = start_target().await;
    let token = create_channel(&server, "typo", json!({})).await;
    let mut refusals = Vec::new();
    for _ in 0..3 {
        let err = relay_client::Agent::connect(
            agent_for(&server, &target, Some("typo"), Some("hrt_typo")),
            None,
        )
        .await
        .err()
        .expect("refused");
        refusals.push(err.to_string());
    }
    assert!(
        refusals[0].contains("wrong token for channel typo"),
        "{refusals:?}"
    );
    assert!(
        refusals[2].contains("too many wrong tokens"),
        "{refusals:?}"
    );
    let agent = start_agent(agent_for(&server, &target, Some("typo"), Some(&token))).await;
    assert_eq!(post(&format!("{}/x", agent.public_url)).await.status, 201);
}

#[tokio::test]
async fn the_channels_command_works_beside_a_running_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_server(Config {
        open: Some(false),
        channel_reload: Duration::from_millis(50),
        ..durable_config(dir.path())
    })
    .await;
    let target = start_target().await;
    let run = |args: &[&str]| {
        let output = Command::new(server_binary())
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--public-url", "https://relay.example.com"])
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("run relay-server");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), stdout, stderr)
    };

    let (ok, out, err) = run(&["channels", "create", "cli-made", "--mode", "fanout"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("https://relay.example.com/h/cli-made"),
        "{out}"
    );
    let token = out
        .split_whitespace()
        .find(|word| word.starts_with("hrt_"))
        .expect("token printed")
        .to_owned();
    // The running server picks the new channel up by itself.
    let connect = async {
        loop {
            let config = agent_for(&server, &target, Some("cli-made"), Some(&token));
            if let Ok(agent) = relay_client::Agent::connect(config, None).await {
                return agent;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let agent = tokio::time::timeout(DEADLINE, connect)
        .await
        .expect("server reloads channels in time");
    assert_eq!(agent.channel(), "cli-made");

    let (ok, out, _) = run(&["channels", "list"]);
    assert!(
        ok && out.contains("cli-made") && out.contains("fanout"),
        "{out}"
    );
    assert!(!out.contains(&token), "list never shows tokens");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME"), "a header row: {out}");
    let url_column = lines[0].find("WEBHOOK URL");
    assert!(
        lines[1..]
            .iter()
            .all(|line| line.find("https://") == url_column),
        "aligned columns: {out}"
    );

    // Update keeps the token (and the agent): the channel starts checking signatures.
    let (ok, out, err) = run(&[
        "channels", "update", "cli-made", "--verify", "github", "--secret", "s3", "--mode",
        "balance",
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("mode balance, pace: server default, verify github"),
        "{out}"
    );
    let (ok, out, _) = run(&["channels", "list"]);
    assert!(ok && out.contains("verify github"), "{out}");
    let (ok, out, err) = run(&[
        "channels",
        "update",
        "cli-made",
        "--event-type",
        "json:/meta/kind",
    ]);
    assert!(
        ok && out.contains("event type from json:/meta/kind"),
        "{out}{err}"
    );
    let (ok, out, err) = run(&["channels", "update", "cli-made", "--event-type", "default"]);
    assert!(ok && !out.contains("event type from"), "{out}{err}");
    let (ok, _, err) = run(&["channels", "update", "cli-made", "--event-type", "kind"]);
    assert!(
        !ok && err.contains("use header:NAME or json:/json/pointer"),
        "{err}"
    );
    let (ok, _, err) = run(&["channels", "update", "cli-made"]);
    assert!(!ok && err.contains("nothing to change"), "{err}");
    let (ok, _, err) = run(&["channels", "update", "nope", "--no-verify"]);
    assert!(!ok && err.contains("no channel nope"), "{err}");

    let (ok, out, err) = run(&["channels", "create", "cli-made"]);
    assert!(
        !ok && err.contains("channel cli-made already exists"),
        "{out}{err}"
    );
    let (ok, _, err) = run(&["channels", "revoke", "nope"]);
    assert!(!ok && err.contains("no channel nope"), "{err}");
    let (ok, out, err) = run(&[
        "channels",
        "create",
        "signed",
        "--verify",
        "github",
        "--secret",
        "s3cret",
        "--rate-limit",
        "10/s",
        "--allow-from",
        "192.30.252.0/22",
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("mode balance, pace 10/s, verify github, from 192.30.252.0/22"),
        "{out}"
    );
    assert!(!out.contains("s3cret"), "secrets are not echoed");
    let (ok, _, err) = run(&["channels", "create", "unsigned", "--verify", "github"]);
    assert!(!ok && err.contains("--secret"), "{err}");
    let (ok, _, err) = run(&["channels", "create", "no/slash"]);
    assert!(!ok && err.contains("not a valid channel name"), "{err}");

    let (ok, out, err) = run(&["channels", "rotate", "cli-made"]);
    assert!(ok, "{out}{err}");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let ended = tokio::time::timeout(DEADLINE, agent.run(shutdown))
        .await
        .expect("server evicts the old token's agent in time");
    assert!(
        ended.is_err_and(|e| e.to_string().contains("rotated")),
        "evicted after the rotation"
    );
    server.stop().await;
}

#[tokio::test]
async fn fanout_gives_every_agent_a_copy_and_the_sender_the_accepting_answer() {
    let server = start_server(closed()).await;
    let token = create_channel(&server, "fan", json!({"mode": "fanout"})).await;
    let mut up = start_target().await;
    let mut down = start_target().await;
    let _a = start_agent(agent_for(&server, &up, Some("fan"), Some(&token))).await;
    let mut failing = agent_for(&server, &down, Some("fan"), Some(&token));
    failing.routes =
        relay_client::AgentConfig::new(&server.url(), &format!("{}/status/503", down.url))
            .expect("valid")
            .routes;
    let _b = start_agent(failing).await;

    for _ in 0..3 {
        let answer = send(
            &client(),
            "POST",
            &format!("{}/h/fan", server.url()),
            &[],
            "copy",
        )
        .await;
        assert_eq!(
            answer.status, 201,
            "the accepting answer wins: {:?}",
            answer.body
        );
        let id = answer.headers["x-hookrelay-delivery"].as_bytes().to_vec();
        let (one, two) = (next_seen(&mut up).await, next_seen(&mut down).await);
        assert_eq!(one.header("x-hookrelay-delivery"), [id.as_slice()]);
        assert_eq!(two.header("x-hookrelay-delivery"), [id.as_slice()]);
        assert_eq!((&one.body[..], &two.body[..]), (&b"copy"[..], &b"copy"[..]));

        let url = format!(
            "{}/api/channels/fan/events/{}",
            server.url(),
            String::from_utf8(id).expect("ascii")
        );
        let bearer = format!("Bearer {token}");
        let doc = poll_json_with(&url, &bearer, |doc| {
            doc["attempts"].as_array().map_or(0, Vec::len) == 2
        })
        .await;
        let mut statuses: Vec<u64> = doc["attempts"]
            .as_array()
            .expect("attempts")
            .iter()
            .filter_map(|a| a["status"].as_u64())
            .collect();
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 503]);
        assert_eq!(doc["status"], "delivered");
    }
}

#[tokio::test]
async fn balance_spreads_webhooks_over_the_agents() {
    let server = start_server(closed()).await;
    let token = create_channel(&server, "bal", json!({})).await;
    let mut one = start_target().await;
    let mut two = start_target().await;
    let _a = start_agent(agent_for(&server, &one, Some("bal"), Some(&token))).await;
    let _b = start_agent(agent_for(&server, &two, Some("bal"), Some(&token))).await;
    for _ in 0..4 {
        let answer = post(&format!("{}/h/bal", server.url())).await;
        assert_eq!(answer.status, 201);
    }
    for target in [&mut one, &mut two] {
        next_seen(target).await;
        next_seen(target).await;
        assert!(target.seen.try_recv().is_err(), "two each, no more");
    }
}

/// Polls a JSON document that needs `authorization` until `done` holds.
async fn poll_json_with(url: &str, authorization: &str, done: impl Fn(&Value) -> bool) -> Value {
    let poll = async {
        loop {
            let answer = send(
                &client(),
                "GET",
                url,
                &[("authorization", authorization.as_bytes())],
                "",
            )
            .await;
            let doc = answer.json();
            if done(&doc) {
                return doc;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(DEADLINE, poll)
        .await
        .expect("condition reached in time")
}
