//! A byte stream that proves its content before it lets the last bytes go.
//!
//! Files are streamed to clients as the upstream sends them, so the digest can only be known at
//! the end. To make sure no client ever holds a complete wrong file, the most recent chunk is held
//! back until the upstream's stream ends and the sha256 matches the one the index page declared;
//! on a mismatch the stream ends with an error instead, which makes hyper abort the response (a
//! short body under `Content-Length`, or a chunked body without its terminator), and pip and uv
//! report a failed download.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use sha2::{Digest, Sha256};
use tokio::sync::OwnedSemaphorePermit;

use crate::simple::digest::Sha256Digest;
use crate::upstream::UpstreamError;

/// Why a file transfer was cut short.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(
        "sha256 mismatch for {what}: the index declared {expected} but the upstream sent {actual}; \
         the transfer was aborted"
    )]
    Mismatch {
        what: String,
        expected: Sha256Digest,
        actual: Sha256Digest,
    },
}

/// Wraps an upstream body, hashing what passes and withholding the last chunk until verified.
pub struct Verified<S> {
    inner: S,
    hasher: Sha256,
    expected: Option<Sha256Digest>,
    pending: Option<Bytes>,
    /// Names the file in the error message and log line.
    what: String,
    finished: bool,
    /// Holds a slot of `max_concurrent_fetches` for as long as the transfer runs.
    _permit: Option<OwnedSemaphorePermit>,
}

impl<S> Verified<S> {
    /// `expected` is `None` when the upstream declared no digest: the bytes pass unchecked.
    pub fn new(
        inner: S,
        expected: Option<Sha256Digest>,
        what: String,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        Verified {
            inner,
            hasher: Sha256::new(),
            expected,
            pending: None,
            what,
            finished: false,
            _permit: permit,
        }
    }
}

impl<S> Stream for Verified<S>
where
    S: Stream<Item = Result<Bytes, UpstreamError>> + Unpin,
{
    type Item = Result<Bytes, TransferError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(error))) => {
                    this.finished = true;
                    this.pending = None;
                    return Poll::Ready(Some(Err(error.into())));
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    if chunk.is_empty() {
                        continue;
                    }
                    this.hasher.update(&chunk);
                    if let Some(previous) = this.pending.replace(chunk) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
                Poll::Ready(None) => {
                    this.finished = true;
                    let last = this.pending.take();
                    if let Some(expected) = this.expected {
                        let actual =
                            Sha256Digest::from_bytes(this.hasher.finalize_reset().into());
                        if actual != expected {
                            tracing::error!(
                                file = %this.what,
                                %expected,
                                %actual,
                                "sha256 mismatch: the upstream sent different bytes than its index declared; transfer aborted"
                            );
                            return Poll::Ready(Some(Err(TransferError::Mismatch {
                                what: std::mem::take(&mut this.what),
                                expected,
                                actual,
                            })));
                        }
                    }
                    return Poll::Ready(last.map(Ok));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{stream, StreamExt};

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, UpstreamError>> + Unpin {
        stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>())
    }

    async fn collect(
        s: Verified<impl Stream<Item = Result<Bytes, UpstreamError>> + Unpin>,
    ) -> (Vec<u8>, Option<TransferError>) {
        let mut out = Vec::new();
        let mut s = Box::pin(s);
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn passes_matching_bytes_whole() {
        let expected = Sha256Digest::of(b"hello world");
        let v = Verified::new(chunks(&[b"hello", b" ", b"world"]), Some(expected), "f".into(), None);
        let (bytes, err) = collect(v).await;
        assert_eq!(bytes, b"hello world");
        assert!(err.is_none());
    }

    #[tokio::test]
    async fn withholds_the_last_chunk_on_mismatch() {
        let expected = Sha256Digest::of(b"something else");
        let v = Verified::new(chunks(&[b"hello", b" ", b"world"]), Some(expected), "f".into(), None);
        let (bytes, err) = collect(v).await;
        assert_eq!(bytes, b"hello ", "the final chunk must not reach the client");
        assert!(matches!(err, Some(TransferError::Mismatch { .. })));
    }

    #[tokio::test]
    async fn single_chunk_mismatch_sends_nothing() {
        let expected = Sha256Digest::of(b"x");
        let v = Verified::new(chunks(&[b"hello world"]), Some(expected), "f".into(), None);
        let (bytes, err) = collect(v).await;
        assert!(bytes.is_empty());
        assert!(err.is_some());
    }

    #[tokio::test]
    async fn no_declared_digest_passes_everything() {
        let v = Verified::new(chunks(&[b"a", b"", b"b"]), None, "f".into(), None);
        let (bytes, err) = collect(v).await;
        assert_eq!(bytes, b"ab");
        assert!(err.is_none());
    }
}
