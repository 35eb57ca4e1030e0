//! `[[package_origin]]`: a package-level origin control written in the configuration (SPEC §6).
//! It overrides what the store recorded for one repository and package, and may name a package
//! that does not exist yet, reserving the name before its first upload.

use super::RepoName;
use crate::origin::record::Allowance;
use crate::simple::ProjectName;

/// One `[[package_origin]]` table, validated: the repository exists, the name is PEP 503
/// normalised, and no other entry names the same repository and package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageOriginConfig {
    pub repository: RepoName,
    pub package: ProjectName,
    /// `None`: the stored record (or the default, ALLOW) decides publishing.
    pub publish: Option<Allowance>,
    /// `None`: the stored record (or the default, ALLOW) decides upstreams.
    pub upstream: Option<Allowance>,
    /// Where the table starts, for messages.
    pub line: usize,
}
