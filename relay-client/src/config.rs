//! `relay-client`'s command line (each option also a `HOOKRELAY_*` environment variable),
//! validated once into an [`Invocation`]: run the agent, or ask the server about past events.

use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use http::HeaderValue;
pub use protocol::api::EventStatus;
use protocol::{ChannelId, DeliveryId, TypePattern};

use runtime::config_file::{FileErrors, Settings, apply, clap_reason};

use crate::edit::{HeaderEdit, RequestEdit};
use crate::error::Error;
use crate::forward::Target;
use crate::route::{Route, RouteError, Routes, parse_events};

/// Bound on one request to the target, up to its response head, unless configured otherwise.
pub const DEFAULT_TARGET_TIMEOUT: Duration = Duration::from_secs(300);

/// Raw command-line and environment options of `relay-client`.
#[derive(Debug, Parser)]
#[command(
    name = "relay-client",
    version,
    about = "hookrelay agent: receives webhooks from a relay server and replays them against a local target",
    long_about = "hookrelay agent: receives webhooks from a relay server and replays them against a local target.\n\n\
                  Without a subcommand it runs the agent (--forward is required). `events` and \
                  `replay` ask the server about the channel's past webhooks."
)]
pub struct Args {
    /// Configuration file (TOML, keys are these flags' long names); default:
    /// ~/.config/hookrelay/client.toml when it exists. Flags and HOOKRELAY_* variables take
    /// precedence over it.
    #[arg(
        long,
        env = "HOOKRELAY_CLIENT_CONFIG",
        value_name = "FILE",
        global = true
    )]
    pub config: Option<PathBuf>,

    /// Relay server URL; https:// connects with wss://. Repeatable (or comma-separated) for
    /// several relay nodes: the agent connects to the first and, when that connection drops
    /// or fails, tries the next, with the usual backoff. `events` and `replay` ask the first.
    #[arg(
        long,
        env = "HOOKRELAY_SERVER",
        default_value = "http://127.0.0.1:8080",
        value_delimiter = ',',
        action = clap::ArgAction::Append,
        global = true
    )]
    pub server: Vec<String>,

    /// Local target; the delivered path and query are appended (e.g. http://localhost:3000).
    /// Required to run the agent, unless --route gives every target: then the agent takes
    /// only its routes' event types.
    #[arg(long, env = "HOOKRELAY_FORWARD")]
    pub forward: Option<String>,

    /// Take only webhooks of these event types (comma-separated; an entry ending in `*`
    /// matches by prefix: push,pull_request*,payment_intent.*). The relay sends this agent
    /// nothing else, and no webhook without a type. Default: every webhook.
    #[arg(
        long,
        env = "HOOKRELAY_EVENTS",
        value_name = "TYPES",
        value_delimiter = ',',
        action = clap::ArgAction::Append
    )]
    pub events: Vec<String>,

    /// Send webhooks of event type TYPE to URL instead of --forward (repeatable; the first
    /// route that matches wins; TYPE ending in `*` matches by prefix). The delivered path and
    /// query are appended as for --forward. HOOKRELAY_ROUTES takes them comma-separated; the
    /// config file as [[route]] tables with `type` and `url`.
    #[arg(
        long = "route",
        env = "HOOKRELAY_ROUTES",
        value_name = "TYPE=URL",
        value_delimiter = ',',
        action = clap::ArgAction::Append
    )]
    pub routes: Vec<String>,

    /// Channel to serve (without it the server assigns a fresh, unguessable one), or whose
    /// events `events` and `replay` work on (there, a channel's --token alone names it too).
    #[arg(long, env = "HOOKRELAY_CHANNEL", global = true)]
    pub channel: Option<String>,

    /// Serve the live inspector page for this agent's channel on this local address (e.g.
    /// 127.0.0.1:4040), like ngrok's: its API calls go to the server with --token.
    #[arg(long, env = "HOOKRELAY_INSPECT", value_name = "ADDR")]
    pub inspect: Option<std::net::SocketAddr>,

    /// Print the start of the target's response body under each delivery line.
    ///
    /// Shows the body's first 4 KiB, each line indented by two spaces and control characters
    /// escaped (`\u{1b}`), so a body cannot send escape sequences to the terminal. A longer
    /// body ends with `... (N more bytes)`; a body that is not text (not UTF-8, or with a NUL
    /// byte) shows as `(N bytes, not text)`; an empty body, or a delivery that failed, adds
    /// nothing. The value, for `--print-body=false` (which turns off a config file's
    /// `print-body = true`) and HOOKRELAY_PRINT_BODY, is true or false (also 1/0, yes/no,
    /// on/off).
    #[arg(
        long,
        env = "HOOKRELAY_PRINT_BODY",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new(),
        hide_possible_values = true
    )]
    pub print_body: bool,

    /// Token the server requires from agents (also sent to its API as a bearer token). A
    /// registered channel's token (hrt_...) alone also names its channel.
    #[arg(long, env = "HOOKRELAY_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,

    /// Also trust this CA (PEM) for the server's certificate, besides the system's roots: for
    /// a server with a certificate from a private CA. The server's own certificate (a
    /// self-signed one) works too: it is then pinned, accepted as long as it names the host
    /// and is within its dates.
    #[arg(long, env = "HOOKRELAY_CA", value_name = "FILE", global = true)]
    pub ca: Option<PathBuf>,

    /// Client certificate (PEM) for a server that requires one (its --client-ca); needs --key.
    #[arg(long, env = "HOOKRELAY_CERT", value_name = "FILE", global = true)]
    pub cert: Option<PathBuf>,

    /// Private key (PEM) of --cert.
    #[arg(long, env = "HOOKRELAY_KEY", value_name = "FILE", global = true)]
    pub key: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,

    /// `--forward` was typed on the command line (not taken from the environment), so
    /// `relay-client --forward URL replay ID` means the same as `replay ID --forward URL`.
    #[arg(skip)]
    forward_typed: bool,
}

