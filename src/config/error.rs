//! Errors of configuration loading, shaped so that every message names the file, the line, the key
//! and what to do about it.
//!
//! `wheelgate check` prints them as they are and a failed reload logs them, so the text is the
//! whole user interface of a configuration mistake.

use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;

use super::rule::RuleNameError;
use super::user::{PasswordHashError, UserNameError};
use super::values::{EnvError, RepoNameError};
use crate::origin::PatternError;
use crate::simple::NameError;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file itself could not be read.
    #[error("cannot read configuration file {}: {source}; check the path given with --config", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The text is not TOML, or does not have the shape of a `proxy.toml` (unknown key, a table
    /// where a value belongs, …). The message comes from the TOML parser, reworded.
    #[error("{origin}{}: {message}", position(*.line, *.column))]
    Syntax {
        origin: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// A value, or a combination of values, is not acceptable.
    #[error("{origin}{}: {}{problem}", position(*.line, None), key_prefix(.key))]
    Invalid {
        origin: String,
        line: Option<usize>,
        key: String,
        /// Boxed to keep `Result<_, ConfigError>` small on the happy path.
        problem: Box<Problem>,
    },
}

impl ConfigError {
    /// The 1-based line the error points at, when there is one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Syntax { line, .. } | ConfigError::Invalid { line, .. } => *line,
        }
    }

    /// What was wrong with a value, when the error is about one.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ConfigError::Invalid { problem, .. } => Some(problem),
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => None,
        }
    }
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

/// The repositories a group could have as members, for a message about one that is not defined.
fn other_repositories(defined: &[String]) -> String {
    if defined.is_empty() {
        "no other repository is defined".to_owned()
    } else {
        format!("the other repositories are {}", defined.join(", "))
    }
}

fn position(line: Option<usize>, column: Option<usize>) -> String {
    let mut out = String::new();
    if let Some(line) = line {
        let _ = write!(out, " line {line}");
        if let Some(column) = column {
            let _ = write!(out, ", column {column}");
        }
    }
    out
}

