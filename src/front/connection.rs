//! One accepted connection: served until it ends, falls quiet, or the server stops.
//!
//! hyper's header timeout starts only once the auto builder has recognised the protocol, so a
//! client that sent nothing, part of the HTTP/2 preface or a few bytes of a request line held its
//! connection (and a file descriptor) forever; so did a TLS client that never finished its
//! handshake, and an idle keep-alive or HTTP/2 connection. One rule here covers every protocol:
//! a connection on which no request has been in progress for `[server] request_header_timeout`
//! is closed. The clock starts at accept (the TLS handshake runs on it) and again at the end of
//! each response, and stops while any request is in progress, so a download that takes an hour
//! is not idle. A request is in progress from its complete head until its response body is
//! finished or dropped; [`Activity`] counts them per connection.
//!
//! A connection that never got a complete request head is dropped, and counted in
//! `wheelgate_connection_header_timeouts_total`; one that served requests is shut down
//! gracefully (HTTP/2 sends GOAWAY), for at most [`CLOSE_GRACE`]. HTTP/2 connections are also
//! pinged every [`H2_KEEP_ALIVE_INTERVAL`] and closed when a ping goes unanswered for
//! [`H2_KEEP_ALIVE_TIMEOUT`], so that a peer that vanished while a stream was open is noticed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::handler;
use super::response::{Body, BoxError};
use super::sendfile::{Regions, ZeroCopy};
use crate::app::Live;

/// How often an HTTP/2 connection is pinged.
pub const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// How long an HTTP/2 ping may go unanswered before the connection is closed.
pub const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a quiet connection that served requests gets to close gracefully.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The most request-header bytes buffered per connection. Simple-API requests carry a handful
/// of short headers.
const MAX_HEADER_BUF: usize = 64 * 1024;

/// The connection builder every connection is served with: HTTP/1.1, or HTTP/2 when the client
/// starts with its preface (h2c prior knowledge, or h2 chosen by ALPN).
pub fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The request deadline here covers HTTP/1 too, from accept rather than from the first
        // byte; hyper's own (30 s by default) would cut a longer configured one short.
        .header_read_timeout(None)
        .max_buf_size(MAX_HEADER_BUF);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BUF as u32)
        .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT);
    builder
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The client closed it, or the protocol did (an error, a client's GOAWAY).
    Closed,
    /// No complete request head (or no finished TLS handshake) within the timeout of accept.
    NoRequest,
    /// Quiet for the timeout after serving requests.
    Idle,
    /// The server is shutting down.
    Shutdown,
}

/// A connection just accepted, with what serving it needs.
pub struct Accepted {
    pub live: Arc<Live>,
    pub peer: SocketAddr,
    /// When it was accepted: the request deadline counts from here.
    pub at: Instant,
    /// `[server] request_header_timeout`.
    pub timeout: Duration,
    /// Changes when the server begins to shut down.
    pub shutdown: watch::Receiver<()>,
}

impl Accepted {
    /// Serves a plain-TCP connection; stored bodies leave it by `sendfile` (`front::sendfile`).
    pub async fn serve_plain(
        self,
        builder: &auto::Builder<TokioExecutor>,
        stream: TcpStream,
    ) -> Ending {
        let regions = Regions::new();
        let stream = ZeroCopy::new(stream, regions.clone());
        self.serve(builder, stream, Some(regions)).await
    }

    /// Completes the TLS handshake, within the request deadline, then serves the connection.
    pub async fn serve_tls(
        mut self,
        builder: &auto::Builder<TokioExecutor>,
        acceptor: TlsAcceptor,
        stream: TcpStream,
    ) -> Ending {
        let peer = self.peer;
        let stream = tokio::select! {
            handshake = acceptor.accept(stream) => match handshake {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return Ending::Closed;
                }
            },
            () = expiry(self.at, self.timeout) => return Ending::NoRequest,
            _ = self.shutdown.changed() => return Ending::Shutdown,
        };
        self.serve(builder, stream, None).await
    }

    /// Serves `io`; `regions` when `io` sends the bodies registered there from their files.
    async fn serve<I>(
        mut self,
        builder: &auto::Builder<TokioExecutor>,
        io: I,
        regions: Option<Arc<Regions>>,
    ) -> Ending
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Activity::new();
        let requests = activity.clone();
        let live = self.live.clone();
        let service = service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            let in_flight = activity.begin();
            // Each request keeps the configuration it started with to its end.
            let app = live.current();
            // Offered to the handler, which registers the file bodies it answers with: only
            // GETs get a file body (a HEAD response's is never written).
            if let Some(regions) = &regions {
                if request.method() == hyper::Method::GET {
                    request.extensions_mut().insert(regions.clone());
                }
            }
            async move {
                let response = handler::handle(app, request).await;
                Ok::<_, Infallible>(response.map(|body| Tracked {
                    body,
                    _in_flight: in_flight,
                }))
            }
        });
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let peer = self.peer;
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(error) = served {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                Ending::Closed
            }
            served_any = quiet(requests, self.timeout, self.at) => {
                if !served_any {
                    return Ending::NoRequest;
                }
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(CLOSE_GRACE, connection).await;
                Ending::Idle
            }
            _ = self.shutdown.changed() => {
                connection.as_mut().graceful_shutdown();
                if let Err(error) = connection.await {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                Ending::Shutdown
            }
        }
    }
}

