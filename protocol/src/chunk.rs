//! Cutting a body stream into frame-sized slices.
//!
//! Both sides read a body (the sender's request on the server, the target's response on the
//! agent) as a stream of byte buffers of arbitrary sizes and send it as slices of at most
//! [`MAX_CHUNK_LEN`]. This type does the cutting and the size limit, and nothing else: no
//! clocks, no sockets; callers wrap [`Chunked::next_chunk`] in their own timeout.

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use crate::MAX_CHUNK_LEN;

/// A body stream read in slices of at most [`MAX_CHUNK_LEN`] bytes.
#[derive(Debug)]
pub struct Chunked<S> {
    stream: S,
    buf: BytesMut,
    eof: bool,
    total: u64,
    max: u64,
}

/// Why the next slice could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError<E> {
    /// More than the limit given to [`Chunked::new`] arrived.
    #[error("body exceeds {0} bytes")]
    TooLarge(u64),
    /// The underlying stream failed.
    #[error("body stream failed: {0}")]
    Source(E),
}

impl<S, E> Chunked<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    /// Reads `stream`, failing once more than `max` bytes have arrived.
    pub fn new(stream: S, max: u64) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            eof: false,
            total: 0,
            max,
        }
    }

    /// The next slice and whether it is the last one. Small bodies arrive whole in one slice.
    ///
    /// Cancel-safe: data already read stays buffered in `self`, so a caller that times out and
    /// calls again loses nothing.
    pub async fn next_chunk(&mut self) -> Result<(Bytes, bool), ChunkError<E>> {
        while self.buf.len() < MAX_CHUNK_LEN && !self.eof {
            match self.stream.next().await {
                None => self.eof = true,
                Some(Ok(data)) => {
                    self.total += data.len() as u64;
                    if self.total > self.max {
                        return Err(ChunkError::TooLarge(self.max));
                    }
                    self.buf.extend_from_slice(&data);
                }
                Some(Err(e)) => return Err(ChunkError::Source(e)),
            }
        }
        let n = self.buf.len().min(MAX_CHUNK_LEN);
        let chunk = self.buf.split_to(n).freeze();
        Ok((chunk, self.eof && self.buf.is_empty()))
    }
}
