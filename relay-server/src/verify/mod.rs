//! Webhook signature verification at the edge: checks a received webhook against its channel's
//! [`Verify`] spec, so a forged or replayed webhook is refused before it is stored or forwarded.
//!
//! Pure: no I/O and no clock (the caller passes `now`). Every verifier reads the body as the
//! bytes received and header values as bytes; nothing is re-serialised, so what the sender
//! signed is exactly what is checked. Parsing treats every header byte as hostile and never
//! panics. Signatures are compared in constant time. Error messages go back to the sender and
//! into the log, so they name the header and what is wrong with it, never a secret or the
//! expected signature.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use protocol::Headers;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

mod spec;
#[cfg(test)]
mod tests;

pub use spec::{VerifyArgs, VerifyKind, VerifySpecError};

/// Timestamp tolerance of Stripe, Standard Webhooks and Slack when none is configured: five
/// minutes, what each provider's own libraries use.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// Header names as the providers document them; looked up case-insensitively.
const GITHUB_SIGNATURE: &str = "X-Hub-Signature-256";
const STRIPE_SIGNATURE: &str = "Stripe-Signature";
const STANDARD_ID: &str = "webhook-id";
const STANDARD_TIMESTAMP: &str = "webhook-timestamp";
const STANDARD_SIGNATURE: &str = "webhook-signature";
const SLACK_SIGNATURE: &str = "X-Slack-Signature";
const SLACK_TIMESTAMP: &str = "X-Slack-Request-Timestamp";

/// Prefix of a Standard Webhooks secret; the key is the base64 text after it.
const STANDARD_SECRET_PREFIX: &str = "whsec_";

const DIGEST_LEN: usize = 32;
/// Length of a SHA-256 digest as padded base64.
const DIGEST_BASE64_LEN: usize = 44;

type Sha256Mac = Hmac<Sha256>;
type Digest = [u8; DIGEST_LEN];

/// How a channel's webhooks are signed, stored with the channel as JSON
/// (`{"kind": "github", "secret": "..."}`).
///
/// `Debug` shows the kind and settings but never a secret, so a spec can be logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Verify {
    /// GitHub: `X-Hub-Signature-256: sha256=<hex>`, an HMAC-SHA256 of the body.
    Github { secret: String },
    /// Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>]`, an HMAC-SHA256 of `t.body`
    /// keyed with the whole `whsec_...` string. Any secret may match any `v1` entry: Stripe
    /// sends one entry per active secret while a secret is rolled.
    Stripe {
        secrets: Vec<String>,
        #[serde(default = "default_tolerance")]
        tolerance_secs: u64,
    },
    /// Standard Webhooks (Svix and others): `webhook-id`, `webhook-timestamp` and
    /// `webhook-signature: v1,<base64> [v1,<base64>...]` over `id.timestamp.body`, keyed with
    /// the base64-decoded part of a `whsec_<base64>` secret. Several secrets allow rotation.
    Standard {
        secrets: Vec<String>,
        #[serde(default = "default_tolerance")]
        tolerance_secs: u64,
    },
    /// Slack: `X-Slack-Signature: v0=<hex>` over `v0:{X-Slack-Request-Timestamp}:{body}`.
    Slack {
        secret: String,
        #[serde(default = "default_tolerance")]
        tolerance_secs: u64,
    },
    /// Any sender that puts `prefix + encode(hmac_sha256(secret, body))` in one header
    /// (Shopify: `X-Shopify-Hmac-Sha256`, base64, no prefix).
    HmacSha256 {
        secret: String,
        header: String,
        #[serde(default)]
        encoding: Encoding,
        #[serde(default)]
        prefix: String,
    },
}

fn default_tolerance() -> u64 {
    DEFAULT_TOLERANCE_SECS
}

/// How the generic [`Verify::HmacSha256`] signature is written in its header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// 64 hexadecimal digits, either case.
    #[default]
    Hex,
    /// Standard base64 with padding (44 characters).
    Base64,
}

