//! The cap on connections served at once (`[server] max_connections`), and its default.
//!
//! Every connection holds a file descriptor, and a request may hold more (a store file, an
//! upstream socket, a download's temporary file). A server that accepts whatever arrives runs out
//! of descriptors under a flood of idle sockets: `accept` then fails in a loop, and so do the
//! store and the upstream for everyone. So the accept loop takes a [`Slot`] before each `accept`;
//! when all are taken it stops accepting (the kernel's listen backlog holds the newcomers) until a
//! connection closes, and says so in the log, at most once per [`LOG_PERIOD`]. Connections that
//! never send a request are closed after `request_header_timeout`, so a flood of silent sockets
//! delays a new client by at most that long; nothing is reserved for health checks.
//!
//! The default is sized to the soft `RLIMIT_NOFILE` of the process at start:
//! `(limit - RESERVED_FILES) / 2`, at least [`MIN_CONNECTIONS`]: a reserve for the store (sled,
//! its files and the blobs it keeps open), the listener and the runtime, and then one descriptor
//! of headroom per connection for the file it is being served or the upstream socket it waits on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::logging::throttle::Throttle;
use crate::metrics::Metrics;

/// Descriptors kept aside from the default cap for everything that is not a client connection:
/// the store, the listener and the runtime, and the blob files the store keeps open for
/// `sendfile`.
pub const RESERVED_FILES: u64 = 64 + crate::repository::OPEN_BLOBS;

/// The smallest default cap, whatever the file limit.
pub const MIN_CONNECTIONS: usize = 16;

/// The default cap when the file limit is unlimited (or cannot be read).
const UNLIMITED_CONNECTIONS: usize = 1 << 20;

/// How often a repeated warning (cap reached, accept failing) may be logged.
pub const LOG_PERIOD: Duration = Duration::from_secs(10);

/// The default cap for a soft file limit of `soft` descriptors (`None`: unlimited).
pub fn default_for(soft: Option<u64>) -> usize {
    let Some(soft) = soft else {
        return UNLIMITED_CONNECTIONS;
    };
    let spare = soft.saturating_sub(RESERVED_FILES) / 2;
    usize::try_from(spare)
        .unwrap_or(UNLIMITED_CONNECTIONS)
        .clamp(MIN_CONNECTIONS, UNLIMITED_CONNECTIONS)
}

/// The soft `RLIMIT_NOFILE` of this process; `None` when unlimited.
#[cfg(unix)]
pub fn file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

#[cfg(not(unix))]
pub fn file_limit() -> Option<u64> {
    None
}

/// Hands out the connection slots.
#[derive(Debug)]
pub struct Admission {
    semaphore: Arc<Semaphore>,
    max: usize,
    metrics: Arc<Metrics>,
    full: Throttle,
}

/// A place under the cap, taken before `accept`; freed when dropped. It becomes a [`Held`]
/// connection once one is accepted into it.
#[derive(Debug)]
pub struct Slot {
    permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Slot {
    /// The slot now holds an accepted connection: counted in `wheelgate_open_connections` until
    /// dropped. (A slot waiting in the accept loop is not a connection, so a scrape never counts
    /// the one the loop holds ready for the next client.)
    pub fn hold(self) -> Held {
        self.metrics.record_connection_opened();
        Held {
            _permit: self.permit,
            metrics: self.metrics,
        }
    }
}

/// One accepted connection's place under the cap and its count in `wheelgate_open_connections`;
/// both are given back when it is dropped.
#[derive(Debug)]
pub struct Held {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.metrics.record_connection_closed();
    }
}

impl Admission {
    /// The cap `configured` in `[server] max_connections`, or else sized to the file limit; logs
    /// which it is, and warns when a configured cap is more than the file limit can hold.
    pub fn new(configured: Option<usize>, metrics: Arc<Metrics>) -> Admission {
        let soft = file_limit();
        let limit_text = soft.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
        let max = match configured {
            Some(max) => {
                tracing::info!(
                    max_connections = max,
                    "serving at most {max} connections at once ([server] max_connections)"
                );
                if soft.is_some_and(|soft| max as u64 + RESERVED_FILES > soft) {
                    tracing::warn!(
                        max_connections = max,
                        file_limit = %limit_text,
                        "[server] max_connections ({max}) is more than the file limit ({limit_text}) \
                         can hold: accept will fail with \"too many open files\" before the cap is \
                         reached; raise the file limit (ulimit -n, LimitNOFILE=) or lower \
                         max_connections"
                    );
                }
                max
            }
            None => {
                let max = default_for(soft);
                tracing::info!(
                    max_connections = max,
                    file_limit = %limit_text,
                    "serving at most {max} connections at once, sized to the file limit \
                     ({limit_text}); set [server] max_connections to choose"
                );
                max
            }
        };
        Admission {
            semaphore: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            max,
            metrics,
            full: Throttle::new(LOG_PERIOD),
        }
    }

    /// A slot for the next connection, waiting for one to close when all are taken.
    pub async fn slot(&mut self) -> Slot {
        let permit = match self.semaphore.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if let Some(held_back) = self.full.admit(Instant::now()) {
                    let max = self.max;
                    tracing::warn!(
                        max_connections = max,
                        repeated = held_back,
                        "[server] max_connections ({max}) reached: new connections wait in the \
                         listen backlog until one closes (a connection without a request closes \
                         after request_header_timeout); if this is regular load, raise \
                         max_connections and the file limit"
                    );
                }
                match self.semaphore.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    // The semaphore is never closed; should it be, accepting stops here.
                    Err(_) => std::future::pending().await,
                }
            }
        };
        Slot {
            permit,
            metrics: self.metrics.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_leaves_a_reserve_and_headroom_per_connection() {
        assert_eq!(default_for(Some(1024)), 464);
        assert_eq!(default_for(Some(1_048_576)), 524_240);
        // A tiny limit still serves a few clients.
        assert_eq!(default_for(Some(160)), 32);
        assert_eq!(default_for(Some(96)), MIN_CONNECTIONS);
        assert_eq!(default_for(Some(0)), MIN_CONNECTIONS);
        assert_eq!(default_for(None), UNLIMITED_CONNECTIONS);
        assert_eq!(default_for(Some(u64::MAX)), UNLIMITED_CONNECTIONS);
    }

    #[tokio::test]
    async fn slots_are_counted_and_freed() {
        let metrics = Arc::new(Metrics::default());
        let mut admission = Admission::new(Some(2), metrics.clone());
        let first = admission.slot().await.hold();
        let _second = admission.slot().await;
        assert!(
            tokio::time::timeout(Duration::from_millis(50), admission.slot())
                .await
                .is_err(),
            "a third slot must wait while two are taken"
        );
        drop(first);
        let _third = tokio::time::timeout(Duration::from_secs(5), admission.slot())
            .await
            .unwrap()
            .hold();
        // The second slot waits for a connection and is not counted; the third holds one.
        let text = metrics.encode(crate::metrics::Gauges::default());
        assert!(
            text.lines().any(|l| l == "wheelgate_open_connections 1"),
            "{text}"
        );
    }
}
