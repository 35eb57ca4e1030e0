//! Reading the upstream's response bodies, with the idle timeout between pieces.
//!
//! A page is read whole and refused as soon as it passes the caller's limit; a file is handed on
//! as a stream, [`FileBody`], that clients receive while it arrives. Either way an upstream that
//! falls silent ends the body with a timeout error instead of holding a client forever, and only
//! silence on the upstream's side counts.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Incoming};
use url::Url;

use super::error::error_chain;
use super::{RedactedUrl, TimeoutKind, UpstreamError};

/// Reads a whole page, failing as soon as it exceeds `limit` or the upstream falls silent for
/// longer than `idle`.
pub(super) async fn read_limited(
    mut body: Incoming,
    url: &Url,
    limit: usize,
    idle: Duration,
) -> Result<Bytes, UpstreamError> {
    let too_large = || UpstreamError::PageTooLarge {
        url: RedactedUrl::new(url),
        limit,
    };
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large());
    }
    let mut page = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_elapsed) => {
                return Err(UpstreamError::Timeout {
                    kind: TimeoutKind::Idle,
                    url: RedactedUrl::new(url),
                    after: idle,
                })
            }
            Ok(None) => return Ok(page.freeze()),
            Ok(Some(Err(e))) => {
                return Err(UpstreamError::Protocol {
                    url: RedactedUrl::new(url),
                    reason: error_chain(&e),
                })
            }
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers carry nothing a page needs.
        if let Ok(data) = frame.into_data() {
            if page.len().saturating_add(data.len()) > limit {
                return Err(too_large());
            }
            page.extend_from_slice(&data);
        }
    }
}

/// The body of a file on its way from the upstream, as a stream of chunks.
///
/// The idle timeout measures how long *we* wait for the upstream: the clock starts when a poll
/// finds no data, not when the last chunk was handed out, so a slow client that leaves the
/// stream unpolled does not make the upstream look idle.
pub struct FileBody {
    body: Source,
    url: RedactedUrl,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    waiting: bool,
    done: bool,
}

impl std::fmt::Debug for FileBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBody")
            .field("url", &self.url)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// Where a file's bytes come from.
enum Source {
    /// An upstream response.
    Upstream(Incoming),
    /// Another tier with its own timeouts (the shared bucket).
    Other(futures_util::stream::BoxStream<'static, Result<Bytes, UpstreamError>>),
}

impl FileBody {
    pub(super) fn new(body: Incoming, url: RedactedUrl, idle: Duration) -> FileBody {
        FileBody {
            body: Source::Upstream(body),
            url,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
            done: false,
        }
    }
}

impl FileBody {
    /// A body from another tier than the upstream (the shared bucket), which keeps its own
    /// timeouts; `url` names where it came from in errors.
    pub fn from_stream(
        stream: futures_util::stream::BoxStream<'static, Result<Bytes, UpstreamError>>,
        url: &Url,
    ) -> FileBody {
        FileBody {
            body: Source::Other(stream),
            url: RedactedUrl::new(url),
            idle: Duration::MAX,
            deadline: Box::pin(tokio::time::sleep(Duration::ZERO)),
            waiting: false,
            done: false,
        }
    }
}

impl Stream for FileBody {
    type Item = Result<Bytes, UpstreamError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let body = match &mut this.body {
            Source::Upstream(body) => body,
            Source::Other(stream) => return stream.as_mut().poll_next(cx),
        };
        loop {
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.waiting = false;
                    match frame.into_data() {
                        Ok(data) if !data.is_empty() => return Poll::Ready(Some(Ok(data))),
                        // Empty data frames and trailers: keep reading.
                        _ => continue,
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(UpstreamError::Protocol {
                        url: this.url.clone(),
                        reason: error_chain(&e),
                    })));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if !this.waiting {
                        this.waiting = true;
                        this.deadline
                            .as_mut()
                            .reset(tokio::time::Instant::now() + this.idle);
                    }
                    if this.deadline.as_mut().poll(cx).is_ready() {
                        this.done = true;
                        return Poll::Ready(Some(Err(UpstreamError::Timeout {
                            kind: TimeoutKind::Idle,
                            url: this.url.clone(),
                            after: this.idle,
                        })));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;
    use http::StatusCode;

    use super::*;
    use crate::upstream::testing::*;
    use crate::upstream::PageFetch;

    #[tokio::test]
    async fn idle_timeout_mid_file_ends_the_stream_with_an_error() {
        let index =
            serve(|_, _| async { stalling("first", Duration::from_secs(3), "second") }).await;
        let mut s = settings(&index.url("/simple/"));
        s.idle_timeout = Duration::from_millis(200);
        let fetch = upstream(s).fetch_file(&index.url("/f.whl")).await.unwrap();
        let mut body = fetch.body;
        assert_eq!(body.next().await.unwrap().unwrap().as_ref(), b"first");
        let err = body.next().await.unwrap().unwrap_err();
        assert!(
            matches!(
                err,
                UpstreamError::Timeout {
                    kind: TimeoutKind::Idle,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(
            body.next().await.is_none(),
            "the stream ends after the error"
        );
    }

    #[tokio::test]
    async fn a_slow_reader_does_not_trip_the_idle_timeout() {
        let index =
            serve(|_, _| async { stalling("first", Duration::from_millis(50), "second") }).await;
        let mut s = settings(&index.url("/simple/"));
        s.idle_timeout = Duration::from_millis(300);
        let mut body = upstream(s)
            .fetch_file(&index.url("/f.whl"))
            .await
            .unwrap()
            .body;
        assert_eq!(body.next().await.unwrap().unwrap().as_ref(), b"first");
        // The consumer dawdles for longer than the idle timeout; the upstream was not idle.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(body.next().await.unwrap().unwrap().as_ref(), b"second");
    }

    #[tokio::test]
    async fn idle_timeout_mid_page_is_a_504() {
        let index =
            serve(|_, _| async { stalling("<html>", Duration::from_secs(3), "</html>") }).await;
        let mut s = settings(&index.url("/simple/"));
        s.idle_timeout = Duration::from_millis(200);
        let err = page(&upstream(s), &index.url("/simple/"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                UpstreamError::Timeout {
                    kind: TimeoutKind::Idle,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn pages_over_the_limit_are_refused() {
        let index = serve(|seen, _| async move {
            if seen.path == "/declared/" {
                text(200, "0123456789abcdefghij")
            } else {
                stalling("0123456789", Duration::from_millis(10), "abcdefghij")
            }
        })
        .await;
        let up = upstream(settings(&index.url("/simple/")));
        for path in ["/declared/", "/chunked/"] {
            let err = up
                .fetch_page(&index.url(path), "text/html", None, 15)
                .await
                .unwrap_err();
            assert!(
                matches!(err, UpstreamError::PageTooLarge { limit: 15, .. }),
                "{path}: {err:?}"
            );
            assert!(err.to_string().contains("larger than 15 bytes"), "{err}");
            let fits = up
                .fetch_page(&index.url(path), "text/html", None, 20)
                .await
                .unwrap();
            assert!(
                matches!(fits, PageFetch::Fresh { ref body, .. } if body.len() == 20),
                "{path}"
            );
        }
    }
}
