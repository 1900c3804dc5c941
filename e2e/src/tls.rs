//! Certificates for the TLS tests, made with rcgen and written to a temporary directory, and
//! an HTTPS client that trusts them.
//!
//! Uses relay-server (for its `Config`) and no other crate of ours, so relay-server's own tests
//! compile this file too (see the crate docs).

use std::convert::Infallible;
use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use relay_server::{Config, TlsConfig};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A certificate authority for one test.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("key");
        let pem = params.self_signed(&key).expect("CA certificate").pem();
        Self {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self, name: &str) -> Leaf {
        self.leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            name,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate, as an agent presents it.
    pub fn client(&self, name: &str) -> Leaf {
        self.leaf(Vec::new(), name, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, names: Vec<String>, name: &str, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params = CertificateParams::new(names).expect("valid names");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// A temporary directory of PEM files.
pub struct Files(pub tempfile::TempDir);

impl Default for Files {
    fn default() -> Self {
        Self::new()
    }
}

impl Files {
    pub fn new() -> Self {
        Self(tempfile::tempdir().expect("tempdir"))
    }

    /// Writes `pem` to `name` by renaming a finished file over it, as certbot's symlink swap
    /// would: a reader never sees half a file.
    pub fn write(&self, name: &str, pem: &str) -> PathBuf {
        let path = self.0.path().join(name);
        let partial = self.0.path().join(format!("{name}.partial"));
        std::fs::write(&partial, pem).expect("write PEM");
        std::fs::rename(&partial, &path).expect("rename PEM");
        path
    }
}

/// Server TLS settings with `leaf`, optionally requiring agents' certificates from `client_ca`.
pub fn tls_config(files: &Files, leaf: &Leaf, client_ca: Option<&Ca>) -> Config {
    Config {
        tls: Some(TlsConfig {
            cert: files.write("server.pem", &leaf.cert),
            key: files.write("server.key", &leaf.key),
            client_ca: client_ca.map(|ca| files.write("agents-ca.pem", &ca.pem)),
        }),
        ..Config::default()
    }
}

pub type HttpsClient = Client<HttpsConnector<HttpConnector>, BoxBody<Bytes, Infallible>>;

pub fn roots(cas: &[&Ca]) -> rustls::RootCertStore {
    pem_roots(cas.iter().map(|ca| ca.pem.as_str()))
}

/// The root store of the PEM certificates `pems`.
pub fn pem_roots<'a>(pems: impl IntoIterator<Item = &'a str>) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for pem in pems {
        roots
            .add(CertificateDer::from_pem_slice(pem.as_bytes()).expect("CA PEM"))
            .expect("CA accepted");
    }
    roots
}

/// A webhook sender: HTTPS trusting `ca`, no client certificate.
pub fn https_client(ca: &Ca) -> HttpsClient {
    https_client_trusting(roots(&[ca]))
}

/// A webhook sender: HTTPS trusting `roots` only, no client certificate.
pub fn https_client_trusting(roots: rustls::RootCertStore) -> HttpsClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(https)
}
