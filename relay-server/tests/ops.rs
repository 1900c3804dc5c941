//! What an operator watches: readiness and Prometheus metrics.

use crate::common::*;
use relay_server::Config;
use serde_json::json;

#[tokio::test]
async fn readyz_answers_ready_while_the_store_takes_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_server(durable_config(dir.path())).await;
    let answer = get_with(&format!("{}/readyz", server.url()), None).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), json!({"status": "ready"}));
    server.stop().await;
}

#[tokio::test]
async fn metrics_without_an_admin_token_need_metrics_listen() {
    let server = start_server(Config::default()).await;
    let answer = get_with(&format!("{}/metrics", server.url()), None).await;
    assert_eq!(answer.status, 403);

    // The binary with --metrics-listen serves them there, without a token.
    let mut process = spawn_server(
        &["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"],
        &[],
    );
    let metrics_addr = loop {
        let line = process
            .logs
            .recv_timeout(DEADLINE)
            .expect("the server logs its metrics address");
        if let Some(rest) = line.split("metrics_addr=").nth(1) {
            break rest.split_whitespace().next().expect("address").to_owned();
        }
    };
    let answer = get_with(&format!("http://{metrics_addr}/metrics"), None).await;
    assert_eq!(answer.status, 200);
    assert!(answer.text().contains("hookrelay_agents_connected 0"));
    for probe in ["healthz", "readyz"] {
        let answer = get_with(&format!("http://{metrics_addr}/{probe}"), None).await;
        assert_eq!(answer.status, 200, "/{probe} there too");
    }
    let elsewhere = get_with(&format!("http://{metrics_addr}/api/token/channel"), None).await;
    assert_eq!(elsewhere.status, 404, "and nothing else");
    assert!(terminate(&mut process.child).success());
}

#[tokio::test]
async fn json_logs_give_one_line_per_delivery_with_its_id_channel_status_and_duration() {
    use std::io::{BufRead, BufReader};
    let data = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(data.path())
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("relay-server starts");
    let stderr = child.stderr.take().expect("piped");
    let (tx, lines) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let doc = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("every log line is JSON ({e}): {line}"));
            if tx.send(doc).is_err() {
                break;
            }
        }
    });
    let next_where = |what: &dyn Fn(&serde_json::Value) -> bool| loop {
        let doc = lines.recv_timeout(DEADLINE).expect("the expected log line");
        if what(&doc) {
            return doc;
        }
    };
    let listening = next_where(&|doc| doc["message"] == "relay server listening");
    let addr = listening["addr"].as_str().expect("addr field").to_owned();
    let answer = send(
        &client(),
        "POST",
        &format!("http://{addr}/h/logged/x"),
        &[],
        "b",
    )
    .await;
    assert_eq!(answer.status, 202);
    let id = answer.headers["x-hookrelay-delivery"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let line = next_where(&|doc| doc["message"] == "queued");
    assert_eq!(line["status"], 202, "{line}");
    assert!(line["elapsed_ms"].is_u64(), "{line}");
    assert_eq!(line["span"]["delivery_id"], id.as_str(), "{line}");
    assert_eq!(line["span"]["channel"], "logged", "{line}");
    assert!(terminate(&mut child).success());
}

#[test]
fn check_config_shows_each_setting_and_where_it_comes_from_or_every_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "timeout = 12\nretention = \"2d\"\nmax-body = 1000\n").expect("write");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_relay-server"))
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("runs");
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.code(), text)
    };
    let good = good.display().to_string();
    let (code, out) = run(
        &["--config", &good, "--max-body", "5", "check-config"],
        &[("HOOKRELAY_TIMEOUT", "20")],
    );
    assert_eq!(code, Some(0), "{out}");
    for line in [
        "timeout = 20  (environment)",
        "retention = 2d  (file)",
        "max-body = 5  (flag)",
    ] {
        assert!(out.contains(line), "{line} missing from:\n{out}");
    }

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "colour = \"blue\"\n[[channel]]\nname = \"x\"\n\n[[channel]]\nname = \"y\"\n",
    )
    .expect("write");
    // Keys before the tables: TOML puts later top-level keys into the last table.
    let text = std::fs::read_to_string(&bad).expect("read");
    std::fs::write(&bad, format!("rate-limt = \"1/s\"\ntimeout = 0\n{text}")).expect("write");
    let (code, out) = run(&["check-config", &bad.display().to_string()], &[]);
    assert_eq!(code, Some(1), "{out}");
    let bad = bad.display().to_string();
    let expected = [
        format!("{bad}:1: key `rate-limt`: unknown key; did you mean `rate-limit`?"),
        format!("{bad}:2: key `timeout`: --timeout must be at least 1 second"),
        format!("{bad}:3: key `colour`: unknown key"),
        format!("{bad}:4: key `channel[0]`: needs token or token-sha256"),
        format!("{bad}:7: key `channel[1]`: needs token or token-sha256"),
    ];
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, expected, "every problem, in line order");

    let weak = dir.path().join("weak.toml");
    std::fs::write(
        &weak,
        "admin-token = \"change-me-to-a-long-random-string\"\nagent-token = \"short\"\n\
         [[channel]]\nname = \"a\"\ntoken = \"hrt_0123456789abcdef0123456789abcdef\"\n\
         verify = { kind = \"github\", secret = \"CHANGEME\" }\n",
    )
    .expect("write");
    let (code, out) = run(&["check-config", &weak.display().to_string()], &[]);
    assert_eq!(code, Some(0), "it serves: {out}");
    let weak = weak.display().to_string();
    for line in [
        format!("{weak}: ok, with 3 warnings"),
        format!(
            "  warning: {weak}:1: key `admin-token`: looks like a placeholder (contains \"change-me\")"
        ),
        format!("  warning: {weak}:2: key `agent-token`: only 5 characters"),
        format!("  warning: {weak}:3: key `channel[0]`: verify: looks like a placeholder"),
    ] {
        assert!(out.contains(&line), "{line} missing from:\n{out}");
    }
}

#[test]
fn a_user_error_is_one_sentence_and_an_exit_code_whatever_rust_backtrace_says() {
    let run = |args: &[&str]| {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_relay-server"))
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("run relay-server");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.code(), stderr)
    };
    let (code, stderr) = run(&["--timeout", "0"]);
    assert_eq!(code, Some(2), "a bad setting is a usage error: {stderr}");
    assert_eq!(
        stderr.trim(),
        "relay-server: --timeout must be at least 1 second"
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    let (code, stderr) = run(&["--listen", &addr]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr
            .trim()
            .starts_with(&format!("relay-server: cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(!stderr.contains("backtrace"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
