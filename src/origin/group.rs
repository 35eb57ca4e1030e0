//! One `[[package_group]]` as configured (SPEC §6): its pattern, its three origin restrictions
//! and its mode, validated at load (lists name defined repositories of the right kind, a list
//! goes with `ALLOW_SPECIFIC_REPOSITORIES` and is not empty).

use std::fmt;

use super::pattern::Pattern;
use crate::config::{Mode, RepoName};

/// The ways a version of a package can enter a repository (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Restriction {
    /// Uploaded to a hosted repository.
    Publish,
    /// Fetched through a remote repository's upstream.
    ExternalUpstream,
    /// Taken by a group from one of its members.
    InternalUpstream,
}

impl Restriction {
    pub const ALL: [Restriction; 3] = [
        Restriction::Publish,
        Restriction::ExternalUpstream,
        Restriction::InternalUpstream,
    ];

    /// The configuration key: `publish`, `external_upstream`, `internal_upstream`.
    pub fn key(self) -> &'static str {
        match self {
            Restriction::Publish => "publish",
            Restriction::ExternalUpstream => "external_upstream",
            Restriction::InternalUpstream => "internal_upstream",
        }
    }

    /// The key of its list: `publish_repositories`, ….
    pub fn list_key(self) -> &'static str {
        match self {
            Restriction::Publish => "publish_repositories",
            Restriction::ExternalUpstream => "external_upstream_repositories",
            Restriction::InternalUpstream => "internal_upstream_repositories",
        }
    }

    /// The repository type its list names: hosted, remote or group.
    pub fn list_type(self) -> &'static str {
        match self {
            Restriction::Publish => "hosted",
            Restriction::ExternalUpstream => "remote",
            Restriction::InternalUpstream => "group",
        }
    }

    pub(super) fn index(self) -> usize {
        match self {
            Restriction::Publish => 0,
            Restriction::ExternalUpstream => 1,
            Restriction::InternalUpstream => 2,
        }
    }
}

/// The vendor's spelling: `PUBLISH`, `EXTERNAL_UPSTREAM`, `INTERNAL_UPSTREAM`.
impl fmt::Display for Restriction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Restriction::Publish => "PUBLISH",
            Restriction::ExternalUpstream => "EXTERNAL_UPSTREAM",
            Restriction::InternalUpstream => "INTERNAL_UPSTREAM",
        })
    }
}

/// One restriction of a group as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    Allow,
    Block,
    /// Only these repositories (at least one, each of the kind the restriction's list names).
    AllowSpecificRepositories(Vec<RepoName>),
    /// The setting of the parent group (SPEC §6.1).
    Inherit,
}

impl Setting {
    /// The configuration spelling of the setting's kind.
    pub fn as_str(&self) -> &'static str {
        match self {
            Setting::Allow => "ALLOW",
            Setting::Block => "BLOCK",
            Setting::AllowSpecificRepositories(_) => "ALLOW_SPECIFIC_REPOSITORIES",
            Setting::Inherit => "INHERIT",
        }
    }
}

/// One `[[package_group]]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageGroupConfig {
    pub pattern: Pattern,
    pub description: Option<String>,
    pub contact: Option<String>,
    pub publish: Setting,
    pub external_upstream: Setting,
    pub internal_upstream: Setting,
    pub mode: Mode,
    /// The line of its `[[package_group]]` header; `None` for the root group when the file does
    /// not configure it.
    pub line: Option<usize>,
}

impl PackageGroupConfig {
    /// The root group `/*` as it is when the file does not configure it: every origin allowed.
    pub fn implicit_root() -> PackageGroupConfig {
        PackageGroupConfig {
            pattern: Pattern::Root,
            description: None,
            contact: None,
            publish: Setting::Allow,
            external_upstream: Setting::Allow,
            internal_upstream: Setting::Allow,
            mode: Mode::Enforce,
            line: None,
        }
    }

    pub fn setting(&self, restriction: Restriction) -> &Setting {
        match restriction {
            Restriction::Publish => &self.publish,
            Restriction::ExternalUpstream => &self.external_upstream,
            Restriction::InternalUpstream => &self.internal_upstream,
        }
    }
}