/// Why a webhook was refused. The message is safe to show the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A header the scheme needs is absent.
    #[error("missing {0} header")]
    MissingHeader(String),
    /// A header is present but cannot be parsed; the message names the header and the problem.
    #[error("{0}")]
    Malformed(String),
    /// The signed timestamp is further from `now` than the tolerance: a replay, or a clock far
    /// off. `age_secs` is positive for a timestamp in the past.
    #[error(
        "timestamp {timestamp} is {} s in the {}; tolerance is {tolerance_secs} s",
        .age_secs.unsigned_abs(),
        if *.age_secs >= 0 { "past" } else { "future" }
    )]
    Stale {
        timestamp: i64,
        age_secs: i64,
        tolerance_secs: u64,
    },
    /// The header is well formed but no signature matches the body with any secret.
    #[error("signature does not match")]
    Mismatch,
}

impl Verify {
    /// Checks one received webhook.
    ///
    /// `headers` are the request's headers as received (names compared case-insensitively; a
    /// signature header present twice is refused as ambiguous), `body` the raw bytes, `now` the
    /// current unix time in seconds. The signature is checked before the timestamp, so a
    /// forged request learns only that it does not match.
    pub fn check(&self, headers: &Headers, body: &[u8], now: i64) -> Result<(), VerifyError> {
        match self {
            Verify::Github { secret } => {
                let value = ascii_header(headers, GITHUB_SIGNATURE)?;
                let hex = value
                    .strip_prefix("sha256=")
                    .ok_or_else(|| malformed(GITHUB_SIGNATURE, "does not start with sha256="))?;
                let signature = decode_hex(hex).ok_or_else(|| {
                    malformed(GITHUB_SIGNATURE, "is not sha256= followed by 64 hex digits")
                })?;
                let expected = [mac(secret.as_bytes(), &[body])];
                any_matches(&expected, &[signature])
            }
            Verify::Stripe {
                secrets,
                tolerance_secs,
            } => {
                let header = StripeHeader::parse(ascii_header(headers, STRIPE_SIGNATURE)?)?;
                let expected: Vec<Digest> = secrets
                    .iter()
                    .map(|s| mac(s.as_bytes(), &[header.t.as_bytes(), b".", body]))
                    .collect();
                any_matches(&expected, &header.v1)?;
                fresh(header.timestamp, now, *tolerance_secs)
            }
            Verify::Standard {
                secrets,
                tolerance_secs,
            } => {
                let id = header(headers, STANDARD_ID)?;
                let t = ascii_header(headers, STANDARD_TIMESTAMP)?;
                let timestamp = parse_timestamp(t).ok_or_else(|| {
                    malformed(STANDARD_TIMESTAMP, "is not a unix timestamp in seconds")
                })?;
                let signatures = standard_signatures(ascii_header(headers, STANDARD_SIGNATURE)?)?;
                let expected: Vec<Digest> = secrets
                    .iter()
                    .filter_map(|s| standard_key(s))
                    .map(|key| mac(&key, &[id, b".", t.as_bytes(), b".", body]))
                    .collect();
                any_matches(&expected, &signatures)?;
                fresh(timestamp, now, *tolerance_secs)
            }
            Verify::Slack {
                secret,
                tolerance_secs,
            } => {
                let t = ascii_header(headers, SLACK_TIMESTAMP)?;
                let timestamp = parse_timestamp(t).ok_or_else(|| {
                    malformed(SLACK_TIMESTAMP, "is not a unix timestamp in seconds")
                })?;
                let value = ascii_header(headers, SLACK_SIGNATURE)?;
                let hex = value
                    .strip_prefix("v0=")
                    .ok_or_else(|| malformed(SLACK_SIGNATURE, "does not start with v0="))?;
                let signature = decode_hex(hex).ok_or_else(|| {
                    malformed(SLACK_SIGNATURE, "is not v0= followed by 64 hex digits")
                })?;
                let expected = [mac(secret.as_bytes(), &[b"v0:", t.as_bytes(), b":", body])];
                any_matches(&expected, &[signature])?;
                fresh(timestamp, now, *tolerance_secs)
            }
            Verify::HmacSha256 {
                secret,
                header,
                encoding,
                prefix,
            } => {
                let value = ascii_header(headers, header)?;
                let encoded = value
                    .strip_prefix(prefix.as_str())
                    .ok_or_else(|| malformed(header, &format!("does not start with {prefix:?}")))?;
                let signature = match encoding {
                    Encoding::Hex => decode_hex(encoded),
                    Encoding::Base64 => decode_base64(encoded),
                }
                .ok_or_else(|| {
                    let what = match encoding {
                        Encoding::Hex => "64 hex digits",
                        Encoding::Base64 => "44 characters of base64",
                    };
                    malformed(header, &format!("is not {prefix:?} followed by {what}"))
                })?;
                let expected = [mac(secret.as_bytes(), &[body])];
                any_matches(&expected, &[signature])
            }
        }
    }

