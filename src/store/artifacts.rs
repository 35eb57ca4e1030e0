//! Artifacts in the store: content-addressed files, read from memory, the catalog or a blob,
//! committed once their digest is verified, evicted least recently used first.
//!
//! An artifact is served by digest without touching sled on the warm path (the index and the
//! hot-file cache are in memory); a commit writes the blob (fsynced, renamed) before its record.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::batch::*;
use super::blobs::remove_if_present;
use super::catalog::{ArtifactEntry, HexDigest};
use super::engine::*;
use super::error::StoreError;
use super::index::Entry;
use super::serve::{ArtifactBody, FILE_SLICE_MIN};
use crate::simple::Sha256Digest;

/// The largest artifact kept in memory. Hot small wheels and `.metadata` files are what CI
/// fleets ask for again and again; big files stream from disk in blocks.
pub const HOT_FILE_LIMIT: u64 = 512 * 1024;

/// What a caller knows about an artifact it is committing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRecord {
    /// The content digest, verified by the caller while writing the temporary file.
    pub sha256: Sha256Digest,
    pub size: u64,
    pub repository: String,
    pub filename: String,
    /// For a file whose upstream gave no sha256: the sha256 of its URL, pinned to `sha256`.
    pub url_key: Option<Sha256Digest>,
    /// `false` for hosted uploads, which are never evicted.
    pub evictable: bool,
    /// The use that brought the artifact, from [`Store::use_stamp`] when the request began, so
    /// that recency follows the order of the requests rather than the order in which their
    /// commits finished (a big file's fsync can finish after a later small file's). `None`:
    /// the commit is the use.
    pub used_at: Option<u64>,
}

/// The body of an artifact being committed.
#[derive(Debug)]
pub enum NewArtifact {
    /// A verified body held in memory, written to a blob by the commit.
    Memory(Bytes),
    /// A temporary file made durable by [`Store::prepare`].
    Prepared(Prepared),
}

/// A finished temporary file, checked against its record and fsynced, ready to become a blob.
/// The store owns the file.
#[derive(Debug)]
pub struct Prepared {
    pub(super) temp: PathBuf,
}

/// What an eviction removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evicted {
    pub files: u64,
    pub bytes: u64,
}

/// A stored artifact, ready to serve.
#[derive(Debug)]
pub struct Artifact {
    pub sha256: Sha256Digest,
    pub size: u64,
    pub body: ArtifactBody,
}

/// Checks the temporary file against the record and makes its bytes durable.
pub(super) fn prepare(temp: &Path, record: &ArtifactRecord) -> Result<(), StoreError> {
    let file =
        File::open(temp).map_err(|e| StoreError::io("open the finished download", temp, e))?;
    let actual = file
        .metadata()
        .map_err(|e| StoreError::io("inspect the finished download", temp, e))?
        .len();
    if actual != record.size {
        return Err(StoreError::SizeMismatch {
            path: temp.to_path_buf(),
            filename: record.filename.clone(),
            expected: record.size,
            actual,
        });
    }
    file.sync_all()
        .map_err(|e| StoreError::io("sync the finished download", temp, e))
}

