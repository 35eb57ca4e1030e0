//! A remote repository: the pages and files of one upstream index, pulled through and kept.
//!
//! This is where an upstream's untrusted bytes become a typed [`ProjectPage`], and where a file
//! request is matched against the page that advertised it, so that wheelgate only ever fetches
//! URLs an upstream page listed, and checks each file against the digest and the size that page
//! declared (and `max_file_size`, see [`size`]).
//!
//! Pages: the upstream's body is kept in the store with its validators; the parsed page (and its
//! renderings) in memory. A page is fresh for `index_ttl`, then revalidated with the upstream's
//! validators; when the upstream fails, the stored copy is served (stale-if-error); an offline
//! repository serves only the store. Concurrent requests for one page share one load, which runs
//! in its own task so that a client hanging up does not cancel it for the others.
//!
//! Files: content-addressed in the store; a file not yet stored is downloaded once however many
//! clients ask (the flights of [`flight`]), streamed to all of them as it arrives, and
//! committed only once its sha256 matches. A file's PEP 658 metadata and PEP 740 provenance go the
//! same way, from the location its page gives (provenance has no declared digest, so it is keyed
//! by its upstream URL and pinned to the digest of its first download, SPEC §4).

mod chunks;
pub mod flight;
mod loads;
pub mod size;

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::StatusCode;
use moka::sync::Cache;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{RemoteConfig, RepoName};
use crate::metrics::{Metrics, RepoMetrics, SharedOutcome, UpstreamOutcome};
use crate::repository::cached::{CacheStatus, Cached, PageView};
use crate::repository::file::{FileBody, FileInfo, Located, ServedFile};
use crate::repository::{heavy, shown_upstream, Description, Kind, ServeError};
use crate::shared::SharedArtifact;
use crate::simple::digest::{FileKey, Sha256Digest};
use crate::simple::name::ProjectName;
use crate::simple::page::{
    parse_index_html, parse_index_json, parse_project_html, parse_project_json, CoreMetadata,
    FileEntry, PageError, ProjectIndex, ProjectPage,
};
use crate::simple::part::FilePart;
use crate::store::{ArtifactRecord, NewArtifact, PageKey, Store, StoreError, StoredPage};
use crate::upstream::{
    AuthSettings, FileFetch, PageFetch, RedactedUrl, Upstream, UpstreamError, UpstreamSettings,
    Validators,
};
use flight::{Completed, DownloadError, Flights, Landed};
use futures_util::StreamExt as _;
use loads::{Loads, PageHasher};
use size::Expected;

/// What wheelgate asks an upstream for: PEP 691 JSON first, HTML as a fallback.
const UPSTREAM_ACCEPT: &str = "application/vnd.pypi.simple.v1+json, \
     application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1";

/// The largest project page accepted from an upstream. The biggest real pages (projects with
/// thousands of nightly wheels) are a few MiB.
const PROJECT_PAGE_LIMIT: usize = 64 << 20;

/// The largest root index accepted. A public index lists hundreds of thousands of projects.
const INDEX_PAGE_LIMIT: usize = 256 << 20;

/// How soon a page served stale (the upstream failing) is tried upstream again.
const STALE_RETRY: Duration = Duration::from_secs(30);

/// How long an offline repository keeps a page in memory: its store cannot change under it.
const OFFLINE_KEEP: Duration = Duration::from_secs(24 * 3600);

/// Why a remote repository could not answer.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(
        "repository {repo} is offline and its store holds no copy of {what}; \
         give it an upstream `url` (and remove `offline = true`) in proxy.toml to fetch it"
    )]
    Offline { repo: RepoName, what: String },
    #[error(
        "project {project} was not found in repository {repo} (its upstream has no such project)"
    )]
    ProjectNotFound {
        repo: RepoName,
        project: ProjectName,
    },
    /// The page offers no such part of the file (its metadata or its provenance).
    #[error(
        "the index page of {project} in repository {repo} offers no {} for {filename}",
        part.what()
    )]
    NotOffered {
        repo: RepoName,
        project: ProjectName,
        filename: String,
        part: FilePart,
    },
    #[error("repository {repo}: {source}")]
    Upstream {
        repo: RepoName,
        #[source]
        source: UpstreamError,
    },
    #[error("repository {repo}: {source}")]
    Download {
        repo: RepoName,
        #[source]
        source: DownloadError,
    },
    #[error("repository {repo}: {source}")]
    BadPage {
        repo: RepoName,
        #[source]
        source: PageError,
    },
    #[error("repository {repo}: the store failed: {source}")]
    Store {
        repo: RepoName,
        #[source]
        source: StoreError,
    },
    #[error(
        "repository {repo}: the upstream has no project index at its root url (it answered 404)"
    )]
    NoIndex { repo: RepoName },
    #[error("repository {repo}: the upstream answered 304 Not Modified to {url}, which was not a conditional request")]
    UnexpectedNotModified { repo: RepoName, url: String },
    #[error("repository {repo}: the upstream fetch task failed: {reason}")]
    Task { repo: RepoName, reason: String },
    /// One failed load, reported to every request that waited on it.
    #[error(transparent)]
    Shared(Arc<RemoteError>),
}

