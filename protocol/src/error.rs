//! Errors of the codec and of the typed identifiers.

/// Why bytes received from a peer are not a valid frame. The connection that sent them is
/// closed with [`crate::close::PROTOCOL_ERROR`] or [`crate::close::TOO_BIG`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The message is longer than [`crate::MAX_FRAME_LEN`]; nothing was decoded.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The bytes are not a frame of this protocol version.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A frame decoded but bytes were left over, so the peer and we disagree on the format.
    #[error("{0} unexpected bytes after the frame")]
    TrailingBytes(usize),
    /// A valid frame of a kind that only the receiving side sends (an agent sending `request`,
    /// a server sending `hello`).
    #[error("unexpected {kind} frame from the {from}")]
    WrongDirection {
        kind: &'static str,
        from: &'static str,
    },
}

/// Why a frame could not be encoded; only a frame built against the limits fails.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The frame would exceed [`crate::MAX_FRAME_LEN`]: a body slice or header set too large.
    #[error("frame exceeds the limit of {max} bytes")]
    TooLarge { max: usize },
    /// The serializer failed for another reason.
    #[error("cannot encode frame: {0}")]
    Other(String),
}

/// A channel name that cannot be used in a URL path segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid channel name: {}", crate::CHANNEL_NAME_RULE)]
pub struct InvalidChannel;
