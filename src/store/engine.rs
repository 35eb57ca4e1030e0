//! [`Store`]: the catalog, the blob files and the in-memory index kept consistent.
//!
//! Two locks: `write` serialises every change to the catalog and the blob directory (commits,
//! removals, eviction, pages, recency), so that no eviction can unlink a blob between another
//! writer's rename and its record; `index` guards the in-memory index and is held only for
//! memory operations (plus the `open` of a blob on a hit, see [`Store::artifact`]), so the warm
//! path never waits for a commit's fsync or a sled flush. Lock order: `write`, then `index`.
//!
//! The rest of `Store` is split by what it stores: `artifacts` (files: reads, commits,
//! eviction), `pages` (index pages), `batch` (the writer's batched commits) and `uploads`
//! (hosted upload records); this file opens the store, recovers it after a crash and keeps
//! its housekeeping.

use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::blobs::{Blobs, Found};
use super::catalog::Catalog;
use super::error::StoreError;
use super::index::{Entry, Index};
use super::writer::{self, Job, Writer};
use crate::shared::Shared;
use crate::simple::Sha256Digest;

/// Where the store lives and how large it may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    pub path: PathBuf,
    /// The cap on the total size of stored artifacts, in bytes; least recently used evictable
    /// artifacts go first when a commit exceeds it. Pages are not counted: there is one per
    /// project visited and they are small next to the files.
    pub max_size: u64,
    /// Bytes of small artifacts kept in memory (files up to [`HOT_FILE_LIMIT`]), so that a hot
    /// wheel is served without touching the disk or the catalog. 0 disables it.
    pub memory: u64,
}

/// Sizes for `cache stats` and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    pub artifacts: u64,
    pub artifact_bytes: u64,
    pub pages: u64,
    pub max_size: u64,
}

/// The store: cheap to clone, safe to share between threads.
#[derive(Clone)]
pub struct Store {
    pub(super) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(super) path: PathBuf,
    pub(super) max_size: u64,
    pub(super) catalog: Catalog,
    pub(super) blobs: Blobs,
    pub(super) write: Mutex<()>,
    pub(super) index: Mutex<Index>,
    /// Immutable bodies by digest: an entry never goes stale, it only ages out.
    pub(super) hot: moka::sync::Cache<Sha256Digest, Bytes, foldhash::fast::RandomState>,
    /// The blob files of hot bodies, kept open (at most [`super::serve::OPEN_BLOBS`]) so that a
    /// warm request sent by `sendfile` does not open and close its file each time.
    pub(super) open_blobs: moka::sync::Cache<Sha256Digest, Arc<File>, foldhash::fast::RandomState>,
    /// Where queued commits go (see `writer`).
    pub(super) writer: Writer,
    /// Bumped by every recorded or forgotten upload (see `uploads`).
    pub(super) upload_epoch: AtomicU64,
    /// The disk budget of transfers under way (see `space`).
    pub(super) space: super::Space,
    /// The package-level origin records, mirrored (see `origins`).
    pub(super) origins: super::origins::Mirror,
    /// The bucket central replicas share (`[store.shared]`), attached by a server.
    pub(super) shared: OnceLock<Arc<Shared>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .field("max_size", &self.inner.max_size)
            .finish_non_exhaustive()
    }
}

/// What recovery at open had to repair; logged when anything was.
#[derive(Debug, Default, PartialEq, Eq)]
struct Repairs {
    temp_files: usize,
    stray_files: usize,
    unreadable_records: usize,
    records_without_blob: usize,
    blobs_without_record: usize,
}

pub fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH)
}

