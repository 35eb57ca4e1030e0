//! A remote repository: the pages and files of one upstream index, pulled through on demand.
//!
//! This is where an upstream's untrusted bytes become a typed [`ProjectPage`], and where a file
//! request is matched against the page that advertised it, so that wheelgate only ever fetches
//! URLs an upstream page listed, and checks each file against the digest that page declared.
//!
//! Parsed pages are kept in memory for `index_ttl` (and "no such project" for `negative_ttl`), so
//! that pip's page request and the file requests that follow it cost one upstream round trip.
//! Concurrent requests for one page share one upstream fetch; the fetch runs in its own task so
//! a client hanging up does not cancel it for the others.

pub mod verify;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use moka::future::Cache;
use tokio::sync::Semaphore;

use crate::config::{RemoteConfig, RepoName};
use crate::simple::digest::{FileKey, Sha256Digest};
use crate::simple::filename::DistFilename;
use crate::simple::name::ProjectName;
use crate::simple::page::{
    parse_index_html, parse_index_json, parse_project_html, parse_project_json, CoreMetadata,
    FileEntry, PageError, ProjectIndex, ProjectPage,
};
use crate::upstream::{AuthSettings, PageFetch, Upstream, UpstreamError, UpstreamSettings};

pub use verify::{TransferError, Verified};

/// What wheelgate asks an upstream for: PEP 691 JSON first, HTML as a fallback.
const UPSTREAM_ACCEPT: &str = "application/vnd.pypi.simple.v1+json, \
     application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1";

/// The largest project page accepted from an upstream. The biggest real pages (projects with
/// thousands of nightly wheels) are a few MiB.
const PROJECT_PAGE_LIMIT: usize = 64 << 20;

/// The largest root index accepted. A public index lists hundreds of thousands of projects.
const INDEX_PAGE_LIMIT: usize = 256 << 20;

/// How many project pages are kept parsed in memory.
const PAGE_CACHE_ENTRIES: u64 = 10_000;

/// Why a remote repository could not answer.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(
        "repository {repo} is offline (it has no upstream url) and holds no copy of {what}; \
         set its `url` in proxy.toml to fetch from an upstream"
    )]
    Offline { repo: RepoName, what: String },
    #[error("project {project} was not found in repository {repo} (its upstream has no such project)")]
    ProjectNotFound { repo: RepoName, project: ProjectName },
    #[error(
        "repository {repo} has no file {filename} for project {project} with key {key}; \
         the index page may have changed: reload it"
    )]
    FileNotFound {
        repo: RepoName,
        project: ProjectName,
        filename: String,
        key: String,
    },
    #[error("the index page of {project} in repository {repo} offers no core metadata for {filename}")]
    NoMetadata {
        repo: RepoName,
        project: ProjectName,
        filename: String,
    },
    #[error("repository {repo}: {source}")]
    Upstream {
        repo: RepoName,
        #[source]
        source: UpstreamError,
    },
    #[error("repository {repo}: {source}")]
    BadPage {
        repo: RepoName,
        #[source]
        source: PageError,
    },
    #[error("repository {repo}: the upstream answered 304 Not Modified to {url}, which was not a conditional request")]
    UnexpectedNotModified { repo: RepoName, url: String },
    #[error("repository {repo}: the upstream fetch task failed: {reason}")]
    Task { repo: RepoName, reason: String },
    /// One failed fetch, reported to every request that waited on it.
    #[error(transparent)]
    Shared(Arc<RemoteError>),
}

impl RemoteError {
    /// The HTTP status a client gets for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            RemoteError::Offline { .. }
            | RemoteError::ProjectNotFound { .. }
            | RemoteError::FileNotFound { .. }
            | RemoteError::NoMetadata { .. } => StatusCode::NOT_FOUND,
            RemoteError::Upstream { source, .. } => source.status(),
            RemoteError::BadPage { .. } | RemoteError::UnexpectedNotModified { .. } => {
                StatusCode::BAD_GATEWAY
            }
            RemoteError::Task { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            RemoteError::Shared(inner) => inner.status(),
        }
    }
}

