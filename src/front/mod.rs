//! The HTTP front: accepting connections, speaking HTTP/1.1 and HTTP/2, shutting down gracefully.
//!
//! Connections are served by hyper-util's auto builder, which detects HTTP/2 by its preface
//! (prior knowledge, what `h2c` clients send) and otherwise speaks HTTP/1.1. On SIGTERM or
//! SIGINT the listener closes at once, in-flight requests get `shutdown_grace` to finish, and
//! then the process exits 0, which is what Kubernetes and CI runners expect of a sidecar.

pub mod handler;
pub mod range;
pub mod response;
pub mod route;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::app::Live;

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

    /// Serves until `shutdown` resolves, then drains in-flight connections for at most the
    /// configured grace period.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
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
        let graceful = GracefulShutdown::new();
        let grace = self.live.current().config.server.shutdown_grace;
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
                    let _ = stream.set_nodelay(true);
                    let live = self.live.clone();
                    let service = service_fn(move |request| {
                        // Each request keeps the configuration it started with to its end.
                        let app = live.current();
                        async move { Ok::<_, Infallible>(handler::handle(app, request).await) }
                    });
                    let builder = builder.clone();
                    let watcher = graceful.watcher();
                    let tls = self.tls.clone();
                    tokio::spawn(async move {
                        let served = match tls {
                            None => {
                                let connection = builder.serve_connection(TokioIo::new(stream), service);
                                watcher.watch(connection.into_owned()).await
                            }
                            Some(acceptor) => {
                                // The handshake runs in the connection's task so a slow client
                                // never holds up the accept loop.
                                let stream = match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
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
                    });
                }
                () = &mut shutdown => break,
            }
        }
        drop(self.listener);
        tracing::info!(
            grace_s = grace.as_secs(),
            "shutting down: no new connections, finishing in-flight requests"
        );
        // Then the downloads: one whose clients have all their bytes (or have gone) may still
        // be fsyncing its file before it is queued for the store.
        let flights = self.live.flights().clone();
        let drained = tokio::time::timeout(grace, async {
            graceful.shutdown().await;
            flights.all_landed().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                downloads = flights.in_flight(),
                "shutdown grace period over; closing the remaining connections and abandoning \
                 the downloads still running (they are fetched again when next asked for)"
            );
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