/// What is wrong with one value or one combination of values. Each message says what is
/// expected; the enclosing [`ConfigError`] adds the file, line and key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("{0}")]
    Env(EnvError),
    #[error("expected {expected}, found {found}")]
    WrongType {
        expected: &'static str,
        found: &'static str,
    },
    #[error("{0}")]
    RepoName(RepoNameError),
    #[error("{0}")]
    Duration(String),
    #[error("a duration is written as a string with a unit, e.g. \"{value}s\"; {value} alone could mean seconds or minutes")]
    BareDuration { value: i64 },
    #[error("{0}")]
    Size(String),
    #[error("must not be zero{hint}")]
    Zero { hint: &'static str },
    #[error("{value} is out of range: expected a whole number from {min} to {max}")]
    OutOfRange { value: i64, min: i64, max: i64 },
    #[error("\"{value}\" is not a whole number")]
    NotAnInteger { value: String },
    #[error("\"{value}\" is not a boolean; write true or false")]
    NotABoolean { value: String },
    #[error("must not be empty{hint}")]
    Empty { hint: &'static str },
    #[error("\"{value}\" is not an IP address and port ({reason}); write e.g. \"127.0.0.1:3141\" or \"[::]:3141\" (host names are not resolved here)")]
    ListenAddress { value: String, reason: String },
    #[error("\"{value}\" is not a usable URL: {reason}")]
    Url { value: String, reason: String },
    #[error("{} does not exist or is not a file ({reason}); {hint}", .path.display())]
    FileMissing {
        path: PathBuf,
        reason: String,
        hint: &'static str,
    },
    #[error("\"{value}\" is not a host name or host:port ({reason})")]
    AuthHost { value: String, reason: String },
    #[error(
        "a user name cannot contain ':' (HTTP basic auth separates it from the password with one)"
    )]
    UsernameWithColon,
    #[error("missing; {hint}")]
    MissingKey { hint: &'static str },
    #[error("repository type `{found}` is not one of remote, hosted, group")]
    UnknownRepositoryType { found: String },
    #[error("`{key}` only applies to repositories of type `{applies_to}`; remove it from this {this} repository")]
    NotForType {
        key: &'static str,
        applies_to: &'static str,
        this: &'static str,
    },
    #[error("`[[{section}]]` ({what}) is not supported yet by this version of wheelgate; remove it or comment it out")]
    UnsupportedSection {
        section: &'static str,
        what: &'static str,
    },
    #[error("anonymous_read = false would refuse every read, because no [[user]] has the read role; add a [[user]] with roles = [\"read\"], or leave it true")]
    NoReader,
    #[error("repository \"{name}\" is defined twice, at line {first_line} and at line {second_line}; rename one of them")]
    DuplicateRepository {
        name: String,
        first_line: usize,
        second_line: usize,
    },
    #[error("a group cannot be a member of itself; remove \"{name}\" from its members")]
    SelfMember { name: String },
    #[error("\"{name}\" is listed twice; list each member once, at the place its files should take precedence")]
    DuplicateMember { name: String },
    #[error("no repository is named \"{name}\"; {}; define it, or remove it from members", other_repositories(.defined))]
    UnknownMember { name: String, defined: Vec<String> },
    #[error("groups contain each other in a cycle: {}; remove one of these members", .cycle.join(" -> "))]
    GroupCycle { cycle: Vec<String> },
    #[error("no repository is named \"{name}\"; the defined repositories are {}", .defined.join(", "))]
    UnknownDefaultRepository { name: String, defined: Vec<String> },
    #[error("missing: with several repositories, say which one is served at /simple/, one of {}", .defined.join(", "))]
    AmbiguousDefaultRepository { defined: Vec<String> },
    #[error("no repository is defined; add a [[repository]] table (see the shipped proxy.toml)")]
    NoRepositories,
    #[error("{0}")]
    RuleName(RuleNameError),
    #[error("{0}")]
    ProjectName(NameError),
    #[error("\"{found}\" is not an action; write \"ALLOW\" or \"DENY\" (in capitals)")]
    UnknownAction { found: String },
    #[error("\"{found}\" is not an operation; the only one is \"DOWNLOAD\", the default, so the key can be left out")]
    UnknownOperation { found: String },
    #[error("no repository is named \"{name}\"; a rule belongs to one of the defined repositories: {}", .defined.join(", "))]
    UnknownRuleRepository { name: String, defined: Vec<String> },
    #[error("no repository is named \"{name}\"; a [[package_origin]] names one of the defined repositories: {}", .defined.join(", "))]
    UnknownOriginRepository { name: String, defined: Vec<String> },
    #[error("\"{written}\" is not a PEP 503 normalised name; write \"{normalised}\" (every spelling of a name reaches the same control)")]
    NotNormalisedPackage { written: String, normalised: String },
    #[error("\"{found}\" is neither \"ALLOW\" nor \"BLOCK\" (in capitals)")]
    UnknownAllowance { found: String },
    #[error("a [[package_origin]] sets publish, upstream or both; add publish = \"ALLOW\" or \"BLOCK\", or upstream = \"ALLOW\" or \"BLOCK\"")]
    EmptyPackageOrigin,
    #[error("`publish` only applies to hosted repositories, and \"{repository}\" is a {kind} repository; to let a hosted repository publish a name first ingested from an upstream, write publish = \"ALLOW\" in a [[package_origin]] for that hosted repository")]
    PublishNotHosted {
        repository: String,
        kind: &'static str,
    },
    #[error("package \"{package}\" of repository \"{repository}\" has two [[package_origin]] entries, at line {first_line} and at line {second_line}; merge them into one")]
    DuplicatePackageOrigin {
        repository: String,
        package: String,
        first_line: usize,
        second_line: usize,
    },
    #[error("repository \"{repository}\" has two rules named \"{name}\", at line {first_line} and at line {second_line}; rule names are unique per repository, rename one of them")]
    DuplicateRuleName {
        repository: String,
        name: String,
        first_line: usize,
        second_line: usize,
    },
    #[error("repository \"{repository}\" can have only one repository-wide rule (a rule without `package`), but rule \"{first}\" (line {first_line}) and rule \"{second}\" (line {second_line}) both are; merge their conditions into one rule, or give one of them a package")]
    SecondRepositoryWideRule {
        repository: String,
        first: String,
        first_line: usize,
        second: String,
        second_line: usize,
    },
    #[error("repository \"{repository}\" can have only one rule per package, but rule \"{first}\" (line {first_line}) and rule \"{second}\" (line {second_line}) both cover package \"{package}\"; merge their conditions into one rule")]
    SecondPackageRule {
        repository: String,
        package: String,
        first: String,
        first_line: usize,
        second: String,
        second_line: usize,
    },
    #[error("{0}")]
    UserName(UserNameError),
    #[error("user \"{name}\" is defined twice, at line {first_line} and at line {second_line}; rename or remove one of them")]
    DuplicateUser {
        name: String,
        first_line: usize,
        second_line: usize,
    },
    #[error("a user has either a password_hash or a token_file, not both; remove one of them")]
    TwoCredentials,
    #[error("{0}")]
    PasswordHash(PasswordHashError),
    #[error("\"{found}\" is not a role; the roles are \"read\" and \"publish\" (in lowercase)")]
    UnknownRole { found: String },
    #[error("no repository is named \"{name}\"; a user's repositories are among the defined ones: {}", .defined.join(", "))]
    UnknownUserRepository { name: String, defined: Vec<String> },
    #[error("\"{found}\" is not a mode; write \"enforce\" (the default) or \"audit\" (decisions are logged and counted as would-deny, nothing is refused)")]
    UnknownMode { found: String },
    #[error("{0}")]
    Pattern(PatternError),
    #[error("the pattern \"{pattern}\" is used by two package groups, at line {first_line} and at line {second_line}; merge them into one")]
    DuplicatePattern {
        pattern: String,
        first_line: usize,
        second_line: usize,
    },
    #[error("\"{found}\" is not an origin setting; write \"ALLOW\", \"BLOCK\", \"ALLOW_SPECIFIC_REPOSITORIES\" or \"INHERIT\" (in capitals)")]
    UnknownSetting { found: String },
    #[error("the root group /* has no parent to inherit from; write \"ALLOW\", \"BLOCK\" or \"ALLOW_SPECIFIC_REPOSITORIES\", or leave the key out (ALLOW)")]
    RootInherit,
    #[error("`{list_key}` is only read when {key} = \"ALLOW_SPECIFIC_REPOSITORIES\", but {key} is {setting}; set {key} = \"ALLOW_SPECIFIC_REPOSITORIES\" or remove the list")]
    ListWithoutSpecificRepositories {
        list_key: &'static str,
        key: &'static str,
        setting: &'static str,
    },
    #[error("{key} = \"ALLOW_SPECIFIC_REPOSITORIES\" needs `{list_key}` naming at least one {kind} repository; list them, or write \"BLOCK\" to allow none")]
    EmptyRepositoryList {
        key: &'static str,
        list_key: &'static str,
        kind: &'static str,
    },
    #[error("no repository is named \"{name}\"; `{list_key}` names {kind} repositories, {}", kind_candidates(.kind, .candidates))]
    UnknownListRepository {
        name: String,
        list_key: &'static str,
        kind: &'static str,
        candidates: Vec<String>,
    },
    #[error("\"{name}\" is a {found} repository, but `{list_key}` names {kind} repositories ({why}); {}", kind_candidates(.kind, .candidates))]
    WrongRepositoryKind {
        name: String,
        found: &'static str,
        list_key: &'static str,
        kind: &'static str,
        why: &'static str,
        candidates: Vec<String>,
    },
    #[error("\"{name}\" is listed twice; list each repository once")]
    DuplicateListEntry { name: String },
}

/// The repositories of one kind, for a message about a list that names another.
fn kind_candidates(kind: &str, candidates: &[String]) -> String {
    if candidates.is_empty() {
        format!("and no {kind} repository is defined")
    } else {
        format!("the {kind} repositories are {}", candidates.join(", "))
    }
}
