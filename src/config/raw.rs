//! The shape of `proxy.toml` exactly as written, before any value is interpreted.
//!
//! serde with `deny_unknown_fields` does the structural work (unknown keys, wrong nesting) and
//! toml attaches a line to each of those errors. Every leaf is kept as a [`Spanned`] [`Scalar`] so
//! that the typed layer in `config.rs` can expand `${VAR}` in each string value and still report
//! the line of any value it rejects. Keeping leaves loosely typed here also lets a user write an
//! integer or boolean as a string (`retries = "${RETRIES:-3}"`) to take it from the environment.
//!
//! Tables are deliberately not wrapped in `Spanned`: toml 0.8 cannot give a span to a table that
//! is only created implicitly (`[server.tls]` with no `[server]`, or `auth.password_file = …`),
//! and fails with a confusing "expected a borrowed string". Only `[[repository]]`, `[[rule]]`,
//! `[[package_group]]` and `[[user]]` entries, which are always explicit, leaf values and lists of them carry spans.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

pub(super) type Field = Option<Spanned<Scalar>>;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub server: Option<RawServer>,
    pub store: Option<RawStore>,
    pub access: Option<RawAccess>,
    #[serde(default)]
    pub repository: Vec<Spanned<RawRepository>>,
    #[serde(default)]
    pub rule: Vec<Spanned<RawRule>>,
    #[serde(default)]
    pub user: Vec<Spanned<RawUser>>,
    #[serde(default)]
    pub package_group: Vec<Spanned<RawPackageGroup>>,
    #[serde(default)]
    pub package_origin: Vec<Spanned<RawPackageOrigin>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub listen: Field,
    pub default_repository: Field,
    pub public_url: Field,
    pub tls: Option<RawTls>,
    pub shutdown_grace: Field,
    pub max_upload_size: Field,
    pub max_concurrent_fetches: Field,
    pub request_header_timeout: Field,
    pub upload_idle_timeout: Field,
    pub max_connections: Field,
    pub max_file_size: Field,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub cert_file: Field,
    pub key_file: Field,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub path: Field,
    pub max_size: Field,
    pub memory_cache: Field,
    pub min_free_space: Field,
    pub shared: Option<RawShared>,
}

/// `[store.shared]`: the bucket central replicas share.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShared {
    pub endpoint: Field,
    pub bucket: Field,
    pub region: Field,
    pub prefix: Field,
    pub access_key_id: Field,
    pub secret_access_key_file: Field,
    pub idle_timeout: Field,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccess {
    pub anonymous_read: Field,
}

/// One `[[repository]]` table. It carries the keys of every repository type so that a hosted or
/// group repository is refused for its type, not for a key the remote type lacks.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRepository {
    pub name: Field,
    #[serde(rename = "type")]
    pub kind: Field,
    pub url: Field,
    pub index_ttl: Field,
    pub negative_ttl: Field,
    pub connect_timeout: Field,
    pub first_byte_timeout: Field,
    pub idle_timeout: Field,
    pub retries: Field,
    pub ca_file: Field,
    pub native_roots: Field,
    pub offline: Field,
    pub auth: Option<RawAuth>,
    /// Only meaningful for `type = "group"`: the names of its members.
    pub members: Option<Spanned<Vec<Spanned<Scalar>>>>,
    /// Hosts on private, loopback or link-local addresses that file links may point to.
    pub file_hosts: Option<Vec<Spanned<Scalar>>>,
}

/// One `[[rule]]` table (SPEC §5).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub repository: Field,
    pub name: Field,
    pub action: Field,
    pub operation: Field,
    pub package: Field,
    pub condition: Field,
    pub mode: Field,
}

/// A list of repository names with its span.
pub(super) type NameList = Option<Spanned<Vec<Spanned<Scalar>>>>;

/// One `[[package_group]]` table (SPEC §6).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPackageGroup {
    pub pattern: Field,
    pub description: Field,
    pub contact: Field,
    pub publish: Field,
    pub external_upstream: Field,
    pub internal_upstream: Field,
    pub publish_repositories: NameList,
    pub external_upstream_repositories: NameList,
    pub internal_upstream_repositories: NameList,
    pub mode: Field,
}

/// One `[[package_origin]]` table (SPEC §6).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPackageOrigin {
    pub repository: Field,
    pub package: Field,
    pub publish: Field,
    pub upstream: Field,
}

/// One `[[user]]` table (SPEC §8).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    pub name: Field,
    pub password_hash: Field,
    pub token_file: Field,
    pub roles: Option<Spanned<Vec<Spanned<Scalar>>>>,
    pub repositories: Option<Spanned<Vec<Spanned<Scalar>>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub username: Field,
    pub password_file: Field,
    pub auth_hosts: Option<Vec<Spanned<Scalar>>>,
}

/// A leaf value as TOML typed it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Scalar {
    Str(String),
    Int(i64),
    Bool(bool),
    Float(f64),
}

impl Scalar {
    /// How the value is described when it has the wrong type ("found an integer").
    pub fn kind(&self) -> &'static str {
        match self {
            Scalar::Str(_) => "a string",
            Scalar::Int(_) => "an integer",
            Scalar::Bool(_) => "a boolean",
            Scalar::Float(_) => "a decimal number",
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, a number or a boolean")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        i64::try_from(v)
            .map(Scalar::Int)
            .map_err(|_| E::custom(format!("{v} is too large")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(v))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }
}
