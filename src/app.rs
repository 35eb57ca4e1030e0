//! The running configuration: the repositories and rules built from a validated [`Config`], and
//! how a new configuration replaces it.
//!
//! `Config` is plain data read from `proxy.toml`; `App` is what serves requests: each repository
//! with its upstream client and caches, the compiled download rules, and the limits shared by
//! all of them. Building an `App` is the last step of loading a configuration, so a configuration
//! that cannot be put in force (an unreadable CA file, a rule whose condition does not compile)
//! is refused whole and the previous one stays.
//!
//! [`Live`] holds the `App` in force. A request takes the current `Arc<App>` once and keeps it to
//! the end, so a reload never changes the rules under a request that has started. The store and
//! the in-flight downloads belong to the process, not to a configuration: they carry over.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::Semaphore;

use crate::config::{self, Config, ConfigError, RepoName, RepositoryKind};
use crate::policy::{Policy, PolicyError};
use crate::remote::{upstream_settings, Remote};
use crate::store::flight::Flights;
use crate::store::Store;
use crate::upstream::{RedactedUrl, Upstream, UpstreamError};

/// A repository as served.
pub enum Repository {
    Remote(Remote),
}

/// Why a configuration could not be put in force.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("repository {repo} (line {line}): {source}")]
    Upstream {
        repo: RepoName,
        line: usize,
        #[source]
        source: UpstreamError,
    },
    #[error("{origin}: {source}")]
    Rules {
        origin: String,
        #[source]
        source: PolicyError,
    },
}

/// Counters that outlive configuration reloads.
#[derive(Default)]
pub struct Counters {
    /// Downloads refused by a rule (direct file requests and pages left empty).
    pub denials: AtomicU64,
    /// Files left out of pages by a rule.
    pub hidden_files: AtomicU64,
}

/// Everything a request needs, shared by all connections.
pub struct App {
    pub config: Config,
    /// In configuration order. A configuration has a handful of repositories: scanning them
    /// costs less than hashing the name a request gives.
    repositories: Vec<(RepoName, Repository)>,
    pub policy: Policy,
    /// Slots for concurrent upstream file transfers (`server.max_concurrent_fetches`).
    pub fetch_slots: Arc<Semaphore>,
    pub store: Store,
    pub counters: Arc<Counters>,
}

fn origin(config: &Config) -> String {
    config
        .source_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "proxy.toml".to_owned())
}

/// How `store.memory_cache` is shared: a quarter for hot small files (process-wide, in the
/// store), the rest for parsed and rendered pages, split evenly between the remote repositories.
pub fn hot_file_memory(config: &Config) -> u64 {
    config.store.memory_cache / 4
}

fn page_memory_per_remote(config: &Config) -> u64 {
    let remotes = config
        .repositories
        .iter()
        .filter(|r| matches!(r.kind, RepositoryKind::Remote(_)))
        .count()
        .max(1) as u64;
    (config.store.memory_cache - hot_file_memory(config)) / remotes
}

/// Compiles the rules of `config`.
pub fn compile_policy(config: &Config) -> Result<Policy, AppError> {
    Policy::compile(&config.rules).map_err(|source| AppError::Rules {
        origin: origin(config),
        source,
    })
}

/// Checks what `App::build` would build, without a store: the upstream clients (TLS roots, CA
/// files) and the rules. For `wheelgate check`, which must not lock the store of a running server.
pub fn validate(config: &Config) -> Result<Policy, AppError> {
    for repo in &config.repositories {
        match &repo.kind {
            RepositoryKind::Remote(remote) => {
                if let Some(settings) = upstream_settings(&repo.name, remote) {
                    Upstream::new(settings).map_err(|source| AppError::Upstream {
                        repo: repo.name.clone(),
                        line: repo.line,
                        source,
                    })?;
                }
            }
        }
    }
    compile_policy(config)
}

