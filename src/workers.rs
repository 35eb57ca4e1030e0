//! Thread per core: the threads that serve connections, and which of them the current thread is.
//!
//! Each worker thread runs its own single-threaded tokio runtime. The front accepts a connection
//! and hands it to the worker serving the fewest; from then on the connection, the tasks that
//! fetch for it from upstream and the upstream connections they use all live on that one thread.
//! With tokio's work-stealing runtime, every hand-off between those tasks could wake the other
//! worker (a futex wake and a context switch, expensive on a virtual machine). Only what is
//! shared across workers (the store, single flights, caches) crosses threads.
//!
//! The upstream client keeps one connection pool per worker ([`current`] picks it), so that a
//! pooled connection is driven by the thread that uses it.

use std::cell::Cell;
use std::io;
use std::num::NonZeroUsize;
use std::sync::OnceLock;
use std::thread::{self, JoinHandle};

thread_local! {
    /// This thread's worker index; `None` outside the workers (the main thread, blocking pools,
    /// tests).
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// How many workers serve connections: one per CPU the process may use (cgroup quotas count),
/// fixed for the life of the process.
pub fn count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        thread::available_parallelism()
            .map(NonZeroUsize::get)
            .unwrap_or(1)
    })
}

/// The index (below [`count`]) of the worker running the caller, if it runs on one.
pub fn current() -> Option<usize> {
    INDEX.with(Cell::get)
}

/// Starts worker thread `index`, running `work`.
pub fn spawn<F>(index: usize, work: F) -> io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    thread::Builder::new()
        .name(format!("wheelgate-worker-{index}"))
        .spawn(move || {
            INDEX.with(|cell| cell.set(Some(index)));
            work();
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_knows_its_index_and_other_threads_have_none() {
        assert_eq!(current(), None);
        let seen = spawn(3, || assert_eq!(current(), Some(3)))
            .expect("spawn")
            .join();
        assert!(seen.is_ok(), "the worker saw another index");
        assert_eq!(current(), None);
        assert!(count() >= 1);
    }
}
