//! The values of a `[[user]]` table (SPEC §8): user names, roles, password hashes, credentials.
//!
//! They are parsed once here, when the configuration loads, so that authentication
//! (`crate::access`) handles only valid values: a hash that could never match, or a role that
//! does not exist, is refused by `wheelgate check` with the user and the line, instead of showing
//! up as a wall of 401s after a deployment. Checking a password against a hash is not done here;
//! that is `crate::access`'s job.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use super::values::RepoName;

/// The pattern every user name follows, quoted in error messages.
const USER_NAME_PATTERN: &str = "[A-Za-z0-9._-]{1,64}";

/// The longest user name accepted, in bytes (all its characters are ASCII).
pub const MAX_USER_NAME_LEN: usize = 64;

/// The HTTP Basic user name with which a token user may log in without giving its own name, as
/// upload tools do with index tokens. No configured user may have it.
pub const TOKEN_USER_NAME: &str = "__token__";

/// The name of a `[[user]]`, as sent in the user-name half of HTTP Basic credentials.
///
/// `[A-Za-z0-9._-]{1,64}`: safe to print in a log line or an error message as it is, and never
/// containing the `:` that separates it from the password. Compared exactly (case-sensitive).
/// Cheap to clone (the text is shared), since every authenticated request carries one.
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct UserName(Arc<str>);

/// Why a string is not a [`UserName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserNameError {
    #[error("a user name cannot be empty; names are {USER_NAME_PATTERN}")]
    Empty,
    #[error("the user name is {len} bytes long; names are at most {MAX_USER_NAME_LEN} characters ({USER_NAME_PATTERN})")]
    TooLong { len: usize },
    #[error("the user name contains {ch:?}; names are {USER_NAME_PATTERN}")]
    InvalidCharacter { ch: char },
    #[error("the user name {TOKEN_USER_NAME} is reserved: token users log in with it instead of their own name; choose another name")]
    Reserved,
}

impl UserName {
    /// Validates `name` as a user name.
    pub fn parse(name: &str) -> Result<UserName, UserNameError> {
        if name.is_empty() {
            return Err(UserNameError::Empty);
        }
        if let Some(ch) = name
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(UserNameError::InvalidCharacter { ch });
        }
        if name.len() > MAX_USER_NAME_LEN {
            return Err(UserNameError::TooLong { len: name.len() });
        }
        if name == TOKEN_USER_NAME {
            return Err(UserNameError::Reserved);
        }
        Ok(UserName(Arc::from(name)))
    }

    /// The name as written in the configuration.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for UserName {
    type Err = UserNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UserName::parse(s)
    }
}

/// What a user may do in a repository.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Role {
    /// Read index pages and download files.
    Read,
    /// Upload distributions.
    Publish,
}

impl Role {
    /// Every role, in the order they are listed in messages.
    pub const ALL: [Role; 2] = [Role::Read, Role::Publish];

    /// The role written as in `roles = [...]`: `read` or `publish`, in lowercase.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "read" => Some(Role::Read),
            "publish" => Some(Role::Publish),
            _ => None,
        }
    }

    /// The role as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Publish => "publish",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The roles of one user: a non-empty set of [`Role`]s. Neither implies the other.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Roles {
    read: bool,
    publish: bool,
}

impl Roles {
    /// The set of `roles`; `None` when it is empty, since a user without a role could do nothing
    /// that an anonymous client cannot. Repeated roles count once.
    pub fn of(roles: impl IntoIterator<Item = Role>) -> Option<Roles> {
        let mut set = Roles {
            read: false,
            publish: false,
        };
        for role in roles {
            match role {
                Role::Read => set.read = true,
                Role::Publish => set.publish = true,
            }
        }
        (set.read || set.publish).then_some(set)
    }

    /// Whether `role` is one of them.
    pub fn contains(self, role: Role) -> bool {
        match role {
            Role::Read => self.read,
            Role::Publish => self.publish,
        }
    }

    /// The roles, in the order of [`Role::ALL`].
    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL
            .into_iter()
            .filter(move |role| self.contains(*role))
    }
}

