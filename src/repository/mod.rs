//! The repository layer: the one place that decides what repository R serves to a caller.
//!
//! A deployment names repositories of several kinds (SPEC §1): remote ones pull an upstream
//! through, hosted ones keep what is published to them, groups merge their members. Whatever
//! the kind, serving a project page or a file takes the same steps: find the repository, get the
//! page as a parsed model, let the download rules decide which files it may show, render it; or
//! find the file on that very page, let the same rules decide, and open it. Those steps live here
//! and only here, so a page and a direct file request make the same decision by construction (a
//! file hidden from a page is never served by its URL), and the HTTP front only translates
//! between HTTP and these calls.
//!
//! Each kind implements [`Kind`]: its index, a project page, what it knows of a file without
//! fetching it, and opening a file. [`Repositories`] holds the repositories of one configuration
//! with the rules and limits they share; `serve` holds the decisions built on them.

pub mod cached;
mod error;
pub mod file;
pub mod group;
mod heavy;
pub mod hosted;
mod origin;
mod publish;
pub mod remote;
mod serve;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio::sync::Semaphore;
use url::Url;

use crate::access::{Caller, Role, Users};
use crate::config::{Config, RepoName, RepositoryKind};
use crate::metrics::{Metrics, RepoMetrics};
use crate::origin::package::PackageOrigins;
use crate::policy::Policy;
use crate::simple::name::ProjectName;
use crate::simple::page::{FileEntry, ProjectIndex, ProjectPage};
use crate::simple::part::FilePart;
use crate::store::{Store, StoreStats};
use crate::upstream::{RedactedUrl, UpstreamError};
use cached::PageView;
use file::{FileInfo, Located, ServedFile};
pub use group::Source;
use group::{Group, Member};
use hosted::Hosted;
use remote::flight::Flights;
use remote::Remote;

pub use cached::{
    CacheStatus, Page, Rendered, Variant, VARY_PAGE, X_WHEELGATE_AUDIT, X_WHEELGATE_CACHE,
    X_WHEELGATE_UNAVAILABLE,
};
pub use error::ServeError;
pub use file::{ArtifactBody, Content, FileBody, FileSlice, OPEN_BLOBS};
pub use hosted::Published;
pub use publish::UploadRequest;
pub use serve::{FileRequest, PageRequest, WouldDeny};

/// What every kind of repository answers. Errors are the layer's, so that a group can pass a
/// member's failure on unchanged.
pub(crate) trait Kind {
    /// The list of projects.
    async fn index(&self) -> Result<PageView<ProjectIndex>, ServeError>;

    /// A project's page as the parsed model, with how it was obtained.
    async fn project_page(
        &self,
        project: &ProjectName,
    ) -> Result<PageView<ProjectPage>, ServeError>;

    /// What a client would receive for a part of a located file (the file, its PEP 658 metadata
    /// or its PEP 740 provenance) without fetching it: for HEAD.
    fn file_info(&self, located: &Located, part: FilePart) -> Result<FileInfo, ServeError>;

    /// A part of a located file, from the store or on its way from an upstream.
    async fn open(&self, located: &Located, part: FilePart) -> Result<ServedFile, ServeError>;

    /// What the repository is, for the status page, `wheelgate check` and the start-up log.
    fn describe(&self) -> Description;
}

/// A repository as served: one that holds files itself, or a group of those.
pub enum Repository {
    Source(Source),
    Group(Group),
}

impl Repository {
    /// The repositories whose rules judge `entry` when this repository, called `name`, serves
    /// it: itself, and for a group also the groups between and the member it comes from.
    pub(crate) fn through<'a>(&'a self, name: &'a RepoName, entry: &FileEntry) -> &'a [RepoName] {
        match self {
            Repository::Group(group) => match group.member_of(entry) {
                Ok(member) => &member.through,
                Err(_) => std::slice::from_ref(name),
            },
            Repository::Source(_) => std::slice::from_ref(name),
        }
    }
}

