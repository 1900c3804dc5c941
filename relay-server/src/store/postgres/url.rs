//! `--store postgres://...`: the URL as the operator gives it, checked once at start-up, and
//! how it is shown (never with its password) and connected to (plain or TLS).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::{Host, SslMode};

/// How long opening one connection may take when the URL does not say
/// (`connect_timeout=SECONDS`): an unreachable database fails the start, or one webhook's
/// store write, within this, rather than after the system's TCP timeout of minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long sent data may go unacknowledged before a connection counts as dead, when the URL
/// does not say (`tcp_user_timeout`): a database that stops answering mid-query (a network
/// that drops its packets) fails that query, and the webhook waiting on it gets 503, within
/// this, rather than after minutes of TCP retransmissions. Long queries are not cut short:
/// only unacknowledged data counts.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one statement may run when the URL sets no `options`: a write stuck behind a
/// lock (another client holding a channel's row, an operator's long transaction) fails, and
/// its webhook gets 503 within this, rather than hanging until the sender gives up.
const STATEMENT_TIMEOUT: &str = "-c statement_timeout=10s";

/// How long a pooled connection may sit idle before TCP keepalives probe it (libpq's
/// `keepalives_idle`; the system default is two hours), so a dead idle connection is found
/// before a webhook is given it.
const KEEPALIVES_IDLE: Duration = Duration::from_secs(15);

/// A PostgreSQL connection URL, libpq-style: `postgres://user:password@host:port/dbname`
/// (or `postgresql://`), with `?sslmode=` `disable`, `prefer` (the default), `require` or
/// `verify-full`, and the other parameters tokio-postgres knows.
///
/// Its `Display` and `Debug` leave the password out, so the start-up line and any log of the
/// config can show which database is used without giving away how to get in.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    /// Boxed: it is large, and a config enum holds it beside small variants.
    config: Box<tokio_postgres::Config>,
    tls: Tls,
}

/// What `sslmode` asks of TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tls {
    /// `disable`: plain TCP.
    Off,
    /// `prefer`, `require`: encrypted (`prefer` falls back to plain when the server offers
    /// no TLS), the certificate not checked, as libpq does without a root certificate file.
    Unverified,
    /// `verify-full`: the certificate must chain to a root the system trusts and name the host.
    Verified,
}

/// Why a `--store` URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("a PostgreSQL store URL starts with postgres:// or postgresql://")]
    Scheme,
    #[error("sslmode {0:?} is not supported: use disable, prefer, require or verify-full")]
    SslMode(String),
    #[error("not a PostgreSQL URL: {0}")]
    Invalid(String),
    #[error("the URL names no host")]
    NoHost,
}

impl PostgresUrl {
    /// Whether `text` is meant as a PostgreSQL URL (by its scheme), valid or not.
    pub fn is_postgres(text: &str) -> bool {
        ["postgres://", "postgresql://"].iter().any(|scheme| {
            text.get(..scheme.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(scheme))
        })
    }

    /// The connection settings, with [`CONNECT_TIMEOUT`], [`TCP_USER_TIMEOUT`] and
    /// [`STATEMENT_TIMEOUT`] when the URL sets none, and keepalives after [`KEEPALIVES_IDLE`]
    /// unless it sets another idle.
    pub(super) fn config(&self) -> tokio_postgres::Config {
        let mut config = (*self.config).clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        if config.get_options().is_none() {
            config.options(STATEMENT_TIMEOUT);
        }
        // tokio-postgres's own default: the URL set none.
        if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            config.keepalives_idle(KEEPALIVES_IDLE);
        }
        config
    }

    pub(super) fn tls(&self) -> Tls {
        self.tls
    }
}

impl FromStr for PostgresUrl {
    type Err = UrlError;

    fn from_str(text: &str) -> Result<Self, UrlError> {
        if !Self::is_postgres(text) {
            return Err(UrlError::Scheme);
        }
        // tokio-postgres knows disable, prefer and require; verify-full is ours to check, so
        // it is taken out of the query before the rest is parsed.
        let (base, query) = text.split_once('?').unwrap_or((text, ""));
        let mut ssl = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            match pair.split_once('=') {
                Some(("sslmode", mode)) => ssl = Some(mode.to_owned()),
                _ => rest.push(pair),
            }
        }
        let text = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config = tokio_postgres::Config::from_str(&text)
            .map_err(|e| UrlError::Invalid(e.to_string()))?;
        if config.get_hosts().is_empty() {
            return Err(UrlError::NoHost);
        }
        let (mode, tls) = match ssl.as_deref().unwrap_or("prefer") {
            "disable" => (SslMode::Disable, Tls::Off),
            "prefer" => (SslMode::Prefer, Tls::Unverified),
            "require" => (SslMode::Require, Tls::Unverified),
            "verify-full" => (SslMode::Require, Tls::Verified),
            other => return Err(UrlError::SslMode(other.to_owned())),
        };
        config.ssl_mode(mode);
        Ok(PostgresUrl {
            config: Box::new(config),
            tls,
        })
    }
}

