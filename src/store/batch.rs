//! Batched commits: how the writer thread records many downloads and pages in one catalog
//! transaction and one flush.
//!
//! A commit goes through phases: `ready` (the slow file work, outside the write lock), `staged`
//! (its body in place), then recorded with the rest of its batch in one transaction
//! ([`super::catalog::Catalog::record_all`]); only then does the index learn of it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::oneshot;

use super::artifacts::*;
use super::blobs::{remove_if_present, Keep};
use super::catalog::{page_key, ArtifactEntry, Change, HexDigest, PageBody, PageEntry};
use super::engine::*;
use super::error::StoreError;
use super::index::{millis, Entry};
use super::pages::*;
use super::writer::{Job, Outcome};
use crate::simple::Sha256Digest;

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
        /// The body already written to a fsynced temporary file ([`Store::queue_page`]).
        written: Option<PathBuf>,
    },
}

/// A commit whose slow file work is done, waiting for the write lock.
pub(super) enum Ready {
    Artifact {
        /// With the size of the body actually held.
        record: ArtifactRecord,
        /// Renamed into the blob.
        temp: PathBuf,
    },
    /// With the temporary file of the page's body, renamed into its blob.
    Page(PageChange, PathBuf),
}

/// A page record to write, and the blob of its body.
pub(super) struct PageChange {
    key: PageKey,
    entry: PageEntry,
    blob: Sha256Digest,
}

/// A commit whose body is an installed blob, waiting for its transaction.
pub(super) enum Staged {
    Artifact {
        record: ArtifactRecord,
        entry: ArtifactEntry,
    },
    Page(PageChange),
}

/// The commits of a batch not yet recorded. A second commit of the same file or page records
/// these first, so that it sees the first one's record (a batch holds a handful at most, so
/// the lists are searched, not hashed).
#[derive(Default)]
pub(super) struct Staging {
    commits: Vec<(usize, Staged)>,
    digests: Vec<Sha256Digest>,
    pages: Vec<PageKey>,
}

/// Deletes a temporary file the store owns, if there is one; a leftover is cleared at the next
/// open.
pub(super) fn discard(temp: Option<&Path>) {
    if let Some(temp) = temp {
        let _ = remove_if_present(temp);
    }
}

/// The blob body a replaced page record used, if any: deleted only after a flush.
#[derive(Debug, Default)]
#[must_use]
pub(crate) struct Replaced(pub(super) Option<Sha256Digest>);

