//! Hosted uploads in the store: the record of each file published to a hosted repository.
//!
//! An upload's bytes are an artifact like any other (content-addressed, committed through the
//! same path), but one that is never evicted (SPEC §4); what makes it an upload is its record,
//! kept per repository, project and filename. The bodies are committed first, as ordinary
//! evictable files; then one transaction checks that the filename is still free, writes the
//! record and makes the bodies non-evictable. So a listed upload always has its bytes, a crash
//! before the record leaves only cached files that eviction may take, and of two concurrent
//! uploads of one filename exactly one is recorded.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::catalog::{upload_key, upload_prefix, HexDigest, Recorded, UploadEntry};
use super::engine::Store;
use super::error::StoreError;
use crate::simple::Sha256Digest;

/// One file uploaded to a hosted repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub filename: String,
    /// As the filename spells it.
    pub version: String,
    pub sha256: Sha256Digest,
    pub size: u64,
    pub requires_python: Option<String>,
    /// The digest of the stored PEP 658 metadata, for wheels.
    pub core_metadata: Option<Sha256Digest>,
    pub uploaded_at: SystemTime,
    pub uploader: String,
}

impl Upload {
    fn from_entry(filename: String, entry: UploadEntry) -> Upload {
        Upload {
            filename,
            version: entry.version,
            sha256: entry.sha256.0,
            size: entry.size,
            requires_python: entry.requires_python,
            core_metadata: entry.core_metadata.map(|d| d.0),
            uploaded_at: UNIX_EPOCH + Duration::from_millis(entry.uploaded_at),
            uploader: entry.uploader,
        }
    }

    fn entry(&self) -> UploadEntry {
        UploadEntry {
            version: self.version.clone(),
            sha256: HexDigest(self.sha256),
            size: self.size,
            requires_python: self.requires_python.clone(),
            core_metadata: self.core_metadata.map(HexDigest),
            uploaded_at: super::index::millis(self.uploaded_at),
            uploader: self.uploader.clone(),
        }
    }
}

/// What recording an upload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadOutcome {
    /// Recorded and durable.
    Recorded,
    /// The filename was already taken, by content with this digest (`None` when its record is
    /// unreadable); nothing was written.
    Exists(Option<Sha256Digest>),
}

impl Store {
    /// The upload of `filename` in `repository`'s `project`, if there is one.
    pub fn upload(
        &self,
        repository: &str,
        project: &str,
        filename: &str,
    ) -> Result<Option<Upload>, StoreError> {
        let key = upload_key(repository, project, filename);
        Ok(self
            .inner
            .catalog
            .upload(&key)?
            .map(|entry| Upload::from_entry(filename.to_owned(), entry)))
    }

    /// Every upload of `repository`'s `project`, in filename order.
    pub fn uploads(&self, repository: &str, project: &str) -> Result<Vec<Upload>, StoreError> {
        let prefix = upload_prefix(repository, Some(project));
        let scan = self.inner.catalog.uploads(&prefix)?;
        for (_, reason) in &scan.bad {
            tracing::warn!(repository, project, %reason, "skipping an unreadable upload record");
        }
        Ok(scan
            .good
            .into_iter()
            .filter_map(|(key, entry)| {
                let filename = std::str::from_utf8(key.get(prefix.len()..)?).ok()?;
                Some(Upload::from_entry(filename.to_owned(), entry))
            })
            .collect())
    }

    /// The projects `repository` holds uploads of, sorted, each once.
    pub fn hosted_projects(&self, repository: &str) -> Result<Vec<String>, StoreError> {
        let prefix = upload_prefix(repository, None);
        let scan = self.inner.catalog.uploads(&prefix)?;
        let mut projects: Vec<String> = scan
            .good
            .iter()
            .filter_map(|(key, _)| {
                let rest = key.get(prefix.len()..)?;
                let end = rest.iter().position(|&b| b == 0)?;
                std::str::from_utf8(&rest[..end]).ok().map(str::to_owned)
            })
            .collect();
        projects.dedup();
        Ok(projects)
    }

    /// Records an upload whose body (and metadata) artifacts are already committed, makes them
    /// non-evictable, and flushes: once this returns `Recorded`, the upload survives a crash.
    /// Fails if a body was evicted since it was committed.
    pub fn record_upload(
        &self,
        repository: &str,
        project: &str,
        upload: &Upload,
    ) -> Result<UploadOutcome, StoreError> {
        let key = upload_key(repository, project, &upload.filename);
        let mut artifacts = vec![upload.sha256];
        artifacts.extend(upload.core_metadata);
        let _write = self.write_lock();
        match self
            .inner
            .catalog
            .record_upload(&key, &upload.entry(), &artifacts)?
        {
            Recorded::New => {}
            Recorded::Exists(digest) => return Ok(UploadOutcome::Exists(digest)),
            Recorded::BodyMissing => {
                return Err(StoreError::UploadBodyMissing {
                    filename: upload.filename.clone(),
                })
            }
        }
        {
            let mut index = self.index();
            for digest in &artifacts {
                index.protect(digest);
            }
        }
        self.inner.catalog.flush()?;
        self.inner.upload_epoch.fetch_add(1, Ordering::Release);
        Ok(UploadOutcome::Recorded)
    }

    /// A number that changes whenever an upload is recorded: hosted pages kept in memory are
    /// current while it stays the same.
    pub fn upload_epoch(&self) -> u64 {
        self.inner.upload_epoch.load(Ordering::Acquire)
    }
}