/// An artifact from the shared bucket as a fetch, so that the flight streams, verifies and
/// commits it as it would the upstream's (`url`, the upstream's link, names it where the bucket
/// URL cannot be written).
fn bucket_fetch(found: SharedArtifact, url: &url::Url) -> FileFetch {
    let location = found.location.unwrap_or_else(|| url.clone());
    let shown = RedactedUrl::new(&location);
    let body = found
        .body
        .map(move |chunk| {
            chunk.map_err(|error| UpstreamError::Protocol {
                url: shown.clone(),
                reason: error.to_string(),
            })
        })
        .boxed();
    FileFetch {
        content_length: Some(found.size),
        body: crate::upstream::FileBody::from_stream(body, &location),
        final_url: location,
    }
}

impl RemoteError {
    /// The rules of a chained wheelgate that refused, for our own `X-Wheelgate-Denied`.
    pub fn denied_by(&self) -> Option<&str> {
        match self {
            RemoteError::Upstream { source, .. } => source.denied_by(),
            RemoteError::Download {
                source: DownloadError::Upstream(source),
                ..
            } => source.denied_by(),
            RemoteError::Shared(inner) => inner.denied_by(),
            _ => None,
        }
    }

    /// True when the upstream's answer (or its absence) is the failure: the upstream client
    /// has made its retries.
    pub fn from_upstream(&self) -> bool {
        match self {
            RemoteError::Upstream { .. }
            | RemoteError::Download {
                source: DownloadError::Upstream(_),
                ..
            } => true,
            RemoteError::Shared(inner) => inner.from_upstream(),
            _ => false,
        }
    }

    /// The HTTP status a client gets for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            RemoteError::Offline { .. }
            | RemoteError::ProjectNotFound { .. }
            | RemoteError::NotOffered { .. }
            | RemoteError::NoIndex { .. } => StatusCode::NOT_FOUND,
            RemoteError::Upstream { source, .. } => source.status(),
            RemoteError::Download { source, .. } => source.status(),
            RemoteError::BadPage { .. } | RemoteError::UnexpectedNotModified { .. } => {
                StatusCode::BAD_GATEWAY
            }
            RemoteError::Store { .. } | RemoteError::Task { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            RemoteError::Shared(inner) => inner.status(),
        }
    }
}

/// A page load's outcome as kept in memory: the page, the fact that the upstream has no such
/// project, or the failure of a load that had no stored copy to fall back on (both remembered
/// for `negative_ttl`, so that the requests meanwhile get the same answer without asking the
/// upstream again). Cloning it is one reference count: a warm lookup takes it out of the cache
/// and moves it into the request's view.
enum Loaded<T> {
    Found(Arc<Cached<T>>),
    Missing,
    Failed(Arc<RemoteError>),
}

impl<T> Clone for Loaded<T> {
    fn clone(&self) -> Self {
        match self {
            Loaded::Found(cached) => Loaded::Found(cached.clone()),
            Loaded::Missing => Loaded::Missing,
            Loaded::Failed(error) => Loaded::Failed(error.clone()),
        }
    }
}

/// How many renderings of a page the memory cache counts it with: pip and uv ask for JSON, a
/// browser or an older client for HTML, and each is kept with its gzip form.
const RENDERINGS_WEIGHED: usize = 3;

/// What a remote keeps in memory for a parsed page or list: the parsed value and the
/// renderings it will be served as.
fn weight_of(held: usize, rendered_len: usize) -> usize {
    held.saturating_add(rendered_len.saturating_mul(RENDERINGS_WEIGHED))
}

/// How long a loaded page stays in memory before the next request loads it again.
#[derive(Clone, Copy)]
struct Freshness {
    ttl: Duration,
    negative_ttl: Duration,
    offline: bool,
    /// The memory the cache holds pages in: a page heavier than all of it is not kept at all.
    memory: u64,
}

impl Freshness {
    fn keep<T>(&self, loaded: &Loaded<T>) -> Duration {
        match loaded {
            Loaded::Missing | Loaded::Failed(_) => self.negative_ttl,
            // Kept, it would only push every other page out until the cache evicted it; each
            // request for it reads it again from the store (and says `miss`).
            Loaded::Found(cached) if u64::from(cached.weight) > self.memory => Duration::ZERO,
            Loaded::Found(_) if self.offline => OFFLINE_KEEP,
            Loaded::Found(cached) if cached.status == CacheStatus::Stale => {
                STALE_RETRY.min(self.ttl)
            }
            Loaded::Found(cached) => {
                let age = cached.fetched_at.elapsed().unwrap_or(Duration::ZERO);
                self.ttl.saturating_sub(age)
            }
        }
    }
}

impl<K, T> moka::Expiry<K, Loaded<T>> for Freshness {
    fn expire_after_create(
        &self,
        _key: &K,
        value: &Loaded<T>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(self.keep(value))
    }
}

