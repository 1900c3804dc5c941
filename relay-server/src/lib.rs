//! hookrelay's relay server: webhooks arrive on `/h/{channel}/...`, travel over a WebSocket to
//! an agent (`relay-client`) that replays them against a local target, and the target's answer
//! returns to the sender.
//!
//! [`serve`] runs the server on a bound listener until a shutdown token fires, then drains.
//!
//! Where things are, outside in: `net` (the accept loop, TLS, a connection's peer), `routes`
//! (each HTTP request translated for the part that does the work, and its answer back),
//! `relay` (the delivery engine: what happens to a webhook and to every attempt at it),
//! `agents` (WebSocket sessions, who serves which channel, the frames on the wire), `store`
//! (every webhook and attempt), `channel` (the channel model) and `channels` (the registered
//! ones), `config`; and beside them `auth`, `limits`, `disk`, `verify`, `feed` and `metrics`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

mod agents;
mod auth;
mod channel;
mod channels;
mod clock;
pub mod config;
mod disk;
mod error;
mod event_type;
mod feed;
mod limits;
mod metrics;
mod net;
mod relay;
mod routes;
pub mod store;
mod systemd;
mod verify;

pub use channels::command::run as channels_command;
pub use config::Config;
pub use config::args::Args;
pub use net::acme::AcmeConfig;
pub use net::http::HttpLimits;
pub use net::tls::TlsConfig;
pub use routes::app;
pub use store::{Store, StoreConfig};

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Tls(#[from] net::tls::TlsError),
    #[error(transparent)]
    Acme(#[from] net::acme::AcmeError),
    #[error("cannot listen on {addr} for --acme-http-listen: {source}")]
    AcmeHttpListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} for --metrics-listen: {source}")]
    MetricsListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Everything a handler needs, shared by all of them.
#[derive(Debug)]
pub struct ServerState {
    pub(crate) config: Config,
    /// Base of the webhook URLs handed to agents, without a trailing slash.
    pub(crate) public_url: String,
    /// This server's name (`--node-id`).
    pub(crate) node_id: String,
    pub(crate) registry: agents::registry::Registry,
    /// Every webhook accepted and every attempt to deliver it.
    pub(crate) store: Arc<dyn Store>,
    /// Drains the queue of each channel an agent serves.
    pub(crate) dispatcher: relay::dispatch::Dispatcher,
    /// Senders waiting for another node's answer (see [`relay::handover`]).
    pub(crate) handovers: relay::handover::Waiting,
    /// The other nodes' agents, as this node's last lease renewal read them.
    pub(crate) elsewhere: agents::leases::Elsewhere,
    /// Cancelled when shutdown begins. Streams with no natural end (the live feed) end on it,
    /// so draining waits only for webhooks in flight, and `/readyz` answers 503 from then on.
    pub(crate) shutdown: CancellationToken,
    /// Cancelled after the HTTP side has drained: agent sessions then close with 1001.
    pub(crate) agents_shutdown: CancellationToken,
    /// Agent sessions, queue drains and attempt records, awaited (with a bound) at shutdown.
    pub(crate) tracker: TaskTracker,
    /// Registered channels, as last read from the store.
    pub(crate) channels: channels::Directory,
    /// Every webhook stored and attempt recorded, as it happens (the store publishes here).
    pub(crate) feed: Arc<feed::Feed>,
    /// Whether agents may take channels nobody registered (see [`auth`]).
    pub(crate) open: bool,
    /// Wrong tokens per source address.
    pub(crate) auth_failures: auth::FailureLimiter,
    /// The delivery pace of each channel.
    pub(crate) paces: limits::Paces,
    /// Webhooks nobody vouches for, per source address (on a public relay only).
    pub(crate) source_limits: limits::SourceLimits,
    /// Free space in the data dir.
    pub(crate) disk: disk::DiskGuard,
    /// One permit per webhook being handled (`--max-in-flight`).
    pub(crate) ingress_slots: tokio::sync::Semaphore,
    pub(crate) metrics: metrics::Metrics,
    /// The ACME certificate's status, set once at start-up when ACME is on.
    pub(crate) acme: std::sync::OnceLock<Arc<net::acme::AcmeStatus>>,
}

pub type AppState = Arc<ServerState>;

/// Who can reach the server, as decided at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// Open mode: any agent may take a channel nobody registered.
    pub open: bool,
    /// Others can reach it: it listens beyond loopback, or `--public-url` names another host.
    /// Only then are webhooks limited per source address.
    pub public: bool,
}

