//! A hosted repository: the packages published to wheelgate itself (SPEC §1), with `twine
//! upload` or `uv publish`, kept in the store and never fetched from anywhere.
//!
//! Its pages are built from the store's upload records, so a file is listed the moment its upload
//! is acknowledged (`uv publish --check-url` reads the page before every upload). A page is kept
//! in memory until the next upload anywhere (the store's upload epoch changes), which costs one
//! catalog scan per project after an upload and nothing on a warm request.
//!
//! Publishing is in `publish`: the checks that need the store (a filename taken by other bytes is
//! a 409, the same bytes again a 200) and the commit, durable before the 200.

mod publish;

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use http::StatusCode;
use moka::sync::Cache;

use super::cached::{CacheStatus, Cached, PageView};
use super::file::{FileBody, FileInfo, Located, ServedFile};
use super::{Description, Kind, ServeError};
use crate::config::RepoName;
use crate::simple::digest::Sha256Digest;
use crate::simple::filename::DistFilename;
use crate::simple::name::ProjectName;
use crate::simple::page::{
    CoreMetadata, FileEntry, ProjectIndex, ProjectPage, ProjectStatus, Yanked,
};
use crate::simple::part::FilePart;
use crate::store::{Store, StoreError, Upload};

pub use publish::{NewUpload, Published};

mod sync;

/// How many projects' pages a hosted repository keeps in memory. Pages are rebuilt from the
/// catalog cheaply; this only bounds memory.
const PAGES_KEPT: u64 = 10_000;

/// Why a hosted repository could not answer.
#[derive(Debug, thiserror::Error)]
pub enum HostedError {
    #[error(
        "project {project} has no files in hosted repository {repo}; publish it there with \
         `twine upload` or `uv publish`"
    )]
    ProjectNotFound {
        repo: RepoName,
        project: ProjectName,
    },
    #[error(
        "the index page of {project} in repository {repo} offers no core metadata for {filename}"
    )]
    NoMetadata {
        repo: RepoName,
        project: ProjectName,
        filename: String,
    },
    #[error(
        "the stored body of {filename} in hosted repository {repo} is missing from the store; \
         run `wheelgate cache verify` and publish the file again"
    )]
    BodyMissing { repo: RepoName, filename: String },
    #[error(
        "hosted repository {repo} has no provenance for {filename}: files published to wheelgate \
         carry no PEP 740 attestations"
    )]
    NoProvenance { repo: RepoName, filename: String },
    #[error(
        "File already exists: {filename} is already in repository {repo} with different \
         content; publish a new version instead (files are immutable once published)"
    )]
    Exists { repo: RepoName, filename: String },
    #[error("hosted repository {repo}: the store failed: {source}")]
    Store {
        repo: RepoName,
        #[source]
        source: StoreError,
    },
    #[error("hosted repository {repo}: a store task failed: {reason}")]
    Task { repo: RepoName, reason: String },
    #[error(
        "hosted repository {repo} cannot publish now: the bucket the replicas share is \
         unreachable ({reason}); nothing was published, retry when it is back"
    )]
    SharedUnavailable { repo: RepoName, reason: String },
}