impl App {
    /// Builds the repositories of `config` over the process's one store and its flights (both
    /// outlive configuration reloads).
    pub fn build(
        config: Config,
        store: Store,
        flights: Arc<Flights>,
        counters: Arc<Counters>,
    ) -> Result<App, AppError> {
        let policy = compile_policy(&config)?;
        let mut repositories = Vec::with_capacity(config.repositories.len());
        let memory = page_memory_per_remote(&config);
        for repo in &config.repositories {
            let built = match &repo.kind {
                RepositoryKind::Remote(remote) => Repository::Remote(
                    Remote::new(
                        repo.name.clone(),
                        remote,
                        store.clone(),
                        flights.clone(),
                        memory,
                    )
                    .map_err(|source| AppError::Upstream {
                        repo: repo.name.clone(),
                        line: repo.line,
                        source,
                    })?,
                ),
            };
            repositories.push((repo.name.clone(), built));
        }
        let fetch_slots = Arc::new(Semaphore::new(config.server.max_concurrent_fetches));
        Ok(App {
            config,
            repositories,
            policy,
            fetch_slots,
            store,
            counters,
        })
    }

    pub fn repository(&self, name: &RepoName) -> Option<&Repository> {
        self.repositories
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, repository)| repository)
    }

    pub fn default_repository(&self) -> &RepoName {
        &self.config.server.default_repository
    }

    /// Repository names in configuration order, for messages and the home page.
    pub fn repository_names(&self) -> impl Iterator<Item = &RepoName> {
        self.config.repositories.iter().map(|r| &r.name)
    }

    /// Logs what each repository will do, so an operator sees at start-up that an upstream is
    /// missing rather than finding out from a failed install.
    pub fn log_summary(&self) {
        for name in self.repository_names() {
            if let Some(Repository::Remote(remote)) = self.repository(name) {
                match remote.upstream_root() {
                    Some(root) => {
                        tracing::info!(repository = %name, upstream = %RedactedUrl::new(root), "remote repository")
                    }
                    None => tracing::warn!(
                        repository = %name,
                        "remote repository is offline: it has no upstream url (or offline = true) and serves only what its store holds"
                    ),
                }
            }
        }
        let rules = self.config.rules.len();
        if rules > 0 {
            tracing::info!(rules, "download rules in force");
        }
    }
}

/// The configuration in force, and its replacement on reload.
pub struct Live {
    current: RwLock<Arc<App>>,
    config_path: PathBuf,
    store: Store,
    flights: Arc<Flights>,
    counters: Arc<Counters>,
    reloads: AtomicU64,
}

impl Live {
    pub fn new(app: App, config_path: PathBuf, flights: Arc<Flights>) -> Live {
        Live {
            store: app.store.clone(),
            counters: app.counters.clone(),
            current: RwLock::new(Arc::new(app)),
            config_path,
            flights,
            reloads: AtomicU64::new(0),
        }
    }

    /// The configuration in force now.
    pub fn current(&self) -> Arc<App> {
        match self.current.read() {
            Ok(app) => app.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The downloads in flight, shared by every configuration generation.
    pub fn flights(&self) -> &Arc<Flights> {
        &self.flights
    }

    /// Reads, validates and builds the configuration file again and swaps it in. On any error
    /// the configuration in force stays and the error is returned (the caller logs it).
    pub fn reload(&self) -> Result<(), AppError> {
        let config = config::load(&self.config_path)?;
        let previous = self.current();
        let restart_only = previous.config.restart_only_changes(&config);
        let app = App::build(
            config,
            self.store.clone(),
            self.flights.clone(),
            self.counters.clone(),
        )?;
        for key in restart_only {
            tracing::warn!(
                key,
                "this change takes effect only at restart; the running server keeps the old value"
            );
        }
        let app = Arc::new(app);
        match self.current.write() {
            Ok(mut current) => *current = app,
            Err(poisoned) => *poisoned.into_inner() = app,
        }
        let generation = self.reloads.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(generation, path = %self.config_path.display(), "configuration reloaded");
        Ok(())
    }

    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }
}
