//! Publishing through the repository layer: who may upload where, and the steps from a request
//! body to a committed file.
//!
//! An upload is decided like a download: the repository is found and the caller's publish role
//! checked before a byte of the body is read. The body is then received into the store's `tmp/`
//! under `max_upload_size` (`crate::upload::receive`), checked off the async workers
//! (`crate::upload::check`: digests, filename, core metadata), and handed to the hosted
//! repository, which answers only once the file is durable.

use bytes::Bytes;
use futures_util::Stream;

use super::hosted::{NewUpload, Published};
use super::{Kind, Repositories, Repository, ServeError, Source};
use crate::access::{Caller, Role};
use crate::config::RepoName;
use crate::upload;

/// An upload request: where to, and its body.
pub struct UploadRequest<'a, S> {
    pub repo: &'a RepoName,
    /// The request's `Content-Type` (it carries the multipart boundary).
    pub content_type: &'a str,
    /// The announced `Content-Length`, when there is one: a body announced over the limit is
    /// refused before it is read.
    pub length: Option<u64>,
    pub body: S,
}

impl Repositories {
    /// Receives, checks and publishes one file to a hosted repository.
    pub async fn upload<S, E>(
        &self,
        caller: &Caller,
        request: UploadRequest<'_, S>,
    ) -> Result<Published, ServeError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (name, repository) = self.find(Some(request.repo))?;
        let Repository::Source(Source::Hosted(hosted)) = repository else {
            return Err(ServeError::NotHosted {
                repo: name.clone(),
                kind: repository.describe().kind,
                hosted: self
                    .list
                    .iter()
                    .filter(|(_, r)| matches!(r, Repository::Source(Source::Hosted(_))))
                    .map(|(n, _)| n.to_string())
                    .collect(),
            });
        };
        self.users.authorize(caller, Role::Publish, name)?;
        let limit = self.upload_limits.max_upload_size;
        if let Some(length) = request.length.filter(|&length| length > limit) {
            return Err(ServeError::UploadTooLarge { length, limit });
        }
        // Room for the body before a byte of it is written, kept until it is committed: an
        // upload that would fill the disk is refused now, not half way.
        let _room = self
            .store
            .space()
            .reserve(request.length.unwrap_or(0))
            .map_err(|source| ServeError::UploadNoSpace {
                repo: name.clone(),
                source,
            })?;
        let received = upload::receive(
            request.body,
            request.content_type,
            &self.store.tmp_dir(),
            &self.upload_limits,
        )
        .await?;
        let limits = self.upload_limits.clone();
        let checked = tokio::task::spawn_blocking(move || upload::check(received, &limits))
            .await
            .map_err(|join| ServeError::UploadTask {
                reason: join.to_string(),
            })??;
        // The origin controls, once the package and version are known and before any commit
        // (a refused upload's temporary file goes with `checked`).
        self.may_publish(
            name,
            &checked.project,
            &checked.version,
            checked.filename.as_str(),
        )
        .await?;
        let uploader = match caller.user() {
            Some(user) => user.to_string(),
            // `authorize` lets no anonymous caller publish.
            None => "anonymous".to_owned(),
        };
        let new = NewUpload {
            project: checked.project,
            filename: checked.filename,
            version: checked.version,
            sha256: checked.sha256,
            size: checked.size,
            requires_python: checked.requires_python,
            core_metadata: checked.core_metadata,
            temp: checked.content.into_path(),
            uploader,
        };
        Ok(hosted.publish(new).await?)
    }
}
