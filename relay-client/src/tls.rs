//! TLS towards the relay server: which certificates to trust (the system's roots plus
//! `--ca`), the client certificate for a server that asks for one (`--cert`, `--key`), and
//! turning a certificate failure into an error that says what to do. Certificate failures
//! stop the agent: reconnecting does not fix them.
//!
//! A `--ca` file may hold CAs, or the server's own certificate (a self-signed one, typically).
//! A server that presents exactly a certificate of the file is trusted for it (pinned), as
//! long as the certificate names the host and is within its dates; any other certificate
//! must chain to the system's roots or to a CA of the file, as usual. Pinning is needed
//! because webpki refuses a CA certificate as a server's certificate (`CaUsedAsEndEntity`),
//! and `openssl req -x509` marks the self-signed certificates it makes as CAs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use runtime::pem;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, OtherError,
    RootCertStore, SignatureScheme,
};

use crate::config::TlsConfig;
use crate::error::Error;

/// The rustls configuration for talking to the server. Installs ring as the process's crypto
/// provider first if none is yet, so in-process callers need no set-up of their own.
pub fn client_config(tls: &TlsConfig) -> Result<Arc<ClientConfig>, Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "cannot load a system root certificate");
    }
    roots.add_parsable_certificates(native.certs);
    let builder = match &tls.ca {
        None => ClientConfig::builder().with_root_certificates(roots),
        Some(ca) => {
            let pinned = pem::certificates("--ca", ca).map_err(|e| Error::Tls(e.to_string()))?;
            for cert in &pinned {
                roots
                    .add(cert.clone())
                    .map_err(|e| Error::Tls(format!("cannot use --ca {}: {e}", ca.display())))?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| Error::Tls(format!("cannot use --ca {}: {e}", ca.display())))?;
            let verifier = PinningVerifier {
                file: ca.clone(),
                pinned,
                webpki,
            };
            ClientConfig::builder()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        }
    };
    let config = match &tls.identity {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            let pem_error = |e: pem::PemError| Error::Tls(e.to_string());
            let certs = pem::certificates("--cert", &identity.cert).map_err(pem_error)?;
            let key = pem::private_key("--key", &identity.key).map_err(pem_error)?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                Error::Tls(format!(
                    "cannot use --key {} with --cert {}: {e}",
                    identity.key.display(),
                    identity.cert.display()
                ))
            })?
        }
    };
    Ok(Arc::new(config))
}

/// Checks the server's certificate when `--ca` is given: one of the file's certificates,
/// presented as it is, is accepted if it names the host and is within its dates; anything
/// else goes to webpki with the system's roots and the file's certificates as trust anchors.
/// Handshake signatures are always checked by webpki, so a pinned certificate still proves
/// the server holds its key.
#[derive(Debug)]
struct PinningVerifier {
    file: PathBuf,
    pinned: Vec<CertificateDer<'static>>,
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pin_error = |e: PinError| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        };
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return check_pinned(&self.file, end_entity, server_name, now)
                .map(|()| ServerCertVerified::assertion())
                .map_err(pin_error);
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| {
                if is_untrusted(&e) {
                    pin_error(PinError::NotTrusted {
                        file: self.file.clone(),
                    })
                } else {
                    e
                }
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// True when webpki found no trusted issuer for the certificate, or found it is a CA (which
/// a self-signed certificate other than the pinned one often is).
fn is_untrusted(e: &rustls::Error) -> bool {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => true,
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            matches!(
                inner.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::CaUsedAsEndEntity)
            )
        }
        _ => false,
    }
}

/// Why a certificate given with `--ca` does not do for this server; each says what to do.
#[derive(Debug, thiserror::Error)]
enum PinError {
    #[error(
        "the server's certificate is neither the one in --ca {} nor signed by it; pass the server's own certificate (its --tls-cert) or the CA that signed it",
        file.display()
    )]
    NotTrusted { file: PathBuf },
    #[error(
        "the certificate pinned with --ca {} is for {names}, not {host}: name one of those in --server, or make the certificate for {host}",
        file.display()
    )]
    OtherName {
        file: PathBuf,
        names: String,
        host: String,
    },
    #[error(
        "the certificate pinned with --ca {} names no host (no subjectAltName): make it for {host}",
        file.display()
    )]
    NoName { file: PathBuf, host: String },
    #[error(
        "the certificate pinned with --ca {} expired on {at}; the server needs a new one, given here with --ca",
        file.display()
    )]
    Expired { file: PathBuf, at: String },
    #[error(
        "the certificate pinned with --ca {} is not valid before {at}: check this machine's clock",
        file.display()
    )]
    NotYetValid { file: PathBuf, at: String },
    #[error("the certificate pinned with --ca {} cannot be read: {reason}", file.display())]
    Unreadable { file: PathBuf, reason: String },
}

