//! The frames typed by who sends them: [`ToAgent`] from the relay server, [`FromAgent`] from an
//! agent. Each side encodes only what it may send and decodes only what it may receive, so a
//! server cannot build a `Hello` for an agent and a session loop has no arm for a frame that
//! cannot come its way.
//!
//! On the wire nothing changes: both are written with [`Frame`]'s variant indices (the codec
//! writes a borrowed mirror of [`Frame`]), and decoding reads a [`Frame`] and refuses one that
//! travels the other way with [`DecodeError::WrongDirection`].

use crate::codec::FrameRef;
use crate::{
    Abort, BodyChunk, DecodeError, EncodeError, ErrorFrame, Frame, Hello, RequestHead,
    ResponseHead, Subscribe, Welcome, codec,
};

/// What the relay server sends an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToAgent {
    Welcome(Welcome),
    Request(RequestHead),
    Body(BodyChunk),
    Abort(Abort),
    Error(ErrorFrame),
}

/// What an agent sends the relay server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromAgent {
    Hello(Hello),
    Subscribe(Subscribe),
    Response(ResponseHead),
    Body(BodyChunk),
    Abort(Abort),
    Error(ErrorFrame),
}

impl Frame {
    /// The variant's name, for logs and [`DecodeError::WrongDirection`].
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "hello",
            Frame::Welcome(_) => "welcome",
            Frame::Request(_) => "request",
            Frame::Response(_) => "response",
            Frame::Body(_) => "body",
            Frame::Abort(_) => "abort",
            Frame::Error(_) => "error",
            Frame::Subscribe(_) => "subscribe",
        }
    }
}

impl ToAgent {
    /// Encodes the message into the bytes of one WebSocket binary message.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        codec::encode_ref(match self {
            ToAgent::Welcome(v) => FrameRef::Welcome(v),
            ToAgent::Request(v) => FrameRef::Request(v),
            ToAgent::Body(v) => FrameRef::Body(v),
            ToAgent::Abort(v) => FrameRef::Abort(v),
            ToAgent::Error(v) => FrameRef::Error(v),
        })
    }

    /// Decodes what the server sent; a frame only an agent sends is [`DecodeError::WrongDirection`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match codec::decode(bytes)? {
            Frame::Welcome(v) => Ok(ToAgent::Welcome(v)),
            Frame::Request(v) => Ok(ToAgent::Request(v)),
            Frame::Body(v) => Ok(ToAgent::Body(v)),
            Frame::Abort(v) => Ok(ToAgent::Abort(v)),
            Frame::Error(v) => Ok(ToAgent::Error(v)),
            frame @ (Frame::Hello(_) | Frame::Subscribe(_) | Frame::Response(_)) => {
                Err(DecodeError::WrongDirection {
                    kind: frame.kind(),
                    from: "relay server",
                })
            }
        }
    }
}

impl FromAgent {
    /// Encodes the message into the bytes of one WebSocket binary message.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        codec::encode_ref(match self {
            FromAgent::Hello(v) => FrameRef::Hello(v),
            FromAgent::Subscribe(v) => FrameRef::Subscribe(v),
            FromAgent::Response(v) => FrameRef::Response(v),
            FromAgent::Body(v) => FrameRef::Body(v),
            FromAgent::Abort(v) => FrameRef::Abort(v),
            FromAgent::Error(v) => FrameRef::Error(v),
        })
    }

    /// Decodes what an agent sent; a frame only the server sends is
    /// [`DecodeError::WrongDirection`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match codec::decode(bytes)? {
            Frame::Hello(v) => Ok(FromAgent::Hello(v)),
            Frame::Subscribe(v) => Ok(FromAgent::Subscribe(v)),
            Frame::Response(v) => Ok(FromAgent::Response(v)),
            Frame::Body(v) => Ok(FromAgent::Body(v)),
            Frame::Abort(v) => Ok(FromAgent::Abort(v)),
            Frame::Error(v) => Ok(FromAgent::Error(v)),
            frame @ (Frame::Welcome(_) | Frame::Request(_)) => Err(DecodeError::WrongDirection {
                kind: frame.kind(),
                from: "agent",
            }),
        }
    }
}

impl From<ToAgent> for Frame {
    fn from(message: ToAgent) -> Self {
        match message {
            ToAgent::Welcome(v) => Frame::Welcome(v),
            ToAgent::Request(v) => Frame::Request(v),
            ToAgent::Body(v) => Frame::Body(v),
            ToAgent::Abort(v) => Frame::Abort(v),
            ToAgent::Error(v) => Frame::Error(v),
        }
    }
}

impl From<FromAgent> for Frame {
    fn from(message: FromAgent) -> Self {
        match message {
            FromAgent::Hello(v) => Frame::Hello(v),
            FromAgent::Subscribe(v) => Frame::Subscribe(v),
            FromAgent::Response(v) => Frame::Response(v),
            FromAgent::Body(v) => Frame::Body(v),
            FromAgent::Abort(v) => Frame::Abort(v),
            FromAgent::Error(v) => Frame::Error(v),
        }
    }
}
