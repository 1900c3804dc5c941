//! Secrets: agent token checks and unguessable channel names.

use protocol::ChannelId;
use subtle::ConstantTimeEq;

/// Bytes of randomness in a server-assigned channel name.
const CHANNEL_ENTROPY_BYTES: usize = 16;

/// Compares a presented token with the expected one in time independent of where they differ.
pub fn token_matches(expected: &str, presented: Option<&str>) -> bool {
    let presented = presented.unwrap_or_default();
    bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// A fresh channel name with 128 random bits from the OS, as 32 lowercase hex digits: URL-safe
/// and unguessable.
pub fn random_channel() -> ChannelId {
    let mut bytes = [0u8; CHANNEL_ENTROPY_BYTES];
    getrandom::fill(&mut bytes).expect("the OS random source is available on supported platforms");
    let name: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    ChannelId::parse(&name).expect("32 hex digits are a valid channel name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_must_match_exactly() {
        assert!(token_matches("s3cret", Some("s3cret")));
        assert!(!token_matches("s3cret", Some("s3creT")));
        assert!(!token_matches("s3cret", Some("s3cret2")));
        assert!(!token_matches("s3cret", None));
    }

    #[test]
    fn random_channels_are_long_and_distinct() {
        let a = random_channel();
        assert_eq!(a.as_str().len(), 32);
        assert_ne!(a, random_channel());
    }
}
