//! HTTPS without a proxy: the server terminates TLS, agents speak wss:// (with `--ca` for a
//! private CA), optional client certificates for agents, certificate reload on SIGHUP. The
//! CAs and certificates are made here with rcgen and written to a temporary directory.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use hookrelay_e2e::tls::*;
use hookrelay_e2e::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use relay_client::{Agent, Identity};
use relay_server::{Config, TlsConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An agent for `server` over wss://, trusting `ca` if given.
fn wss_agent(server: &TestServer, target: &str, ca: Option<&Path>) -> relay_client::AgentConfig {
    let mut config = agent_config(server, target);
    config.ws_url = format!("wss://{}/ws", server.addr);
    config.tls.ca = ca.map(Path::to_owned);
    config
}

/// A self-signed server certificate for `names`, as `openssl req -x509` makes one (`ca`: with
/// `basicConstraints CA:TRUE`, openssl's default) or as rcgen does by default (no constraints).
fn self_signed(names: &[&str], ca: bool) -> Leaf {
    let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    let mut params = CertificateParams::new(names).expect("valid names");
    params.distinguished_name.push(DnType::CommonName, "relay");
    if ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    Leaf {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// Server TLS settings with the self-signed `leaf` as its certificate.
fn self_signed_config(files: &Files, leaf: &Leaf) -> Config {
    Config {
        tls: Some(TlsConfig {
            cert: files.write("server.pem", &leaf.cert),
            key: files.write("server.key", &leaf.key),
            client_ca: None,
        }),
        ..Config::default()
    }
}

/// The error `Agent::connect` stops with, at once.
async fn refused(config: relay_client::AgentConfig) -> relay_client::Error {
    let error = tokio::time::timeout(DEADLINE, Agent::connect(config, None))
        .await
        .expect("fails at once, no retry loop")
        .err()
        .expect("refused");
    assert!(error.is_fatal(), "reconnecting cannot fix it: {error}");
    error
}

#[tokio::test]
async fn webhook_over_https_reaches_the_target_through_a_wss_agent() {
    let files = Files::new();
    let ca = Ca::new("relay CA");
    let server = start_server(tls_config(&files, &ca.server("relay"), None)).await;
    let mut target = start_target().await;
    let ca_file = files.write("ca.pem", &ca.pem);
    let agent = start_agent(wss_agent(&server, &target.url, Some(&ca_file))).await;
    assert!(
        agent.public_url.starts_with(&server.https_url()),
        "{}",
        agent.public_url
    );

    let body = Bytes::from_static(b"{\"action\":\"opened\"}\r\n\x00\xff\xfe signed bytes");
    let answer = send(
        &https_client(&ca),
        "POST",
        &format!("{}/gh?x=1", agent.public_url),
        &[("x-hub-signature-256", b"sha256=abc")],
        body.clone(),
    )
    .await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert_eq!(answer.body, body);
    let seen = next_seen(&mut target).await;
    assert_eq!(seen.body, body, "body arrives byte for byte");
    assert_eq!(seen.uri, "/gh?x=1");
    assert_eq!(seen.header("x-forwarded-proto"), [b"https".as_slice()]);

    // `relay-client events` reads the history over HTTPS with the same --ca.
    let channel = protocol::ChannelId::parse(&agent.channel).expect("channel");
    let tls = relay_client::TlsConfig {
        ca: Some(ca_file),
        identity: None,
    };
    let api = relay_client::ApiConfig::new(&server.https_url(), channel, None, tls).expect("api");
    let page = relay_client::Api::new(api)
        .expect("api client")
        .events(&relay_client::EventsQuery {
            limit: 5,
            status: None,
        })
        .await
        .expect("history over https");
    assert_eq!(page.events.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn agent_without_the_private_ca_stops_with_a_certificate_error() {
    let files = Files::new();
    let ca = Ca::new("private CA");
    let server = start_server(tls_config(&files, &ca.server("relay"), None)).await;
    let target = start_target().await;

    let error = tokio::time::timeout(
        DEADLINE,
        Agent::connect(wss_agent(&server, &target.url, None), None),
    )
    .await
    .expect("fails at once, no retry loop")
    .err()
    .expect("an unknown CA is refused");
    assert!(error.is_fatal(), "reconnecting cannot fix it: {error}");
    assert_eq!(
        error.to_string(),
        "TLS handshake with 127.0.0.1 failed: invalid peer certificate: UnknownIssuer; pass --ca FILE for a private CA (or the server's own certificate, if self-signed)"
    );

    let channel = protocol::ChannelId::parse("c").expect("channel");
    let api = relay_client::ApiConfig::new(&server.https_url(), channel, None, Default::default())
        .expect("api");
    let error = relay_client::Api::new(api)
        .expect("api client")
        .events(&relay_client::EventsQuery {
            limit: 5,
            status: None,
        })
        .await
        .expect_err("unknown CA");
    assert!(
        error.to_string().contains("pass --ca FILE"),
        "history API says the same: {error}"
    );
    server.stop().await;
}

#[tokio::test]
async fn client_ca_admits_agents_with_a_certificate_and_senders_without() {
    let files = Files::new();
    let ca = Ca::new("relay CA");
    let agents_ca = Ca::new("agents CA");
    let server = start_server(tls_config(&files, &ca.server("relay"), Some(&agents_ca))).await;
    let mut target = start_target().await;
    let ca_file = files.write("ca.pem", &ca.pem);

    let agent_cert = agents_ca.client("agent");
    let mut config = wss_agent(&server, &target.url, Some(&ca_file));
    config.tls.identity = Some(Identity {
        cert: files.write("agent.pem", &agent_cert.cert),
        key: files.write("agent.key", &agent_cert.key),
    });
    let agent = start_agent(config).await;

    // A sender such as GitHub has no client certificate and still gets through.
    let sender = https_client(&ca);
    let answer = send(&sender, "POST", &agent.public_url, &[], "payload").await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert_eq!(next_seen(&mut target).await.body, "payload");

    // /ws without a certificate: 403 with a JSON error, before any upgrade.
    let refused = send(
        &sender,
        "GET",
        &format!("{}/ws", server.https_url()),
        &[],
        "",
    )
    .await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.json()["error"],
        "a client certificate signed by --client-ca is required"
    );

    // An agent without a certificate is told so, and stops.
    let error = Agent::connect(wss_agent(&server, &target.url, Some(&ca_file)), None)
        .await
        .err()
        .expect("refused without a certificate");
    assert!(error.is_fatal(), "{error}");
    assert_eq!(
        error.to_string(),
        "server refused the agent: a client certificate signed by --client-ca is required; pass --cert FILE --key FILE"
    );

    // A certificate from another CA fails the TLS handshake itself.
    let stranger = Ca::new("someone else's CA").client("agent");
    let mut config = wss_agent(&server, &target.url, Some(&ca_file));
    config.tls.identity = Some(Identity {
        cert: files.write("stranger.pem", &stranger.cert),
        key: files.write("stranger.key", &stranger.key),
    });
    let error = Agent::connect(config, None)
        .await
        .err()
        .expect("refused with a foreign certificate");
    assert!(error.is_fatal(), "{error}");
    assert_eq!(
        error.to_string(),
        "TLS handshake with 127.0.0.1 failed: received fatal alert: UnknownCA; the server did not accept the client certificate: --cert must be signed by the server's --client-ca"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_servers_own_self_signed_certificate_given_with_ca_is_pinned() {
    // CA:TRUE is what `openssl req -x509` writes by default, and what webpki refuses as a
    // server's certificate (CaUsedAsEndEntity); rcgen's default has no constraints.
    for ca_flag in [true, false] {
        let files = Files::new();
        let leaf = self_signed(&["127.0.0.1", "localhost"], ca_flag);
        let server = start_server(self_signed_config(&files, &leaf)).await;
        let mut target = start_target().await;
        let pinned = files.write("pinned.pem", &leaf.cert);
        let agent = start_agent(wss_agent(&server, &target.url, Some(&pinned))).await;
        let tls = relay_client::TlsConfig {
            ca: Some(pinned.clone()),
            identity: None,
        };

        // A sender trusting the same file, through relay-client's own TLS settings.
        let sender_tls = relay_client::tls::client_config(&tls).expect("TLS settings");
        let sender = relay_client::forward::http_client_with((*sender_tls).clone());
        let request = http::Request::post(format!("{}/x", agent.public_url))
            .body(
                http_body_util::Full::new(Bytes::from_static(b"pinned"))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .expect("request");
        let response = tokio::time::timeout(DEADLINE, sender.request(request))
            .await
            .expect("answer within the deadline")
            .expect("HTTPS to the pinned certificate");
        assert_eq!(response.status(), 201, "CA:{ca_flag}");
        assert_eq!(next_seen(&mut target).await.body, "pinned");

        let channel = protocol::ChannelId::parse(&agent.channel).expect("channel");
        let api =
            relay_client::ApiConfig::new(&server.https_url(), channel, None, tls).expect("api");
        let page = relay_client::Api::new(api)
            .expect("api client")
            .events(&relay_client::EventsQuery {
                limit: 5,
                status: None,
            })
            .await
            .expect("history over https with the pinned certificate");
        assert_eq!(page.events.len(), 1, "CA:{ca_flag}");
        agent.shutdown.cancel();
        server.stop().await;
    }
}

#[tokio::test]
async fn a_pinned_certificate_the_server_does_not_present_is_refused_saying_so() {
    let files = Files::new();
    let served = self_signed(&["127.0.0.1"], true);
    let server = start_server(self_signed_config(&files, &served)).await;
    let target = start_target().await;

    let error = refused(wss_agent(&server, &target.url, None)).await;
    assert_eq!(
        error.to_string(),
        "TLS handshake with 127.0.0.1 failed: the server's certificate is a CA certificate, as self-signed ones often are; pass that certificate with --ca FILE to pin it"
    );

    let other = files.write("other.pem", &self_signed(&["127.0.0.1"], true).cert);
    let error = refused(wss_agent(&server, &target.url, Some(&other))).await;
    assert_eq!(
        error.to_string(),
        format!(
            "TLS handshake with 127.0.0.1 failed: the server's certificate is neither the one in --ca {} nor signed by it; pass the server's own certificate (its --tls-cert) or the CA that signed it",
            other.display()
        )
    );
    server.stop().await;
}

#[tokio::test]
async fn a_pinned_certificate_for_another_name_or_out_of_date_is_refused_saying_what_to_do() {
    let files = Files::new();
    let named = self_signed(&["relay.example.com"], true);
    let server = start_server(self_signed_config(&files, &named)).await;
    let target = start_target().await;
    let pinned = files.write("pinned.pem", &named.cert);
    let error = refused(wss_agent(&server, &target.url, Some(&pinned))).await;
    assert_eq!(
        error.to_string(),
        format!(
            "TLS handshake with 127.0.0.1 failed: the certificate pinned with --ca {} is for relay.example.com, not 127.0.0.1: name one of those in --server, or make the certificate for 127.0.0.1",
            pinned.display()
        )
    );
    server.stop().await;

    let files = Files::new();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("names");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = KeyPair::generate().expect("key");
    let expired = Leaf {
        cert: params.self_signed(&key).expect("self-signed").pem(),
        key: key.serialize_pem(),
    };
    let server = start_server(self_signed_config(&files, &expired)).await;
    let pinned = files.write("pinned.pem", &expired.cert);
    let error = refused(wss_agent(&server, &target.url, Some(&pinned))).await;
    assert_eq!(
        error.to_string(),
        format!(
            "TLS handshake with 127.0.0.1 failed: the certificate pinned with --ca {} expired on 2021-01-01T00:00:00Z; the server needs a new one, given here with --ca",
            pinned.display()
        )
    );
    server.stop().await;
}

/// Opens a TLS connection to `addr` trusting `cas`; returns it with the certificate the server
/// presented.
async fn tls_connect(
    addr: &str,
    cas: &[&Ca],
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    CertificateDer<'static>,
) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots(cas))
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("IP name");
    let stream = tokio::time::timeout(
        DEADLINE,
        tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, tcp),
    )
    .await
    .expect("handshake within the deadline")
    .expect("TLS handshake");
    let presented = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("server presented a certificate")
        .clone()
        .into_owned();
    (stream, presented)
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("certificate PEM")
}

#[tokio::test]
async fn unusable_certificate_files_fail_start_up_naming_the_file() {
    let files = Files::new();
    let ca = Ca::new("relay CA");
    let good = ca.server("relay");
    let other = ca.server("other");
    let missing = files.0.path().join("missing.pem");
    let cases = [
        (
            TlsConfig {
                cert: missing.clone(),
                key: files.write("k.pem", &good.key),
                client_ca: None,
            },
            format!("cannot use --tls-cert {}", missing.display()),
        ),
        (
            TlsConfig {
                cert: files.write("c.pem", &good.cert),
                key: files.write("junk.key", "not a key"),
                client_ca: None,
            },
            "no private key found".to_owned(),
        ),
        (
            TlsConfig {
                cert: files.write("c.pem", &good.cert),
                key: files.write("other.key", &other.key),
                client_ca: None,
            },
            "cannot use --tls-key".to_owned(),
        ),
    ];
    for (tls, expected) in cases {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let config = Config {
            tls: Some(tls),
            ..Config::default()
        };
        let error = relay_server::serve(listener, config, Default::default())
            .await
            .expect_err("refused at start-up");
        assert!(error.to_string().contains(&expected), "{error}");
    }
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_400_and_the_server_keeps_serving() {
    let files = Files::new();
    let ca = Ca::new("relay CA");
    let server = start_server(tls_config(&files, &ca.server("relay"), None)).await;

    // A client that says nothing does not hold up the others.
    let _silent = TcpStream::connect(server.addr).await.expect("connect");

    let mut plain = TcpStream::connect(server.addr).await.expect("connect");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: relay\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    tokio::time::timeout(DEADLINE, plain.read_to_string(&mut answer))
        .await
        .expect("answered within the deadline")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("use https://"), "{answer}");

    let health = send(
        &https_client(&ca),
        "GET",
        &format!("{}/healthz", server.https_url()),
        &[],
        "",
    )
    .await;
    assert_eq!(health.status, 200);
    server.stop().await;
}

/// GET /healthz on an open HTTP/1.1 connection.
async fn healthz(sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>) -> u16 {
    let request = http::Request::get("/healthz")
        .header("host", "127.0.0.1")
        .body(Empty::new())
        .expect("request");
    let response = tokio::time::timeout(DEADLINE, sender.send_request(request))
        .await
        .expect("answer within the deadline")
        .expect("answer");
    let status = response.status().as_u16();
    response.into_body().collect().await.expect("body");
    status
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_open_connections_go_on() {
    let files = Files::new();
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let old = old_ca.server("old");
    let new = new_ca.server("new");
    let cert = files.write("cert.pem", &old.cert);
    let key = files.write("key.pem", &old.key);
    let mut server = spawn_server(
        &[
            "--listen",
            "127.0.0.1:0",
            "--store",
            "memory",
            "--tls-cert",
            cert.to_str().expect("UTF-8 path"),
            "--tls-key",
            key.to_str().expect("UTF-8 path"),
        ],
        &[],
    );
    let addr = server.addr.clone();
    let both = [&old_ca, &new_ca];

    let (stream, presented) = tls_connect(&addr, &both).await;
    assert_eq!(presented, der(&old.cert));
    let (mut kept, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 over TLS");
    let connection = tokio::spawn(connection);
    assert_eq!(healthz(&mut kept).await, 200);

    files.write("cert.pem", &new.cert);
    files.write("key.pem", &new.key);
    signal(&server.child, "HUP");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (_, presented) = tls_connect(&addr, &both).await;
        if presented == der(&new.cert) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "new certificate not served after SIGHUP"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        healthz(&mut kept).await,
        200,
        "the connection opened before the reload still works"
    );

    // A broken file on reload keeps the certificate that works.
    files.write("cert.pem", "not a certificate");
    signal(&server.child, "HUP");
    server.wait_for_log("TLS reload failed");
    let (_, presented) = tls_connect(&addr, &both).await;
    assert_eq!(presented, der(&new.cert));
    assert_eq!(healthz(&mut kept).await, 200);

    drop(kept);
    let _ = connection.await;
    assert!(terminate(&mut server.child).success());
}
