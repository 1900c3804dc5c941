//! Serving HTTPS without a proxy: the certificate and key (reloaded on SIGHUP) or ACME's
//! resolver, optional client certificates for agents, and the listener that runs TLS
//! handshakes.
//!
//! Handshakes run on their own tasks with a timeout, so a slow or silent client cannot hold up
//! the accept loop; axum only ever sees connections whose handshake has finished.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::serve::Listener;
use rustls::RootCertStore;
use rustls::server::{ResolvesServerCert, ServerConfig, WebPkiClientVerifier};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::debug;

use runtime::pem::{self, PemError};

use crate::net::http::{PeerIo, set_nodelay};

/// Bound on one TLS handshake, from accepting the TCP connection to its end.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; past this the listener stops accepting until one ends, so
/// a flood of silent connections costs bounded memory.
const MAX_PENDING_HANDSHAKES: usize = 1024;
/// Most bytes of a plain HTTP request read before answering it with 400.
const MAX_PLAIN_REQUEST: usize = 8 * 1024;
/// The ALPN protocol of an ACME CA's TLS-ALPN-01 validation handshake (RFC 8737).
const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Why the TLS material cannot be used. Every message names the file to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("cannot use --tls-key {key} with --tls-cert {cert}: {reason}")]
    KeyPair {
        cert: String,
        key: String,
        reason: String,
    },
    #[error("cannot use --client-ca {path}: {reason}")]
    ClientCa { path: String, reason: String },
}

/// Where the server's TLS material is; read at start-up and again on SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Private key of the leaf (PEM).
    pub key: PathBuf,
    /// CA (PEM) that agents' client certificates must chain to; `None`: agents need none.
    pub client_ca: Option<PathBuf>,
}

