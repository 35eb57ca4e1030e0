//! What wheelgate counts about itself, for Prometheus (`/-/metrics`) and the status page (`/`).
//!
//! [`Metrics`] belongs to the process, like the store and the downloads in flight: a
//! configuration reload rebuilds the repositories but not their counts. Each configured
//! repository gets a [`RepoMetrics`] when a configuration is built, holding its counters in fixed
//! arrays indexed by the closed label sets of [`labels`], so recording a request, a cache outcome
//! or served bytes is a relaxed atomic addition: no lock, no allocation, no lookup by name.
//! Refusals and upstream failures, which are rare, also go to the bounded lists of [`recent`]
//! that the status page shows.
//!
//! The names are stable (operators write alerts against them); `expose` writes them in the
//! Prometheus text format with prometheus-client.

mod expose;
pub mod histogram;
pub mod labels;
pub mod recent;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::config::{Mode, RepoName};
use crate::lock;
use crate::repository::CacheStatus;
use crate::simple::name::ProjectName;
use histogram::Histogram;
use labels::{cache_slot, status_slot, STATUS_SLOTS};
pub use labels::{
    CacheKind, DenialKind, ReloadResult, Route, SharedOutcome, Source, UploadOutcome,
    UpstreamOutcome,
};
use recent::{DenialRecord, Recent, UpstreamErrorRecord};

pub use expose::CONTENT_TYPE;

/// The `repository` label of requests that name no configured repository (the status page, the
/// health checks, an unknown name). A repository name starts with a letter or digit, so this
/// never collides with one.
pub const NO_REPOSITORY: &str = "-";

/// The counters of one repository name. Shared by every configuration that names it.
#[derive(Debug)]
pub struct RepoMetrics {
    name: Box<str>,
    requests: [[AtomicU64; STATUS_SLOTS]; Route::COUNT],
    cache: [[AtomicU64; 4]; 2],
    upstream: [AtomicU64; UpstreamOutcome::ALL.len()],
    uploads: [AtomicU64; UploadOutcome::ALL.len()],
    /// Milliseconds since the Unix epoch of the last upstream success, the last upstream
    /// failure and the last page served stale; 0 for never.
    last_upstream_ok: AtomicU64,
    last_upstream_error: AtomicU64,
    last_stale: AtomicU64,
}

/// What the upstream of a remote repository has been doing lately, for the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamState {
    /// No upstream request yet since start.
    NotContacted,
    /// The last upstream request succeeded.
    Online,
    /// The last upstream request failed, and stored pages have been served stale since.
    ServingStale { since: SystemTime },
    /// The last upstream request failed.
    Failing { since: SystemTime },
}

fn millis_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_millis(millis: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(millis)
}

impl RepoMetrics {
    fn new(name: &str) -> RepoMetrics {
        RepoMetrics {
            name: name.into(),
            requests: Default::default(),
            cache: Default::default(),
            upstream: Default::default(),
            uploads: Default::default(),
            last_upstream_ok: AtomicU64::new(0),
            last_upstream_error: AtomicU64::new(0),
            last_stale: AtomicU64::new(0),
        }
    }

    /// The repository name, or [`NO_REPOSITORY`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How a page or a file was obtained (the `X-Wheelgate-Cache` of its response).
    pub fn record_cache(&self, kind: CacheKind, status: CacheStatus) {
        self.cache[kind as usize][cache_slot(status)].fetch_add(1, Ordering::Relaxed);
    }

    /// A stored page was served because the upstream failed.
    pub fn record_stale(&self) {
        self.last_stale.store(millis_now(), Ordering::Relaxed);
    }

    /// The count of one cache outcome since start.
    pub fn cache_count(&self, kind: CacheKind, status: CacheStatus) -> u64 {
        self.cache[kind as usize][cache_slot(status)].load(Ordering::Relaxed)
    }

