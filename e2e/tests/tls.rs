//! HTTPS without a proxy: the server terminates TLS, agents speak wss:// (with `--ca` for a
//! private CA), optional client certificates for agents, certificate reload on SIGHUP. The
//! CAs and certificates are made here with rcgen and written to a temporary directory.

use std::path::Path;

use bytes::Bytes;
use hookrelay_e2e::tls::*;
use hookrelay_e2e::*;
use http_body_util::BodyExt;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use relay_client::{Agent, Identity};
use relay_server::Config;
use relay_server::TlsConfig;

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
            event_type: None,
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
            event_type: None,
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
                event_type: None,
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
