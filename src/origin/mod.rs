//! Origin controls (SPEC §6): where a version of a package may come from, which is what stops a
//! public package from shadowing a private name (dependency confusion).
//!
//! Download rules decide *which versions* may be served; origin controls decide *through which
//! way in* (an upload, a remote's upstream, a group's member) a package may get its versions.
//! `pattern` parses the package group patterns of §6.1, `group` holds one `[[package_group]]` as
//! configured, `groups` matches a package to its group and resolves INHERIT once at load, and
//! `cli` prints the groups for `wheelgate origin list`. `record` and `package` are the
//! package-level controls recorded in the store when a package's first version arrives, and the
//! decision over both levels; `explain` answers `wheelgate origin explain`.

pub mod cli;
pub mod explain;
mod group;
mod groups;
pub mod package;
mod pattern;
pub mod record;

pub use self::group::{PackageGroupConfig, Restriction, Setting};
pub use self::groups::{
    Effective, GroupExplanation, GroupVerdict, PackageGroups, RestrictionExplanation, TreeNode,
};
pub use self::pattern::{Pattern, PatternError};
pub use crate::config::Mode;