impl ServerState {
    pub fn new(
        config: Config,
        public_url: String,
        store: Arc<dyn Store>,
        reach: Reach,
        shutdown: CancellationToken,
    ) -> AppState {
        let feed = Arc::new(feed::Feed::default());
        let store: Arc<dyn Store> = Arc::new(feed::Observed::new(store, Arc::clone(&feed)));
        let data_dir = match &config.store {
            StoreConfig::Sqlite { dir, .. } => Some(dir.clone()),
            StoreConfig::Postgres(_) | StoreConfig::Memory => None,
        };
        Arc::new(Self {
            feed,
            auth_failures: auth::FailureLimiter::new(config.auth_failures, config.auth_window),
            paces: limits::Paces::new(config.rate_limit),
            source_limits: limits::SourceLimits::new(
                config.source_rate_limit.filter(|_| reach.public),
            ),
            disk: disk::DiskGuard::new(data_dir, config.min_free_space),
            metrics: metrics::Metrics::default(),
            ingress_slots: tokio::sync::Semaphore::new(config.max_in_flight),
            channels: channels::Directory::default(),
            open: reach.open,
            node_id: config::node_id(config.node_id.as_deref()),
            config,
            public_url,
            registry: agents::registry::Registry::default(),
            store,
            dispatcher: relay::dispatch::Dispatcher::default(),
            handovers: relay::handover::Waiting::default(),
            elsewhere: agents::leases::Elsewhere::default(),
            shutdown,
            agents_shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            acme: std::sync::OnceLock::new(),
        })
    }
}