    /// The scheme's name, as in `--verify` and the JSON `kind`: `github`, `stripe`,
    /// `standard`, `slack` or `hmac-sha256`.
    pub fn kind(&self) -> &'static str {
        self.verify_kind().as_str()
    }

    fn verify_kind(&self) -> VerifyKind {
        match self {
            Verify::Github { .. } => VerifyKind::Github,
            Verify::Stripe { .. } => VerifyKind::Stripe,
            Verify::Standard { .. } => VerifyKind::Standard,
            Verify::Slack { .. } => VerifyKind::Slack,
            Verify::HmacSha256 { .. } => VerifyKind::HmacSha256,
        }
    }
}

impl fmt::Debug for Verify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct(self.kind());
        match self {
            Verify::Github { .. } | Verify::Slack { .. } => d.field("secret", &"<redacted>"),
            Verify::Stripe { secrets, .. } | Verify::Standard { secrets, .. } => {
                d.field("secrets", &format_args!("<{} redacted>", secrets.len()))
            }
            Verify::HmacSha256 {
                header,
                encoding,
                prefix,
                ..
            } => d
                .field("secret", &"<redacted>")
                .field("header", header)
                .field("encoding", encoding)
                .field("prefix", prefix),
        };
        match self {
            Verify::Stripe { tolerance_secs, .. }
            | Verify::Standard { tolerance_secs, .. }
            | Verify::Slack { tolerance_secs, .. } => d.field("tolerance_secs", tolerance_secs),
            Verify::Github { .. } | Verify::HmacSha256 { .. } => &mut d,
        };
        d.finish()
    }
}

/// The parts of a `Stripe-Signature` header that matter: `t` as sent (it is signed as text) and
/// every well-formed `v1` entry. Other schemes (`v0`) are ignored, as Stripe's libraries do.
struct StripeHeader<'a> {
    t: &'a str,
    timestamp: i64,
    v1: Vec<Digest>,
}

impl<'a> StripeHeader<'a> {
    fn parse(value: &'a str) -> Result<Self, VerifyError> {
        let mut t = None;
        let mut v1 = Vec::new();
        let mut bad_v1 = false;
        for (key, val) in value.split(',').filter_map(|item| item.split_once('=')) {
            match key.trim() {
                "t" => {
                    // Two timestamps would leave it open which one was signed.
                    if t.is_some() {
                        return Err(malformed(
                            STRIPE_SIGNATURE,
                            "has more than one t= timestamp",
                        ));
                    }
                    t = Some(val.trim());
                }
                "v1" => match decode_hex(val.trim()) {
                    Some(digest) => v1.push(digest),
                    None => bad_v1 = true,
                },
                _ => {}
            }
        }
        let t = t.ok_or_else(|| malformed(STRIPE_SIGNATURE, "has no t= timestamp"))?;
        let timestamp = parse_timestamp(t).ok_or_else(|| {
            malformed(
                STRIPE_SIGNATURE,
                "has a t= that is not a unix timestamp in seconds",
            )
        })?;
        if v1.is_empty() {
            let why = if bad_v1 {
                "has no v1 signature of 64 hex digits"
            } else {
                "has no v1 signature"
            };
            return Err(malformed(STRIPE_SIGNATURE, why));
        }
        Ok(Self { t, timestamp, v1 })
    }
}