/// Why the command line and the configuration file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// Help, version or a bad flag: clap's own message and exit code.
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error(transparent)]
    File(#[from] FileErrors),
}

/// Turns the file's `[[route]]` tables (`type = "push"`, `url = "http://..."`) into the
/// `TYPE=URL` values `--route` takes, so they are checked and applied like a list of flags.
fn route_tables(file: &mut Settings) -> Result<(), FileErrors> {
    let Some(toml::Value::Array(items)) = file.table.get("route") else {
        return Ok(());
    };
    if !items.iter().any(toml::Value::is_table) {
        return Ok(());
    }
    let mut values = Vec::new();
    let mut errors = Vec::new();
    for (n, item) in items.iter().enumerate() {
        let text = |key: &str| item.get(key).and_then(toml::Value::as_str);
        match (item.as_table().map(|t| t.len()), text("type"), text("url")) {
            (Some(2), Some(kind), Some(url)) => {
                values.push(toml::Value::from(format!("{kind}={url}")))
            }
            _ => errors.push(file.table_error(
                "route",
                n,
                "a [[route]] table has exactly a `type` (string) and a `url` (string)".to_owned(),
            )),
        }
    }
    if !errors.is_empty() {
        return Err(FileErrors(errors));
    }
    file.table
        .insert("route".to_owned(), toml::Value::Array(values));
    Ok(())
}

/// `$XDG_CONFIG_HOME/hookrelay/client.toml` (or `~/.config/...`), if that file exists.
pub fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    let path = base.join("hookrelay").join("client.toml");
    path.exists().then_some(path)
}

/// What to do instead of running the agent.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the channel's recent webhooks, newest first.
    Events {
        /// How many events to show.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        /// Show only events in this state: queued, delivering, delivered, failed, rejected or
        /// unrouted.
        #[arg(long, value_parser = parse_status)]
        status: Option<EventStatus>,
        /// Show only events of this type: an exact type (push, payment_intent.succeeded), or
        /// every type that starts with a prefix, written with a trailing `*` (pull_request*,
        /// payment_intent.*). Events without a type never match.
        #[arg(long = "type", value_name = "TYPE", value_parser = parse_type)]
        event_type: Option<TypePattern>,
    },
    /// Deliver a stored webhook again: through the channel's agent, or with --forward from here.
    ///
    /// The server sends the stored request to an agent serving the channel and records the
    /// attempt in the event's history. With --forward, this command fetches the stored
    /// request and sends it from here to URL instead (with the same method, path, query,
    /// headers and body, plus x-hookrelay-delivery: ID and x-hookrelay-attempt: replay); that
    /// local replay is not recorded on the server: the event's history and the inspector do
    /// not show it.
    ///
    /// With --body-file or --header, the stored request is edited first (method, path and
    /// query stay). Through the server, the edited request is stored as a new event with an
    /// id of its own that names this one as the event it replays, and delivered; the original
    /// event stays as it was. With --forward, the edits are made here and nothing is stored.
    /// When the body changes, a content-length header is set to its new length.
    Replay {
        /// Event id, as `relay-client events` and the agent's delivery lines show it.
        id: uuid::Uuid,
        /// Send the stored request from here to this target instead of through the server
        /// (not recorded on the server). Not read from HOOKRELAY_FORWARD.
        #[arg(long, value_name = "URL")]
        forward: Option<String>,
        /// Replace the body with this file's bytes, exactly as they are (binary is fine).
        #[arg(long, value_name = "FILE")]
        body_file: Option<PathBuf>,
        /// Replace every stored header of this name (in any case) with this one, where the
        /// first of them was, or add it at the end. Repeat the flag for more headers (the
        /// same name twice sends both values). 'Name:' with nothing after the colon removes
        /// the header. content-length, host, hop-by-hop and x-hookrelay-* headers are set
        /// for each request and cannot be edited.
        #[arg(long = "header", value_name = "NAME: VALUE", value_parser = crate::edit::parse_header)]
        headers: Vec<HeaderEdit>,
    },
}

