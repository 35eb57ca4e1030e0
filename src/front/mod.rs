//! The HTTP front: accepting connections, speaking HTTP/1.1 and HTTP/2, shutting down gracefully.
//!
//! Connections are served by hyper-util's auto builder, which detects HTTP/2 by its preface
//! (prior knowledge, what `h2c` clients send) and otherwise speaks HTTP/1.1. The accept loop takes
//! a slot under `[server] max_connections` before each accept ([`limit`]), backs off when accept
//! fails, and each connection is closed once it has gone `request_header_timeout` without a
//! request in progress ([`connection`]). On SIGTERM or SIGINT the listener closes at once,
//! in-flight requests get `shutdown_grace` to finish, and then the process exits 0, which is what
//! Kubernetes and CI runners expect of a sidecar.

pub mod connection;
pub mod handler;
pub mod limit;
pub mod range;
pub mod response;
pub mod route;
pub mod sendfile;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::app::Live;
use crate::logging::throttle::Throttle;
use connection::{Accepted, Ending};
use limit::{Admission, LOG_PERIOD};

/// The first pause after a failed `accept`; it doubles while `accept` keeps failing.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(50);

/// The longest pause after a failed `accept`.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A bound listener, ready to serve.
pub struct Server {
    listener: TcpListener,
    live: Arc<Live>,
    tls: Option<TlsAcceptor>,
    /// Decided (and logged) at bind, so the log says the cap before it says "listening".
    admission: Admission,
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
        let admission = {
            let app = live.current();
            Admission::new(
                app.config.server.max_connections,
                app.repositories.metrics().clone(),
            )
        };
        Ok(Server {
            listener,
            live,
            tls,
            admission,
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
        let builder = connection::builder();
        let mut admission = self.admission;
        let (grace, timeout, metrics) = {
            let app = self.live.current();
            let server = &app.config.server;
            (
                server.shutdown_grace,
                server.request_header_timeout,
                app.repositories.metrics().clone(),
            )
        };
        // Every connection holds a receiver; `closed` resolves when the last one has ended.
        let (closing, _) = watch::channel(());
        let mut accept_failures = Throttle::new(LOG_PERIOD);
        let mut backoff = ACCEPT_BACKOFF_MIN;
        tokio::pin!(shutdown);
        loop {
            // A slot first, so that a full server stops accepting rather than accepting and
            // dropping in a loop.
            let slot = tokio::select! {
                slot = admission.slot() => slot,
                () = &mut shutdown => break,
            };
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    pair
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning, and
                    // say so now and then rather than at every try.
                    if let Some(repeated) = accept_failures.admit(std::time::Instant::now()) {
                        tracing::warn!(
                            %error,
                            repeated,
                            "accept failed; retrying (\"too many open files\": raise the file \
                             limit, ulimit -n or LimitNOFILE=, or lower [server] max_connections)"
                        );
                    }
                    drop(slot);
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = &mut shutdown => break,
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            };
            let held = slot.hold();
            let _ = stream.set_nodelay(true);
            let connection = Accepted {
                live: self.live.clone(),
                peer,
                at: tokio::time::Instant::now(),
                timeout,
                shutdown: closing.subscribe(),
            };
            let builder = builder.clone();
            let tls = self.tls.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                // Held until the connection is closed.
                let _held = held;
                // The handshake runs in the connection's task so a slow client never holds up
                // the accept loop.
                let ending = match tls {
                    None => connection.serve_plain(&builder, stream).await,
                    Some(acceptor) => connection.serve_tls(&builder, acceptor, stream).await,
                };
                if ending == Ending::NoRequest {
                    metrics.record_header_timeout();
                    tracing::debug!(%peer, "closed: no request within request_header_timeout");
                }
            });
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
            let _ = closing.send(());
            closing.closed().await;
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