/// Checks the dates and names of a pinned certificate. Its signature is not checked: it is
/// trusted because it is byte for byte the one the user gave.
fn check_pinned(
    file: &Path,
    der: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<(), PinError> {
    let file = file.to_owned();
    let unreadable = |reason: String| PinError::Unreadable {
        file: file.clone(),
        reason,
    };
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| unreadable(e.to_string()))?;
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let validity = cert.validity();
    if now < validity.not_before.timestamp() {
        let at = rfc3339(validity.not_before.timestamp());
        return Err(PinError::NotYetValid { file, at });
    }
    if now > validity.not_after.timestamp() {
        let at = rfc3339(validity.not_after.timestamp());
        return Err(PinError::Expired { file, at });
    }
    let parsed = ParsedCertificate::try_from(der).map_err(|e| unreadable(e.to_string()))?;
    if rustls::client::verify_server_name(&parsed, server_name).is_ok() {
        return Ok(());
    }
    let host = server_name.to_str().into_owned();
    let names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    x509_parser::extensions::GeneralName::IPAddress(ip) => ip_text(ip),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        return Err(PinError::NoName { file, host });
    }
    Err(PinError::OtherName {
        file,
        names: names.join(", "),
        host,
    })
}

/// An IP address SAN (4 or 16 bytes) as text.
fn ip_text(bytes: &[u8]) -> Option<String> {
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(ip.to_string())
}

/// Seconds since the epoch as `2021-01-01T00:00:00Z` (times before 1970 as 1970).
fn rfc3339(secs: i64) -> String {
    let secs = u64::try_from(secs).unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// The error to stop with when `err` (talking to `url`) comes from a certificate the server
/// or we do not accept; `None` for any other failure, which may go away on its own.
pub(crate) fn certificate_failure(
    url: &str,
    err: &(dyn std::error::Error + 'static),
) -> Option<Error> {
    let tls = rustls_error(err)?;
    if let rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) = tls
        && let Some(pin) = inner.downcast_ref::<PinError>()
    {
        return Some(Error::TlsHandshake {
            host: host_of(url),
            reason: pin.to_string(),
        });
    }
    let hint = match tls {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => Some(
            "pass --ca FILE for a private CA (or the server's own certificate, if self-signed)",
        ),
        e if is_untrusted(e) => {
            // webpki's own words here are `Other(OtherError(CaUsedAsEndEntity))`.
            return Some(Error::TlsHandshake {
                host: host_of(url),
                reason: "the server's certificate is a CA certificate, as self-signed ones often are; pass that certificate with --ca FILE to pin it".to_owned(),
            });
        }
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => Some("the certificate does not name this host: check --server"),
        rustls::Error::InvalidCertificate(_) => None,
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
            Some("the server requires a client certificate: pass --cert FILE --key FILE")
        }
        rustls::Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied,
        ) => Some(
            "the server did not accept the client certificate: --cert must be signed by the server's --client-ca",
        ),
        _ => return None,
    };
    let reason = match hint {
        Some(hint) => format!("{tls}; {hint}"),
        None => tls.to_string(),
    };
    Some(Error::TlsHandshake {
        host: host_of(url),
        reason,
    })
}

/// The rustls error somewhere in `err`'s chain. `io::Error` hides the error it wraps from
/// `source()` (and may wrap another `io::Error`), so it is opened with `get_ref`.
fn rustls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// The host of `url`, for messages; the URL itself when it has none.
fn host_of(url: &str) -> String {
    url.parse::<http::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(str::to_owned))
        .unwrap_or_else(|| url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_issuer_inside_an_io_error_says_to_pass_ca() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let err = certificate_failure("wss://relay.example.com/ws", &io).expect("certificate");
        assert_eq!(
            err.to_string(),
            "TLS handshake with relay.example.com failed: invalid peer certificate: UnknownIssuer; pass --ca FILE for a private CA (or the server's own certificate, if self-signed)"
        );
        assert!(err.is_fatal());
    }

    #[test]
    fn other_failures_are_left_to_retry() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(certificate_failure("wss://h/ws", &io).is_none());
    }
}