fn weigh<K, T>(_key: &K, value: &Loaded<T>) -> u32 {
    match value {
        Loaded::Found(cached) => cached.weight,
        Loaded::Missing => 64,
        Loaded::Failed(_) => 512,
    }
}

/// Everything a page load needs, cloned into its task.
#[derive(Clone)]
struct Loader {
    repo: RepoName,
    upstream: Option<Upstream>,
    store: Store,
    ttl: Duration,
    meter: UpstreamMeter,
    /// The slots of `server.max_concurrent_fetches`: a page fetch holds one as a file transfer
    /// does.
    fetch_slots: Arc<Semaphore>,
}

/// Where a remote's upstream requests are counted, timed, and (when they fail) listed for the
/// status page.
#[derive(Clone)]
struct UpstreamMeter {
    metrics: Arc<Metrics>,
    repo: Arc<RepoMetrics>,
}

impl UpstreamMeter {
    /// Records one upstream request that took `elapsed`; `ok` is the outcome of a success.
    fn record<T>(
        &self,
        url: &url::Url,
        result: &Result<T, UpstreamError>,
        ok: impl FnOnce(&T) -> UpstreamOutcome,
        elapsed: Duration,
    ) {
        let outcome = match result {
            Ok(value) => ok(value),
            Err(error) if error.is_not_found() => UpstreamOutcome::NotFound,
            Err(UpstreamError::Timeout { .. }) => UpstreamOutcome::Timeout,
            Err(UpstreamError::Denied(_)) => UpstreamOutcome::Refused,
            Err(_) => UpstreamOutcome::Error,
        };
        self.metrics.record_upstream(&self.repo, outcome, elapsed);
        if let (Err(error), false) = (result, outcome.is_success()) {
            self.metrics
                .record_upstream_error(&self.repo, &RedactedUrl::new(url), error);
        }
    }
}

/// One remote repository.
pub struct Remote {
    loader: Loader,
    flights: Arc<Flights>,
    /// `server.max_file_size`.
    max_file_size: u64,
    /// Slots for concurrent upstream transfers, files and pages (`server.max_concurrent_fetches`),
    /// shared by every remote of the configuration.
    fetch_slots: Arc<Semaphore>,
    pages: Loads<ProjectName, Loaded<ProjectPage>>,
    index: Loads<(), Loaded<ProjectIndex>>,
}

/// The upstream client settings of a remote repository, or `None` when it is offline.
fn upstream_settings(name: &RepoName, config: &RemoteConfig) -> Option<UpstreamSettings> {
    let url = config.url.as_ref().filter(|_| !config.offline)?;
    Some(UpstreamSettings {
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
        file_hosts: config.file_hosts.clone(),
    })
}

