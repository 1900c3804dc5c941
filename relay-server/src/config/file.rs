//! The configuration file: `--config FILE` (TOML; `/etc/hookrelay/server.toml` when present).
//!
//! Every server flag is a key, its long name without the dashes (`rate-limit = "10/s"`), and
//! `[[channel]]` tables declare channels. Precedence: flags, then `HOOKRELAY_*` environment
//! variables, then the file, then defaults. A file value is applied by handing clap the flag it
//! stands for, only for flags that were neither typed nor set in the environment. Each value is
//! checked on its own first, so an error names the file, the key and its line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, FromArgMatches};
use protocol::ChannelId;
use runtime::config_file::{FileErrors, Settings, apply, clap_reason, given};
use serde::Deserialize;

use crate::channel::{ChannelSettings, DeclaredChannel, Mode, RateLimit, TokenHash};
use crate::config::args::Args;
use crate::verify::Verify;

pub use runtime::config_file::{FileError, Source};

/// Read when no `--config` is given and the file exists.
pub const DEFAULT_PATH: &str = "/etc/hookrelay/server.toml";

/// The command line with the file applied.
#[derive(Debug)]
pub struct Loaded {
    pub args: Args,
    /// The file read, if any.
    pub path: Option<PathBuf>,
    pub channels: Vec<DeclaredChannel>,
    /// Every setting not at its default: key, value as given, and where it came from.
    pub settings: Vec<(String, String, Source)>,
    /// What the file holds that works but should not be served: placeholder or short
    /// secrets, in line order.
    pub warnings: Vec<FileError>,
}

/// Why the command line and the file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Help, version or a bad flag: clap's own message and exit code.
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error(transparent)]
    File(#[from] FileErrors),
}

/// Parses `argv`, reads the config file it names (or [`DEFAULT_PATH`] when present), and
/// applies the file under the flags and the environment.
pub fn load(argv: Vec<OsString>) -> Result<Loaded, LoadError> {
    let matches = Args::command().try_get_matches_from(&argv)?;
    let explicit = matches.get_one::<PathBuf>("config").cloned();
    let path = explicit.or_else(|| {
        let default = PathBuf::from(DEFAULT_PATH);
        default.exists().then_some(default)
    });
    let Some(path) = path else {
        let args = Args::from_arg_matches(&matches)?;
        let settings = given(&Args::command(), &matches, &[]);
        return Ok(Loaded {
            args,
            path: None,
            channels: Vec::new(),
            settings,
            warnings: Vec::new(),
        });
    };
    let file = read(&path)?;
    let (full, from_file) = apply(&Args::command(), argv, &matches, &file.settings);
    let matches = Args::command().try_get_matches_from(&full)?;
    let args = Args::from_arg_matches(&matches)?;
    let settings = given(&Args::command(), &matches, &from_file);
    Ok(Loaded {
        args,
        path: Some(path),
        channels: file.channels,
        settings,
        warnings: file.warnings,
    })
}

/// A file, read and checked.
#[derive(Debug)]
struct File {
    /// Key (long flag name) and value as clap would read it.
    settings: Vec<(String, String)>,
    channels: Vec<DeclaredChannel>,
    warnings: Vec<FileError>,
}

