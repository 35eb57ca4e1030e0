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
