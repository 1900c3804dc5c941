//! The hookrelay wire protocol: the frames a relay server and its agents exchange, one frame per
//! WebSocket binary message, and their encoding.
//!
//! This crate does no I/O and knows nothing about tokio or sockets. The server sends
//! [`ToAgent`] and receives [`FromAgent`], the agent the other way round, through their
//! `encode` and `decode`; [`Frame`] is the union both are written as on the wire. Nobody else
//! configures bincode. See `docs/protocol.md` for the frame table, the delivery life cycle
//! and the versioning rules.

pub mod api;
mod codec;
mod direction;
mod error;
mod event_type;
mod frame;

pub use codec::{decode, encode};
pub use direction::{FromAgent, ToAgent};
pub use error::{DecodeError, EncodeError, InvalidChannel};
pub use event_type::{
    EVENT_TYPE_HEADER, MAX_EVENT_TYPE_LEN, MAX_PATTERNS, PatternError, Subscription, TypePattern,
    is_event_type,
};
pub use frame::{
    Abort, BodyChunk, ChannelId, DeliveryId, ErrorCode, ErrorFrame, Frame, Headers, Hello,
    RequestHead, ResponseHead, Subscribe, Welcome, close,
};

/// Version of the frame set and its encoding. Both sides send it in their first frame; a peer
/// with another version is refused with [`ErrorCode::VersionMismatch`] and
/// [`close::VERSION_MISMATCH`], naming which side must upgrade.
///
/// Bump it for any change an older peer cannot decode: a new enum variant in the middle, a
/// reordered or removed field. Appending a variant at the end of [`Frame`] keeps old peers
/// decoding every frame they knew.
pub const PROTOCOL_VERSION: u16 = 1;

/// Largest body slice carried by one frame. Bodies of any size travel as a sequence of frames
/// no larger than this, so a 25 MB webhook never needs a 25 MB message and a small delivery is
/// never stuck behind a large one on the same connection.
pub const MAX_CHUNK_LEN: usize = 64 * 1024;

/// Largest encoded frame either side accepts. A head frame carries its headers plus at most one
/// chunk of body; this leaves room for about 1 MiB of headers, far above what HTTP servers
/// accept, and bounds what a hostile peer can make us allocate.
pub const MAX_FRAME_LEN: usize = MAX_CHUNK_LEN + 1024 * 1024;

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_LEN: usize = 64;

/// What a channel name may be, as error messages tell the user.
pub const CHANNEL_NAME_RULE: &str = "use 1 to 64 characters from A-Z, a-z, 0-9, '-' and '_'";

mod headers;
pub use headers::{end_to_end, is_hop_by_hop, push_end_to_end};

mod chunk;
pub use chunk::{ChunkError, Chunked};