impl HostedError {
    pub fn status(&self) -> StatusCode {
        match self {
            HostedError::ProjectNotFound { .. }
            | HostedError::NoMetadata { .. }
            | HostedError::NoProvenance { .. } => StatusCode::NOT_FOUND,
            HostedError::Exists { .. } => StatusCode::CONFLICT,
            HostedError::SharedUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            HostedError::Store { source, .. } if source.is_disk_full() => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            HostedError::BodyMissing { .. }
            | HostedError::Store { .. }
            | HostedError::Task { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A page built from the catalog, with the upload epoch it is current for.
type Kept<T> = (u64, Arc<Cached<T>>);

/// A project's page, or that it has none, with the upload epoch that is current for.
type KeptPage = (u64, Option<Arc<Cached<ProjectPage>>>);

/// The projects a listing of the shared bucket found, sorted.
type BucketProjects = Arc<Vec<ProjectName>>;

/// One hosted repository.
pub struct Hosted {
    name: RepoName,
    store: Store,
    pages: Cache<ProjectName, KeptPage, foldhash::fast::RandomState>,
    /// The project list with the bucket's projects it was built with (see `bucket_projects`).
    index: Mutex<Option<(BucketProjects, Kept<ProjectIndex>)>>,
    /// The projects the shared bucket lists for this repository, and when they were listed.
    listed: Mutex<Option<(Instant, BucketProjects)>>,
    /// The projects whose uploads were taken in from the shared bucket in the last
    /// [`crate::shared::SYNC_INTERVAL`] (see `sync`).
    synced: Cache<ProjectName, (), foldhash::fast::RandomState>,
}

impl Hosted {
    pub fn new(name: RepoName, store: Store) -> Hosted {
        Hosted {
            name,
            store,
            pages: Cache::builder()
                .max_capacity(PAGES_KEPT)
                .build_with_hasher(foldhash::fast::RandomState::default()),
            index: Mutex::new(None),
            listed: Mutex::new(None),
            synced: Cache::builder()
                .max_capacity(PAGES_KEPT)
                .time_to_live(crate::shared::SYNC_INTERVAL)
                .build_with_hasher(foldhash::fast::RandomState::default()),
        }
    }

    pub fn name(&self) -> &RepoName {
        &self.name
    }

    /// Runs a store call off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, HostedError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || call(store))
            .await
            .map_err(|join| HostedError::Task {
                repo: self.name.clone(),
                reason: join.to_string(),
            })?
            .map_err(|source| HostedError::Store {
                repo: self.name.clone(),
                source,
            })
    }

    async fn page(&self, project: &ProjectName) -> Result<PageView<ProjectPage>, HostedError> {
        self.page_if_any(project)
            .await?
            .ok_or_else(|| HostedError::ProjectNotFound {
                repo: self.name.clone(),
                project: project.clone(),
            })
    }

    /// The project page, or `None` when nothing of the project is published here: a group asks
    /// every member for every page, and an absent project is an answer there, not an error to
    /// build.
    pub(crate) async fn page_if_any(
        &self,
        project: &ProjectName,
    ) -> Result<Option<PageView<ProjectPage>>, HostedError> {
        self.sync(project).await;
        let epoch = self.store.upload_epoch();
        if let Some((kept_epoch, kept)) = self.pages.get(project) {
            if kept_epoch == epoch {
                return Ok(kept.map(|cached| PageView::new(cached, CacheStatus::Hit)));
            }
        }
        let (repo, name) = (self.name.to_string(), project.to_string());
        let uploads = self
            .blocking(move |store| store.uploads(&repo, &name))
            .await?;
        let files: Vec<FileEntry> = uploads
            .iter()
            .filter_map(|upload| self.entry(project, upload))
            .collect();
        if files.is_empty() {
            // Remembered too: a group asks each member for every project it is asked for, and
            // most are not published here.
            self.pages.insert(project.clone(), (epoch, None));
            return Ok(None);
        }
        let mut versions: Vec<String> = Vec::new();
        for file in &files {
            if let Some(version) = file.filename.version() {
                if !versions.iter().any(|v| v == version) {
                    versions.push(version.to_owned());
                }
            }
        }
        let weight = files.len() * 512 + 1024;
        let page = ProjectPage {
            name: project.clone(),
            files,
            versions,
            status: ProjectStatus::default(),
            dropped: 0,
        };
        let cached = Arc::new(Cached::new(
            Arc::new(page),
            SystemTime::now(),
            CacheStatus::Hit,
            weight,
        ));
        self.pages
            .insert(project.clone(), (epoch, Some(cached.clone())));
        Ok(Some(PageView::new(cached, CacheStatus::Hit)))
    }

    /// The page entry of one upload; `None` (logged) when its body has gone from the store.
    fn entry(&self, project: &ProjectName, upload: &Upload) -> Option<FileEntry> {
        let filename = match DistFilename::parse(&upload.filename) {
            Ok(filename) => filename,
            Err(error) => {
                tracing::warn!(repository = %self.name, package = %project, %error, "skipping an upload whose recorded filename is not valid");
                return None;
            }
        };
        if !self.store.contains(&upload.sha256) {
            tracing::warn!(
                repository = %self.name,
                package = %project,
                file = %upload.filename,
                "an upload's body is missing from the store; it is left out of the page"
            );
            return None;
        }
        let url = match hosted_url(&self.name, &upload.sha256, &filename) {
            Ok(url) => url,
            Err(error) => {
                tracing::warn!(repository = %self.name, package = %project, file = %upload.filename, %error, "skipping an upload whose filename cannot be named in a URL");
                return None;
            }
        };
        Some(FileEntry {
            url,
            filename,
            sha256: Some(upload.sha256),
            other_hashes: Vec::new(),
            requires_python: upload.requires_python.clone(),
            yanked: Yanked::No,
            core_metadata: match upload.core_metadata {
                Some(digest) => CoreMetadata::Present {
                    sha256: Some(digest),
                },
                None => CoreMetadata::Absent,
            },
            size: Some(upload.size),
            upload_time: Some(rfc3339(upload.uploaded_at)),
            provenance: None,
            origin: None,
        })
    }

    /// The project list: the projects this replica has taken in, and with a shared bucket the
    /// projects it lists (see `bucket_projects`).
    async fn project_list(&self) -> Result<PageView<ProjectIndex>, HostedError> {
        let in_bucket = self.bucket_projects().await;
        let epoch = self.store.upload_epoch();
        if let Some((kept_bucket, (kept_epoch, cached))) = crate::lock(&self.index).clone() {
            if kept_epoch == epoch && kept_bucket == in_bucket {
                return Ok(PageView::new(cached, CacheStatus::Hit));
            }
        }
        let repo = self.name.to_string();
        let names = self
            .blocking(move |store| store.hosted_projects(&repo))
            .await?;
        let projects = names
            .iter()
            .filter_map(|name| ProjectName::parse(name).ok())
            .chain(in_bucket.iter().cloned())
            .collect();
        let index = ProjectIndex::from_unsorted(projects);
        let weight = index.projects.len() * 64 + 1024;
        let cached = Arc::new(Cached::new(
            Arc::new(index),
            SystemTime::now(),
            CacheStatus::Hit,
            weight,
        ));
        *crate::lock(&self.index) = Some((in_bucket, (epoch, cached.clone())));
        Ok(PageView::new(cached, CacheStatus::Hit))
    }

    /// The projects of this repository the shared bucket lists, if there is one: listed at most
    /// once per [`crate::shared::SYNC_INTERVAL`] (requests meanwhile take the last listing), and
    /// not while the bucket is known to be unreachable or when listing fails (logged): the list
    /// then names what this replica has and what the bucket listed last. A project listed here
    /// and not yet taken in is taken in when its page is asked for.
    async fn bucket_projects(&self) -> BucketProjects {
        let Some(shared) = self.store.shared().cloned() else {
            return Arc::default();
        };
        let last = {
            let mut listed = crate::lock(&self.listed);
            let last = listed
                .as_ref()
                .map(|(_, names)| names.clone())
                .unwrap_or_default();
            let fresh = listed
                .as_ref()
                .is_some_and(|(at, _)| at.elapsed() < crate::shared::SYNC_INTERVAL);
            if fresh || shared.state() != crate::shared::BucketState::Up {
                return last;
            }
            *listed = Some((Instant::now(), last.clone()));
            last
        };
        match shared.hosted_projects(self.name.as_ref()).await {
            Ok(names) => {
                let mut names: Vec<ProjectName> = names
                    .iter()
                    .filter_map(|name| ProjectName::parse(name).ok())
                    .collect();
                names.sort_unstable();
                names.dedup();
                let names = Arc::new(names);
                *crate::lock(&self.listed) = Some((Instant::now(), names.clone()));
                names
            }
            Err(error) => {
                tracing::warn!(repository = %self.name, %error, "could not list the shared bucket's projects; the project list names this replica's");
                last
            }
        }
    }

    /// The digest of a part of a located file: the file or its metadata (a hosted file has no
    /// provenance).
    fn digest(&self, located: &Located, part: FilePart) -> Result<Sha256Digest, HostedError> {
        let entry = located.entry();
        match part {
            FilePart::File => entry.sha256.ok_or_else(|| HostedError::BodyMissing {
                repo: self.name.clone(),
                filename: entry.filename.as_str().to_owned(),
            }),
            FilePart::Metadata => match entry.core_metadata {
                CoreMetadata::Present {
                    sha256: Some(digest),
                } => Ok(digest),
                _ => Err(HostedError::NoMetadata {
                    repo: self.name.clone(),
                    project: located.page.value.name.clone(),
                    filename: entry.filename.as_str().to_owned(),
                }),
            },
            FilePart::Provenance => Err(HostedError::NoProvenance {
                repo: self.name.clone(),
                filename: entry.filename.as_str().to_owned(),
            }),
        }
    }

    fn missing(&self, located: &Located, part: FilePart) -> HostedError {
        HostedError::BodyMissing {
            repo: self.name.clone(),
            filename: part.of(&located.entry().filename).to_string(),
        }
    }
}

impl Kind for Hosted {
    async fn index(&self) -> Result<PageView<ProjectIndex>, ServeError> {
        Ok(self.project_list().await?)
    }

    async fn project_page(
        &self,
        project: &ProjectName,
    ) -> Result<PageView<ProjectPage>, ServeError> {
        Ok(self.page(project).await?)
    }

    fn file_info(&self, located: &Located, part: FilePart) -> Result<FileInfo, ServeError> {
        let digest = self.digest(located, part)?;
        let stored = self.store.contains(&digest);
        if !stored {
            return Err(self.missing(located, part).into());
        }
        let size = match part {
            FilePart::File => located.entry().size,
            FilePart::Metadata | FilePart::Provenance => {
                self.store.artifact(&digest).map(|artifact| artifact.size)
            }
        };
        Ok(FileInfo {
            size,
            sha256: Some(digest),
            stored,
        })
    }

    async fn open(&self, located: &Located, part: FilePart) -> Result<ServedFile, ServeError> {
        let digest = self.digest(located, part)?;
        let artifact = self
            .store
            .artifact(&digest)
            .ok_or_else(|| self.missing(located, part))?;
        Ok(ServedFile {
            status: CacheStatus::Hit,
            sha256: Some(artifact.sha256),
            body: FileBody::Stored {
                size: artifact.size,
                body: artifact.body,
            },
        })
    }

    fn describe(&self) -> Description {
        Description {
            kind: "hosted",
            detail: format!(
                "packages published to it (twine upload or uv publish to /{}/)",
                self.name
            ),
            online: true,
        }
    }
}

/// The `url` of a hosted file's page entry. The page model describes files by where they can be
/// fetched; a hosted file is fetched from nowhere, so this names it in a scheme nothing fetches.
/// Pages never show it: links are rendered from the digest.
fn hosted_url(
    repo: &RepoName,
    sha256: &Sha256Digest,
    filename: &DistFilename,
) -> Result<url::Url, url::ParseError> {
    url::Url::parse(&format!(
        "wheelgate-hosted://{repo}/{sha256}/{}",
        filename.as_str()
    ))
}

/// An upload time as PEP 700 writes it: RFC 3339 in UTC, with microseconds.
fn rfc3339(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_times_are_rfc3339_utc() {
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(time), "2023-11-14T22:13:20.123000Z");
    }
}