/// `read, publish`.
impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, role) in self.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            f.write_str(role.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// The algorithm a [`PasswordHash`] was made with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HashScheme {
    /// An argon2 PHC string: `$argon2id$…`, `$argon2i$…` or `$argon2d$…`.
    Argon2,
    /// A bcrypt hash: `$2a$…`, `$2b$…` or `$2y$…`.
    Bcrypt,
}

/// A password hash from `password_hash`, checked at load to be one that a password can match:
/// a well-formed argon2 PHC string with valid parameters, salt and output, or a well-formed
/// bcrypt hash with a cost from 4 to 31.
///
/// A hash is a secret too (it can be attacked offline), so `Debug` shows only its algorithm and
/// no `Display` exists.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    text: String,
    scheme: HashScheme,
    /// `argon2id`, `argon2i`, `argon2d` or `bcrypt`, for `wheelgate check` and `Debug`.
    algorithm: &'static str,
}

/// Why a string is not a usable [`PasswordHash`]. No message shows the text, which may be a real
/// hash with one character wrong, or even a password pasted in the wrong place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordHashError {
    #[error("this is neither an argon2 hash (\"$argon2id$v=19$m=…\") nor a bcrypt hash (\"$2b$12$…\"); run `wheelgate hash-password` to make one")]
    UnknownScheme,
    #[error(
        "this argon2 hash is malformed ({reason}); run `wheelgate hash-password` to make a new one"
    )]
    Argon2 { reason: String },
    #[error("this argon2 hash has no salt or no hash output after its parameters, so no password can match it; run `wheelgate hash-password` to make a complete one")]
    Argon2Incomplete,
    #[error(
        "this bcrypt hash is malformed ({reason}); run `wheelgate hash-password` to make a new one"
    )]
    Bcrypt { reason: String },
}

impl PasswordHash {
    /// Validates `text` (surrounding whitespace ignored) as an argon2 or bcrypt hash.
    pub fn parse(text: &str) -> Result<PasswordHash, PasswordHashError> {
        let text = text.trim();
        let (scheme, algorithm) = if text.starts_with("$argon2") {
            (HashScheme::Argon2, check_argon2(text)?)
        } else if ["$2a$", "$2b$", "$2y$"]
            .iter()
            .any(|prefix| text.starts_with(prefix))
        {
            check_bcrypt(text)?;
            (HashScheme::Bcrypt, "bcrypt")
        } else {
            return Err(PasswordHashError::UnknownScheme);
        };
        Ok(PasswordHash {
            text: text.to_owned(),
            scheme,
            algorithm,
        })
    }

    /// The algorithm family.
    pub fn scheme(&self) -> HashScheme {
        self.scheme
    }

    /// `argon2id`, `argon2i`, `argon2d` or `bcrypt`.
    pub fn algorithm(&self) -> &'static str {
        self.algorithm
    }

    /// The hash as written, for the one function that checks a password against it.
    pub fn expose(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PasswordHash({}, [redacted])", self.algorithm)
    }
}

/// Checks an argon2 PHC string the way verification will read it, and names its variant.
fn check_argon2(text: &str) -> Result<&'static str, PasswordHashError> {
    use argon2::password_hash::{Error, PasswordHash as Phc};
    // The crate's own messages are terse ("value to short"); say which part is wrong.
    fn malformed(error: Error) -> PasswordHashError {
        let reason = match error {
            Error::Algorithm => "the algorithm is not argon2id, argon2i or argon2d",
            Error::B64Encoding(_) => "its salt or hash is not valid unpadded base64",
            Error::OutputSize { .. } => "its hash has a length argon2 cannot produce",
            Error::ParamNameDuplicated => "a parameter is given twice",
            Error::ParamNameInvalid => "it has a parameter other than m, t, p, keyid and data",
            Error::ParamValueInvalid(_) => {
                "a parameter is out of range: m is at least 8 KiB per lane, t and p at least 1"
            }
            Error::ParamsMaxExceeded => "it has too many parameters",
            Error::PhcStringField | Error::PhcStringTrailingData => {
                "it is not a PHC string: $argon2id$v=19$m=…,t=…,p=…$salt$hash"
            }
            Error::SaltInvalid(_) => "its salt is too short, too long or not base64",
            Error::Version => "its version is not v=19 or v=16",
            other => {
                return PasswordHashError::Argon2 {
                    reason: other.to_string(),
                }
            }
        };
        PasswordHashError::Argon2 {
            reason: reason.to_owned(),
        }
    }
    let phc = Phc::new(text).map_err(malformed)?;
    let algorithm = match argon2::Algorithm::try_from(phc.algorithm).map_err(malformed)? {
        argon2::Algorithm::Argon2id => "argon2id",
        argon2::Algorithm::Argon2i => "argon2i",
        argon2::Algorithm::Argon2d => "argon2d",
    };
    if let Some(version) = phc.version {
        argon2::Version::try_from(version).map_err(|_| malformed(Error::Version))?;
    }
    argon2::Params::try_from(&phc).map_err(malformed)?;
    if phc.salt.is_none() || phc.hash.is_none() {
        return Err(PasswordHashError::Argon2Incomplete);
    }
    Ok(algorithm)
}

