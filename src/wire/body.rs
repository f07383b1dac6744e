//! [`ReplyBody`]: a reply made of shared chunks, so that a large cached
//! encoding (a [`crate::value::Snapshot`]'s) goes out without being copied
//! into a fresh buffer for every request.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// A response body: chunks sent in order, with an exact length.
#[derive(Debug, Clone, Default)]
pub struct ReplyBody {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl ReplyBody {
    /// A body of `chunks` in order (empty chunks are dropped).
    pub fn from_chunks(chunks: impl IntoIterator<Item = Bytes>) -> ReplyBody {
        let chunks: VecDeque<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        ReplyBody { chunks, remaining }
    }

    /// Bytes not yet sent.
    pub fn len(&self) -> u64 {
        self.remaining
    }

    /// Whether nothing is left to send.
    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    /// The whole body in one buffer (tests, the in-process client).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.remaining as usize);
        for chunk in &self.chunks {
            out.extend_from_slice(chunk);
        }
        out
    }
}

/// Where a codec writes a reply: bytes it makes, and shared bytes (a
/// cached encoding) it may pass on without copying.
pub trait Sink {
    /// The buffer that made bytes go to.
    fn buf(&mut self) -> &mut Vec<u8>;

    /// Shared bytes, copied or handed on as they are.
    fn shared(&mut self, bytes: &Bytes);
}

impl Sink for Vec<u8> {
    fn buf(&mut self) -> &mut Vec<u8> {
        self
    }

    fn shared(&mut self, bytes: &Bytes) {
        self.extend_from_slice(bytes);
    }
}

/// A [`Sink`] that keeps large shared bytes as chunks of their own, so a
/// reply made of cached encodings is sent without copying them.
#[derive(Debug, Default)]
pub struct Chunks {
    chunks: Vec<Bytes>,
    buf: Vec<u8>,
}

impl Chunks {
    /// Shared bytes shorter than this are copied: a chunk of their own
    /// would cost more than the copy.
    const SHARE_FROM: usize = 16 * 1024;

    /// The reply body of everything written.
    pub fn into_body(mut self) -> ReplyBody {
        if !self.buf.is_empty() {
            self.chunks.push(Bytes::from(std::mem::take(&mut self.buf)));
        }
        ReplyBody::from_chunks(self.chunks)
    }
}

impl Sink for Chunks {
    fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    fn shared(&mut self, bytes: &Bytes) {
        if bytes.len() < Self::SHARE_FROM {
            self.buf.extend_from_slice(bytes);
            return;
        }
        if !self.buf.is_empty() {
            self.chunks.push(Bytes::from(std::mem::take(&mut self.buf)));
        }
        self.chunks.push(bytes.clone());
    }
}

impl From<Vec<u8>> for ReplyBody {
    fn from(bytes: Vec<u8>) -> ReplyBody {
        ReplyBody::from_chunks([Bytes::from(bytes)])
    }
}

impl From<&'static str> for ReplyBody {
    fn from(text: &'static str) -> ReplyBody {
        ReplyBody::from_chunks([Bytes::from_static(text.as_bytes())])
    }
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let chunk = self.chunks.pop_front();
        if let Some(chunk) = &chunk {
            self.remaining -= chunk.len() as u64;
        }
        Poll::Ready(chunk.map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn large_shared_bytes_become_chunks_of_their_own() {
        let big = Bytes::from(vec![b'b'; 20_000]);
        let mut out = Chunks::default();
        out.buf().extend_from_slice(b"<a>");
        out.shared(&Bytes::from_static(b"small"));
        out.shared(&big);
        out.buf().extend_from_slice(b"</a>");
        let body = out.into_body();
        assert_eq!(body.chunks.len(), 3);
        assert_eq!(body.chunks[1].as_ptr(), big.as_ptr(), "not copied");
        let mut expected = b"<a>small".to_vec();
        expected.extend_from_slice(&big);
        expected.extend_from_slice(b"</a>");
        assert_eq!(body.to_vec(), expected);
    }

    #[tokio::test]
    async fn chunks_arrive_in_order_with_an_exact_length() {
        let body = ReplyBody::from_chunks([
            Bytes::from_static(b"<a>"),
            Bytes::new(),
            Bytes::from(vec![b'x'; 100_000]),
            Bytes::from_static(b"</a>"),
        ]);
        assert_eq!(body.len(), 100_007);
        assert_eq!(body.size_hint().exact(), Some(100_007));
        let expected = body.to_vec();
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(collected.len(), 100_007);
        assert_eq!(&collected[..], &expected[..]);
        assert!(collected.starts_with(b"<a>xx") && collected.ends_with(b"x</a>"));
    }
}
