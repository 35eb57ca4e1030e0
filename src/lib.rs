//! wheelgate: a caching pull-through proxy for Python package indexes.
//!
//! The crate is a library with one binary (`src/main.rs`) so that benchmarks and the binary share
//! the same code. Each module owns one concept of the domain; the README's "Architecture" section
//! keeps the map.

pub mod app;
pub mod config;
pub mod front;
pub mod logging;
pub mod policy;
pub mod remote;
pub mod simple;
pub mod store;
pub mod upstream;

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