impl Remote {
    /// Builds the repository and its upstream client. Nothing is fetched yet. `memory` bounds the
    /// bytes of parsed and rendered pages kept in memory; no file larger than `max_file_size`
    /// is downloaded.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: RepoName,
        config: &RemoteConfig,
        store: Store,
        flights: Arc<Flights>,
        fetch_slots: Arc<Semaphore>,
        memory: u64,
        max_file_size: u64,
        metrics: Arc<Metrics>,
    ) -> Result<Remote, UpstreamError> {
        let upstream = upstream_settings(&name, config)
            .map(Upstream::new)
            .transpose()?;
        let freshness = Freshness {
            ttl: config.index_ttl,
            negative_ttl: config.negative_ttl,
            offline: upstream.is_none(),
            memory,
        };
        let pages = Cache::builder()
            .max_capacity(memory)
            .weigher(weigh)
            .expire_after(freshness)
            .build_with_hasher(PageHasher::default());
        // The one project list is kept whatever it weighs (it is not counted in `memory`).
        let index = Cache::builder()
            .max_capacity(1)
            .expire_after(Freshness {
                memory: u64::MAX,
                ..freshness
            })
            .build_with_hasher(PageHasher::default());
        let (pages, index) = (
            Loads::new(name.clone(), pages, metrics.clone()),
            Loads::new(name.clone(), index, metrics.clone()),
        );
        let meter = UpstreamMeter {
            repo: metrics.repository(&name),
            metrics,
        };
        Ok(Remote {
            loader: Loader {
                repo: name,
                upstream,
                store,
                ttl: config.index_ttl,
                meter,
                fetch_slots: fetch_slots.clone(),
            },
            flights,
            max_file_size,
            fetch_slots,
            pages,
            index,
        })
    }

    pub fn name(&self) -> &RepoName {
        &self.loader.repo
    }

    /// The upstream root, for the start-up log and the home page; `None` when offline.
    pub fn upstream_root(&self) -> Option<&url::Url> {
        self.loader.upstream.as_ref().map(Upstream::root)
    }

    /// Drops the project's page held in memory (see [`super::Repositories::forget_page_in_memory`]).
    pub fn forget_page_in_memory(&self, project: &ProjectName) {
        self.pages.forget(project);
    }

    /// The project page, from memory, the store or the upstream.
    async fn page(&self, project: &ProjectName) -> Result<PageView<ProjectPage>, RemoteError> {
        self.page_if_any(project)
            .await?
            .ok_or_else(|| RemoteError::ProjectNotFound {
                repo: self.name().clone(),
                project: project.clone(),
            })
    }

    /// The project page, or `None` when the upstream has no such project: a group asks every
    /// member for every page, and an absent project is an answer there, not an error to build.
    pub(crate) async fn page_if_any(
        &self,
        project: &ProjectName,
    ) -> Result<Option<PageView<ProjectPage>>, RemoteError> {
        let (loaded, ran) = self
            .pages
            .get_or_load(project, || self.loader.clone().project(project.clone()))
            .await?;
        view(loaded, ran)
    }

    /// The list of projects the upstream offers.
    async fn project_list(&self) -> Result<PageView<ProjectIndex>, RemoteError> {
        let (loaded, ran) = self
            .index
            .get_or_load(&(), || self.loader.clone().index())
            .await?;
        view(loaded, ran)?.ok_or_else(|| RemoteError::NoIndex {
            repo: self.name().clone(),
        })
    }

    /// Where a part of a file is upstream, and the digest its page declared.
    fn target<'a>(
        &self,
        project: &ProjectName,
        entry: &'a FileEntry,
        part: FilePart,
    ) -> Result<(Cow<'a, url::Url>, Option<Sha256Digest>), RemoteError> {
        let offered = match part {
            FilePart::File => Some((Cow::Borrowed(&entry.url), entry.sha256)),
            FilePart::Metadata => match &entry.core_metadata {
                CoreMetadata::Present { sha256 } => {
                    Some((Cow::Owned(metadata_url(&entry.url)), *sha256))
                }
                CoreMetadata::Absent => None,
            },
            // PEP 740 declares no digest for provenance.
            FilePart::Provenance => entry
                .provenance
                .as_ref()
                .map(|url| (Cow::Borrowed(url), None)),
        };
        offered.ok_or_else(|| RemoteError::NotOffered {
            repo: self.name().clone(),
            project: project.clone(),
            filename: entry.filename.as_str().to_owned(),
            part,
        })
    }

    /// What a client would receive for a file, without fetching it.
    fn info(&self, located: &Located, part: FilePart) -> Result<FileInfo, RemoteError> {
        let entry = located.entry();
        let (url, declared) = self.target(&located.page.value.name, entry, part)?;
        let digest = declared.or_else(|| self.loader.store.pinned(&url_key(&url)));
        if let Some(artifact) = digest.and_then(|d| self.loader.store.artifact(&d)) {
            return Ok(FileInfo {
                size: Some(artifact.size),
                sha256: Some(artifact.sha256),
                stored: true,
            });
        }
        Ok(FileInfo {
            size: match part {
                FilePart::File => entry.size,
                FilePart::Metadata | FilePart::Provenance => None,
            },
            sha256: declared,
            stored: false,
        })
    }

    /// A part of a file (the file, its PEP 658 metadata or its PEP 740 provenance): from the
    /// store, or downloaded once for every client asking. The fetch slots bound concurrent
    /// upstream transfers; a slot is held until the transfer ends.
    async fn fetch(&self, located: &Located, part: FilePart) -> Result<ServedFile, RemoteError> {
        let entry = located.entry();
        let (url, declared) = self.target(&located.page.value.name, entry, part)?;
        let store = &self.loader.store;
        // A warm file with a declared digest is found without hashing its URL.
        let stored = match declared {
            Some(digest) => store.artifact(&digest),
            None => store
                .pinned(&url_key(&url))
                .and_then(|d| store.artifact(&d)),
        };
        if let Some(artifact) = stored {
            return Ok(ServedFile {
                status: CacheStatus::Hit,
                sha256: Some(artifact.sha256),
                body: FileBody::Stored {
                    size: artifact.size,
                    body: artifact.body,
                },
            });
        }
        // Boxed: a download's state is several kilobytes, and every connection's in-flight
        // request is sized to the largest path it may take; a warm file never goes here.
        Box::pin(self.download(entry, url.into_owned(), declared, part)).await
    }

    /// Downloads a file that is not stored (or joins its download under way). With replicas
    /// sharing a bucket, bytes other than the declared ones make this replica distrust the
    /// bucket's copy (a wrong copy there must not fail every replica for good), and when that is
    /// found before the first byte, the download is retried at once, from the upstream.
    async fn download(
        &self,
        entry: &FileEntry,
        url: url::Url,
        declared: Option<Sha256Digest>,
        part: FilePart,
    ) -> Result<ServedFile, RemoteError> {
        let shared = self.loader.store.shared().cloned();
        let (Some(shared), Some(digest)) = (shared, declared) else {
            return self.download_once(entry, url, declared, part).await;
        };
        match self.download_once(entry, url.clone(), declared, part).await {
            Err(RemoteError::Download { source, .. }) if source.is_wrong_bytes() => {
                shared.distrust(digest);
                self.download_once(entry, url, declared, part).await
            }
            Ok(ServedFile {
                status,
                sha256,
                body: FileBody::Arriving { length, stream },
            }) => Ok(ServedFile {
                status,
                sha256,
                body: FileBody::Arriving {
                    length,
                    stream: stream.on_wrong_bytes(move || shared.distrust(digest)),
                },
            }),
            other => other,
        }
    }

    async fn download_once(
        &self,
        entry: &FileEntry,
        url: url::Url,
        declared: Option<Sha256Digest>,
        part: FilePart,
    ) -> Result<ServedFile, RemoteError> {
        let store = &self.loader.store;
        let url_key = url_key(&url);
        let Some(upstream) = self.loader.upstream.clone() else {
            return Err(RemoteError::Offline {
                repo: self.name().clone(),
                what: entry.filename.as_str().to_owned(),
            });
        };
        let what = part.of(&entry.filename).to_string();
        let shown_url = RedactedUrl::new(&url);
        // The transfer's slot: taken by whichever request leads the download, released when
        // both the request phase and the flight (which owns `commit`) are over.
        let slot: Arc<Mutex<Option<OwnedSemaphorePermit>>> = Arc::new(Mutex::new(None));
        let slots = self.fetch_slots.clone();
        let held = slot.clone();
        let meter = self.loader.meter.clone();
        let copy_meter = meter.metrics.clone();
        let shared = store.shared().cloned();
        let from_bucket = Arc::new(AtomicBool::new(false));
        let fetched_from_bucket = from_bucket.clone();
        let bucket_repo = self.name().clone();
        let source = async move {
            let permit = slots.acquire_owned().await.ok();
            if let Ok(mut guard) = held.lock() {
                *guard = permit;
            }
            // The replicas' shared bucket first: a file any of them fetched is there. It is
            // verified against `declared` like an upstream's bytes.
            if let (Some(shared), Some(digest)) = (&shared, declared) {
                match shared.artifact(&digest).await {
                    Ok(Some(found)) => {
                        meter.metrics.record_shared(SharedOutcome::Found);
                        fetched_from_bucket.store(true, Ordering::Relaxed);
                        return Ok(bucket_fetch(found, &url));
                    }
                    Ok(None) => meter.metrics.record_shared(SharedOutcome::Missing),
                    Err(error) => {
                        meter.metrics.record_shared(SharedOutcome::Failed);
                        tracing::warn!(
                            repository = %bucket_repo,
                            %error,
                            "the shared bucket failed; fetching from the upstream instead"
                        );
                    }
                }
            }
            let started = Instant::now();
            let fetched = upstream.fetch_file(&url).await;
            meter.record(&url, &fetched, |_| UpstreamOutcome::Ok, started.elapsed());
            fetched
        };
        let record = ArtifactRecord {
            sha256: declared.unwrap_or(url_key),
            size: 0,
            repository: self.name().to_string(),
            filename: what.clone(),
            url_key: declared.is_none().then_some(url_key),
            evictable: true,
            used_at: Some(store.use_stamp()),
        };
        let committer = store.clone();
        let commit = move |completed: Completed| async move {
            let _slot = slot;
            let record = ArtifactRecord {
                sha256: completed.sha256,
                size: completed.size,
                ..record
            };
            // Writing and fsyncing the body's file happens on a blocking thread of its own, not
            // the writer's: a big file's fsync can take seconds, and many small files' fsyncs
            // overlap this way instead of queueing one behind the other.
            let store = committer.clone();
            let check = record.clone();
            let body = tokio::task::spawn_blocking(move || match completed.body {
                Landed::Memory(bytes) => store.prepare_bytes(&bytes),
                Landed::File(temp) => store.prepare(temp, &check),
            })
            .await
            .map_err(|join| format!("the commit task failed: {join}"))?
            .map(NewArtifact::Prepared)
            .map_err(|error| error.to_string())?;
            let sha256 = record.sha256;
            match committer.queue_artifact(body, record).await {
                // A writer that is gone logged nothing about this file.
                Err(error) if matches!(*error, StoreError::WriterGone) => Err(error.to_string()),
                // The writer logged its own failures.
                Err(_) => Ok(()),
                Ok(()) => {
                    // Copied to the other replicas' bucket in the background; the client's
                    // stream never waits for it.
                    if let Some(shared) = committer.shared().cloned() {
                        if !from_bucket.load(Ordering::Relaxed) {
                            let store = committer.clone();
                            tokio::spawn(async move {
                                let outcome = match shared.offer(&store, sha256).await {
                                    Ok(true) => SharedOutcome::Copied,
                                    Ok(false) => SharedOutcome::Present,
                                    Err(error) => {
                                        tracing::warn!(%error, "could not copy a file to the shared bucket");
                                        SharedOutcome::CopyFailed
                                    }
                                };
                                copy_meter.record_shared(outcome);
                            });
                        }
                    }
                    Ok(())
                }
            }
        };
        let flight_key = match declared {
            Some(digest) => FileKey::Sha256(digest),
            None => FileKey::Url(url_key),
        };
        let expected = Expected {
            sha256: declared,
            // The page's size is the file's; its metadata and provenance have none.
            size: entry.size.filter(|_| part == FilePart::File),
            max_size: self.max_file_size,
            url: shown_url.to_string(),
        };
        let download = self
            .flights
            .join(flight_key, expected, what, source, commit)
            .await
            .map_err(|source| RemoteError::Download {
                repo: self.name().clone(),
                source,
            })?;
        // A download that fails before its first byte is answered with its error (502, 504),
        // not with a 200 that breaks off at once.
        let body = download
            .body
            .started()
            .await
            .map_err(|source| RemoteError::Download {
                repo: self.name().clone(),
                source,
            })?;
        Ok(ServedFile {
            status: if download.leader {
                CacheStatus::Miss
            } else {
                CacheStatus::Hit
            },
            sha256: declared,
            body: FileBody::Arriving {
                length: download.content_length,
                stream: body,
            },
        })
    }
}

