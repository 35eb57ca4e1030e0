//! The HTTP front: accepting connections, speaking HTTP/1.1 and HTTP/2, shutting down gracefully.
//!
//! Connections are served by hyper-util's auto builder, which detects HTTP/2 by its preface
//! (prior knowledge, what `h2c` clients send) and otherwise speaks HTTP/1.1, each on the
//! [worker](crate::workers) thread it was handed to when accepted. On SIGTERM or
//! SIGINT the listener closes at once, in-flight requests get `shutdown_grace` to finish, and
//! then the process exits 0, which is what Kubernetes and CI runners expect of a sidecar.

pub mod handler;
pub mod range;
pub mod response;
pub mod route;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::app::Live;
use crate::workers;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The most request-header bytes buffered per HTTP/1 connection. Simple-API requests carry a
/// handful of short headers.
const MAX_HEADER_BUF: usize = 64 * 1024;

/// A bound listener, ready to serve.
pub struct Server {
    listener: TcpListener,
    live: Arc<Live>,
    tls: Option<TlsAcceptor>,
}

impl Server {
    /// Binds `listen`. Port 0 picks a free port; [`Server::local_addr`] tells which. The address
    /// is fixed for the life of the process (a reload that changes it says so in the log).
    pub async fn bind(
        live: Arc<Live>,
        listen: SocketAddr,
        tls: Option<TlsAcceptor>,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(listen).await?;
        Ok(Server {
            listener,
            live,
            tls,
        })
    }

    /// `https` when the front terminates TLS.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Starts the [`workers`](crate::workers) and hands each accepted connection to the one
    /// serving the fewest, until `shutdown` resolves; then drains in-flight connections for at
    /// most the configured grace period. Fails only when no worker could be started.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> std::io::Result<()> {
        let builder = connection_builder();
        let graceful = GracefulShutdown::new();
        let grace = self.live.current().config.server.shutdown_grace;
        let (done, watch_done) = watch::channel(false);
        let mut workers = Vec::new();
        for index in 0..workers::count() {
            match Worker::start(index, watch_done.clone()) {
                Ok(worker) => workers.push(worker),
                Err(error) if workers.is_empty() => return Err(error),
                // Fewer workers serve as well, only with less parallelism.
                Err(error) => {
                    tracing::warn!(%error, worker = index, "cannot start a worker thread")
                }
            }
        }
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(error) => {
                            // Out of file descriptors and the like: back off instead of spinning.
                            tracing::warn!(%error, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    // A connection stays on its worker for its life; the least busy one takes it
                    // (the first of equals, so a quiet server keeps to one thread).
                    let Some(worker) = workers.iter().min_by_key(|worker| worker.open()) else {
                        break;
                    };
                    let connection = Connection {
                        peer,
                        live: self.live.clone(),
                        tls: self.tls.clone(),
                        builder: builder.clone(),
                        watcher: graceful.watcher(),
                    };
                    if let Err(error) = worker.serve(stream, connection) {
                        tracing::warn!(%peer, %error, "cannot hand a connection to a worker");
                    }
                }
                () = &mut shutdown => break,
            }
        }
        drop(self.listener);
        tracing::info!(
            grace_s = grace.as_secs(),
            "shutting down: no new connections, finishing in-flight requests"
        );
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace period over; closing the remaining connections");
        }
        let _ = done.send(true);
        let threads: Vec<_> = workers.into_iter().map(|worker| worker.thread).collect();
        let joined = tokio::task::spawn_blocking(move || {
            threads
                .into_iter()
                .map(|thread| thread.join())
                .filter(Result::is_err)
                .count()
        })
        .await;
        if !matches!(joined, Ok(0)) {
            tracing::error!("a worker thread panicked");
        }
        Ok(())
    }
}

/// HTTP/1.1 and HTTP/2 settings shared by every connection.
fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BUF);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BUF as u32);
    builder
}

/// A worker thread running a single-threaded runtime, and how many connections it serves.
struct Worker {
    handle: tokio::runtime::Handle,
    open: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

impl Worker {
    /// Starts worker `index`; it runs until `done` turns true, and then drops whatever is left.
    fn start(index: usize, mut done: watch::Receiver<bool>) -> std::io::Result<Worker> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let thread = workers::spawn(index, move || {
            runtime.block_on(async move {
                let _ = done.wait_for(|done| *done).await;
            });
        })?;
        Ok(Worker {
            handle,
            open: Arc::new(AtomicUsize::new(0)),
            thread,
        })
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Moves `stream` to this worker's runtime and serves it there.
    fn serve(&self, stream: TcpStream, connection: Connection) -> std::io::Result<()> {
        // Registered with the accepting runtime; the worker registers it with its own.
        let stream = stream.into_std()?;
        let open = OpenConnection::new(self.open.clone());
        self.handle.spawn(async move {
            let _open = open;
            match TcpStream::from_std(stream) {
                Ok(stream) => connection.serve(stream).await,
                Err(error) => tracing::warn!(peer = %connection.peer, %error, "a worker cannot take a connection"),
            }
        });
        Ok(())
    }
}

/// Counts a connection on its worker for as long as it lives.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn new(open: Arc<AtomicUsize>) -> OpenConnection {
        open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(open)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What serving one accepted connection needs.
struct Connection {
    peer: SocketAddr,
    live: Arc<Live>,
    tls: Option<TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
    watcher: Watcher,
}

impl Connection {
    /// Serves the connection to its end (or the end of the grace period).
    async fn serve(self, stream: TcpStream) {
        let Connection {
            peer,
            live,
            tls,
            builder,
            watcher,
        } = self;
        let _ = stream.set_nodelay(true);
        let service = service_fn(move |request| {
            // Each request keeps the configuration it started with to its end.
            let app = live.current();
            async move { Ok::<_, Infallible>(handler::handle(app, request).await) }
        });
        let served =
            match tls {
                None => {
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
                Some(acceptor) => {
                    // The handshake runs in the connection's task so a slow client never holds up
                    // the accept loop.
                    let stream =
                        match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
            };
        if let Err(error) = served {
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
