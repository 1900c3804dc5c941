//! Frame encoding: the only place bincode is configured.
//!
//! Standard bincode configuration (little endian, variable-length integers) with a byte limit,
//! so a hostile length prefix is refused before anything is allocated for it.

use bincode::config::{Config, standard};

use crate::{DecodeError, EncodeError, Frame, MAX_FRAME_LEN};

fn config() -> impl Config {
    standard().with_limit::<MAX_FRAME_LEN>()
}

/// Encodes one frame into the bytes of one WebSocket binary message.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, EncodeError> {
    let bytes = bincode::serde::encode_to_vec(frame, config())
        .map_err(|e| EncodeError::Other(e.to_string()))?;
    if bytes.len() > MAX_FRAME_LEN {
        return Err(EncodeError::TooLarge { max: MAX_FRAME_LEN });
    }
    Ok(bytes)
}

/// Decodes one WebSocket binary message into a frame.
///
/// Never panics: oversize input, a bad variant index, a length prefix past the limit, invalid
/// UTF-8 in a string and trailing bytes are all errors.
pub fn decode(bytes: &[u8]) -> Result<Frame, DecodeError> {
    if bytes.len() > MAX_FRAME_LEN {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: MAX_FRAME_LEN,
        });
    }
    let (frame, read) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if read != bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len() - read));
    }
    Ok(frame)
}