/// A project page as last fetched, or the fact that the upstream has no such project.
#[derive(Debug)]
enum PageState {
    Found(Arc<ProjectPage>),
    Missing,
}

/// Pages expire after `index_ttl`; "missing" answers after the shorter `negative_ttl`, so a
/// project published upstream a minute ago becomes visible soon.
struct PageExpiry {
    found: Duration,
    missing: Duration,
}

impl moka::Expiry<ProjectName, Arc<PageState>> for PageExpiry {
    fn expire_after_create(
        &self,
        _key: &ProjectName,
        value: &Arc<PageState>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(match **value {
            PageState::Found(_) => self.found,
            PageState::Missing => self.missing,
        })
    }
}

/// A file that an upstream is sending, checked as it passes.
pub struct OpenFile {
    pub content_length: Option<u64>,
    /// The digest the bytes are verified against, when the page declared one.
    pub sha256: Option<Sha256Digest>,
    pub body: Verified<crate::upstream::FileBody>,
}

/// What is known about a file without fetching it (for HEAD).
pub struct FileInfo {
    pub content_length: Option<u64>,
    pub sha256: Option<Sha256Digest>,
}

/// One remote repository.
pub struct Remote {
    name: RepoName,
    upstream: Option<Upstream>,
    pages: Cache<ProjectName, Arc<PageState>>,
    index: Cache<(), Arc<ProjectIndex>>,
}

impl Remote {
    /// Builds the repository and its upstream client. Nothing is fetched yet.
    pub fn new(name: RepoName, config: &RemoteConfig) -> Result<Remote, UpstreamError> {
        let upstream = match &config.url {
            Some(url) if !config.offline => Some(Upstream::new(UpstreamSettings {
                repository: name.to_string(),
                url: url.clone(),
                connect_timeout: config.connect_timeout,
                first_byte_timeout: config.first_byte_timeout,
                idle_timeout: config.idle_timeout,
                retries: config.retries,
                ca_file: config.ca_file.clone(),
                native_roots: config.native_roots,
                auth: config.auth.as_ref().map(|auth| AuthSettings {
                    username: auth.username.clone(),
                    password_file: auth.password_file.clone(),
                    auth_hosts: auth.auth_hosts.clone(),
                }),
            })?),
            _ => None,
        };
        let pages = Cache::builder()
            .max_capacity(PAGE_CACHE_ENTRIES)
            .expire_after(PageExpiry {
                found: config.index_ttl,
                missing: config.negative_ttl,
            })
            .build();
        let index = Cache::builder().max_capacity(1).time_to_live(config.index_ttl).build();
        Ok(Remote {
            name,
            upstream,
            pages,
            index,
        })
    }

    pub fn name(&self) -> &RepoName {
        &self.name
    }

    /// True when the repository has no upstream to fetch from.
    pub fn is_offline(&self) -> bool {
        self.upstream.is_none()
    }

    /// The upstream root, for the start-up log and `wheelgate check`.
    pub fn upstream_root(&self) -> Option<&url::Url> {
        self.upstream.as_ref().map(Upstream::root)
    }

    /// The project page, from memory or from the upstream.
    pub async fn project_page(&self, project: &ProjectName) -> Result<Arc<ProjectPage>, RemoteError> {
        let Some(upstream) = self.upstream.clone() else {
            return Err(RemoteError::Offline {
                repo: self.name.clone(),
                what: format!("the page of {project}"),
            });
        };
        let repo = self.name.clone();
        let name = project.clone();
        let state = self
            .pages
            .try_get_with(project.clone(), async move {
                // A spawned task, so that the fetch survives the client that started it.
                tokio::spawn(fetch_project(upstream, repo.clone(), name))
                    .await
                    .map_err(|e| RemoteError::Task {
                        repo,
                        reason: e.to_string(),
                    })?
            })
            .await
            .map_err(RemoteError::Shared)?;
        match &*state {
            PageState::Found(page) => Ok(page.clone()),
            PageState::Missing => Err(RemoteError::ProjectNotFound {
                repo: self.name.clone(),
                project: project.clone(),
            }),
        }
    }

