//! `[[repository]]`: the list of repositories with their names, types and (for remote ones)
//! upstream settings and `[repository.auth]`, and the checks across them (unique names). A
//! group's `members` are read and checked in `groups`.

use std::collections::HashMap;
use std::time::Duration;

use toml::Spanned;
use url::Url;

use super::{base_url, Key, Parser};
use crate::config::raw::{RawAuth, RawRepository, Scalar};
use crate::config::{
    ConfigError, Problem, RemoteAuth, RemoteConfig, RepoName, RepositoryConfig, RepositoryKind,
};

const DEFAULT_INDEX_TTL: Duration = Duration::from_secs(10 * 60);
const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(60);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_RETRIES: i64 = 3;
/// Retries multiply upstream load during an outage; more than this only delays the 502.
const MAX_RETRIES: i64 = 10;
const DEFAULT_AUTH_USERNAME: &str = "__token__";

impl Parser<'_> {
    pub(super) fn repositories(
        &self,
        raws: &[Spanned<RawRepository>],
    ) -> Result<Vec<RepositoryConfig>, ConfigError> {
        if raws.is_empty() {
            return Err(self.invalid(None, "", Problem::NoRepositories));
        }
        let mut first_seen: HashMap<RepoName, usize> = HashMap::new();
        let mut repositories = Vec::with_capacity(raws.len());
        for (index, raw) in raws.iter().enumerate() {
            let (repo, name_offset) = self.repository(index + 1, raw)?;
            let name_line = self.line_of(name_offset);
            if let Some(&first_line) = first_seen.get(&repo.name) {
                return Err(self.invalid(
                    Some(name_line),
                    "[[repository]] name",
                    Problem::DuplicateRepository {
                        name: repo.name.to_string(),
                        first_line,
                        second_line: name_line,
                    },
                ));
            }
            first_seen.insert(repo.name.clone(), name_line);
            repositories.push(repo);
        }
        // A member may be defined after its group: checked once every repository is known.
        self.check_groups(raws, &repositories)?;
        Ok(repositories)
    }

    /// One repository, and the offset of its name (duplicate names are reported there).
    fn repository(
        &self,
        number: usize,
        raw: &Spanned<RawRepository>,
    ) -> Result<(RepositoryConfig, usize), ConfigError> {
        let header = raw.span().start;
        let fields = raw.get_ref();
        let unnamed = format!("[[repository]] #{number}");
        let name_field = fields.name.as_ref().ok_or_else(|| {
            self.invalid(
                Some(self.line_of(header)),
                Key {
                    section: &unnamed,
                    name: "name",
                },
                Problem::MissingKey {
                    hint: "give every repository a name, e.g. name = \"pypi\"",
                },
            )
        })?;
        let name_key = Key {
            section: "[[repository]]",
            name: "name",
        };
        let name = RepoName::parse(&self.text(name_field, name_key)?)
            .map_err(|error| self.at(name_field, name_key, Problem::RepoName(error)))?;
        let section = repository_section(&name);

        let type_key = Key {
            section: &section,
            name: "type",
        };
        let type_field = fields.kind.as_ref().ok_or_else(|| {
            self.invalid(
                Some(self.line_of(header)),
                type_key,
                Problem::MissingKey {
                    hint: "write type = \"remote\" (an upstream index), \"hosted\" (packages published to wheelgate) or \"group\" (several repositories served as one)",
                },
            )
        })?;
        let text = self.text(type_field, type_key)?;
        let Some(kind) = Type::parse(&text) else {
            return Err(self.at(
                type_field,
                type_key,
                Problem::UnknownRepositoryType { found: text },
            ));
        };
        if let Some(members) = fields.members.as_ref().filter(|_| kind != Type::Group) {
            return Err(self.invalid(
                Some(self.line_of(members.span().start)),
                Key {
                    section: &section,
                    name: "members",
                },
                Problem::NotForType {
                    key: "members",
                    applies_to: "group",
                    this: kind.as_str(),
                },
            ));
        }
        let kind = match kind {
            Type::Remote => RepositoryKind::Remote(self.remote(&section, header, fields)?),
            Type::Hosted => {
                self.refuse_remote_keys(&section, header, fields, kind.as_str())?;
                RepositoryKind::Hosted
            }
            Type::Group => {
                self.refuse_remote_keys(&section, header, fields, kind.as_str())?;
                RepositoryKind::Group(self.group(&name, &section, header, fields)?)
            }
        };
        let repo = RepositoryConfig {
            name,
            line: self.line_of(header),
            kind,
        };
        Ok((repo, name_field.span().start))
    }

    /// A hosted or group repository fetches nothing itself: the upstream keys of a remote one
    /// are mistakes. `this` is its type, as written.
    fn refuse_remote_keys(
        &self,
        section: &str,
        header: usize,
        fields: &RawRepository,
        this: &'static str,
    ) -> Result<(), ConfigError> {
        let scalars = [
            ("url", &fields.url),
            ("index_ttl", &fields.index_ttl),
            ("negative_ttl", &fields.negative_ttl),
            ("connect_timeout", &fields.connect_timeout),
            ("first_byte_timeout", &fields.first_byte_timeout),
            ("idle_timeout", &fields.idle_timeout),
            ("retries", &fields.retries),
            ("ca_file", &fields.ca_file),
            ("native_roots", &fields.native_roots),
            ("offline", &fields.offline),
        ];
        let found = scalars
            .iter()
            .find_map(|(name, field)| {
                field
                    .as_ref()
                    .map(|field| (*name, Some(self.line_of(field.span().start))))
            })
            .or_else(|| {
                fields
                    .auth
                    .as_ref()
                    .map(|_| ("auth", Some(self.line_of(header))))
            })
            .or_else(|| {
                fields.file_hosts.as_ref().map(|hosts| {
                    let line = hosts.first().map(|host| self.line_of(host.span().start));
                    ("file_hosts", line.or(Some(self.line_of(header))))
                })
            });
        match found {
            Some((name, line)) => Err(self.invalid(
                line,
                Key { section, name },
                Problem::NotForType {
                    key: name,
                    applies_to: "remote",
                    this,
                },
            )),
            None => Ok(()),
        }
    }

    fn remote(
        &self,
        section: &str,
        header: usize,
        fields: &RawRepository,
    ) -> Result<RemoteConfig, ConfigError> {
        let key = |name| Key { section, name };
        let url_field = fields.url.as_ref().ok_or_else(|| {
            self.invalid(
                Some(self.line_of(header)),
                key("url"),
                Problem::MissingKey {
                    hint: "give the upstream's simple index root, e.g. url = \"https://example.invalid/simple/\", or url = \"\" for a repository that serves only its store",
                },
            )
        })?;
        let url_text = self.text(url_field, key("url"))?;
        let url = if url_text.trim().is_empty() {
            None
        } else {
            Some(base_url(&url_text).map_err(|problem| self.at(url_field, key("url"), problem))?)
        };
        let offline =
            self.boolean(fields.offline.as_ref(), key("offline"), false)? || url.is_none();
        let retries = self.integer(
            fields.retries.as_ref(),
            key("retries"),
            DEFAULT_RETRIES,
            0,
            MAX_RETRIES,
        )?;
        let ca_file = match &fields.ca_file {
            None => None,
            Some(field) => Some(self.existing_file(
                field,
                key("ca_file"),
                "give the PEM file of the CA that signs the upstream's certificate",
            )?),
        };
        let auth = match &fields.auth {
            None => None,
            Some(auth) => Some(self.auth(section, header, auth)?),
        };
        Ok(RemoteConfig {
            url,
            index_ttl: self.duration(
                fields.index_ttl.as_ref(),
                key("index_ttl"),
                DEFAULT_INDEX_TTL,
                false,
            )?,
            negative_ttl: self.duration(
                fields.negative_ttl.as_ref(),
                key("negative_ttl"),
                DEFAULT_NEGATIVE_TTL,
                false,
            )?,
            connect_timeout: self.duration(
                fields.connect_timeout.as_ref(),
                key("connect_timeout"),
                DEFAULT_CONNECT_TIMEOUT,
                true,
            )?,
            first_byte_timeout: self.duration(
                fields.first_byte_timeout.as_ref(),
                key("first_byte_timeout"),
                DEFAULT_FIRST_BYTE_TIMEOUT,
                true,
            )?,
            idle_timeout: self.duration(
                fields.idle_timeout.as_ref(),
                key("idle_timeout"),
                DEFAULT_IDLE_TIMEOUT,
                true,
            )?,
            // The range check above keeps this conversion lossless.
            retries: u32::try_from(retries).unwrap_or(0),
            ca_file,
            native_roots: self.boolean(fields.native_roots.as_ref(), key("native_roots"), true)?,
            offline,
            auth,
            file_hosts: self.hosts(fields.file_hosts.as_ref(), key("file_hosts"))?,
        })
    }

    /// A list of `host` or `host:port` entries (`auth_hosts`, `file_hosts`), lowercased.
    fn hosts(
        &self,
        fields: Option<&Vec<Spanned<Scalar>>>,
        key: Key<'_>,
    ) -> Result<Vec<String>, ConfigError> {
        let mut hosts = Vec::new();
        for field in fields.into_iter().flatten() {
            let host = self.text(field, key)?;
            hosts.push(auth_host(&host).map_err(|problem| self.at(field, key, problem))?);
        }
        Ok(hosts)
    }

    fn auth(
        &self,
        section: &str,
        header: usize,
        fields: &RawAuth,
    ) -> Result<RemoteAuth, ConfigError> {
        let key = |name| Key { section, name };
        let username = match &fields.username {
            None => DEFAULT_AUTH_USERNAME.to_owned(),
            Some(field) => {
                let username = self.text(field, key("auth.username"))?;
                if username.is_empty() {
                    return Err(self.at(
                        field,
                        key("auth.username"),
                        Problem::Empty {
                            hint: "; leave the key out for __token__",
                        },
                    ));
                }
                if username.contains(':') {
                    return Err(self.at(field, key("auth.username"), Problem::UsernameWithColon));
                }
                username
            }
        };
        let password_file = match &fields.password_file {
            None => {
                let first_host = fields.auth_hosts.as_ref().and_then(|hosts| hosts.first());
                let line = self.sibling_line(&[fields.username.as_ref(), first_host]);
                return Err(self.invalid(
                    Some(line.unwrap_or_else(|| self.line_of(header))),
                    key("auth.password_file"),
                    Problem::MissingKey {
                        hint: "give the file that holds the upstream token, e.g. password_file = \"/run/secrets/pypi-token\"",
                    },
                ));
            }
            Some(field) => self.path(field, key("auth.password_file"))?,
        };
        let auth_hosts = self.hosts(fields.auth_hosts.as_ref(), key("auth.auth_hosts"))?;
        Ok(RemoteAuth {
            username,
            password_file,
            auth_hosts,
        })
    }
}

