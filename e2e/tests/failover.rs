//! Several relay nodes on one PostgreSQL store under load while something fails: a node is
//! SIGKILLed, or the database goes away and comes back. What must hold either way: every
//! webhook a node answered 2xx reaches the target byte for byte (at least once), and no event
//! is ever being delivered by two nodes at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hookrelay_e2e::*;
use http_body_util::{BodyExt, Full};
use relay_server::{Config, StoreConfig};
use tokio::time::Instant;

/// Bound on one webhook of a sender: a node that is up answers long before, a killed one
/// refuses the connection at once, so running out of it means a node hung. The longest
/// honest wait is a webhook to a or c that b took just before it was killed: its node
/// answers 202 once b's instance lease has run out (6 s) and its next look (every second).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(12);

/// How long the target holds each delivery (see [`start_recording_target`]).
const HOLD: Duration = Duration::from_millis(20);

/// Bound on every accepted webhook reaching the target after a failure: a killed node's
/// in-flight events wait for its instance lease to expire (6 s) and the next renewal (2 s).
const DELIVERED_WITHIN: Duration = Duration::from_secs(40);

/// The webhooks the nodes accepted: delivery id -> the body sent.
type Accepted = Arc<Mutex<HashMap<String, Bytes>>>;

/// POSTs `body` to `url`; `Err` when no whole answer came within [`REQUEST_TIMEOUT`].
async fn post(client: &TestClient, url: &str, body: Bytes) -> Result<Answer, String> {
    try_send_body(
        client,
        "POST",
        url,
        &[],
        Full::new(body).boxed(),
        REQUEST_TIMEOUT,
    )
    .await
}

/// The delivery id of a 2xx answer: the `x-hookrelay-delivery` header of a live delivery, or
/// the `id` of a 202 `{"id":..,"status":"queued"}`.
fn accepted_id(answer: &Answer) -> String {
    if let Some(id) = answer.delivery() {
        return id;
    }
    let doc = answer.json();
    assert_eq!(
        doc["status"], "queued",
        "a 2xx without a delivery id: {doc}"
    );
    doc["id"]
        .as_str()
        .expect("a queued webhook's id")
        .to_owned()
}

/// Waits until the target has seen every accepted webhook, then checks each arrived byte for
/// byte and that no delivery id was ever being served twice at the same time (a second
/// delivery of one event after the first ended is allowed: at least once).
async fn assert_all_delivered(target: &RecordingTarget, accepted: &HashMap<String, Bytes>) {
    let deadline = Instant::now() + DELIVERED_WITHIN;
    let visits = loop {
        let visits = target.visits();
        let missing = accepted
            .keys()
            .filter(|id| !visits.iter().any(|visit| &visit.delivery == *id))
            .count();
        if missing == 0 {
            break visits;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} accepted webhooks never reached the target",
            accepted.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut by_id: HashMap<&str, Vec<&Visit>> = HashMap::new();
    for visit in &visits {
        by_id.entry(&visit.delivery).or_default().push(visit);
    }
    for (id, body) in accepted {
        let mut seen = by_id.remove(id.as_str()).expect("checked above");
        for visit in &seen {
            assert_eq!(&visit.body, body, "{id} arrived with another body");
        }
        seen.sort_by_key(|visit| visit.started);
        for pair in seen.windows(2) {
            assert!(
                pair[1].started >= pair[0].finished,
                "{id} was delivered twice at once: {pair:?}"
            );
        }
    }
}

/// Polls `done` until it holds; panics at [`DEADLINE`] naming `what` never happened.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "never {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts the binary as node `id` on the database at `url`, in open mode; returns once it
/// listens. The wait blocks this worker thread only.
fn spawn_node(url: &str, id: &str) -> ServerProcess {
    let args = ["--listen", "127.0.0.1:0", "--store", url, "--node-id", id];
    tokio::task::block_in_place(|| spawn_server(&args, &[]))
}

/// An agent of `channel` on `first`, failing over to `then` when that connection drops.
fn failover_agent(
    first: &str,
    then: &str,
    channel: &str,
    target: &str,
) -> relay_client::AgentConfig {
    let mut config = pinned_agent(first, channel, target);
    let ws = format!("{}/ws", then.replacen("http://", "ws://", 1));
    config.more_servers = vec![(then.to_owned(), ws)];
    config
}

// Multi-threaded: starting the node processes blocks a worker (`block_in_place`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_loses_no_accepted_webhook() {
    const SENDERS: usize = 4;
    const PER_SENDER: usize = 75;
    const KILL_AFTER: usize = 100;
    let url = postgres::database();
    let a = spawn_node(&url, "node-a");
    let b = spawn_node(&url, "node-b");
    let c = spawn_node(&url, "node-c");
    let target = start_recording_target(HOLD).await;
    let agent = start_agent(failover_agent(&b.url(), &a.url(), "failover", &target.url)).await;
    let client = client();
    let status = format!("{}/api/channels/failover", a.url());
    poll_json(&client, &status, |doc| doc["agent_count"] == 1).await;

    let hooks = [&a, &b, &c].map(|node| format!("{}/h/failover/x", node.url()));
    let accepted: Accepted = Arc::default();
    let answered = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let (client, hooks, accepted, answered, killed) = (
            client.clone(),
            hooks.clone(),
            Arc::clone(&accepted),
            Arc::clone(&answered),
            Arc::clone(&killed),
        );
        senders.push(tokio::spawn(async move {
            for n in 0..PER_SENDER {
                let i = sender * PER_SENDER + n;
                let hook = &hooks[i % hooks.len()];
                let body = body_for(i);
                match post(&client, hook, body.clone()).await {
                    Ok(answer) if (200..300).contains(&answer.status) => {
                        accepted
                            .lock()
                            .expect("accepted lock")
                            .insert(accepted_id(&answer), body);
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    // Node b after the kill, or a webhook it was serving when killed: never
                    // accepted, so nothing is owed for it.
                    Err(_) if *hook == hooks[1] && killed.load(Ordering::Relaxed) => {}
                    Ok(answer) => panic!("{hook}: {} {:?}", answer.status, answer.body),
                    Err(e) => panic!("{hook}: {e}"),
                }
            }
        }));
    }
    wait_until("got going", || {
        answered.load(Ordering::Relaxed) >= KILL_AFTER
    })
    .await;
    // Set first: a sender that sees its request to b fail must know it was the kill.
    killed.store(true, Ordering::Relaxed);
    b.sigkill();

    // The agent fails over to a: a lists it as held by node a.
    poll_json(&client, &status, |doc| {
        doc["agents"]
            .as_array()
            .is_some_and(|agents| agents.iter().any(|agent| agent["node"] == "node-a"))
    })
    .await;
    for sender in senders {
        sender.await.expect("sender ran");
    }
    let accepted = accepted.lock().expect("accepted lock").clone();
    assert!(
        accepted.len() > KILL_AFTER,
        "only {} accepted",
        accepted.len()
    );
    assert_all_delivered(&target, &accepted).await;
    agent.shutdown.cancel();
}

