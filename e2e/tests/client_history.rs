//! `relay-client events` and `relay-client replay` as a developer runs them: the real binary
//! against the real server, with webhooks sent through the relay to a real agent and target.

use hookrelay_e2e::*;
use relay_server::Config;

const BINARY_BODY: &[u8] = b"\xff\x00signed \xfe\x80 payload";

/// The lines of `relay-client events` output that list event `id`.
fn rows_with<'a>(stdout: &'a str, id: &str) -> Vec<&'a str> {
    stdout.lines().filter(|l| l.starts_with(id)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_lists_relayed_webhooks_newest_first() {
    let relay = start_server(Config::default()).await;
    let addr = relay.addr;
    let mut target = start_target().await;
    let _agent = start_agent(pinned_agent(
        &format!("http://{addr}"),
        "hist-events",
        &target.url,
    ))
    .await;
    let base = format!("http://{addr}/h/hist-events");
    let first = send(&client(), "POST", &format!("{base}/first"), &[], "one").await;
    assert_eq!(first.status, 201);
    let second = send(&client(), "PUT", &format!("{base}/second?x=1"), &[], "two").await;
    let (first, second) = (
        first.delivery().expect("delivery id"),
        second.delivery().expect("delivery id"),
    );
    next_seen(&mut target).await;
    next_seen(&mut target).await;

    let server = format!("http://{addr}");
    // Options after the subcommand here, before it in the other tests.
    let args = ["events", "--server", &server, "--channel", "hist-events"];
    let run = run_client_until(&args, |run| {
        run.stdout
            .lines()
            .filter(|l| l.contains(" delivered "))
            .count()
            == 2
    })
    .await;
    assert!(run.success, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID", "RECEIVED", "METHOD", "PATH", "TYPE", "STATUS", "CODE", "ATTEMPTS"
        ]
    );
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    let newest: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(newest[0], second, "newest first: {}", run.stdout);
    assert!(newest[1].ends_with('Z'), "RFC 3339 time: {}", lines[1]);
    assert_eq!(
        newest[2..],
        ["PUT", "/second?x=1", "-", "delivered", "201", "1"]
    );
    let oldest: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(oldest[0], first);
    assert_eq!(
        oldest[2..],
        ["POST", "/first", "-", "delivered", "201", "1"]
    );

    let limited = run_client(&[
        "events",
        "--limit",
        "1",
        "--server",
        &server,
        "--channel",
        "hist-events",
    ])
    .await;
    assert_eq!(rows_with(&limited.stdout, &second).len(), 1, "{limited:?}");
    assert!(rows_with(&limited.stdout, &first).is_empty(), "{limited:?}");
    assert!(
        limited.stdout.contains("--limit"),
        "more-events hint: {limited:?}"
    );

    let failed = run_client(&[
        "events",
        "--status",
        "failed",
        "--server",
        &server,
        "--channel",
        "hist-events",
    ])
    .await;
    assert!(failed.success, "{failed:?}");
    assert_eq!(failed.stdout, "No failed events in channel hist-events\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_type_shows_only_that_type_or_prefix() {
    let relay = start_server(Config::default()).await;
    let addr = relay.addr;
    let mut target = start_target().await;
    let _agent = start_agent(pinned_agent(
        &format!("http://{addr}"),
        "hist-types",
        &target.url,
    ))
    .await;
    let url = format!("http://{addr}/h/hist-types/gh");
    let mut ids = Vec::new();
    for (headers, body) in [
        (&[("x-github-event", &b"push"[..])][..], "{}"),
        (&[("x-github-event", b"pull_request")], "{}"),
        (&[("x-github-event", b"pull_request_review")], "{}"),
        // Spaces, `+`, `&` and `=` in a type reach the server's filter intact.
        (&[], r#"{"type":"a+b c&d=e"}"#),
        (&[], "untyped"),
    ] {
        let answer = send(&client(), "POST", &url, headers, body).await;
        assert_eq!(answer.status, 201, "{answer:?}");
        ids.push(answer.delivery().expect("delivery id"));
        next_seen(&mut target).await;
    }
    let [push, pull, review, odd, untyped] = &ids[..] else {
        unreachable!("five webhooks sent");
    };

    let server = format!("http://{addr}");
    let events = |pattern: &'static str| {
        let server = server.clone();
        async move {
            let run = run_client(&[
                "events",
                "--server",
                &server,
                "--channel",
                "hist-types",
                "--type",
                pattern,
            ])
            .await;
            assert!(run.success, "{run:?}");
            run.stdout
        }
    };
    let stdout = events("push").await;
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    let row: Vec<&str> = rows_with(&stdout, push)[0].split_whitespace().collect();
    assert_eq!(row[2..5], ["POST", "/gh", "push"], "{stdout}");

    let stdout = events("pull_request*").await;
    let listed: Vec<&str> = (stdout.lines().skip(1))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(listed, [review.as_str(), pull.as_str()], "{stdout}");

    let stdout = events("a+b c&d=e").await;
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert_eq!(rows_with(&stdout, odd).len(), 1, "{stdout}");
    assert!(rows_with(&stdout, untyped).is_empty(), "{stdout}");

    assert_eq!(
        events("issues").await,
        "No events of type issues in channel hist-types\n"
    );

    let run = run_client(&[
        "events",
        "--server",
        &server,
        "--channel",
        "hist-types",
        "--type",
        "pull_*",
    ])
    .await;
    assert!(run.success, "a prefix pattern: {run:?}");
    let run = run_client(&[
        "events",
        "--server",
        &server,
        "--channel",
        "hist-types",
        "--type",
        "pull*request",
    ])
    .await;
    assert!(!run.success, "{run:?}");
    assert!(
        run.stderr.contains("'pull*request'")
            && run.stderr.contains("--type <TYPE>")
            && run.stderr.contains("`*` may only end a pattern"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_delivers_the_event_again_through_the_agent() {
    let relay = start_server(Config::default()).await;
    let addr = relay.addr;
    let mut target = start_target().await;
    let _agent = start_agent(pinned_agent(
        &format!("http://{addr}"),
        "hist-replay",
        &target.url,
    ))
    .await;
    let url = format!("http://{addr}/h/hist-replay/github?x=1");
    let headers: [(&str, &[u8]); 1] = [("x-github-event", b"push")];
    let answer = send(&client(), "POST", &url, &headers, "{\"zen\":1}").await;
    let id = answer.delivery().expect("delivery id");
    let original = next_seen(&mut target).await;

    let server = format!("http://{addr}");
    let run = run_client(&[
        "--server",
        &server,
        "--channel",
        "hist-replay",
        "replay",
        &id,
    ])
    .await;
    assert!(run.success, "{run:?}");
    let fields: Vec<&str> = run.stdout.split_whitespace().collect();
    assert_eq!(fields.len(), 8, "one result line: {}", run.stdout);
    assert!(fields[0].ends_with('Z'), "{}", run.stdout);
    assert_eq!(fields[1..5], ["POST", "/github?x=1", "push", "201"]);
    assert!(fields[5].ends_with("ms"), "{}", run.stdout);
    assert_eq!(fields[6], id);
    assert_eq!(fields[7], "replay");

    let again = next_seen(&mut target).await;
    assert_eq!(again.method, "POST");
    assert_eq!(again.uri, "/github?x=1");
    assert_eq!(again.body, original.body);
    assert_eq!(again.header("x-github-event"), [b"push"]);
    assert_eq!(again.header("x-hookrelay-delivery"), [id.as_bytes()]);
    assert_eq!(again.header("x-hookrelay-attempt"), [b"replay"]);
}

/// A relay, an agent of `channel` forwarding to `relayed`, a second target `local` for
/// replays from here, and one webhook relayed already: a PATCH to `path` with a binary body
/// and binary, repeated headers.
struct Relayed {
    relay: TestServer,
    addr: std::net::SocketAddr,
    relayed: TestTarget,
    local: TestTarget,
    agent: TestAgent,
    /// The webhook's delivery id.
    id: String,
}

async fn relay_binary_patch(channel: &str, path: &str) -> Relayed {
    let relay = start_server(Config::default()).await;
    let addr = relay.addr;
    let mut relayed = start_target().await;
    let local = start_target().await;
    let agent = start_agent(pinned_agent(
        &format!("http://{addr}"),
        channel,
        &relayed.url,
    ))
    .await;
    let url = format!("http://{addr}/h/{channel}{path}");
    let headers: [(&str, &[u8]); 4] = [
        ("content-type", b"application/octet-stream"),
        ("x-signature", b"t=1,v1=\xfe\xff"),
        ("x-dup", b"1"),
        ("x-dup", b"2"),
    ];
    let answer = send(&client(), "PATCH", &url, &headers, BINARY_BODY).await;
    let id = answer.delivery().expect("delivery id");
    assert_eq!(next_seen(&mut relayed).await.body, BINARY_BODY);
    Relayed {
        relay,
        addr,
        relayed,
        local,
        agent,
        id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_with_forward_sends_the_stored_request_from_here_byte_for_byte() {
    let Relayed {
        relay: _relay,
        addr,
        relayed: _relayed,
        mut local,
        agent: _agent,
        id,
    } = relay_binary_patch("hist-local", "/stripe?a=1&b=%20").await;

    let server = format!("http://{addr}");
    let forward = format!("{}/local", local.url);
    let run = run_client(&[
        "--server",
        &server,
        "--channel",
        "hist-local",
        "replay",
        &id,
        "--forward",
        &forward,
    ])
    .await;
    assert!(run.success, "{run:?}");
    let fields: Vec<&str> = run.stdout.split_whitespace().collect();
    assert_eq!(
        fields[1..5],
        ["PATCH", "/stripe?a=1&b=%20", "-", "201"],
        "{}",
        run.stdout
    );
    assert_eq!(fields[6], id);
    assert!(
        run.stdout
            .ends_with(" replay (from here, not recorded on the relay)\n"),
        "{}",
        run.stdout
    );

    let seen = next_seen(&mut local).await;
    assert_eq!(seen.method, "PATCH");
    assert_eq!(seen.uri, "/local/stripe?a=1&b=%20");
    assert_eq!(seen.body, BINARY_BODY);
    assert_eq!(seen.header("content-type"), [b"application/octet-stream"]);
    assert_eq!(seen.header("x-signature"), [b"t=1,v1=\xfe\xff"]);
    assert_eq!(seen.header("x-dup"), [b"1", b"2"]);
    assert_eq!(seen.header("x-hookrelay-delivery"), [id.as_bytes()]);
    assert_eq!(seen.header("x-hookrelay-attempt"), [b"replay"]);
    let host = local.url.trim_start_matches("http://");
    assert_eq!(seen.header("host"), [host.as_bytes()]);
    let length = BINARY_BODY.len().to_string();
    assert_eq!(seen.header("content-length"), [length.as_bytes()]);

    // Not recorded: the server still knows only the live attempt.
    let detail = get_json(
        &client(),
        &format!("{server}/api/channels/hist-local/events/{id}"),
    )
    .await;
    assert_eq!(
        detail["attempts"].as_array().map(Vec::len),
        Some(1),
        "{detail}"
    );
}

/// The headers of a stored request as `(name, value)` text pairs, from the API's JSON.
fn header_pairs(detail: &serde_json::Value) -> Vec<(String, String)> {
    (detail["headers"].as_array().expect("a header list").iter())
        .map(|h| {
            let text = |key: &str| h[key].as_str().unwrap_or_default().to_owned();
            (text("name"), text("value"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_with_edits_delivers_them_as_a_new_event_and_keeps_the_original() {
    let relay = start_server(Config::default()).await;
    let addr = relay.addr;
    let mut target = start_target().await;
    let _agent = start_agent(pinned_agent(
        &format!("http://{addr}"),
        "hist-edit",
        &target.url,
    ))
    .await;
    let url = format!("http://{addr}/h/hist-edit/github?x=1");
    let headers: [(&str, &[u8]); 6] = [
        ("content-type", b"application/json"),
        ("x-github-event", b"push"),
        ("x-sig", b"old"),
        ("x-dup", b"1"),
        ("x-dup", b"2"),
        ("x-gone", b"bye"),
    ];
    let answer = send(&client(), "POST", &url, &headers, "{\"zen\":1}").await;
    let id = answer.delivery().expect("delivery id");
    let original = next_seen(&mut target).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let body_file = dir.path().join("body.bin");
    std::fs::write(&body_file, BINARY_BODY).expect("write the body file");
    let body_file = body_file.display().to_string();
    let server = format!("http://{addr}");
    let run = run_client(&[
        "--server",
        &server,
        "--channel",
        "hist-edit",
        "replay",
        &id,
        "--body-file",
        &body_file,
        "--header",
        "X-Sig: new",
        "--header",
        "x-dup: 3",
        "--header",
        "X-Gone:",
        "--header",
        "X-Added:  yes ",
        "--header",
        "X-GitHub-Event: issues",
    ])
    .await;
    assert!(run.success, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    let fields: Vec<&str> = lines[0].split_whitespace().collect();
    // The type is the new event's, derived again from the edited headers.
    assert_eq!(
        fields[1..5],
        ["POST", "/github?x=1", "issues", "201"],
        "{}",
        run.stdout
    );
    let new = fields[6];
    assert_ne!(new, id, "a new event: {}", run.stdout);
    assert_eq!(fields[7], "replay");
    assert_eq!(
        lines[1],
        format!("Stored as new event {new}, an edited replay of {id} (unchanged)")
    );

    let seen = next_seen(&mut target).await;
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("POST", "/github?x=1")
    );
    assert_eq!(seen.body, BINARY_BODY);
    let length = BINARY_BODY.len().to_string();
    assert_eq!(seen.header("content-length"), [length.as_bytes()]);
    assert_eq!(seen.header("x-sig"), [b"new"]);
    assert_eq!(seen.header("x-dup"), [b"3"]);
    assert!(seen.header("x-gone").is_empty(), "{:?}", seen.headers);
    assert_eq!(seen.header("x-added"), [b"yes"]);
    assert_eq!(seen.header("content-type"), [b"application/json"]);
    assert_eq!(seen.header("x-hookrelay-delivery"), [new.as_bytes()]);
    assert_eq!(seen.header("x-hookrelay-attempt"), [b"replay"]);
    // The type is derived again from the edited request.
    assert_eq!(seen.header("x-hookrelay-event-type"), [b"issues"]);
    assert_eq!(original.header("x-hookrelay-event-type"), [b"push"]);

    let api = format!("{server}/api/channels/hist-edit/events");
    let edited = get_json(&client(), &format!("{api}/{new}")).await;
    assert_eq!(edited["replay_of"], id.as_str(), "{edited}");
    assert_eq!(edited["event_type"], "issues");
    assert_eq!(edited["body_encoding"], "base64");
    assert_eq!(edited["body_bytes"], BINARY_BODY.len());
    let stored = header_pairs(&edited);
    assert!(
        stored.contains(&("content-length".to_owned(), length.clone())),
        "the stored copy has the new length: {stored:?}"
    );
    let before = get_json(&client(), &format!("{api}/{id}")).await;
    assert!(before["replay_of"].is_null(), "{before}");
    assert_eq!(before["event_type"], "push");
    assert_eq!(before["body"], "{\"zen\":1}");
    assert_eq!(before["attempts"].as_array().map(Vec::len), Some(1));
    let pairs = header_pairs(&before);
    assert!(
        pairs.contains(&("x-sig".to_owned(), "old".to_owned())),
        "{pairs:?}"
    );
    assert!(
        pairs.contains(&("x-gone".to_owned(), "bye".to_owned())),
        "{pairs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_with_edits_and_forward_edits_here_and_stores_nothing() {
    let Relayed {
        relay: _relay,
        addr,
        relayed: _relayed,
        mut local,
        agent: _agent,
        id,
    } = relay_binary_patch("hist-edit-here", "/stripe?a=1").await;

    let dir = tempfile::tempdir().expect("tempdir");
    let body_file = dir.path().join("body.txt");
    std::fs::write(&body_file, "edited\r\n").expect("write the body file");
    let body_file = body_file.display().to_string();
    let server = format!("http://{addr}");
    let run = run_client(&[
        "--server",
        &server,
        "--channel",
        "hist-edit-here",
        "replay",
        &id,
        "--forward",
        &local.url,
        "--body-file",
        &body_file,
        "--header",
        "X-Dup:",
        "--header",
        "Content-Type: text/plain",
    ])
    .await;
    assert!(run.success, "{run:?}");
    assert!(
        run.stdout
            .ends_with(" replay (from here, not recorded on the relay)\n"),
        "one line, no new event: {}",
        run.stdout
    );
    let seen = next_seen(&mut local).await;
    assert_eq!(
        (seen.method.as_str(), seen.uri.as_str()),
        ("PATCH", "/stripe?a=1")
    );
    assert_eq!(seen.body, "edited\r\n");
    assert_eq!(seen.header("content-length"), [b"8"]);
    assert_eq!(seen.header("content-type"), [b"text/plain"]);
    assert_eq!(seen.header("x-signature"), [b"t=1,v1=\xfe\xff"]);
    assert!(seen.header("x-dup").is_empty(), "{:?}", seen.headers);
    assert_eq!(seen.header("x-hookrelay-delivery"), [id.as_bytes()]);

    let page = get_json(
        &client(),
        &format!("{server}/api/channels/hist-edit-here/events"),
    )
    .await;
    let events = page["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "nothing stored: {page}");
    assert_eq!(events[0]["attempts"], 1, "nothing recorded: {page}");

    let run = run_client(&[
        "--server",
        &server,
        "--channel",
        "hist-edit-here",
        "replay",
        &id,
        "--header",
        "X-Dup 1",
    ])
    .await;
    assert!(!run.success, "{run:?}");
    assert!(
        run.stderr.contains("'X-Dup 1'")
            && run.stderr.contains("--header <NAME: VALUE>")
            && run.stderr.contains("no `:` in it"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_without_an_agent_says_so_and_suggests_forward() {
    let relay = start_server(Config::default()).await;
    let addr = relay.addr;
    let mut target = start_target().await;
    let agent = start_agent(pinned_agent(
        &format!("http://{addr}"),
        "hist-gone",
        &target.url,
    ))
    .await;
    let answer = send(
        &client(),
        "POST",
        &format!("http://{addr}/h/hist-gone"),
        &[],
        "x",
    )
    .await;
    let id = answer.delivery().expect("delivery id");
    next_seen(&mut target).await;
    agent.shutdown.cancel();
    agent
        .task
        .await
        .expect("agent task not panicked")
        .expect("agent stops cleanly");

    let server = format!("http://{addr}");
    let args = ["--server", &server, "--channel", "hist-gone", "replay", &id];
    // The server may take a moment to see the agent's connection close.
    let run = run_client_until(&args, |run| run.stderr.contains("no agent")).await;
    assert!(!run.success, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(
        run.stderr
            .contains("no agent connected to channel hist-gone"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--forward URL"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_event_and_bad_query_are_errors_with_the_servers_reason() {
    let relay = start_server(Config::default()).await;
    let addr = relay.addr;
    let server = format!("http://{addr}");
    let id = "5f0c1a2b-0000-4000-8000-000000000001";
    let run = run_client(&["replay", id, "--server", &server, "--channel", "nothing"]).await;
    assert!(!run.success, "{run:?}");
    assert_eq!(
        run.stderr,
        format!("error: no event {id} in channel nothing\n")
    );

    let run = run_client(&[
        "events",
        "--limit",
        "100000",
        "--server",
        &server,
        "--channel",
        "nothing",
    ])
    .await;
    assert!(!run.success, "{run:?}");
    assert!(
        run.stderr
            .starts_with("error: the server answered 400 Bad Request: "),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("limit"),
        "server's reason: {}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_token_is_an_error_and_the_right_one_works() {
    let config = Config {
        agent_token: Some("right".to_owned()),
        ..Config::default()
    };
    let relay = start_server(config).await;
    let addr = relay.addr;
    let server = format!("http://{addr}");
    for token in [&["--token", "wrong"][..], &[]] {
        let mut args = vec!["events", "--server", &server, "--channel", "locked"];
        args.extend_from_slice(token);
        let run = run_client(&args).await;
        assert!(!run.success, "{run:?}");
        assert!(
            run.stderr.contains("the token is missing or wrong"),
            "{}",
            run.stderr
        );
    }
    let run = run_client(&[
        "--token",
        "right",
        "events",
        "--server",
        &server,
        "--channel",
        "locked",
    ])
    .await;
    assert!(run.success, "{run:?}");
    assert_eq!(run.stdout, "No events in channel locked\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_replay_find_the_channel_from_its_token_alone() {
    let relay = start_server(closed()).await;
    let token = create_channel(&relay, "by-token", serde_json::json!({})).await;
    let server = relay.url();
    // No agent: the webhook is stored and queued.
    let answer = send(
        &client(),
        "POST",
        &format!("{server}/h/by-token/x"),
        &[],
        "queued",
    )
    .await;
    assert_eq!(answer.status, 202);
    let id = answer.delivery().expect("delivery id");

    let run = run_client(&["events", "--server", &server, "--token", &token]).await;
    assert!(run.success, "{run:?}");
    let rows = rows_with(&run.stdout, &id);
    assert_eq!(rows.len(), 1, "{}", run.stdout);
    assert!(rows[0].contains(" queued "), "{}", rows[0]);

    let mut local = start_target().await;
    let run = run_client(&[
        "replay",
        &id,
        "--server",
        &server,
        "--token",
        &token,
        "--forward",
        &local.url,
    ])
    .await;
    assert!(run.success, "{run:?}");
    assert_eq!(next_seen(&mut local).await.body, "queued");

    let run = run_client(&["events", "--server", &server, "--token", "hrt_wrong"]).await;
    assert!(!run.success, "{run:?}");
    assert_eq!(
        run.stderr,
        "error: no channel on the server has this token: check --token, or pass --channel NAME too (the admin token and open mode's agent token name no channel)\n"
    );
}
