//! The users of one configuration: who a request comes from ([`Users::authenticate`]) and
//! whether it may do what it asks ([`Users::authorize`]).
//!
//! Built once per configuration, so a reload that adds, removes or changes a user takes effect
//! for the requests that start after it, and the remembered password checks of the old users go
//! with them.
//!
//! What a caller may do:
//! - Anonymous (no `Authorization` header): read any repository when `anonymous_read = true`;
//!   nothing else. Publishing always needs a user.
//! - A user: whatever an anonymous client may do (sending credentials never takes a right away,
//!   so a publisher's `pip install` works where anonymous reads are allowed), plus its roles, on
//!   the repositories of its `repositories` list (all when there is none). Neither role implies
//!   the other: a user that should read where anonymous clients cannot needs `read` too.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::error::AuthError;
use super::header::BasicCredentials;
use super::password;
use super::token::{TokenCredential, TokenUnavailable};
use super::verified::VerifiedPasswords;
use crate::config::{
    Config, Credential, PasswordHash, RepoName, Role, Roles, UserConfig, UserName, TOKEN_USER_NAME,
};
use crate::secret::Secret;

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    /// No credentials were sent.
    Anonymous,
    /// Credentials were sent and hold for this user.
    User(UserName),
}

impl Caller {
    /// The user, unless anonymous: for the access log.
    pub fn user(&self) -> Option<&UserName> {
        match self {
            Caller::Anonymous => None,
            Caller::User(name) => Some(name),
        }
    }
}

/// `anonymous` or `user ci-publisher`.
impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Anonymous => f.write_str("anonymous"),
            Caller::User(name) => write!(f, "user {name}"),
        }
    }
}

/// One `[[user]]`, ready to check.
struct User {
    roles: Roles,
    repositories: Option<Vec<RepoName>>,
    credential: UserCredential,
}

enum UserCredential {
    /// Shared with the blocking thread that checks it.
    Password(Arc<PasswordHash>),
    Token(TokenCredential),
}

/// Why a slow password check did not let the user in (remembered by no one).
enum CheckFailure {
    Wrong,
    Internal(String),
}

/// The users of one configuration, with what authenticating them needs: the remembered password
/// checks and the bound on concurrent slow checks.
pub struct Users {
    anonymous_read: bool,
    by_name: HashMap<UserName, User>,
    /// The token users in file order: a `__token__` login is checked against each.
    token_users: Vec<UserName>,
    verified: VerifiedPasswords,
    /// One permit per core: a burst of logins with wrong passwords (never remembered) queues
    /// here instead of occupying every blocking thread with 19 MiB of argon2 memory each.
    checks: Arc<Semaphore>,
    verifications: Arc<AtomicU64>,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.by_name.keys().map(UserName::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Users")
            .field("anonymous_read", &self.anonymous_read)
            .field("users", &names)
            .field("verifications", &self.verifications())
            .finish_non_exhaustive()
    }
}

impl Users {
    /// The users of `config` and its `[access] anonymous_read`.
    pub fn new(config: &Config) -> Users {
        Users::from_users(&config.users, config.access.anonymous_read)
    }

