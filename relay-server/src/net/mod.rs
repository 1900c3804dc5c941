//! The network edge: the HTTP/1.1 accept loop and what a connection tells handlers about its
//! peer ([`http`]), and TLS termination ([`tls`]). Knows nothing of webhooks or agents.

pub mod http;
pub mod tls;
