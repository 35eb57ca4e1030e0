//! The store (SPEC §4): everything wheelgate keeps, in one directory that survives restarts and
//! crashes.
//!
//! ```text
//! <store>/catalog/                       sled database: records only
//! <store>/blobs/sha256/<2 hex>/<64 hex>  content-addressed bodies, artifacts and pages
//! <store>/tmp/                           files being written (same filesystem: rename is atomic)
//! ```
//!
//! sled is only the catalog. Measured with sled 0.34.7, it holds each value whole in memory,
//! grows with the bytes written whatever its cache size, and never gives back the space of
//! deleted large values; its page cache also keeps far more than its capacity resident (see
//! `legacy`, which moves the small bodies earlier versions kept inline out to files). So every
//! body is a file named by its sha256, and sled holds small records (the trees are listed in
//! `catalog`).
//!
//! Invariants, which [`Store::open`] restores after a crash:
//! - A record exists only once its body is durable: a blob is written to `tmp/`, fsynced,
//!   renamed into `blobs/`, its directory fsynced, and only then recorded (and the catalog
//!   flushed).
//! - A blob that no artifact or page record names is garbage (a crash between rename and
//!   record, or between a record's removal and the unlink), and so is every entry of `tmp/` at
//!   open (sled's lock guarantees no other process is writing there).
//! - A record whose blob is missing (deleted by hand, or a lost rename) is dropped.
//! - The format version is recorded in `meta` before any record; a newer one is refused.
//! - A warm hit writes nothing: last use is kept in memory and persisted in batches by
//!   [`Store::persist_recency`].
//!
//! The API is synchronous because sled is. Downloads and fetched pages are committed through
//! `writer`, one thread that applies what is queued and flushes once per batch
//! ([`Store::queue_artifact`], [`Store::queue_page`]); async callers run page reads and the rare
//! direct writes in `spawn_blocking`. [`Store::artifact`], [`Store::contains`],
//! [`Store::pinned`] and [`Store::may_have_page`] only consult memory (and open a file), so they
//! are fine on the request path.
//!
//! `verify` hashes every stored body again for `wheelgate cache verify`, and takes out what is
//! damaged.
//!
//! `space` keeps `[store] min_free_space` free on the store's disk, counting what downloads and
//! uploads under way have yet to write.
//!
//! `serve` streams stored bodies by ranges; the single-flight downloads of remote repositories
//! (`repository::remote::flight`) read their growing files with its positioned reads.

mod artifacts;
mod batch;
mod blobs;
mod catalog;
mod engine;
mod error;
mod index;
mod legacy;
mod origins;
mod pages;
pub(crate) mod serve;
mod space;
mod uploads;
mod verify;
mod writer;

#[cfg(test)]
mod tests;

pub use artifacts::{Artifact, ArtifactRecord, Evicted, NewArtifact, Prepared};
pub use engine::from_millis;
pub use engine::{Store, StoreOptions, StoreStats};
pub use error::StoreError;
pub use index::millis;
pub use pages::{PageKey, StoredPage};
pub use serve::{ArtifactBody, Content, FileSlice, OPEN_BLOBS};
pub use space::{NoSpace, Reservation, Space};
pub use uploads::{Upload, UploadName, UploadOutcome};
pub use verify::{BodyUser, Damaged, Problem, Repair, Verification};
pub use writer::Outcome;
