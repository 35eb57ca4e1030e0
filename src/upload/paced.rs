//! The request body as multer reads it: counted against the size limit, and never far ahead of
//! what multer hands on.
//!
//! multer pulls from its stream for as long as the stream is ready and buffers all of it, and it
//! asks for more before looking at what it holds. Fed a fast client (or a body hyper already
//! holds), it would read the body into memory up to the size limit before the first chunk reached
//! the file; fed a part whose headers never end, or a body without its boundary, it would buffer
//! all of that too. [`Paced`] stands between the body and multer and keeps its buffer small:
//!
//! - after every chunk it answers `Pending` once (waking the task at once), so multer hands the
//!   chunk on before asking for the next;
//! - it knows how many bytes multer has handed on as field data ([`Progress`], fed by the
//!   receiving loop); while more than [`WINDOW`] bytes are still inside multer, it answers
//!   `Pending` instead of reading on, as long as multer keeps making progress from what it holds;
//! - when multer makes no progress and still holds more than [`MAX_UNFRAMED`] bytes, the body is
//!   not a form (a header block or a preamble that never ends), and reading stops with an error.
//!
//! It is also where the body size is counted, so a body over `max_upload_size` is refused the
//! moment it crosses the limit, and where a body that stops coming is noticed: when the client
//! has sent nothing for `upload_idle_timeout` while wheelgate waits for it, reading stops with an
//! error. Only waiting on the client counts; a pause of wheelgate's own (above) does not.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use super::error::one_line;

/// Bytes multer may hold beyond what it has handed on before it must use them up.
pub(crate) const WINDOW: u64 = 256 << 10;
/// Bytes of the body that may be framing (boundaries, part headers) or not yet handed on when
/// multer cannot go on without more: real forms use a few kilobytes.
pub(crate) const MAX_UNFRAMED: u64 = 2 << 20;

/// What multer has handed on, as the receiving loop reports it.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Bytes of field data handed on.
    delivered: AtomicU64,
    /// Fields and chunks handed on: any change means multer moved on.
    steps: AtomicU64,
}

impl Progress {
    /// A new part was handed on.
    pub(crate) fn part(&self) {
        self.steps.fetch_add(1, Ordering::Relaxed);
    }

    /// A chunk of field data was handed on.
    pub(crate) fn chunk(&self, len: usize) {
        self.delivered.fetch_add(len as u64, Ordering::Relaxed);
        self.steps.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why the body stream stopped, as handed to multer and recovered by the receiving loop.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    Read(String),
    #[error("more than {max} bytes of the body are not form data")]
    Unframed { max: u64 },
    #[error("no byte of the body arrived for {after:?}")]
    Idle { after: Duration },
}

/// The body stream handed to multer.
pub(crate) struct Paced<S> {
    inner: S,
    limit: u64,
    /// Bytes read from the body.
    seen: u64,
    progress: Arc<Progress>,
    /// `progress.steps` when reading on was last declined.
    declined_at: Option<u64>,
    just_yielded: bool,
    done: bool,
    /// How long the body may go without a chunk while it is waited on.
    idle: Duration,
    /// Set when a poll of the body finds nothing; cleared by the next chunk.
    waiting: bool,
    /// The deadline of the current wait; made at the first wait (a body that never makes one
    /// needs no timer, nor a runtime).
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S> Paced<S> {
    /// Wraps `inner`, to be refused past `limit` bytes or after `idle` without a byte; the
    /// receiving loop reports to the returned [`Progress`].
    pub(crate) fn new(inner: S, limit: u64, idle: Duration) -> (Paced<S>, Arc<Progress>) {
        let progress = Arc::new(Progress::default());
        let paced = Paced {
            inner,
            limit,
            seen: 0,
            progress: progress.clone(),
            declined_at: None,
            just_yielded: false,
            done: false,
            idle,
            waiting: false,
            timer: None,
        };
        (paced, progress)
    }

    /// The body had nothing: starts the wait's clock if this is its first poll, and tells whether
    /// the wait has lasted `idle`.
    fn waited_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.waiting {
            self.waiting = true;
            // A deadline beyond what the clock can hold is no deadline (a year will do).
            let now = Instant::now();
            let deadline = now
                .checked_add(self.idle)
                .unwrap_or_else(|| now + Duration::from_secs(365 * 86_400));
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        self.timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready())
    }

