//! Pebble, Let's Encrypt's ACME test server (Debian's `pebble` package), on loopback for one
//! test: its own HTTPS certificate made here with rcgen, its configuration in a temporary
//! directory, free ports, and the process killed when the handle is dropped. With real
//! validation, `pebble-challtestsrv` answers DNS for made-up names with 127.0.0.1.
//!
//! Uses relay-server (through [`super::tls`]) and no other crate of ours.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use super::requests::{DEADLINE, try_send_body};
use super::tls::{Ca, Files, HttpsClient, https_client, https_client_trusting, pem_roots};

/// How Pebble validates challenges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// `PEBBLE_VA_ALWAYS_VALID=1`: every challenge passes without a connection, so any name
    /// can be issued.
    AlwaysValid,
    /// Real TLS-ALPN-01 validation against port `tls_port` of 127.0.0.1, every name resolving
    /// there through `pebble-challtestsrv`.
    TlsAlpn { tls_port: u16 },
    /// Real HTTP-01 validation against port `http_port` of 127.0.0.1, names resolved as for
    /// [`Validation::TlsAlpn`].
    Http01 { http_port: u16 },
}

/// What to start Pebble with.
#[derive(Debug, Clone, Copy)]
pub struct PebbleOptions {
    pub validation: Validation,
    /// Lifetime of the certificates it issues; `None`: Pebble's default (five years).
    pub validity: Option<Duration>,
}

/// A running Pebble; killed on drop.
pub struct Pebble {
    /// The ACME directory URL.
    pub directory: String,
    /// The CA of Pebble's own HTTPS certificate (PEM file), for `--acme-ca`; a new one each
    /// time Pebble starts.
    pub api_ca: PathBuf,
    /// Pebble's issuing root (PEM file), as a client of the relay trusts it.
    pub root: PathBuf,
    /// The issuing root, PEM.
    pub root_pem: String,
    /// The management address (`/roots/0`, ...).
    pub management: SocketAddr,
    children: Vec<Child>,
    _files: Files,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port nobody listens on now (TCP on 127.0.0.1); Pebble has no port 0 of its own.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
}

/// Spawns `program` with `args` and `env`, its output kept out of the test's unless
/// `HOOKRELAY_TEST_PEBBLE_LOGS` is set.
fn spawn(program: &str, args: &[String], env: &[(&str, &str)]) -> Child {
    let verbose = std::env::var_os("HOOKRELAY_TEST_PEBBLE_LOGS").is_some();
    let output = || {
        if verbose {
            Stdio::inherit()
        } else {
            Stdio::null()
        }
    };
    Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdout(output())
        .stderr(output())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): install Debian's `pebble` package (.ci/run does)")
        })
}

impl Pebble {
    /// Starts Pebble (and, for real validation, its DNS server) and waits until its
    /// directory and root answer.
    pub async fn start(options: PebbleOptions) -> Self {
        let files = Files::new();
        let ca = Ca::new("pebble API CA");
        let leaf = ca.server("pebble");
        let cert = files.write("pebble.pem", &leaf.cert);
        let key = files.write("pebble.key", &leaf.key);
        let api_ca = files.write("pebble-api-ca.pem", &ca.pem);
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let management = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let (http_port, tls_port) = match options.validation {
            Validation::TlsAlpn { tls_port } => (free_port(), tls_port),
            Validation::Http01 { http_port } => (http_port, free_port()),
            Validation::AlwaysValid => (free_port(), free_port()),
        };
        let mut pebble = serde_json::json!({
            "listenAddress": listen.to_string(),
            "managementListenAddress": management.to_string(),
            "certificate": cert,
            "privateKey": key,
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        });
        if let Some(validity) = options.validity {
            pebble["certificateValidityPeriod"] = validity.as_secs().into();
        }
        let config = files.write(
            "pebble-config.json",
            &serde_json::json!({ "pebble": pebble }).to_string(),
        );

        let mut children = Vec::new();
        let mut args = vec!["-config".to_owned(), config.display().to_string()];
        let mut env = vec![
            ("PEBBLE_VA_NOSLEEP", "1"),
            // Pebble refuses 5% of nonces by default, to exercise clients' retries; the
            // relay retries a failed order with backoff, which would only make tests slow.
            ("PEBBLE_WFE_NONCEREJECT", "0"),
        ];
        match options.validation {
            Validation::AlwaysValid => env.push(("PEBBLE_VA_ALWAYS_VALID", "1")),
            Validation::TlsAlpn { .. } | Validation::Http01 { .. } => {
                let dns = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
                let dns_args = [
                    "-dns01",
                    &dns.to_string(),
                    "-defaultIPv4",
                    "127.0.0.1",
                    "-defaultIPv6",
                    "",
                    "-http01",
                    "",
                    "-https01",
                    "",
                    "-tlsalpn01",
                    "",
                    "-management",
                    &SocketAddr::from(([127, 0, 0, 1], free_port())).to_string(),
                ]
                .map(str::to_owned);
                children.push(spawn("pebble-challtestsrv", &dns_args, &[]));
                args.extend(["-dnsserver".to_owned(), dns.to_string()]);
            }
        }
        children.push(spawn("pebble", &args, &env));

        let client = https_client(&ca);
        let directory = format!("https://{listen}/dir");
        let roots = format!("https://{management}/roots/0");
        let get = |url: String| {
            let client = client.clone();
            async move {
                let empty = Full::new(Bytes::new()).boxed();
                try_send_body(&client, "GET", &url, &[], empty, DEADLINE)
                    .await
                    .ok()
                    .filter(|answer| answer.status == 200)
            }
        };
        let ready = async {
            loop {
                if get(directory.clone()).await.is_some()
                    && let Some(root) = get(roots.clone()).await
                {
                    return String::from_utf8(root.body.to_vec()).expect("PEM is text");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let root_pem = tokio::time::timeout(DEADLINE, ready)
            .await
            .expect("Pebble answers within the deadline");
        let root = files.write("pebble-root.pem", &root_pem);
        Self {
            directory,
            api_ca,
            root,
            root_pem,
            management,
            children,
            _files: files,
        }
    }
}

impl Pebble {
    /// The roots a client of the relay trusts: Pebble's issuing root only.
    pub fn roots(&self) -> rustls::RootCertStore {
        pem_roots([self.root_pem.as_str()])
    }

    /// An HTTPS client that trusts the certificates Pebble issues.
    pub fn client(&self) -> HttpsClient {
        https_client_trusting(self.roots())
    }
}
