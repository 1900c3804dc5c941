//! Certificates from an ACME CA (Let's Encrypt by default): ordered, cached under the data dir,
//! renewed and served without a file or a proxy.
//!
//! The ACME protocol itself is rustls-acme's: it answers TLS-ALPN-01 challenges from the
//! certificate resolver the TLS listener uses, so the one TLS port is all a CA needs to reach
//! (or, with `--acme-http-listen`, HTTP-01 challenges from [`http_app`]); it starts renewing once less than a third of the certificate's lifetime is left, and retries
//! a failed order with exponential backoff. This module gives it a cache whose files only the
//! server's user can read, a client that also trusts `--acme-ca`, and turns its events into
//! logs, `/readyz` and the expiry metric.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls_acme::{AccountCache, CertCache, EventOk, ResolvesServerCertAcme, UseChallenge};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use runtime::pem::{self, PemError};

/// Let's Encrypt's production directory, the default of `--acme-directory`.
pub const LETS_ENCRYPT: &str = rustls_acme::acme::LETS_ENCRYPT_PRODUCTION_DIRECTORY;
/// Let's Encrypt's staging directory (`--acme-directory letsencrypt-staging`): untrusted
/// certificates under far higher rate limits, for trying a set-up out.
pub const LETS_ENCRYPT_STAGING: &str = rustls_acme::acme::LETS_ENCRYPT_STAGING_DIRECTORY;

/// What to ask an ACME CA for, and where to keep what it gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// The names on the certificate; the first one is the public URL's host by default.
    pub domains: Vec<String>,
    /// Contact address given to the CA (it warns there before a certificate expires).
    pub email: Option<String>,
    /// The CA's directory URL.
    pub directory: String,
    /// A CA (PEM) trusted, besides the public roots, when talking to the ACME server: for a
    /// private one such as Pebble or step-ca.
    pub ca: Option<PathBuf>,
    /// Where the account key and the certificates are kept (`--data-dir/acme`).
    pub cache_dir: PathBuf,
    /// CA (PEM) that agents' client certificates must chain to, as with `--tls-cert`.
    pub client_ca: Option<PathBuf>,
    /// Where to answer HTTP-01 challenges (and redirect everything else to HTTPS) instead of
    /// TLS-ALPN-01 on the TLS listener.
    pub http_listen: Option<SocketAddr>,
}

/// Why ACME cannot start. Problems with the CA itself are not among them: those are logged
/// and retried while the server runs.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("cannot use --acme-ca {path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("cannot create the ACME cache directory {path}: {source}")]
    CacheDir { path: String, source: io::Error },
}

/// The certificate being served, as `/readyz` and the metrics see it.
#[derive(Debug)]
pub struct AcmeStatus {
    domains: Vec<String>,
    /// Expiry of the certificate being served (Unix seconds); `None` before the first.
    not_after: Mutex<Option<i64>>,
}