/// `events --status`, with the server's names of the statuses.
fn parse_status(s: &str) -> Result<EventStatus, String> {
    s.parse()
}

/// `events --type`, read as the server reads `?type=`, so a pattern it would refuse is refused
/// here, before any request, with the reason (clap names the flag and the value).
fn parse_type(s: &str) -> Result<TypePattern, String> {
    TypePattern::parse(s).map_err(|e| e.to_string())
}

/// A validated command line.
#[derive(Debug, Clone)]
pub enum Invocation {
    /// Run the agent.
    Agent(AgentConfig),
    /// `relay-client events`: list the channel's events.
    Events { api: ApiTarget, query: EventsQuery },
    /// `relay-client replay ID [--forward URL]`: through the server, or from here to `target`,
    /// with `edit` made to the stored request first.
    Replay {
        api: ApiTarget,
        id: DeliveryId,
        target: Option<Target>,
        edit: RequestEdit,
    },
}

/// Which events `relay-client events` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsQuery {
    pub limit: u32,
    pub status: Option<EventStatus>,
    /// Only events whose type matches (`--type`).
    pub event_type: Option<TypePattern>,
}

impl Args {
    /// Parses the process's command line like [`Parser::parse`] (usage and exit on error),
    /// with the configuration file under it (`--config`, or [`default_config_path`] when it
    /// exists), remembering whether `--forward` was typed or came from the environment.
    pub fn from_command_line() -> Self {
        match Self::load(std::env::args_os().collect(), default_config_path()) {
            Ok(args) => args,
            Err(ArgsError::Clap(e)) => e.exit(),
            Err(ArgsError::File(errors)) => {
                eprintln!("{errors}");
                std::process::exit(2);
            }
        }
    }