impl Store {
    /// Records a batch of commits without flushing the catalog (the caller flushes, once for
    /// the batch). Bodies become blobs, one catalog transaction records them all
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
                Ready::Artifact { record, temp } => {
                    let digest = record.sha256;
                    if staged.digests.contains(&digest) {
                        // The same file twice in one batch: the second sees the first recorded.
                        self.record_staged(&mut staged, &mut results, &mut recorded);
                    }
                    let existing = self.index().get(&digest);
                    let existing =
                        existing.filter(|e| e.inline || self.inner.blobs.len(&digest).is_some());
                    if let Some(existing) = existing {
                        discard(Some(&temp));
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
                    let keep = if record.evictable {
                        Keep::Refetchable
                    } else {
                        Keep::Only
                    };
                    if let Err(error) = self.inner.blobs.install(&temp, &digest, keep) {
                        discard(Some(&temp));
                        results[position] = Err(Arc::new(error));
                        continue;
                    }
                    let entry = ArtifactEntry {
                        size: record.size,
                        repository: record.repository.clone(),
                        filename: record.filename.clone(),
                        evictable: record.evictable,
                        inline: false,
                        last_use: match record.used_at {
                            Some(used_at) => used_at,
                            None => self.index().stamp(),
                        },
                        url_keys: record.url_key.map(HexDigest).into_iter().collect(),
                    };
                    staged.digests.push(digest);
                    staged
                        .commits
                        .push((position, Staged::Artifact { record, entry }));
                }
                Ready::Page(page, temp) => {
                    if staged.pages.contains(&page.key) {
                        self.record_staged(&mut staged, &mut results, &mut recorded);
                    }
                    if let Err(error) =
                        self.inner
                            .blobs
                            .install(&temp, &page.blob, Keep::Refetchable)
                    {
                        discard(Some(&temp));
                        results[position] = Err(Arc::new(error));
                        continue;
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
    pub(super) fn apply_one(&self, commit: Commit) -> Result<Replaced, StoreError> {
        match self.apply_batch(vec![commit]).pop() {
            Some(result) => {
                result.map_err(|error| Arc::try_unwrap(error).unwrap_or_else(StoreError::Shared))
            }
            None => Ok(Replaced::default()),
        }
    }

    /// The part of a commit that needs no lock: the body's temporary file written and fsynced
    /// (unless the caller prepared it), and the page record built.
    pub(super) fn ready(&self, commit: Commit) -> Result<Ready, StoreError> {
        Ok(match commit {
            Commit::Artifact { body, record } => {
                let (temp, size) = match body {
                    NewArtifact::Prepared(Prepared { temp }) => (temp, record.size),
                    NewArtifact::Memory(bytes) => {
                        (self.inner.blobs.write_temp(&bytes)?, bytes.len() as u64)
                    }
                };
                Ready::Artifact {
                    record: ArtifactRecord { size, ..record },
                    temp,
                }
            }
            Commit::Page { key, page, written } => {
                let size = page.body.len() as u64;
                let blob = Sha256Digest::of(&page.body);
                let entry = PageEntry {
                    content_type: page.content_type,
                    final_url: page.final_url,
                    etag: page.etag,
                    last_modified: page.last_modified,
                    fetched_at: millis(page.fetched_at),
                    body: PageBody::Blob {
                        sha256: HexDigest(blob),
                        size,
                    },
                };
                let temp = match written {
                    Some(temp) => temp,
                    None => self.inner.blobs.write_temp(&page.body)?,
                };
                Ready::Page(PageChange { key, entry, blob }, temp)
            }
        })
    }

    /// Records what is staged in one catalog transaction, then tells the index (or, should the
    /// transaction fail, removes the blobs it would have recorded). Artifacts recorded are
    /// added to `recorded`, for eviction.
    pub(super) fn record_staged(
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
                Staged::Artifact { record, entry } => Change::Artifact {
                    digest: record.sha256,
                    entry,
                    pin: record.url_key,
                },
                Staged::Page(page) => Change::Page {
                    key: &page.key,
                    entry: &page.entry,
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
                Staged::Artifact { record, entry } => {
                    index.insert(
                        record.sha256,
                        Entry {
                            size: record.size,
                            last_use: entry.last_use,
                            evictable: record.evictable,
                            inline: false,
                        },
                    );
                    if let Some(url_key) = record.url_key {
                        index.pin(url_key, record.sha256);
                    }
                    recorded.push(record.sha256);
                }
                Staged::Page(PageChange { key, blob, .. }) => {
                    let catalog_key = page_key(&key);
                    index.add_page(&catalog_key, Some(blob));
                    let old_blob = old.and_then(|old| {
                        let old_blob = old.and_then(|o| o.body.blob());
                        index.remove_page(&catalog_key, old_blob);
                        old_blob
                    });
                    results[position] = Ok(Replaced(old_blob.filter(|old| *old != blob)));
                }
            }
        }
    }

    /// Undoes the file side of a commit whose transaction failed: its temporary file, and the
    /// blob it installed unless a record uses it.
    pub(super) fn unstage(&self, commit: Staged) {
        match commit {
            Staged::Artifact { record, .. } => {
                if !self.index().blob_in_use(&record.sha256) {
                    // Unrecorded blobs are garbage; remove it now rather than at the next open.
                    let _ = self.inner.blobs.remove(&record.sha256);
                }
            }
            Staged::Page(PageChange { blob, .. }) => self.delete_blob_if_unused(&blob),
        }
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

    /// Writes a fetched page's body to a fsynced temporary file, then queues the page for the
    /// writer thread, which records it with others. Blocking (the write and its fsync): async
    /// callers run it on a blocking thread, where the fsyncs of many pages overlap instead of
    /// queueing on the writer. Its client is served already, so a failure is only logged.
    pub fn queue_page(&self, key: PageKey, page: StoredPage) {
        let written = match self.inner.blobs.write_temp(&page.body) {
            Ok(temp) => temp,
            Err(error) => {
                tracing::warn!(page = %key, %error, "could not store a fetched page");
                return;
            }
        };
        let job = Job::Page {
            key,
            page,
            written: written.clone(),
        };
        if let Err(error) = self.inner.writer.send(job) {
            discard(Some(&written));
            tracing::warn!("{error}");
        }
    }
}