/// The server's TLS configuration, replaced whole by [`Certificates::reload`]. Clones share
/// it: the listener picks up a reload at its next handshake, and connections already open keep
/// the configuration they were accepted with.
#[derive(Debug, Clone)]
pub struct Certificates {
    /// The files read; `None` when ACME's resolver picks the certificate.
    files: Option<TlsConfig>,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl Certificates {
    /// Reads the certificate, key and client CA named by `files`.
    pub fn load(files: TlsConfig) -> Result<Self, TlsError> {
        let config = server_config(&files)?;
        Ok(Self {
            files: Some(files),
            current: Arc::new(RwLock::new(config)),
        })
    }

    /// Certificates picked by `resolver` at each handshake (ACME's, which also answers
    /// TLS-ALPN-01 challenges), agents' certificates checked against `client_ca`. A new
    /// certificate from the resolver is used from the next handshake on, without a reload.
    pub fn resolved(
        resolver: Arc<dyn ResolvesServerCert>,
        client_ca: Option<&Path>,
    ) -> Result<Self, TlsError> {
        let mut config = builder(client_ca)?.with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
        Ok(Self {
            files: None,
            current: Arc::new(RwLock::new(Arc::new(config))),
        })
    }

    /// The files this configuration was read from; `None` for ACME.
    pub fn files(&self) -> Option<&TlsConfig> {
        self.files.as_ref()
    }

    /// Reads the files again. On success new handshakes use them; on failure nothing
    /// changes and the previous certificate goes on serving. Without files (ACME) there is
    /// nothing to read.
    pub fn reload(&self) -> Result<(), TlsError> {
        let Some(files) = &self.files else {
            return Ok(());
        };
        let config = server_config(files)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        TlsAcceptor::from(Arc::clone(&current))
    }
}

impl PeerIo for TlsStream<TcpStream> {
    fn client_cert(&self) -> bool {
        let (_, session) = self.get_ref();
        session.peer_certificates().is_some_and(|c| !c.is_empty())
    }
}

/// Builds the rustls configuration for `files`. Installs ring as the process's crypto provider
/// first if none is yet, so in-process callers (tests) need no set-up of their own.
fn server_config(files: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = pem::certificates("--tls-cert", &files.cert)?;
    let key = pem::private_key("--tls-key", &files.key)?;
    let mut config = builder(files.client_ca.as_deref())?
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::KeyPair {
            cert: files.cert.display().to_string(),
            key: files.key.display().to_string(),
            reason: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The part of the rustls configuration both certificate sources share: agents' client
/// certificates checked against `client_ca`, when given.
fn builder(
    client_ca: Option<&Path>,
) -> Result<rustls::ConfigBuilder<ServerConfig, rustls::server::WantsServerCert>, TlsError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = ServerConfig::builder();
    Ok(match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let error = |reason: String| TlsError::ClientCa {
                path: path.display().to_string(),
                reason,
            };
            let mut roots = RootCertStore::empty();
            for cert in pem::certificates("--client-ca", path)? {
                roots.add(cert).map_err(|e| error(e.to_string()))?;
            }
            // Webhook senders have no certificates: the handshake lets them through, and
            // `/ws` refuses an agent without one (see `agents::ws::upgrade`).
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .allow_unauthenticated()
                .build()
                .map_err(|e| error(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    })
}

/// Re-reads the certificate and key (for SIGHUP). A failed reload is logged and the
/// previous certificate stays.
pub(crate) async fn reload_certificates(certs: &Certificates) {
    let Some(files) = certs.files() else {
        return;
    };
    let reloading = certs.clone();
    match tokio::task::spawn_blocking(move || reloading.reload()).await {
        Ok(Ok(())) => {
            tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded")
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "TLS reload failed; still serving the previous certificate")
        }
        Err(e) => tracing::error!(error = %e, "TLS reload did not finish"),
    }
}

/// An [`axum::serve::Listener`] that yields connections whose TLS handshake has finished.
///
/// Each accepted TCP connection is handshaken on its own task (bounded by
/// [`TLS_HANDSHAKE_TIMEOUT`]); a failed or timed-out handshake just closes that connection.
/// Dropping the listener (axum does at shutdown) aborts the handshakes still running.
pub struct TlsListener {
    tcp: TcpListener,
    certs: Certificates,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, certs: Certificates) -> Self {
        Self {
            tcp,
            certs,
            handshakes: JoinSet::new(),
        }
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    /// Cancel-safe: both awaited futures are, and a connection is handed to a handshake task
    /// without awaiting in between.
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let room = self.handshakes.len() < MAX_PENDING_HANDSHAKES;
            tokio::select! {
                (tcp, addr) = Listener::accept(&mut self.tcp), if room => {
                    self.handshakes.spawn(handshake(self.certs.acceptor(), tcp, addr));
                }
                Some(done) = self.handshakes.join_next() => match done {
                    Ok(Some(connection)) => return connection,
                    Ok(None) => {}
                    Err(e) => debug!(error = %e, "TLS handshake task failed"),
                },
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Runs the TLS handshake on `tcp`, within [`TLS_HANDSHAKE_TIMEOUT`]. A client that speaks
/// plain HTTP to the TLS port gets a 400 that says so, rather than a dropped connection.
async fn handshake(
    acceptor: TlsAcceptor,
    mut tcp: TcpStream,
    peer: SocketAddr,
) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
    set_nodelay(&tcp);
    let attempt = async {
        let mut first = [0u8; 1];
        if tcp.peek(&mut first).await? == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        // A TLS connection opens with a handshake record (0x16); an HTTP request with its
        // method in capitals.
        if first[0].is_ascii_uppercase() {
            answer_plain_http(&mut tcp).await?;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "plain HTTP request on the TLS port",
            ));
        }
        acceptor.accept(tcp).await
    };
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, attempt).await {
        Ok(Ok(mut tls)) if tls.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) => {
            // A CA's TLS-ALPN-01 validation: the handshake itself was the answer (RFC 8737
            // forbids application data on it), so the connection ends here.
            debug!(%peer, "TLS-ALPN-01 challenge answered");
            let _ = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.shutdown()).await;
            None
        }
        Ok(Ok(tls)) => Some((tls, peer)),
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            debug!(%peer, timeout = ?TLS_HANDSHAKE_TIMEOUT, "TLS handshake timed out");
            None
        }
    }
}

/// Reads the request head (so closing does not reset the connection before the client reads
/// the answer), answers 400 and closes.
async fn answer_plain_http(tcp: &mut TcpStream) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while head.len() < MAX_PLAIN_REQUEST && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let body = r#"{"error":"this port speaks HTTPS: use https://"}"#;
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(answer.as_bytes()).await?;
    tcp.shutdown().await
}
