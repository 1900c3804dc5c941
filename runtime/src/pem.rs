//! Certificates and private keys from PEM files, for the TLS set-up of both sides. Errors name
//! the flag and the file, since that is what the operator has to fix.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A PEM file that cannot be used: missing, unreadable, or without what it should hold.
#[derive(Debug, thiserror::Error)]
#[error("cannot use {flag} {}: {reason}", path.display())]
pub struct PemError {
    /// The option that named the file, e.g. `--tls-cert`.
    pub flag: &'static str,
    pub path: PathBuf,
    pub reason: String,
}

/// Every certificate in the PEM file at `path` (given as `flag`), in file order; at least one.
pub fn certificates(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let error = |reason: String| PemError {
        flag,
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(format!("not valid PEM ({e})")))?;
    if certs.is_empty() {
        return Err(error(
            "no certificate found (expected PEM \"BEGIN CERTIFICATE\" blocks)".to_owned(),
        ));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in the PEM file at `path` (given as `flag`).
pub fn private_key(flag: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let error = |reason: String| PemError {
        flag,
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            error("no private key found (expected a PEM \"PRIVATE KEY\" block)".to_owned())
        }
        e => error(format!("not valid PEM ({e})")),
    })
}