impl AcmeStatus {
    /// The names on the certificate.
    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    /// When the certificate being served expires (Unix seconds), if there is one.
    pub fn not_after(&self) -> Option<i64> {
        *self
            .not_after
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a certificate that has not expired is being served.
    pub fn has_certificate(&self) -> bool {
        self.not_after().is_some_and(|t| t > unix_now())
    }

    fn set(&self, not_after: i64) {
        *self
            .not_after
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(not_after);
    }
}

/// ACME, set up and ready to run: [`Acme::resolver`] goes into the TLS configuration, and
/// [`Acme::run`] orders and renews until shutdown.
pub struct Acme {
    state: rustls_acme::AcmeState<io::Error>,
    /// The certificate the cache read or wrote last (see [`DirCache`]).
    latest: Latest,
    status: Arc<AcmeStatus>,
    directory: String,
}

/// The PEM the cache read or wrote last.
type Latest = Arc<Mutex<Option<Vec<u8>>>>;

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme")
            .field("directory", &self.directory)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Acme {
    /// Reads `--acme-ca` and creates the cache directory (mode 0700); contacts nobody yet.
    pub fn new(config: &AcmeConfig) -> Result<Self, AcmeError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &config.ca {
            for cert in pem::certificates("--acme-ca", path)? {
                roots.add(cert).map_err(|e| AcmeError::Ca {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
            }
        }
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        create_private_dir(&config.cache_dir).map_err(|source| AcmeError::CacheDir {
            path: config.cache_dir.display().to_string(),
            source,
        })?;
        let latest = Latest::default();
        let cache = DirCache {
            dir: config.cache_dir.clone(),
            latest: Arc::clone(&latest),
        };
        let state =
            rustls_acme::AcmeConfig::new_with_client_config(&config.domains, Arc::new(client))
                .contact(config.email.iter().map(|e| format!("mailto:{e}")))
                .directory(&config.directory)
                .challenge_type(if config.http_listen.is_some() {
                    UseChallenge::Http01
                } else {
                    UseChallenge::TlsAlpn01
                })
                .cache(cache)
                .state();
        Ok(Self {
            state,
            latest,
            status: Arc::new(AcmeStatus {
                domains: config.domains.clone(),
                not_after: Mutex::new(None),
            }),
            directory: config.directory.clone(),
        })
    }

    /// Picks the certificate for each handshake: the current one, or a TLS-ALPN-01 challenge
    /// certificate for a CA's validation handshake. Before the first certificate it has none
    /// for ordinary handshakes, which then fail.
    pub fn resolver(&self) -> Arc<ResolvesServerCertAcme> {
        self.state.resolver()
    }

    /// The certificate's status, shared with `/readyz` and the metrics.
    pub fn status(&self) -> Arc<AcmeStatus> {
        Arc::clone(&self.status)
    }

    /// Loads the cached certificate or orders one, then renews it when a third of its lifetime
    /// is left, until `shutdown`. Every failure is logged with what the CA answered and
    /// retried after a growing delay (1 s doubling up to about 18 h); it never ends the
    /// server.
    pub async fn run(mut self, shutdown: CancellationToken) {
        info!(
            domains = ?self.status.domains,
            directory = %self.directory,
            "ACME on: loading the cached certificate or ordering one"
        );
        loop {
            // Cancel-safe: the state keeps its order and timers in itself, not in the
            // future `next` returns.
            let event = tokio::select! {
                event = self.state.next() => event,
                () = shutdown.cancelled() => return,
            };
            match event {
                None => return,
                Some(Ok(EventOk::DeployedCachedCert)) => {
                    self.update_status();
                    info!(
                        not_after = self.status.not_after(),
                        "serving the cached ACME certificate"
                    );
                }
                Some(Ok(EventOk::DeployedNewCert)) => {
                    info!(domains = ?self.status.domains, "new certificate from ACME: serving it");
                }
                Some(Ok(EventOk::CertCacheStore)) => {
                    self.update_status();
                    info!(
                        not_after = self.status.not_after(),
                        "ACME certificate stored in the cache"
                    );
                }
                Some(Ok(EventOk::AccountCacheStore)) => debug!("ACME account key stored"),
                Some(Err(e @ rustls_acme::EventError::CertCacheStore(_))) => {
                    // Served all the same; the next start orders again.
                    self.update_status();
                    warn!(error = %e, "cannot store the ACME certificate in the cache");
                }
                Some(Err(e)) => {
                    // The error names the CA's answer; an invalid authorization or order
                    // carries its problem documents as well, logged on their own.
                    let problems = problems(&e);
                    if problems.is_empty() {
                        error!(error = %e, "ACME failed; retrying with backoff");
                    } else {
                        let problem = problems.join("; ");
                        error!(%problem, error = %e, "ACME failed; retrying with backoff");
                    }
                }
            }
        }
    }

    /// Reads the expiry of the certificate the cache saw last, which is the one served.
    fn update_status(&self) {
        let latest = self
            .latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match latest.as_deref().map(not_after) {
            Some(Some(t)) => self.status.set(t),
            Some(None) => warn!("the ACME certificate's expiry cannot be read"),
            None => {}
        }
    }
}

/// The problem documents (RFC 8555 section 6.7) in a failed order or authorization, each as
/// `type: detail`. Errors of any other request already carry the CA's answer in their text.
fn problems(e: &rustls_acme::EventError<io::Error, io::Error>) -> Vec<String> {
    use rustls_acme::OrderError;
    let found: Vec<&rustls_acme::acme::Problem> = match e {
        rustls_acme::EventError::Order(OrderError::BadAuth(auth)) => auth
            .challenges
            .iter()
            .filter_map(|c| c.error.as_ref())
            .collect(),
        rustls_acme::EventError::Order(
            OrderError::BadOrder(order) | OrderError::ProcessingTimeout(order),
        ) => order.error.iter().collect(),
        _ => Vec::new(),
    };
    found
        .into_iter()
        .map(|p| {
            format!(
                "{}: {}",
                p.typ.as_deref().unwrap_or("about:blank"),
                p.detail.as_deref().unwrap_or("(no detail)")
            )
        })
        .collect()
}

/// The expiry (Unix seconds) of the first certificate in `pem` (a key, then the chain).
fn not_after(pem: &[u8]) -> Option<i64> {
    let der = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The account key and certificates (each with its private key) as files in one directory,
/// readable by the server's user only. The certificate last read or written is kept for
/// [`Acme::update_status`], since rustls-acme hands out none.
struct DirCache {
    dir: PathBuf,
    latest: Latest,
}

impl DirCache {
    /// `{kind}-{hash}.pem`, the hash over `names` and the directory URL, so another CA or
    /// another set of names never picks up this one's file.
    fn path(&self, kind: &str, names: &[String], directory: &str) -> PathBuf {
        let mut hash = Sha256::new();
        for name in names {
            hash.update(name.as_bytes());
            hash.update([0]);
        }
        hash.update(directory.as_bytes());
        let hex: String = hash.finalize()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir.join(format!("{kind}-{hex}.pem"))
    }

    async fn read(path: PathBuf) -> io::Result<Option<Vec<u8>>> {
        let read = tokio::task::spawn_blocking(move || match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", path.display()),
            )),
        });
        read.await.map_err(io::Error::other)?
    }

