//! Why the repository layer could not serve a request, and the status each reason is.
//!
//! Every kind's failures end up here, so the HTTP front turns one type into a response: the
//! status, a one-line reason a person can act on, and what refused (a rule) when something did.

use http::StatusCode;

use super::cached::CacheStatus;
use super::group::GroupError;
use super::hosted::HostedError;
use super::remote::RemoteError;
use crate::access::AuthError;
use crate::config::RepoName;
use crate::simple::name::ProjectName;
use crate::store::NoSpace;
use crate::upload::UploadError;

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
    #[error(
        "version {version} of {project} is already offered by the upstream of repository \
         {upstream}, which group {group} serves with {repo}: publishing it to {repo} would shadow \
         it; publish another version, or block the upstream for {project} with a \
         [[package_origin]]"
    )]
    OfferedUpstream {
        repo: RepoName,
        project: ProjectName,
        version: String,
        upstream: RepoName,
        group: RepoName,
    },
    #[error(
        "repository {repo} is a {kind} repository and takes no uploads; publish to a hosted \
         repository{}",
        hosted_list(.hosted)
    )]
    NotHosted {
        repo: RepoName,
        kind: &'static str,
        hosted: Vec<String>,
    },
    #[error(
        "the upload is {length} bytes, more than this server accepts ({limit} bytes, \
         [server] max_upload_size)"
    )]
    UploadTooLarge { length: u64, limit: u64 },
    /// The store's disk has no room for the upload.
    #[error("the upload to repository {repo} was refused and nothing was stored: {source}")]
    UploadNoSpace {
        repo: RepoName,
        #[source]
        source: NoSpace,
    },
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Upload(#[from] UploadError),
    #[error("the upload could not be checked: {reason}")]
    UploadTask { reason: String },
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Hosted(#[from] HostedError),
    #[error(transparent)]
    Group(#[from] GroupError),
}

impl ServeError {
    /// The HTTP status a client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ServeError::NoRepository { .. } | ServeError::FileNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            ServeError::Denied { .. } => StatusCode::FORBIDDEN,
            ServeError::NotHosted { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ServeError::OfferedUpstream { .. } => StatusCode::CONFLICT,
            ServeError::UploadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ServeError::UploadNoSpace { .. } => StatusCode::INSUFFICIENT_STORAGE,
            ServeError::Auth(error) => error.status(),
            ServeError::Upload(error) => error.status(),
            ServeError::UploadTask { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ServeError::Remote(error) => error.status(),
            ServeError::Hosted(error) => error.status(),
            ServeError::Group(error) => error.status(),
        }
    }

    /// The rules (or controls) that refused, for the `X-Wheelgate-Denied` header.
    pub fn denied_by(&self) -> Option<&str> {
        match self {
            ServeError::Denied { rules, .. } => Some(rules),
            ServeError::Remote(error) => error.denied_by(),
            _ => None,
        }
    }

    /// True for a 502/503/504 that comes from an upstream's failure, after the retries this
    /// wheelgate makes: marked `X-Wheelgate-Retried`, so that a wheelgate in front does not
    /// retry it again.
    pub fn after_upstream_retries(&self) -> bool {
        let retryable = matches!(self.status().as_u16(), 502..=504);
        retryable
            && match self {
                ServeError::Remote(error) => error.from_upstream(),
                ServeError::Group(error) => error.from_upstream(),
                _ => false,
            }
    }

    /// True when the client should send (other) credentials: the response carries a
    /// `WWW-Authenticate` challenge.
    pub fn wants_credentials(&self) -> bool {
        matches!(self, ServeError::Auth(error) if error.status() == StatusCode::UNAUTHORIZED)
    }

    /// How the page behind a refusal was obtained, for `X-Wheelgate-Cache`.
    pub fn cache_status(&self) -> Option<CacheStatus> {
        match self {
            ServeError::Denied { cache, .. } => *cache,
            _ => None,
        }
    }
}

fn hosted_list(hosted: &[String]) -> String {
    if hosted.is_empty() {
        " (this server has none: add a [[repository]] with type = \"hosted\")".to_owned()
    } else {
        format!(": {}", hosted.join(", "))
    }
}