impl Store {
    /// The stored artifact of `digest`, or `None`. Records the use in memory only. A blob is
    /// opened under the index lock, so an eviction (which leaves the index before it unlinks)
    /// can never remove it between the lookup and the open.
    pub fn artifact(&self, digest: &Sha256Digest) -> Option<Artifact> {
        let mut index = self.index();
        let entry = index.touch(digest)?;
        if let Some(body) = self.inner.hot.get(digest) {
            let (size, inline) = (entry.size, entry.inline);
            drop(index);
            // The blob too, for the front to send from without copying; outside the index lock,
            // since the bytes in memory do not need it: one evicted meanwhile is simply absent.
            let file = (!inline && size >= FILE_SLICE_MIN)
                .then(|| self.open_blob(digest))
                .flatten();
            return Some(Artifact {
                sha256: *digest,
                size,
                body: match file {
                    Some(file) => ArtifactBody::memory_on_disk(body, file),
                    None => ArtifactBody::memory(body),
                },
            });
        }
        if !entry.inline {
            return match self.inner.blobs.open(digest) {
                Ok(file)
                    if entry.size <= HOT_FILE_LIMIT
                        && self.inner.hot.policy().max_capacity() != Some(0) =>
                {
                    drop(index);
                    Some(self.warm_up(digest, entry.size, file))
                }
                Ok(file) => Some(Artifact {
                    sha256: *digest,
                    size: entry.size,
                    body: ArtifactBody::file(file),
                }),
                Err(error) => {
                    if error.kind() == io::ErrorKind::NotFound {
                        // Deleted behind our back: forget it so the next request fetches it
                        // again; the orphaned record is dropped at the next open.
                        index.remove(digest);
                    }
                    drop(index);
                    tracing::warn!(
                        file = %self.inner.blobs.path_of(digest).display(),
                        %error,
                        "cannot open a stored file; it will be fetched again"
                    );
                    None
                }
            };
        }
        drop(index);
        match self.inner.catalog.artifact_body(digest) {
            Ok(Some(body)) => {
                let body = Bytes::copy_from_slice(&body);
                self.inner.hot.insert(*digest, body.clone());
                Some(Artifact {
                    sha256: *digest,
                    size: entry.size,
                    body: ArtifactBody::memory(body),
                })
            }
            // Evicted between the lookup and the read.
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(sha256 = %digest, %error, "cannot read a stored file; it will be fetched again");
                None
            }
        }
    }

    /// The open blob of a hot body: kept from an earlier request, or opened now and kept. `None`
    /// when it cannot be opened (evicted meanwhile): the bytes in memory serve anyway.
    fn open_blob(&self, digest: &Sha256Digest) -> Option<Arc<File>> {
        if let Some(file) = self.inner.open_blobs.get(digest) {
            return Some(file);
        }
        let file = Arc::new(self.inner.blobs.open(digest).ok()?);
        self.keep_open(digest, &file);
        Some(file)
    }

    /// Keeps a hot body's blob open, unless its artifact was removed meanwhile:
    /// `unrecord_locked` takes the digest out of the index before it closes the kept file, so
    /// one of the two sees the other and a removed blob is never kept (holding its disk space).
    fn keep_open(&self, digest: &Sha256Digest, file: &Arc<File>) {
        self.inner.open_blobs.insert(*digest, file.clone());
        if !self.contains(digest) {
            self.inner.open_blobs.invalidate(digest);
        }
    }

    /// Closes the blob files kept open for `sendfile`; the next warm request opens its own again.
    /// Called once the server has gone quiet (`trim`), so that an idle server holds no more
    /// descriptors than before its burst. A file is closed when moka frees its entry, which is
    /// usually before this returns; its map reclaims removed entries by epochs, so now and then
    /// only at the cache's next use.
    pub fn close_open_blobs(&self) {
        // One by one: moka's `invalidate_all` only hides the entries and drops them (closing the
        // files) at some later housekeeping.
        let open: Vec<Sha256Digest> = self.inner.open_blobs.iter().map(|(d, _)| *d).collect();
        for digest in &open {
            self.inner.open_blobs.invalidate(digest);
        }
        self.inner.open_blobs.run_pending_tasks();
    }

    /// Reads a small stored file into memory once, so later requests are served from there. A
    /// read that fails or comes up short leaves the file to be streamed from disk instead.
    pub(super) fn warm_up(&self, digest: &Sha256Digest, size: u64, mut file: File) -> Artifact {
        use std::io::{Read as _, Seek as _};
        let mut body = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        let read = file.read_to_end(&mut body);
        if matches!(read, Ok(n) if n as u64 == size) {
            let body = Bytes::from(body);
            self.inner.hot.insert(*digest, body.clone());
            return Artifact {
                sha256: *digest,
                size,
                body: if size >= FILE_SLICE_MIN {
                    let file = Arc::new(file);
                    self.keep_open(digest, &file);
                    ArtifactBody::memory_on_disk(body, file)
                } else {
                    ArtifactBody::memory(body)
                },
            };
        }
        let _ = file.rewind();
        Artifact {
            sha256: *digest,
            size,
            body: ArtifactBody::file(file),
        }
    }

    /// Whether `digest` is stored (memory only; records no use).
    pub fn contains(&self, digest: &Sha256Digest) -> bool {
        self.index().get(digest).is_some()
    }

    /// For a file whose upstream gave no sha256 (SPEC §4): the content digest pinned to its
    /// URL key when it was first fetched.
    pub fn pinned(&self, url_key: &Sha256Digest) -> Option<Sha256Digest> {
        self.index().pinned(url_key)
    }

    /// Moves a verified, fully written temporary file into the store, and flushes. The store
    /// owns `temp` from here on: it is fsynced and moved, or deleted, also on error. Committing
    /// a digest that is already stored only adds the URL pin (and makes it non-evictable when
    /// `record` says so). Afterwards, least recently used evictable artifacts other than this
    /// one are evicted while the total exceeds `max_size`.
    ///
    /// Downloads go through [`Store::prepare`] and [`Store::queue_artifact`] instead, which
    /// share flushes; this is the one-off form.
    pub fn commit_artifact(&self, temp: &Path, record: ArtifactRecord) -> Result<(), StoreError> {
        let prepared = self.prepare(temp.to_path_buf(), &record)?;
        let Replaced(_) = self.apply_one(Commit::Artifact {
            body: NewArtifact::Prepared(prepared),
            record,
        })?;
        self.inner.catalog.flush()
    }

    /// [`Store::commit_artifact`] for a verified body held in memory. `record.size` is taken
    /// from `bytes`.
    pub fn commit_artifact_bytes(
        &self,
        bytes: Bytes,
        record: ArtifactRecord,
    ) -> Result<(), StoreError> {
        let Replaced(_) = self.apply_one(Commit::Artifact {
            body: NewArtifact::Memory(bytes),
            record,
        })?;
        self.inner.catalog.flush()
    }

    /// Checks a finished temporary file against `record` and makes its bytes durable (an
    /// fsync, which for a big file can take seconds: callers run this on a blocking thread of
    /// their own before queueing). The store owns `temp` from here on.
    pub fn prepare(&self, temp: PathBuf, record: &ArtifactRecord) -> Result<Prepared, StoreError> {
        match prepare(&temp, record) {
            Ok(()) => Ok(Prepared { temp }),
            Err(error) => {
                let _ = remove_if_present(&temp);
                Err(error)
            }
        }
    }

    /// [`Store::prepare`] for a verified body held in memory: writes and fsyncs its temporary
    /// file. Blocking, like `prepare`: callers run it on a blocking thread of their own, so that
    /// the fsyncs of many small files overlap instead of queueing on the writer thread.
    pub fn prepare_bytes(&self, bytes: &[u8]) -> Result<Prepared, StoreError> {
        self.inner
            .blobs
            .write_temp(bytes)
            .map(|temp| Prepared { temp })
    }

    /// The already-stored path: add a new URL pin, and pin hosted uploads against eviction.
    pub(super) fn amend_locked(
        &self,
        digest: &Sha256Digest,
        existing: Entry,
        record: &ArtifactRecord,
    ) -> Result<(), StoreError> {
        let new_pin = record
            .url_key
            .filter(|k| self.index().pinned(k) != Some(*digest));
        let protect = existing.evictable && !record.evictable;
        if new_pin.is_none() && !protect {
            return Ok(());
        }
        if protect && !existing.inline {
            // Installed as a cached copy, whose rename was not made durable.
            self.inner.blobs.make_durable(digest)?;
        }
        let mut entry = match self.inner.catalog.artifact(digest)? {
            Some(entry) => entry,
            None => ArtifactEntry {
                size: existing.size,
                repository: record.repository.clone(),
                filename: record.filename.clone(),
                evictable: existing.evictable,
                inline: existing.inline,
                last_use: existing.last_use,
                url_keys: Vec::new(),
            },
        };
        if let Some(url_key) = new_pin {
            if !entry.url_keys.contains(&HexDigest(url_key)) {
                entry.url_keys.push(HexDigest(url_key));
            }
        }
        entry.evictable &= record.evictable;
        self.inner
            .catalog
            .put_artifact(digest, &entry, new_pin.as_ref())?;
        let mut index = self.index();
        if let Some(url_key) = new_pin {
            index.pin(url_key, *digest);
        }
        if protect {
            index.protect(digest);
        }
        Ok(())
    }

    /// Removes an artifact (record, body, pins, and its blob unless a page uses it). Returns
    /// whether it was stored.
    pub fn remove_artifact(&self, digest: &Sha256Digest) -> Result<bool, StoreError> {
        let _write = self.write_lock();
        let removed = self.unrecord_locked(digest)?;
        self.inner.catalog.flush()?;
        self.delete_blob_if_unused(digest);
        Ok(removed)
    }

    /// Takes an artifact out of the index, then the catalog. The blob stays until the caller
    /// has flushed the catalog, so a record never outlives its body on disk.
    pub(super) fn unrecord_locked(&self, digest: &Sha256Digest) -> Result<bool, StoreError> {
        let in_index = self.index().remove(digest).is_some();
        self.inner.hot.invalidate(digest);
        // Closed, so that the blob's space is freed once it is deleted.
        self.inner.open_blobs.invalidate(digest);
        let pins = self.inner.catalog.remove_artifact(digest)?;
        let in_catalog = pins.is_some();
        let mut index = self.index();
        for url_key in pins.unwrap_or_default() {
            index.unpin(&url_key);
        }
        Ok(in_index || in_catalog)
    }

    /// Evicts least recently used evictable artifacts (never `keep`) while over `max_size`.
    pub(super) fn evict_locked(&self, keep: Option<&Sha256Digest>) -> Result<usize, StoreError> {
        self.evict_to_locked(self.inner.max_size, keep)
            .map(|evicted| evicted.files as usize)
    }

    /// `cache gc`: evicts least recently used evictable artifacts until the artifacts take at
    /// most `max_size` bytes, or only hosted uploads (never evicted) are left. `max_size` is the
    /// configured one, which may be smaller than the one the store was opened with (an edited
    /// `store.max_size` takes effect for commits only at restart).
    pub fn gc(&self, max_size: u64) -> Result<Evicted, StoreError> {
        let _write = self.write_lock();
        self.evict_to_locked(max_size, None)
    }

    fn evict_to_locked(
        &self,
        max_size: u64,
        keep: Option<&Sha256Digest>,
    ) -> Result<Evicted, StoreError> {
        let mut evicted = Vec::new();
        let mut bytes = 0u64;
        // Each round removes one artifact, so there can be no more rounds than artifacts; the
        // bound keeps an index bug from turning into an endless loop under the write lock.
        let mut rounds = self.index().artifacts();
        loop {
            let victim = self.index().victim(max_size, keep);
            let Some(victim) = victim.filter(|_| rounds > 0) else {
                break;
            };
            rounds -= 1;
            bytes += self.index().get(&victim).map_or(0, |entry| entry.size);
            self.unrecord_locked(&victim)?;
            evicted.push(victim);
        }
        if evicted.is_empty() {
            return Ok(Evicted::default());
        }
        self.inner.catalog.flush()?;
        for digest in &evicted {
            self.delete_blob_if_unused(digest);
        }
        let index = self.index();
        tracing::debug!(
            evicted = evicted.len(),
            total = index.total(),
            max_size,
            "evicted least recently used files"
        );
        Ok(Evicted {
            files: evicted.len() as u64,
            bytes,
        })
    }

    /// Deletes the blob of `digest` unless a record still needs it. A failure only leaves
    /// garbage that the next open removes, so it is logged rather than returned.
    pub(super) fn delete_blob_if_unused(&self, digest: &Sha256Digest) {
        if self.index().blob_in_use(digest) {
            return;
        }
        if let Err(error) = self.inner.blobs.remove(digest) {
            tracing::warn!(%error, "could not delete a file no longer in the store");
        }
    }
}
