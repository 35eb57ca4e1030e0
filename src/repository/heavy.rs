//! Heavy page work: off the async workers, a few at a time.
//!
//! Parsing a big upstream page, rendering it and compressing the rendering take from tens of
//! milliseconds to seconds. Done on an async worker, that time is taken from every other request
//! the worker would serve (`/-/health` included: two 40 000-file pages delayed it by seconds).
//! So the work on a page past a size runs on a blocking thread, holding one of as many permits
//! as the machine has cores, so that a burst of big pages queues instead of taking every core.
//! Small pages (every page of a usual project) stay inline: handing them to another thread
//! would cost more than the work, and a warm page, already rendered, does no work at all.

use std::sync::OnceLock;

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::Semaphore;

/// An upstream body from this size on is parsed off the async workers.
pub const HEAVY_BODY: usize = 1 << 20;

/// A page whose weight in memory ([`super::cached::Cached::weight`]) is this or more is
/// rendered (and compressed) off the async workers: a few thousand files.
pub const HEAVY_WEIGHT: usize = 4 << 20;

/// The permits for heavy work: one per core.
fn permits() -> &'static Semaphore {
    static PERMITS: OnceLock<Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Semaphore::new(cores)
    })
}

/// Runs `work` on a blocking thread once a permit is free. `None` when the work panicked.
pub async fn on_blocking_thread<R: Send + 'static>(
    work: impl FnOnce() -> R + Send + 'static,
) -> Option<R> {
    // The semaphore is never closed, so acquiring fails only in theory; the work then runs
    // without a permit rather than not at all.
    let _permit = permits().acquire().await.ok();
    tokio::task::spawn_blocking(work).await.ok()
}

/// Runs `work`, which borrows from the caller, once a permit is free, on this thread with the
/// thread handed back to the runtime for the duration (its other tasks move to another worker).
/// On a current-thread runtime, which cannot do that, `work` simply runs.
pub async fn in_place<R>(work: impl FnOnce() -> R) -> R {
    let _permit = permits().acquire().await.ok();
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}