/// Resolves `limit` after `since`; never, when that is beyond what the clock can say.
async fn expiry(since: Instant, limit: Duration) {
    match since.checked_add(limit) {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves once no request has been in progress for `limit`, counting from `since` (the accept)
/// or from the end of the last request; with whether any request came.
///
/// It looks only when a limit could have run out, never per request: a request costs two atomic
/// updates and a clock read, and a busy keep-alive connection wakes this task once per `limit`.
async fn quiet(activity: Activity, limit: Duration, since: Instant) -> bool {
    let mut deadline = since.checked_add(limit);
    loop {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => return std::future::pending().await,
        }
        let now = Instant::now();
        if activity.in_progress() > 0 {
            // Its end restarts the clock; look again a limit from now at the latest.
            deadline = now.checked_add(limit);
            continue;
        }
        let quiet_since = activity.last_end().map_or(since, |end| end.max(since));
        match quiet_since.checked_add(limit) {
            Some(at) if at <= now => return activity.served(),
            later => deadline = later,
        }
    }
}

/// Counts the requests in progress on one connection and remembers when the last one ended.
#[derive(Clone)]
struct Activity(Arc<Counts>);

struct Counts {
    /// The clock's origin for `last_end`.
    origin: Instant,
    in_progress: AtomicUsize,
    /// Milliseconds from `origin` to the end of the last request, plus one; 0 when none ended.
    last_end: AtomicU64,
    served: AtomicBool,
}

/// One request in progress; it ends when dropped.
struct InFlight(Activity);

impl Activity {
    fn new() -> Activity {
        Activity(Arc::new(Counts {
            origin: Instant::now(),
            in_progress: AtomicUsize::new(0),
            last_end: AtomicU64::new(0),
            served: AtomicBool::new(false),
        }))
    }

    fn begin(&self) -> InFlight {
        self.0.in_progress.fetch_add(1, Ordering::AcqRel);
        self.0.served.store(true, Ordering::Relaxed);
        InFlight(self.clone())
    }

    fn in_progress(&self) -> usize {
        self.0.in_progress.load(Ordering::Acquire)
    }

    fn served(&self) -> bool {
        self.0.served.load(Ordering::Relaxed)
    }

    fn last_end(&self) -> Option<Instant> {
        match self.0.last_end.load(Ordering::Acquire) {
            0 => None,
            stamp => Some(self.0.origin + Duration::from_millis(stamp - 1)),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let counts = &self.0 .0;
        let ms = counts.origin.elapsed().as_millis();
        let stamp = u64::try_from(ms).unwrap_or(u64::MAX - 1).saturating_add(1);
        // Stamped before the count drops, so a look that sees no request in progress sees its end.
        counts.last_end.fetch_max(stamp, Ordering::AcqRel);
        counts.in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in progress until it is finished or dropped.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_requests_is_quiet_at_the_limit_from_accept() {
        let accepted = Instant::now();
        let activity = Activity::new();
        tokio::time::advance(Duration::from_secs(10)).await;
        let served = quiet(activity, LIMIT, accepted).await;
        assert!(!served);
        assert_eq!(accepted.elapsed(), LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_holds_the_clock_and_its_end_restarts_it() {
        let accepted = Instant::now();
        let activity = Activity::new();
        let waiting = tokio::spawn(quiet(activity.clone(), LIMIT, accepted));
        tokio::time::advance(Duration::from_secs(20)).await;
        let request = activity.begin();
        tokio::task::yield_now().await;
        // A long download: three limits pass while it is in progress.
        tokio::time::advance(LIMIT * 3).await;
        assert!(!waiting.is_finished());
        let ended = Instant::now();
        drop(request);
        // Let the waiting task see the end before the clock moves on.
        tokio::task::yield_now().await;
        tokio::time::advance(LIMIT - Duration::from_secs(1)).await;
        assert!(!waiting.is_finished());
        let served = waiting.await.unwrap();
        assert!(served);
        assert_eq!(ended.elapsed(), LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_request_between_two_looks_still_counts() {
        let accepted = Instant::now();
        let activity = Activity::new();
        tokio::time::advance(Duration::from_secs(29)).await;
        drop(activity.begin());
        let served = quiet(activity, LIMIT, accepted).await;
        assert!(served);
        assert_eq!(accepted.elapsed(), Duration::from_secs(29) + LIMIT);
    }
}