impl Kind for Remote {
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
        Ok(self.info(located, part)?)
    }

    async fn open(&self, located: &Located, part: FilePart) -> Result<ServedFile, ServeError> {
        Ok(self.fetch(located, part).await?)
    }

    fn describe(&self) -> Description {
        match self.upstream_root() {
            Some(root) => Description {
                kind: "remote",
                detail: format!("upstream {}", shown_upstream(root)),
                online: true,
            },
            None => Description {
                kind: "remote",
                detail: "offline: it has no upstream url (or offline = true) and serves only \
                         what its store holds"
                    .to_owned(),
                online: false,
            },
        }
    }
}

/// Checks that the upstream client of a remote can be built (TLS roots, CA file), without
/// building the repository.
pub fn validate(name: &RepoName, config: &RemoteConfig) -> Result<(), UpstreamError> {
    if let Some(settings) = upstream_settings(name, config) {
        Upstream::new(settings)?;
    }
    Ok(())
}

/// A request's view of a loaded entry: the load's own status for the request that ran it (a
/// page read again from the store is a `miss`: memory did not have it, and it was parsed again),
/// `hit` (or `stale`) for everyone else; `None` when the upstream has no such page, the
/// remembered failure when the load failed.
fn view<T>(loaded: Loaded<T>, ran_here: bool) -> Result<Option<PageView<T>>, RemoteError> {
    match loaded {
        Loaded::Missing => Ok(None),
        Loaded::Failed(error) => Err(RemoteError::Shared(error)),
        Loaded::Found(cached) => {
            let status = match cached.status {
                CacheStatus::Hit if ran_here => CacheStatus::Miss,
                status if ran_here => status,
                CacheStatus::Stale => CacheStatus::Stale,
                _ => CacheStatus::Hit,
            };
            Ok(Some(PageView::new(cached, status)))
        }
    }
}