/// Each call goes to the repository's kind.
impl Kind for Repository {
    async fn index(&self) -> Result<PageView<ProjectIndex>, ServeError> {
        match self {
            Repository::Source(source) => source.index().await,
            Repository::Group(group) => group.index().await,
        }
    }

    async fn project_page(
        &self,
        project: &ProjectName,
    ) -> Result<PageView<ProjectPage>, ServeError> {
        match self {
            Repository::Source(source) => source.project_page(project).await,
            Repository::Group(group) => group.project_page(project).await,
        }
    }

    fn file_info(&self, located: &Located, part: FilePart) -> Result<FileInfo, ServeError> {
        match self {
            Repository::Source(source) => source.file_info(located, part),
            Repository::Group(group) => group.file_info(located, part),
        }
    }

    async fn open(&self, located: &Located, part: FilePart) -> Result<ServedFile, ServeError> {
        match self {
            Repository::Source(source) => source.open(located, part).await,
            Repository::Group(group) => group.open(located, part).await,
        }
    }

    fn describe(&self) -> Description {
        match self {
            Repository::Source(source) => source.describe(),
            Repository::Group(group) => group.describe(),
        }
    }
}

/// How a repository describes itself to people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// The `type` as `proxy.toml` writes it.
    pub kind: &'static str,
    /// One line: the upstream (without credentials), or what the repository holds.
    pub detail: String,
    /// False for a remote that cannot reach an upstream (no url, or `offline = true`).
    pub online: bool,
}

/// Counters that outlive configuration reloads.
#[derive(Default)]
pub struct Counters {
    /// Files left out of pages by a rule.
    pub hidden_files: AtomicU64,
    /// What `/-/metrics` and the status page show.
    pub metrics: Arc<Metrics>,
}

/// The repositories of one configuration, with the rules and limits they share.
pub struct Repositories {
    /// In configuration order. A configuration has a handful of repositories: scanning them
    /// costs less than hashing the name a request gives.
    list: Vec<(RepoName, Repository)>,
    /// The counters of each repository, in the order of `list`.
    repo_metrics: Vec<Arc<RepoMetrics>>,
    /// The counters of the default repository, found without a scan.
    default_metrics: Arc<RepoMetrics>,
    default: RepoName,
    policy: Policy,
    /// Absolute links under this base instead of links relative to each page.
    public_url: Option<Url>,
    /// How many `[[rule]]` tables are in force, for the status page.
    rule_count: usize,
    store: Store,
    counters: Arc<Counters>,
    /// The downloads in flight (the process's), for their join count.
    flights: Arc<Flights>,
    /// Who may read and publish where.
    users: Arc<Users>,
    /// Where packages may come from (SPEC §6): decided in `origin`.
    origins: PackageOrigins,
    /// Bounds on an upload's body and on what is read from it.
    upload_limits: crate::upload::Limits,
}

/// Why the repositories of a configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[error("repository {repo} (line {line}): {source}")]
pub struct BuildError {
    pub repo: RepoName,
    pub line: usize,
    #[source]
    pub source: UpstreamError,
}

/// How `store.memory_cache` is shared: a quarter for hot small files (process-wide, in the
/// store), the rest for parsed and rendered pages, split evenly between the remote repositories.
pub fn hot_file_memory(config: &Config) -> u64 {
    config.store.memory_cache / 4
}

/// Pages are kept by remote repositories and groups (merged pages); hosted pages are small and
/// bounded by count.
fn page_memory_per_repository(config: &Config) -> u64 {
    let keepers = config
        .repositories
        .iter()
        .filter(|r| matches!(r.kind, RepositoryKind::Remote(_) | RepositoryKind::Group(_)))
        .count()
        .max(1) as u64;
    (config.store.memory_cache - hot_file_memory(config)) / keepers
}

