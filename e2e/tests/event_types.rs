//! Event types end to end: agents that subscribe to some types (`--events`) and route types
//! to local URLs (`--route`), fed by real senders: GitHub deliveries made from octokit's
//! example payloads and Stripe events, signed by the official libraries
//! (`tests/senders/typed.mjs`). Every target checks the bytes it got against the sha256 the
//! sender printed, so a signature over them still verifies.

use std::time::Duration;

use bytes::Bytes;
use hookrelay_e2e::node::{Node, senders};
use hookrelay_e2e::{
    ADMIN, DEADLINE, Seen, TestServer, TestTarget, admin, agent_config, client, closed,
    create_channel, get_with, send, start_agent, start_server, start_target,
};
use protocol::{ChannelId, Subscription};
use relay_client::AgentConfig;
use relay_client::forward::Target;
use relay_client::route::{Route, Routes};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Bound on Node loading its libraries, and on one line of cases.
const NODE_TIMEOUT: Duration = Duration::from_secs(30);

/// One case as `typed.mjs` sent it.
#[derive(Debug)]
struct Sent {
    status: u16,
    sha256: String,
    answer: String,
}

/// The running `typed.mjs`.
struct Senders {
    node: Node,
    lines: mpsc::Receiver<String>,
    transcript: Vec<String>,
}

impl Senders {
    async fn start() -> Self {
        let mut node = Node::spawn(&senders(), "typed.mjs");
        let mut lines = node.stdout_lines();
        let mut transcript = Vec::new();
        loop {
            match timeout(NODE_TIMEOUT, lines.recv()).await {
                Ok(Some(line)) if line == "READY" => break,
                Ok(Some(line)) => transcript.push(line),
                _ => panic!("typed.mjs did not start\n{}", node.finish(&transcript)),
            }
        }
        Senders {
            node,
            lines,
            transcript,
        }
    }

    /// Sends `cases` in order to the webhook URL `base`, each once the one before it has its
    /// answer.
    async fn send(&mut self, base: &str, cases: &[&str]) -> Vec<Sent> {
        self.node.send_line(&format!("{base} {}", cases.join(",")));
        let mut sent = Vec::new();
        loop {
            let line = match timeout(NODE_TIMEOUT, self.lines.recv()).await {
                Ok(Some(line)) => line,
                _ => panic!("typed.mjs stopped\n{}", self.node.finish(&self.transcript)),
            };
            self.transcript.push(line.clone());
            if line == "DONE" {
                break;
            }
            let mut fields = line.splitn(5, ' ');
            let (Some("SENT"), Some(_), Some(status), Some(sha256)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                panic!("unexpected line {line:?}");
            };
            sent.push(Sent {
                status: status.parse().expect("a status"),
                sha256: sha256.to_owned(),
                answer: fields.next().unwrap_or_default().to_owned(),
            });
        }
        assert_eq!(sent.len(), cases.len(), "{:?}", self.transcript);
        sent
    }
}