/// Opens the store, then serves on `listener` until `shutdown` is cancelled, then shuts down
/// gracefully: stops accepting, lets in-flight webhooks finish (at most
/// `config.shutdown_grace`), then closes agent sessions with "going away" so agents reconnect
/// to the next instance. Fails at once when the store cannot be opened or, with
/// `config.tls`, the certificate, key or client CA cannot be used.
///
/// With `config.tls` the listener speaks HTTPS and re-reads the certificate and key on SIGHUP
/// (connections already open are not affected). With `config.acme` it speaks HTTPS with a
/// certificate from the ACME CA, cached, renewed and swapped in for new handshakes; until the
/// first one is there only the CA's challenge handshakes succeed and `/readyz` says so, and
/// failures with the CA are retried, never returned. Handlers see the peer as
/// `ConnectInfo<net::http::Peer>` either way.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let addr = listener.local_addr()?;
    // The command line refuses both; a Config built in code with both serves the files.
    let acme = match (&config.tls, &config.acme) {
        (None, Some(acme)) => Some(net::acme::Acme::new(acme)?),
        _ => None,
    };
    let certs = match (&config.tls, &acme) {
        (Some(files), _) => Some(net::tls::Certificates::load(files.clone())?),
        (None, Some(acme)) => Some(net::tls::Certificates::resolved(
            acme.resolver(),
            config.acme.as_ref().and_then(|a| a.client_ca.as_deref()),
        )?),
        (None, None) => None,
    };
    // With ACME the certificate's first name is the public one, unless --public-url says
    // otherwise; open mode and the per-source limits then treat the relay as public.
    let named_url = config.public_url.clone().or_else(|| {
        let domain = config
            .acme
            .as_ref()
            .filter(|_| acme.is_some())?
            .domains
            .first()?;
        Some(net::acme::public_url(domain, addr.port()))
    });
    // Registered before the "listening" line, so a SIGHUP sent once that line is logged
    // reloads instead of killing the process (`systemctl reload` sends one, TLS or not).
    #[cfg(unix)]
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let public_url = named_url
        .clone()
        .unwrap_or_else(|| config::derive_public_url(addr, certs.is_some()));
    let grace = config.shutdown_grace;
    let store = store::open(&config.store, config.quota).await?;
    let (open, why) = open_mode(config.open, addr, named_url.as_deref());
    let public = is_public(addr, named_url.as_deref());
    if !config.declared_channels.is_empty() {
        let (created, updated) =
            channels::declare(store.as_ref(), &config.declared_channels).await?;
        info!(
            declared = config.declared_channels.len(),
            created, updated, "channels from the config file"
        );
    }
    let reach = Reach { open, public };
    let state = ServerState::new(config, public_url, store, reach, shutdown.clone());
    channels::reload(&state).await?;
    let client_ca = match (&state.config.tls, &state.config.acme) {
        (Some(files), _) => {
            info!(cert = %files.cert.display(), "TLS on: serving HTTPS; SIGHUP reloads the certificate");
            files.client_ca.as_ref()
        }
        (None, Some(acme)) => {
            info!(domains = ?acme.domains, "TLS on: serving HTTPS with a certificate from ACME");
            acme.client_ca.as_ref()
        }
        (None, None) => {
            info!("TLS off: serving plain HTTP (put a TLS-terminating proxy in front)");
            None
        }
    };
    if let Some(ca) = client_ca {
        info!(client_ca = %ca.display(), "agents need a client certificate signed by --client-ca");
    }
    info!(%addr, public_url = %state.public_url, store = %state.config.store, node = %state.node_id, "relay server listening");
    state.metrics.node(&state.node_id);
    if open {
        info!(
            registered_channels = state.channels.len(),
            "open mode on ({why}): any agent may take an unregistered channel; registered ones need their token"
        );
    } else {
        info!(
            registered_channels = state.channels.len(),
            "open mode off ({why}): agents need a channel made with `relay-server channels create` (--open true allows any agent)"
        );
    }
    if let Some(addr) = state.config.metrics_listen {
        let metrics = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::MetricsListen { addr, source })?;
        let bound = metrics.local_addr()?;
        info!(metrics_addr = %bound, "/metrics (without a token), /healthz and /readyz on this address");
        state.tracker.spawn(net::http::serve(
            net::http::PlainListener(metrics),
            routes::metrics_app(Arc::clone(&state)),
            state.config.http,
            count_refusals(&state),
            shutdown.clone(),
        ));
    }
    if let Some(acme) = acme {
        if let Some(addr) = state.config.acme.as_ref().and_then(|a| a.http_listen) {
            let http = TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::AcmeHttpListen { addr, source })?;
            let bound = http.local_addr()?;
            info!(acme_http_addr = %bound, "HTTP-01 challenges on this address; other requests are redirected to HTTPS");
            state.tracker.spawn(net::http::serve(
                net::http::PlainListener(http),
                net::acme::http_app(acme.resolver(), state.public_url.clone()),
                state.config.http,
                count_refusals(&state),
                shutdown.clone(),
            ));
        }
        let _ = state.acme.set(acme.status());
        state.tracker.spawn(acme.run(shutdown.clone()));
    }
    state.tracker.spawn(prune(Arc::clone(&state)));
    state
        .tracker
        .spawn(agents::leases::renew(Arc::clone(&state)));
    state
        .tracker
        .spawn(relay::handover::serve(Arc::clone(&state)));
    state.tracker.spawn(disk::watch(Arc::clone(&state)));
    state.tracker.spawn(channels::watch(Arc::clone(&state)));
    #[cfg(unix)]
    state
        .tracker
        .spawn(reload_on_hangup(Arc::clone(&state), certs.clone(), hangup));
    let status = format!("serving on {addr}, public URL {}", state.public_url);
    systemd::ready(&status);
    state
        .tracker
        .spawn(systemd::watchdog(state.agents_shutdown.clone()));
    state.tracker.spawn(systemd::stopping(shutdown.clone()));

    let router = app(Arc::clone(&state));
    let limits = state.config.http;
    let server: Pin<Box<dyn Future<Output = ()> + Send>> = match certs {
        Some(certs) => Box::pin(net::http::serve(
            net::tls::TlsListener::new(listener, certs),
            router,
            limits,
            count_refusals(&state),
            shutdown.clone(),
        )),
        None => Box::pin(net::http::serve(
            net::http::PlainListener(listener),
            router,
            limits,
            count_refusals(&state),
            shutdown.clone(),
        )),
    };
    let drain_deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        () = server => {}
        () = drain_deadline => warn!(?grace, "in-flight webhooks did not finish in time"),
    }

    state.agents_shutdown.cancel();
    state.tracker.close();
    if tokio::time::timeout(std::time::Duration::from_secs(5), state.tracker.wait())
        .await
        .is_err()
    {
        warn!("agent sessions did not close in time");
    }
    info!("relay server stopped");
    Ok(())
}

