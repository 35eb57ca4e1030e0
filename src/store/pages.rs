//! Index pages in the store: the upstream's body with its validators, inline in the catalog
//! when small, a blob otherwise, refreshed after a 304 and forgotten after a 404.

use std::fmt;
use std::fs::{self};
use std::io::{self};
use std::time::SystemTime;

use bytes::Bytes;

use super::batch::*;
use super::catalog::{page_key, PageBody};
use super::engine::*;
use super::error::StoreError;
use super::index::millis;

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

impl Store {
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

    /// Stores (or replaces) a page, its body as a blob, and flushes.
    /// A replaced blob body is deleted unless another record uses it. Fetched pages go through
    /// [`Store::queue_page`] instead, which shares flushes; this is the one-off form.
    pub fn put_page(&self, key: &PageKey, page: &StoredPage) -> Result<(), StoreError> {
        let replaced = self.apply_one(Commit::Page {
            key: key.clone(),
            page: page.clone(),
            written: None,
        })?;
        self.inner.catalog.flush()?;
        self.forget_replaced(replaced);
        Ok(())
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
        self.forget_page_key(&page_key(key))
    }

    /// [`Store::forget_page`] by catalog key.
    pub(super) fn forget_page_key(&self, raw: &[u8]) -> Result<bool, StoreError> {
        let _write = self.write_lock();
        let Some(old) = self.inner.catalog.remove_page_key(raw)? else {
            return Ok(false);
        };
        self.inner.catalog.flush()?;
        let old_blob = old.and_then(|o| o.body.blob());
        self.index().remove_page(raw, old_blob);
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
}