impl RemoteError {
    /// Whether the upstream caused this failure (it failed, or sent a page that cannot be used):
    /// such a failure is remembered for `negative_ttl`. A refusal of the credentials is not (a
    /// rotated token is used on the next request, SPEC §3), nor is a chained wheelgate's policy
    /// refusal (its next reload may allow it), nor are failures of our own.
    fn is_upstream_failure(&self) -> bool {
        match self {
            RemoteError::Upstream { source, .. } => !matches!(
                source,
                UpstreamError::CredentialsRefused { .. } | UpstreamError::Denied { .. }
            ),
            RemoteError::BadPage { .. } | RemoteError::UnexpectedNotModified { .. } => true,
            RemoteError::Shared(inner) => inner.is_upstream_failure(),
            _ => false,
        }
    }
}

/// A load's result as kept: a failure the upstream caused becomes a value to remember.
fn remembered<T>(loaded: Result<Loaded<T>, RemoteError>) -> Result<Loaded<T>, RemoteError> {
    match loaded {
        Err(error) if error.is_upstream_failure() => Ok(Loaded::Failed(Arc::new(error))),
        other => other,
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

/// The key of a file whose upstream gave no digest (SPEC §4).
fn url_key(url: &url::Url) -> Sha256Digest {
    Sha256Digest::of(url.as_str().as_bytes())
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| ct.to_ascii_lowercase().contains("json"))
}

/// Runs a store call off the async threads.
async fn blocking<T: Send + 'static>(
    repo: &RepoName,
    call: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, RemoteError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| RemoteError::Task {
            repo: repo.clone(),
            reason: e.to_string(),
        })?
        .map_err(|source| RemoteError::Store {
            repo: repo.clone(),
            source,
        })
}

impl Loader {
    async fn project(self, project: ProjectName) -> Result<Loaded<ProjectPage>, RemoteError> {
        let key = PageKey {
            repository: self.repo.to_string(),
            project: Some(project.to_string()),
        };
        let url = self.upstream.as_ref().map(|u| {
            // A normalised name is [a-z0-9-]+, so appending it to the root (which ends with '/')
            // always gives a valid URL.
            let mut url = u.root().clone();
            let path = format!("{}{project}/", url.path());
            url.set_path(&path);
            url
        });
        let what = format!("the page of {project}");
        let loaded = self
            .load(key, url, PROJECT_PAGE_LIMIT, what, move |stored, url| {
                let page = if is_json(stored.content_type.as_deref()) {
                    parse_project_json(&stored.body, url, &project)?
                } else {
                    parse_project_html(&stored.body, url, &project)?
                };
                let weight = weight_of(page.held_bytes(), page.rendered_len());
                Ok((page, weight))
            })
            .await;
        remembered(loaded)
    }

