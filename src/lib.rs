//! wheelgate: a caching pull-through proxy for Python package indexes.
//!
//! The crate is a library with one binary (`src/main.rs`) so that benchmarks and the binary share
//! the same code. Each module owns one concept of the domain; the README's "Architecture" section
//! keeps the map.

pub mod access;
pub mod admin;
pub mod app;
pub mod cache;
pub mod config;
pub mod front;
pub mod logging;
pub mod metrics;
pub mod origin;
pub mod policy;
pub mod probe;
pub mod repository;
pub mod secret;
pub mod shared;
pub mod simple;
pub mod status;
pub mod store;
pub mod trim;
pub mod upload;
pub mod upstream;
pub mod warm;

/// Whether `keep` holds for every byte. Tested a chunk at a time with no early exit inside a
/// chunk, which the compiler turns into vector compares: the paths and filenames checked on
/// every request are 30-150 bytes, and a byte-at-a-time loop that may stop early costs about
/// ten instructions a byte (measured with callgrind: the access log's path check alone was 5% of
/// a warm file request's instructions).
pub(crate) fn all_bytes(bytes: &[u8], keep: impl Fn(u8) -> bool) -> bool {
    bytes
        .chunks(16)
        .all(|chunk| chunk.iter().fold(true, |all, &b| all & keep(b)))
}

/// Locks `mutex`, using its data even if another thread panicked while holding it.
///
/// Every mutex in wheelgate guards data that is consistent between statements (a map, a buffer
/// of whole lines, a cache entry replaced in one assignment), so a poisoned lock still holds
/// usable data, and refusing requests for the rest of the process's life would be worse.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
