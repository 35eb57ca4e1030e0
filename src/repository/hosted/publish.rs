//! Committing a checked upload to a hosted repository, durable before it is acknowledged.
//!
//! The upload has been received into the store's `tmp/` and checked (digests, filename, core
//! metadata) by `crate::upload`; what is left needs the store: a filename already published
//! with other bytes is refused (409, in the words twine and uv recognise), the same bytes again
//! are a harmless 200 (so re-running a publish job works, as on the public index), and anything
//! else is committed: the body and its metadata made durable as artifacts, then the upload
//! recorded in one transaction that also checks the filename is still free.

use std::path::PathBuf;
use std::time::SystemTime;

use bytes::Bytes;

use super::{Hosted, HostedError};
use crate::shared::Claim;
use crate::simple::digest::Sha256Digest;
use crate::simple::filename::DistFilename;
use crate::simple::name::ProjectName;
use crate::store::{ArtifactRecord, Upload, UploadOutcome};

/// A checked upload waiting in the store's `tmp/`.
#[derive(Debug)]
pub struct NewUpload {
    pub project: ProjectName,
    pub filename: DistFilename,
    /// As the filename spells it.
    pub version: String,
    pub sha256: Sha256Digest,
    pub size: u64,
    pub requires_python: Option<String>,
    /// The wheel's METADATA, served as its PEP 658 metadata.
    pub core_metadata: Option<Bytes>,
    /// The received body, in the store's `tmp/`; the store owns it from here on.
    pub temp: PathBuf,
    /// The user publishing it.
    pub uploader: String,
}

/// What publishing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// A new file.
    Created,
    /// The same bytes were already published under this filename: nothing changed.
    Identical,
}

impl Hosted {
    /// Commits `upload`. On any outcome but an error the temporary file is gone; on an error it
    /// is gone too (the store deletes what it owns, and `tmp/` is emptied at the next start).
    pub async fn publish(&self, upload: NewUpload) -> Result<Published, HostedError> {
        let (repo, project, filename) = (
            self.name.to_string(),
            upload.project.to_string(),
            upload.filename.as_str().to_owned(),
        );
        // With replicas, a bucket already known to be unreachable refuses the upload at once,
        // rather than after the attempts to reach it fail.
        if let Some(crate::shared::BucketState::Down { since, reason }) =
            self.store.shared().map(|shared| shared.state())
        {
            let _ = std::fs::remove_file(&upload.temp);
            let seconds = since.elapsed().map_or(0, |elapsed| elapsed.as_secs());
            return Err(HostedError::SharedUnavailable {
                repo: self.name.clone(),
                reason: format!("for {seconds} s: {reason}"),
            });
        }
        // The common re-run case first: nothing to write.
        let existing = {
            let (repo, project, filename) = (repo.clone(), project.clone(), filename.clone());
            self.blocking(move |store| store.upload(&repo, &project, &filename))
                .await?
        };
        if let Some(existing) = existing {
            let _ = std::fs::remove_file(&upload.temp);
            return self.same_bytes(&upload, Some(existing.sha256));
        }
        let body = ArtifactRecord {
            sha256: upload.sha256,
            size: upload.size,
            repository: repo.clone(),
            filename: filename.clone(),
            url_key: None,
            // Evictable until the upload is recorded: a crash in between leaves a cached file,
            // not a body nothing names and nothing may evict.
            evictable: true,
            used_at: None,
        };
        let metadata = upload.core_metadata.as_ref().map(|bytes| {
            let record = ArtifactRecord {
                sha256: Sha256Digest::of(bytes),
                size: bytes.len() as u64,
                repository: repo.clone(),
                filename: format!("{filename}.metadata"),
                url_key: None,
                evictable: true,
                used_at: None,
            };
            (bytes.clone(), record)
        });
        let record = Upload {
            filename: filename.clone(),
            version: upload.version.clone(),
            sha256: upload.sha256,
            size: upload.size,
            requires_python: upload.requires_python.clone(),
            core_metadata: metadata.as_ref().map(|(_, record)| record.sha256),
            uploaded_at: SystemTime::now(),
            uploader: upload.uploader.clone(),
        };
        let temp = upload.temp.clone();
        let metadata_digest = record.core_metadata;
        self.blocking(move |store| {
            store.commit_artifact(&temp, body)?;
            if let Some((bytes, record)) = metadata {
                store.commit_artifact_bytes(bytes, record)?;
            }
            Ok(())
        })
        .await?;
        // With replicas, the bucket decides who holds the filename, and holds the bytes before
        // the 200 (see `crate::shared`).
        if let Some(shared) = self.store.shared().cloned() {
            let unavailable = |error: crate::shared::SharedError| HostedError::SharedUnavailable {
                repo: self.name.clone(),
                reason: error.to_string(),
            };
            for digest in std::iter::once(upload.sha256).chain(metadata_digest) {
                shared
                    .offer(&self.store, digest)
                    .await
                    .map_err(unavailable)?;
            }
            match shared
                .claim(&repo, &project, &record)
                .await
                .map_err(unavailable)?
            {
                Claim::Ours => {}
                Claim::Taken(existing) if existing.sha256 == upload.sha256 => {
                    // The same bytes through another replica: this one records that upload.
                    let (repo, project) = (repo.clone(), project.clone());
                    let _ = self
                        .blocking(move |store| store.record_upload(&repo, &project, &existing))
                        .await;
                    return self.same_bytes(&upload, Some(upload.sha256));
                }
                Claim::Taken(existing) => return self.same_bytes(&upload, Some(existing.sha256)),
            }
        }
        let outcome = self
            .blocking(move |store| store.record_upload(&repo, &project, &record))
            .await?;
        match outcome {
            UploadOutcome::Recorded => {
                tracing::info!(
                    repository = %self.name,
                    package = %upload.project,
                    file = %filename,
                    user = %upload.uploader,
                    bytes = upload.size,
                    "published"
                );
                Ok(Published::Created)
            }
            // Published by another request since the check above.
            UploadOutcome::Exists(digest) => self.same_bytes(&upload, digest),
        }
    }

    /// The answer when the filename is taken: identical bytes are fine, others a 409.
    fn same_bytes(
        &self,
        upload: &NewUpload,
        existing: Option<Sha256Digest>,
    ) -> Result<Published, HostedError> {
        if existing == Some(upload.sha256) {
            tracing::info!(
                repository = %self.name,
                package = %upload.project,
                file = %upload.filename.as_str(),
                "already published with the same bytes; nothing to do"
            );
            Ok(Published::Identical)
        } else {
            Err(HostedError::Exists {
                repo: self.name.clone(),
                filename: upload.filename.as_str().to_owned(),
            })
        }
    }
}
