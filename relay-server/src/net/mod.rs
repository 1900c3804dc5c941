//! The network edge: the HTTP/1.1 accept loop and what a connection tells handlers about its
//! peer ([`http`]), TLS termination ([`tls`]) and certificates from an ACME CA ([`acme`]).
//! Knows nothing of webhooks or agents.

pub mod acme;
pub mod http;
pub mod tls;
