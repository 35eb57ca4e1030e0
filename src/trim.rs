//! Gives the heap that a burst of traffic freed back to the system once the server goes quiet,
//! and not before.
//!
//! While it serves, freed buffers should be reused, not handed back: a download's body arrives
//! in fresh buffers of up to [`READ_BUFFER`](crate::upstream::READ_BUFFER) (hyper allocates a
//! new one for each read while the last is still queued for the hash and the disk), and glibc's
//! default thresholds (which adapt to the largest block freed) unmapped or trimmed them as they
//! were freed, so the next ones were faulted in again page by page: 100,000 page faults and a
//! tenth of the CPU of a cold 1 GiB transfer. [`keep_freed_buffers`] fixes both thresholds at
//! the start, so such buffers come from, and go back to, the arenas. The price is heap kept
//! between transfers until the quiet trim below: a cold 1 GiB transfer from a fast upstream peaks
//! near 50 MiB resident instead of 27, and the load test's peak rose by 25 to 50 MiB (settled
//! memory, after the trim, did not).
//!
//! glibc keeps freed memory in its arenas (one per thread that allocated, up to eight per core)
//! for reuse, and returns it only from the top of each heap. After a burst, a sidecar would keep
//! its peak resident size for as long as it runs: measured after the load test, 221 MiB
//! resident against 140 MiB after `malloc_trim` (the baseline before the burst was 139 MiB).
//! So when a whole period passes without a request, after a period that had some, the free
//! pages of every arena are handed back with `malloc_trim(0)`, on a blocking thread, and the
//! store closes the blob files it kept open for `sendfile` (up to 32 descriptors). A server
//! under steady traffic never trims (the allocator would only take the pages back); one that
//! stays idle trims once.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::store::Store;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
use crate::upstream::READ_BUFFER;

/// How long without a request before the heap is trimmed.
const QUIET: Duration = Duration::from_secs(10);

/// Runs until the process ends: trims the heap after each burst of requests, once quiet.
pub async fn when_quiet(metrics: Arc<Metrics>, store: Store) {
    let mut ticker = tokio::time::interval(QUIET);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = metrics.requests_answered();
    let mut trimmed = seen;
    loop {
        ticker.tick().await;
        let now = metrics.requests_answered();
        if now == seen && now != trimmed {
            trimmed = now;
            store.close_open_blobs();
            if let Ok(released) = tokio::task::spawn_blocking(release_free_heap).await {
                tracing::debug!(released, "returned freed heap to the system after a burst");
            }
        }
        seen = now;
    }
}

/// Blocks from this size up are mapped on their own and unmapped when freed: just above the
/// largest buffer hyper reads a body into ([`READ_BUFFER`], plus room for the allocator's
/// header), so those come from the arenas.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = READ_BUFFER as libc::c_int + (64 << 10);

/// Free memory at the top of an arena is kept for reuse up to this size: a few read buffers. At
/// 8 MiB a cold 1 GiB transfer faulted its buffers in again (145,000 faults and a quarter more
/// CPU); 16 MiB kept them (10,000 to 17,000 faults).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 16 << 20;

/// Fixes glibc's thresholds so that buffers of a transfer are reused rather than returned and
/// faulted in again. Called once, before any thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_buffers() {
    // SAFETY: `mallopt` takes no pointers; it is called before the runtime starts any thread.
    let set = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    };
    if !set {
        tracing::debug!("glibc refused the malloc thresholds; transfers fault in more pages");
    }
}

/// Other allocators keep their own policy.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_buffers() {}

/// Returns the free pages of every arena to the system; whether any were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_heap() -> bool {
    // SAFETY: `malloc_trim` takes no pointers and only walks glibc's own free lists, under the
    // arenas' locks; any thread may call it at any time.
    unsafe { libc::malloc_trim(0) != 0 }
}

/// Other allocators (musl's, for one) return freed memory by themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_heap() -> bool {
    false
}