    /// [`Args::from_command_line`] for the given arguments (the first is the program name),
    /// reading a configuration file only when `--config` names one.
    pub fn try_from_command_line<I, T>(args: I) -> Result<Self, ArgsError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::load(args.into_iter().map(Into::into).collect(), None)
    }

    fn load(argv: Vec<std::ffi::OsString>, default: Option<PathBuf>) -> Result<Self, ArgsError> {
        let mut matches = Self::command().try_get_matches_from(&argv)?;
        let path = matches.get_one::<PathBuf>("config").cloned().or(default);
        if let Some(path) = path {
            let mut file = Settings::read(&path)?;
            route_tables(&mut file)?;
            // Each value parsed on its own, so an error is the key's.
            let check = |key: &str, value: &str| {
                let alone = ["relay-client".to_owned(), format!("--{key}={value}")];
                Self::command()
                    .try_get_matches_from(alone)
                    .map(drop)
                    .map_err(|e| clap_reason(&e))
            };
            let (flags, errors) = file.flags(&Self::command(), &[], check);
            if !errors.is_empty() {
                return Err(FileErrors(errors).into());
            }
            let (argv, _) = apply(&Self::command(), argv, &matches, &flags);
            matches = Self::command().try_get_matches_from(&argv)?;
        }
        let mut parsed = Self::from_arg_matches(&matches)?;
        parsed.forward_typed = matches.value_source("forward") == Some(ValueSource::CommandLine);
        Ok(parsed)
    }

    /// Checks the options once, for what was asked: the agent needs `--forward`, `events`
    /// and `replay` need `--channel` or `--token`.
    pub fn validate(mut self) -> Result<Invocation, Error> {
        self.server.retain(|server| !server.trim().is_empty());
        let servers = std::mem::take(&mut self.server);
        let Some((first, more)) = servers.split_first() else {
            return Err(Error::ServerUrl(String::new()));
        };
        let token = self.token.filter(|t| !t.is_empty());
        let channel = self.channel.as_deref().map(ChannelId::parse).transpose()?;
        let identity = match (self.cert, self.key) {
            (Some(cert), Some(key)) => Some(Identity { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::ClientCertPair {
                    given: "cert",
                    missing: "key",
                });
            }
            (None, Some(_)) => {
                return Err(Error::ClientCertPair {
                    given: "key",
                    missing: "cert",
                });
            }
        };
        let tls = TlsConfig {
            ca: self.ca,
            identity,
        };
        let api = |command: &'static str| {
            if channel.is_none() && token.is_none() {
                return Err(Error::MissingChannel(command));
            }
            http_url(first)?;
            Ok(ApiTarget {
                command,
                server: first.clone(),
                channel: channel.clone(),
                token: token.clone(),
                tls: tls.clone(),
            })
        };
        match self.command {
            None => {
                let routes = self
                    .routes
                    .iter()
                    .filter(|r| !r.trim().is_empty())
                    .map(|r| Route::parse(r))
                    .collect::<Result<Vec<_>, _>>()?;
                let events = match self.events.is_empty() {
                    true => None,
                    false => Some(parse_events(&self.events)?),
                };
                if self.forward.is_none() && routes.is_empty() {
                    return Err(Error::MissingForward);
                }
                // Without --forward the routes' types are the subscription, which the relay
                // bounds.
                if self.forward.is_none()
                    && events.is_none()
                    && routes.len() > protocol::MAX_PATTERNS
                {
                    return Err(RouteError::TooManyRoutes(routes.len()).into());
                }
                let forward = self.forward.as_deref().map(Target::parse).transpose()?;
                let mut config = AgentConfig::with_routes(
                    first,
                    Routes {
                        routes,
                        forward,
                        events,
                    },
                )?;
                config.channel = channel;
                config.token = token;
                config.tls = tls;
                config.inspect = self.inspect;
                config.print_body = self.print_body;
                config.more_servers = (more.iter())
                    .map(|server| Ok((server.clone(), ws_url(server)?)))
                    .collect::<Result<_, Error>>()?;
                Ok(Invocation::Agent(config))
            }
            Some(Command::Events {
                limit,
                status,
                event_type,
            }) => Ok(Invocation::Events {
                api: api("events")?,
                query: EventsQuery {
                    limit,
                    status,
                    event_type,
                },
            }),
            Some(Command::Replay {
                id,
                forward,
                body_file,
                headers,
            }) => {
                let forward = forward.or(self.forward.filter(|_| self.forward_typed));
                let body = body_file.as_deref().map(read_body_file).transpose()?;
                Ok(Invocation::Replay {
                    api: api("replay")?,
                    id: DeliveryId::from_uuid(id),
                    target: forward.as_deref().map(Target::parse).transpose()?,
                    edit: RequestEdit::new(body, headers)?,
                })
            }
        }
    }
}

/// The bytes of `replay --body-file`, read once at start so a missing file fails before
/// anything is sent.
fn read_body_file(path: &std::path::Path) -> Result<bytes::Bytes, Error> {
    std::fs::read(path)
        .map(bytes::Bytes::from)
        .map_err(|e| Error::BodyFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// How to check the server's certificate and which certificate to show it, for the agent and
/// the history API alike. The default trusts the system's roots and shows none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// A CA (PEM) trusted besides the system's roots.
    pub ca: Option<PathBuf>,
    /// Client certificate for a server with `--client-ca`.
    pub identity: Option<Identity>,
}

/// A client certificate and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The history API `events` and `replay` ask for: of `channel` on `server`, or, without one,
/// of the channel the server maps `token` to (see `history::Api::open`).
#[derive(Debug, Clone)]
pub struct ApiTarget {
    /// `events` or `replay`, for messages.
    pub command: &'static str,
    /// The server as given (`http[s]://host[:port][/prefix]`), already checked.
    pub server: String,
    pub channel: Option<ChannelId>,
    pub token: Option<String>,
    pub tls: TlsConfig,
}

impl ApiTarget {
    /// The API of `channel` on this target's server, with its token and TLS settings.
    pub fn api(&self, channel: ChannelId) -> Result<ApiConfig, Error> {
        ApiConfig::new(&self.server, channel, self.token.clone(), self.tls.clone())
    }
}

/// Where the server's history API is for one channel, and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `http://host[:port][/prefix]/api/channels/{channel}`, no trailing slash.
    pub base_url: String,
    pub channel: ChannelId,
    /// `Bearer TOKEN`, marked sensitive so it never shows in debug output.
    pub authorization: Option<HeaderValue>,
    /// Bound on one API call, answer included.
    pub timeout: Duration,
    pub tls: TlsConfig,
}

