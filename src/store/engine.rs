//! [`Store`]: the catalog, the blob files and the in-memory index kept consistent.
//!
//! Two locks: `write` serialises every change to the catalog and the blob directory (commits,
//! removals, eviction, pages, recency), so that no eviction can unlink a blob between another
//! writer's rename and its record; `index` guards the in-memory index and is held only for
//! memory operations (plus the `open` of a blob on a hit, see [`Store::artifact`]), so the warm
//! path never waits for a commit's fsync or a sled flush. Lock order: `write`, then `index`.

use std::fmt;
use std::fs::{self, File};
use std::future::Future;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::blobs::{remove_if_present, Blobs, Found};
use super::catalog::{page_key, ArtifactEntry, Catalog, Change, HexDigest, PageBody, PageEntry};
use super::error::StoreError;
use super::index::{millis, Entry, Index};
use super::serve::ArtifactBody;
use super::writer::{self, Job, Outcome, Writer};
use crate::simple::Sha256Digest;

/// Bodies smaller than this sit inline in the catalog; larger ones are blob files. sled keeps
/// values whole in memory, so only small ones belong in it.
pub const INLINE_LIMIT: u64 = 64 * 1024;

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
}

/// The body of an artifact being committed.
#[derive(Debug)]
pub enum NewArtifact {
    /// A verified body held in memory: it goes inline, or is written to a blob by the commit.
    Memory(Bytes),
    /// A temporary file made durable by [`Store::prepare`].
    Prepared(Prepared),
}

/// A finished temporary file, checked against its record and fsynced; what is small enough to
/// go inline has been read. The store owns the file.
#[derive(Debug)]
pub struct Prepared {
    temp: PathBuf,
    inline: Option<Vec<u8>>,
}

/// One commit of a writer batch (see [`Store::apply_batch`]).
#[derive(Debug)]
pub(crate) enum Commit {
    Artifact {
        body: NewArtifact,
        record: ArtifactRecord,
    },
    Page {
        key: PageKey,
        page: StoredPage,
    },
}

/// A commit whose slow file work is done, waiting for the write lock.
enum Ready {
    Artifact {
        /// With the size of the body actually held.
        record: ArtifactRecord,
        inline: Option<Bytes>,
        /// Renamed into a blob when the body is not inline, else deleted once recorded.
        temp: Option<PathBuf>,
    },
    /// With the temporary file of a body too large to go inline.
    Page(PageChange, Option<PathBuf>),
}

/// A page record to write, and where its body goes.
struct PageChange {
    key: PageKey,
    entry: PageEntry,
    /// The body, when it goes inline.
    inline: Option<Bytes>,
    /// The body's digest, when it is a blob.
    blob: Option<Sha256Digest>,
}

/// A commit whose body is in place (inline or an installed blob), waiting for its transaction.
enum Staged {
    Artifact {
        record: ArtifactRecord,
        entry: ArtifactEntry,
        inline: Option<Bytes>,
        temp: Option<PathBuf>,
    },
    Page(PageChange),
}

/// The commits of a batch not yet recorded. A second commit of the same file or page records
/// these first, so that it sees the first one's record (a batch holds a handful at most, so
/// the lists are searched, not hashed).
#[derive(Default)]
struct Staging {
    commits: Vec<(usize, Staged)>,
    digests: Vec<Sha256Digest>,
    pages: Vec<PageKey>,
}

/// Deletes a temporary file the store owns, if there is one; a leftover is cleared at the next
/// open.
fn discard(temp: Option<&Path>) {
    if let Some(temp) = temp {
        let _ = remove_if_present(temp);
    }
}

/// The blob body a replaced page record used, if any: deleted only after a flush.
#[derive(Debug, Default)]
#[must_use]
pub(crate) struct Replaced(Option<Sha256Digest>);

/// A stored artifact, ready to serve.
#[derive(Debug)]
pub struct Artifact {
    pub sha256: Sha256Digest,
    pub size: u64,
    pub body: ArtifactBody,
}

/// Which page: a repository's root index (`project: None`) or one project's page.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct PageKey {
    pub repository: String,
    /// The normalised project name.
    pub project: Option<String>,
}

impl fmt::Display for PageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.project {
            Some(project) => write!(f, "the page of {project} in repository {}", self.repository),
            None => write!(f, "the project index of repository {}", self.repository),
        }
    }
}

