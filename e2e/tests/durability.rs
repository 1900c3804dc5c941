//! Durability as an operator would test it: the `relay-server` binary is killed with SIGKILL
//! and restarted on the same data dir, agents crash and come back, and every webhook the
//! server answered 2xx must still reach the target. (A data dir the server cannot use is
//! relay-server's own `durability` test.)
//!
//! The server runs as a real process (a crash is a crash of the process, not a dropped
//! future); agents and targets run in-process, on 127.0.0.1.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use bytes::Bytes;
use hookrelay_e2e::rng::Rng;
use hookrelay_e2e::*;
use http_body_util::{BodyExt, Full};

/// Bound on one request of a sender; a request to a killed server fails long before.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the binary on a fresh port with its store in `data_dir`; returns once it has
/// logged that it listens (after the store is open). The wait blocks this worker thread only:
/// the senders and agents go on on the other.
fn start_process(data_dir: &Path, extra_args: &[&str]) -> ServerProcess {
    let dir = data_dir.to_str().expect("UTF-8 data dir");
    let mut args = vec!["--listen", "127.0.0.1:0", "--data-dir", dir];
    args.extend_from_slice(extra_args);
    tokio::task::block_in_place(|| spawn_server(&args, &[]))
}

/// POSTs `body` and reads the whole answer; `Err` when no whole answer came (the server was
/// killed, or was not there).
async fn post(
    client: &TestClient,
    url: &str,
    headers: &[(&str, &[u8])],
    body: Bytes,
) -> Result<Answer, String> {
    try_send_body(
        client,
        "POST",
        url,
        headers,
        Full::new(body).boxed(),
        REQUEST_TIMEOUT,
    )
    .await
}

fn seen_id(seen: &Seen) -> String {
    match seen.header("x-hookrelay-delivery").as_slice() {
        [id] => String::from_utf8(id.to_vec()).expect("delivery id is ASCII"),
        other => panic!("target got {} delivery ids: {other:?}", other.len()),
    }
}

/// Every event of `channel` (in `status`, if given) as id -> status, paging through the
/// history API with `before`.
async fn history(
    client: &TestClient,
    server: &str,
    channel: &str,
    status: Option<&str>,
) -> HashMap<String, String> {
    let mut events = HashMap::new();
    let mut before: Option<String> = None;
    loop {
        let mut url = format!("{server}/api/channels/{channel}/events?limit=500");
        if let Some(status) = status {
            url.push_str(&format!("&status={status}"));
        }
        if let Some(before) = &before {
            url.push_str(&format!("&before={before}"));
        }
        let page = get_json(client, &url).await;
        for event in page["events"].as_array().expect("events array") {
            let id = event["id"].as_str().expect("event id").to_owned();
            let status = event["status"].as_str().expect("event status").to_owned();
            assert!(
                events.insert(id.clone(), status).is_none(),
                "event {id} listed twice"
            );
        }
        match page["next_before"].as_str() {
            Some(next) => before = Some(next.to_owned()),
            None => return events,
        }
    }
}