    /// Users from their configurations, already validated (unique names, known repositories).
    pub fn from_users(users: &[UserConfig], anonymous_read: bool) -> Users {
        let mut by_name = HashMap::with_capacity(users.len());
        let mut token_users = Vec::new();
        for user in users {
            let credential = match &user.credential {
                Credential::PasswordHash(hash) => UserCredential::Password(Arc::new(hash.clone())),
                Credential::TokenFile(path) => {
                    token_users.push(user.name.clone());
                    UserCredential::Token(TokenCredential::new(path.clone()))
                }
            };
            by_name.insert(
                user.name.clone(),
                User {
                    roles: user.roles,
                    repositories: user.repositories.clone(),
                    credential,
                },
            );
        }
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Users {
            anonymous_read,
            by_name,
            token_users,
            verified: VerifiedPasswords::new(),
            checks: Arc::new(Semaphore::new(cores)),
            verifications: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Whether clients without credentials may read.
    pub fn anonymous_read(&self) -> bool {
        self.anonymous_read
    }

    /// Who sent a request, from its `Authorization` header value (`None` when absent). HTTP
    /// Basic only. Credentials that are sent must hold, even where anonymous clients may read:
    /// a client that sends a wrong password gets a 401, not silently less access.
    pub async fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Caller, AuthError> {
        let Some(value) = authorization else {
            return Ok(Caller::Anonymous);
        };
        let credentials = BasicCredentials::parse(value).map_err(AuthError::Malformed)?;
        if credentials.username == TOKEN_USER_NAME {
            return self.token_login(&credentials.password);
        }
        let name = UserName::parse(&credentials.username)
            .map_err(|_| AuthError::UnknownUser { name: None })?;
        let Some((name, user)) = self.by_name.get_key_value(&name) else {
            return Err(AuthError::UnknownUser { name: Some(name) });
        };
        match &user.credential {
            UserCredential::Password(hash) => {
                self.check_password(name, hash, &credentials.password)
                    .await?
            }
            UserCredential::Token(token) => match token.matches(name, &credentials.password) {
                Ok(true) => {}
                Ok(false) => return Err(AuthError::WrongPassword { name: name.clone() }),
                Err(TokenUnavailable) => {
                    return Err(AuthError::TokenUnavailable { name: name.clone() })
                }
            },
        }
        Ok(Caller::User(name.clone()))
    }

    /// May `caller` act with `role` on repository `repo`? See the module documentation for the
    /// rules.
    pub fn authorize(&self, caller: &Caller, role: Role, repo: &RepoName) -> Result<(), AuthError> {
        let name = match caller {
            Caller::Anonymous if role == Role::Read && self.anonymous_read => return Ok(()),
            Caller::Anonymous => {
                return Err(AuthError::CredentialsRequired {
                    role,
                    repository: repo.clone(),
                })
            }
            Caller::User(name) => name,
        };
        // A caller authenticated against another configuration's users, if the front ever
        // mixed them up across a reload: not a user here.
        let Some(user) = self.by_name.get(name) else {
            return Err(AuthError::UnknownUser {
                name: Some(name.clone()),
            });
        };
        if role == Role::Read && self.anonymous_read {
            return Ok(());
        }
        let here = user
            .repositories
            .as_ref()
            .is_none_or(|allowed| allowed.contains(repo));
        if user.roles.contains(role) && here {
            return Ok(());
        }
        Err(AuthError::Forbidden {
            user: name.clone(),
            role,
            repository: repo.clone(),
            roles: user.roles,
            limited_to: if here {
                None
            } else {
                user.repositories.clone()
            },
        })
    }

    /// How many slow password checks (argon2 or bcrypt) have run, for the status page and tests.
    /// Checks answered from memory, and token comparisons, do not count.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// A `__token__` login: the first token user (in file order) whose token it is.
    fn token_login(&self, presented: &Secret) -> Result<Caller, AuthError> {
        for name in &self.token_users {
            let Some(User {
                credential: UserCredential::Token(token),
                ..
            }) = self.by_name.get(name)
            else {
                continue;
            };
            // An unreadable file is logged by `matches`; the token may be another user's.
            if token.matches(name, presented) == Ok(true) {
                return Ok(Caller::User(name.clone()));
            }
        }
        Err(AuthError::UnknownToken)
    }

    /// Checks `password` against `hash` on a blocking thread, unless the pair was found right
    /// recently.
    async fn check_password(
        &self,
        name: &UserName,
        hash: &Arc<PasswordHash>,
        password: &Secret,
    ) -> Result<(), AuthError> {
        let check = async {
            let permit = Arc::clone(&self.checks)
                .acquire_owned()
                .await
                .map_err(|error| CheckFailure::Internal(error.to_string()))?;
            let hash = Arc::clone(hash);
            let password = password.clone();
            let verifications = Arc::clone(&self.verifications);
            // The permit moves into the thread: if the client goes away, the check still holds
            // its place until it ends.
            let outcome = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                verifications.fetch_add(1, Ordering::Relaxed);
                password::verify(&hash, password.expose().as_bytes())
            })
            .await;
            match outcome {
                Ok(Ok(true)) => Ok(()),
                Ok(Ok(false)) => Err(CheckFailure::Wrong),
                Ok(Err(error)) => Err(CheckFailure::Internal(error.to_string())),
                Err(error) => Err(CheckFailure::Internal(error.to_string())),
            }
        };
        self.verified
            .get_or_check(name, password, check)
            .await
            .map_err(|failure| match &*failure {
                CheckFailure::Wrong => AuthError::WrongPassword { name: name.clone() },
                CheckFailure::Internal(reason) => AuthError::Internal {
                    name: name.clone(),
                    reason: reason.clone(),
                },
            })
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use http::StatusCode;

    use super::*;
    use crate::access::password::cheap;
    use crate::access::HeaderProblem;

    /// Two repositories, `pypi` and `internal`, then `[access]` and the users.
    fn config_with(anonymous_read: bool, users: &str, dir: &std::path::Path) -> Config {
        let source = format!(
            "[server]\ndefault_repository = \"pypi\"\n\
             [access]\nanonymous_read = {anonymous_read}\n\
             [[repository]]\nname = \"pypi\"\ntype = \"remote\"\nurl = \"\"\n\
             [[repository]]\nname = \"internal\"\ntype = \"remote\"\nurl = \"\"\n\
             {users}"
        );
        let origin = dir.join("proxy.toml").display().to_string();
        crate::config::parse(&source, &origin, &|_| None).expect("a valid test configuration")
    }

    fn users_with(anonymous_read: bool, users: &str) -> (Users, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let config = config_with(anonymous_read, users, dir.path());
        (Users::new(&config), dir)
    }

    fn password_user(name: &str, hash: &str, roles: &str) -> String {
        format!("[[user]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\nroles = {roles}\n")
    }

    fn basic(credentials: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
        .into_bytes()
    }

    fn repo(name: &str) -> RepoName {
        RepoName::parse(name).unwrap()
    }

    fn user(name: &str) -> Caller {
        Caller::User(UserName::parse(name).unwrap())
    }

    async fn login(users: &Users, credentials: &str) -> Result<Caller, AuthError> {
        users.authenticate(Some(&basic(credentials))).await
    }

    #[tokio::test]
    async fn a_right_password_is_checked_once_then_remembered() {
        let hash = cheap::argon2id("s3cret");
        let (users, _dir) = users_with(true, &password_user("ci", &hash, "[\"read\"]"));
        assert_eq!(login(&users, "ci:s3cret").await, Ok(user("ci")));
        assert_eq!(users.verifications(), 1);
        for _ in 0..5 {
            assert_eq!(login(&users, "ci:s3cret").await, Ok(user("ci")));
        }
        assert_eq!(users.verifications(), 1, "served from memory");
        let wrong = login(&users, "ci:s3cret!").await.unwrap_err();
        assert_eq!(
            wrong,
            AuthError::WrongPassword {
                name: UserName::parse("ci").unwrap()
            }
        );
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(users.verifications(), 2, "another password is checked");
        assert!(login(&users, "ci:s3cret!").await.is_err());
        assert_eq!(users.verifications(), 3, "a failure is not remembered");
    }

    #[tokio::test]
    async fn concurrent_logins_with_the_same_password_check_it_once() {
        let hash = cheap::argon2id("s3cret");
        let (users, _dir) = users_with(true, &password_user("ci", &hash, "[\"read\"]"));
        let header = basic("ci:s3cret");
        let logins = (0..20).map(|_| users.authenticate(Some(&header)));
        for outcome in futures_util::future::join_all(logins).await {
            assert_eq!(outcome, Ok(user("ci")));
        }
        assert_eq!(users.verifications(), 1);
    }

    #[tokio::test]
    async fn bcrypt_hashes_are_accepted() {
        let hash = cheap::bcrypt("legacy-pw");
        let (users, _dir) = users_with(true, &password_user("old", &hash, "[\"read\"]"));
        assert_eq!(login(&users, "old:legacy-pw").await, Ok(user("old")));
        assert!(matches!(
            login(&users, "old:legacy").await,
            Err(AuthError::WrongPassword { .. })
        ));
    }

    #[tokio::test]
    async fn a_hash_from_hash_password_logs_in() {
        let hash = password::hash_password("made by the command").unwrap();
        let (users, _dir) = users_with(false, &password_user("ci", &hash, "[\"read\"]"));
        assert_eq!(
            login(&users, "ci:made by the command").await,
            Ok(user("ci"))
        );
    }

    #[tokio::test]
    async fn unknown_users_are_refused_without_a_slow_check() {
        let hash = cheap::argon2id("pw");
        let (users, _dir) = users_with(true, &password_user("ci", &hash, "[\"read\"]"));
        let error = login(&users, "CI:pw").await.unwrap_err();
        assert_eq!(error.to_string(), "unknown user CI; check the user name");
        assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
        let error = login(&users, "bad name\n:pw").await.unwrap_err();
        assert_eq!(error, AuthError::UnknownUser { name: None });
        assert!(!error.to_string().contains('\n'));
        assert!(matches!(
            login(&users, ":").await,
            Err(AuthError::UnknownUser { name: None })
        ));
        assert_eq!(users.verifications(), 0);
    }

    #[tokio::test]
    async fn malformed_headers_are_401() {
        let (users, _dir) = users_with(true, "");
        let cases: [(&[u8], HeaderProblem); 4] = [
            (b"Basic %%%", HeaderProblem::NotBase64),
            (b"Basic Y2lwdw==", HeaderProblem::NoColon),
            (b"Basic Y2k6//4=", HeaderProblem::NotUtf8),
            (b"Bearer eyJhbGciOi.x.y", HeaderProblem::NotBasic),
        ];
        for (value, problem) in cases {
            let error = users.authenticate(Some(value)).await.unwrap_err();
            assert_eq!(error, AuthError::Malformed(problem));
            assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
            assert!(error.to_string().contains("HTTP Basic"), "{error}");
        }
    }

    #[tokio::test]
    async fn anonymous_read_on_lets_anonymous_clients_read_only() {
        let (users, _dir) = users_with(true, "");
        let caller = users.authenticate(None).await.unwrap();
        assert_eq!(caller, Caller::Anonymous);
        assert_eq!(users.authorize(&caller, Role::Read, &repo("pypi")), Ok(()));
        let error = users
            .authorize(&caller, Role::Publish, &repo("internal"))
            .unwrap_err();
        assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
        assert!(
            error
                .to_string()
                .starts_with("publishing to repository internal needs a user"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn anonymous_read_off_asks_for_credentials() {
        let hash = cheap::argon2id("pw");
        let (users, _dir) = users_with(false, &password_user("ci", &hash, "[\"read\"]"));
        let caller = users.authenticate(None).await.unwrap();
        let error = users
            .authorize(&caller, Role::Read, &repo("pypi"))
            .unwrap_err();
        assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
        assert!(
            error
                .to_string()
                .starts_with("repository pypi is not open to anonymous clients"),
            "{error}"
        );
        let ci = login(&users, "ci:pw").await.unwrap();
        assert_eq!(users.authorize(&ci, Role::Read, &repo("pypi")), Ok(()));
    }

    #[tokio::test]
    async fn wrong_credentials_are_401_even_where_anonymous_may_read() {
        let hash = cheap::argon2id("pw");
        let (users, _dir) = users_with(true, &password_user("ci", &hash, "[\"read\"]"));
        let error = login(&users, "ci:nope").await.unwrap_err();
        assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(error.to_string(), "wrong password or token for user ci");
    }

    #[tokio::test]
    async fn roles_and_repository_limits_give_403_naming_role_and_repository() {
        let hash = cheap::argon2id("pw");
        let users_toml = format!(
            "{}{}repositories = [\"pypi\"]\n{}",
            password_user("ci-reader", &hash, "[\"read\"]"),
            password_user("pub-pypi", &hash, "[\"read\", \"publish\"]"),
            password_user("pub-only", &hash, "[\"publish\"]"),
        );
        for anonymous_read in [true, false] {
            let (users, _dir) = users_with(anonymous_read, &users_toml);
            let reader = login(&users, "ci-reader:pw").await.unwrap();
            let limited = login(&users, "pub-pypi:pw").await.unwrap();
            let publisher = login(&users, "pub-only:pw").await.unwrap();
            let internal = repo("internal");
            let pypi = repo("pypi");

            let error = users
                .authorize(&reader, Role::Publish, &internal)
                .unwrap_err();
            assert_eq!(error.status(), StatusCode::FORBIDDEN);
            assert_eq!(
                error.to_string(),
                "user ci-reader has no publish role on repository internal (its roles: read)"
            );
            assert_eq!(users.authorize(&reader, Role::Read, &internal), Ok(()));

            assert_eq!(users.authorize(&limited, Role::Publish, &pypi), Ok(()));
            assert_eq!(users.authorize(&limited, Role::Read, &pypi), Ok(()));
            let error = users
                .authorize(&limited, Role::Publish, &internal)
                .unwrap_err();
            assert_eq!(error.status(), StatusCode::FORBIDDEN);
            assert_eq!(
                error.to_string(),
                "user pub-pypi has no publish role on repository internal (its roles apply only to repositories pypi)"
            );

            assert_eq!(
                users.authorize(&publisher, Role::Publish, &internal),
                Ok(())
            );
            // Reading: what anonymous clients may do, a user may do too.
            let read = users.authorize(&publisher, Role::Read, &pypi);
            let limited_read = users.authorize(&limited, Role::Read, &internal);
            if anonymous_read {
                assert_eq!(read, Ok(()));
                assert_eq!(limited_read, Ok(()));
            } else {
                let error = read.unwrap_err();
                assert_eq!(error.status(), StatusCode::FORBIDDEN);
                assert_eq!(
                    error.to_string(),
                    "user pub-only has no read role on repository pypi (its roles: publish)"
                );
                assert_eq!(limited_read.unwrap_err().status(), StatusCode::FORBIDDEN);
            }
        }
    }

    #[tokio::test]
    async fn token_users_log_in_with_their_name_or_token_and_see_rotations() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("deploy-token"), "tok-AAAA\n").unwrap();
        std::fs::write(dir.path().join("bot-token"), "tok-BBBB").unwrap();
        let config = config_with(
            true,
            "[[user]]\nname = \"deploy\"\ntoken_file = \"deploy-token\"\nroles = [\"publish\"]\n\
             [[user]]\nname = \"bot\"\ntoken_file = \"bot-token\"\nroles = [\"read\"]\n",
            dir.path(),
        );
        let users = Users::new(&config);
        assert_eq!(login(&users, "deploy:tok-AAAA").await, Ok(user("deploy")));
        assert_eq!(
            login(&users, "__token__:tok-AAAA").await,
            Ok(user("deploy"))
        );
        assert_eq!(login(&users, "__token__:tok-BBBB").await, Ok(user("bot")));
        assert!(matches!(
            login(&users, "bot:tok-AAAA").await,
            Err(AuthError::WrongPassword { .. })
        ));
        let error = login(&users, "__token__:tok-CCCC").await.unwrap_err();
        assert_eq!(error, AuthError::UnknownToken);
        assert_eq!(error.status(), StatusCode::UNAUTHORIZED);

        // Rotation, the way Kubernetes does it for a secret: a new file renamed over the old.
        let fresh = dir.path().join("deploy-token.new");
        std::fs::write(&fresh, "tok-rotated").unwrap();
        std::fs::rename(&fresh, dir.path().join("deploy-token")).unwrap();
        assert!(login(&users, "deploy:tok-AAAA").await.is_err());
        assert_eq!(
            login(&users, "__token__:tok-rotated").await,
            Ok(user("deploy"))
        );
        assert_eq!(users.verifications(), 0, "tokens need no slow check");
    }

    #[tokio::test]
    async fn an_unreadable_token_file_keeps_only_that_user_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bot-token"), "tok-BBBB").unwrap();
        let config = config_with(
            true,
            "[[user]]\nname = \"deploy\"\ntoken_file = \"missing/token\"\nroles = [\"publish\"]\n\
             [[user]]\nname = \"bot\"\ntoken_file = \"bot-token\"\nroles = [\"read\"]\n",
            dir.path(),
        );
        let users = Users::new(&config);
        let error = login(&users, "deploy:anything").await.unwrap_err();
        assert_eq!(
            error,
            AuthError::TokenUnavailable {
                name: UserName::parse("deploy").unwrap()
            }
        );
        assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
        assert!(!error.to_string().contains("anything"), "{error}");
        assert_eq!(login(&users, "__token__:tok-BBBB").await, Ok(user("bot")));
    }

    #[tokio::test]
    async fn no_secret_shows_in_errors_or_debug() {
        let hash = cheap::argon2id("hunter2");
        let (users, _dir) = users_with(true, &password_user("ci", &hash, "[\"read\"]"));
        let salt_and_output = hash.rsplit('$').next().unwrap_or_default().to_owned();
        let errors = [
            login(&users, "ci:hunter3").await.unwrap_err(),
            login(&users, "nobody:hunter2").await.unwrap_err(),
            login(&users, "__token__:hunter2").await.unwrap_err(),
        ];
        let mut shown: Vec<String> = errors
            .iter()
            .flat_map(|error| [error.to_string(), format!("{error:?}")])
            .collect();
        shown.push(format!("{users:?}"));
        for text in shown {
            assert!(
                !text.contains("hunter") && !text.contains(&salt_and_output),
                "{text}"
            );
        }
    }

    #[test]
    fn callers_display_for_the_access_log() {
        assert_eq!(Caller::Anonymous.to_string(), "anonymous");
        assert_eq!(user("ci").to_string(), "user ci");
        assert_eq!(user("ci").user().map(UserName::as_str), Some("ci"));
        assert_eq!(Caller::Anonymous.user(), None);
    }
}
