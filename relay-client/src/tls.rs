//! TLS towards the relay server: which CAs to trust (the system's roots plus `--ca`), the
//! client certificate for a server that asks for one (`--cert`, `--key`), and turning a
//! certificate failure into an error that says what to do. Certificate failures stop the
//! agent: reconnecting does not fix them.

use std::sync::Arc;

use runtime::pem;
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};

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
    if let Some(ca) = &tls.ca {
        for cert in pem::certificates("--ca", ca).map_err(|e| Error::Tls(e.to_string()))? {
            roots
                .add(cert)
                .map_err(|e| Error::Tls(format!("cannot use --ca {}: {e}", ca.display())))?;
        }
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
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

/// The error to stop with when `err` (talking to `url`) comes from a certificate the server
/// or we do not accept; `None` for any other failure, which may go away on its own.
pub(crate) fn certificate_failure(
    url: &str,
    err: &(dyn std::error::Error + 'static),
) -> Option<Error> {
    let tls = rustls_error(err)?;
    let hint = match tls {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            Some("pass --ca FILE for a private CA")
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
            "TLS handshake with relay.example.com failed: invalid peer certificate: UnknownIssuer; pass --ca FILE for a private CA"
        );
        assert!(err.is_fatal());
    }

    #[test]
    fn other_failures_are_left_to_retry() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(certificate_failure("wss://h/ws", &io).is_none());
    }
}