    async fn index(self) -> Result<Loaded<ProjectIndex>, RemoteError> {
        let key = PageKey {
            repository: self.repo.to_string(),
            project: None,
        };
        let url = self.upstream.as_ref().map(|u| u.root().clone());
        let loaded = self
            .load(
                key,
                url,
                INDEX_PAGE_LIMIT,
                "the project index".to_owned(),
                |stored, _| {
                    let index = if is_json(stored.content_type.as_deref()) {
                        parse_index_json(&stored.body)?
                    } else {
                        parse_index_html(&stored.body)?
                    };
                    let weight = weight_of(index.held_bytes(), index.rendered_len());
                    Ok((index, weight))
                },
            )
            .await;
        remembered(loaded)
    }

    /// The one page-loading policy, for project pages and the index alike: fresh store copy,
    /// else the upstream (conditionally when a copy exists), else the stale copy.
    async fn load<T>(
        self,
        key: PageKey,
        url: Option<url::Url>,
        limit: usize,
        what: String,
        parse: impl Fn(&StoredPage, &url::Url) -> Result<(T, usize), PageError> + Send + Sync + 'static,
    ) -> Result<Loaded<T>, RemoteError>
    where
        T: Send + Sync + 'static,
    {
        let repo = self.repo.clone();
        let store = self.store.clone();
        // A page never stored (every page of a cold install) is known absent from memory.
        let stored = if store.may_have_page(&key) {
            let stored_key = key.clone();
            blocking(&repo, move || store.page(&stored_key)).await?
        } else {
            None
        };
        // Parsed on a blocking thread when the page is big (see `heavy`).
        let parse = Arc::new(parse);
        let found = |stored: StoredPage, fetched_at: SystemTime, status: CacheStatus| {
            let (repo, what, parse) = (repo.clone(), what.clone(), parse.clone());
            async move {
                let final_url =
                    url::Url::parse(&stored.final_url).map_err(|e| RemoteError::Task {
                        repo: repo.clone(),
                        reason: format!("the stored copy of {what} has an invalid url: {e}"),
                    })?;
                let parsed = if stored.body.len() < heavy::HEAVY_BODY {
                    parse(&stored, &final_url)
                } else {
                    heavy::on_blocking_thread(move || parse(&stored, &final_url))
                        .await
                        .ok_or_else(|| RemoteError::Task {
                            repo: repo.clone(),
                            reason: format!("parsing {what} panicked"),
                        })?
                };
                let (value, weight) =
                    parsed.map_err(|source| RemoteError::BadPage { repo, source })?;
                Ok(Loaded::Found(Arc::new(Cached::new(
                    Arc::new(value),
                    fetched_at,
                    status,
                    weight,
                ))))
            }
        };

        let (Some(upstream), Some(url)) = (self.upstream.as_ref(), url) else {
            return match stored {
                Some(page) => found(page.clone(), page.fetched_at, CacheStatus::Hit).await,
                None => Err(RemoteError::Offline { repo, what }),
            };
        };
        if let Some(page) = &stored {
            let age = page.fetched_at.elapsed().unwrap_or(Duration::ZERO);
            if age < self.ttl {
                return found(page.clone(), page.fetched_at, CacheStatus::Hit).await;
            }
        }
        let validators = stored.as_ref().map(|page| Validators {
            etag: page.etag.clone(),
            last_modified: page.last_modified.clone(),
        });
        let conditional = validators.as_ref().filter(|v| !v.is_empty());
        // The page fetch waits for a slot of `max_concurrent_fetches`, and holds it until the
        // body is read.
        let slot = self.fetch_slots.acquire().await.ok();
        let now = SystemTime::now();
        let started = Instant::now();
        let fetched = upstream
            .fetch_page(&url, UPSTREAM_ACCEPT, conditional, limit)
            .await;
        drop(slot);
        let outcome = |fetch: &PageFetch| match fetch {
            PageFetch::Fresh { .. } => UpstreamOutcome::Ok,
            PageFetch::NotModified { .. } => UpstreamOutcome::NotModified,
        };
        self.meter
            .record(&url, &fetched, outcome, started.elapsed());
        match fetched {
            Ok(PageFetch::NotModified { validators, .. }) => {
                let Some(page) = stored else {
                    return Err(RemoteError::UnexpectedNotModified {
                        repo,
                        url: RedactedUrl::new(&url).to_string(),
                    });
                };
                let store = self.store.clone();
                let result = blocking(&repo, move || {
                    store.refresh_page(
                        &key,
                        now,
                        validators.etag.as_deref(),
                        validators.last_modified.as_deref(),
                    )
                })
                .await;
                if let Err(error) = result {
                    tracing::warn!(repository = %repo, %error, "could not record a page revalidation");
                }
                found(page, now, CacheStatus::Revalidated).await
            }
            Ok(PageFetch::Fresh {
                final_url,
                content_type,
                body,
                validators,
                elapsed,
            }) => {
                let page = StoredPage {
                    body,
                    content_type,
                    final_url: final_url.to_string(),
                    etag: validators.etag,
                    last_modified: validators.last_modified,
                    fetched_at: now,
                };
                // Parse before storing: a page we cannot read must not replace one we can, and
                // the stored copy is served instead (stale-if-error) while there is one.
                let loaded = match (found(page.clone(), now, CacheStatus::Miss).await, stored) {
                    (Ok(loaded), _) => loaded,
                    (Err(error @ RemoteError::BadPage { .. }), Some(old)) => {
                        self.meter.repo.record_stale();
                        tracing::warn!(
                            repository = %repo,
                            %error,
                            "serving the stored copy of {what} (stale-if-error)"
                        );
                        let fetched_at = old.fetched_at;
                        return found(old, fetched_at, CacheStatus::Stale).await;
                    }
                    (Err(error), _) => return Err(error),
                };
                tracing::debug!(repository = %repo, page = %what, upstream_ms = elapsed.as_millis() as u64, "fetched");
                // The client does not wait for the page to be made durable: its body is written
                // on a blocking thread and the store's writer records it with others. A page
                // not yet recorded when the process stops is simply fetched again next time.
                let store = self.store.clone();
                drop(tokio::task::spawn_blocking(move || {
                    store.queue_page(key, page)
                }));
                Ok(loaded)
            }
            Err(error) if error.is_not_found() => {
                let store = self.store.clone();
                let _ = blocking(&repo, move || store.forget_page(&key)).await;
                Ok(Loaded::Missing)
            }
            // A chained wheelgate that refuses the page now must not be overruled by the copy
            // it allowed before.
            Err(error @ UpstreamError::Denied { .. }) => Err(RemoteError::Upstream {
                repo,
                source: error,
            }),
            Err(error) => match stored {
                Some(page) => {
                    self.meter.repo.record_stale();
                    tracing::warn!(
                        repository = %repo,
                        %error,
                        "upstream failed; serving the stored copy of {what} (stale-if-error)"
                    );
                    let fetched_at = page.fetched_at;
                    found(page, fetched_at, CacheStatus::Stale).await
                }
                None => Err(RemoteError::Upstream {
                    repo,
                    source: error,
                }),
            },
        }
    }
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

