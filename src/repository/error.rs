//! Why the repository layer could not serve a request, and the status each reason is.
//!
//! Every kind's failures end up here, so the HTTP front turns one type into a response: the
//! status, a one-line reason a person can act on, and what refused (a rule) when something did.

use http::StatusCode;

use super::cached::CacheStatus;
use super::hosted::HostedError;
use super::remote::RemoteError;
use crate::config::RepoName;
use crate::simple::name::ProjectName;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("no repository named {name}; this server has: {}", known.join(", "))]
    NoRepository { name: RepoName, known: Vec<String> },
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
    /// Refused by download rules: what was asked for, and the rules that refused it (as
    /// `policy::enforce::describe_rules` writes them).
    #[error("{what} is denied by {rules}")]
    Denied {
        what: String,
        rules: String,
        /// How the page was obtained, for a page refused whole.
        cache: Option<CacheStatus>,
    },
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Hosted(#[from] HostedError),
}

impl ServeError {
    /// The HTTP status a client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ServeError::NoRepository { .. } | ServeError::FileNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            ServeError::Denied { .. } => StatusCode::FORBIDDEN,
            ServeError::Remote(error) => error.status(),
            ServeError::Hosted(error) => error.status(),
        }
    }

    /// The rules (or controls) that refused, for the `X-Wheelgate-Denied` header.
    pub fn denied_by(&self) -> Option<&str> {
        match self {
            ServeError::Denied { rules, .. } => Some(rules),
            _ => None,
        }
    }

    /// How the page behind a refusal was obtained, for `X-Wheelgate-Cache`.
    pub fn cache_status(&self) -> Option<CacheStatus> {
        match self {
            ServeError::Denied { cache, .. } => *cache,
            _ => None,
        }
    }
}
