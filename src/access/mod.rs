//! Clients' users: who a request comes from, and what it may do (SPEC §8).
//!
//! A deployment that should not serve everyone declares `[[user]]`s in `proxy.toml`, each with a
//! password hash or a token file, its roles (`read`, `publish`) and optionally the repositories
//! they apply to, and says with `[access] anonymous_read` whether clients without credentials
//! may read. This module turns an `Authorization` header into a [`Caller`] and answers whether
//! that caller may act with a [`Role`] on a repository, with an [`AuthError`] that carries the
//! HTTP status and a sentence a person can act on. It keeps password checks (slow on purpose) off
//! the async workers and out of the hot path, and keeps every password, token and hash out of
//! messages, logs and `Debug` output.
//!
//! It also makes the hashes: [`hash_password`] is `wheelgate hash-password`, and
//! [`cli::read_password`] reads the password it hashes.

pub mod cli;
mod error;
mod header;
mod password;
mod token;
mod users;
mod verified;

pub use crate::config::{Role, Roles, UserName};
pub use error::{AuthError, CHALLENGE};
pub use header::HeaderProblem;
pub use password::{hash_password, HashPasswordError};
pub use users::{Caller, Users};