/// Reads and checks `path`: every key known, every value valid for its flag, every channel
/// complete. All problems are reported, not only the first.
fn read(path: &Path) -> Result<File, FileErrors> {
    let file = Settings::read(path)?;
    // Each value on its own, so an error is the key's.
    let check = |key: &str, value: &str| {
        let alone = ["relay-server".to_owned(), format!("--{key}={value}")];
        Args::command()
            .try_get_matches_from(alone)
            .and_then(|m| Args::from_arg_matches(&m))
            .map_err(|e| clap_reason(&e))
            .and_then(|args| match args.validate() {
                // Checked once the whole file is applied, by whoever validates it.
                Err(e) if !e.is_combination() => Err(e.to_string()),
                _ => Ok(()),
            })
    };
    let (settings, mut errors) = file.flags(&Args::command(), &["channel"], check);
    let mut warnings = Vec::new();
    for (key, value) in &settings {
        if let Some(why) = weak_secret(key, value, MIN_TOKEN_CHARS) {
            warnings.push(file.error(key, why));
        }
    }
    let mut channels = Vec::new();
    match file.table.get("channel") {
        None => {}
        Some(toml::Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match declared(item) {
                    Ok(channel) => {
                        for why in channel_warnings(item, &channel) {
                            warnings.push(file.table_error("channel", i, why));
                        }
                        channels.push(channel);
                    }
                    Err(why) => errors.push(file.table_error("channel", i, why)),
                }
            }
        }
        Some(_) => errors.push(file.error(
            "channel",
            "declare channels as [[channel]] tables".to_owned(),
        )),
    }
    let mut names: Vec<&ChannelId> = channels.iter().map(|c| &c.name).collect();
    names.sort();
    for pair in names.windows(2) {
        if pair[0] == pair[1] {
            errors.push(file.error("channel", format!("channel {} is declared twice", pair[0])));
        }
    }
    if errors.is_empty() {
        warnings.sort_by_key(|w| w.line.unwrap_or(usize::MAX));
        Ok(File {
            settings,
            channels,
            warnings,
        })
    } else {
        Err(FileErrors(errors))
    }
}

/// One `[[channel]]` table, in the file's spelling.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ChannelTable {
    name: String,
    token: Option<String>,
    token_sha256: Option<String>,
    #[serde(default)]
    mode: Mode,
    rate_limit: Option<RateLimit>,
    #[serde(default)]
    allow_from: Vec<ipnet::IpNet>,
    verify: Option<Verify>,
    event_type: Option<crate::event_type::TypeSource>,
}

fn declared(item: &toml::Value) -> Result<DeclaredChannel, String> {
    let table: ChannelTable = item
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| e.message().trim().to_owned())?;
    let name = ChannelId::parse(&table.name).map_err(|e| format!("name {:?}: {e}", table.name))?;
    let token_hash = match (&table.token, &table.token_sha256) {
        (Some(token), None) if !token.is_empty() => TokenHash::of(token),
        (None, Some(hex)) => parse_sha256(hex)
            .ok_or_else(|| "token-sha256 must be 64 hex digits (a SHA-256)".to_owned())?,
        (Some(_), Some(_)) => return Err("give token or token-sha256, not both".to_owned()),
        _ => return Err("needs token or token-sha256".to_owned()),
    };
    if let Some(verify) = &table.verify {
        verify.validate().map_err(|e| format!("verify: {e}"))?;
    }
    Ok(DeclaredChannel {
        name,
        token_hash,
        settings: ChannelSettings {
            mode: table.mode,
            rate_limit: table.rate_limit,
            allow_from: table.allow_from,
            verify: table.verify,
            event_type: table.event_type,
        },
    })
}

/// Tokens shorter than this are worth a warning: 32 hex digits are 128 random bits.
const MIN_TOKEN_CHARS: usize = 32;

/// Words that mark a value someone forgot to replace.
const PLACEHOLDERS: &[&str] = &[
    "change-me",
    "changeme",
    "change_me",
    "placeholder",
    "example",
    "replace-me",
    "your-",
    "xxxx",
];

/// The token of the example files (deploy/server.toml declares its SHA-256).
const EXAMPLE_TOKEN: &str = "hrt_example";