/// Brings the catalog and the files back to the invariants after whatever stopped the last
/// process, and loads the index. Inline bodies are not checked: they share a transaction with
/// their record, so they cannot be missing, and reading them all would make open slow.
fn recover(catalog: &Catalog, blobs: &Blobs) -> Result<(Index, Repairs), StoreError> {
    let mut repairs = Repairs {
        temp_files: blobs.clear_tmp()?,
        ..Repairs::default()
    };
    let moved = super::legacy::move_inline_bodies(catalog, blobs)?;
    if moved != super::legacy::Moved::default() {
        tracing::info!(
            artifacts = moved.artifacts,
            pages = moved.pages,
            mismatched = moved.mismatched,
            "moved the small bodies an earlier version kept in the catalog to files (once)"
        );
    }
    let mut on_disk = std::collections::HashSet::new();
    for found in blobs.list()? {
        match found {
            Found::Blob(digest) => {
                on_disk.insert(digest);
            }
            Found::Stray(path) => {
                blobs.remove_stray(&path)?;
                repairs.stray_files += 1;
            }
        }
    }

    let mut index = Index::default();
    let artifacts = catalog.artifact_records()?;
    for (key, reason) in &artifacts.bad {
        tracing::warn!(%reason, "dropping an unreadable artifact record");
        catalog.drop_artifact_key(key)?;
        repairs.unreadable_records += 1;
    }
    for (digest, entry) in artifacts.good {
        if !entry.inline && !on_disk.contains(&digest) {
            catalog.remove_artifact(&digest)?;
            repairs.records_without_blob += 1;
            continue;
        }
        index.insert(
            digest,
            Entry {
                size: entry.size,
                last_use: entry.last_use,
                evictable: entry.evictable,
                inline: entry.inline,
            },
        );
    }

    // An upload record names bodies that were durable before it was written; nothing to
    // repair but records that cannot be read.
    let uploads = catalog.uploads(&[])?;
    for (key, reason) in &uploads.bad {
        tracing::warn!(%reason, "dropping an unreadable upload record");
        catalog.drop_upload_key(key)?;
        repairs.unreadable_records += 1;
    }

    let pins = catalog.pins()?;
    for (key, reason) in &pins.bad {
        tracing::warn!(%reason, "dropping an unreadable url pin");
        catalog.drop_pin_key(key)?;
        repairs.unreadable_records += 1;
    }
    for (url_key, digest) in pins.good {
        index.pin(url_key, digest);
    }

    let pages = catalog.page_records()?;
    for (key, reason) in &pages.bad {
        tracing::warn!(%reason, "dropping an unreadable page record");
        catalog.remove_page_key(key)?;
        repairs.unreadable_records += 1;
    }
    for (key, entry) in pages.good {
        let blob = entry.body.blob();
        if blob.is_some_and(|d| !on_disk.contains(&d)) {
            catalog.remove_page_key(&key)?;
            repairs.records_without_blob += 1;
            continue;
        }
        index.add_page(&key, blob);
    }

    for digest in on_disk {
        if !index.blob_in_use(&digest) {
            blobs.remove(&digest)?;
            repairs.blobs_without_record += 1;
        }
    }
    if repairs.unreadable_records + repairs.records_without_blob > 0 {
        catalog.flush()?;
    }
    Ok((index, repairs))
}

impl Store {
    /// Opens the store at `options.path`, creating its layout if absent, and recovers from
    /// whatever a crash left behind (see the `store` module doc for the invariants).
    pub fn open(options: StoreOptions) -> Result<Store, StoreError> {
        let path = options.path;
        fs::create_dir_all(&path).map_err(|source| StoreError::CreateDir {
            path: path.clone(),
            source,
        })?;
        // The catalog first: its lock proves no other process uses the store, and only then
        // may tmp/ and unrecorded blobs be treated as garbage.
        let catalog = Catalog::open(&path.join("catalog"), &path)?;
        catalog.check_format(&path)?;
        let blobs = Blobs::new(&path);
        blobs.create_layout()?;
        let (index, repairs) = recover(&catalog, &blobs)?;
        if repairs != Repairs::default() {
            tracing::warn!(
                store = %path.display(),
                temp_files = repairs.temp_files,
                stray_files = repairs.stray_files,
                unreadable_records = repairs.unreadable_records,
                records_without_blob = repairs.records_without_blob,
                blobs_without_record = repairs.blobs_without_record,
                "the store was not closed cleanly; removed what could not be used"
            );
        }
        tracing::debug!(
            store = %path.display(),
            artifacts = index.artifacts(),
            bytes = index.total(),
            pages = index.pages(),
            "store opened"
        );
        let hot = moka::sync::Cache::builder()
            .max_capacity(options.memory)
            .weigher(|_, body: &Bytes| u32::try_from(body.len()).unwrap_or(u32::MAX))
            .build_with_hasher(foldhash::fast::RandomState::default());
        let open_blobs = moka::sync::Cache::builder()
            .max_capacity(super::serve::OPEN_BLOBS)
            .build_with_hasher(foldhash::fast::RandomState::default());
        let origins = super::origins::Mirror::load(&catalog)?;
        let (writer, queue) = Writer::new();
        let space = super::Space::new(&path, 0);
        let inner = Arc::new(Inner {
            path,
            max_size: options.max_size,
            catalog,
            blobs,
            write: Mutex::new(()),
            index: Mutex::new(index),
            hot,
            open_blobs,
            writer,
            upload_epoch: AtomicU64::new(0),
            space,
            origins,
            shared: OnceLock::new(),
        });
        writer::start(Arc::downgrade(&inner), queue)?;
        Ok(Store { inner })
    }