    /// What the upstream has been doing lately.
    pub fn upstream_state(&self) -> UpstreamState {
        let ok = self.last_upstream_ok.load(Ordering::Relaxed);
        let error = self.last_upstream_error.load(Ordering::Relaxed);
        let stale = self.last_stale.load(Ordering::Relaxed);
        if error == 0 && ok == 0 {
            UpstreamState::NotContacted
        } else if ok >= error {
            UpstreamState::Online
        } else {
            // The last failure is the one kept.
            let since = from_millis(error);
            if stale > ok {
                UpstreamState::ServingStale { since }
            } else {
                UpstreamState::Failing { since }
            }
        }
    }
}

/// A refusal (or, in audit mode, a refusal that was only recorded), for
/// [`Metrics::record_denial`].
#[derive(Debug, Clone, Copy)]
pub struct Denial<'a> {
    /// The repository the request addressed.
    pub repository: &'a RepoName,
    pub package: &'a ProjectName,
    /// The version of the refused file; `None` when a whole page was refused.
    pub version: Option<&'a str>,
    pub kind: DenialKind,
    /// The rule's name, or the package group of an origin control.
    pub name: &'a str,
    pub mode: Mode,
}

/// The process's metrics.
#[derive(Debug)]
pub struct Metrics {
    started: SystemTime,
    /// Every repository name configured since start, in the order first seen. Only written when
    /// a configuration is built.
    repositories: Mutex<Vec<Arc<RepoMetrics>>>,
    unknown: Arc<RepoMetrics>,
    durations: [Histogram; Route::COUNT],
    upstream_duration: Histogram,
    served_bytes: [AtomicU64; 2],
    auth_failures: AtomicU64,
    reloads: [AtomicU64; 2],
    /// Requests that joined a page load under way (file downloads count their own joins).
    page_joins: AtomicU64,
    recent: Mutex<Recent>,
    /// Client connections accepted and not yet closed.
    open_connections: AtomicU64,
    /// Connections closed because no complete request head came within
    /// `[server] request_header_timeout` of their accept.
    header_timeouts: AtomicU64,
    /// Uses of the shared bucket, by [`SharedOutcome`].
    shared: [AtomicU64; SharedOutcome::ALL.len()],
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            started: SystemTime::now(),
            repositories: Mutex::new(Vec::new()),
            unknown: Arc::new(RepoMetrics::new(NO_REPOSITORY)),
            durations: Default::default(),
            upstream_duration: Histogram::default(),
            served_bytes: Default::default(),
            auth_failures: AtomicU64::new(0),
            reloads: Default::default(),
            page_joins: AtomicU64::new(0),
            recent: Mutex::new(Recent::default()),
            open_connections: AtomicU64::new(0),
            header_timeouts: AtomicU64::new(0),
            shared: Default::default(),
        }
    }
}

impl Metrics {
    /// When the process started counting.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// The counters of repository `name`, made the first time a configuration names it. Called
    /// when a configuration is built, never per request.
    pub fn repository(&self, name: &RepoName) -> Arc<RepoMetrics> {
        let mut repositories = lock(&self.repositories);
        if let Some(known) = repositories.iter().find(|r| &*r.name == name.as_str()) {
            return known.clone();
        }
        let made = Arc::new(RepoMetrics::new(name.as_str()));
        repositories.push(made.clone());
        made
    }

    /// The counters of requests that name no configured repository.
    pub fn no_repository(&self) -> &Arc<RepoMetrics> {
        &self.unknown
    }

    /// One answered request: its repository, route and status, and the time to its response
    /// head.
    pub fn record_request(&self, repo: &RepoMetrics, route: Route, status: u16, elapsed: Duration) {
        repo.requests[route.index()][status_slot(status)].fetch_add(1, Ordering::Relaxed);
        self.durations[route.index()].observe(elapsed);
    }

