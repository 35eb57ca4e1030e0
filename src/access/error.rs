//! Why a request was not let in, worded for the person at the client and mapped to its status.
//!
//! 401 means "say who you are" (again): no credentials where they are needed, or credentials that
//! do not hold. 403 means "you are known, but may not do this", and names the role and the
//! repository, so that the message tells an administrator exactly which line of `proxy.toml` to
//! change. No variant holds a password, a token or a hash, so no message, log line or `Debug`
//! output can show one.

use std::fmt;

use http::StatusCode;

use super::header::HeaderProblem;
use crate::config::{RepoName, Role, Roles, UserName};

/// The `WWW-Authenticate` challenge the front sends with every 401 ([`AuthError::status`]).
pub const CHALLENGE: &str = "Basic realm=\"wheelgate\"";

/// Why authentication or authorisation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// An anonymous client asked for what needs a user: publishing always, reading when
    /// `anonymous_read = false`.
    #[error("{}", credentials_required(*.role, .repository))]
    CredentialsRequired { role: Role, repository: RepoName },
    /// The `Authorization` header cannot be read.
    #[error("the Authorization header cannot be used: {0}; send a user name and password (or token) with HTTP Basic")]
    Malformed(HeaderProblem),
    /// No `[[user]]` has the name sent. `None` when the name sent is not even a valid user name
    /// (it is then not repeated, since it could be anything).
    #[error("{}", unknown_user(.name.as_ref()))]
    UnknownUser { name: Option<UserName> },
    /// The user exists, but the password (or token) sent is not its own.
    #[error("wrong password or token for user {name}")]
    WrongPassword { name: UserName },
    /// The user name `__token__` was sent with a token that no token user has.
    #[error("no user has this token (user name __token__); check the token, or send the user's own name with it")]
    UnknownToken,
    /// The user's token file cannot be read on the server, so no token can be checked for it.
    #[error("user {name} cannot log in now: the server cannot read its token file (the server log says why); ask the administrator")]
    TokenUnavailable { name: UserName },
    /// A known user without the role on that repository.
    #[error("user {user} has no {role} role on repository {repository}{}", forbidden_reason(.roles, .limited_to.as_deref()))]
    Forbidden {
        user: UserName,
        role: Role,
        repository: RepoName,
        /// The roles the user does have.
        roles: Roles,
        /// The repositories its roles are limited to, when the limit is why.
        limited_to: Option<Vec<RepoName>>,
    },
    /// The password could not be checked at all (a bug, not a wrong password).
    #[error("the password of user {name} could not be checked ({reason}); try again, and tell the administrator if this persists")]
    Internal { name: UserName, reason: String },
}

impl AuthError {
    /// 401 when the client should (re)send credentials, 403 when a known user lacks a right, 500
    /// when the check itself failed. The front adds `WWW-Authenticate: `[`CHALLENGE`] to a 401.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::CredentialsRequired { .. }
            | AuthError::Malformed(_)
            | AuthError::UnknownUser { .. }
            | AuthError::WrongPassword { .. }
            | AuthError::UnknownToken
            | AuthError::TokenUnavailable { .. } => StatusCode::UNAUTHORIZED,
            AuthError::Forbidden { .. } => StatusCode::FORBIDDEN,
            AuthError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

fn credentials_required(role: Role, repository: &RepoName) -> String {
    match role {
        Role::Read => format!(
            "repository {repository} is not open to anonymous clients; send the user name and password of a user with the read role (HTTP Basic)"
        ),
        Role::Publish => format!(
            "publishing to repository {repository} needs a user; send the user name and password of a user with the publish role (HTTP Basic)"
        ),
    }
}

fn unknown_user(name: Option<&UserName>) -> String {
    match name {
        Some(name) => format!("unknown user {name}; check the user name"),
        None => "unknown user: the user name sent is not one a user can have ([A-Za-z0-9._-], at most 64 characters); check the user name".to_owned(),
    }
}

fn forbidden_reason(roles: &Roles, limited_to: Option<&[RepoName]>) -> String {
    match limited_to {
        Some(repositories) => format!(
            " (its roles apply only to repositories {})",
            Joined(repositories)
        ),
        None => format!(" (its roles: {roles})"),
    }
}

/// `a, b, c`.
struct Joined<'a>(&'a [RepoName]);

impl fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, name) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name.as_str())?;
        }
        Ok(())
    }
}