/// Why `value` of secret-bearing `key` should not be served, if it should not: it looks like
/// a placeholder, or (for tokens) it is shorter than `min_chars`.
fn weak_secret(key: &str, value: &str, min_chars: usize) -> Option<String> {
    let secret = key.contains("token") || key.contains("secret");
    if !secret {
        return None;
    }
    let lower = value.to_ascii_lowercase();
    if let Some(word) = PLACEHOLDERS.iter().find(|word| lower.contains(*word)) {
        return Some(format!(
            "looks like a placeholder (contains {word:?}): use a long random value, e.g. \
             `openssl rand -hex 32`"
        ));
    }
    let chars = value.chars().count();
    if key.contains("token") && chars < min_chars {
        return Some(format!(
            "only {chars} characters: a token this short can be guessed; use at least \
             {min_chars} random ones, e.g. `openssl rand -hex 32`"
        ));
    }
    None
}

/// What a declared channel holds that should not be served.
fn channel_warnings(item: &toml::Value, channel: &DeclaredChannel) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(token) = item.get("token").and_then(toml::Value::as_str) {
        warnings.extend(weak_secret("token", token, MIN_TOKEN_CHARS));
    }
    if channel.token_hash == TokenHash::of(EXAMPLE_TOKEN) {
        warnings.push(format!(
            "token-sha256 is the hash of the example token {EXAMPLE_TOKEN:?}: make a real \
             one with `relay-server channels create` or `openssl rand -hex 32`"
        ));
    }
    let secrets = item
        .get("verify")
        .and_then(|verify| verify.get("secret").or_else(|| verify.get("secrets")));
    let secrets: Vec<&str> = match secrets {
        Some(toml::Value::String(secret)) => vec![secret.as_str()],
        Some(toml::Value::Array(items)) => items.iter().filter_map(toml::Value::as_str).collect(),
        _ => Vec::new(),
    };
    for secret in secrets {
        // Signing secrets come from the provider; only placeholders are flagged.
        warnings
            .extend(weak_secret("verify secret", secret, 0).map(|why| format!("verify: {why}")));
    }
    warnings
}