    /// Returns `Pending` after waking the task: multer goes on with what it holds and asks again.
    fn pause(cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<S, E> Stream for Paced<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn StdError + Send + Sync>>,
{
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.just_yielded {
            this.just_yielded = false;
            return Self::pause(cx);
        }
        let held = this
            .seen
            .saturating_sub(this.progress.delivered.load(Ordering::Relaxed));
        if held > WINDOW {
            let steps = this.progress.steps.load(Ordering::Relaxed);
            if this.declined_at != Some(steps) {
                this.declined_at = Some(steps);
                return Self::pause(cx);
            }
            // No progress since reading on was declined: multer needs more bytes to go on.
            if held > MAX_UNFRAMED {
                this.done = true;
                return Poll::Ready(Some(Err(BodyError::Unframed { max: MAX_UNFRAMED })));
            }
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.waiting = false;
                this.seen = this.seen.saturating_add(chunk.len() as u64);
                if this.seen > this.limit {
                    this.done = true;
                    return Poll::Ready(Some(Err(BodyError::TooLarge { limit: this.limit })));
                }
                this.just_yielded = true;
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.done = true;
                let error: Box<dyn StdError + Send + Sync> = error.into();
                Poll::Ready(Some(Err(BodyError::Read(one_line(&error.to_string())))))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending if this.waited_too_long(cx) => {
                this.done = true;
                Poll::Ready(Some(Err(BodyError::Idle { after: this.idle })))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::task::Waker;

    use futures_util::stream;

    use super::*;

    fn poll<S: Stream + Unpin>(stream: &mut S) -> Poll<Option<S::Item>> {
        Pin::new(stream).poll_next(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn one_chunk_per_poll_and_the_size_limit() {
        let chunks = [
            Ok::<_, Infallible>(Bytes::from_static(b"ab")),
            Ok(Bytes::from_static(b"cd")),
        ];
        let (mut paced, _) = Paced::new(stream::iter(chunks), 3, Duration::MAX);
        assert!(matches!(poll(&mut paced), Poll::Ready(Some(Ok(c))) if c == "ab"));
        assert!(poll(&mut paced).is_pending(), "a pause after every chunk");
        assert!(matches!(
            poll(&mut paced),
            Poll::Ready(Some(Err(BodyError::TooLarge { limit: 3 })))
        ));
        assert!(matches!(poll(&mut paced), Poll::Ready(None)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_coming_ends_after_the_idle_timeout() {
        use futures_util::StreamExt as _;
        let idle = Duration::from_secs(60);
        let chunks =
            stream::iter([Ok::<_, Infallible>(Bytes::from_static(b"ab"))]).chain(stream::pending());
        let (mut paced, _) = Paced::new(chunks, u64::MAX, idle);
        let start = Instant::now();
        assert!(matches!(paced.next().await, Some(Ok(c)) if c == "ab"));
        let ended = tokio::time::timeout(2 * idle, paced.next()).await;
        assert!(
            matches!(ended, Ok(Some(Err(BodyError::Idle { after }))) if after == idle),
            "{ended:?}"
        );
        assert_eq!(
            start.elapsed(),
            idle,
            "the wait is measured from the last chunk"
        );
        assert!(paced.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_body_that_keeps_coming_is_read_whole() {
        use futures_util::StreamExt as _;
        // Five chunks 40 s apart: 200 s in all, never 60 s without a byte.
        let chunks = stream::unfold(0, |sent| async move {
            if sent == 5 {
                return None;
            }
            tokio::time::sleep(Duration::from_secs(40)).await;
            Some((Ok::<_, Infallible>(Bytes::from_static(b"x")), sent + 1))
        });
        let (paced, _) = Paced::new(Box::pin(chunks), u64::MAX, Duration::from_secs(60));
        let read: Vec<_> = paced.collect().await;
        assert_eq!(read.len(), 5);
        assert!(read.iter().all(Result::is_ok));
    }

    #[test]
    fn reads_on_only_while_multer_moves_on_or_needs_more() {
        const CHUNK: u64 = 64 << 10;
        let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
        let chunks = std::iter::repeat_n(Ok::<_, Infallible>(chunk), 1000);
        let (mut paced, progress) = Paced::new(stream::iter(chunks), u64::MAX, Duration::MAX);
        // Nothing handed on: it reads up to the window, then declines once.
        for _ in 0..100 {
            if poll(&mut paced).is_pending() && paced.declined_at.is_some() {
                break;
            }
        }
        let seen = paced.seen;
        assert!(seen > WINDOW && seen <= WINDOW + CHUNK, "{seen}");
        // While multer moves on with what it holds, nothing more is read.
        for _ in 0..10 {
            progress.part();
            assert!(poll(&mut paced).is_pending());
        }
        assert_eq!(paced.seen, seen);
        // Handing the data on opens the window again.
        progress.chunk(seen as usize);
        assert!(matches!(poll(&mut paced), Poll::Ready(Some(Ok(_)))));
        // Without progress it reads on (multer needs more to go on) until the hard bound.
        let error = loop {
            match poll(&mut paced) {
                Poll::Ready(Some(Err(e))) => break e,
                Poll::Ready(None) => panic!("the stream ended"),
                Poll::Ready(Some(Ok(_))) | Poll::Pending => {}
            }
        };
        assert!(
            matches!(error, BodyError::Unframed { max: MAX_UNFRAMED }),
            "{error}"
        );
        let held = paced.seen - progress.delivered.load(Ordering::Relaxed);
        assert!(
            held > MAX_UNFRAMED && held <= MAX_UNFRAMED + CHUNK,
            "{held}"
        );
        assert!(matches!(poll(&mut paced), Poll::Ready(None)));
    }
}