    fn cached(status: CacheStatus, weight: usize) -> Loaded<u32> {
        Loaded::Found(Arc::new(Cached::new(
            Arc::new(1),
            SystemTime::now(),
            status,
            weight,
        )))
    }

    #[test]
    fn a_page_read_again_from_the_store_is_a_miss_for_its_reader_only() {
        let status = |loaded: Loaded<u32>, ran| view(loaded, ran).unwrap().unwrap().status;
        assert_eq!(status(cached(CacheStatus::Hit, 1), true), CacheStatus::Miss);
        assert_eq!(status(cached(CacheStatus::Hit, 1), false), CacheStatus::Hit);
        assert_eq!(
            status(cached(CacheStatus::Miss, 1), false),
            CacheStatus::Hit
        );
        assert_eq!(
            status(cached(CacheStatus::Stale, 1), false),
            CacheStatus::Stale
        );
        assert_eq!(
            status(cached(CacheStatus::Revalidated, 1), true),
            CacheStatus::Revalidated
        );
    }

    #[test]
    fn upstream_failures_are_remembered_for_negative_ttl_and_others_not() {
        let repo = RepoName::parse("pypi").unwrap();
        let bad_page = RemoteError::BadPage {
            repo: repo.clone(),
            source: crate::simple::page::parse_index_json(b"nope").unwrap_err(),
        };
        let Ok(Loaded::Failed(kept)) = remembered::<u32>(Err(bad_page)) else {
            panic!("a malformed page is remembered");
        };
        assert!(matches!(
            view::<u32>(Loaded::Failed(kept), false),
            Err(RemoteError::Shared(_))
        ));
        let ours = RemoteError::Task {
            repo,
            reason: "panicked".into(),
        };
        assert!(matches!(
            remembered::<u32>(Err(ours)),
            Err(RemoteError::Task { .. })
        ));
        let freshness = Freshness {
            ttl: Duration::from_secs(600),
            negative_ttl: Duration::from_secs(60),
            offline: false,
            memory: 1000,
        };
        let failed = Loaded::<u32>::Failed(Arc::new(RemoteError::NoIndex {
            repo: RepoName::parse("pypi").unwrap(),
        }));
        assert_eq!(freshness.keep(&failed), Duration::from_secs(60));
        assert_eq!(
            freshness.keep(&cached(CacheStatus::Miss, 1001)),
            Duration::ZERO,
            "heavier than the whole memory: not kept"
        );
        assert!(freshness.keep(&cached(CacheStatus::Miss, 1000)) > Duration::from_secs(500));
    }

    #[test]
    fn json_detection() {
        assert!(is_json(Some("application/vnd.pypi.simple.v1+json")));
        assert!(!is_json(Some("text/html; charset=utf-8")));
        assert!(!is_json(None));
    }
}
