//! The agent's error type.

/// Why the agent could not connect or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid --server URL {0:?}: use http://host[:port] or https://host[:port]")]
    ServerUrl(String),
    #[error("invalid --forward URL {0:?}: use http://host[:port][/path] or https://...")]
    ForwardUrl(String),
    #[error(transparent)]
    Channel(#[from] protocol::InvalidChannel),
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("handshake with {url} failed: {reason}")]
    Handshake { url: String, reason: String },
    /// The server refused us for a reason retrying cannot fix (token, version, channel name).
    #[error("server refused the agent: {0}")]
    Refused(String),
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

impl Error {
    /// True when reconnecting cannot help and the agent should stop.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::ServerUrl(_)
                | Error::ForwardUrl(_)
                | Error::Channel(_)
                | Error::Refused(_)
                | Error::Tls(_)
        )
    }
}

/// `err` and its chain of sources, joined by ": ", for a one-line reason.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}