/// Whether open mode is on, and why: as configured, else on only when nobody else can reach
/// the server: it listens on loopback, and no `--public-url` names another host (a server on
/// loopback behind a reverse proxy is public all the same). Secure by default.
/// Counts the requests hyper refused before routing (head too large, URI too long, not HTTP)
/// in `hookrelay_rejected_total`.
fn count_refusals(state: &AppState) -> net::http::OnRefusal {
    let state = Arc::clone(state);
    Arc::new(move |refusal: net::http::Refusal| state.metrics.rejected(refusal.reason()))
}

fn open_mode(
    configured: Option<bool>,
    addr: SocketAddr,
    public_url: Option<&str>,
) -> (bool, &'static str) {
    match configured {
        Some(open) => (open, "as --open says"),
        None if !addr.ip().is_loopback() => (false, "listening on a non-loopback address"),
        None if is_public(addr, public_url) => (
            false,
            "--public-url names a public host (a reverse proxy in front)",
        ),
        None => (true, "listening on loopback only"),
    }
}

/// Whether others can reach a server listening on `addr` with `public_url`: the same test as
/// [`open_mode`]'s default.
fn is_public(addr: SocketAddr, public_url: Option<&str>) -> bool {
    !addr.ip().is_loopback() || public_url.is_some_and(|url| !is_loopback_url(url))
}

/// Whether `url`'s host is loopback (`localhost`, 127.0.0.0/8, `[::1]`).
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// On every SIGHUP until shutdown: re-reads the channels from the store and, with TLS, the
/// certificate and key.
#[cfg(unix)]
async fn reload_on_hangup(
    state: AppState,
    certs: Option<net::tls::Certificates>,
    mut hangup: tokio::signal::unix::Signal,
) {
    loop {
        tokio::select! {
            got = hangup.recv() => if got.is_none() { return },
            () = state.agents_shutdown.cancelled() => return,
        }
        info!("SIGHUP: reloading");
        if let Err(e) = channels::reload(&state).await {
            warn!(error = %e, "cannot reload channels");
        }
        if let Some(certs) = &certs {
            net::tls::reload_certificates(certs).await;
        }
    }
}

/// Applies retention: at start-up, then every `prune_interval`, until shutdown.
async fn prune(state: AppState) {
    let mut every = tokio::time::interval(state.config.prune_interval);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = state.agents_shutdown.cancelled() => return,
        }
        state.paces.sweep(&state.channels);
        state.source_limits.sweep();
        let retention = i64::try_from(state.config.retention.as_millis()).unwrap_or(i64::MAX);
        let cutoff = store::now_ms().saturating_sub(retention);
        match state
            .store
            .prune(cutoff, state.config.max_events_per_channel)
            .await
        {
            Ok(0) => {}
            Ok(deleted) => info!(deleted, "old events pruned"),
            Err(e) => warn!(error = %e, "pruning failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_mode_is_on_by_default_only_on_loopback() {
        let addr = |s: &str| s.parse::<SocketAddr>().expect("literal");
        let local = addr("127.0.0.1:8080");
        assert!(open_mode(None, local, None).0);
        assert!(open_mode(None, addr("[::1]:8080"), None).0);
        assert!(!open_mode(None, addr("0.0.0.0:8080"), None).0);
        assert!(!open_mode(None, addr("[::]:8080"), None).0);
        assert!(!open_mode(None, addr("192.0.2.10:443"), None).0);
        assert!(open_mode(Some(true), addr("0.0.0.0:8080"), None).0);
        assert!(!open_mode(Some(false), local, None).0);
        // Behind a reverse proxy: loopback, but public.
        assert!(!open_mode(None, local, Some("https://relay.example.com")).0);
        assert!(!open_mode(None, local, Some("http://192.0.2.1:8080/")).0);
        for url in [
            "http://localhost:8080",
            "http://127.0.0.1",
            "http://[::1]:9000/x",
            "http://LOCALHOST",
        ] {
            assert!(open_mode(None, local, Some(url)).0, "{url}");
        }
    }
}