    /// Makes `shared` the store's second tier (see [`crate::shared`]); a server does this once,
    /// after opening the store. Returns `false` if a tier was attached already.
    pub fn attach_shared(&self, shared: Shared) -> bool {
        self.inner.shared.set(Arc::new(shared)).is_ok()
    }

    /// The bucket central replicas share, if `[store.shared]` configures one.
    pub fn shared(&self) -> Option<&Arc<Shared>> {
        self.inner.shared.get()
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Store {
        Store { inner }
    }

    /// [`Store::open`] for tests that reopen a store they just dropped: sled's I/O threads may
    /// still hold the catalog (and its lock) for a moment after a flush has returned.
    #[cfg(test)]
    pub(crate) fn reopen(options: StoreOptions) -> Result<Store, StoreError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match Store::open(options.clone()) {
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                opened => return opened,
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn inner_writer_batches(&self) -> u64 {
        self.inner.writer.batches()
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The disk budget of the store's transfers; its floor is 0 until the server sets
    /// `[store] min_free_space`.
    pub fn space(&self) -> super::Space {
        self.inner.space.clone()
    }

    /// `<path>/tmp`: where downloads are written before they are committed.
    pub fn tmp_dir(&self) -> PathBuf {
        self.inner.blobs.tmp_dir().to_path_buf()
    }

    /// A new temporary file in `tmp/` with a unique name, opened for reading and writing.
    pub fn create_temp(&self) -> Result<(PathBuf, File), StoreError> {
        self.inner.blobs.create_temp()
    }

    // A poisoned lock means a panic elsewhere mid-update; the index is still a usable

    // approximation (and the catalog is the truth at the next open), so carry on.
    pub(super) fn index(&self) -> MutexGuard<'_, Index> {
        self.inner
            .index
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.inner
            .write
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A recency stamp for a use that begins now, later than every use so far, to put in
    /// [`ArtifactRecord::used_at`](super::ArtifactRecord::used_at) of what the use will commit.
    pub fn use_stamp(&self) -> u64 {
        self.index().stamp()
    }

    /// Writes the last-use times changed since the last call to the catalog in one batch and
    /// flushes; returns how many records were updated. Hits only touch memory (SPEC §4), so a
    /// crash loses at most the uses since the last call, which only blurs eviction order.
    pub fn persist_recency(&self) -> Result<usize, StoreError> {
        let _write = self.write_lock();
        let dirty = self.index().take_dirty();
        if dirty.is_empty() {
            return Ok(0);
        }
        let persisted = self
            .inner
            .catalog
            .set_last_use(&dirty)
            .and_then(|n| self.inner.catalog.flush().map(|()| n));
        if persisted.is_err() {
            self.index().restore_dirty(dirty.iter().map(|(d, _)| *d));
        }
        persisted
    }

    /// Waits until every queued commit is durable, then flushes the catalog. Blocking: for a
    /// graceful stop, from a blocking thread.
    pub fn flush(&self) -> Result<(), StoreError> {
        let (done, outcome) = std::sync::mpsc::sync_channel(1);
        if self.inner.writer.send(Job::Barrier(done)).is_ok() {
            outcome.recv().map_err(|_| StoreError::WriterGone)??;
        }
        self.inner.catalog.flush()
    }

    /// How many stored files are never evicted (hosted uploads), and their bytes.
    pub fn unevictable(&self) -> (u64, u64) {
        self.index().unevictable()
    }

    pub fn stats(&self) -> StoreStats {
        let index = self.index();
        StoreStats {
            artifacts: index.artifacts(),
            artifact_bytes: index.total(),
            pages: index.pages(),
            max_size: self.inner.max_size,
        }
    }
}
