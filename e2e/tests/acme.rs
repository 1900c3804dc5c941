//! Certificates from ACME, against Pebble (Let's Encrypt's test server, started per test on
//! loopback): the relay obtains one, serves it to curl, to agents over wss and to senders;
//! reuses it across a restart without asking the CA; renews a short-lived one under an open
//! connection; answers a real TLS-ALPN-01 validation on its own port; waits (and says so on
//! `/readyz`) while the CA cannot be reached; and refuses `--acme-domain` with `--tls-cert`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hookrelay_e2e::pebble::{Pebble, PebbleOptions, Validation, free_port};
use hookrelay_e2e::*;
use http_body_util::{BodyExt, Full};
use relay_server::{AcmeConfig, Config};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The made-up name the certificates are for.
const NAME: &str = "relay.hookrelay.test";
/// Time allowed for an order against Pebble (about a second when it goes well) or a renewal.
const ACME_DEADLINE: Duration = Duration::from_secs(60);

/// A durable relay in `dir` with ACME from `pebble` for `domains`, `/readyz` on its own
/// plain-HTTP address.
fn acme_config(pebble: &Pebble, dir: &Path, domains: &[&str]) -> (Config, SocketAddr) {
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = Config {
        acme: Some(AcmeConfig {
            domains: domains.iter().map(|d| (*d).to_owned()).collect(),
            email: Some("ops@hookrelay.test".to_owned()),
            directory: pebble.directory.clone(),
            ca: Some(pebble.api_ca.clone()),
            cache_dir: dir.join("acme"),
            client_ca: None,
            http_listen: None,
        }),
        metrics_listen: Some(metrics),
        ..durable_config(dir)
    };
    (config, metrics)
}