    async fn write(path: PathBuf, bytes: Vec<u8>) -> io::Result<()> {
        tokio::task::spawn_blocking(move || {
            write_private(&path, &bytes).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
            })
        })
        .await
        .map_err(io::Error::other)?
    }

    fn remember(&self, pem: &[u8]) {
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = Some(pem.to_vec());
    }
}

#[async_trait::async_trait]
impl CertCache for DirCache {
    type EC = io::Error;

    async fn load_cert(&self, domains: &[String], directory: &str) -> io::Result<Option<Vec<u8>>> {
        let pem = Self::read(self.path("certificate", domains, directory)).await?;
        if let Some(pem) = &pem {
            self.remember(pem);
        }
        Ok(pem)
    }

    async fn store_cert(&self, domains: &[String], directory: &str, pem: &[u8]) -> io::Result<()> {
        self.remember(pem);
        Self::write(self.path("certificate", domains, directory), pem.to_vec()).await
    }
}

#[async_trait::async_trait]
impl AccountCache for DirCache {
    type EA = io::Error;

    async fn load_account(
        &self,
        contact: &[String],
        directory: &str,
    ) -> io::Result<Option<Vec<u8>>> {
        Self::read(self.path("account", contact, directory)).await
    }

    async fn store_account(
        &self,
        contact: &[String],
        directory: &str,
        key: &[u8],
    ) -> io::Result<()> {
        Self::write(self.path("account", contact, directory), key.to_vec()).await
    }
}