/// The name of a repository's table in messages: `[[repository]] "pypi"`.
pub(super) fn repository_section(name: &RepoName) -> String {
    format!("[[repository]] \"{name}\"")
}

/// The `type` of a repository, as written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Type {
    Remote,
    Hosted,
    Group,
}

impl Type {
    fn parse(text: &str) -> Option<Type> {
        match text {
            "remote" => Some(Type::Remote),
            "hosted" => Some(Type::Hosted),
            "group" => Some(Type::Group),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Type::Remote => "remote",
            Type::Hosted => "hosted",
            Type::Group => "group",
        }
    }
}

/// Validates and lowercases one `auth_hosts` entry: a host name, IP address or `host:port`.
fn auth_host(text: &str) -> Result<String, Problem> {
    let host = text.trim().to_ascii_lowercase();
    let problem = |reason: &str| Problem::AuthHost {
        value: text.to_owned(),
        reason: reason.to_owned(),
    };
    if host.is_empty() {
        return Err(problem("it is empty"));
    }
    if host.contains("://") {
        return Err(problem(
            "give only the host, without a scheme, e.g. \"files.example.invalid\"",
        ));
    }
    if host.contains(|c: char| matches!(c, '/' | '@' | '?' | '#') || c.is_whitespace()) {
        return Err(problem(
            "give only the host or host:port, e.g. \"files.example.invalid\"",
        ));
    }
    let parsed =
        Url::parse(&format!("http://{host}/")).map_err(|error| problem(&error.to_string()))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(problem("it has no host name"));
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn empty_fallback_makes_an_offline_remote() {
        let config = parse_text(
            "[[repository]]\nname = \"pypi\"\ntype = \"remote\"\nurl = \"${UPSTREAM:-}\"\n",
        )
        .unwrap();
        let remote = remote_of(&config, 0);
        assert_eq!(remote.url, None);
        assert!(remote.offline);
    }

    #[test]
    fn file_hosts_are_read_lowercased_and_refused_where_nothing_is_fetched() {
        let config = parse_text(&format!(
            "{MINIMAL}file_hosts = [\"Files.Example.Internal\", \"10.0.0.5:8443\"]\n"
        ))
        .unwrap();
        assert_eq!(
            remote_of(&config, 0).file_hosts,
            ["files.example.internal", "10.0.0.5:8443"]
        );
        assert!(remote_of(&parse_text(MINIMAL).unwrap(), 0)
            .file_hosts
            .is_empty());
        let error = error_of(&format!(
            "{MINIMAL}file_hosts = [\"http://files.example.internal/\"]\n"
        ));
        assert_eq!(error.line(), Some(5));
        assert!(error.to_string().contains("file_hosts"), "{error}");
        let error = error_of(
            "[[repository]]\nname = \"internal\"\ntype = \"hosted\"\nfile_hosts = [\"a\"]\n",
        );
        assert!(error.to_string().contains("file_hosts"), "{error}");
    }

    #[test]
    fn bad_repository_name_names_key_and_line() {
        let error =
            error_of("\n\n[[repository]]\nname = \"Bad Name\"\ntype = \"remote\"\nurl = \"\"\n");
        assert_eq!(error.line(), Some(4));
        let message = error.to_string();
        assert!(message.starts_with("/etc/wheelgate/proxy.toml line 4: [[repository]] name: repository name \"Bad Name\""), "{message}");
        assert!(message.contains("[a-z0-9][a-z0-9._-]{0,63}"), "{message}");
    }

    #[test]
    fn reserved_repository_name_is_refused() {
        let error = error_of("[[repository]]\nname = \"simple\"\ntype = \"remote\"\nurl = \"\"\n");
        assert_eq!(error.line(), Some(2));
        assert!(error.to_string().contains("reserved"), "{error}");
    }

    #[test]
    fn duplicate_repository_names_name_both_lines() {
        let error = error_of(&format!("{MINIMAL}\n{MINIMAL}"));
        assert_eq!(error.line(), Some(7));
        let message = error.to_string();
        assert!(
            message.contains("\"pypi\" is defined twice, at line 2 and at line 7"),
            "{message}"
        );
    }

    #[test]
    fn at_least_one_repository_is_required() {
        let error = error_of("[server]\nlisten = \"127.0.0.1:0\"\n");
        assert!(
            error.to_string().contains("no repository is defined"),
            "{error}"
        );
    }

    #[test]
    fn a_hosted_repository_has_no_upstream_keys() {
        let config = parse_text(&format!(
            "[server]\ndefault_repository = \"pypi\"\n{MINIMAL}\n[[repository]]\nname = \"internal\"\ntype = \"hosted\"\n"
        ))
        .unwrap();
        assert_eq!(
            config.repositories[1].kind,
            crate::config::RepositoryKind::Hosted
        );
        let error = error_of(&format!(
            "[server]\ndefault_repository = \"pypi\"\n{MINIMAL}\n[[repository]]\nname = \"internal\"\ntype = \"hosted\"\nindex_ttl = \"1m\"\n"
        ));
        assert_eq!(error.line(), Some(11));
        assert!(
            error.to_string().contains(
                "`index_ttl` only applies to repositories of type `remote`; remove it from this hosted repository"
            ),
            "{error}"
        );
    }

    #[test]
    fn a_missing_type_names_every_type() {
        let error = error_of("[[repository]]\nname = \"x\"\nurl = \"\"\n");
        assert_eq!(error.line(), Some(1));
        let message = error.to_string();
        assert!(
            message.contains("[[repository]] \"x\" type: missing; write type = \"remote\""),
            "{message}"
        );
        assert!(
            message.contains("\"hosted\"") && message.contains("\"group\""),
            "{message}"
        );
    }

    #[test]
    fn unknown_repository_type_lists_the_valid_ones() {
        let error = error_of("[[repository]]\nname = \"x\"\ntype = \"proxy\"\n");
        assert_eq!(error.line(), Some(3));
        assert!(
            error
                .to_string()
                .contains("`proxy` is not one of remote, hosted, group"),
            "{error}"
        );
    }

    #[test]
    fn members_on_a_remote_or_hosted_repository_is_an_error() {
        let error = error_of(&format!("{MINIMAL}members = [\"a\"]\n"));
        assert_eq!(error.line(), Some(5));
        assert!(
            error.to_string().contains(
                "`members` only applies to repositories of type `group`; remove it from this remote repository"
            ),
            "{error}"
        );
        let error = error_of(&format!(
            "[server]\ndefault_repository = \"pypi\"\n{MINIMAL}[[repository]]\nname = \"internal\"\ntype = \"hosted\"\nmembers = [\"pypi\"]\n"
        ));
        assert_eq!(error.line(), Some(10));
        assert!(
            error
                .to_string()
                .contains("remove it from this hosted repository"),
            "{error}"
        );
    }

    #[test]
    fn bad_remote_url_names_key_and_line() {
        let error = error_of(
            "[[repository]]\nname = \"p\"\ntype = \"remote\"\nurl = \"file:///srv/simple\"\n",
        );
        assert_eq!(error.line(), Some(4));
        assert!(
            error.to_string().contains("[[repository]] \"p\" url"),
            "{error}"
        );
    }

    #[test]
    fn missing_ca_file_is_an_error_but_password_file_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let origin = dir.path().join("proxy.toml").display().to_string();
        let error = parse(
            &format!("{MINIMAL}ca_file = \"missing.pem\"\n"),
            &origin,
            &no_env,
        )
        .unwrap_err();
        assert_eq!(error.line(), Some(5));
        assert!(
            error.to_string().contains("missing.pem does not exist"),
            "{error}"
        );
        let with_auth =
            format!("{MINIMAL}[repository.auth]\npassword_file = \"/nonexistent/token\"\n");
        assert!(parse(&with_auth, &origin, &no_env).is_ok());
    }

    #[test]
    fn auth_username_and_hosts_are_validated() {
        let error = error_of(&format!(
            "{MINIMAL}[repository.auth]\nusername = \"a:b\"\npassword_file = \"t\"\n"
        ));
        assert_eq!(error.line(), Some(6));
        let error = error_of(&format!("{MINIMAL}[repository.auth]\npassword_file = \"t\"\nauth_hosts = [\"ok.example.invalid\",\n  \"https://files.example.invalid/\"]\n"));
        assert_eq!(error.line(), Some(8));
        assert!(error.to_string().contains("without a scheme"), "{error}");
        let error = error_of(&format!("{MINIMAL}[repository.auth]\nusername = \"x\"\n"));
        assert!(
            error.to_string().contains("auth.password_file: missing"),
            "{error}"
        );
    }
}
