//! HTTPS without a proxy, where no agent is needed: unusable certificate files stop start-up,
//! plain HTTP on the TLS port is refused, SIGHUP reloads the certificate. (wss:// agents,
//! client certificates and pinning are in e2e's `tls`.)

use std::sync::Arc;

use crate::common::tls::*;
use crate::common::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use relay_server::{Config, TlsConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

#[tokio::test]
async fn a_config_with_files_and_acme_serves_the_files_and_leaves_acme_off() {
    let files = Files::new();
    let ca = Ca::new("relay CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let cache_dir = dir.path().join("acme");
    let config = Config {
        acme: Some(relay_server::AcmeConfig {
            domains: vec!["relay.example.com".to_owned()],
            email: None,
            directory: "https://127.0.0.1:1/dir".to_owned(),
            ca: None,
            cache_dir: cache_dir.clone(),
            client_ca: None,
            http_listen: None,
        }),
        ..tls_config(&files, &ca.server("relay"), None)
    };
    let server = start_server(config).await;
    // The handshake trusts the CA of the files' certificate only.
    tls_connect(&server.addr.to_string(), &[&ca]).await;
    assert!(!cache_dir.exists(), "ACME never started");
    server.stop().await;
}
