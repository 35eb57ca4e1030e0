//! The running configuration: the repositories built from a validated [`Config`].
//!
//! `Config` is plain data read from `proxy.toml`; `App` is what serves requests: each repository
//! with its upstream client and caches, and the limits shared by all of them. Building an `App`
//! is the last step of loading a configuration, so a configuration that cannot be turned into
//! working repositories (an unreadable CA file, say) is refused before it is put in force.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::config::{Config, RepoName, RepositoryKind};
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
    #[error("repository {repo} (proxy.toml line {line}): {source}")]
    Upstream {
        repo: RepoName,
        line: usize,
        #[source]
        source: UpstreamError,
    },
}

/// Everything a request needs, shared by all connections.
pub struct App {
    pub config: Config,
    repositories: HashMap<RepoName, Repository>,
    /// Slots for concurrent upstream file transfers (`server.max_concurrent_fetches`).
    pub fetch_slots: Arc<Semaphore>,
    pub store: Store,
}

/// Checks what `App::build` would build, without a store: the upstream clients (TLS roots, CA
/// files). For `wheelgate check`, which must not lock the store of a running server.
pub fn validate(config: &Config) -> Result<(), AppError> {
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
    Ok(())
}

impl App {
    /// Builds the repositories of `config` over the process's one store and its flights (both
    /// outlive configuration reloads).
    pub fn build(config: Config, store: Store, flights: Arc<Flights>) -> Result<App, AppError> {
        let mut repositories = HashMap::new();
        let memory = config.store.memory_cache;
        for repo in &config.repositories {
            let built = match &repo.kind {
                RepositoryKind::Remote(remote) => Repository::Remote(
                    Remote::new(repo.name.clone(), remote, store.clone(), flights.clone(), memory)
                        .map_err(|source| AppError::Upstream {
                            repo: repo.name.clone(),
                            line: repo.line,
                            source,
                        })?,
                ),
            };
            repositories.insert(repo.name.clone(), built);
        }
        let fetch_slots = Arc::new(Semaphore::new(config.server.max_concurrent_fetches));
        Ok(App {
            config,
            repositories,
            fetch_slots,
            store,
        })
    }

    pub fn repository(&self, name: &RepoName) -> Option<&Repository> {
        self.repositories.get(name)
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
            match self.repositories.get(name) {
                Some(Repository::Remote(remote)) => match remote.upstream_root() {
                    Some(root) => tracing::info!(repository = %name, upstream = %RedactedUrl::new(root), "remote repository"),
                    None => tracing::warn!(
                        repository = %name,
                        "remote repository is offline: it has no upstream url and serves only what its cache holds"
                    ),
                },
                None => {}
            }
        }
    }
}