/// `GET /readyz` on the metrics address: status and reason; `None` while nothing listens.
async fn readyz(metrics: SocketAddr) -> Option<(u16, String)> {
    let url = format!("http://{metrics}/readyz");
    let empty = Full::new(Bytes::new()).boxed();
    let answer = try_send_body(&client(), "GET", &url, &[], empty, DEADLINE)
        .await
        .ok()?;
    let reason = answer.json()["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Some((answer.status, reason))
}

/// Polls `/readyz` until it answers 200.
async fn wait_ready(metrics: SocketAddr) {
    let ready = async {
        loop {
            if readyz(metrics)
                .await
                .is_some_and(|(status, _)| status == 200)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(ACME_DEADLINE, ready)
        .await
        .expect("a certificate from ACME within the deadline");
}

/// A TLS connection to the relay at `addr` for `name`, trusting `roots` (Pebble's) only.
async fn connect(
    roots: &rustls::RootCertStore,
    addr: SocketAddr,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).expect("a valid name");
    connector.connect(name, tcp).await
}

/// The leaf certificate a connection was handed.
fn leaf(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().expect("a certificate")[0]
        .clone()
        .into_owned()
}

/// The certificate a fresh handshake gets now.
async fn served(
    roots: &rustls::RootCertStore,
    addr: SocketAddr,
    name: &str,
) -> CertificateDer<'static> {
    leaf(&connect(roots, addr, name).await.expect("TLS handshake"))
}

/// The expiry (Unix seconds) of `cert`.
fn not_after(cert: &CertificateDer<'_>) -> i64 {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).expect("X.509");
    parsed.validity().not_after.timestamp()
}

/// `GET /healthz` on an open connection, kept alive: the status.
async fn healthz_on(tls: &mut TlsStream<TcpStream>) -> u16 {
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("write request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(DEADLINE, tls.read(&mut byte))
            .await
            .expect("an answer in time")
            .expect("read");
        assert_eq!(
            n,
            1,
            "connection closed mid-answer: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).expect("ASCII head");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })
        .and_then(|v| v.parse().ok())
        .expect("content-length");
    let mut body = vec![0u8; length];
    tls.read_exact(&mut body).await.expect("body");
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status")
}

/// `curl --resolve NAME:PORT:127.0.0.1 --cacert ROOT https://NAME:PORT/healthz`: the status.
async fn curl_healthz(root: &Path, addr: SocketAddr) -> String {
    let resolve = format!("{NAME}:{}:127.0.0.1", addr.port());
    let url = format!("https://{NAME}:{}/healthz", addr.port());
    let root = root.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .arg("--resolve")
            .arg(&resolve)
            .arg("--cacert")
            .arg(&root)
            .arg(&url)
            .output()
            .expect("curl runs")
    })
    .await
    .expect("curl finished");
    assert!(
        output.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The `hookrelay_tls_certificate_expiry_seconds` series of `domain`, from `/metrics`.
async fn expiry_metric(metrics: SocketAddr, domain: &str) -> Option<i64> {
    let url = format!("http://{metrics}/metrics");
    let answer = send(&client(), "GET", &url, &[], Bytes::new()).await;
    let series = format!("hookrelay_tls_certificate_expiry_seconds{{domain=\"{domain}\"}} ");
    String::from_utf8_lossy(&answer.body)
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str())?.parse().ok())
}

#[tokio::test]
async fn relay_obtains_a_certificate_serves_it_and_reuses_it_after_a_restart() {
    let pebble = Pebble::start(PebbleOptions {
        validation: Validation::AlwaysValid,
        validity: None,
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    // `localhost` too, so an agent (which resolves names itself) can reach the relay by a
    // name on the certificate.
    let (config, metrics) = acme_config(&pebble, dir.path(), &[NAME, "localhost"]);
    // A public name turns open mode off by default; this agent takes a fresh channel.
    let config = Config {
        open: Some(true),
        ..config
    };
    let restart = config.clone();
    let server = start_server(config).await;
    wait_ready(metrics).await;

    let roots = pebble.roots();
    assert_eq!(curl_healthz(&pebble.root, server.addr).await, "200");
    let cert = served(&roots, server.addr, NAME).await;
    for domain in [NAME, "localhost"] {
        assert_eq!(
            expiry_metric(metrics, domain).await,
            Some(not_after(&cert)),
            "{domain}"
        );
    }

    // An agent trusting Pebble's root (--ca) connects over wss and relays a webhook.
    let mut target = start_target().await;
    let port = server.addr.port();
    let mut agent = agent_config_at(&format!("https://localhost:{port}"), &target.url);
    agent.ws_url = format!("wss://localhost:{port}/ws");
    agent.tls.ca = Some(pebble.root.clone());
    let agent = start_agent(agent).await;
    assert!(
        agent
            .public_url
            .starts_with(&format!("https://{NAME}:{port}/")),
        "the public URL is the first domain's: {}",
        agent.public_url
    );
    let path = agent.public_url.split_once("/h/").expect("a webhook URL").1;
    let body = Bytes::from_static(b"{\"zen\":\"over ACME\"}");
    let answer = send(
        &pebble.client(),
        "POST",
        &format!("https://localhost:{port}/h/{path}/push"),
        &[],
        body.clone(),
    )
    .await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert_eq!(next_seen(&mut target).await.body, body);
    agent.shutdown.cancel();
    server.stop().await;

    // With the CA gone, a restart can only serve what it cached: no new order is possible.
    // Pebble's files go with it: keep its roots for the client and for --acme-ca.
    let keep = |from: &Path, name: &str| {
        let to = dir.path().join(name);
        std::fs::copy(from, &to).expect("copy a PEM file");
        to
    };
    let root = keep(&pebble.root, "pebble-root.pem");
    let api_ca = keep(&pebble.api_ca, "pebble-api-ca.pem");
    drop(pebble);
    let mut restart = restart;
    if let Some(acme) = &mut restart.acme {
        acme.ca = Some(api_ca);
    }
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let server = start_server(Config {
        metrics_listen: Some(metrics),
        ..restart
    })
    .await;
    wait_ready(metrics).await;
    assert_eq!(
        served(&roots, server.addr, NAME).await,
        cert,
        "the same certificate"
    );
    assert_eq!(curl_healthz(&root, server.addr).await, "200");
    server.stop().await;
}

#[tokio::test]
async fn relay_answers_a_real_tls_alpn_challenge_on_its_own_port() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let port = listener.local_addr().expect("bound").port();
    let pebble = Pebble::start(PebbleOptions {
        validation: Validation::TlsAlpn { tls_port: port },
        validity: None,
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, metrics) = acme_config(&pebble, dir.path(), &[NAME]);
    let server = serve_on(listener, config);
    wait_ready(metrics).await;
    assert_eq!(curl_healthz(&pebble.root, server.addr).await, "200");
    server.stop().await;
}

#[tokio::test]
async fn with_acme_http_listen_http_01_is_answered_there_and_the_rest_redirected() {
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let pebble = Pebble::start(PebbleOptions {
        validation: Validation::Http01 {
            http_port: http.port(),
        },
        validity: None,
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut config, metrics) = acme_config(&pebble, dir.path(), &[NAME]);
    if let Some(acme) = &mut config.acme {
        acme.http_listen = Some(http);
    }
    let server = start_server(config).await;
    wait_ready(metrics).await;
    assert_eq!(curl_healthz(&pebble.root, server.addr).await, "200");

    let url = format!("http://{http}/h/my-app/push?x=1");
    let answer = send(&client(), "POST", &url, &[], Bytes::new()).await;
    assert_eq!(answer.status, 308, "a redirect that keeps the method");
    let port = server.addr.port();
    assert_eq!(
        answer.headers["location"],
        format!("https://{NAME}:{port}/h/my-app/push?x=1").as_str()
    );
    let token = format!("http://{http}/.well-known/acme-challenge/not-a-token");
    let answer = send(&client(), "GET", &token, &[], Bytes::new()).await;
    assert_eq!(
        answer.status, 404,
        "no challenge in progress with that token"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_short_lived_certificate_is_renewed_under_open_connections() {
    // Renewal starts with a third of the lifetime left: 16 s into a 24 s certificate, which
    // leaves 8 s for the order (about 2 s here) on a busy machine.
    let pebble = Pebble::start(PebbleOptions {
        validation: Validation::AlwaysValid,
        validity: Some(Duration::from_secs(24)),
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, metrics) = acme_config(&pebble, dir.path(), &["localhost"]);
    // The open connection idles while the certificate is renewed.
    let config = Config {
        http: relay_server::HttpLimits {
            header_timeout: Duration::from_secs(120),
            ..relay_server::HttpLimits::default()
        },
        ..config
    };
    let server = start_server(config).await;
    wait_ready(metrics).await;
    let roots = pebble.roots();
    let mut open = connect(&roots, server.addr, "localhost")
        .await
        .expect("TLS handshake");
    let first = leaf(&open);
    assert_eq!(healthz_on(&mut open).await, 200);
    // And an agent over wss, as the channel's status names it.
    let port = server.addr.port();
    let base = format!("https://localhost:{port}");
    let mut target = start_target().await;
    let mut agent = agent_config_at(&base, &target.url);
    agent.ws_url = format!("wss://localhost:{port}/ws");
    agent.tls.ca = Some(pebble.root.clone());
    let agent = start_agent(agent).await;
    let status = format!("{base}/api/channels/{}", agent.channel);
    let session = |answer: Answer| answer.json()["agents"][0].clone();
    let before = session(send(&pebble.client(), "GET", &status, &[], Bytes::new()).await);
    assert!(before["connected_at"].is_string(), "{before}");

    let renewed = async {
        loop {
            let now = served(&roots, server.addr, "localhost").await;
            if now != first {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let second = tokio::time::timeout(ACME_DEADLINE, renewed)
        .await
        .expect("renewed within the deadline");
    assert!(not_after(&second) > not_after(&first));
    assert_eq!(
        healthz_on(&mut open).await,
        200,
        "the connection opened before the renewal still answers"
    );
    assert_eq!(
        leaf(&open),
        first,
        "and keeps the certificate it was opened with"
    );
    let metric = async {
        while expiry_metric(metrics, "localhost").await < Some(not_after(&second)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(DEADLINE, metric)
        .await
        .expect("the metric follows the renewal");

    // A webhook over a new connection (the new certificate) reaches the same agent session.
    let url = format!("{base}/h/{}/after-renewal", agent.channel);
    let answer = send(&pebble.client(), "POST", &url, &[], "renewed").await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert_eq!(next_seen(&mut target).await.body, "renewed");
    let after = session(send(&pebble.client(), "GET", &status, &[], Bytes::new()).await);
    assert_eq!(after, before, "the agent did not reconnect");
    agent.shutdown.cancel();
    server.stop().await;
}

#[tokio::test]
async fn while_the_ca_is_unreachable_the_relay_waits_and_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = Config {
        acme: Some(AcmeConfig {
            domains: vec![NAME.to_owned()],
            email: None,
            // Nothing listens there.
            directory: format!("https://127.0.0.1:{}/dir", free_port()),
            ca: None,
            cache_dir: dir.path().join("acme"),
            client_ca: None,
            http_listen: None,
        }),
        metrics_listen: Some(metrics),
        ..durable_config(dir.path())
    };
    let server = start_server(config).await;
    let up = async {
        loop {
            if let Some(ready) = readyz(metrics).await {
                return ready;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let ready = tokio::time::timeout(DEADLINE, up).await.expect("up");
    assert_eq!(
        ready,
        (503, "waiting for a certificate from ACME".to_owned())
    );
    let url = format!("http://{metrics}/healthz");
    let health = send(&client(), "GET", &url, &[], Bytes::new()).await;
    assert_eq!(health.status, 200, "/healthz on the metrics address");
    let refused = connect(&rustls::RootCertStore::empty(), server.addr, NAME).await;
    assert!(refused.is_err(), "no certificate to offer yet");
    assert!(
        !server.task.is_finished(),
        "a failed order does not stop the server"
    );
    server.stop().await;
}

#[test]
fn acme_domain_with_tls_cert_is_refused() {
    let output = std::process::Command::new(binary("relay-server", None))
        .args([
            "--acme-domain",
            NAME,
            "--tls-cert",
            "cert.pem",
            "--tls-key",
            "key.pem",
        ])
        .env_remove("HOOKRELAY_CONFIG")
        .output()
        .expect("relay-server runs");
    assert_eq!(output.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--acme-domain cannot be used with --tls-cert/--tls-key"),
        "{stderr}"
    );
}
