//! The `relay-client` binary as a developer runs it: the forwarding line, one line per
//! delivery (and the target's answer under it with `--print-body`), a clean exit on SIGINT,
//! and a clear error for a refused token.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};

use hookrelay_e2e::*;

/// Sends a raw HTTP/1.1 POST and returns the status line.
fn post(url_addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(url_addr).expect("connect");
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: {url_addr}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi"
    );
    stream.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    stream.read_to_string(&mut out).expect("read");
    out.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_the_public_url_and_one_line_per_delivery() {
    let relay = start_server(relay_server::Config::default()).await;
    let addr = relay.addr;
    let target = start_std_target();
    let (mut child, lines) = spawn_agent(addr, target, "cli-test", &[]);
    let forwarding = line_matching(&lines, |l| l.starts_with("Forwarding"));
    assert_eq!(
        forwarding,
        format!("Forwarding http://{addr}/h/cli-test -> http://{target}")
    );

    let status =
        tokio::task::spawn_blocking(move || post(&addr.to_string(), "/h/cli-test/github?x=1"))
            .await
            .expect("post");
    assert_eq!(status, "HTTP/1.1 202 Accepted");
    let delivery = line_matching(&lines, |l| l.contains(" POST "));
    let fields: Vec<&str> = delivery.split_whitespace().collect();
    assert_eq!(
        fields[1..5],
        ["POST", "/github?x=1", "-", "202"],
        "no event type: {delivery}"
    );
    assert!(
        fields[0].ends_with('Z') && fields[5].ends_with("ms"),
        "{delivery}"
    );
    assert_eq!(fields[6].len(), 36, "delivery id: {delivery}");

    interrupt(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn print_body_shows_the_start_of_the_targets_answer_under_its_line() {
    let relay = start_server(relay_server::Config::default()).await;
    let addr = relay.addr;
    // 16 bytes of text with an escape sequence, then 200,000 more: the answer goes back in
    // several slices, and what is shown is cut at 4 KiB.
    let mut answer = b"thanks\n\x1b[31mred\n".to_vec();
    answer.resize(16 + 200_000, b'x');
    let target = start_std_target_answering("200 OK", answer);
    let (mut child, lines) = spawn_agent(addr, target, "printed", &["--print-body"]);
    line_matching(&lines, |l| l.starts_with("Forwarding"));

    let status = tokio::task::spawn_blocking(move || post(&addr.to_string(), "/h/printed/gh"))
        .await
        .expect("post");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let delivery = line_matching(&lines, |l| l.contains(" POST "));
    let fields: Vec<&str> = delivery.split_whitespace().collect();
    assert_eq!(fields[1..5], ["POST", "/gh", "-", "200"], "{delivery}");
    let body: Vec<String> = (0..4)
        .map(|_| line_matching(&lines, |l| l.starts_with("  ")))
        .collect();
    assert_eq!(
        body,
        [
            "  thanks".to_owned(),
            "  \\u{1b}[31mred".to_owned(),
            format!("  {}", "x".repeat(4096 - 16)),
            "  ... (195,920 more bytes)".to_owned(),
        ]
    );
    interrupt(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_serves_the_page_on_the_address_it_prints() {
    let relay = start_server(relay_server::Config::default()).await;
    let addr = relay.addr;
    let target = start_std_target();
    let (mut child, lines) = spawn_agent(addr, target, "inspected", &["--inspect", "127.0.0.1:0"]);
    let line = line_matching(&lines, |l| l.starts_with("Inspect deliveries at "));
    let url = line
        .strip_prefix("Inspect deliveries at ")
        .expect("prefix")
        .to_owned();
    assert!(url.ends_with("/c/inspected"), "{line}");
    let page = send(&client(), "GET", &url, &[], "").await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("inspector"));
    interrupt(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_token_exits_with_an_error() {
    let config = relay_server::Config {
        agent_token: Some("right".to_owned()),
        ..relay_server::Config::default()
    };
    let relay = start_server(config).await;
    let addr = relay.addr;
    let (mut child, lines) = spawn_client(&[
        "--server",
        &format!("http://{addr}"),
        "--forward",
        "http://127.0.0.1:9",
        "--token",
        "wrong",
    ]);
    let error = line_matching(&lines, |l| l.starts_with("error:"));
    assert!(error.contains("missing or wrong agent token"), "{error}");
    assert!(!wait_exit(&mut child).success());
}

/// A target on a std thread that reports each request on `got` and answers it 200 only once
/// `release` says so, to hold a delivery in flight.
fn start_holding_target() -> (
    SocketAddr,
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::Sender<()>,
) {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (got_tx, got) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = got_tx.send(());
            if release_rx.recv_timeout(DEADLINE).is_err() {
                break;
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (addr, got, release)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_says_it_drains_the_deliveries_in_flight_then_that_it_stopped() {
    let relay = start_server(relay_server::Config::default()).await;
    let addr = relay.addr;
    let (target, got, release) = start_holding_target();
    let (mut child, lines) = spawn_agent(addr, target, "draining", &[]);
    line_matching(&lines, |l| l.starts_with("Forwarding"));

    let post = tokio::task::spawn_blocking(move || post(&addr.to_string(), "/h/draining/slow"));
    got.recv_timeout(DEADLINE)
        .expect("the target has the delivery");
    signal(&child, "INT");
    let draining = line_matching(&lines, |l| l.starts_with("Stopping"));
    assert_eq!(
        draining,
        "Stopping: waiting for 1 delivery in flight (up to 30s)"
    );
    release.send(()).expect("target waits");
    let delivered = line_matching(&lines, |l| l.contains(" POST "));
    assert!(delivered.contains(" /slow - 200 "), "{delivered}");
    assert_eq!(
        line_matching(&lines, |l| l.starts_with("Stopped")),
        "Stopped"
    );
    assert!(wait_exit(&mut child).success());
    assert_eq!(post.await.expect("post"), "HTTP/1.1 200 OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_shutdown_is_told_in_plain_words_with_the_relays_address() {
    let relay = start_server(relay_server::Config::default()).await;
    let addr = relay.addr;
    let target = start_std_target();
    let (mut child, lines) = spawn_agent(addr, target, "restarted", &[]);
    line_matching(&lines, |l| l.starts_with("Forwarding"));
    relay.shutdown.cancel();
    let gone = line_matching(&lines, |l| l.starts_with("Disconnected"));
    let prefix = format!(
        "Disconnected: the relay at http://{addr} is shutting down (1001); reconnecting in "
    );
    assert!(gone.starts_with(&prefix), "{gone}");
    let retry = line_matching(&lines, |l| l.starts_with("Cannot reach"));
    assert!(
        retry.starts_with(&format!("Cannot reach the relay at http://{addr} (")),
        "{retry}"
    );
    signal(&child, "INT");
    assert_eq!(
        line_matching(&lines, |l| l.starts_with("Stopped")),
        "Stopped"
    );
    assert!(wait_exit(&mut child).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_deliveries_are_marked_and_long_paths_cut_in_their_lines() {
    let relay = start_server(relay_server::Config::default()).await;
    let addr = relay.addr;
    let long = format!("/{}", "p".repeat(10 * 1024));
    let path = format!("/h/marked{long}");
    let status = tokio::task::spawn_blocking(move || post(&addr.to_string(), &path))
        .await
        .expect("post");
    assert_eq!(status, "HTTP/1.1 202 Accepted", "no agent: queued");
    let target = start_std_target();
    let (mut child, lines) = spawn_agent(addr, target, "marked", &[]);
    let delivery = line_matching(&lines, |l| l.contains(" POST "));
    let fields: Vec<&str> = delivery.split_whitespace().collect();
    assert_eq!(fields.len(), 8, "{delivery}");
    assert_eq!(fields[2], format!("{}...", &long[..77]));
    assert_eq!(fields[3..5], ["-", "202"]);
    assert_eq!(fields[7], "queued");
    interrupt(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_several_servers_the_agent_moves_to_the_next_when_one_fails_or_goes() {
    let b = start_server(relay_server::Config::default()).await;
    let c = start_server(relay_server::Config::default()).await;
    // Nothing listens on the first: the agent tries it, then the next.
    let dead = StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let target = start_std_target();
    let (b_url, c_url) = (b.url(), c.url());
    let (mut child, lines) = spawn_agent(
        dead,
        target,
        "nodes",
        &["--server", &format!("{b_url},{c_url}")],
    );
    let unreachable = line_matching(&lines, |l| l.starts_with("Cannot reach"));
    assert!(
        unreachable.contains(&format!("http://{dead}")),
        "{unreachable}"
    );
    let forwarding = line_matching(&lines, |l| l.starts_with("Forwarding"));
    assert!(
        forwarding.starts_with(&format!("Forwarding {b_url}/h/nodes ")),
        "{forwarding}"
    );
    let b_addr = b.addr.to_string();
    let status = tokio::task::spawn_blocking(move || post(&b_addr, "/h/nodes/one"))
        .await
        .expect("post");
    assert_eq!(status, "HTTP/1.1 202 Accepted");
    line_matching(&lines, |l| l.contains(" /one "));

    // The node it is on goes away: it reconnects to the next one.
    b.stop().await;
    let forwarding = line_matching(&lines, |l| l.starts_with("Forwarding"));
    assert!(
        forwarding.starts_with(&format!("Forwarding {c_url}/h/nodes ")),
        "{forwarding}"
    );
    let c_addr = c.addr.to_string();
    let status = tokio::task::spawn_blocking(move || post(&c_addr, "/h/nodes/two"))
        .await
        .expect("post");
    assert_eq!(status, "HTTP/1.1 202 Accepted");
    line_matching(&lines, |l| l.contains(" /two "));
    interrupt(&mut child);
}
