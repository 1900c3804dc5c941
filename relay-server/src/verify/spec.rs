//! Building and checking a [`Verify`] spec: from the `channels create` flags ([`VerifyArgs`])
//! or from JSON through the admin API ([`Verify::validate`]), with the same rules, so a spec
//! that is stored can always be used.

use std::fmt;
use std::time::Duration;

use super::{DEFAULT_TOLERANCE_SECS, Encoding, Verify, standard_key};

/// The signature schemes, as `--verify` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VerifyKind {
    Github,
    Stripe,
    Standard,
    Slack,
    #[value(name = "hmac-sha256")]
    HmacSha256,
}

impl VerifyKind {
    /// The name used by `--verify` and by the JSON `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyKind::Github => "github",
            VerifyKind::Stripe => "stripe",
            VerifyKind::Standard => "standard",
            VerifyKind::Slack => "slack",
            VerifyKind::HmacSha256 => "hmac-sha256",
        }
    }

    /// Schemes signed with a timestamp, which take a tolerance.
    fn has_timestamp(self) -> bool {
        matches!(
            self,
            VerifyKind::Stripe | VerifyKind::Standard | VerifyKind::Slack
        )
    }

    /// Schemes that accept several secrets at once, for rotation.
    fn rotates(self) -> bool {
        matches!(self, VerifyKind::Stripe | VerifyKind::Standard)
    }
}

impl fmt::Display for VerifyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Signature verification flags of `relay-server channels create`, flattened into that command.
///
/// `Debug` never shows a secret.
#[derive(Clone, Default, clap::Args)]
pub struct VerifyArgs {
    /// Refuse webhooks not signed this way: github, stripe, standard, slack or hmac-sha256
    #[arg(long, value_enum)]
    pub verify: Option<VerifyKind>,

    /// Signing secret; repeat it during a rotation (stripe and standard accept several)
    #[arg(long = "secret", value_name = "SECRET")]
    pub secrets: Vec<String>,

    /// Largest accepted distance between the signed timestamp and now (stripe, standard,
    /// slack; default 5m)
    #[arg(long, value_parser = humantime::parse_duration)]
    pub tolerance: Option<Duration>,

    /// Header carrying the signature (hmac-sha256 only), e.g. X-Shopify-Hmac-Sha256
    #[arg(long)]
    pub signature_header: Option<String>,

    /// How the signature is written (hmac-sha256 only; default hex)
    #[arg(long, value_enum)]
    pub signature_encoding: Option<Encoding>,

    /// Text before the encoded signature (hmac-sha256 only; default none), e.g. "sha256="
    #[arg(long)]
    pub signature_prefix: Option<String>,
}

impl fmt::Debug for VerifyArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyArgs")
            .field("verify", &self.verify)
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .field("tolerance", &self.tolerance)
            .field("signature_header", &self.signature_header)
            .field("signature_encoding", &self.signature_encoding)
            .field("signature_prefix", &self.signature_prefix)
            .finish()
    }
}

/// Why a verification spec cannot be used. Flag combinations are named as flags; the rules on
/// values apply to JSON specs too and name their fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifySpecError {
    #[error("{0} given without --verify")]
    WithoutVerify(&'static str),
    #[error("--verify {0} needs --secret")]
    MissingSecret(VerifyKind),
    #[error("--verify {0} takes one --secret")]
    OneSecret(VerifyKind),
    #[error("{flag} only applies to --verify {applies_to}")]
    NotApplicable {
        flag: &'static str,
        applies_to: &'static str,
    },
    #[error("--verify hmac-sha256 needs --signature-header")]
    MissingSignatureHeader,
    #[error("--tolerance must be a whole number of seconds")]
    FractionalTolerance,
    #[error("{0} needs at least one secret")]
    NoSecret(VerifyKind),
    #[error("secret {index} is empty")]
    EmptySecret { index: usize },
    #[error("secret {index} is not a Standard Webhooks secret: expected whsec_ followed by base64")]
    StandardSecret { index: usize },
    #[error("tolerance must be at least 1 s")]
    ZeroTolerance,
    #[error("signature header {0:?} is not a valid HTTP header name")]
    InvalidHeader(String),
    #[error("signature prefix must be ASCII")]
    NonAsciiPrefix,
}