/// Checks a bcrypt hash: `$2b$` + two-digit cost from 4 to 31 + `$` + 53 characters of bcrypt's
/// base64 (salt and hash).
fn check_bcrypt(text: &str) -> Result<(), PasswordHashError> {
    let parts = bcrypt::HashParts::from_str(text).map_err(|error| PasswordHashError::Bcrypt {
        reason: match error {
            bcrypt::BcryptError::InvalidHash(reason) => reason.to_owned(),
            other => other.to_string(),
        },
    })?;
    let cost = parts.get_cost();
    if !(4..=31).contains(&cost) {
        return Err(PasswordHashError::Bcrypt {
            reason: format!("its cost is {cost}; bcrypt costs are 4 to 31"),
        });
    }
    Ok(())
}

/// How a user proves who it is.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Credential {
    /// A password, checked against this hash.
    PasswordHash(PasswordHash),
    /// A token held in this file, resolved against the configuration file's directory, read when
    /// the user logs in (and re-read when the file changes), never at load.
    TokenFile(PathBuf),
}

/// One `[[user]]`. Its `Debug` shows no secret: a hash is redacted, a token file is only a path.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct UserConfig {
    /// Unique among the users.
    pub name: UserName,
    pub credential: Credential,
    pub roles: Roles,
    /// The repositories the roles apply to, each a defined repository, none repeated; `None`
    /// means every repository.
    pub repositories: Option<Vec<RepoName>>,
    /// The line of its `[[user]]` header, for messages about it at run time.
    pub line: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A well-formed argon2id PHC string (cheap parameters: m=8 KiB, t=1, p=1, 32-byte output).
    const ARGON2ID: &str =
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0$tAyG9rmrzQ+Im5kPbr8Ss9Yc5wtUPN6ik4txCH0UVj4";
    /// A bcrypt hash in the shape htpasswd writes (from the bcrypt crate's own tests).
    const BCRYPT: &str = "$2y$12$L6Bc/AlTQHyd9liGgGEZyOFLPHNgyxeEPfgYfBCVxJ7JIlwxyVU3u";

    #[test]
    fn user_names_follow_the_pattern() {
        for good in ["ci-publisher", "a", "Build.Bot_2", &"x".repeat(64)] {
            assert_eq!(UserName::parse(good).unwrap().as_str(), good);
        }
        assert_eq!(UserName::parse(""), Err(UserNameError::Empty));
        assert_eq!(
            UserName::parse(&"x".repeat(65)),
            Err(UserNameError::TooLong { len: 65 })
        );
        assert_eq!(
            UserName::parse("a:b"),
            Err(UserNameError::InvalidCharacter { ch: ':' })
        );
        assert_eq!(
            UserName::parse("ünïcode"),
            Err(UserNameError::InvalidCharacter { ch: 'ü' })
        );
        assert_eq!(
            UserName::parse(TOKEN_USER_NAME),
            Err(UserNameError::Reserved)
        );
    }

    #[test]
    fn roles_are_a_non_empty_set() {
        assert_eq!(Roles::of([]), None);
        let both = Roles::of([Role::Publish, Role::Read, Role::Publish]).unwrap();
        assert!(both.contains(Role::Read) && both.contains(Role::Publish));
        assert_eq!(both.to_string(), "read, publish");
        let publish = Roles::of([Role::Publish]).unwrap();
        assert!(!publish.contains(Role::Read));
        assert_eq!(format!("{publish:?}"), "{Publish}");
        assert_eq!(Role::parse("read"), Some(Role::Read));
        assert_eq!(Role::parse("Read"), None);
        assert_eq!(Role::parse("admin"), None);
    }

    #[test]
    fn argon2_and_bcrypt_hashes_are_accepted() {
        let argon = PasswordHash::parse(&format!(" {ARGON2ID}\n")).unwrap();
        assert_eq!(argon.scheme(), HashScheme::Argon2);
        assert_eq!(argon.algorithm(), "argon2id");
        assert_eq!(argon.expose(), ARGON2ID);
        let argon2i = ARGON2ID.replacen("argon2id", "argon2i", 1);
        assert_eq!(
            PasswordHash::parse(&argon2i).unwrap().algorithm(),
            "argon2i"
        );
        let bcrypt = PasswordHash::parse(BCRYPT).unwrap();
        assert_eq!(bcrypt.scheme(), HashScheme::Bcrypt);
        for prefix in ["$2a$", "$2b$"] {
            let other = BCRYPT.replacen("$2y$", prefix, 1);
            assert!(PasswordHash::parse(&other).is_ok(), "{prefix}");
        }
    }

    #[test]
    fn malformed_hashes_are_refused_without_echoing_them() {
        let cases = [
            ("hunter2", "neither an argon2 hash"),
            ("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0", "no salt or no hash output"),
            ("$argon2id$v=19$m=8,t=1,p=1", "no salt or no hash output"),
            ("$argon2x$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0$tAyG9rmrzQ+Im5kPbr8Ss9Yc5wtUPN6ik4txCH0UVj4", "argon2 hash is malformed"),
            ("$argon2id$v=19$m=8,t=0,p=1$c2FsdHNhbHRzYWx0$tAyG9rmrzQ+Im5kPbr8Ss9Yc5wtUPN6ik4txCH0UVj4", "argon2 hash is malformed"),
            ("$argon2id$v=19$m=8,t=1,p=1,x=2$c2FsdHNhbHRzYWx0$tAyG9rmrzQ+Im5kPbr8Ss9Yc5wtUPN6ik4txCH0UVj4", "argon2 hash is malformed"),
            ("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0$!!!", "argon2 hash is malformed"),
            ("$argon2id$v=19$...", "argon2 hash is malformed"),
            ("$2y$12$L6Bc/AlTQHyd9liGgGEZyOFLPHNgyxeEPfgYfBCVx", "bcrypt hash is malformed"),
            ("$2y$03$L6Bc/AlTQHyd9liGgGEZyOFLPHNgyxeEPfgYfBCVxJ7JIlwxyVU3u", "cost is 3"),
            ("$2y$xx$L6Bc/AlTQHyd9liGgGEZyOFLPHNgyxeEPfgYfBCVxJ7JIlwxyVU3u", "bcrypt hash is malformed"),
            ("$2x$12$L6Bc/AlTQHyd9liGgGEZyOFLPHNgyxeEPfgYfBCVxJ7JIlwxyVU3u", "neither"),
        ];
        for (text, expected) in cases {
            let message = match PasswordHash::parse(text) {
                Ok(hash) => panic!("{text} was accepted as {hash:?}"),
                Err(error) => error.to_string(),
            };
            assert!(message.contains(expected), "{text}: {message}");
            assert!(message.contains("wheelgate hash-password"), "{message}");
            assert!(!message.contains("c2FsdHNhbHRz") && !message.contains("L6Bc/AlT"));
            assert!(!message.contains("hunter2"), "{message}");
        }
    }

    #[test]
    fn debug_never_shows_a_hash() {
        let hash = PasswordHash::parse(ARGON2ID).unwrap();
        assert_eq!(format!("{hash:?}"), "PasswordHash(argon2id, [redacted])");
        let user = UserConfig {
            name: UserName::parse("ci").unwrap(),
            credential: Credential::PasswordHash(hash),
            roles: Roles::of([Role::Read]).unwrap(),
            repositories: None,
            line: 1,
        };
        let shown = format!("{user:?}");
        assert!(
            !shown.contains("tAyG9") && !shown.contains("c2FsdH"),
            "{shown}"
        );
        assert!(shown.contains("ci"), "{shown}");
    }
}