// Multi-threaded: stopping and starting the cluster blocks a worker (`block_in_place`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_nodes_recover_and_lose_nothing_accepted() {
    const SENDERS: usize = 4;
    /// Bound on the webhooks of one sender, whatever happens.
    const MAX_PER_SENDER: usize = 400;
    const STOP_AFTER: usize = 60;
    let cluster = tokio::task::spawn_blocking(postgres::Cluster::start)
        .await
        .expect("start cluster");
    let database = Config {
        store: StoreConfig::Postgres(cluster.database().parse().expect("a valid URL")),
        node_id: Some("node-a".to_owned()),
        ..Config::default()
    };
    let a = start_server(database.clone()).await;
    let b = start_server(Config {
        node_id: Some("node-b".to_owned()),
        ..database
    })
    .await;
    let target = start_recording_target(HOLD).await;
    let agent = start_agent(pinned_agent(&a.url(), "outage", &target.url)).await;
    let client = client();

    let hooks = [&a, &b].map(|node| format!("{}/h/outage/x", node.url()));
    let accepted: Accepted = Arc::default();
    let answered = Arc::new(AtomicUsize::new(0));
    // Refusals (503) per node while the database was down, and acceptances per node after.
    let refused_down = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let accepted_again = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    // 0: before the stop, 1: down, 2: started again, 3: done.
    let phase = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let (client, hooks, accepted, answered, phase) = (
            client.clone(),
            hooks.clone(),
            Arc::clone(&accepted),
            Arc::clone(&answered),
            Arc::clone(&phase),
        );
        let (refused_down, accepted_again) =
            (Arc::clone(&refused_down), Arc::clone(&accepted_again));
        senders.push(tokio::spawn(async move {
            // Paced, so the fast 503s of the outage stay a bounded number of requests.
            let mut pace = tokio::time::interval(Duration::from_millis(10));
            for n in 0..MAX_PER_SENDER {
                pace.tick().await;
                let now = phase.load(Ordering::SeqCst);
                if now == 3 {
                    return;
                }
                let i = sender * MAX_PER_SENDER + n;
                let node = i % hooks.len();
                let body = body_for(i);
                let answer = post(&client, &hooks[node], body.clone())
                    .await
                    .unwrap_or_else(|e| panic!("{} hung (phase {now}): {e}", hooks[node]));
                match answer.status {
                    200..300 => {
                        accepted
                            .lock()
                            .expect("accepted lock")
                            .insert(accepted_id(&answer), body);
                        answered.fetch_add(1, Ordering::SeqCst);
                        if now == 2 && phase.load(Ordering::SeqCst) == 2 {
                            accepted_again[node].fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    503 => {
                        let after = phase.load(Ordering::SeqCst);
                        assert_ne!(after, 0, "503 before the database went down");
                        if now == 1 && after == 1 {
                            refused_down[node].fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    status => panic!("{}: {status} {:?}", hooks[node], answer.body),
                }
            }
        }));
    }
    wait_until("got going", || {
        answered.load(Ordering::SeqCst) >= STOP_AFTER
    })
    .await;

    // Before the stop: a 503 is only ever answered once the phase says the database may be down.
    phase.store(1, Ordering::SeqCst);
    tokio::task::block_in_place(|| cluster.stop());
    wait_until("refused on both nodes", || {
        refused_down.iter().all(|n| n.load(Ordering::SeqCst) >= 3)
    })
    .await;
    let ready = send(&client, "GET", &format!("{}/readyz", b.url()), &[], "").await;
    assert_eq!(ready.status, 503, "{}", ready.text());

    tokio::task::block_in_place(|| cluster.start_again());
    phase.store(2, Ordering::SeqCst);
    wait_until("accepted again on both nodes", || {
        accepted_again.iter().all(|n| n.load(Ordering::SeqCst) >= 3)
    })
    .await;
    phase.store(3, Ordering::SeqCst);
    for sender in senders {
        sender.await.expect("sender ran");
    }
    let accepted = accepted.lock().expect("accepted lock").clone();
    assert_all_delivered(&target, &accepted).await;
    agent.shutdown.cancel();
    a.stop().await;
    b.stop().await;
}
