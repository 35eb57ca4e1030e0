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

use super::catalog::{origin_key, upload_key, upload_prefix, HexDigest, Recorded, UploadEntry};
use super::engine::Store;
use super::error::StoreError;
use crate::origin::record::OriginRecord;
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

/// Which upload: a repository, a project (normalised) and a filename.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadName {
    pub repository: String,
    pub project: String,
    pub filename: String,
}

impl UploadName {
    /// The name an [`upload_key`] spells, `None` for a key it did not make.
    fn parse(key: &[u8]) -> Option<UploadName> {
        let mut parts = key.splitn(3, |&b| b == 0);
        let mut next = || Some(std::str::from_utf8(parts.next()?).ok()?.to_owned());
        Some(UploadName {
            repository: next()?,
            project: next()?,
            filename: next()?,
        })
    }
}

impl std::fmt::Display for UploadName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the upload {} of {} in repository {}",
            self.filename, self.project, self.repository
        )
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

/// Whether an upload's file or metadata is the body `digest`.
fn uses(entry: &UploadEntry, digest: &Sha256Digest) -> bool {
    entry.sha256.0 == *digest || entry.core_metadata.is_some_and(|d| d.0 == *digest)
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
        // The first upload of the project to the repository makes its package-level origin
        // record, in the same transaction (`origins`).
        let first = OriginRecord::first_upload(&upload.version, upload.uploaded_at);
        let origin = origin_key(repository, project);
        let _write = self.write_lock();
        match self.inner.catalog.record_upload(
            &key,
            &upload.entry(),
            &artifacts,
            (&origin, &first),
        )? {
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
        self.mirror_first_upload(repository, project, first);
        self.inner.upload_epoch.fetch_add(1, Ordering::Release);
        Ok(UploadOutcome::Recorded)
    }

    /// The uploads whose file or PEP 658 metadata is the body `digest`.
    pub fn uploads_using(&self, digest: &Sha256Digest) -> Result<Vec<UploadName>, StoreError> {
        Ok(self
            .upload_records_using(digest)?
            .into_iter()
            .map(|(name, _, _)| name)
            .collect())
    }

    fn upload_records_using(
        &self,
        digest: &Sha256Digest,
    ) -> Result<Vec<(UploadName, sled::IVec, UploadEntry)>, StoreError> {
        let scan = self.inner.catalog.uploads(&[])?;
        Ok(scan
            .good
            .into_iter()
            .filter(|(_, entry)| uses(entry, digest))
            .filter_map(|(key, entry)| Some((UploadName::parse(&key)?, key, entry)))
            .collect())
    }

    /// Forgets every upload whose file or metadata is the body `digest` (a damaged body, for
    /// `cache verify --forget-damaged-uploads`), with the bodies those uploads stored unless
    /// another upload still uses one, so that the files can be published again. Returns the
    /// uploads forgotten.
    pub fn forget_uploads_using(
        &self,
        digest: &Sha256Digest,
    ) -> Result<Vec<UploadName>, StoreError> {
        let _write = self.write_lock();
        let forgotten = self.upload_records_using(digest)?;
        if forgotten.is_empty() {
            return Ok(Vec::new());
        }
        let mut bodies = Vec::new();
        for (_, key, entry) in &forgotten {
            self.inner.catalog.drop_upload_key(key)?;
            bodies.push(entry.sha256.0);
            bodies.extend(entry.core_metadata.map(|d| d.0));
        }
        let remaining = self.inner.catalog.uploads(&[])?.good;
        bodies.retain(|body| !remaining.iter().any(|(_, entry)| uses(entry, body)));
        bodies.sort();
        bodies.dedup();
        for body in &bodies {
            self.unrecord_locked(body)?;
        }
        self.inner.catalog.flush()?;
        for body in &bodies {
            self.delete_blob_if_unused(body);
        }
        self.inner.upload_epoch.fetch_add(1, Ordering::Release);
        Ok(forgotten.into_iter().map(|(name, _, _)| name).collect())
    }

    /// A number that changes whenever an upload is recorded or forgotten: hosted pages kept in
    /// memory are current while it stays the same.
    pub fn upload_epoch(&self) -> u64 {
        self.inner.upload_epoch.load(Ordering::Acquire)
    }
}