/// A body unique to `i`: JSON text, bytes that are not UTF-8, and one of 1 MiB that crosses
/// several frames.
fn crash_body(i: usize) -> Bytes {
    let mut body = (i as u32).to_le_bytes().to_vec();
    match i % 3 {
        0 => body = format!(r#"{{"event":{i},"text":"h\u00e9llo"}}"#).into_bytes(),
        1 => body.extend((0..(i * 37 % 1500)).map(|k| (k.wrapping_mul(2_654_435_761) >> 7) as u8)),
        _ => body.extend_from_slice(&[0xff, 0xfe, 0x00, 0xc3, 0x28, 0x80]),
    }
    if i == 50 {
        body.extend((0..1024 * 1024u32).map(|k| (k.wrapping_mul(40_503) >> 5) as u8));
    }
    Bytes::from(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_with_sigkill_loses_nothing_accepted() {
    const QUEUED: usize = 100;
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--retry-min", "50ms", "--retry-max", "200ms"];
    let channel = "crash-test";
    let client = client();
    let server = start_process(dir.path(), &args);

    // (id, path and query, body) of every webhook that must arrive, in arrival order.
    let mut expected: Vec<(String, String, Bytes)> = Vec::new();
    for i in 0..QUEUED {
        let uri = format!("/hold/{i}?n={i}");
        let body = crash_body(i);
        let url = format!("{}/h/{channel}{uri}", server.url());
        let seq = i.to_string();
        let headers: [(&str, &[u8]); 2] = [
            ("content-type", b"application/octet-stream"),
            ("x-seq", seq.as_bytes()),
        ];
        let answer = post(&client, &url, &headers, body.clone())
            .await
            .expect("the server answers");
        assert_eq!(answer.status, 202, "#{i}: {:?}", answer.body);
        let json = answer.json();
        assert_eq!(json["status"], "queued", "#{i}");
        let id = json["id"].as_str().expect("id").to_owned();
        assert_eq!(answer.delivery().as_deref(), Some(id.as_str()), "#{i}");
        expected.push((id, uri, body));
    }
    let distinct: HashSet<_> = expected.iter().map(|(_, _, body)| body).collect();
    assert_eq!(distinct.len(), QUEUED, "bodies are distinct");

    // An agent connects; its target holds every request. The dispatcher takes the oldest
    // queued webhook and waits on it; one more webhook goes out live and waits too.
    let mut held = start_target().await;
    let first_agent = start_crashable_agent(pinned_agent(&server.url(), channel, &held.url)).await;
    let oldest = next_seen(&mut held).await;
    assert_eq!(seen_id(&oldest), expected[0].0, "the oldest goes first");
    let live_uri = "/hold/live?n=live".to_owned();
    let live_body = Bytes::from_static(b"\x00live\xff webhook in flight at the crash");
    let live = tokio::spawn({
        let client = client.clone();
        let url = format!("{}/h/{channel}{live_uri}", server.url());
        let body = live_body.clone();
        async move { post(&client, &url, &[], body).await }
    });
    let in_flight = next_seen(&mut held).await;
    let live_id = seen_id(&in_flight);
    assert_eq!(in_flight.body, live_body);
    let live_event = get_json(
        &client,
        &format!("{}/api/channels/{channel}/events/{live_id}", server.url()),
    )
    .await;
    assert_eq!(live_event["status"], "delivering", "{live_event}");
    expected.push((live_id, live_uri, live_body));

    server.sigkill();
    drop(first_agent);
    let live_answer = live.await.expect("sender task not panicked");
    assert!(
        live_answer.is_err(),
        "the sender of the webhook in flight got no answer: {live_answer:?}"
    );

    // Same data dir, new port, a target that answers at once.
    let server = start_process(dir.path(), &args);
    let mut target = start_target().await;
    target.release();
    let _agent = start_crashable_agent(pinned_agent(&server.url(), channel, &target.url)).await;
    for (n, (id, uri, body)) in expected.iter().enumerate() {
        let seen = next_seen(&mut target).await;
        assert_eq!(&seen_id(&seen), id, "#{n} in arrival order");
        assert_eq!(&seen.uri, uri, "#{n}");
        assert_eq!(seen.method, "POST", "#{n}");
        assert!(seen.body == body, "#{n}: body not byte-exact");
        if n < QUEUED {
            assert_eq!(seen.header("x-seq"), [n.to_string().as_bytes()], "#{n}");
        }
    }

    let events = format!("{}/api/channels/{channel}/events", server.url());
    poll_json(
        &client,
        &format!("{events}?status=delivered&limit=500"),
        |doc| doc["events"].as_array().map_or(0, Vec::len) == expected.len(),
    )
    .await;
    let all = history(&client, &server.url(), channel, None).await;
    assert_eq!(all.len(), expected.len(), "{all:?}");
    for (id, _, _) in &expected {
        assert_eq!(all[id], "delivered", "{id}");
    }
}

/// The seed of the chaos schedule: `HOOKRELAY_CHAOS_SEED` to replay one, else the clock.
fn chaos_seed() -> u64 {
    if let Ok(seed) = std::env::var("HOOKRELAY_CHAOS_SEED") {
        return seed.parse().expect("HOOKRELAY_CHAOS_SEED is a u64");
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
}

/// What the counting target got of one delivery id.
struct Arrival {
    times: u32,
    body: Bytes,
    /// A redelivery brought a different body.
    changed: bool,
}

type Arrivals = Arc<Mutex<HashMap<String, Arrival>>>;

/// A target that answers 200 at once and counts what it got per delivery id.
async fn start_counting_target() -> (String, Arrivals) {
    async fn handler(State(arrivals): State<Arrivals>, req: Request) -> (StatusCode, &'static str) {
        let (parts, body) = req.into_parts();
        let id = parts
            .headers
            .get("x-hookrelay-delivery")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let Ok(body) = body.collect().await else {
            return (StatusCode::INTERNAL_SERVER_ERROR, "incomplete body");
        };
        let body = body.to_bytes();
        let mut arrivals = arrivals.lock().expect("arrivals lock");
        let arrival = arrivals.entry(id).or_insert_with(|| Arrival {
            times: 0,
            body: body.clone(),
            changed: false,
        });
        arrival.times += 1;
        arrival.changed |= arrival.body != body;
        (StatusCode::OK, "ok")
    }
    let arrivals = Arrivals::default();
    let app = Router::new()
        .fallback(handler)
        .with_state(Arc::clone(&arrivals));
    let addr = serve_local(app).await;
    (format!("http://{addr}"), arrivals)
}

/// What the senders were told.
#[derive(Default)]
struct Outcomes {
    /// Answered 2xx: id -> body sent. These must all arrive.
    accepted: HashMap<String, Bytes>,
    /// Answered with an error but named a delivery id: id -> status.
    refused: HashMap<String, u16>,
    /// No (whole) answer: the server was killed or down. Maybe stored, maybe not.
    unanswered: usize,
    statuses: HashMap<u16, usize>,
}

/// The server process and the agents serving each channel, all replaceable at any time.
struct Cluster {
    data_dir: PathBuf,
    args: Vec<String>,
    target: String,
    channels: Vec<String>,
    server: Option<ServerProcess>,
    /// Where senders post: the current server's URL (stale while it is down).
    url: Arc<Mutex<String>>,
    agents: Vec<Vec<CrashableAgent>>,
    server_kills: usize,
    agent_kills: usize,
}

impl Cluster {
    async fn start_server(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let server = start_process(&self.data_dir, &args);
        *self.url.lock().expect("url lock") = server.url();
        self.server = Some(server);
    }

    fn server_url(&self) -> String {
        self.server.as_ref().expect("server running").url()
    }

    async fn add_agent(&mut self, channel: usize) {
        let config = pinned_agent(&self.server_url(), &self.channels[channel], &self.target);
        let agent = start_crashable_agent(config).await;
        self.agents[channel].push(agent);
    }

    fn kill_agent(&mut self, channel: usize, rng: &mut Rng) {
        let agents = &mut self.agents[channel];
        if !agents.is_empty() {
            let victim = rng.below(agents.len() as u64) as usize;
            drop(agents.swap_remove(victim));
            self.agent_kills += 1;
        }
    }

    /// SIGKILLs the server, leaves it down for `down`, restarts it on the same data dir and
    /// gives each channel as many agents as it had (the old ones are aborted: they would
    /// keep knocking at the dead port).
    async fn crash_server(&mut self, down: Duration) {
        if let Some(server) = self.server.take() {
            server.sigkill();
            self.server_kills += 1;
        }
        let counts: Vec<usize> = self.agents.iter().map(Vec::len).collect();
        for agents in &mut self.agents {
            agents.clear();
        }
        tokio::time::sleep(down).await;
        self.start_server().await;
        for (channel, count) in counts.into_iter().enumerate() {
            for _ in 0..count {
                self.add_agent(channel).await;
            }
        }
    }
}

async fn run_sender(
    sender: usize,
    seed: u64,
    events: usize,
    channels: Vec<String>,
    url: Arc<Mutex<String>>,
    outcomes: Arc<Mutex<Outcomes>>,
) {
    let client = client();
    let mut rng = Rng::new(seed, 1000 + sender as u64);
    for i in 0..events {
        let channel = &channels[rng.below(channels.len() as u64) as usize];
        let mut body = format!("sender {sender} event {i} ").into_bytes();
        body.extend((0..rng.below(600)).map(|_| rng.next_u64() as u8));
        let body = Bytes::from(body);
        let base = url.lock().expect("url lock").clone();
        let answer = post(
            &client,
            &format!("{base}/h/{channel}/s{sender}/{i}"),
            &[("x-sender", sender.to_string().as_bytes())],
            body.clone(),
        )
        .await;
        {
            let mut outcomes = outcomes.lock().expect("outcomes lock");
            match answer {
                Ok(answer) => {
                    *outcomes.statuses.entry(answer.status).or_default() += 1;
                    let id = answer.delivery();
                    if (200..300).contains(&answer.status) {
                        let id = id.expect("a 2xx answer names its delivery id");
                        if answer.status == 202 {
                            assert_eq!(answer.json()["id"], id.as_str());
                        }
                        assert!(outcomes.accepted.insert(id, body).is_none(), "id reused");
                    } else if let Some(id) = id {
                        outcomes.refused.insert(id, answer.status);
                    }
                }
                Err(_) => outcomes.unanswered += 1,
            }
        }
        tokio::time::sleep(rng.millis(0, 12)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_every_accepted_event_reaches_the_target() {
    const SENDERS: usize = 4;
    const EVENTS_PER_SENDER: usize = 650;
    let seed = chaos_seed();
    eprintln!("chaos seed {seed} (replay the schedule with HOOKRELAY_CHAOS_SEED={seed})");
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let (target, arrivals) = start_counting_target().await;
    let channels = vec!["chaos-a".to_owned(), "chaos-b".to_owned()];
    let mut cluster = Cluster {
        data_dir: dir.path().to_owned(),
        args: [
            "--fsync",
            "false",
            "--timeout",
            "5",
            "--retry-min",
            "50ms",
            "--retry-max",
            "500ms",
            "--retry-for",
            "1h",
        ]
        .map(str::to_owned)
        .to_vec(),
        target,
        channels: channels.clone(),
        server: None,
        url: Arc::default(),
        agents: vec![Vec::new(), Vec::new()],
        server_kills: 0,
        agent_kills: 0,
    };
    cluster.start_server().await;

    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            tokio::spawn(run_sender(
                sender,
                seed,
                EVENTS_PER_SENDER,
                channels.clone(),
                Arc::clone(&cluster.url),
                Arc::clone(&outcomes),
            ))
        })
        .collect();
    let senders_done = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn({
        let done = Arc::clone(&senders_done);
        async move {
            for sender in senders {
                sender.await.expect("sender not panicked");
            }
            done.store(true, Ordering::SeqCst);
        }
    });

    // The chaos: while the senders send, agents come and go and the server is killed.
    let mut rng = Rng::new(seed, 0);
    let sending_deadline = Instant::now() + Duration::from_secs(30);
    while !senders_done.load(Ordering::SeqCst) {
        assert!(Instant::now() < sending_deadline, "senders did not finish");
        tokio::time::sleep(rng.millis(20, 250)).await;
        let channel = rng.below(channels.len() as u64) as usize;
        match rng.below(13) {
            0..=3 => cluster.kill_agent(channel, &mut rng),
            4..=6 if cluster.agents[channel].len() < 2 => cluster.add_agent(channel).await,
            7..=9 => {
                cluster.kill_agent(channel, &mut rng);
                cluster.add_agent(channel).await;
            }
            10 | 11 => {
                let down = rng.millis(0, 250);
                cluster.crash_server(down).await;
            }
            _ => {}
        }
    }
    watcher.await.expect("watcher not panicked");

    // Calm: one agent per channel, then wait until nothing is queued or being delivered.
    for channel in 0..channels.len() {
        cluster.agents[channel].clear();
        cluster.add_agent(channel).await;
    }
    let client = client();
    let server = cluster.server_url();
    let settle_deadline = Instant::now() + DEADLINE;
    loop {
        let mut pending = 0;
        for channel in &channels {
            for status in ["queued", "delivering"] {
                pending += history(&client, &server, channel, Some(status)).await.len();
            }
        }
        if pending == 0 {
            break;
        }
        assert!(
            Instant::now() < settle_deadline,
            "{pending} events still queued or delivering"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes lock"));
    let arrivals = std::mem::take(&mut *arrivals.lock().expect("arrivals lock"));
    let mut stored: HashMap<String, String> = HashMap::new();
    let mut delivered: HashSet<String> = HashSet::new();
    for channel in &channels {
        stored.extend(history(&client, &server, channel, None).await);
        delivered.extend(
            history(&client, &server, channel, Some("delivered"))
                .await
                .into_keys(),
        );
    }
    let failed: HashSet<&String> = stored
        .iter()
        .filter(|(_, status)| *status == "failed")
        .map(|(id, _)| id)
        .collect();
    let redelivered = arrivals.values().filter(|a| a.times > 1).count();
    eprintln!(
        "chaos: {} s, {} server kills, {} agent kills; accepted {}, refused {}, unanswered {}, \
         answers {:?}; stored {}, delivered {}, failed {}, target saw {} ids ({} more than once)",
        started.elapsed().as_secs_f32(),
        cluster.server_kills,
        cluster.agent_kills,
        outcomes.accepted.len(),
        outcomes.refused.len(),
        outcomes.unanswered,
        outcomes.statuses,
        stored.len(),
        delivered.len(),
        failed.len(),
        arrivals.len(),
        redelivered,
    );

    assert!(
        !arrivals.contains_key(""),
        "the target got a request without a delivery id"
    );
    for (id, body) in &outcomes.accepted {
        let arrival = arrivals
            .get(id)
            .unwrap_or_else(|| panic!("accepted event {id} never reached the target"));
        assert!(arrival.body == body, "{id}: body not byte-exact");
        assert!(!arrival.changed, "{id}: a redelivery changed the body");
        assert_eq!(
            stored.get(id).map(String::as_str),
            Some("delivered"),
            "accepted event {id}"
        );
    }
    for id in arrivals.keys() {
        assert!(
            stored.contains_key(id),
            "{id} reached the target but is not stored"
        );
    }
    for id in &delivered {
        assert!(
            arrivals.contains_key(id),
            "{id} is delivered but the target never saw it"
        );
    }
    for id in &failed {
        assert!(
            !outcomes.accepted.contains_key(*id),
            "{id} was answered 2xx but is failed"
        );
    }
    // Everything the target saw is delivered, except live deliveries whose agent died after
    // the target got them: those are failed, and their senders were told.
    let seen_and_failed = arrivals.keys().filter(|id| failed.contains(id)).count();
    assert_eq!(delivered.len(), arrivals.len() - seen_and_failed);
    assert!(
        outcomes.accepted.len() > 1000,
        "too few accepted webhooks to mean much: {}",
        outcomes.accepted.len()
    );
    assert!(cluster.server_kills > 0, "the server was never killed");
}

#[test]
fn a_second_server_on_a_data_dir_in_use_refuses_to_start_and_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("UTF-8 data dir");
    let first = spawn_server(&["--listen", "127.0.0.1:0", "--data-dir", data], &[]);
    let mut second = std::process::Command::new(server_binary())
        .args(["--listen", "127.0.0.1:0", "--data-dir", data])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("relay-server starts");
    let status = wait_exit(&mut second);
    let mut stderr = String::new();
    std::io::Read::read_to_string(
        &mut second.stderr.take().expect("piped stderr"),
        &mut stderr,
    )
    .expect("read stderr");
    assert!(!status.success(), "{stderr}");
    let pid = first.child.id();
    assert!(
        stderr.contains(&format!(
            "data dir {data} is in use by another relay-server (process {pid})"
        )),
        "{stderr}"
    );
    drop(first);
}