fn parse_sha256(hex: &str) -> Option<TokenHash> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(TokenHash(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write");
        file
    }

    fn argv(file: &Path, extra: &[&str]) -> Vec<OsString> {
        let mut argv = vec![OsString::from("relay-server"), OsString::from("--config")];
        argv.push(file.as_os_str().to_owned());
        argv.extend(extra.iter().map(OsString::from));
        argv
    }

    #[test]
    fn the_file_fills_what_flags_leave_at_their_defaults() {
        let file = write(
            r#"
listen = "127.0.0.1:9999"
timeout = 12
rate-limit = "10/s"
open = false
trusted-proxy = ["10.0.0.0/8", "192.168.0.0/16"]

[[channel]]
name = "my-app"
token = "hrt_secret"
mode = "fanout"
verify = { kind = "github", secret = "s3cret" }
"#,
        );
        let loaded = load(argv(file.path(), &["--timeout", "7"])).expect("loads");
        let config = loaded.args.validate().expect("valid");
        assert_eq!(config.listen.port(), 9999, "from the file");
        assert_eq!(config.timeout.as_secs(), 7, "the flag wins");
        assert_eq!(config.open, Some(false));
        assert_eq!(
            config.trusted_proxies.len(),
            2,
            "a list is the flag repeated"
        );
        assert_eq!(
            config.rate_limit.map(|r| r.to_string()).as_deref(),
            Some("10/s")
        );
        let channel = &loaded.channels[0];
        assert_eq!(channel.name.as_str(), "my-app");
        assert!(channel.token_hash.matches("hrt_secret"));
        assert_eq!(channel.settings.mode, Mode::Fanout);
        let sources: Vec<(&str, Source)> = loaded
            .settings
            .iter()
            .map(|(k, _, s)| (k.as_str(), *s))
            .collect();
        assert!(sources.contains(&("timeout", Source::Flag)), "{sources:?}");
        assert!(sources.contains(&("listen", Source::File)), "{sources:?}");
    }

    #[test]
    fn pairs_of_keys_are_checked_together() {
        let file = write("tls-cert = \"c.pem\"\ntls-key = \"k.pem\"\nclient-ca = \"ca.pem\"\n");
        let config = load(argv(file.path(), &[]))
            .expect("each key is fine alone")
            .args
            .validate()
            .expect("and together");
        assert!(config.tls.is_some());
        let half = write("tls-cert = \"c.pem\"\n");
        let refused = load(argv(half.path(), &[])).expect("loads").args.validate();
        assert!(
            matches!(
                refused,
                Err(crate::config::args::ConfigError::TlsPair { .. })
            ),
            "{refused:?}"
        );
    }

    #[test]
    fn acme_domains_are_a_list_in_the_file() {
        let file = write(
            r#"
acme-domain = ["relay.example.com", "hooks.example.com"]
acme-email = "ops@example.com"
acme-http-listen = "0.0.0.0:80"
"#,
        );
        let config = load(argv(file.path(), &[]))
            .expect("loads")
            .args
            .validate()
            .expect("valid");
        let acme = config.acme.expect("ACME on");
        assert_eq!(acme.domains, ["relay.example.com", "hooks.example.com"]);
        assert_eq!(acme.email.as_deref(), Some("ops@example.com"));
        assert_eq!(acme.http_listen.map(|a| a.port()), Some(80));
        let both = write(
            r#"
acme-domain = ["relay.example.com"]
tls-cert = "c.pem"
tls-key = "k.pem"
"#,
        );
        let refused = load(argv(both.path(), &[])).expect("loads").args.validate();
        assert!(
            matches!(
                refused,
                Err(crate::config::args::ConfigError::AcmeWithTlsFiles)
            ),
            "{refused:?}"
        );
    }

    #[test]
    fn every_problem_is_named_with_file_key_and_line() {
        let file = write(
            r#"listen = "nowhere"
colour = "blue"
rate-limit = "fast"
timeout = [1]

[[channel]]
name = "ok"
token-sha256 = "abc"

[[channel]]
name = "bad name"
token = "t"
"#,
        );
        let Err(LoadError::File(FileErrors(errors))) = load(argv(file.path(), &[])) else {
            panic!("errors expected");
        };
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let path = file.path().display().to_string();
        let expect = [
            format!("{path}:1: key `listen`: invalid value 'nowhere'"),
            format!("{path}:2: key `colour`: unknown key"),
            format!("{path}:3: key `rate-limit`: --rate-limit:"),
            format!("{path}:4: key `timeout`: takes one value, not a list"),
            format!("{path}:6: key `channel[0]`: token-sha256 must be 64 hex digits"),
            format!("{path}:10: key `channel[1]`: name \"bad name\""),
        ];
        for want in &expect {
            assert!(
                text.iter().any(|line| line.starts_with(want.as_str())),
                "{want}\nnot in:\n{}",
                text.join("\n")
            );
        }
        assert_eq!(text.len(), expect.len(), "{}", text.join("\n"));
    }

    #[test]
    fn broken_toml_and_missing_files_are_reported_with_the_path() {
        let file = write("listen = \n");
        let Err(LoadError::File(errors)) = load(argv(file.path(), &[])) else {
            panic!("error expected");
        };
        assert!(
            errors.to_string().contains(":1: not valid TOML"),
            "{errors}"
        );
        let missing = Path::new("/nonexistent/hookrelay.toml");
        let Err(LoadError::File(errors)) = load(argv(missing, &[])) else {
            panic!("error expected");
        };
        assert!(
            errors
                .to_string()
                .starts_with("/nonexistent/hookrelay.toml: cannot read"),
            "{errors}"
        );
    }

    #[test]
    fn a_sha256_token_parses() {
        let hash = TokenHash::of("hrt_x");
        let hex: String = hash.0.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_sha256(&hex), Some(hash));
        assert_eq!(parse_sha256(&hex[1..]), None);
        assert_eq!(parse_sha256(&"zz".repeat(32)), None);
    }
}