/// Creates `dir` (and its parents) if missing; a directory it creates has mode 0700.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Writes `bytes` to `path` with mode 0600, through a temporary file renamed over it, so a
/// crash never leaves half a key behind.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let partial = path.with_extension("partial");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&partial, path)
}

/// The router of `--acme-http-listen`: the key authorization of the HTTP-01 challenge in
/// progress at `/.well-known/acme-challenge/{token}` (404 for any other token), and a
/// permanent redirect to the same path and query under `public_url` for everything else.
/// The redirect goes to the public URL, never to the request's Host, so it cannot be made to
/// point elsewhere.
pub fn http_app(resolver: Arc<ResolvesServerCertAcme>, public_url: String) -> Router {
    Router::new()
        .route("/.well-known/acme-challenge/{token}", get(challenge))
        .fallback(redirect)
        .with_state(Arc::new(HttpState {
            resolver,
            public_url,
        }))
}

/// What [`http_app`]'s handlers share.
struct HttpState {
    resolver: Arc<ResolvesServerCertAcme>,
    public_url: String,
}

async fn challenge(
    State(state): State<Arc<HttpState>>,
    UrlPath(token): UrlPath<String>,
) -> Response {
    match state.resolver.get_http_01_key_auth(&token) {
        Some(key_auth) => {
            debug!("HTTP-01 challenge answered");
            ([(header::CONTENT_TYPE, "text/plain")], key_auth).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn redirect(State(state): State<Arc<HttpState>>, uri: Uri) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = format!("{}{path}", state.public_url);
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, location)],
    )
        .into_response()
}

/// The public URL of a relay serving `domain` on `port`: the port is left out when it is
/// HTTPS's own.
pub fn public_url(domain: &str, port: u16) -> String {
    if port == 443 {
        format!("https://{domain}")
    } else {
        format!("https://{domain}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_url_names_the_port_unless_it_is_443() {
        assert_eq!(
            public_url("relay.example.com", 443),
            "https://relay.example.com"
        );
        assert_eq!(
            public_url("relay.example.com", 8443),
            "https://relay.example.com:8443"
        );
    }

    #[test]
    fn an_invalid_authorization_is_logged_with_the_cas_problem_document() {
        let auth: rustls_acme::acme::Auth = serde_json::from_value(serde_json::json!({
            "status": "invalid",
            "identifier": { "type": "dns", "value": "relay.example.com" },
            "challenges": [{
                "type": "tls-alpn-01",
                "url": "https://ca.example/chal/1",
                "token": "t",
                "error": {
                    "type": "urn:ietf:params:acme:error:connection",
                    "detail": "192.0.2.1: Connection refused"
                }
            }]
        }))
        .expect("an authorization object");
        let error = rustls_acme::EventError::Order(rustls_acme::OrderError::BadAuth(auth));
        assert_eq!(
            problems(&error),
            ["urn:ietf:params:acme:error:connection: 192.0.2.1: Connection refused"]
        );
    }

    #[tokio::test]
    async fn cache_files_are_private_and_keyed_by_names_and_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = DirCache {
            dir: dir.path().join("acme"),
            latest: Latest::default(),
        };
        create_private_dir(&cache.dir).expect("create");
        let names = ["relay.example.com".to_owned()];
        cache
            .store_cert(&names, LETS_ENCRYPT, b"pem")
            .await
            .expect("store");
        let loaded = cache.load_cert(&names, LETS_ENCRYPT).await.expect("load");
        assert_eq!(loaded.as_deref(), Some(&b"pem"[..]));
        let other = cache
            .load_cert(&names, LETS_ENCRYPT_STAGING)
            .await
            .expect("load");
        assert_eq!(other, None, "another CA's certificate is another file");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode(&cache.dir), 0o700);
            let file = cache.path("certificate", &names, LETS_ENCRYPT);
            assert_eq!(mode(&file), 0o600);
        }
    }
}
