//! Hosted upload records in the shared bucket: first writer wins, listed by project, and the
//! projects that have any listed per repository (see the `shared` module doc).

use std::time::{Duration, UNIX_EPOCH};

use futures_util::StreamExt as _;
use object_store::path::Path as ObjectPath;
use object_store::GetOptions;
use serde::{Deserialize, Serialize};

use super::{Shared, SharedError};
use crate::simple::Sha256Digest;
use crate::store::Upload;

/// How often a replica lists one hosted project's uploads in the bucket: the longest an upload
/// made through another replica takes to appear on this one's pages.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// An upload's record as the bucket keeps it (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct UploadObject {
    filename: String,
    version: String,
    sha256: String,
    size: u64,
    requires_python: Option<String>,
    core_metadata: Option<String>,
    /// Milliseconds since the Unix epoch.
    uploaded_at: u64,
    uploader: String,
}

impl UploadObject {
    fn of(upload: &Upload) -> UploadObject {
        UploadObject {
            filename: upload.filename.clone(),
            version: upload.version.clone(),
            sha256: upload.sha256.to_hex(),
            size: upload.size,
            requires_python: upload.requires_python.clone(),
            core_metadata: upload.core_metadata.map(|d| d.to_hex()),
            uploaded_at: upload
                .uploaded_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            uploader: upload.uploader.clone(),
        }
    }

    fn upload(self) -> Option<Upload> {
        Some(Upload {
            sha256: Sha256Digest::parse_hex(&self.sha256).ok()?,
            core_metadata: match self.core_metadata {
                Some(hex) => Some(Sha256Digest::parse_hex(&hex).ok()?),
                None => None,
            },
            filename: self.filename,
            version: self.version,
            size: self.size,
            requires_python: self.requires_python,
            uploaded_at: UNIX_EPOCH + Duration::from_millis(self.uploaded_at),
            uploader: self.uploader,
        })
    }
}

/// Who holds an upload's filename in the bucket.
#[derive(Debug)]
pub enum Claim {
    /// This replica's upload: the record was created.
    Ours,
    /// Another upload took the filename first: its record.
    Taken(Upload),
}

impl Shared {
    fn upload_prefix(&self, repository: &str, project: &str) -> String {
        format!("{}uploads/{repository}/{project}/", self.prefix)
    }

    /// Takes the filename of `upload` in the bucket, first writer wins (see the module doc).
    /// The upload's body and metadata must be in the bucket already ([`Shared::offer`]).
    pub async fn claim(
        &self,
        repository: &str,
        project: &str,
        upload: &Upload,
    ) -> Result<Claim, SharedError> {
        let key = format!(
            "{}{}",
            self.upload_prefix(repository, project),
            upload.filename
        );
        let record = serde_json::to_vec(&UploadObject::of(upload)).unwrap_or_default();
        if self.create(&key, record).await? {
            return Ok(Claim::Ours);
        }
        match self
            .upload_record(&ObjectPath::from(key.as_str()), &key)
            .await?
        {
            Some(existing) => Ok(Claim::Taken(existing)),
            None => Err(SharedError::UnreadableRecord {
                bucket: self.name.clone(),
                key,
            }),
        }
    }

    async fn upload_record(
        &self,
        path: &ObjectPath,
        key: &str,
    ) -> Result<Option<Upload>, SharedError> {
        let found = self
            .bucket
            .get_opts(path, GetOptions::default())
            .await
            .map_err(self.failed(key))?;
        let bytes = found.bytes().await.map_err(self.failed(key))?;
        Ok(serde_json::from_slice::<UploadObject>(&bytes)
            .ok()
            .and_then(UploadObject::upload))
    }

    /// The projects of `repository` that have an upload recorded in the bucket: one listing
    /// with a delimiter (`uploads/<repository>/<project>/`), the names as the records spell them.
    pub async fn hosted_projects(&self, repository: &str) -> Result<Vec<String>, SharedError> {
        self.reachable()?;
        let prefix = format!("{}uploads/{repository}/", self.prefix);
        let listed = self
            .bucket
            .list_with_delimiter(Some(&ObjectPath::from(prefix.as_str())))
            .await
            .map_err(self.failed(&prefix))?;
        self.note(None);
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|path| path.filename().map(str::to_owned))
            .collect())
    }

    /// The uploads of `project` to `repository` recorded in the bucket.
    pub async fn uploads(
        &self,
        repository: &str,
        project: &str,
    ) -> Result<Vec<Upload>, SharedError> {
        self.reachable()?;
        let prefix = self.upload_prefix(repository, project);
        let listed: Vec<ObjectPath> = self
            .bucket
            .list(Some(&ObjectPath::from(prefix.as_str())))
            .map(|meta| meta.map(|meta| meta.location))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(self.failed(&prefix))?;
        let mut uploads = Vec::with_capacity(listed.len());
        for path in listed {
            let key = path.to_string();
            match self.upload_record(&path, &key).await? {
                Some(upload) => uploads.push(upload),
                None => tracing::warn!(
                    bucket = %self.name,
                    key,
                    "skipping an unreadable upload record in the shared bucket"
                ),
            }
        }
        Ok(uploads)
    }
}