    /// The list of projects the upstream offers.
    pub async fn index(&self) -> Result<Arc<ProjectIndex>, RemoteError> {
        let Some(upstream) = self.upstream.clone() else {
            return Err(RemoteError::Offline {
                repo: self.name.clone(),
                what: "the project index".to_owned(),
            });
        };
        let repo = self.name.clone();
        self.index
            .try_get_with((), async move {
                tokio::spawn(fetch_index(upstream, repo.clone()))
                    .await
                    .map_err(|e| RemoteError::Task {
                        repo,
                        reason: e.to_string(),
                    })?
            })
            .await
            .map_err(RemoteError::Shared)
    }

    /// Finds the entry a file URL refers to on the current page of its project.
    async fn entry(
        &self,
        project: &ProjectName,
        key: &FileKey,
        filename: &DistFilename,
    ) -> Result<(Arc<ProjectPage>, usize), RemoteError> {
        let page = self.project_page(project).await?;
        let position = page
            .files
            .iter()
            .position(|f| f.filename.as_str() == filename.as_str() && f.key() == *key)
            .ok_or_else(|| RemoteError::FileNotFound {
                repo: self.name.clone(),
                project: project.clone(),
                filename: filename.as_str().to_owned(),
                key: key.to_string(),
            })?;
        Ok((page, position))
    }

    /// What a client would receive for a file, without fetching it.
    pub async fn file_info(
        &self,
        project: &ProjectName,
        key: &FileKey,
        filename: &DistFilename,
        metadata: bool,
    ) -> Result<FileInfo, RemoteError> {
        let (page, position) = self.entry(project, key, filename).await?;
        let entry = &page.files[position];
        if metadata {
            let sha256 = self.metadata_digest(project, entry)?;
            return Ok(FileInfo {
                content_length: None,
                sha256,
            });
        }
        Ok(FileInfo {
            content_length: entry.size,
            sha256: entry.sha256,
        })
    }

    fn metadata_digest(
        &self,
        project: &ProjectName,
        entry: &FileEntry,
    ) -> Result<Option<Sha256Digest>, RemoteError> {
        match &entry.core_metadata {
            CoreMetadata::Present { sha256 } => Ok(*sha256),
            CoreMetadata::Absent => Err(RemoteError::NoMetadata {
                repo: self.name.clone(),
                project: project.clone(),
                filename: entry.filename.as_str().to_owned(),
            }),
        }
    }

    /// Starts streaming a file (or its PEP 658 metadata) from the upstream.
    ///
    /// `fetch_slots` bounds how many upstream transfers run at once; the permit is held by the
    /// returned body until the transfer ends.
    pub async fn open_file(
        &self,
        project: &ProjectName,
        key: &FileKey,
        filename: &DistFilename,
        metadata: bool,
        fetch_slots: &Arc<Semaphore>,
    ) -> Result<OpenFile, RemoteError> {
        let (page, position) = self.entry(project, key, filename).await?;
        let entry = &page.files[position];
        let Some(upstream) = &self.upstream else {
            return Err(RemoteError::Offline {
                repo: self.name.clone(),
                what: entry.filename.as_str().to_owned(),
            });
        };
        let (url, expected) = if metadata {
            let digest = self.metadata_digest(project, entry)?;
            (metadata_url(&entry.url), digest)
        } else {
            (entry.url.clone(), entry.sha256)
        };
        let permit = fetch_slots.clone().acquire_owned().await.ok();
        let fetch = upstream.fetch_file(&url).await.map_err(|source| RemoteError::Upstream {
            repo: self.name.clone(),
            source,
        })?;
        let what = if metadata {
            format!("{}.metadata", entry.filename.as_str())
        } else {
            entry.filename.as_str().to_owned()
        };
        Ok(OpenFile {
            content_length: fetch.content_length,
            sha256: expected,
            body: Verified::new(fetch.body, expected, what, permit),
        })
    }
}

