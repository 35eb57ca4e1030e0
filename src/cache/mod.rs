//! The cache commands (SPEC §9): `wheelgate cache stats | verify | gc | purge PROJECT`, and
//! `wheelgate origin explain`, which reads the store the same way.
//!
//! sled locks the store directory, so while a server runs on the store no other process can
//! open it. A command therefore either asks the running server over its admin socket (see
//! `crate::admin`) or, when no server runs, opens the store itself. Both paths run the same
//! [`execute`] on a [`Store`] and get the same [`Report`], so they print the same lines; `cli`
//! decides which path to take and says which it took.

pub mod cli;
pub mod report;

use serde::{Deserialize, Serialize};

use crate::config::{Config, RepoName, RepositoryKind};
use crate::simple::name::{NameError, ProjectName};
use crate::store::{Store, StoreError};
use report::{GcReport, PurgeReport, Report, StatsReport};

/// What a cache command asks for, as the admin channel carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// Counts and sizes.
    Stats,
    /// Hash every stored body again; remove what is damaged (hosted uploads only when
    /// `forget_damaged_uploads`).
    Verify {
        #[serde(default)]
        forget_damaged_uploads: bool,
    },
    /// Evict least recently used files until the store holds at most `max_size` bytes: the
    /// configured `store.max_size`, which may be smaller than the one the server started with.
    Gc { max_size: u64 },
    /// Forget the stored pages of `project` (any spelling; normalised here) in the remote
    /// repositories, or only in `repository`.
    Purge {
        project: String,
        #[serde(default)]
        repository: Option<String>,
    },
    /// `wheelgate origin explain`: the package-level origin controls of `package` (any
    /// spelling) bearing on `repository`, and where `version` would come from
    /// (`crate::origin::explain`).
    OriginExplain {
        repository: String,
        package: String,
        #[serde(default)]
        version: Option<String>,
    },
}

/// Why a cache command failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("no repository named {name:?} in the configuration; it defines: {known}")]
    UnknownRepository { name: String, known: String },
    #[error(
        "repository {name} is {kind}: its pages are built from what it holds, never fetched, so \
         there is nothing to purge; pages are purged in remote repositories ({remotes})"
    )]
    NotRemote {
        name: RepoName,
        kind: &'static str,
        remotes: String,
    },
    #[error(
        "the configuration defines no remote repository: no page is ever fetched, so there is \
         nothing to purge"
    )]
    NoRemote,
    #[error("cannot purge {raw:?}: {source}")]
    Project {
        raw: String,
        #[source]
        source: NameError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the cache command stopped before it finished: {0}")]
    Interrupted(String),
}

impl CacheError {
    /// Whether the command line (or the configuration) is at fault rather than the store:
    /// such failures exit 2, the others 1 (SPEC §9).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            CacheError::UnknownRepository { .. }
                | CacheError::NotRemote { .. }
                | CacheError::NoRemote
                | CacheError::Project { .. }
        )
    }
}