/// Checks what [`Repositories::build`] would build without a store: the upstream clients (TLS
/// roots, CA files). For `wheelgate check`, which must not lock the store of a running server.
pub fn validate(config: &Config) -> Result<(), BuildError> {
    for repo in &config.repositories {
        match &repo.kind {
            RepositoryKind::Remote(remote) => {
                remote::validate(&repo.name, remote).map_err(|source| BuildError {
                    repo: repo.name.clone(),
                    line: repo.line,
                    source,
                })?
            }
            RepositoryKind::Hosted | RepositoryKind::Group(_) => {}
        }
    }
    Ok(())
}

impl Repositories {
    /// Builds the repositories of `config` over the process's one store and its flights (both
    /// outlive configuration reloads). Nothing is fetched yet.
    pub fn build(
        config: &Config,
        policy: Policy,
        store: Store,
        flights: Arc<Flights>,
        counters: Arc<Counters>,
        users: Arc<Users>,
    ) -> Result<Repositories, BuildError> {
        let memory = page_memory_per_repository(config);
        let metrics = &counters.metrics;
        // Slots for concurrent upstream file transfers, shared by every remote.
        let fetch_slots = Arc::new(Semaphore::new(config.server.max_concurrent_fetches));
        // The repositories that hold files first: groups are made of them.
        let mut sources: Vec<(RepoName, Source)> = Vec::new();
        for repo in &config.repositories {
            let source = match &repo.kind {
                RepositoryKind::Remote(remote) => Source::Remote(Arc::new(
                    Remote::new(
                        repo.name.clone(),
                        remote,
                        store.clone(),
                        flights.clone(),
                        fetch_slots.clone(),
                        memory,
                        config.server.max_file_size,
                        metrics.clone(),
                    )
                    .map_err(|source| BuildError {
                        repo: repo.name.clone(),
                        line: repo.line,
                        source,
                    })?,
                )),
                RepositoryKind::Hosted => {
                    Source::Hosted(Arc::new(Hosted::new(repo.name.clone(), store.clone())))
                }
                RepositoryKind::Group(_) => continue,
            };
            sources.push((repo.name.clone(), source));
        }
        let source_of = |name: &RepoName| {
            sources
                .iter()
                .find(|(known, _)| known == name)
                .map(|(_, source)| source.clone())
        };
        let mut list = Vec::with_capacity(config.repositories.len());
        for repo in &config.repositories {
            let built = match &repo.kind {
                RepositoryKind::Group(_) => {
                    // The configuration defines every member and has no cycles (checked at
                    // load), so each flattened member is a source built above.
                    let members = config
                        .sources_of(&repo.name)
                        .into_iter()
                        .filter_map(|(member, through)| {
                            Some(Member {
                                name: member.name.clone(),
                                source: source_of(&member.name)?,
                                through: through.into_boxed_slice(),
                            })
                        })
                        .collect();
                    Repository::Group(Group::new(repo.name.clone(), members, memory))
                }
                _ => match source_of(&repo.name) {
                    Some(source) => Repository::Source(source),
                    None => continue,
                },
            };
            list.push((repo.name.clone(), built));
        }
        let repo_metrics = list
            .iter()
            .map(|(name, _)| metrics.repository(name))
            .collect();
        let origins = PackageOrigins::new(
            config,
            Arc::new(store.clone()),
            Arc::new(config.package_groups.clone()),
        );
        Ok(Repositories {
            origins,
            repo_metrics,
            default_metrics: metrics.repository(&config.server.default_repository),
            flights,
            users,
            upload_limits: crate::upload::Limits::of_server(&config.server),
            list,
            default: config.server.default_repository.clone(),
            policy,
            public_url: config.server.public_url.clone(),
            rule_count: config.rules.len(),
            store,
            counters,
        })
    }

    /// The users of this configuration: the front authenticates requests with them.
    pub fn users(&self) -> &Users {
        &self.users
    }

    /// The users, shared: a reload that leaves them unchanged keeps them (and their
    /// remembered password checks).
    pub fn users_handle(&self) -> Arc<Users> {
        self.users.clone()
    }