/// The PEP 658 location of a file's core metadata: the file URL with `.metadata` appended to
/// its path (any query string stays where it is).
fn metadata_url(file: &url::Url) -> url::Url {
    let mut url = file.clone();
    let path = format!("{}.metadata", file.path());
    url.set_path(&path);
    url
}

/// The upstream URL of a project page: `<root><project>/`. A normalised project name is
/// `[a-z0-9-]+`, so appending it to the root (which ends with '/') is always a valid URL.
fn project_url(upstream: &Upstream, project: &ProjectName) -> url::Url {
    let mut url = upstream.root().clone();
    let path = format!("{}{project}/", url.path());
    url.set_path(&path);
    url
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| ct.to_ascii_lowercase().contains("json"))
}

async fn fetch_project(
    upstream: Upstream,
    repo: RepoName,
    project: ProjectName,
) -> Result<Arc<PageState>, RemoteError> {
    let url = project_url(&upstream, &project);
    let fetch = match upstream.fetch_page(&url, UPSTREAM_ACCEPT, None, PROJECT_PAGE_LIMIT).await {
        Ok(fetch) => fetch,
        Err(e) if e.is_not_found() => return Ok(Arc::new(PageState::Missing)),
        Err(source) => return Err(RemoteError::Upstream { repo, source }),
    };
    let PageFetch::Fresh {
        final_url,
        content_type,
        body,
        elapsed,
        ..
    } = fetch
    else {
        // We sent no validators, so a 304 is the upstream's mistake.
        return Err(RemoteError::UnexpectedNotModified {
            repo,
            url: crate::upstream::RedactedUrl::new(&url).to_string(),
        });
    };
    let page = parse_project(&body, content_type.as_deref(), &final_url, &project).map_err(
        |source| RemoteError::BadPage {
            repo: repo.clone(),
            source,
        },
    )?;
    tracing::debug!(
        repository = %repo,
        project = %project,
        files = page.files.len(),
        upstream_ms = elapsed.as_millis() as u64,
        "fetched project page"
    );
    Ok(Arc::new(PageState::Found(Arc::new(page))))
}

fn parse_project(
    body: &Bytes,
    content_type: Option<&str>,
    url: &url::Url,
    project: &ProjectName,
) -> Result<ProjectPage, PageError> {
    if is_json(content_type) {
        parse_project_json(body, url, project)
    } else {
        parse_project_html(body, url, project)
    }
}

async fn fetch_index(upstream: Upstream, repo: RepoName) -> Result<Arc<ProjectIndex>, RemoteError> {
    let url = upstream.root().clone();
    let fetch = upstream
        .fetch_page(&url, UPSTREAM_ACCEPT, None, INDEX_PAGE_LIMIT)
        .await
        .map_err(|source| RemoteError::Upstream {
            repo: repo.clone(),
            source,
        })?;
    let PageFetch::Fresh {
        content_type, body, ..
    } = fetch
    else {
        return Err(RemoteError::UnexpectedNotModified {
            repo,
            url: crate::upstream::RedactedUrl::new(&url).to_string(),
        });
    };
    let index = if is_json(content_type.as_deref()) {
        parse_index_json(&body)
    } else {
        parse_index_html(&body)
    };
    index.map(Arc::new).map_err(|source| RemoteError::BadPage { repo, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_url_appends_to_the_path() {
        let url = url::Url::parse("https://files.example.invalid/a/b/x-1.0-py3-none-any.whl?sig=1")
            .unwrap();
        assert_eq!(
            metadata_url(&url).as_str(),
            "https://files.example.invalid/a/b/x-1.0-py3-none-any.whl.metadata?sig=1"
        );
    }

    #[test]
    fn json_detection() {
        assert!(is_json(Some("application/vnd.pypi.simple.v1+json")));
        assert!(!is_json(Some("text/html; charset=utf-8")));
        assert!(!is_json(None));
    }
}