    /// One use of the shared bucket.
    pub fn record_shared(&self, outcome: SharedOutcome) {
        self.shared[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// How many requests have been answered since start (read every few seconds, not per
    /// request: it sums the duration histograms).
    pub fn requests_answered(&self) -> u64 {
        self.durations.iter().map(Histogram::count).sum()
    }

    /// Bytes of a response body, by where they came from.
    pub fn record_served(&self, source: Source, bytes: u64) {
        self.served_bytes[source as usize].fetch_add(bytes, Ordering::Relaxed);
    }

    /// One upstream request (retries and redirects included) and how long it took: to the last
    /// byte for a page, to the response head for a file (whose body streams on).
    pub fn record_upstream(&self, repo: &RepoMetrics, outcome: UpstreamOutcome, elapsed: Duration) {
        let index = UpstreamOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(UpstreamOutcome::ALL.len() - 1);
        repo.upstream[index].fetch_add(1, Ordering::Relaxed);
        self.upstream_duration.observe(elapsed);
        let stamp = if outcome.is_success() {
            &repo.last_upstream_ok
        } else {
            &repo.last_upstream_error
        };
        stamp.store(millis_now(), Ordering::Relaxed);
    }

    /// A failed upstream request, for the status page. `url` must be shown without credentials
    /// (a `RedactedUrl`); `error` is an upstream error, which never shows the secret.
    pub fn record_upstream_error(
        &self,
        repo: &RepoMetrics,
        url: &dyn fmt::Display,
        error: &dyn fmt::Display,
    ) {
        lock(&self.recent).record_upstream_error(UpstreamErrorRecord {
            at: SystemTime::now(),
            repository: repo.name.to_string(),
            url: url.to_string(),
            error: error.to_string(),
        });
    }

    /// A download refused (or, in audit mode, one that would have been): counted in
    /// `wheelgate_denials_total` and listed on the status page.
    pub fn record_denial(&self, denial: Denial<'_>) {
        lock(&self.recent).record_denial(DenialRecord {
            at: SystemTime::now(),
            repository: denial.repository.to_string(),
            package: denial.package.to_string(),
            version: denial.version.map(str::to_owned),
            kind: denial.kind,
            name: denial.name.to_owned(),
            mode: denial.mode,
        });
    }

    /// One upload to `repo` and how it ended.
    pub fn record_upload(&self, repo: &RepoMetrics, outcome: UploadOutcome) {
        repo.uploads[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A request whose credentials were malformed, unknown or wrong.
    pub fn record_auth_failure(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A configuration reload and whether it was put in force.
    pub fn record_reload(&self, result: ReloadResult) {
        self.reloads[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A request that joined a page load another request had started.
    pub fn record_page_join(&self) {
        self.page_joins.fetch_add(1, Ordering::Relaxed);
    }

    /// A client connection accepted; [`Metrics::record_connection_closed`] when it closes.
    pub fn record_connection_opened(&self) {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A client connection closed.
    pub fn record_connection_closed(&self) {
        self.open_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// A connection closed because its first request head did not come in time.
    pub fn record_header_timeout(&self) {
        self.header_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// The last denials, newest first.
    pub fn recent_denials(&self) -> Vec<DenialRecord> {
        lock(&self.recent).denials()
    }

    /// The last upstream errors, newest first.
    pub fn recent_upstream_errors(&self) -> Vec<UpstreamErrorRecord> {
        lock(&self.recent).upstream_errors()
    }

    /// Cache outcomes since start over every repository: `(hits, all)`.
    pub fn cache_totals(&self) -> (u64, u64) {
        let repositories = lock(&self.repositories).clone();
        let mut hits = 0;
        let mut all = 0;
        for repo in repositories.iter().chain(std::iter::once(&self.unknown)) {
            for kind in CacheKind::ALL {
                for status in labels::CACHE_OUTCOMES {
                    let count = repo.cache_count(kind, status);
                    all += count;
                    if status == CacheStatus::Hit {
                        hits += count;
                    }
                }
            }
        }
        (hits, all)
    }
}

/// Values read from elsewhere when scraped: the store's size and the file downloads joined.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    pub store_bytes: u64,
    pub store_artifacts: u64,
    /// Requests that joined a file download under way ([`Flights::joins`]).
    ///
    /// [`Flights::joins`]: crate::repository::remote::flight::Flights::joins
    pub file_joins: u64,
    /// Whether the shared bucket answers (`None` without `[store.shared]`).
    pub shared_bucket_up: Option<bool>,
}

impl Metrics {
    /// Everything, in the Prometheus text format.
    pub fn encode(self: &Arc<Self>, gauges: Gauges) -> String {
        expose::encode(self.clone(), gauges)
    }
}