/// The repositories whose pages `cache purge` forgets: `repository` when given (it must be a
/// remote one), else every remote repository of the configuration.
pub fn purge_targets(
    config: &Config,
    repository: Option<&str>,
) -> Result<Vec<RepoName>, CacheError> {
    let remotes: Vec<&RepoName> = config
        .repositories
        .iter()
        .filter(|r| matches!(r.kind, RepositoryKind::Remote(_)))
        .map(|r| &r.name)
        .collect();
    let list = |names: &mut dyn Iterator<Item = &RepoName>| {
        names
            .map(RepoName::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(raw) = repository else {
        if remotes.is_empty() {
            return Err(CacheError::NoRemote);
        }
        return Ok(remotes.into_iter().cloned().collect());
    };
    let found = RepoName::parse(raw)
        .ok()
        .and_then(|name| config.repository(&name));
    let Some(found) = found else {
        return Err(CacheError::UnknownRepository {
            name: raw.to_owned(),
            known: list(&mut config.repositories.iter().map(|r| &r.name)),
        });
    };
    match &found.kind {
        RepositoryKind::Remote(_) => Ok(vec![found.name.clone()]),
        // A group's pages are its members': purging it purges its remote members.
        RepositoryKind::Group(_) => Ok(config
            .sources_of(&found.name)
            .into_iter()
            .filter(|(source, _)| matches!(source.kind, RepositoryKind::Remote(_)))
            .map(|(source, _)| source.name.clone())
            .collect()),
        kind @ RepositoryKind::Hosted => Err(CacheError::NotRemote {
            name: found.name.clone(),
            kind: kind.type_name(),
            remotes: list(&mut remotes.into_iter()),
        }),
    }
}

/// The project a purge names, normalised (PEP 503).
pub fn purge_project(raw: &str) -> Result<ProjectName, CacheError> {
    ProjectName::parse(raw).map_err(|source| CacheError::Project {
        raw: raw.to_owned(),
        source,
    })
}

/// Runs `request` on `store`; `config` names the repositories a purge may concern. Blocking
/// (verify reads every stored body): async callers run it on a blocking thread.
pub fn execute(store: &Store, config: &Config, request: &Request) -> Result<Report, CacheError> {
    Ok(match request {
        Request::Stats => {
            let stats = store.stats();
            let (hosted_files, hosted_bytes) = store.unevictable();
            Report::Stats(StatsReport {
                store: store.path().display().to_string(),
                files: stats.artifacts,
                bytes: stats.artifact_bytes,
                hosted_files,
                hosted_bytes,
                pages: stats.pages,
                max_size: stats.max_size,
            })
        }
        Request::Verify {
            forget_damaged_uploads,
        } => Report::Verify(store.verify(*forget_damaged_uploads)?.into()),
        Request::Gc { max_size } => {
            let evicted = store.gc(*max_size)?;
            let stats = store.stats();
            Report::Gc(GcReport {
                max_size: *max_size,
                evicted_files: evicted.files,
                evicted_bytes: evicted.bytes,
                files: stats.artifacts,
                bytes: stats.artifact_bytes,
                hosted_bytes: store.unevictable().1,
            })
        }
        Request::Purge {
            project,
            repository,
        } => {
            let project = purge_project(project)?;
            let targets = purge_targets(config, repository.as_deref())?;
            // A page fetched a moment ago may still be queued for the store: let it land
            // first, or it would be stored again right after being forgotten.
            store.flush()?;
            let mut repositories = Vec::with_capacity(targets.len());
            for target in targets {
                let forgotten = store.forget_project(target.as_ref(), project.as_str())? > 0;
                repositories.push((target.to_string(), forgotten));
            }
            Report::Purge(PurgeReport {
                project: project.as_str().to_owned(),
                repositories,
            })
        }
        Request::OriginExplain {
            repository,
            package,
            version,
        } => Report::Origin(crate::origin::explain::explain(
            store,
            config,
            repository,
            package,
            version.as_deref(),
        )?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        crate::config::parse(
            "[server]\ndefault_repository = \"pypi\"\n\
             [[repository]]\nname = \"pypi\"\ntype = \"remote\"\nurl = \"\"\n\
             [[repository]]\nname = \"mirror\"\ntype = \"remote\"\nurl = \"\"\n\
             [[repository]]\nname = \"internal\"\ntype = \"hosted\"\n",
            "proxy.toml",
            &|_| None,
        )
        .unwrap()
    }

    #[test]
    fn purge_targets_every_remote_or_the_one_named() {
        let config = config();
        let names =
            |targets: Vec<RepoName>| targets.iter().map(RepoName::to_string).collect::<Vec<_>>();
        assert_eq!(
            names(purge_targets(&config, None).unwrap()),
            ["pypi", "mirror"]
        );
        assert_eq!(
            names(purge_targets(&config, Some("mirror")).unwrap()),
            ["mirror"]
        );
        let unknown = purge_targets(&config, Some("nope")).unwrap_err();
        assert!(unknown.is_usage());
        assert_eq!(
            unknown.to_string(),
            "no repository named \"nope\" in the configuration; it defines: pypi, mirror, internal"
        );
        let hosted = purge_targets(&config, Some("internal")).unwrap_err();
        assert!(hosted.is_usage());
        let text = hosted.to_string();
        assert!(
            text.contains("repository internal is hosted") && text.contains("(pypi, mirror)"),
            "{text}"
        );
    }

    #[test]
    fn purge_projects_are_normalised_and_bad_ones_refused() {
        assert_eq!(purge_project("WGfx__App").unwrap().as_str(), "wgfx-app");
        let error = purge_project("../etc").unwrap_err();
        assert!(error.is_usage());
        assert!(error.to_string().starts_with("cannot purge \"../etc\": "));
    }
}
