//! The status page at `/`: what a platform engineer checks first — whether each repository
//! reaches its upstream, how full the store is, whether the cache works, what the policy refused
//! lately, what failed upstream, and the lines to give pip and uv.
//!
//! This module gathers those facts from the running configuration and the process's metrics into
//! a plain [`StatusView`]; `render` turns a view into HTML, so the page is tested without a
//! server.

mod render;

use std::time::SystemTime;

use crate::app::App;
use crate::metrics::recent::{DenialRecord, UpstreamErrorRecord};
use crate::metrics::UpstreamState;
use crate::repository::Description;
use crate::store::StoreStats;

pub use render::render;

/// How a repository is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoState {
    /// A remote whose last upstream request succeeded.
    Online,
    /// A remote that has not needed its upstream since start.
    NotContacted,
    /// A remote with no upstream (no url, or `offline = true`): it serves its store only.
    Offline,
    /// A remote whose upstream fails, serving stored pages meanwhile.
    ServingStale { since: SystemTime },
    /// A remote whose upstream fails.
    Failing { since: SystemTime },
    /// A hosted repository or a group: nothing upstream of its own.
    Local,
}

/// One repository's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRow {
    pub name: String,
    pub kind: &'static str,
    /// The upstream without credentials, or what the repository holds.
    pub detail: String,
    pub state: RepoState,
    pub is_default: bool,
}

/// Everything the page shows.
#[derive(Debug, Clone)]
pub struct StatusView {
    pub now: SystemTime,
    pub started: SystemTime,
    /// The default repository's index URL, for pip and uv.
    pub index_url: String,
    /// The host pip must trust when the index is plain http; `None` for https.
    pub trusted_host: Option<String>,
    pub repositories: Vec<RepoRow>,
    pub store: StoreStats,
    /// Cache outcomes since start: hits, and all.
    pub cache_hits: u64,
    pub cache_requests: u64,
    pub rules: usize,
    pub hidden_files: u64,
    /// Slow password verifications since start (successful ones are remembered for minutes).
    pub password_checks: u64,
    pub denials: Vec<DenialRecord>,
    pub upstream_errors: Vec<UpstreamErrorRecord>,
}

/// The state of a repository from its description and its upstream's recent outcomes.
fn state_of(description: &Description, upstream: UpstreamState) -> RepoState {
    match (description.kind, description.online, upstream) {
        ("remote", false, _) => RepoState::Offline,
        ("remote", true, UpstreamState::NotContacted) => RepoState::NotContacted,
        ("remote", true, UpstreamState::Online) => RepoState::Online,
        ("remote", true, UpstreamState::ServingStale { since }) => {
            RepoState::ServingStale { since }
        }
        ("remote", true, UpstreamState::Failing { since }) => RepoState::Failing { since },
        _ => RepoState::Local,
    }
}

/// The default repository's index URL and the host pip must trust: under `public_url` when
/// set, else under the `Host` the client used (shown, never trusted for anything else).
fn index_url(app: &App, host: Option<&str>) -> (String, Option<String>) {
    if let Some(base) = &app.config.server.public_url {
        let url = format!("{}/simple/", base.as_str().trim_end_matches('/'));
        let trusted = (base.scheme() == "http").then(|| base.host_str().unwrap_or("").to_owned());
        return (url, trusted);
    }
    let host = host.unwrap_or("localhost");
    let scheme = if app.config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let trusted = (scheme == "http").then(|| {
        // pip compares the host without the port.
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(name, _)| name)
            .to_owned()
    });
    (format!("{scheme}://{host}/simple/"), trusted)
}

/// Gathers what the page shows now.
pub fn view(app: &App, host: Option<&str>) -> StatusView {
    let repositories = &app.repositories;
    let metrics = repositories.metrics();
    let default = repositories.default_name();
    let rows = repositories
        .describe()
        .into_iter()
        .map(|(name, description)| {
            let upstream = repositories.repo_metrics(Some(name)).upstream_state();
            RepoRow {
                name: name.to_string(),
                kind: description.kind,
                state: state_of(&description, upstream),
                detail: description.detail,
                is_default: name == default,
            }
        })
        .collect();
    let (cache_hits, cache_requests) = metrics.cache_totals();
    let (index_url, trusted_host) = index_url(app, host);
    let counters = repositories.counters();
    StatusView {
        now: SystemTime::now(),
        started: metrics.started(),
        index_url,
        trusted_host,
        repositories: rows,
        store: repositories.store_stats(),
        cache_hits,
        cache_requests,
        rules: repositories.rule_count(),
        hidden_files: counters
            .hidden_files
            .load(std::sync::atomic::Ordering::Relaxed),
        password_checks: repositories.users().verifications(),
        denials: metrics.recent_denials(),
        upstream_errors: metrics.recent_upstream_errors(),
    }
}

/// The page's HTML.
pub fn page(app: &App, host: Option<&str>) -> String {
    render(&view(app, host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(online: bool) -> Description {
        Description {
            kind: "remote",
            detail: "upstream http://127.0.0.1:9/simple/".into(),
            online,
        }
    }

    #[test]
    fn a_remote_state_follows_its_upstream() {
        let since = SystemTime::UNIX_EPOCH;
        assert_eq!(
            state_of(&remote(false), UpstreamState::Online),
            RepoState::Offline
        );
        assert_eq!(
            state_of(&remote(true), UpstreamState::Online),
            RepoState::Online
        );
        assert_eq!(
            state_of(&remote(true), UpstreamState::ServingStale { since }),
            RepoState::ServingStale { since }
        );
        assert_eq!(
            state_of(&remote(true), UpstreamState::Failing { since }),
            RepoState::Failing { since }
        );
        let hosted = Description {
            kind: "hosted",
            detail: String::new(),
            online: true,
        };
        assert_eq!(
            state_of(&hosted, UpstreamState::NotContacted),
            RepoState::Local
        );
    }
}
