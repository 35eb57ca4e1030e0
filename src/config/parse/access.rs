//! `[access]` and `[[user]]` (SPEC §8): whether clients without credentials may read, and the
//! users clients log in as, with their credentials, roles and repositories.

use std::collections::HashMap;

use toml::Spanned;

use super::{Key, Parser};
use crate::config::raw::{RawAccess, RawUser, Scalar};
use crate::config::{
    AccessConfig, ConfigError, Credential, PasswordHash, Problem, RepoName, RepositoryConfig, Role,
    Roles, UserConfig, UserName,
};

impl Parser<'_> {
    /// `[access]`, checked against the users: refusing anonymous reads when no user may read
    /// would refuse every read.
    pub(super) fn access(
        &self,
        raw: Option<&RawAccess>,
        users: &[UserConfig],
    ) -> Result<AccessConfig, ConfigError> {
        let fallback = RawAccess::default();
        let fields = raw.unwrap_or(&fallback);
        let key = Key {
            section: "[access]",
            name: "anonymous_read",
        };
        let anonymous_read = self.boolean(fields.anonymous_read.as_ref(), key, true)?;
        if !anonymous_read && !users.iter().any(|user| user.roles.contains(Role::Read)) {
            if let Some(field) = &fields.anonymous_read {
                return Err(self.at(field, key, Problem::NoReader));
            }
        }
        Ok(AccessConfig { anonymous_read })
    }

    /// The `[[user]]` tables, in file order, with unique names.
    pub(super) fn users(
        &self,
        raws: &[Spanned<RawUser>],
        repositories: &[RepositoryConfig],
    ) -> Result<Vec<UserConfig>, ConfigError> {
        let mut first_seen: HashMap<UserName, usize> = HashMap::new();
        let mut users = Vec::with_capacity(raws.len());
        for (index, raw) in raws.iter().enumerate() {
            let (user, name_line) = self.user(index + 1, raw, repositories)?;
            if let Some(&first_line) = first_seen.get(&user.name) {
                return Err(self.invalid(
                    Some(name_line),
                    format!("[[user]] \"{}\" name", user.name),
                    Problem::DuplicateUser {
                        name: user.name.to_string(),
                        first_line,
                        second_line: name_line,
                    },
                ));
            }
            first_seen.insert(user.name.clone(), name_line);
            users.push(user);
        }
        Ok(users)
    }

    /// One user, and the line of its name (duplicate names are reported there).
    fn user(
        &self,
        number: usize,
        raw: &Spanned<RawUser>,
        repositories: &[RepositoryConfig],
    ) -> Result<(UserConfig, usize), ConfigError> {
        let line = self.line_of(raw.span().start);
        let fields = raw.get_ref();
        let unnamed = format!("[[user]] #{number}");
        let name_key = Key {
            section: &unnamed,
            name: "name",
        };
        let name_field = fields.name.as_ref().ok_or_else(|| {
            self.invalid(
                Some(line),
                name_key,
                Problem::MissingKey {
                    hint: "give every user a name, the user name clients log in with, e.g. name = \"ci-publisher\"",
                },
            )
        })?;
        let name = UserName::parse(self.text(name_field, name_key)?.trim())
            .map_err(|error| self.at(name_field, name_key, Problem::UserName(error)))?;
        let section = format!("[[user]] \"{name}\"");
        let key = |name| Key {
            section: &section,
            name,
        };

        let credential = match (&fields.password_hash, &fields.token_file) {
            (Some(hash), Some(token)) => {
                let second = if token.span().start > hash.span().start {
                    token
                } else {
                    hash
                };
                return Err(self.at(second, key(""), Problem::TwoCredentials));
            }
            (None, None) => {
                return Err(self.invalid(
                    Some(line),
                    key("password_hash"),
                    Problem::MissingKey {
                        hint: "give the user a password_hash (`wheelgate hash-password` prints one) or a token_file",
                    },
                ))
            }
            (Some(field), None) => {
                let text = self.text(field, key("password_hash"))?;
                Credential::PasswordHash(PasswordHash::parse(&text).map_err(|error| {
                    self.at(field, key("password_hash"), Problem::PasswordHash(error))
                })?)
            }
            (None, Some(field)) => Credential::TokenFile(self.path(field, key("token_file"))?),
        };

        let roles_field = fields.roles.as_ref().ok_or_else(|| {
            self.invalid(
                Some(line),
                key("roles"),
                Problem::MissingKey {
                    hint: "give the user's roles: roles = [\"read\"], [\"publish\"] or [\"read\", \"publish\"]",
                },
            )
        })?;
        let mut roles = Vec::new();
        for field in roles_field.get_ref() {
            let text = self.text(field, key("roles"))?;
            roles.push(Role::parse(text.trim()).ok_or_else(|| {
                self.at(
                    field,
                    key("roles"),
                    Problem::UnknownRole {
                        found: text.clone(),
                    },
                )
            })?);
        }
        let roles = Roles::of(roles).ok_or_else(|| {
            self.invalid(
                Some(self.line_of(roles_field.span().start)),
                key("roles"),
                Problem::Empty {
                    hint: "; give at least one of \"read\" and \"publish\"",
                },
            )
        })?;

        let repositories = match &fields.repositories {
            None => None,
            Some(list) => Some(self.user_repositories(list, key("repositories"), repositories)?),
        };

        let user = UserConfig {
            name,
            credential,
            roles,
            repositories,
            line,
        };
        Ok((user, self.line_of(name_field.span().start)))
    }

    /// A user's `repositories`: defined repositories, at least one, repeats dropped.
    fn user_repositories(
        &self,
        list: &Spanned<Vec<Spanned<Scalar>>>,
        key: Key<'_>,
        defined: &[RepositoryConfig],
    ) -> Result<Vec<RepoName>, ConfigError> {
        let mut names: Vec<RepoName> = Vec::with_capacity(list.get_ref().len());
        for field in list.get_ref() {
            let text = self.text(field, key)?;
            let name = RepoName::parse(text.trim())
                .map_err(|error| self.at(field, key, Problem::RepoName(error)))?;
            if !defined.iter().any(|repo| repo.name == name) {
                return Err(self.at(
                    field,
                    key,
                    Problem::UnknownUserRepository {
                        name: name.to_string(),
                        defined: defined.iter().map(|repo| repo.name.to_string()).collect(),
                    },
                ));
            }
            if !names.contains(&name) {
                names.push(name);
            }
        }
        if names.is_empty() {
            return Err(self.invalid(
                Some(self.line_of(list.span().start)),
                key,
                Problem::Empty {
                    hint: "; leave `repositories` out to let the user's roles apply to every repository",
                },
            ));
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::testing::*;
    use super::*;
    use crate::config::HashScheme;

    /// A well-formed argon2id hash (cheap parameters), as `wheelgate hash-password` writes them.
    const ARGON2ID: &str =
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0$tAyG9rmrzQ+Im5kPbr8Ss9Yc5wtUPN6ik4txCH0UVj4";
    const BCRYPT: &str = "$2y$12$L6Bc/AlTQHyd9liGgGEZyOFLPHNgyxeEPfgYfBCVxJ7JIlwxyVU3u";

    /// `MINIMAL` (repository `pypi`, lines 1-4) plus a second repository `internal` (lines 5-9,
    /// with `[server]` on lines 10-11), then `rest` from line 12.
    fn with_users(rest: &str) -> String {
        format!("{MINIMAL}[[repository]]\nname = \"internal\"\ntype = \"remote\"\nurl = \"\"\n\n[server]\ndefault_repository = \"pypi\"\n{rest}")
    }

    fn user_error(rest: &str, line: usize, names: &str, what: &str) {
        let error = error_of(&with_users(rest));
        let message = error.to_string();
        assert_eq!(error.line(), Some(line), "{message}");
        assert!(message.contains(names), "expected {names:?} in {message}");
        assert!(message.contains(what), "expected {what:?} in {message}");
    }

    #[test]
    fn users_are_read_with_credentials_roles_and_repositories() {
        let source = with_users(&format!(
            "[[user]]\nname = \"ci-publisher\"\npassword_hash = \"{ARGON2ID}\"\nroles = [\"read\", \"publish\"]\n\
             [[user]]\nname = \"Legacy.Bot\"\npassword_hash = \"{BCRYPT}\"\nroles = [\"read\"]\nrepositories = [\"internal\", \"pypi\", \"internal\"]\n\
             [[user]]\nname = \"deploy\"\ntoken_file = \"secrets/deploy-token\"\nroles = [\"publish\"]\nrepositories = [\"internal\"]\n"
        ));
        let config = parse_text(&source).unwrap();
        assert!(config.access.anonymous_read);
        let [publisher, legacy, deploy] = &config.users[..] else {
            panic!("three users expected: {:?}", config.users);
        };
        assert_eq!(publisher.name.as_str(), "ci-publisher");
        assert_eq!(publisher.line, 12);
        assert_eq!(
            publisher.roles,
            Roles::of([Role::Read, Role::Publish]).unwrap()
        );
        assert_eq!(publisher.repositories, None);
        match &publisher.credential {
            Credential::PasswordHash(hash) => {
                assert_eq!(hash.scheme(), HashScheme::Argon2);
                assert_eq!(hash.expose(), ARGON2ID);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(legacy.name.as_str(), "Legacy.Bot");
        assert!(
            matches!(&legacy.credential, Credential::PasswordHash(hash) if hash.algorithm() == "bcrypt")
        );
        let names = |repos: &Option<Vec<RepoName>>| {
            repos
                .iter()
                .flatten()
                .map(|name| name.as_str().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&legacy.repositories), ["internal", "pypi"]);
        assert_eq!(
            deploy.credential,
            Credential::TokenFile(PathBuf::from("/etc/wheelgate/secrets/deploy-token"))
        );
        assert_eq!(names(&deploy.repositories), ["internal"]);
        assert!(config.user(&deploy.name).is_some());

        let shown = format!("{config:?}");
        assert!(
            !shown.contains("tAyG9") && !shown.contains("L6Bc"),
            "{shown}"
        );
        let described = config.describe();
        assert!(
            described.contains("  ci-publisher (line 12): roles read, publish on every repository; password (argon2id hash)"),
            "{described}"
        );
        assert!(
            described.contains(
                "  Legacy.Bot (line 16): roles read on internal, pypi; password (bcrypt hash)"
            ),
            "{described}"
        );
        assert!(
            described.contains("  deploy (line 21): roles publish on internal; token read from /etc/wheelgate/secrets/deploy-token when it logs in"),
            "{described}"
        );
        assert!(!described.contains("tAyG9") && !described.contains("L6Bc"));
        assert!(parse_text(MINIMAL)
            .unwrap()
            .describe()
            .contains("users: none"));
    }

    #[test]
    fn hashes_may_come_from_the_environment() {
        let env = |name: &str| (name == "CI_HASH").then(|| ARGON2ID.to_owned());
        let source = with_users(
            "[[user]]\nname = \"ci\"\npassword_hash = \"${CI_HASH}\"\nroles = [\"read\"]\n",
        );
        let config = parse(&source, "/etc/wheelgate/proxy.toml", &env).unwrap();
        assert!(
            matches!(&config.users[0].credential, Credential::PasswordHash(hash) if hash.expose() == ARGON2ID)
        );
    }

    #[test]
    fn anonymous_read_can_be_refused_when_a_user_may_read() {
        let config = parse_text(&with_users(&format!(
            "[access]\nanonymous_read = false\n[[user]]\nname = \"ci\"\npassword_hash = \"{ARGON2ID}\"\nroles = [\"read\"]\n"
        )))
        .unwrap();
        assert!(!config.access.anonymous_read);
        assert!(config.describe().contains("anonymous read: refused"));
        let config = parse_text(&format!("[access]\nanonymous_read = true\n{MINIMAL}")).unwrap();
        assert!(config.access.anonymous_read);
    }

    #[test]
    fn refusing_anonymous_read_needs_a_user_who_may_read() {
        let error = error_of(&format!("[access]\nanonymous_read = false\n{MINIMAL}"));
        assert_eq!(error.line(), Some(2));
        let message = error.to_string();
        assert!(
            message.contains("[access] anonymous_read: anonymous_read = false would refuse every read, because no [[user]] has the read role"),
            "{message}"
        );
        user_error(
            &format!("[access]\nanonymous_read = \"false\"\n[[user]]\nname = \"p\"\npassword_hash = \"{ARGON2ID}\"\nroles = [\"publish\"]\n"),
            13,
            "[access] anonymous_read",
            "no [[user]] has the read role",
        );
    }

    #[test]
    fn duplicate_user_names_name_both_lines() {
        let user = format!(
            "[[user]]\nname = \"ci\"\npassword_hash = \"{ARGON2ID}\"\nroles = [\"read\"]\n"
        );
        user_error(
            &format!("{user}{user}"),
            17,
            "[[user]] \"ci\" name",
            "user \"ci\" is defined twice, at line 13 and at line 17",
        );
    }

    #[test]
    fn malformed_hashes_name_the_user_and_line_without_echoing_the_hash() {
        let broken = &ARGON2ID[..ARGON2ID.len() - 44];
        for (hash, what) in [
            (broken, "no salt or no hash output"),
            ("$argon2id$v=19$...", "argon2 hash is malformed"),
            ("hunter2", "neither an argon2 hash"),
            ("$2b$12$short", "bcrypt hash is malformed"),
        ] {
            let source = with_users(&format!(
                "[[user]]\nname = \"ci\"\nroles = [\"read\"]\npassword_hash = \"{hash}\"\n"
            ));
            let message = error_of(&source).to_string();
            assert!(
                message.starts_with(
                    "/etc/wheelgate/proxy.toml line 15: [[user]] \"ci\" password_hash: "
                ),
                "{message}"
            );
            assert!(message.contains(what), "{hash}: {message}");
            assert!(
                message.contains("run `wheelgate hash-password`"),
                "{message}"
            );
            assert!(!message.contains(hash), "{message}");
        }
    }

    #[test]
    fn a_user_has_exactly_one_credential() {
        user_error(
            &format!("[[user]]\nname = \"ci\"\npassword_hash = \"{ARGON2ID}\"\ntoken_file = \"t\"\nroles = [\"read\"]\n"),
            15,
            "[[user]] \"ci\":",
            "either a password_hash or a token_file, not both",
        );
        user_error(
            "[[user]]\nname = \"ci\"\nroles = [\"read\"]\n",
            12,
            "[[user]] \"ci\" password_hash",
            "missing; give the user a password_hash (`wheelgate hash-password` prints one) or a token_file",
        );
        user_error(
            "[[user]]\nname = \"ci\"\ntoken_file = \" \"\nroles = [\"read\"]\n",
            14,
            "[[user]] \"ci\" token_file",
            "must not be empty",
        );
    }

    #[test]
    fn token_files_are_not_read_at_load() {
        let config = parse_text(&with_users(
            "[[user]]\nname = \"ci\"\ntoken_file = \"/nonexistent/token\"\nroles = [\"read\"]\n",
        ))
        .unwrap();
        assert_eq!(
            config.users[0].credential,
            Credential::TokenFile(PathBuf::from("/nonexistent/token"))
        );
    }

    #[test]
    fn user_names_are_checked() {
        user_error(
            &format!("[[user]]\npassword_hash = \"{ARGON2ID}\"\nroles = [\"read\"]\n"),
            12,
            "[[user]] #1 name",
            "missing",
        );
        user_error(
            "[[user]]\nname = \"ci:admin\"\n",
            13,
            "[[user]] #1 name",
            "contains ':'; names are [A-Za-z0-9._-]{1,64}",
        );
        user_error(
            "[[user]]\nname = \"__token__\"\n",
            13,
            "[[user]] #1 name",
            "reserved",
        );
    }

    #[test]
    fn roles_are_checked() {
        let user = format!("[[user]]\nname = \"ci\"\npassword_hash = \"{ARGON2ID}\"\n");
        user_error(
            &user,
            12,
            "[[user]] \"ci\" roles",
            "missing; give the user's roles",
        );
        user_error(
            &format!("{user}roles = []\n"),
            15,
            "[[user]] \"ci\" roles",
            "must not be empty; give at least one of \"read\" and \"publish\"",
        );
        user_error(
            &format!("{user}roles = [\"read\",\n  \"admin\"]\n"),
            16,
            "[[user]] \"ci\" roles",
            "\"admin\" is not a role; the roles are \"read\" and \"publish\"",
        );
        let error = error_of(&with_users(&format!("{user}roles = \"read\"\n")));
        assert_eq!(error.line(), Some(15), "{error}");
        assert!(matches!(error, ConfigError::Syntax { .. }), "{error}");
    }

    #[test]
    fn repositories_must_be_defined() {
        let user = format!(
            "[[user]]\nname = \"ci\"\npassword_hash = \"{ARGON2ID}\"\nroles = [\"read\"]\n"
        );
        user_error(
            &format!("{user}repositories = [\"pypi\", \"privat\"]\n"),
            16,
            "[[user]] \"ci\" repositories",
            "no repository is named \"privat\"; a user's repositories are among the defined ones: pypi, internal",
        );
        user_error(
            &format!("{user}repositories = []\n"),
            16,
            "[[user]] \"ci\" repositories",
            "must not be empty; leave `repositories` out",
        );
    }

    #[test]
    fn unknown_user_keys_are_named() {
        user_error(
            "[[user]]\nname = \"ci\"\npassword = \"hunter2\"\n",
            14,
            "unknown key `password`",
            "in [[user]]",
        );
    }
}