impl ApiConfig {
    /// The API of `channel` on `server` (an http/https URL, as for the agent), reached with
    /// `tls`.
    pub fn new(
        server: &str,
        channel: ChannelId,
        token: Option<String>,
        tls: TlsConfig,
    ) -> Result<Self, Error> {
        let authorization = token.as_deref().map(bearer).transpose()?;
        Ok(Self {
            base_url: format!(
                "{}{}",
                http_url(server)?,
                protocol::api::path::channel(&channel)
            ),
            channel,
            authorization,
            timeout: DEFAULT_API_TIMEOUT,
            tls,
        })
    }
}

/// `Bearer TOKEN`, marked sensitive so it never shows in debug output.
pub(crate) fn bearer(token: &str) -> Result<HeaderValue, Error> {
    let mut value = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| Error::Token)?;
    value.set_sensitive(true);
    Ok(value)
}

/// Bound on one call to the server's API. Longer than the server's default `--timeout` (30 s),
/// so a replay waiting on a slow agent ends with the server's answer, not ours.
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(90);

/// Validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The server as given (`http[s]://host[:port][/prefix]`).
    pub server: String,
    /// WebSocket URL of the server's agent endpoint (`ws://host:port/ws`).
    pub ws_url: String,
    /// Further relay nodes (`--server` given more than once), tried in turn after `server`
    /// when a connection drops or fails: each as given, and its WebSocket URL.
    pub more_servers: Vec<(String, String)>,
    /// Where deliveries go (`--forward`, `--route`) and which types the agent takes.
    pub routes: Routes,
    pub channel: Option<ChannelId>,
    pub token: Option<String>,
    /// First reconnect delay; doubles per failed attempt up to `backoff_max`, with jitter.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Interval between WebSocket pings to the server.
    pub ping_interval: Duration,
    /// A server that sends nothing (not even a pong) for this long is considered gone.
    pub peer_timeout: Duration,
    /// Bound on connecting and completing the hello/welcome exchange.
    pub connect_timeout: Duration,
    /// Bound on one request to the target, up to its response head.
    pub target_timeout: Duration,
    /// Bound on finishing in-flight deliveries at shutdown.
    pub shutdown_grace: Duration,
    /// How to check the server's certificate (wss://) and which client certificate to show.
    pub tls: TlsConfig,
    /// Where to serve the inspector page (`--inspect`).
    pub inspect: Option<std::net::SocketAddr>,
    /// Keep the start of each target response body and show it under the delivery line
    /// (`--print-body`). Off by default: then nothing of the body is kept or copied.
    pub print_body: bool,
}

impl AgentConfig {
    /// The history API of `channel` on this agent's server, with its token and TLS settings.
    pub fn api(&self, channel: ChannelId) -> Result<ApiConfig, Error> {
        ApiConfig::new(&self.server, channel, self.token.clone(), self.tls.clone())
    }

    /// Every relay node the agent may connect to, in the order it tries them: each as given,
    /// and its WebSocket URL.
    pub fn servers(&self) -> impl Iterator<Item = (&str, &str)> {
        std::iter::once((self.server.as_str(), self.ws_url.as_str())).chain(
            self.more_servers
                .iter()
                .map(|(s, w)| (s.as_str(), w.as_str())),
        )
    }

    /// Moves the first server to the end: the next [`crate::Agent::connect`] tries the next.
    pub fn rotate_servers(&mut self) {
        if self.more_servers.is_empty() {
            return;
        }
        let next = self.more_servers.remove(0);
        let first = std::mem::replace(&mut self.server, next.0);
        let first_ws = std::mem::replace(&mut self.ws_url, next.1);
        self.more_servers.push((first, first_ws));
    }

    /// A configuration with default timings for `server` (http/https URL) and `forward`.
    pub fn new(server: &str, forward: &str) -> Result<Self, Error> {
        Self::with_routes(server, Routes::forward(Target::parse(forward)?))
    }

    /// A configuration with default timings for `server` (http/https URL) and `routes`.
    pub fn with_routes(server: &str, routes: Routes) -> Result<Self, Error> {
        Ok(Self {
            server: server.to_owned(),
            ws_url: ws_url(server)?,
            more_servers: Vec::new(),
            routes,
            channel: None,
            token: None,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            ping_interval: Duration::from_secs(20),
            peer_timeout: Duration::from_secs(50),
            connect_timeout: Duration::from_secs(15),
            target_timeout: DEFAULT_TARGET_TIMEOUT,
            shutdown_grace: Duration::from_secs(30),
            tls: TlsConfig::default(),
            inspect: None,
            print_body: false,
        })
    }
}

/// `http://host[:port][/prefix]` to `ws://host[:port][/prefix]/ws`; https to wss.
fn ws_url(server: &str) -> Result<String, Error> {
    let (secure, base) = parse_server(server)?;
    Ok(format!("{}://{base}/ws", if secure { "wss" } else { "ws" }))
}

