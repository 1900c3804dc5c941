//! Frame encoding: the only place bincode is configured.
//!
//! Standard bincode configuration (little endian, variable-length integers) with a byte limit,
//! so a hostile length prefix is refused before anything is allocated for it.

use bincode::config::{Config, standard};
use serde::Serialize;

use crate::{
    Abort, BodyChunk, DecodeError, EncodeError, ErrorFrame, Frame, Headers, Hello, MAX_FRAME_LEN,
    RequestHead, ResponseHead, Subscribe, Welcome,
};

fn config() -> impl Config {
    standard().with_limit::<MAX_FRAME_LEN>()
}

/// [`Frame`] by reference, variants in [`Frame`]'s order, so serde gives each the index
/// [`Frame`] gives it. A test pins the bytes of both against each other.
#[derive(Serialize)]
#[serde(rename = "Frame")]
pub(crate) enum FrameRef<'a> {
    Hello(&'a Hello),
    Welcome(&'a Welcome),
    Request(&'a RequestHead),
    Response(&'a ResponseHead),
    Body(&'a BodyChunk),
    Abort(&'a Abort),
    Error(&'a ErrorFrame),
    Subscribe(&'a Subscribe),
}

impl Frame {
    pub(crate) fn as_ref(&self) -> FrameRef<'_> {
        match self {
            Frame::Hello(v) => FrameRef::Hello(v),
            Frame::Welcome(v) => FrameRef::Welcome(v),
            Frame::Request(v) => FrameRef::Request(v),
            Frame::Response(v) => FrameRef::Response(v),
            Frame::Body(v) => FrameRef::Body(v),
            Frame::Abort(v) => FrameRef::Abort(v),
            Frame::Error(v) => FrameRef::Error(v),
            Frame::Subscribe(v) => FrameRef::Subscribe(v),
        }
    }
}

/// Encodes one frame into the bytes of one WebSocket binary message. Each side sends through
/// [`crate::ToAgent::encode`] or [`crate::FromAgent::encode`], which write the same bytes.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, EncodeError> {
    encode_ref(frame.as_ref())
}

pub(crate) fn encode_ref(frame: FrameRef<'_>) -> Result<Vec<u8>, EncodeError> {
    // Sized up front: growing from empty would reallocate and copy about ten times for a frame
    // carrying a kilobyte of body, on every delivery.
    let mut bytes = Vec::with_capacity(size_hint(&frame));
    bincode::serde::encode_into_std_write(&frame, &mut bytes, config())
        .map_err(|e| EncodeError::Other(e.to_string()))?;
    if bytes.len() > MAX_FRAME_LEN {
        return Err(EncodeError::TooLarge { max: MAX_FRAME_LEN });
    }
    Ok(bytes)
}

/// An upper estimate of a frame's encoded size: its variable-length parts plus room for ids,
/// length prefixes and flags.
fn size_hint(frame: &FrameRef<'_>) -> usize {
    const FIXED: usize = 64;
    let headers = |h: &Headers| h.iter().map(|(n, v)| n.len() + v.len() + 18).sum::<usize>();
    FIXED
        + match frame {
            FrameRef::Request(r) => {
                r.method.len()
                    + r.path.len()
                    + r.query.as_ref().map_or(0, String::len)
                    + headers(&r.headers)
                    + r.body.len()
            }
            FrameRef::Response(r) => headers(&r.headers) + r.body.len(),
            FrameRef::Body(b) => b.data.len(),
            FrameRef::Subscribe(s) => s.events.iter().map(|e| e.len() + 2).sum::<usize>(),
            FrameRef::Hello(_) | FrameRef::Welcome(_) | FrameRef::Abort(_) | FrameRef::Error(_) => {
                FIXED
            }
        }
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