/// An upstream page body as received, with what is needed to revalidate it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPage {
    pub body: Bytes,
    pub content_type: Option<String>,
    /// The URL the body came from after redirects: relative links resolve against it.
    pub final_url: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub fetched_at: SystemTime,
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
    path: PathBuf,
    max_size: u64,
    pub(super) catalog: Catalog,
    blobs: Blobs,
    write: Mutex<()>,
    index: Mutex<Index>,
    /// Immutable bodies by digest: an entry never goes stale, it only ages out.
    hot: moka::sync::Cache<Sha256Digest, Bytes, foldhash::fast::RandomState>,
    /// Where queued commits go (see `writer`).
    writer: Writer,
    /// Bumped by every recorded upload (see `uploads`).
    pub(super) upload_epoch: AtomicU64,
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
        let (writer, queue) = Writer::new();
        let inner = Arc::new(Inner {
            path,
            max_size: options.max_size,
            catalog,
            blobs,
            write: Mutex::new(()),
            index: Mutex::new(index),
            hot,
            writer,
            upload_epoch: AtomicU64::new(0),
        });
        writer::start(Arc::downgrade(&inner), queue)?;
        Ok(Store { inner })
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

    // ---- artifacts

    /// The stored artifact of `digest`, or `None`. Records the use in memory only. A blob is
    /// opened under the index lock, so an eviction (which leaves the index before it unlinks)
    /// can never remove it between the lookup and the open.
    pub fn artifact(&self, digest: &Sha256Digest) -> Option<Artifact> {
        let mut index = self.index();
        let entry = index.touch(digest)?;
        if let Some(body) = self.inner.hot.get(digest) {
            return Some(Artifact {
                sha256: *digest,
                size: entry.size,
                body: ArtifactBody::memory(body),
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

    /// Reads a small stored file into memory once, so later requests are served from there. A
    /// read that fails or comes up short leaves the file to be streamed from disk instead.
    fn warm_up(&self, digest: &Sha256Digest, size: u64, mut file: File) -> Artifact {
        use std::io::{Read as _, Seek as _};
        let mut body = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        let read = file.read_to_end(&mut body);
        if matches!(read, Ok(n) if n as u64 == size) {
            let body = Bytes::from(body);
            self.inner.hot.insert(*digest, body.clone());
            return Artifact {
                sha256: *digest,
                size,
                body: ArtifactBody::memory(body),
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
    /// their own before queueing). A body small enough to go inline is read into memory. The
    /// store owns `temp` from here on.
    pub fn prepare(&self, temp: PathBuf, record: &ArtifactRecord) -> Result<Prepared, StoreError> {
        match prepare(&temp, record) {
            Ok(inline) => Ok(Prepared { temp, inline }),
            Err(error) => {
                let _ = remove_if_present(&temp);
                Err(error)
            }
        }
    }

    /// Records a batch of commits without flushing the catalog (the caller flushes, once for
    /// the batch). Bodies go inline or become blobs, one catalog transaction records them all
    /// (see [`Catalog::record_all`] for why one), then the index learns of them and eviction
    /// runs. Results come in the order of `commits`; a page's is the blob body its previous
    /// record used, which may be deleted (by [`Store::forget_replaced`]) once the catalog is
    /// flushed. A failed transaction fails every commit recorded in it.
    pub(crate) fn apply_batch(
        &self,
        commits: Vec<Commit>,
    ) -> Vec<Result<Replaced, Arc<StoreError>>> {
        let mut results: Vec<Result<Replaced, Arc<StoreError>>> =
            commits.iter().map(|_| Ok(Replaced::default())).collect();
        // Writing and fsyncing a blob's temporary file is the slow part and an unrenamed temp
        // is harmless, so that happens before the write lock.
        let mut ready = Vec::with_capacity(commits.len());
        for (position, commit) in commits.into_iter().enumerate() {
            match self.ready(commit) {
                Ok(commit) => ready.push((position, commit)),
                Err(error) => results[position] = Err(Arc::new(error)),
            }
        }
        let _write = self.write_lock();
        let mut staged = Staging::default();
        let mut recorded = Vec::new();
        for (position, commit) in ready {
            match commit {
                Ready::Artifact {
                    record,
                    inline,
                    temp,
                } => {
                    let digest = record.sha256;
                    if staged.digests.contains(&digest) {
                        // The same file twice in one batch: the second sees the first recorded.
                        self.record_staged(&mut staged, &mut results, &mut recorded);
                    }
                    let existing = self.index().get(&digest);
                    let existing =
                        existing.filter(|e| e.inline || self.inner.blobs.len(&digest).is_some());
                    if let Some(existing) = existing {
                        discard(temp.as_deref());
                        self.index().touch(&digest);
                        results[position] = self
                            .amend_locked(&digest, existing, &record)
                            .map(|()| {
                                recorded.push(digest);
                                Replaced::default()
                            })
                            .map_err(Arc::new);
                        continue;
                    }
                    if let (None, Some(temp)) = (&inline, &temp) {
                        if let Err(error) = self.inner.blobs.install(temp, &digest) {
                            discard(Some(temp));
                            results[position] = Err(Arc::new(error));
                            continue;
                        }
                    }
                    let entry = ArtifactEntry {
                        size: record.size,
                        repository: record.repository.clone(),
                        filename: record.filename.clone(),
                        evictable: record.evictable,
                        inline: inline.is_some(),
                        last_use: self.index().stamp(),
                        url_keys: record.url_key.map(HexDigest).into_iter().collect(),
                    };
                    staged.digests.push(digest);
                    staged.commits.push((
                        position,
                        Staged::Artifact {
                            record,
                            entry,
                            inline,
                            temp,
                        },
                    ));
                }
                Ready::Page(page, temp) => {
                    if staged.pages.contains(&page.key) {
                        self.record_staged(&mut staged, &mut results, &mut recorded);
                    }
                    if let (Some(digest), Some(temp)) = (&page.blob, &temp) {
                        if let Err(error) = self.inner.blobs.install(temp, digest) {
                            discard(Some(temp));
                            results[position] = Err(Arc::new(error));
                            continue;
                        }
                    }
                    staged.pages.push(page.key.clone());
                    staged.commits.push((position, Staged::Page(page)));
                }
            }
        }
        self.record_staged(&mut staged, &mut results, &mut recorded);
        for digest in recorded {
            if let Err(error) = self.evict_locked(Some(&digest)) {
                // The commits themselves succeeded; the next commit retries the eviction.
                tracing::warn!(%error, "could not evict old files to stay under store.max_size");
            }
        }
        results
    }

    /// [`Store::apply_batch`] for one commit.
    fn apply_one(&self, commit: Commit) -> Result<Replaced, StoreError> {
        match self.apply_batch(vec![commit]).pop() {
            Some(result) => {
                result.map_err(|error| Arc::try_unwrap(error).unwrap_or_else(StoreError::Shared))
            }
            None => Ok(Replaced::default()),
        }
    }

    /// The part of a commit that needs no lock: the body's temporary file written and fsynced
    /// when it is to be a blob, and the page record built.
    fn ready(&self, commit: Commit) -> Result<Ready, StoreError> {
        Ok(match commit {
            Commit::Artifact { body, record } => {
                let (temp, inline, size) = match body {
                    NewArtifact::Prepared(Prepared { temp, inline }) => {
                        (Some(temp), inline.map(Bytes::from), record.size)
                    }
                    NewArtifact::Memory(bytes) => {
                        let size = bytes.len() as u64;
                        if size < INLINE_LIMIT {
                            (None, Some(bytes), size)
                        } else {
                            (Some(self.inner.blobs.write_temp(&bytes)?), None, size)
                        }
                    }
                };
                Ready::Artifact {
                    record: ArtifactRecord { size, ..record },
                    inline,
                    temp,
                }
            }
            Commit::Page { key, page } => {
                let size = page.body.len() as u64;
                let blob = (size >= INLINE_LIMIT).then(|| Sha256Digest::of(&page.body));
                let entry = PageEntry {
                    content_type: page.content_type,
                    final_url: page.final_url,
                    etag: page.etag,
                    last_modified: page.last_modified,
                    fetched_at: millis(page.fetched_at),
                    body: match blob {
                        Some(sha256) => PageBody::Blob {
                            sha256: HexDigest(sha256),
                            size,
                        },
                        None => PageBody::Inline { size },
                    },
                };
                let (inline, temp) = match blob {
                    Some(_) => (None, Some(self.inner.blobs.write_temp(&page.body)?)),
                    None => (Some(page.body), None),
                };
                Ready::Page(
                    PageChange {
                        key,
                        entry,
                        inline,
                        blob,
                    },
                    temp,
                )
            }
        })
    }

    /// Records what is staged in one catalog transaction, then tells the index (or, should the
    /// transaction fail, removes the blobs it would have recorded). Artifacts recorded are
    /// added to `recorded`, for eviction.
    fn record_staged(
        &self,
        staged: &mut Staging,
        results: &mut [Result<Replaced, Arc<StoreError>>],
        recorded: &mut Vec<Sha256Digest>,
    ) {
        let Staging { commits, .. } = std::mem::take(staged);
        if commits.is_empty() {
            return;
        }
        let changes: Vec<Change<'_>> = commits
            .iter()
            .map(|(_, commit)| match commit {
                Staged::Artifact {
                    record,
                    entry,
                    inline,
                    ..
                } => Change::Artifact {
                    digest: record.sha256,
                    entry,
                    inline: inline.as_deref(),
                    pin: record.url_key,
                },
                Staged::Page(page) => Change::Page {
                    key: &page.key,
                    entry: &page.entry,
                    inline: page.inline.as_deref(),
                },
            })
            .collect();
        let written = self.inner.catalog.record_all(&changes);
        drop(changes);
        let olds = match written {
            Ok(olds) => olds,
            Err(error) => {
                let error = Arc::new(error);
                for (position, commit) in commits {
                    self.unstage(commit);
                    results[position] = Err(error.clone());
                }
                return;
            }
        };
        let mut index = self.index();
        for ((position, commit), old) in commits.into_iter().zip(olds) {
            match commit {
                Staged::Artifact {
                    record,
                    entry,
                    inline,
                    temp,
                } => {
                    if inline.is_some() {
                        // The bytes are in the catalog now; a leftover temp is cleared at the
                        // next open.
                        discard(temp.as_deref());
                    }
                    index.insert(
                        record.sha256,
                        Entry {
                            size: record.size,
                            last_use: entry.last_use,
                            evictable: record.evictable,
                            inline: inline.is_some(),
                        },
                    );
                    if let Some(url_key) = record.url_key {
                        index.pin(url_key, record.sha256);
                    }
                    recorded.push(record.sha256);
                }
                Staged::Page(PageChange { key, blob, .. }) => {
                    let catalog_key = page_key(&key);
                    index.add_page(&catalog_key, blob);
                    let old_blob = old.and_then(|old| {
                        let old_blob = old.and_then(|o| o.body.blob());
                        index.remove_page(&catalog_key, old_blob);
                        old_blob
                    });
                    results[position] = Ok(Replaced(old_blob.filter(|old| Some(*old) != blob)));
                }
            }
        }
    }

    /// Undoes the file side of a commit whose transaction failed: its temporary file, and the
    /// blob it installed unless a record uses it.
    fn unstage(&self, commit: Staged) {
        match commit {
            Staged::Artifact {
                record,
                inline,
                temp,
                ..
            } => {
                discard(temp.as_deref());
                if inline.is_none() && !self.index().blob_in_use(&record.sha256) {
                    // Unrecorded blobs are garbage; remove it now rather than at the next open.
                    let _ = self.inner.blobs.remove(&record.sha256);
                }
            }
            Staged::Page(PageChange { blob, .. }) => {
                if let Some(digest) = blob {
                    self.delete_blob_if_unused(&digest);
                }
            }
        }
    }

    /// The already-stored path: add a new URL pin, and pin hosted uploads against eviction.
    fn amend_locked(
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
            .put_artifact(digest, &entry, None, new_pin.as_ref())?;
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
    fn unrecord_locked(&self, digest: &Sha256Digest) -> Result<bool, StoreError> {
        let in_index = self.index().remove(digest).is_some();
        let pins = self.inner.catalog.remove_artifact(digest)?;
        let in_catalog = pins.is_some();
        let mut index = self.index();
        for url_key in pins.unwrap_or_default() {
            index.unpin(&url_key);
        }
        Ok(in_index || in_catalog)
    }

    /// Evicts least recently used evictable artifacts (never `keep`) while over `max_size`.
    fn evict_locked(&self, keep: Option<&Sha256Digest>) -> Result<usize, StoreError> {
        let mut evicted = Vec::new();
        let max_size = self.inner.max_size;
        // Each round removes one artifact, so there can be no more rounds than artifacts; the
        // bound keeps an index bug from turning into an endless loop under the write lock.
        let mut rounds = self.index().artifacts();
        loop {
            let victim = self.index().victim(max_size, keep);
            let Some(victim) = victim.filter(|_| rounds > 0) else {
                break;
            };
            rounds -= 1;
            self.unrecord_locked(&victim)?;
            evicted.push(victim);
        }
        if evicted.is_empty() {
            return Ok(0);
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
        Ok(evicted.len())
    }

    /// Deletes the blob of `digest` unless a record still needs it. A failure only leaves
    /// garbage that the next open removes, so it is logged rather than returned.
    fn delete_blob_if_unused(&self, digest: &Sha256Digest) {
        if self.index().blob_in_use(digest) {
            return;
        }
        if let Err(error) = self.inner.blobs.remove(digest) {
            tracing::warn!(%error, "could not delete a file no longer in the store");
        }
    }

    // ---- pages

    /// Whether a page may be stored for `key` (memory only): `false` means it is not, so a cold
    /// miss can skip [`Store::page`] and the blocking thread it needs.
    pub fn may_have_page(&self, key: &PageKey) -> bool {
        self.index().may_have_page(&page_key(key))
    }

    /// The stored page for `key`, or `None`.
    pub fn page(&self, key: &PageKey) -> Result<Option<StoredPage>, StoreError> {
        if !self.may_have_page(key) {
            return Ok(None);
        }
        // A concurrent put_page may replace the body between reading the record and the body;
        // reading the record again then finds the new one.
        for _ in 0..3 {
            let Some(entry) = self.inner.catalog.page(key)? else {
                return Ok(None);
            };
            let body = match entry.body {
                PageBody::Inline { .. } => match self.inner.catalog.page_body(key)? {
                    Some(body) => Bytes::copy_from_slice(&body),
                    None => continue,
                },
                PageBody::Blob { sha256, .. } => {
                    let path = self.inner.blobs.path_of(&sha256.0);
                    match fs::read(&path) {
                        Ok(body) => Bytes::from(body),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(StoreError::io("read the stored page", path, e)),
                    }
                }
            };
            return Ok(Some(StoredPage {
                body,
                content_type: entry.content_type,
                final_url: entry.final_url,
                etag: entry.etag,
                last_modified: entry.last_modified,
                fetched_at: from_millis(entry.fetched_at),
            }));
        }
        tracing::warn!(page = %key, "the stored body of a page is missing; it will be fetched again");
        Ok(None)
    }

    /// Stores (or replaces) a page: inline under [`INLINE_LIMIT`], else as a blob, and flushes.
    /// A replaced blob body is deleted unless another record uses it. Fetched pages go through
    /// [`Store::queue_page`] instead, which shares flushes; this is the one-off form.
    pub fn put_page(&self, key: &PageKey, page: &StoredPage) -> Result<(), StoreError> {
        let replaced = self.apply_one(Commit::Page {
            key: key.clone(),
            page: page.clone(),
        })?;
        self.inner.catalog.flush()?;
        self.forget_replaced(replaced);
        Ok(())
    }

    /// Deletes the body a page record no longer uses, once the record that replaced it is
    /// durable; under the lock, so that no page naming that body can be recorded between the
    /// check and the unlink.
    pub(crate) fn forget_replaced(&self, replaced: Replaced) {
        if let Some(old) = replaced.0 {
            let _write = self.write_lock();
            self.delete_blob_if_unused(&old);
        }
    }

    /// Flushes the catalog (for the writer, which applies a batch and flushes once).
    pub(crate) fn flush_catalog(&self) -> Result<(), StoreError> {
        self.inner.catalog.flush()
    }

    /// After an upstream 304: a new `fetched_at`, and the validators the upstream sent (the
    /// others are kept); the body is untouched. A page forgotten meanwhile stays forgotten.
    pub fn refresh_page(
        &self,
        key: &PageKey,
        fetched_at: SystemTime,
        etag: Option<&str>,
        last_modified: Option<&str>,
    ) -> Result<(), StoreError> {
        let _write = self.write_lock();
        let Some(mut entry) = self.inner.catalog.page(key)? else {
            return Ok(());
        };
        entry.fetched_at = millis(fetched_at);
        if let Some(etag) = etag {
            entry.etag = Some(etag.to_owned());
        }
        if let Some(last_modified) = last_modified {
            entry.last_modified = Some(last_modified.to_owned());
        }
        self.inner.catalog.update_page(key, &entry)?;
        self.inner.catalog.flush()
    }

    /// Forgets a page (so the next request fetches it). Returns whether it was stored.
    pub fn forget_page(&self, key: &PageKey) -> Result<bool, StoreError> {
        let _write = self.write_lock();
        let Some(old) = self.inner.catalog.remove_page(key)? else {
            return Ok(false);
        };
        self.inner.catalog.flush()?;
        let old_blob = old.and_then(|o| o.body.blob());
        self.index().remove_page(&page_key(key), old_blob);
        if let Some(digest) = old_blob {
            self.delete_blob_if_unused(&digest);
        }
        Ok(true)
    }

    /// Forgets the page of `project` (normalised) in `repository`, for `cache purge`.
    /// Returns how many pages were forgotten.
    pub fn forget_project(&self, repository: &str, project: &str) -> Result<usize, StoreError> {
        let key = PageKey {
            repository: repository.to_owned(),
            project: Some(project.to_owned()),
        };
        Ok(usize::from(self.forget_page(&key)?))
    }

    // ---- housekeeping

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

    // ---- queued commits (see `writer`)

    /// Queues a verified artifact for the store's writer thread, which records it with others
    /// and flushes once for all. The future resolves when it is durable or has failed (the
    /// writer has logged why); the commit happens whether or not anyone awaits it.
    pub fn queue_artifact(
        &self,
        body: NewArtifact,
        record: ArtifactRecord,
    ) -> impl Future<Output = Outcome> + Send + 'static {
        let (done, outcome) = oneshot::channel();
        let queued = self
            .inner
            .writer
            .send(Job::Artifact { body, record, done })
            .is_ok();
        async move {
            if !queued {
                return Err(Arc::new(StoreError::WriterGone));
            }
            outcome
                .await
                .unwrap_or(Err(Arc::new(StoreError::WriterGone)))
        }
    }

    /// Queues a fetched page for the writer thread. Its client is served already, so a
    /// failure is only logged (by the writer).
    pub fn queue_page(&self, key: PageKey, page: StoredPage) {
        if let Err(error) = self.inner.writer.send(Job::Page { key, page }) {
            tracing::warn!("{error}");
        }
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

/// Checks the temporary file against the record and makes its bytes durable. Returns the
/// bytes when the body is small enough to go inline.
fn prepare(temp: &Path, record: &ArtifactRecord) -> Result<Option<Vec<u8>>, StoreError> {
    let mut file =
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
        .map_err(|e| StoreError::io("sync the finished download", temp, e))?;
    if actual >= INLINE_LIMIT {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(actual).unwrap_or(0));
    file.read_to_end(&mut bytes)
        .map_err(|e| StoreError::io("read the finished download", temp, e))?;
    if bytes.len() as u64 != actual {
        // The file changed under us: whoever wrote it has not finished.
        return Err(StoreError::SizeMismatch {
            path: temp.to_path_buf(),
            filename: record.filename.clone(),
            expected: record.size,
            actual: bytes.len() as u64,
        });
    }
    Ok(Some(bytes))
}

fn from_millis(ms: u64) -> SystemTime {
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::serve::Content;

    use super::*;

    const BIG: usize = INLINE_LIMIT as usize;

    fn open(dir: &Path, max_size: u64) -> Store {
        Store::reopen(StoreOptions {
            path: dir.to_path_buf(),
            max_size,
            memory: 1 << 20,
        })
        .unwrap()
    }

    /// Writes `body` into a fresh temp of `store`, commits it as `name` and returns the bytes
    /// stored (read without recording a use or warming the memory cache).
    fn commit(store: &Store, body: &[u8], name: &str) -> Vec<u8> {
        commit_with(store, body, name, None, true)
    }

    fn commit_with(
        store: &Store,
        body: &[u8],
        name: &str,
        url_key: Option<Sha256Digest>,
        evictable: bool,
    ) -> Vec<u8> {
        let (path, mut file) = store.create_temp().unwrap();
        file.write_all(body).unwrap();
        drop(file);
        let sha256 = Sha256Digest::of(body);
        store
            .commit_artifact(
                &path,
                ArtifactRecord {
                    sha256,
                    size: body.len() as u64,
                    repository: "pypi".to_owned(),
                    filename: name.to_owned(),
                    url_key,
                    evictable,
                },
            )
            .unwrap();
        match store.inner.catalog.artifact_body(&sha256).unwrap() {
            Some(inline) => inline.to_vec(),
            None => fs::read(store.inner.blobs.path_of(&sha256)).unwrap(),
        }
    }

    fn read(artifact: Artifact) -> Vec<u8> {
        let size = artifact.size;
        match artifact.body.read(0, size) {
            Content::Bytes(bytes) => bytes.to_vec(),
            Content::Stream(stream) => tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(async {
                    use futures_util::TryStreamExt as _;
                    let blocks: Vec<Bytes> = stream.try_collect().await.unwrap();
                    blocks.concat()
                }),
        }
    }

    fn blob_path(dir: &Path, digest: &Sha256Digest) -> PathBuf {
        let hex = digest.to_hex();
        dir.join("blobs/sha256").join(&hex[..2]).join(&hex)
    }

    fn tmp_entries(dir: &Path) -> usize {
        fs::read_dir(dir.join("tmp")).unwrap().count()
    }

    fn key(project: Option<&str>) -> PageKey {
        PageKey {
            repository: "pypi".to_owned(),
            project: project.map(str::to_owned),
        }
    }

    fn page(body: Vec<u8>, etag: Option<&str>) -> StoredPage {
        StoredPage {
            body: Bytes::from(body),
            content_type: Some("text/html".to_owned()),
            final_url: "https://example.invalid/simple/demo/".to_owned(),
            etag: etag.map(str::to_owned),
            last_modified: None,
            fetched_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    #[test]
    fn open_creates_layout_and_reopen_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let small = b"small metadata".to_vec();
        {
            let store = open(dir.path(), u64::MAX);
            for sub in ["catalog", "blobs/sha256", "tmp"] {
                assert!(dir.path().join(sub).is_dir(), "{sub}");
            }
            assert_eq!(store.path(), dir.path());
            assert_eq!(store.tmp_dir(), dir.path().join("tmp"));
            commit(&store, &small, "a-1.0.tar.gz.metadata");
            store
                .put_page(&key(None), &page(b"<html/>".to_vec(), None))
                .unwrap();
        }
        let store = open(dir.path(), u64::MAX);
        let digest = Sha256Digest::of(&small);
        assert!(store.contains(&digest));
        assert_eq!(read(store.artifact(&digest).unwrap()), small);
        assert_eq!(
            store.page(&key(None)).unwrap().unwrap().body.as_ref(),
            b"<html/>"
        );
        assert_eq!(
            store.stats(),
            StoreStats {
                artifacts: 1,
                artifact_bytes: small.len() as u64,
                pages: 1,
                max_size: u64::MAX
            }
        );
    }

    #[test]
    fn newer_format_is_refused_with_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path(), u64::MAX));
        {
            let catalog = Catalog::open(&dir.path().join("catalog"), dir.path()).unwrap();
            catalog.set_format_for_test(2);
        }
        let error = Store::open(StoreOptions {
            path: dir.path().to_path_buf(),
            max_size: 1,
            memory: 0,
        })
        .unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::NewerFormat {
                    found: 2,
                    supported: 1,
                    ..
                }
            ),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains("format 2") && message.contains("format 1"),
            "{message}"
        );
        assert!(
            message.contains("upgrade wheelgate or point store.path elsewhere"),
            "{message}"
        );
    }

    #[test]
    fn second_open_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path(), u64::MAX);
        let error = Store::open(StoreOptions {
            path: dir.path().to_path_buf(),
            max_size: 1,
            memory: 0,
        })
        .unwrap_err();
        assert!(matches!(error, StoreError::Locked { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        assert!(
            message.contains("two wheelgate processes cannot share one store"),
            "{message}"
        );
        // The refused open did not touch the running store's temporary files.
        assert!(first.create_temp().is_ok());
    }

    #[test]
    fn big_artifacts_are_blobs_and_small_ones_inline() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), u64::MAX);
        let big: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
        let small = vec![1u8; BIG - 1];
        let big_digest = Sha256Digest::of(&big);
        let small_digest = Sha256Digest::of(&small);

        commit(&store, &big, "big-1.0-py3-none-any.whl");
        assert_eq!(fs::read(blob_path(dir.path(), &big_digest)).unwrap(), big);
        commit(&store, &small, "small-1.0-py3-none-any.whl");
        assert!(!blob_path(dir.path(), &small_digest).exists());
        assert_eq!(tmp_entries(dir.path()), 0, "temps are moved or deleted");

        let artifact = store.artifact(&big_digest).unwrap();
        assert_eq!((artifact.sha256, artifact.size), (big_digest, BIG as u64));
        assert_eq!(read(artifact), big);
        assert_eq!(read(store.artifact(&small_digest).unwrap()), small);
        assert!(store.artifact(&Sha256Digest::of(b"absent")).is_none());
        assert_eq!(store.stats().artifact_bytes, (2 * BIG - 1) as u64);
    }

    #[test]
    fn bodies_in_memory_are_committed_inline_or_as_blobs_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..BIG).map(|i| (i % 249) as u8).collect();
        let small = vec![2u8; BIG - 1];
        {
            let store = open(dir.path(), u64::MAX);
            for (body, name) in [
                (&big, "big-1.0-py3-none-any.whl"),
                (&small, "small-1.0-py3-none-any.whl"),
            ] {
                let record = ArtifactRecord {
                    sha256: Sha256Digest::of(body),
                    size: 0,
                    repository: "pypi".to_owned(),
                    filename: name.to_owned(),
                    url_key: None,
                    evictable: true,
                };
                store
                    .commit_artifact_bytes(Bytes::from(body.clone()), record)
                    .unwrap();
                let stored = store.artifact(&Sha256Digest::of(body)).unwrap();
                assert_eq!(
                    stored.size,
                    body.len() as u64,
                    "the size comes from the bytes"
                );
            }
            assert_eq!(tmp_entries(dir.path()), 0);
        }
        let store = open(dir.path(), u64::MAX);
        assert_eq!(
            fs::read(blob_path(dir.path(), &Sha256Digest::of(&big))).unwrap(),
            big
        );
        assert!(!blob_path(dir.path(), &Sha256Digest::of(&small)).exists());
        assert_eq!(read(store.artifact(&Sha256Digest::of(&big)).unwrap()), big);
        assert_eq!(
            read(store.artifact(&Sha256Digest::of(&small)).unwrap()),
            small
        );
        assert_eq!(store.stats().artifact_bytes, (2 * BIG - 1) as u64);
    }

    #[test]
    fn commit_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), u64::MAX);
        let big = vec![9u8; BIG * 2];
        commit(&store, &big, "a.whl");
        let again = commit(&store, &big, "a.whl");
        assert_eq!(again, big);
        assert_eq!(store.stats().artifacts, 1);
        assert_eq!(store.stats().artifact_bytes, big.len() as u64);
        assert_eq!(tmp_entries(dir.path()), 0);
    }

    #[test]
    fn wrong_size_is_refused_and_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), u64::MAX);
        let (path, mut file) = store.create_temp().unwrap();
        file.write_all(b"half").unwrap();
        let error = store
            .commit_artifact(
                &path,
                ArtifactRecord {
                    sha256: Sha256Digest::of(b"half of it"),
                    size: 10,
                    repository: "pypi".to_owned(),
                    filename: "a.whl".to_owned(),
                    url_key: None,
                    evictable: true,
                },
            )
            .unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::SizeMismatch {
                    expected: 10,
                    actual: 4,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("a.whl"));
        assert!(!path.exists());
        assert_eq!(store.stats().artifacts, 0);
    }

    #[test]
    fn crash_leftovers_are_cleaned_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let kept = vec![3u8; BIG];
        let lost = vec![4u8; BIG];
        let orphan = vec![5u8; BIG];
        let (kept_d, lost_d, orphan_d) = (
            Sha256Digest::of(&kept),
            Sha256Digest::of(&lost),
            Sha256Digest::of(&orphan),
        );
        {
            let store = open(dir.path(), u64::MAX);
            commit(&store, &kept, "kept.whl");
            commit_with(
                &store,
                &lost,
                "lost.whl",
                Some(Sha256Digest::of(b"url")),
                true,
            );
            store
                .put_page(&key(Some("big")), &page(vec![b'x'; BIG], None))
                .unwrap();
            store.persist_recency().unwrap();
        }
        // A download in progress, a blob renamed but never recorded, a recorded blob deleted,
        // a big page's blob deleted, and a file that is not a blob at all.
        fs::write(dir.path().join("tmp/partial.part"), b"partial").unwrap();
        let orphan_path = blob_path(dir.path(), &orphan_d);
        fs::create_dir_all(orphan_path.parent().unwrap()).unwrap();
        fs::write(&orphan_path, &orphan).unwrap();
        fs::remove_file(blob_path(dir.path(), &lost_d)).unwrap();
        fs::remove_file(blob_path(dir.path(), &Sha256Digest::of(&vec![b'x'; BIG]))).unwrap();
        fs::write(dir.path().join("blobs/sha256/junk"), b"?").unwrap();

        let store = open(dir.path(), u64::MAX);
        assert_eq!(tmp_entries(dir.path()), 0);
        assert!(!orphan_path.exists());
        assert!(!dir.path().join("blobs/sha256/junk").exists());
        assert!(!store.contains(&orphan_d));
        assert!(!store.contains(&lost_d));
        assert!(store.artifact(&lost_d).is_none());
        assert_eq!(
            store.pinned(&Sha256Digest::of(b"url")),
            None,
            "the pin went with its record"
        );
        assert!(store.page(&key(Some("big"))).unwrap().is_none());
        assert_eq!(read(store.artifact(&kept_d).unwrap()), kept);
        assert_eq!(
            store.stats(),
            StoreStats {
                artifacts: 1,
                artifact_bytes: BIG as u64,
                pages: 0,
                max_size: u64::MAX
            }
        );
        // The lost file can be committed again.
        assert_eq!(commit(&store, &lost, "lost.whl"), lost);
    }

    #[test]
    fn a_blob_deleted_while_running_is_forgotten_and_recommitted() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), u64::MAX);
        let body = vec![6u8; BIG];
        let digest = Sha256Digest::of(&body);
        commit(&store, &body, "a.whl");
        fs::remove_file(blob_path(dir.path(), &digest)).unwrap();
        assert!(store.artifact(&digest).is_none());
        assert!(!store.contains(&digest));
        assert_eq!(commit(&store, &body, "a.whl"), body);
        assert!(blob_path(dir.path(), &digest).exists());
    }

    #[test]
    fn eviction_follows_last_use_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let bodies: Vec<Vec<u8>> = (0..4u8).map(|n| vec![n; BIG]).collect();
        let digests: Vec<Sha256Digest> = bodies.iter().map(|b| Sha256Digest::of(b)).collect();
        let limit = 3 * BIG as u64;
        {
            let store = open(dir.path(), limit);
            commit(&store, &bodies[0], "0.whl");
            commit(&store, &bodies[1], "1.whl");
            commit(&store, &bodies[2], "2.whl");
            // 0 becomes the most recent; 1 is now the oldest.
            assert!(store.artifact(&digests[0]).is_some());
            assert_eq!(store.persist_recency().unwrap(), 1);
            assert_eq!(store.persist_recency().unwrap(), 0, "nothing changed since");
        }
        let store = open(dir.path(), limit);
        commit(&store, &bodies[3], "3.whl");
        assert!(!store.contains(&digests[1]), "the least recently used went");
        assert!(!blob_path(dir.path(), &digests[1]).exists());
        for kept in [0, 2, 3] {
            assert!(store.contains(&digests[kept]), "{kept}");
        }
        assert_eq!(store.stats().artifact_bytes, limit);
    }

    #[test]
    fn an_open_file_survives_its_eviction() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), BIG as u64);
        let first = vec![1u8; BIG];
        commit(&store, &first, "1.whl");
        let held = store.artifact(&Sha256Digest::of(&first)).unwrap();
        commit(&store, &vec![2u8; BIG], "2.whl");
        assert!(!store.contains(&Sha256Digest::of(&first)));
        assert_eq!(read(held), first);
    }

    #[test]
    fn non_evictable_artifacts_stay_and_the_new_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), BIG as u64);
        let hosted = vec![1u8; BIG];
        commit_with(&store, &hosted, "hosted.whl", None, false);
        let remote = vec![2u8; BIG];
        commit(&store, &remote, "remote.whl");
        // Over the limit, but the hosted file may not go and the new one was just committed.
        assert!(store.contains(&Sha256Digest::of(&hosted)));
        assert!(store.contains(&Sha256Digest::of(&remote)));
        commit(&store, &vec![3u8; BIG], "next.whl");
        assert!(store.contains(&Sha256Digest::of(&hosted)));
        assert!(!store.contains(&Sha256Digest::of(&remote)));

        // Uploading content already cached as a remote file protects it.
        let shared = vec![3u8; BIG];
        commit_with(&store, &shared, "upload.whl", None, false);
        commit(&store, &vec![4u8; BIG], "other.whl");
        assert!(store.contains(&Sha256Digest::of(&shared)));
        drop(store);
        let store = open(dir.path(), BIG as u64);
        commit(&store, &vec![5u8; BIG], "after-reopen.whl");
        assert!(
            store.contains(&Sha256Digest::of(&shared)),
            "protection was persisted"
        );
    }

    #[test]
    fn url_pins_follow_commits_and_removal() {
        let dir = tempfile::tempdir().unwrap();
        let url_a = Sha256Digest::of(b"https://files.example.invalid/a.whl");
        let url_b = Sha256Digest::of(b"https://mirror.example.invalid/a.whl");
        let body = b"wheel".to_vec();
        let digest = Sha256Digest::of(&body);
        {
            let store = open(dir.path(), u64::MAX);
            assert_eq!(store.pinned(&url_a), None);
            commit_with(&store, &body, "a.whl", Some(url_a), true);
            commit_with(&store, &body, "a.whl", Some(url_b), true);
            assert_eq!(store.pinned(&url_a), Some(digest));
            assert_eq!(store.pinned(&url_b), Some(digest));
        }
        let store = open(dir.path(), u64::MAX);
        assert_eq!(store.pinned(&url_a), Some(digest));
        assert!(store.remove_artifact(&digest).unwrap());
        assert!(!store.remove_artifact(&digest).unwrap());
        assert_eq!(store.pinned(&url_a), None);
        assert_eq!(store.pinned(&url_b), None);
        drop(store);
        let store = open(dir.path(), u64::MAX);
        assert_eq!(store.pinned(&url_b), None, "removal reached the catalog");
    }

    #[test]
    fn pages_inline_and_blob_replace_refresh_forget() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), u64::MAX);
        let project = key(Some("demo"));
        assert!(store.page(&project).unwrap().is_none());

        let small = page(b"<a href=x>".to_vec(), Some("\"v1\""));
        store.put_page(&project, &small).unwrap();
        assert_eq!(store.page(&project).unwrap().unwrap(), small);

        let big_body = vec![b'y'; BIG + 10];
        let big_digest = Sha256Digest::of(&big_body);
        let big = page(big_body, Some("\"v2\""));
        store.put_page(&project, &big).unwrap();
        assert_eq!(store.page(&project).unwrap().unwrap(), big);
        assert!(blob_path(dir.path(), &big_digest).exists());

        let later = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        store
            .refresh_page(&project, later, None, Some("Tue, 01 Jan 2030 00:00:00 GMT"))
            .unwrap();
        let refreshed = store.page(&project).unwrap().unwrap();
        assert_eq!(refreshed.fetched_at, later);
        assert_eq!(
            refreshed.etag.as_deref(),
            Some("\"v2\""),
            "kept when none was sent"
        );
        assert_eq!(
            refreshed.last_modified.as_deref(),
            Some("Tue, 01 Jan 2030 00:00:00 GMT")
        );
        assert_eq!(refreshed.body, big.body);

        // Replacing the blob page by a small one deletes the blob.
        store.put_page(&project, &small).unwrap();
        assert!(!blob_path(dir.path(), &big_digest).exists());
        assert_eq!(store.stats().pages, 1);

        store.put_page(&key(None), &small).unwrap();
        assert_eq!(store.stats().pages, 2);
        assert!(store.forget_page(&key(None)).unwrap());
        assert!(!store.forget_page(&key(None)).unwrap());
        assert_eq!(store.forget_project("pypi", "demo").unwrap(), 1);
        assert_eq!(store.forget_project("pypi", "demo").unwrap(), 0);
        assert!(store.page(&project).unwrap().is_none());
        assert_eq!(store.stats().pages, 0);
        // Refreshing a forgotten page does not bring it back.
        store
            .refresh_page(&project, later, Some("\"v3\""), None)
            .unwrap();
        assert!(store.page(&project).unwrap().is_none());
    }

    fn memory_commit(body: &[u8], name: &str, url_key: Option<Sha256Digest>) -> Commit {
        Commit::Artifact {
            body: NewArtifact::Memory(Bytes::copy_from_slice(body)),
            record: ArtifactRecord {
                sha256: Sha256Digest::of(body),
                size: body.len() as u64,
                repository: "pypi".to_owned(),
                filename: name.to_owned(),
                url_key,
                evictable: true,
            },
        }
    }

    #[test]
    fn a_batch_records_files_and_pages_together_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let small = b"small wheel".to_vec();
        let big = vec![b'w'; BIG + 1];
        let big_page = vec![b'p'; BIG + 2];
        {
            let store = open(dir.path(), u64::MAX);
            let results = store.apply_batch(vec![
                memory_commit(&small, "small.whl", None),
                Commit::Page {
                    key: key(Some("demo")),
                    page: page(b"<a>demo</a>".to_vec(), None),
                },
                memory_commit(&big, "big.whl", None),
                Commit::Page {
                    key: key(Some("huge")),
                    page: page(big_page.clone(), None),
                },
            ]);
            assert_eq!(results.len(), 4);
            for result in results {
                assert!(result.unwrap().0.is_none(), "nothing was replaced");
            }
            store.flush_catalog().unwrap();
            assert_eq!(store.stats().artifacts, 2);
            assert_eq!(store.stats().pages, 2);
        }
        let store = open(dir.path(), u64::MAX);
        assert_eq!(
            read(store.artifact(&Sha256Digest::of(&small)).unwrap()),
            small
        );
        assert_eq!(read(store.artifact(&Sha256Digest::of(&big)).unwrap()), big);
        assert!(blob_path(dir.path(), &Sha256Digest::of(&big)).exists());
        assert_eq!(
            store.page(&key(Some("huge"))).unwrap().unwrap().body,
            big_page
        );
        assert_eq!(
            store.page(&key(Some("demo"))).unwrap().unwrap().body,
            &b"<a>demo</a>"[..]
        );
        assert_eq!(
            tmp_entries(dir.path()),
            0,
            "no temporary file is left behind"
        );
    }

    #[test]
    fn a_page_twice_in_one_batch_ends_with_the_second_and_hands_back_the_first_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), u64::MAX);
        let project = key(Some("demo"));
        let first = vec![b'1'; BIG + 1];
        let second = vec![b'2'; BIG + 1];
        let results = store.apply_batch(vec![
            Commit::Page {
                key: project.clone(),
                page: page(first.clone(), Some("\"v1\"")),
            },
            Commit::Page {
                key: project.clone(),
                page: page(second.clone(), Some("\"v2\"")),
            },
        ]);
        let mut results = results.into_iter();
        let replaced_by_first = results.next().unwrap().unwrap();
        assert_eq!(replaced_by_first.0, None);
        let replaced_by_second = results.next().unwrap().unwrap();
        assert_eq!(
            replaced_by_second.0,
            Some(Sha256Digest::of(&first)),
            "the second commit saw the first one's record"
        );
        store.flush_catalog().unwrap();
        store.forget_replaced(replaced_by_second);
        store.forget_replaced(replaced_by_first);
        assert_eq!(store.stats().pages, 1, "one page, counted once");
        let stored = store.page(&project).unwrap().unwrap();
        assert_eq!(stored.body, second);
        assert_eq!(stored.etag.as_deref(), Some("\"v2\""));
        assert!(!blob_path(dir.path(), &Sha256Digest::of(&first)).exists());
        assert!(blob_path(dir.path(), &Sha256Digest::of(&second)).exists());
    }

    #[test]
    fn a_file_twice_in_one_batch_is_stored_once_with_both_pins() {
        let dir = tempfile::tempdir().unwrap();
        let url_a = Sha256Digest::of(b"https://files.example.invalid/a.whl");
        let url_b = Sha256Digest::of(b"https://mirror.example.invalid/a.whl");
        let body = vec![b'a'; BIG + 5];
        let digest = Sha256Digest::of(&body);
        {
            let store = open(dir.path(), u64::MAX);
            let results = store.apply_batch(vec![
                memory_commit(&body, "a.whl", Some(url_a)),
                memory_commit(&body, "a.whl", Some(url_b)),
            ]);
            assert!(results.into_iter().all(|result| result.is_ok()));
            store.flush_catalog().unwrap();
            assert_eq!(store.stats().artifacts, 1);
            assert_eq!(
                store.stats().artifact_bytes,
                body.len() as u64,
                "counted once"
            );
        }
        let store = open(dir.path(), u64::MAX);
        assert_eq!(store.pinned(&url_a), Some(digest));
        assert_eq!(store.pinned(&url_b), Some(digest));
        assert_eq!(read(store.artifact(&digest).unwrap()), body);
    }

    #[test]
    fn a_blob_shared_by_two_records_outlives_one_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), u64::MAX);
        let body = vec![b'z'; BIG];
        let digest = Sha256Digest::of(&body);
        let other = PageKey {
            repository: "mirror".to_owned(),
            project: Some("demo".to_owned()),
        };
        store
            .put_page(&key(Some("demo")), &page(body.clone(), None))
            .unwrap();
        store.put_page(&other, &page(body.clone(), None)).unwrap();
        commit(&store, &body, "same-bytes.whl");
        assert!(store.forget_page(&other).unwrap());
        assert!(store.remove_artifact(&digest).unwrap());
        assert_eq!(
            store
                .page(&key(Some("demo")))
                .unwrap()
                .unwrap()
                .body
                .as_ref(),
            body.as_slice()
        );
        assert!(store.forget_page(&key(Some("demo"))).unwrap());
        assert!(
            !blob_path(dir.path(), &digest).exists(),
            "the last user deleted it"
        );
    }

    #[test]
    fn concurrent_commits_of_one_digest_store_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), u64::MAX);
        let body = vec![8u8; BIG * 3];
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                let body = body.clone();
                std::thread::spawn(move || commit(&store, &body, "a.whl"))
            })
            .collect();
        for thread in threads {
            assert_eq!(thread.join().unwrap(), body);
        }
        assert_eq!(store.stats().artifacts, 1);
        assert_eq!(tmp_entries(dir.path()), 0);
    }
}