/// `ws://host[:port][/prefix]` to `http://host[:port][/prefix]`; wss to https.
pub(crate) fn http_url(server: &str) -> Result<String, Error> {
    let (secure, base) = parse_server(server)?;
    Ok(format!(
        "{}://{base}",
        if secure { "https" } else { "http" }
    ))
}

/// Whether `server` is secure (https/wss), and its authority and path prefix without a
/// trailing slash.
fn parse_server(server: &str) -> Result<(bool, String), Error> {
    let bad = || Error::ServerUrl(server.to_owned());
    let uri: http::Uri = server.parse().map_err(|_| bad())?;
    let secure = match uri.scheme_str() {
        Some("http") | Some("ws") => false,
        Some("https") | Some("wss") => true,
        _ => return Err(bad()),
    };
    let authority = uri.authority().ok_or_else(bad)?;
    if uri.query().is_some() {
        return Err(bad());
    }
    let prefix = uri.path().trim_end_matches('/');
    Ok((secure, format!("{authority}{prefix}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Invocation {
        Args::try_from_command_line(std::iter::once("relay-client").chain(args.iter().copied()))
            .expect("valid command line")
            .validate()
            .expect("valid options")
    }

    const ID: &str = "5f0c1a2b-0000-4000-8000-000000000001";

    #[test]
    fn a_config_file_fills_what_flags_do_not_give() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("client.toml");
        std::fs::write(
            &path,
            "server = \"http://relay.test:9000\"\nforward = \"http://localhost:3000\"\n\
             channel = \"from-file\"\n",
        )
        .expect("write");
        let path = path.display().to_string();
        let Invocation::Agent(config) = parse(&["--config", &path, "--channel", "typed"]) else {
            panic!("agent expected");
        };
        assert_eq!(config.ws_url, "ws://relay.test:9000/ws", "from the file");
        assert_eq!(
            config.channel.as_ref().map(ChannelId::as_str),
            Some("typed"),
            "the flag wins"
        );

        std::fs::write(
            dir.path().join("bad.toml"),
            "colour = 1\nchannel = \"no spaces\"\n",
        )
        .expect("write");
        let bad = dir.path().join("bad.toml").display().to_string();
        let Err(ArgsError::File(errors)) =
            Args::try_from_command_line(["relay-client", "--config", &bad])
        else {
            panic!("file errors expected");
        };
        assert_eq!(
            errors.to_string(),
            format!("{bad}:1: key `colour`: unknown key")
        );
    }

    #[test]
    fn print_body_is_a_switch_on_the_command_line_and_true_or_false_in_the_file() {
        let print_body = |args: &[&str]| {
            let args = [args, &["--forward", "http://t:2"]].concat();
            let Invocation::Agent(config) = parse(&args) else {
                panic!("agent expected for {args:?}");
            };
            config.print_body
        };
        assert!(!print_body(&[]), "off by default");
        assert!(print_body(&["--print-body"]));
        assert!(
            print_body(&["--print-body", "--channel", "c"]),
            "takes no value after a space"
        );
        assert!(!print_body(&["--print-body=false"]));

        let dir = tempfile::tempdir().expect("tempdir");
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path.display().to_string()
        };
        let on = file("on.toml", "print-body = true\n");
        let off = file("off.toml", "print-body = false\n");
        assert!(print_body(&["--config", &on]));
        assert!(
            !print_body(&["--config", &on, "--print-body=false"]),
            "the flag wins"
        );
        assert!(!print_body(&["--config", &off]));
        assert!(
            print_body(&["--config", &off, "--print-body"]),
            "the flag wins"
        );

        let bad = file("bad.toml", "print-body = \"loud\"\n");
        let Err(ArgsError::File(errors)) =
            Args::try_from_command_line(["relay-client", "--config", &bad])
        else {
            panic!("file errors expected");
        };
        let message = errors.to_string();
        assert!(
            message.starts_with(&format!("{bad}:1: key `print-body`: invalid value 'loud'")),
            "{message}"
        );
    }

    #[test]
    fn shared_options_go_before_or_after_the_subcommand() {
        for args in [
            &[
                "--server",
                "http://h:1/r/",
                "--channel",
                "c",
                "events",
                "--limit",
                "5",
            ][..],
            &[
                "events",
                "--limit",
                "5",
                "--channel",
                "c",
                "--server",
                "http://h:1/r/",
            ],
        ] {
            let Invocation::Events { api, query } = parse(args) else {
                panic!("events expected for {args:?}");
            };
            let channel = api.channel.clone().expect("--channel given");
            let api = api.api(channel).expect("valid API");
            assert_eq!(api.base_url, "http://h:1/r/api/channels/c");
            assert_eq!(
                query,
                EventsQuery {
                    limit: 5,
                    status: None,
                    event_type: None,
                }
            );
        }
    }

    #[test]
    fn events_takes_a_type_or_a_prefix_and_refuses_a_bad_pattern_naming_the_flag() {
        for (given, expected) in [
            ("push", TypePattern::Exact("push".to_owned())),
            (
                "pull_request*",
                TypePattern::Prefix("pull_request".to_owned()),
            ),
        ] {
            let Invocation::Events { query, .. } =
                parse(&["events", "--channel", "c", "--type", given])
            else {
                panic!("events expected");
            };
            assert_eq!(query.event_type, Some(expected));
        }
        let refused = Args::try_from_command_line([
            "relay-client",
            "events",
            "--channel",
            "c",
            "--type",
            "pull_*request",
        ])
        .expect_err("an inner star");
        let message = refused.to_string();
        assert!(
            message.contains("'pull_*request'")
                && message.contains("--type <TYPE>")
                && message.contains("`*` may only end a pattern"),
            "{message}"
        );
    }

    #[test]
    fn replay_takes_a_typed_forward_on_either_side_of_the_subcommand() {
        for args in [
            &["replay", ID, "--channel", "c", "--forward", "http://t:2"][..],
            &["--forward", "http://t:2", "--channel", "c", "replay", ID],
        ] {
            let Invocation::Replay { id, target, .. } = parse(args) else {
                panic!("replay expected for {args:?}");
            };
            assert_eq!(id.to_string(), ID);
            assert_eq!(target.map(|t| t.to_string()).as_deref(), Some("http://t:2"));
        }
    }

    #[test]
    fn replay_reads_the_body_file_and_refuses_bad_headers_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("body.bin");
        std::fs::write(&path, b"\xff\x00new").expect("write");
        let path = path.display().to_string();
        let Invocation::Replay { edit, target, .. } = parse(&[
            "replay",
            ID,
            "--channel",
            "c",
            "--body-file",
            &path,
            "--header",
            "X-A: 1",
        ]) else {
            panic!("replay expected");
        };
        assert_eq!(edit.body().map(|b| &b[..]), Some(&b"\xff\x00new"[..]));
        assert!(target.is_none());
        let Invocation::Replay { edit, .. } = parse(&["replay", ID, "--channel", "c"]) else {
            panic!("replay expected");
        };
        assert!(edit.is_empty(), "no flags, a plain replay");

        let refused = Args::try_from_command_line([
            "relay-client",
            "replay",
            ID,
            "--channel",
            "c",
            "--header",
            "X-A 1",
        ])
        .expect_err("no colon");
        let message = refused.to_string();
        assert!(
            message.contains("'X-A 1'")
                && message.contains("--header <NAME: VALUE>")
                && message.contains("no `:` in it"),
            "{message}"
        );
        let missing = dir.path().join("missing").display().to_string();
        let refused = Args::try_from_command_line([
            "relay-client",
            "replay",
            ID,
            "--channel",
            "c",
            "--body-file",
            &missing,
        ])
        .expect("parses")
        .validate()
        .expect_err("no such file");
        assert!(
            refused
                .to_string()
                .starts_with(&format!("cannot read --body-file {missing}: ")),
            "{refused}"
        );
    }

    #[test]
    fn token_goes_to_the_api_as_a_sensitive_bearer_header() {
        let Invocation::Replay { api, .. } =
            parse(&["replay", ID, "--channel", "c", "--token", "s3"])
        else {
            panic!("replay expected");
        };
        let channel = api.channel.clone().expect("--channel given");
        let api = api.api(channel).expect("valid API");
        let authorization = api.authorization.expect("token given");
        assert_eq!(authorization, "Bearer s3");
        assert!(authorization.is_sensitive());
    }

    #[test]
    fn no_subcommand_runs_the_agent_with_its_flags() {
        let Invocation::Agent(config) = parse(&[
            "--server",
            "https://h",
            "--forward",
            "http://t:2",
            "--channel",
            "c",
            "--token",
            "s3",
        ]) else {
            panic!("agent expected");
        };
        assert_eq!(config.ws_url, "wss://h/ws");
        assert_eq!(config.routes.to_string(), "http://t:2");
        assert_eq!(config.channel.as_ref().map(ChannelId::as_str), Some("c"));
        assert_eq!(config.token.as_deref(), Some("s3"));
    }

    #[test]
    fn events_and_routes_pick_the_agents_types_and_targets() {
        let Invocation::Agent(config) = parse(&[
            "--route",
            "push=http://a:1/gh",
            "--route",
            "pull_request*=http://b:2",
            "--forward",
            "http://c:3",
            "--events",
            "push,pull_request*",
            "--events",
            "issues",
        ]) else {
            panic!("agent expected");
        };
        let routes = &config.routes;
        assert_eq!(
            routes.subscription().to_string(),
            "push,pull_request*,issues"
        );
        assert_eq!(routes.pick(Some("pull_request_review")), Some(1));
        assert_eq!(routes.pick(Some("issues")), Some(2), "--forward");
        let Invocation::Agent(only) = parse(&["--route", "push=http://a:1"]) else {
            panic!("agent expected");
        };
        assert_eq!(only.routes.subscription().to_string(), "push");
        assert_eq!(only.routes.forward.as_ref().map(ToString::to_string), None);

        let refused = |args: &[&str]| {
            Args::try_from_command_line(std::iter::once("relay-client").chain(args.iter().copied()))
                .expect("parses")
                .validate()
                .expect_err("refused")
                .to_string()
        };
        assert!(refused(&["--route", "push"]).starts_with("--route \"push\" has no URL"));
        assert!(
            refused(&["--route", "=http://x"])
                .starts_with("--route \"=http://x\" has no event type")
        );
        assert_eq!(
            refused(&["--forward", "http://t:2", "--events", "push,a*b"]),
            "--events \"a*b\": `*` may only end a pattern (as in payment_intent.*)"
        );
        assert!(refused(&[]).starts_with("--forward is required"));
        let many: Vec<String> = (0..=protocol::MAX_PATTERNS)
            .flat_map(|n| ["--route".to_owned(), format!("t{n}=http://a:1")])
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(refused(&many).contains("--route flags without --forward"));
    }

    #[test]
    fn a_config_file_gives_events_as_a_list_and_routes_as_tables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("client.toml");
        std::fs::write(
            &path,
            "events = [\"push\", \"issue*\"]\n\n[[route]]\ntype = \"push\"\nurl = \"http://a:1/gh\"\n\n\
             [[route]]\ntype = \"issue*\"\nurl = \"http://b:2\"\n",
        )
        .expect("write");
        let path = path.display().to_string();
        let Invocation::Agent(config) = parse(&["--config", &path]) else {
            panic!("agent expected");
        };
        assert_eq!(
            config.routes.to_string(),
            "these routes only (event types push,issue*)\n  push -> http://a:1/gh\n  issue* -> http://b:2"
        );
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[[route]]\ntype = \"push\"\n").expect("write");
        let bad = bad.display().to_string();
        let Err(ArgsError::File(errors)) =
            Args::try_from_command_line(["relay-client", "--config", &bad])
        else {
            panic!("file errors expected");
        };
        assert_eq!(
            errors.to_string(),
            format!(
                "{bad}:1: key `route[0]`: a [[route]] table has exactly a `type` (string) and a `url` (string)"
            )
        );
    }

    #[test]
    fn tls_files_reach_the_agent_and_the_api() {
        let tls = TlsConfig {
            ca: Some("ca.pem".into()),
            identity: Some(Identity {
                cert: "c.pem".into(),
                key: "k.pem".into(),
            }),
        };
        let flags = ["--ca", "ca.pem", "--cert", "c.pem", "--key", "k.pem"];
        let agent = [&["--forward", "http://t:2"][..], &flags].concat();
        let Invocation::Agent(config) = parse(&agent) else {
            panic!("agent expected");
        };
        assert_eq!(config.tls, tls);
        let events = [&["events", "--channel", "c"][..], &flags].concat();
        let Invocation::Events { api, .. } = parse(&events) else {
            panic!("events expected");
        };
        assert_eq!(api.tls, tls);
        let refused = Args::try_from_command_line([
            "relay-client",
            "--forward",
            "http://t:2",
            "--cert",
            "c.pem",
        ])
        .expect("parses")
        .validate()
        .expect_err("--cert without --key");
        assert_eq!(
            refused.to_string(),
            "--cert needs --key: a client certificate is the pair of both"
        );
    }

    #[test]
    fn server_urls_map_to_websocket_urls() {
        assert_eq!(
            ws_url("http://127.0.0.1:8080").expect("valid"),
            "ws://127.0.0.1:8080/ws"
        );
        assert_eq!(
            ws_url("https://relay.example.com/").expect("valid"),
            "wss://relay.example.com/ws"
        );
        assert_eq!(
            ws_url("https://example.com/relay").expect("valid"),
            "wss://example.com/relay/ws"
        );
        assert!(ws_url("relay.example.com").is_err());
        assert!(ws_url("ftp://x").is_err());
    }
}