/// The `v1` entries of a `webhook-signature` header (`v1,<base64>` separated by spaces). Other
/// versions (`v1a` is asymmetric) are ignored, as the Standard Webhooks libraries do.
fn standard_signatures(value: &str) -> Result<Vec<Digest>, VerifyError> {
    let mut signatures = Vec::new();
    let mut bad_v1 = false;
    for entry in value.split_ascii_whitespace() {
        if let Some(("v1", encoded)) = entry.split_once(',') {
            match decode_base64(encoded) {
                Some(digest) => signatures.push(digest),
                None => bad_v1 = true,
            }
        }
    }
    if signatures.is_empty() {
        let why = if bad_v1 {
            "has no v1 signature of 44 base64 characters"
        } else {
            "has no v1 signature"
        };
        return Err(malformed(STANDARD_SIGNATURE, why));
    }
    Ok(signatures)
}

/// The HMAC key of a Standard Webhooks secret: the base64 text after `whsec_`, decoded.
/// `None` for anything else; [`Verify::validate`] refuses such secrets up front.
fn standard_key(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix(STANDARD_SECRET_PREFIX)?;
    BASE64.decode(encoded).ok().filter(|key| !key.is_empty())
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Digest {
    let mut mac = Sha256Mac::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Compares every expected digest with every presented one without stopping early, so the
/// time taken says nothing about how close a forged signature came.
fn any_matches(expected: &[Digest], presented: &[Digest]) -> Result<(), VerifyError> {
    let mut found = Choice::from(0);
    for e in expected {
        for p in presented {
            found |= e.ct_eq(p);
        }
    }
    if bool::from(found) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// Refuses a timestamp further than `tolerance_secs` from `now`, in either direction. Saturating
/// arithmetic: any pair of `i64` gives an answer, never an overflow.
fn fresh(timestamp: i64, now: i64, tolerance_secs: u64) -> Result<(), VerifyError> {
    let age_secs = now.saturating_sub(timestamp);
    if age_secs.unsigned_abs() > tolerance_secs {
        return Err(VerifyError::Stale {
            timestamp,
            age_secs,
            tolerance_secs,
        });
    }
    Ok(())
}

/// A unix timestamp written as decimal digits only (no sign, no spaces), within `i64`.
fn parse_timestamp(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn decode_hex(text: &str) -> Option<Digest> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    if text.len() != 2 * DIGEST_LEN {
        return None;
    }
    let mut digest = [0u8; DIGEST_LEN];
    for (byte, pair) in digest.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        if let [hi, lo] = pair {
            *byte = nibble(*hi)? << 4 | nibble(*lo)?;
        }
    }
    Some(digest)
}

fn decode_base64(text: &str) -> Option<Digest> {
    // Checked first so a huge header value is refused without decoding it.
    if text.len() != DIGEST_BASE64_LEN {
        return None;
    }
    BASE64.decode(text).ok()?.try_into().ok()
}

/// The value of the one header called `name`, any case. Absent is `MissingHeader`; present
/// twice is `Malformed`, since the two could disagree about what was signed.
fn header<'h>(headers: &'h Headers, name: &str) -> Result<&'h [u8], VerifyError> {
    let mut found = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_ref());
    let value = found
        .next()
        .ok_or_else(|| VerifyError::MissingHeader(name.to_owned()))?;
    if found.next().is_some() {
        return Err(malformed(name, "appears more than once"));
    }
    Ok(value)
}

/// Like [`header`], for headers whose syntax is ASCII: signatures and timestamps.
fn ascii_header<'h>(headers: &'h Headers, name: &str) -> Result<&'h str, VerifyError> {
    let value = header(headers, name)?;
    if !value.is_ascii() {
        return Err(malformed(name, "is not ASCII"));
    }
    std::str::from_utf8(value).map_err(|_| malformed(name, "is not ASCII"))
}

fn malformed(header: &str, why: &str) -> VerifyError {
    VerifyError::Malformed(format!("{header} {why}"))
}
