//! Taking in the uploads other replicas made to the shared bucket (`[store.shared]`).
//!
//! A replica asked for a hosted project's page lists the project's upload records in the
//! bucket, at most once per [`crate::shared::SYNC_INTERVAL`], and records locally the ones it
//! lacks: bodies first (verified against their digests), then the upload, which also makes the
//! package's origin record on first publication, as a local publish would. A bucket that fails
//! leaves the page as the replica knows it (logged): reads keep working without the bucket.

use super::Hosted;
use crate::simple::name::ProjectName;
use crate::store::{ArtifactRecord, Upload};

impl Hosted {
    /// Takes in `project`'s uploads from the shared bucket, if there is one and it is time.
    pub(crate) async fn sync(&self, project: &ProjectName) {
        let Some(shared) = self.store.shared().cloned() else {
            return;
        };
        if self.synced.contains_key(project) {
            return;
        }
        self.synced.insert(project.clone(), ());
        let (repo, name) = (self.name.to_string(), project.to_string());
        let uploads = match shared.uploads(&repo, &name).await {
            Ok(uploads) => uploads,
            Err(error) => {
                tracing::warn!(repository = %self.name, package = %project, %error, "could not list the shared bucket's uploads; serving this replica's");
                return;
            }
        };
        for upload in uploads {
            let known = {
                let (repo, name, filename) = (repo.clone(), name.clone(), upload.filename.clone());
                self.blocking(move |store| store.upload(&repo, &name, &filename))
                    .await
            };
            if !matches!(known, Ok(None)) {
                continue;
            }
            if let Err(reason) = self.take_in(&shared, &repo, &name, &upload).await {
                tracing::warn!(repository = %self.name, package = %project, file = %upload.filename, %reason, "could not take in an upload from the shared bucket");
            }
        }
    }

    /// Records locally one upload from the bucket: its body and metadata, then the upload.
    async fn take_in(
        &self,
        shared: &crate::shared::Shared,
        repo: &str,
        project: &str,
        upload: &Upload,
    ) -> Result<(), String> {
        let parts = std::iter::once((upload.sha256, upload.size, upload.filename.clone())).chain(
            upload
                .core_metadata
                .map(|digest| (digest, 0, format!("{}.metadata", upload.filename))),
        );
        for (sha256, size, filename) in parts {
            if self.store.contains(&sha256) {
                continue;
            }
            let record = ArtifactRecord {
                sha256,
                size,
                repository: repo.to_owned(),
                filename,
                url_key: None,
                // Evictable until the upload names it, as in a local publish.
                evictable: true,
                used_at: None,
            };
            if !shared
                .take_in(&self.store, record)
                .await
                .map_err(|e| e.to_string())?
            {
                return Err("the bucket has its record but not its bytes".to_owned());
            }
        }
        let (repo, project, upload) = (repo.to_owned(), project.to_owned(), upload.clone());
        self.blocking(move |store| store.record_upload(&repo, &project, &upload))
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}