    /// Whether `caller` may see the status page: whoever may read somewhere.
    pub fn may_see_status(&self, caller: &Caller) -> Result<(), ServeError> {
        match caller {
            Caller::User(_) => Ok(()),
            Caller::Anonymous => Ok(self.users.authorize(caller, Role::Read, &self.default)?),
        }
    }

    /// The repository called `name` (the default one for `None`), if `caller` may act on it
    /// with `role`.
    fn find_for(
        &self,
        caller: &Caller,
        role: Role,
        name: Option<&RepoName>,
    ) -> Result<(&RepoName, &Repository), ServeError> {
        let (name, repository) = self.find(name)?;
        self.users.authorize(caller, role, name)?;
        Ok((name, repository))
    }

    /// The repository called `name`, or the default one for `None`.
    fn find(&self, name: Option<&RepoName>) -> Result<(&RepoName, &Repository), ServeError> {
        let name = name.unwrap_or(&self.default);
        self.list
            .iter()
            .find(|(known, _)| known == name)
            .map(|(known, repository)| (known, repository))
            .ok_or_else(|| ServeError::NoRepository {
                name: name.clone(),
                known: self.names().map(RepoName::to_string).collect(),
            })
    }

    /// The repository served at `/simple/`.
    pub fn default_name(&self) -> &RepoName {
        &self.default
    }

    /// Repository names in configuration order.
    pub fn names(&self) -> impl Iterator<Item = &RepoName> {
        self.list.iter().map(|(name, _)| name)
    }

    /// Every repository with its description, in configuration order.
    pub fn describe(&self) -> Vec<(&RepoName, Description)> {
        self.list
            .iter()
            .map(|(name, repository)| (name, repository.describe()))
            .collect()
    }

    /// Drops the page of `project` that the remote repository called `repository` holds in
    /// memory (loaded, or remembered as missing), so that the next request loads it again: for
    /// `cache purge`, after the stored page was forgotten. Other repositories hold nothing to
    /// drop.
    pub fn forget_page_in_memory(&self, repository: &str, project: &ProjectName) {
        for (name, kind) in &self.list {
            if let (true, Repository::Source(Source::Remote(remote))) =
                (name.as_ref() == repository, kind)
            {
                remote.forget_page_in_memory(project);
            }
        }
    }

    pub fn store_stats(&self) -> StoreStats {
        self.store.stats()
    }

    /// The shared bucket's state, without `[store.shared]` `None`.
    pub fn shared_bucket(&self) -> Option<crate::shared::BucketState> {
        self.store.shared().map(|shared| shared.state())
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The process's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.counters.metrics
    }

    /// The counters of the repository a request names (the default one for `None`); those of
    /// no repository for a name not configured. A scan of a handful of names, like
    /// [`Repositories::find`]; the default repository's are at hand.
    pub fn repo_metrics(&self, name: Option<&RepoName>) -> &RepoMetrics {
        let Some(name) = name else {
            return &self.default_metrics;
        };
        self.list
            .iter()
            .position(|(known, _)| known == name)
            .and_then(|index| self.repo_metrics.get(index))
            .unwrap_or(self.counters.metrics.no_repository())
    }

    /// How many requests joined a file download another request had started.
    pub fn file_joins(&self) -> u64 {
        self.flights.joins()
    }

    /// How many download rules are in force.
    pub fn rule_count(&self) -> usize {
        self.rule_count
    }

    /// Logs what each repository will do, so an operator sees at start-up that an upstream is
    /// missing rather than finding out from a failed install.
    pub fn log_summary(&self) {
        for (name, description) in self.describe() {
            if description.online {
                tracing::info!(repository = %name, kind = description.kind, "{}", description.detail);
            } else {
                tracing::warn!(repository = %name, kind = description.kind, "{}", description.detail);
            }
        }
        let rules = self.rule_count;
        if rules > 0 {
            tracing::info!(rules, "download rules in force");
        }
    }
}

/// An upstream URL as the status page and the log show it: without credentials or query.
pub(crate) fn shown_upstream(url: &Url) -> String {
    RedactedUrl::new(url).to_string()
}