impl VerifyArgs {
    /// The spec these flags describe: `None` without `--verify`, an error naming the flag for
    /// any flag that does not apply, then the same checks as [`Verify::validate`].
    pub fn build(&self) -> Result<Option<Verify>, VerifySpecError> {
        let generic_flags = [
            (self.signature_header.is_some(), "--signature-header"),
            (self.signature_encoding.is_some(), "--signature-encoding"),
            (self.signature_prefix.is_some(), "--signature-prefix"),
        ];
        let Some(kind) = self.verify else {
            let stray = [
                (!self.secrets.is_empty(), "--secret"),
                (self.tolerance.is_some(), "--tolerance"),
            ]
            .into_iter()
            .chain(generic_flags)
            .find_map(|(given, flag)| given.then_some(flag));
            return match stray {
                Some(flag) => Err(VerifySpecError::WithoutVerify(flag)),
                None => Ok(None),
            };
        };
        let generic_flag = generic_flags
            .into_iter()
            .find_map(|(given, flag)| given.then_some(flag));
        if let (false, Some(flag)) = (kind == VerifyKind::HmacSha256, generic_flag) {
            return Err(VerifySpecError::NotApplicable {
                flag,
                applies_to: "hmac-sha256",
            });
        }
        if !kind.has_timestamp() && self.tolerance.is_some() {
            return Err(VerifySpecError::NotApplicable {
                flag: "--tolerance",
                applies_to: "stripe, standard or slack",
            });
        }
        let (first, rest) = self
            .secrets
            .split_first()
            .ok_or(VerifySpecError::MissingSecret(kind))?;
        if !kind.rotates() && !rest.is_empty() {
            return Err(VerifySpecError::OneSecret(kind));
        }
        let tolerance_secs = match self.tolerance {
            None => DEFAULT_TOLERANCE_SECS,
            Some(d) if d.subsec_nanos() != 0 => return Err(VerifySpecError::FractionalTolerance),
            Some(d) => d.as_secs(),
        };
        let secret = first.clone();
        let secrets = self.secrets.clone();
        let spec = match kind {
            VerifyKind::Github => Verify::Github { secret },
            VerifyKind::Stripe => Verify::Stripe {
                secrets,
                tolerance_secs,
            },
            VerifyKind::Standard => Verify::Standard {
                secrets,
                tolerance_secs,
            },
            VerifyKind::Slack => Verify::Slack {
                secret,
                tolerance_secs,
            },
            VerifyKind::HmacSha256 => Verify::HmacSha256 {
                secret,
                header: self
                    .signature_header
                    .clone()
                    .ok_or(VerifySpecError::MissingSignatureHeader)?,
                encoding: self.signature_encoding.unwrap_or_default(),
                prefix: self.signature_prefix.clone().unwrap_or_default(),
            },
        };
        spec.validate()?;
        Ok(Some(spec))
    }
}

impl Verify {
    /// Checks a spec that arrived as JSON (or was built from flags) before it is stored:
    /// at least one secret, none empty, Standard Webhooks secrets in their `whsec_<base64>`
    /// form, a tolerance of at least a second, a valid header name and an ASCII prefix.
    pub fn validate(&self) -> Result<(), VerifySpecError> {
        let (secrets, tolerance_secs) = match self {
            Verify::Github { secret } | Verify::HmacSha256 { secret, .. } => {
                (std::slice::from_ref(secret), None)
            }
            Verify::Slack {
                secret,
                tolerance_secs,
            } => (std::slice::from_ref(secret), Some(*tolerance_secs)),
            Verify::Stripe {
                secrets,
                tolerance_secs,
            }
            | Verify::Standard {
                secrets,
                tolerance_secs,
            } => (secrets.as_slice(), Some(*tolerance_secs)),
        };
        if secrets.is_empty() {
            return Err(VerifySpecError::NoSecret(self.verify_kind()));
        }
        for (i, secret) in secrets.iter().enumerate() {
            let index = i + 1;
            if secret.is_empty() {
                return Err(VerifySpecError::EmptySecret { index });
            }
            if matches!(self, Verify::Standard { .. }) && standard_key(secret).is_none() {
                return Err(VerifySpecError::StandardSecret { index });
            }
        }
        if tolerance_secs == Some(0) {
            return Err(VerifySpecError::ZeroTolerance);
        }
        if let Verify::HmacSha256 { header, prefix, .. } = self {
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return Err(VerifySpecError::InvalidHeader(header.clone()));
            }
            if !prefix.is_ascii() {
                return Err(VerifySpecError::NonAsciiPrefix);
            }
        }
        Ok(())
    }
}