impl fmt::Display for PostgresUrl {
    /// `postgres://user@host:port/dbname?sslmode=MODE`, without the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("postgres://")?;
        if let Some(user) = self.config.get_user() {
            write!(f, "{user}@")?;
        }
        let ports = self.config.get_ports();
        for (i, host) in self.config.get_hosts().iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match host {
                Host::Tcp(name) if name.contains(':') => write!(f, "[{name}]")?,
                Host::Tcp(name) => f.write_str(name)?,
                Host::Unix(path) => write!(f, "{}", path.display())?,
            }
            if let Some(port) = ports.get(i).or(ports.first()) {
                write!(f, ":{port}")?;
            }
        }
        if let Some(db) = self.config.get_dbname() {
            write!(f, "/{db}")?;
        }
        let mode = match self.tls {
            Tls::Off => "disable",
            Tls::Unverified if self.config.get_ssl_mode() == SslMode::Prefer => "prefer",
            Tls::Unverified => "require",
            Tls::Verified => "verify-full",
        };
        write!(f, "?sslmode={mode}")
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({self})")
    }
}

/// The rustls client configuration for `tls` (not [`Tls::Off`]), on ring, the one crypto
/// provider of the build.
pub(super) fn client_config(tls: Tls) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match tls {
        Tls::Verified => {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "sslmode=verify-full, but the system trusts no root certificate".into(),
                );
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Tls::Off | Tls::Unverified => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// `sslmode=require` as libpq means it: any certificate will do (the connection is
/// encrypted, not authenticated), but the handshake's signatures are still checked, so the
/// peer holds the key of the certificate it showed.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PostgresUrl, UrlError> {
        text.parse()
    }

    #[test]
    fn a_url_is_shown_without_its_password() {
        let url = parse("postgres://relay:s3cret@db.example:5433/hookrelay?sslmode=require")
            .expect("valid");
        assert_eq!(
            url.to_string(),
            "postgres://relay@db.example:5433/hookrelay?sslmode=require"
        );
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(url.tls(), Tls::Unverified);
        let url = parse("postgresql://relay:pw@127.0.0.1/db?sslmode=disable&application_name=x")
            .expect("valid");
        assert_eq!(
            url.to_string(),
            "postgres://relay@127.0.0.1:5432/db?sslmode=disable"
        );
        assert_eq!(url.tls(), Tls::Off);
        assert_eq!(url.config().get_application_name(), Some("x"));
        assert_eq!(url.config().get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(url.config().get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        assert_eq!(url.config().get_keepalives_idle(), KEEPALIVES_IDLE);
        assert_eq!(url.config().get_options(), Some(STATEMENT_TIMEOUT));
        let own = parse("postgres://u@h/db?tcp_user_timeout=3&keepalives_idle=60").expect("valid");
        assert_eq!(
            own.config().get_tcp_user_timeout(),
            Some(&Duration::from_secs(3))
        );
        assert_eq!(own.config().get_keepalives_idle(), Duration::from_secs(60));
        let own = parse("postgres://u@h/db?options=-c%20statement_timeout%3D1s").expect("valid");
        assert_eq!(own.config().get_options(), Some("-c statement_timeout=1s"));
    }

    #[test]
    fn sslmode_defaults_to_prefer_and_verify_full_checks_the_certificate() {
        let url = parse("postgres://u@h/db").expect("valid");
        assert_eq!(url.tls(), Tls::Unverified);
        assert!(url.to_string().ends_with("?sslmode=prefer"), "{url}");
        let url = parse("postgres://u@h/db?sslmode=verify-full").expect("valid");
        assert_eq!(url.tls(), Tls::Verified);
        assert_eq!(url.config().get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        assert_eq!(parse("mysql://u@h/db"), Err(UrlError::Scheme));
        assert_eq!(
            parse("postgres://u@h/db?sslmode=verify-ca"),
            Err(UrlError::SslMode("verify-ca".to_owned()))
        );
        assert!(matches!(
            parse("postgres://u@h:notaport/db"),
            Err(UrlError::Invalid(_))
        ));
        assert!(PostgresUrl::is_postgres("PostgreSQL://x"));
    }
}
