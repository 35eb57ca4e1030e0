//! Package-level origin records in the shared bucket, so that the dependency-confusion defence
//! holds whichever replica a request reaches (see the `shared` module doc).
//!
//! A record is an object `origins/<repository>/<project>` holding the record as JSON, created
//! once with a conditional create and never changed: the first event on any replica decides,
//! as the first event decides on one node (`crate::store::origins`). A replica shares the
//! records it makes when a remote's page first lists a package (first ingestion), and before
//! it accepts the first upload of a package it looks in the bucket for the records of the
//! remotes that share a group with the hosted repository. First uploads need no object of
//! their own: the upload's record in the bucket is taken in with it (`uploads`), and taking it
//! in makes the origin record.
//!
//! A record that cannot be shared because the bucket is unreachable is kept (up to
//! [`PENDING_LIMIT`]) and shared once the bucket answers again ([`Shared::share_pending`], from
//! the bucket's watch): an ingestion is recorded once per replica, so it would not come again.

use object_store::path::Path as ObjectPath;
use object_store::GetOptions;

use super::{Shared, SharedError};
use crate::origin::record::OriginRecord;

/// At most this many records wait for the bucket; later ones are dropped with a warning (a
/// replica ingests that many new packages during an outage only when something else is wrong).
const PENDING_LIMIT: usize = 100_000;

/// A record waiting to be shared: (repository, project, record).
pub(super) type Pending = (String, String, OriginRecord);

impl Shared {
    fn origin_key(&self, repository: &str, project: &str) -> String {
        format!("{}origins/{repository}/{project}", self.prefix)
    }

    /// Puts `record` in the bucket unless the package has one there already (whose record then
    /// stands: it was first). When the bucket fails, the record waits for it to answer again.
    pub async fn share_origin(
        &self,
        repository: &str,
        project: &str,
        record: &OriginRecord,
    ) -> Result<(), SharedError> {
        let shared = self.put_origin(repository, project, record).await;
        if shared.is_err() {
            self.keep_for_later((repository.to_owned(), project.to_owned(), record.clone()));
        }
        shared
    }

    /// Shares the records that waited for the bucket; those that fail again wait on.
    pub(super) async fn share_pending(&self) {
        let waiting = std::mem::take(&mut *self.pending_origins());
        if waiting.is_empty() {
            return;
        }
        let (mut shared, total) = (0, waiting.len());
        for (repository, project, record) in waiting {
            match self.put_origin(&repository, &project, &record).await {
                Ok(()) => shared += 1,
                Err(_) => self.keep_for_later((repository, project, record)),
            }
        }
        tracing::info!(bucket = %self.name, shared, total, "shared the package origin records that waited for the bucket");
    }

    fn keep_for_later(&self, pending: Pending) {
        let mut waiting = self.pending_origins();
        if waiting.len() < PENDING_LIMIT {
            waiting.push(pending);
        } else {
            tracing::warn!(
                bucket = %self.name,
                repository = %pending.0,
                package = %pending.1,
                "too many package origin records wait for the shared bucket; this one is \
                 dropped, and other replicas may accept an upload of the package"
            );
        }
    }

    fn pending_origins(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        self.pending_origins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn put_origin(
        &self,
        repository: &str,
        project: &str,
        record: &OriginRecord,
    ) -> Result<(), SharedError> {
        let key = self.origin_key(repository, project);
        let body = serde_json::to_vec(record).map_err(|e| self.local(&key, e))?;
        // Made already by another replica: theirs was first and stands.
        self.create(&key, body).await.map(|_| ())
    }

    /// The record of `project` in `repository` in the bucket, if any replica made one.
    pub async fn origin(
        &self,
        repository: &str,
        project: &str,
    ) -> Result<Option<OriginRecord>, SharedError> {
        self.reachable()?;
        let key = self.origin_key(repository, project);
        let path = ObjectPath::from(key.as_str());
        let found = match self.bucket.get_opts(&path, GetOptions::default()).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => {
                self.note(None);
                return Ok(None);
            }
            Err(source) => return Err(self.failed(&key)(source)),
        };
        let bytes = found.bytes().await.map_err(self.failed(&key))?;
        match serde_json::from_slice(&bytes) {
            Ok(record) => Ok(Some(record)),
            Err(_) => Err(SharedError::UnreadableOrigin {
                bucket: self.name.clone(),
                key,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_keyed_by_repository_and_project_under_the_prefix() {
        let shared = Shared::open(&super::super::tests::config("fleet-a/")).unwrap();
        assert_eq!(
            shared.origin_key("pypi", "acme-internal"),
            "fleet-a/origins/pypi/acme-internal"
        );
    }
}