fn sha256(body: &[u8]) -> String {
    Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The next request `target` saw, which must be the webhook `sent` byte for byte.
async fn received(target: &mut TestTarget, sent: &Sent) -> Seen {
    let seen = timeout(DEADLINE, target.seen.recv())
        .await
        .expect("the target got the webhook within the deadline")
        .expect("target running");
    assert_eq!(sha256(&seen.body), sent.sha256, "bytes changed on the way");
    seen
}

/// `target` got nothing more (everything it was to get came before the answers did).
fn nothing_more(target: &mut TestTarget) {
    if let Ok(seen) = target.seen.try_recv() {
        panic!("unexpected delivery to {}: {}", target.url, seen.uri);
    }
}

/// An agent of `channel` with `routes`, reconnecting fast as the harness's do.
fn agent(server: &TestServer, channel: &str, token: &str, routes: Routes) -> AgentConfig {
    let mut config = agent_config(server, "http://127.0.0.1:9");
    config.routes = routes;
    config.channel = Some(ChannelId::parse(channel).expect("valid"));
    config.token = Some(token.to_owned());
    config
}

fn forward(target: &TestTarget, events: &str) -> Routes {
    Routes {
        events: Some(Subscription::parse(events.split(',')).expect("valid")),
        ..Routes::forward(Target::parse(&target.url).expect("valid"))
    }
}

/// Polls the channel's status until it lists `n` agents; answers their entries.
async fn agents(server: &TestServer, channel: &str, token: &str, n: usize) -> Vec<Value> {
    let url = format!("{}/api/channels/{channel}", server.url());
    let poll = async {
        loop {
            let status = get_with(&url, Some(token)).await.json();
            if status["agent_count"] == n {
                return status["agents"].as_array().cloned().unwrap_or_default();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    timeout(DEADLINE, poll).await.expect("agents connected")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_agents_each_get_exactly_the_types_they_subscribed_to() {
    let mut senders = Senders::start().await;
    let server = start_server(closed()).await;
    let token = create_channel(&server, "fan", json!({"mode": "fanout"})).await;
    let (mut pushes, mut reviews) = (start_target().await, start_target().await);
    let _a = start_agent(agent(&server, "fan", &token, forward(&pushes, "push"))).await;
    let _b = start_agent(agent(
        &server,
        "fan",
        &token,
        forward(&reviews, "pull_request,issues"),
    ))
    .await;
    let listed = agents(&server, "fan", &token, 2).await;
    let mut subscriptions: Vec<&Value> = listed.iter().map(|a| &a["events"]).collect();
    subscriptions.sort_by_key(|v| v.to_string());
    assert_eq!(
        subscriptions,
        [&json!(["pull_request", "issues"]), &json!(["push"])]
    );

    let base = format!("{}/h/fan", server.url());
    let cases = [
        "github-push",
        "github-pull_request",
        "github-issues",
        "github-push-1",
    ];
    let sent = senders.send(&base, &cases).await;
    for s in &sent {
        assert_eq!(s.status, 201, "the matching agent's target answered: {s:?}");
    }
    let push = received(&mut pushes, &sent[0]).await;
    assert_eq!(push.uri, "/github?x=1");
    assert_eq!(push.header("x-hookrelay-event-type"), [b"push"]);
    assert_eq!(push.header("x-github-event"), [b"push"]);
    received(&mut reviews, &sent[1]).await;
    received(&mut reviews, &sent[2]).await;
    received(&mut pushes, &sent[3]).await;
    nothing_more(&mut pushes);
    nothing_more(&mut reviews);

    // Nobody takes it: answered at once, stored unrouted, and replayable to any agent.
    let sent = senders
        .send(&base, &["stripe-payment_intent.succeeded"])
        .await;
    assert_eq!(sent[0].status, 202, "{:?}", sent[0]);
    let answer: Value = serde_json::from_str(&sent[0].answer).expect("JSON answer");
    assert_eq!(answer["status"], "unrouted");
    let id = answer["id"].as_str().expect("an id").to_owned();
    let events = format!("{}/api/channels/fan/events", server.url());
    let event = get_with(&format!("{events}/{id}"), Some(&token))
        .await
        .json();
    assert_eq!(
        (&event["status"], &event["event_type"]),
        (&json!("unrouted"), &json!("payment_intent.succeeded"))
    );
    let page = get_with(&format!("{events}?type=pull_request*"), Some(&token))
        .await
        .json();
    let types: Vec<&Value> = (page["events"].as_array().into_iter().flatten())
        .map(|e| &e["event_type"])
        .collect();
    assert_eq!(types, [&json!("pull_request")]);
    nothing_more(&mut pushes);
    nothing_more(&mut reviews);
    let replay = format!("{events}/{id}/replay");
    let auth = format!("Bearer {token}");
    let replayed = send(
        &client(),
        "POST",
        &replay,
        &[("authorization", auth.as_bytes())],
        Bytes::new(),
    )
    .await;
    assert_eq!(replayed.status, 200, "{}", replayed.text());
    assert_eq!(replayed.json()["status"], "delivered");
    let to_any = tokio::select! {
        seen = pushes.seen.recv() => seen,
        seen = reviews.seen.recv() => seen,
    };
    let to_any = to_any.expect("a target got the replay");
    assert_eq!(sha256(&to_any.body), sent[0].sha256);
    assert_eq!(to_any.header("x-hookrelay-attempt"), [b"replay"]);

    let metrics = get_with(&format!("{}/metrics", server.url()), Some(ADMIN)).await;
    assert!(
        metrics
            .text()
            .contains("hookrelay_unrouted_total{channel=\"fan\"} 1"),
        "{}",
        metrics.text()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_send_each_type_to_its_url_and_the_rest_to_forward() {
    let mut senders = Senders::start().await;
    let server = start_server(closed()).await;
    let token = create_channel(&server, "routed", json!({})).await;
    let (mut a, mut b, mut c) = (
        start_target().await,
        start_target().await,
        start_target().await,
    );
    let route = |spec: String| Route::parse(&spec).expect("valid route");
    let routes = Routes {
        routes: vec![
            route(format!("push={}/a?from=route", a.url)),
            route(format!("pull_request*={}/b", b.url)),
        ],
        forward: Some(Target::parse(&format!("{}/c", c.url)).expect("valid")),
        events: None,
    };
    let _agent = start_agent(agent(&server, "routed", &token, routes)).await;
    agents(&server, "routed", &token, 1).await;

    let base = format!("{}/h/routed", server.url());
    let sent = senders
        .send(
            &base,
            &[
                "github-push",
                "github-pull_request",
                "github-pull_request_review",
                "github-issues",
                "stripe-charge.refunded",
            ],
        )
        .await;
    assert!(sent.iter().all(|s| s.status == 201), "{sent:?}");
    let push = received(&mut a, &sent[0]).await;
    assert_eq!(
        push.uri, "/a/github?from=route&x=1",
        "suffix and query appended"
    );
    assert_eq!(received(&mut b, &sent[1]).await.uri, "/b/github?x=1");
    received(&mut b, &sent[2]).await;
    assert_eq!(received(&mut c, &sent[3]).await.uri, "/c/github?x=1");
    let stripe = received(&mut c, &sent[4]).await;
    assert_eq!(stripe.uri, "/c/stripe");
    assert_eq!(
        stripe.header("x-hookrelay-event-type"),
        [b"charge.refunded"]
    );
    for target in [&mut a, &mut b, &mut c] {
        nothing_more(target);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_channel_names_its_own_type_and_an_old_agent_takes_every_type() {
    let server = start_server(closed()).await;
    let token = create_channel(&server, "own", json!({"event_type": "json:/meta/kind"})).await;
    let mut target = start_target().await;
    // An agent that says a plain hello, as every agent before subscriptions did.
    let _old = start_agent(agent(
        &server,
        "own",
        &token,
        Routes::forward(Target::parse(&target.url).expect("valid")),
    ))
    .await;
    assert_eq!(
        agents(&server, "own", &token, 1).await[0]["events"],
        Value::Null
    );
    let url = format!("{}/h/own", server.url());
    for body in [
        r#"{"type":"ignored","meta":{"kind":"build.finished"}}"#,
        "not json at all",
    ] {
        let answer = send(&client(), "POST", &url, &[], Bytes::from(body)).await;
        assert_eq!(answer.status, 201, "every type, and none, reaches it");
        assert_eq!(
            timeout(DEADLINE, target.seen.recv())
                .await
                .ok()
                .flatten()
                .map(|s| s.body),
            Some(Bytes::from(body))
        );
    }
    let page = get_with(
        &format!("{}/api/channels/own/events", server.url()),
        Some(&token),
    )
    .await
    .json();
    let types: Vec<&Value> = (page["events"].as_array().into_iter().flatten())
        .map(|e| &e["event_type"])
        .collect();
    assert_eq!(types, [&Value::Null, &json!("build.finished")]);
    let channel = admin(&server, "GET", "/api/admin/channels", String::new()).await;
    assert_eq!(
        channel.json()["channels"][0]["event_type"],
        "json:/meta/kind"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_webhooks_wait_for_an_agent_that_takes_their_type() {
    let server = start_server(closed()).await;
    let token = create_channel(&server, "later", json!({})).await;
    let url = format!("{}/h/later", server.url());
    let mut ids = Vec::new();
    for event in ["pull_request", "push", "issues"] {
        let headers: [(&str, &[u8]); 1] = [("x-github-event", event.as_bytes())];
        let answer = send(&client(), "POST", &url, &headers, event).await;
        assert_eq!(answer.status, 202, "no agent yet: queued");
        assert_eq!(answer.json()["status"], "queued");
        ids.push(answer.delivery().expect("an id"));
    }
    // Takes only pushes: the pull request before it in the queue does not hold it up.
    let mut pushes = start_target().await;
    let _push = start_agent(agent(&server, "later", &token, forward(&pushes, "push"))).await;
    let seen = timeout(DEADLINE, pushes.seen.recv())
        .await
        .expect("delivered");
    assert_eq!(seen.expect("running").body, Bytes::from("push"));
    let events = format!("{}/api/channels/later/events", server.url());
    let status = |id: &str| {
        let url = format!("{events}/{id}");
        let token = token.clone();
        async move { get_with(&url, Some(&token)).await.json()["status"].clone() }
    };
    let poll = async {
        while status(&ids[1]).await != "delivered" {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    timeout(DEADLINE, poll)
        .await
        .expect("the push is recorded delivered");
    assert_eq!(status(&ids[0]).await, "queued", "still waiting for a taker");
    assert_eq!(status(&ids[2]).await, "queued");
    nothing_more(&mut pushes);

    // An agent that takes the rest comes: each arrives, in order.
    let mut rest = start_target().await;
    let _rest = start_agent(agent(
        &server,
        "later",
        &token,
        forward(&rest, "pull_request,issues"),
    ))
    .await;
    for body in ["pull_request", "issues"] {
        let seen = timeout(DEADLINE, rest.seen.recv())
            .await
            .expect("delivered");
        assert_eq!(seen.expect("running").body, Bytes::from(body));
    }
    nothing_more(&mut pushes);
    server.stop().await;
}
