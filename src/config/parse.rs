//! Turns the raw TOML shape into a validated [`Config`]: `${VAR}` expansion, typed values,
//! defaults, paths resolved against the configuration file's directory, and the checks that
//! involve several keys (duplicate names, the default repository).
//!
//! Every error is built here with the line it belongs to, taken from the span toml recorded for
//! the offending value, because a message without a line sends the user searching the file.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use url::Url;

use super::raw::{
    RawAccess, RawAuth, RawConfig, RawRepository, RawRule, RawServer, RawStore, RawTls, Scalar,
};
use super::values::{expand_env, parse_duration, parse_size, RepoName};
use super::{
    AccessConfig, Action, Config, ConfigError, Operation, Problem, RemoteAuth, RemoteConfig,
    RepositoryConfig, RepositoryKind, RuleConfig, RuleName, ServerConfig, StoreConfig, TlsConfig,
};
use crate::simple::ProjectName;

/// The default listen address is 127.0.0.1 on this port.
const DEFAULT_PORT: u16 = 3141;
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
const DEFAULT_MAX_UPLOAD_SIZE: u64 = 1 << 30;
const DEFAULT_MAX_CONCURRENT_FETCHES: i64 = 64;
/// An upper bound that keeps a typo (an extra zero or two) from opening thousands of sockets.
const MAX_CONCURRENT_FETCHES: i64 = 65_536;
const DEFAULT_STORE_PATH: &str = "./wheelgate-data";
const DEFAULT_STORE_MAX_SIZE: u64 = 20 << 30;
const DEFAULT_MEMORY_CACHE: u64 = 256 << 20;
const DEFAULT_INDEX_TTL: Duration = Duration::from_secs(10 * 60);
const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(60);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_RETRIES: i64 = 3;
/// Retries multiply upstream load during an outage; more than this only delays the 502.
const MAX_RETRIES: i64 = 10;
const DEFAULT_AUTH_USERNAME: &str = "__token__";

/// The name of a key in messages: `[server] listen`, `[[repository]] "pypi" index_ttl`.
#[derive(Clone, Copy)]
struct Key<'a> {
    section: &'a str,
    name: &'static str,
}

impl fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            f.write_str(self.section)
        } else {
            write!(f, "{} {}", self.section, self.name)
        }
    }
}

/// One parse of one text: everything an error message or a relative path needs.
pub(super) struct Parser<'a> {
    pub source: &'a str,
    /// The file name shown in messages.
    pub origin: &'a str,
    /// Relative paths in the text are resolved against this directory.
    pub base_dir: &'a Path,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl Parser<'_> {
    pub fn parse(&self) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(self.source).map_err(|error| self.syntax_error(&error))?;
        self.refuse_unsupported_sections(&raw)?;
        let repositories = self.repositories(&raw.repository)?;
        let server = self.server(raw.server.as_ref(), &repositories)?;
        let store = self.store(raw.store.as_ref())?;
        let access = self.access(raw.access.as_ref())?;
        let rules = self.rules(&raw.rule, &repositories)?;
        Ok(Config {
            server,
            store,
            access,
            repositories,
            rules,
            source_path: None,
        })
    }

    fn line_of(&self, offset: usize) -> usize {
        self.source
            .bytes()
            .take(offset)
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    fn column_of(&self, offset: usize) -> usize {
        let line_start = self
            .source
            .bytes()
            .take(offset)
            .rposition(|b| b == b'\n')
            .map_or(0, |nl| nl + 1);
        self.source
            .get(line_start..offset)
            .map_or(1, |text| text.chars().count() + 1)
    }

    fn invalid(
        &self,
        line: Option<usize>,
        key: impl fmt::Display,
        problem: Problem,
    ) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_owned(),
            line,
            key: key.to_string(),
            problem: Box::new(problem),
        }
    }

    fn at(&self, field: &Spanned<Scalar>, key: Key<'_>, problem: Problem) -> ConfigError {
        self.invalid(Some(self.line_of(field.span().start)), key, problem)
    }

    /// The line of the first of `fields` that is present: where a missing sibling key belongs.
    fn sibling_line(&self, fields: &[Option<&Spanned<Scalar>>]) -> Option<usize> {
        fields
            .iter()
            .flatten()
            .map(|field| self.line_of(field.span().start))
            .min()
    }

    /// The line where a table is written, found in the text because toml cannot give spans to
    /// tables (see `raw`): its `[name]`/`[[name]]` header or a sub-table of it, or a top-level
    /// dotted key or assignment (`name.key = …`, `name = …`).
    fn table_line(&self, name: &str) -> Option<usize> {
        self.source
            .lines()
            .position(|line| {
                if let Some(header) = table_header(line) {
                    let path: String = header
                        .chars()
                        .filter(|c| !matches!(c, '[' | ']' | ' '))
                        .collect();
                    return path == name || path.starts_with(&format!("{name}."));
                }
                line.trim_start()
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.trim_start().starts_with(['=', '.']))
            })
            .map(|index| index + 1)
    }

    /// Rewords a TOML or shape error ("field" becomes "key") and says which table an unknown key
    /// was found in, since toml only points at the key itself.
    fn syntax_error(&self, error: &toml::de::Error) -> ConfigError {
        let offset = error.span().map(|span| span.start);
        let line = offset.map(|offset| self.line_of(offset));
        let mut message = error
            .message()
            .trim()
            .replace("unknown field", "unknown key")
            .replace("missing field", "missing key")
            .replace('\n', "; ");
        if message.starts_with("unknown key") {
            let table = line
                .map(|line| format!(" {}", self.table_around(line)))
                .unwrap_or_default();
            // toml says "unknown field `x`, expected one of …"; put the table next to the key
            // and the (long) list of valid keys last.
            message = match message.split_once(", expected") {
                Some((unknown, expected)) => {
                    format!("{unknown}{table}; check its spelling (expected{expected})")
                }
                None => {
                    format!("{message}{table}; check its spelling against the shipped proxy.toml")
                }
            };
        }
        ConfigError::Syntax {
            origin: self.origin.to_owned(),
            line,
            column: offset.map(|offset| self.column_of(offset)),
            message,
        }
    }

    /// Names the table that a key on `line` belongs to. A key on a header line (`[storage]`,
    /// `[repository.autth]`) belongs to the header's parent; any other key to the nearest header
    /// above it.
    fn table_around(&self, line: usize) -> String {
        let mut lines = self.source.lines().take(line).collect::<Vec<_>>();
        if let Some(header) = lines.pop().and_then(table_header) {
            let path = header.trim_matches(|c| c == '[' || c == ']').trim();
            return match path.rsplit_once('.') {
                Some((parent, _)) => format!("in [{}]", parent.trim()),
                None => "at the top level".to_owned(),
            };
        }
        match lines.into_iter().rev().find_map(table_header) {
            Some(header) => format!("in {header}"),
            None => "at the top level".to_owned(),
        }
    }

    fn refuse_unsupported_sections(&self, raw: &RawConfig) -> Result<(), ConfigError> {
        let sections = [
            (
                raw.package_group.is_some(),
                "package_group",
                "origin controls",
            ),
            (
                raw.package_origin.is_some(),
                "package_origin",
                "per-package origin overrides",
            ),
            (raw.user.is_some(), "user", "client users"),
        ];
        // Report the one written first, so that fixing errors top to bottom works.
        let first = sections
            .into_iter()
            .filter(|(present, _, _)| *present)
            .map(|(_, section, what)| (self.table_line(section), section, what))
            .min_by_key(|(line, _, _)| line.unwrap_or(usize::MAX));
        match first {
            Some((line, section, what)) => {
                Err(self.invalid(line, "", Problem::UnsupportedSection { section, what }))
            }
            None => Ok(()),
        }
    }

    fn repositories(
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
        let section = format!("[[repository]] \"{name}\"");

        let type_key = Key {
            section: &section,
            name: "type",
        };
        let type_field = fields.kind.as_ref().ok_or_else(|| {
            self.invalid(
                Some(self.line_of(header)),
                type_key,
                Problem::MissingKey {
                    hint: "write type = \"remote\" (hosted and group come in a later version)",
                },
            )
        })?;
        match self.text(type_field, type_key)?.as_str() {
            "remote" => {}
            "hosted" => {
                return Err(self.at(
                    type_field,
                    type_key,
                    Problem::UnsupportedRepositoryType { kind: "hosted" },
                ))
            }
            "group" => {
                return Err(self.at(
                    type_field,
                    type_key,
                    Problem::UnsupportedRepositoryType { kind: "group" },
                ))
            }
            other => {
                return Err(self.at(
                    type_field,
                    type_key,
                    Problem::UnknownRepositoryType {
                        found: other.to_owned(),
                    },
                ))
            }
        }
        if let Some(members) = &fields.members {
            return Err(self.invalid(
                Some(self.line_of(members.span().start)),
                Key {
                    section: &section,
                    name: "members",
                },
                Problem::NotForRemote {
                    key: "members",
                    applies_to: "group",
                },
            ));
        }
        let remote = self.remote(&section, header, fields)?;
        let repo = RepositoryConfig {
            name,
            line: self.line_of(header),
            kind: RepositoryKind::Remote(remote),
        };
        Ok((repo, name_field.span().start))
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
            native_roots: self.boolean(fields.native_roots.as_ref(), key("native_roots"), false)?,
            offline,
            auth,
        })
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
        let mut auth_hosts = Vec::new();
        for field in fields.auth_hosts.iter().flatten() {
            let host = self.text(field, key("auth.auth_hosts"))?;
            auth_hosts.push(
                auth_host(&host)
                    .map_err(|problem| self.at(field, key("auth.auth_hosts"), problem))?,
            );
        }
        Ok(RemoteAuth {
            username,
            password_file,
            auth_hosts,
        })
    }

    fn server(
        &self,
        raw: Option<&RawServer>,
        repositories: &[RepositoryConfig],
    ) -> Result<ServerConfig, ConfigError> {
        let fallback = RawServer::default();
        let fields = raw.unwrap_or(&fallback);
        let key = |name| Key {
            section: "[server]",
            name,
        };

        let listen = match &fields.listen {
            None => SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            Some(field) => {
                let text = self.text(field, key("listen"))?;
                text.trim()
                    .parse()
                    .map_err(|error: std::net::AddrParseError| {
                        self.at(
                            field,
                            key("listen"),
                            Problem::ListenAddress {
                                value: text.clone(),
                                reason: error.to_string(),
                            },
                        )
                    })?
            }
        };

        let defined = || {
            repositories
                .iter()
                .map(|repo| repo.name.to_string())
                .collect::<Vec<_>>()
        };
        let default_repository = match &fields.default_repository {
            Some(field) => {
                let text = self.text(field, key("default_repository"))?;
                let name = RepoName::parse(&text).map_err(|error| {
                    self.at(field, key("default_repository"), Problem::RepoName(error))
                })?;
                if !repositories.iter().any(|repo| repo.name == name) {
                    return Err(self.at(
                        field,
                        key("default_repository"),
                        Problem::UnknownDefaultRepository {
                            name: name.to_string(),
                            defined: defined(),
                        },
                    ));
                }
                name
            }
            None => match repositories {
                [only] => only.name.clone(),
                _ => {
                    // Point at [server] where the key belongs, or else at the second repository,
                    // the one that made the choice ambiguous.
                    let line = self
                        .table_line("server")
                        .or_else(|| repositories.get(1).map(|repo| repo.line));
                    return Err(self.invalid(
                        line,
                        key("default_repository"),
                        Problem::AmbiguousDefaultRepository { defined: defined() },
                    ));
                }
            },
        };

        let public_url = match &fields.public_url {
            None => None,
            Some(field) => {
                let text = self.text(field, key("public_url"))?;
                if text.trim().is_empty() {
                    None
                } else {
                    Some(
                        base_url(&text)
                            .map_err(|problem| self.at(field, key("public_url"), problem))?,
                    )
                }
            }
        };

        let tls = match &fields.tls {
            None => None,
            Some(tls) => Some(self.tls(tls)?),
        };

        let max_concurrent_fetches = self.integer(
            fields.max_concurrent_fetches.as_ref(),
            key("max_concurrent_fetches"),
            DEFAULT_MAX_CONCURRENT_FETCHES,
            1,
            MAX_CONCURRENT_FETCHES,
        )?;
        Ok(ServerConfig {
            listen,
            default_repository,
            public_url,
            tls,
            shutdown_grace: self.duration(
                fields.shutdown_grace.as_ref(),
                key("shutdown_grace"),
                DEFAULT_SHUTDOWN_GRACE,
                false,
            )?,
            max_upload_size: self.size(
                fields.max_upload_size.as_ref(),
                key("max_upload_size"),
                DEFAULT_MAX_UPLOAD_SIZE,
                Some("; uploads larger than this are refused, so it must allow at least one byte"),
            )?,
            // The range check above keeps this conversion lossless.
            max_concurrent_fetches: usize::try_from(max_concurrent_fetches).unwrap_or(1),
        })
    }

    fn tls(&self, fields: &RawTls) -> Result<TlsConfig, ConfigError> {
        let key = |name| Key {
            section: "[server.tls]",
            name,
        };
        let required = |field: &Option<Spanned<Scalar>>, name: &'static str, hint: &'static str| {
            let field = field.as_ref().ok_or_else(|| {
                let line = self
                    .sibling_line(&[fields.cert_file.as_ref(), fields.key_file.as_ref()])
                    .or_else(|| self.table_line("server.tls"));
                self.invalid(line, key(name), Problem::MissingKey { hint })
            })?;
            self.existing_file(field, key(name), hint)
        };
        Ok(TlsConfig {
            cert_file: required(
                &fields.cert_file,
                "cert_file",
                "give the PEM certificate chain, e.g. cert_file = \"tls.crt\"",
            )?,
            key_file: required(
                &fields.key_file,
                "key_file",
                "give the PEM private key, e.g. key_file = \"tls.key\"",
            )?,
        })
    }

    fn store(&self, raw: Option<&RawStore>) -> Result<StoreConfig, ConfigError> {
        let fallback = RawStore::default();
        let fields = raw.unwrap_or(&fallback);
        let key = |name| Key {
            section: "[store]",
            name,
        };
        let path = match &fields.path {
            None => self.resolve(DEFAULT_STORE_PATH),
            Some(field) => self.path(field, key("path"))?,
        };
        Ok(StoreConfig {
            path,
            max_size: self.size(
                fields.max_size.as_ref(),
                key("max_size"),
                DEFAULT_STORE_MAX_SIZE,
                Some("; the store needs room for at least one file"),
            )?,
            memory_cache: self.size(
                fields.memory_cache.as_ref(),
                key("memory_cache"),
                DEFAULT_MEMORY_CACHE,
                None,
            )?,
        })
    }

    fn access(&self, raw: Option<&RawAccess>) -> Result<AccessConfig, ConfigError> {
        let fallback = RawAccess::default();
        let fields = raw.unwrap_or(&fallback);
        let key = Key {
            section: "[access]",
            name: "anonymous_read",
        };
        let anonymous_read = self.boolean(fields.anonymous_read.as_ref(), key, true)?;
        if !anonymous_read {
            if let Some(field) = &fields.anonymous_read {
                return Err(self.at(field, key, Problem::AnonymousReadRequired));
            }
        }
        Ok(AccessConfig { anonymous_read })
    }

    /// The `[[rule]]` tables, with the checks that span several rules: the repository exists, the
    /// name is unique in it, and each scope (the whole repository, or one package) has at most
    /// one rule, as in the vendor's API (SPEC §5).
    fn rules(
        &self,
        raws: &[Spanned<RawRule>],
        repositories: &[RepositoryConfig],
    ) -> Result<Vec<RuleConfig>, ConfigError> {
        let mut rules: Vec<RuleConfig> = Vec::with_capacity(raws.len());
        for (index, raw) in raws.iter().enumerate() {
            let rule = self.rule(index + 1, raw, repositories)?;
            let section = format!("[[rule]] \"{}\"", rule.name);
            let same_repository = || {
                rules
                    .iter()
                    .filter(|other| other.repository == rule.repository)
            };
            if let Some(first) = same_repository().find(|other| other.name == rule.name) {
                return Err(self.invalid(
                    Some(rule.line),
                    Key {
                        section: &section,
                        name: "name",
                    },
                    Problem::DuplicateRuleName {
                        repository: rule.repository.to_string(),
                        name: rule.name.to_string(),
                        first_line: first.line,
                        second_line: rule.line,
                    },
                ));
            }
            if let Some(first) = same_repository().find(|other| other.package == rule.package) {
                let problem = match &rule.package {
                    None => Problem::SecondRepositoryWideRule {
                        repository: rule.repository.to_string(),
                        first: first.name.to_string(),
                        first_line: first.line,
                        second: rule.name.to_string(),
                        second_line: rule.line,
                    },
                    Some(package) => Problem::SecondPackageRule {
                        repository: rule.repository.to_string(),
                        package: package.to_string(),
                        first: first.name.to_string(),
                        first_line: first.line,
                        second: rule.name.to_string(),
                        second_line: rule.line,
                    },
                };
                return Err(self.invalid(
                    Some(rule.line),
                    Key {
                        section: &section,
                        name: "package",
                    },
                    problem,
                ));
            }
            rules.push(rule);
        }
        Ok(rules)
    }

    fn rule(
        &self,
        number: usize,
        raw: &Spanned<RawRule>,
        repositories: &[RepositoryConfig],
    ) -> Result<RuleConfig, ConfigError> {
        let line = self.line_of(raw.span().start);
        let fields = raw.get_ref();
        let unnamed = format!("[[rule]] #{number}");
        let missing = |section: &str, name: &'static str, hint: &'static str| {
            self.invalid(
                Some(line),
                Key { section, name },
                Problem::MissingKey { hint },
            )
        };

        let name_key = Key {
            section: &unnamed,
            name: "name",
        };
        let name_field = fields.name.as_ref().ok_or_else(|| {
            missing(
                &unnamed,
                "name",
                "give every rule a name, unique in its repository, e.g. name = \"no-old-django\"",
            )
        })?;
        let name = RuleName::parse(&self.text(name_field, name_key)?)
            .map_err(|error| self.at(name_field, name_key, Problem::RuleName(error)))?;
        let section = format!("[[rule]] \"{name}\"");
        let key = |name| Key {
            section: &section,
            name,
        };

        let repository_field = fields.repository.as_ref().ok_or_else(|| {
            missing(
                &section,
                "repository",
                "name the repository the rule belongs to, e.g. repository = \"pypi\"",
            )
        })?;
        let repository_text = self.text(repository_field, key("repository"))?;
        let repository = RepoName::parse(&repository_text).map_err(|error| {
            self.at(
                repository_field,
                key("repository"),
                Problem::RepoName(error),
            )
        })?;
        if !repositories.iter().any(|repo| repo.name == repository) {
            return Err(self.at(
                repository_field,
                key("repository"),
                Problem::UnknownRuleRepository {
                    name: repository.to_string(),
                    defined: repositories
                        .iter()
                        .map(|repo| repo.name.to_string())
                        .collect(),
                },
            ));
        }

        let action_field = fields.action.as_ref().ok_or_else(|| {
            missing(
                &section,
                "action",
                "say what the rule does to the downloads it matches: action = \"ALLOW\" or action = \"DENY\"",
            )
        })?;
        let action_text = self.text(action_field, key("action"))?;
        let action = Action::parse(&action_text).ok_or_else(|| {
            self.at(
                action_field,
                key("action"),
                Problem::UnknownAction {
                    found: action_text.clone(),
                },
            )
        })?;

        let operation = match &fields.operation {
            None => Operation::default(),
            Some(field) => {
                let text = self.text(field, key("operation"))?;
                Operation::parse(&text).ok_or_else(|| {
                    self.at(
                        field,
                        key("operation"),
                        Problem::UnknownOperation {
                            found: text.clone(),
                        },
                    )
                })?
            }
        };

        let package =
            match &fields.package {
                None => None,
                Some(field) => {
                    let text = self.text(field, key("package"))?;
                    Some(ProjectName::parse(text.trim()).map_err(|error| {
                        self.at(field, key("package"), Problem::ProjectName(error))
                    })?)
                }
            };

        let condition = match &fields.condition {
            None => None,
            Some(field) => {
                let text = self.text(field, key("condition"))?;
                if text.trim().is_empty() {
                    return Err(self.at(
                        field,
                        key("condition"),
                        Problem::Empty {
                            hint: "; leave `condition` out for a rule that matches every download it covers",
                        },
                    ));
                }
                Some(text)
            }
        };

        Ok(RuleConfig {
            repository,
            name,
            action,
            operation,
            package,
            condition,
            line,
        })
    }

    /// A string value with its `${VAR}` references expanded.
    fn text(&self, field: &Spanned<Scalar>, key: Key<'_>) -> Result<String, ConfigError> {
        match field.get_ref() {
            Scalar::Str(text) => {
                expand_env(text, self.env).map_err(|error| self.at(field, key, Problem::Env(error)))
            }
            other => Err(self.at(
                field,
                key,
                Problem::WrongType {
                    expected: "a string (in quotes)",
                    found: other.kind(),
                },
            )),
        }
    }

    fn duration(
        &self,
        field: Option<&Spanned<Scalar>>,
        key: Key<'_>,
        default: Duration,
        non_zero: bool,
    ) -> Result<Duration, ConfigError> {
        let Some(field) = field else {
            return Ok(default);
        };
        let duration = match field.get_ref() {
            Scalar::Int(value) => {
                return Err(self.at(field, key, Problem::BareDuration { value: *value }))
            }
            _ => parse_duration(&self.text(field, key)?)
                .map_err(|reason| self.at(field, key, Problem::Duration(reason)))?,
        };
        if non_zero && duration.is_zero() {
            return Err(self.at(
                field,
                key,
                Problem::Zero {
                    hint: "; a zero timeout would fail every upstream request",
                },
            ));
        }
        Ok(duration)
    }

    /// A size; a TOML integer counts bytes. `non_zero` carries the reason zero is refused.
    fn size(
        &self,
        field: Option<&Spanned<Scalar>>,
        key: Key<'_>,
        default: u64,
        non_zero: Option<&'static str>,
    ) -> Result<u64, ConfigError> {
        let Some(field) = field else {
            return Ok(default);
        };
        let size = match field.get_ref() {
            Scalar::Int(value) => u64::try_from(*value).map_err(|_| {
                self.at(
                    field,
                    key,
                    Problem::Size(format!(
                        "{value} is negative; write a size such as \"512MiB\""
                    )),
                )
            })?,
            _ => parse_size(&self.text(field, key)?)
                .map_err(|reason| self.at(field, key, Problem::Size(reason)))?,
        };
        match non_zero {
            Some(hint) if size == 0 => Err(self.at(field, key, Problem::Zero { hint })),
            _ => Ok(size),
        }
    }

    /// A whole number in `min..=max`; a string is accepted so that it can come from `${VAR}`.
    fn integer(
        &self,
        field: Option<&Spanned<Scalar>>,
        key: Key<'_>,
        default: i64,
        min: i64,
        max: i64,
    ) -> Result<i64, ConfigError> {
        let Some(field) = field else {
            return Ok(default);
        };
        let value = match field.get_ref() {
            Scalar::Int(value) => *value,
            Scalar::Str(_) => {
                let text = self.text(field, key)?;
                text.trim().parse().map_err(|_| {
                    self.at(
                        field,
                        key,
                        Problem::NotAnInteger {
                            value: text.clone(),
                        },
                    )
                })?
            }
            other => {
                return Err(self.at(
                    field,
                    key,
                    Problem::WrongType {
                        expected: "a whole number",
                        found: other.kind(),
                    },
                ))
            }
        };
        if !(min..=max).contains(&value) {
            return Err(self.at(field, key, Problem::OutOfRange { value, min, max }));
        }
        Ok(value)
    }

    /// A boolean; a string `"true"`/`"false"` is accepted so that it can come from `${VAR}`.
    fn boolean(
        &self,
        field: Option<&Spanned<Scalar>>,
        key: Key<'_>,
        default: bool,
    ) -> Result<bool, ConfigError> {
        let Some(field) = field else {
            return Ok(default);
        };
        match field.get_ref() {
            Scalar::Bool(value) => Ok(*value),
            Scalar::Str(_) => match self.text(field, key)?.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                other => Err(self.at(
                    field,
                    key,
                    Problem::NotABoolean {
                        value: other.to_owned(),
                    },
                )),
            },
            other => Err(self.at(
                field,
                key,
                Problem::WrongType {
                    expected: "true or false",
                    found: other.kind(),
                },
            )),
        }
    }

    /// A path, resolved against the configuration file's directory.
    fn path(&self, field: &Spanned<Scalar>, key: Key<'_>) -> Result<PathBuf, ConfigError> {
        let text = self.text(field, key)?;
        if text.trim().is_empty() {
            return Err(self.at(
                field,
                key,
                Problem::Empty {
                    hint: "; give a file or directory path",
                },
            ));
        }
        Ok(self.resolve(&text))
    }

    /// A path that must name an existing file now, so that `wheelgate check` catches a missing
    /// certificate instead of the first request.
    fn existing_file(
        &self,
        field: &Spanned<Scalar>,
        key: Key<'_>,
        hint: &'static str,
    ) -> Result<PathBuf, ConfigError> {
        let path = self.path(field, key)?;
        let reason = match std::fs::metadata(&path) {
            Ok(metadata) if metadata.is_file() => return Ok(path),
            Ok(_) => "it is a directory or a special file".to_owned(),
            Err(error) => error.to_string(),
        };
        Err(self.at(field, key, Problem::FileMissing { path, reason, hint }))
    }

    fn resolve(&self, text: &str) -> PathBuf {
        let path = Path::new(text);
        if path.is_absolute() {
            return path.to_owned();
        }
        // Dropping `.` components keeps `./wheelgate-data` readable once joined to the directory.
        let mut resolved = self.base_dir.to_path_buf();
        resolved.extend(
            path.components()
                .filter(|component| *component != Component::CurDir),
        );
        if resolved.as_os_str().is_empty() {
            resolved.push(".");
        }
        resolved
    }
}

/// Validates an absolute http(s) URL that wheelgate appends paths to (a remote's index root, the
/// public URL) and makes its path end with `/`.
fn base_url(text: &str) -> Result<Url, Problem> {
    let text = text.trim();
    let problem = |value: &str, reason: &str| Problem::Url {
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let mut url = Url::parse(text).map_err(|error| {
        problem(
            text,
            &format!("{error}; write an absolute URL such as \"https://example.invalid/simple/\""),
        )
    })?;
    if url.password().is_some() || !url.username().is_empty() {
        // Never echo a password back into a log line.
        let _ = url.set_password(url.password().map(|_| "***"));
        return Err(problem(
            url.as_str(),
            "it contains credentials, which would end up in logs; for an upstream, put them in [repository.auth] (username and password_file)",
        ));
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(problem(
            text,
            &format!(
                "the scheme `{}` is not supported; use http or https",
                url.scheme()
            ),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(problem(text, "it has no host"));
    }
    if url.query().is_some() {
        return Err(problem(text, "it has a query string (?…); wheelgate appends paths to this URL, so give the bare root"));
    }
    if url.fragment().is_some() {
        return Err(problem(text, "it has a fragment (#…); remove it"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
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

/// The header on a source line (`[server]`, `[[repository]]`, `[repository.auth]`), if it is one.
fn table_header(line: &str) -> Option<&str> {
    let line = line.split('#').next().unwrap_or_default().trim();
    let inner = line.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(inner)
        .trim();
    let is_key = !inner.is_empty()
        && inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | '\'' | ' '));
    is_key.then_some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse_text(source: &str) -> Result<Config, ConfigError> {
        parse(source, "/etc/wheelgate/proxy.toml", &no_env)
    }

    fn error_of(source: &str) -> ConfigError {
        match parse_text(source) {
            Ok(config) => panic!("expected an error, got {config:#?}"),
            Err(error) => error,
        }
    }

    fn remote_of(config: &Config, index: usize) -> &RemoteConfig {
        match &config.repositories[index].kind {
            RepositoryKind::Remote(remote) => remote,
        }
    }

    const MINIMAL: &str = "[[repository]]\nname = \"pypi\"\ntype = \"remote\"\nurl = \"https://example.invalid/simple/\"\n";

    #[test]
    fn defaults_fill_a_minimal_file() {
        let config = parse_text(MINIMAL).unwrap();
        assert_eq!(config.server.default_repository.as_str(), "pypi");
        assert_eq!(
            config.store.path,
            PathBuf::from("/etc/wheelgate/wheelgate-data")
        );
        let remote = remote_of(&config, 0);
        assert_eq!(remote.connect_timeout, Duration::from_secs(5));
        assert_eq!(remote.first_byte_timeout, Duration::from_secs(30));
        assert_eq!(remote.idle_timeout, Duration::from_secs(60));
        assert!(!remote.offline);
        assert_eq!(config.repositories[0].line, 1);
    }

    #[test]
    fn env_references_expand_in_any_string_value() {
        let source = "[server]\nlisten = \"${HOST}:${PORT:-3141}\"\n[store]\nmax_size = \"${STORE_SIZE:-5GiB}\"\n\
                      [[repository]]\nname = \"${NAME}\"\ntype = \"remote\"\nurl = \"https://${UPSTREAM}/simple/\"\nretries = \"${RETRIES:-2}\"\noffline = \"${OFFLINE:-false}\"\n";
        let env = |name: &str| match name {
            "HOST" => Some("0.0.0.0".to_owned()),
            "NAME" => Some("corp".to_owned()),
            "UPSTREAM" => Some("example.invalid".to_owned()),
            _ => None,
        };
        let config = parse(source, "proxy.toml", &env).unwrap();
        assert_eq!(config.server.listen, "0.0.0.0:3141".parse().unwrap());
        assert_eq!(config.store.max_size, 5 << 30);
        assert_eq!(config.repositories[0].name.as_str(), "corp");
        let remote = remote_of(&config, 0);
        assert_eq!(
            remote.url.as_ref().map(Url::as_str),
            Some("https://example.invalid/simple/")
        );
        assert_eq!(remote.retries, 2);
        assert!(!remote.offline);
    }

    #[test]
    fn env_values_with_quotes_cannot_break_the_toml() {
        let env = |_: &str| Some("x\"\ninjected = \"1".to_owned());
        let source = "[[repository]]\nname = \"pypi\"\ntype = \"remote\"\nurl = \"\"\n[repository.auth]\nusername = \"${USER_NAME}\"\npassword_file = \"/run/secrets/t\"\n";
        let config = parse(source, "proxy.toml", &env).unwrap();
        let auth = remote_of(&config, 0).auth.as_ref().unwrap();
        assert_eq!(auth.username, "x\"\ninjected = \"1");
    }

    #[test]
    fn missing_env_variable_is_named_with_key_and_line() {
        let error = error_of("[server]\nlisten = \"127.0.0.1:3141\"\n\n[[repository]]\nname = \"pypi\"\ntype = \"remote\"\nurl = \"${UPSTREAM}\"\n");
        assert_eq!(error.line(), Some(7));
        let message = error.to_string();
        assert!(
            message.starts_with("/etc/wheelgate/proxy.toml line 7: [[repository]] \"pypi\" url:"),
            "{message}"
        );
        assert!(message.contains("`UPSTREAM` is not set"), "{message}");
    }

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
    fn unknown_key_names_the_key_the_line_and_the_table() {
        let error = error_of(&format!("{MINIMAL}idle_timout = \"5s\"\n"));
        assert_eq!(error.line(), Some(5));
        let message = error.to_string();
        assert!(message.contains("unknown key `idle_timout`"), "{message}");
        assert!(message.contains("in [[repository]]"), "{message}");
        assert!(
            message.starts_with("/etc/wheelgate/proxy.toml line 5, column 1:"),
            "{message}"
        );
    }

    #[test]
    fn unknown_section_is_reported_at_the_top_level() {
        let error = error_of(&format!("{MINIMAL}\n[storage]\npath = \"x\"\n"));
        assert_eq!(error.line(), Some(6));
        let message = error.to_string();
        assert!(
            message.contains("unknown key `storage`") && message.contains("at the top level"),
            "{message}"
        );
    }

    #[test]
    fn unknown_key_in_a_sub_table_names_it() {
        let error = error_of(&format!(
            "{MINIMAL}[repository.auth]\npassword_file = \"t\"\nusr = \"x\"\n"
        ));
        assert_eq!(error.line(), Some(7));
        assert!(
            error.to_string().contains("in [repository.auth]"),
            "{error}"
        );
    }

    #[test]
    fn wrong_value_type_names_the_line() {
        let error = error_of(&format!("[server]\nlisten = 3141\n{MINIMAL}"));
        assert_eq!(error.line(), Some(2));
        assert!(
            error
                .to_string()
                .contains("[server] listen: expected a string"),
            "{error}"
        );
    }

    #[test]
    fn toml_syntax_errors_name_the_line() {
        let error = error_of(&format!("{MINIMAL}index_ttl = \n"));
        assert_eq!(error.line(), Some(5));
        assert!(matches!(error, ConfigError::Syntax { .. }));
    }

    #[test]
    fn bad_duration_names_key_and_line() {
        let error = error_of(&format!("{MINIMAL}index_ttl = \"10x\"\n"));
        assert_eq!(error.line(), Some(5));
        let message = error.to_string();
        assert!(
            message.contains("[[repository]] \"pypi\" index_ttl"),
            "{message}"
        );
        assert!(message.contains("unknown unit \"x\""), "{message}");
    }

    #[test]
    fn bare_number_duration_suggests_a_unit() {
        let error = error_of(&format!("{MINIMAL}connect_timeout = 5\n"));
        assert_eq!(error.line(), Some(5));
        assert!(error.to_string().contains("\"5s\""), "{error}");
        let error = error_of(&format!("{MINIMAL}connect_timeout = \"0s\"\n"));
        assert!(error.to_string().contains("must not be zero"), "{error}");
    }

    #[test]
    fn bad_size_names_key_and_line() {
        let error = error_of(&format!("{MINIMAL}[store]\nmax_size = \"20 gigs\"\n"));
        assert_eq!(error.line(), Some(6));
        let message = error.to_string();
        assert!(message.contains("[store] max_size"), "{message}");
        assert!(message.contains("unknown unit \"gigs\""), "{message}");
        let config = parse_text(&format!(
            "{MINIMAL}[store]\nmax_size = 1048576\nmemory_cache = \"0\"\n"
        ))
        .unwrap();
        assert_eq!(config.store.max_size, 1 << 20);
        assert_eq!(config.store.memory_cache, 0);
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
    fn default_repository_must_be_defined() {
        let error = error_of(&format!(
            "[server]\ndefault_repository = \"all\"\n{MINIMAL}"
        ));
        assert_eq!(error.line(), Some(2));
        let message = error.to_string();
        assert!(
            message.contains("no repository is named \"all\"") && message.contains("are pypi"),
            "{message}"
        );
    }

    #[test]
    fn default_repository_is_required_with_several_repositories() {
        let second = MINIMAL.replace("pypi", "corp");
        let error = error_of(&format!("[server]\n{MINIMAL}{second}"));
        assert_eq!(error.line(), Some(1));
        assert!(error.to_string().contains("one of pypi, corp"), "{error}");
        let config = parse_text(&format!(
            "[server]\ndefault_repository = \"corp\"\n{MINIMAL}{second}"
        ))
        .unwrap();
        assert_eq!(config.server.default_repository.as_str(), "corp");
        assert!(config
            .repository(&RepoName::parse("corp").unwrap())
            .is_some());
        assert!(config
            .repository(&RepoName::parse("other").unwrap())
            .is_none());
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
    fn hosted_and_group_repositories_are_not_supported_yet() {
        for kind in ["hosted", "group"] {
            let error = error_of(&format!("{MINIMAL}\n[[repository]]\nname = \"x\"\ntype = \"{kind}\"\nmembers = [\"pypi\"]\n"));
            assert_eq!(error.line(), Some(8));
            let message = error.to_string();
            assert!(
                message.contains(&format!(
                    "repository type `{kind}` is not supported yet by this version of wheelgate"
                )),
                "{message}"
            );
        }
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
    fn members_on_a_remote_is_an_error() {
        let error = error_of(&format!("{MINIMAL}members = [\"a\"]\n"));
        assert_eq!(error.line(), Some(5));
        assert!(
            error
                .to_string()
                .contains("only applies to repositories of type `group`"),
            "{error}"
        );
    }

    #[test]
    fn later_sections_are_not_supported_yet() {
        let error = error_of(&format!(
            "{MINIMAL}\n[[package_origin]]\nrepository = \"pypi\"\n"
        ));
        assert_eq!(error.line(), Some(6));
        let message = error.to_string();
        assert!(
            message.contains(
                "`[[package_origin]]` (per-package origin overrides) is not supported yet by this version of wheelgate"
            ),
            "{message}"
        );
        let error = error_of(&format!(
            "{MINIMAL}\n[[user]]\nname = \"u\"\n\n[[package_group]]\npattern = \"/*\"\n"
        ));
        assert_eq!(error.line(), Some(6));
        assert!(error.to_string().contains("`[[user]]`"), "{error}");
    }

    /// `MINIMAL` followed by one `[[rule]]` per entry, each starting with its header line.
    fn with_rules(rules: &[&str]) -> String {
        let mut source = MINIMAL.to_owned();
        for rule in rules {
            source.push_str("\n[[rule]]\n");
            source.push_str(rule);
        }
        source
    }

    #[test]
    fn rules_are_parsed_in_file_order_with_defaults() {
        let config = parse_text(&with_rules(&[
            "repository = \"pypi\"\nname = \"no-2\"\naction = \"DENY\"\npackage = \"WGFX_Alpha\"\ncondition = \"pkg.version.id == '2.0'\"\n",
            "repository = \"pypi\"\nname = \"only-listed\"\naction = \"DENY\"\noperation = \"DOWNLOAD\"\n",
            "repository = \"pypi\"\nname = \"allow-beta\"\naction = \"ALLOW\"\npackage = \"wgfx.beta\"\n",
        ]))
        .unwrap();
        let summary: Vec<_> = config
            .rules
            .iter()
            .map(|rule| {
                (
                    rule.name.as_str(),
                    rule.repository.as_str(),
                    rule.action,
                    rule.operation,
                    rule.package.as_ref().map(ProjectName::as_str),
                    rule.condition.as_deref(),
                    rule.line,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "no-2",
                    "pypi",
                    Action::Deny,
                    Operation::Download,
                    Some("wgfx-alpha"),
                    Some("pkg.version.id == '2.0'"),
                    6
                ),
                (
                    "only-listed",
                    "pypi",
                    Action::Deny,
                    Operation::Download,
                    None,
                    None,
                    13
                ),
                (
                    "allow-beta",
                    "pypi",
                    Action::Allow,
                    Operation::Download,
                    Some("wgfx-beta"),
                    None,
                    19
                ),
            ]
        );
        let described = config.describe();
        assert!(
            described.contains("no-2 in repository pypi (line 6): DENY DOWNLOAD, package wgfx-alpha, when pkg.version.id == '2.0'"),
            "{described}"
        );
        assert!(
            described.contains(
                "only-listed in repository pypi (line 13): DENY DOWNLOAD, repository-wide, always"
            ),
            "{described}"
        );
        assert!(parse_text(MINIMAL)
            .unwrap()
            .describe()
            .contains("download rules: none"));
    }

    /// Checks that a rule error points at `line`, names the rule (or its number) and the key,
    /// and says `what`.
    fn assert_rule_error(rules: &[&str], line: usize, names: &str, what: &str) {
        let error = error_of(&with_rules(rules));
        let message = error.to_string();
        assert_eq!(error.line(), Some(line), "{message}");
        assert!(message.contains(names), "expected {names:?} in {message}");
        assert!(message.contains(what), "expected {what:?} in {message}");
    }

    #[test]
    fn bad_rule_names_are_refused_with_the_rule_number_key_and_line() {
        assert_rule_error(
            &["repository = \"pypi\"\nname = \"no old\"\naction = \"DENY\"\n"],
            8,
            "[[rule]] #1 name",
            "contains ' ' at character 3",
        );
        let long = "x".repeat(257);
        assert_rule_error(
            &[&format!(
                "repository = \"pypi\"\nname = \"{long}\"\naction = \"DENY\"\n"
            )],
            8,
            "[[rule]] #1 name",
            "257 characters long; rule names are at most 256",
        );
        assert_rule_error(
            &["repository = \"pypi\"\naction = \"DENY\"\n"],
            6,
            "[[rule]] #1 name",
            "missing",
        );
    }

    #[test]
    fn rule_values_are_checked_with_the_rule_key_and_line() {
        assert_rule_error(
            &["repository = \"pypi\"\nname = \"r\"\naction = \"deny\"\n"],
            9,
            "[[rule]] \"r\" action",
            "\"deny\" is not an action; write \"ALLOW\" or \"DENY\"",
        );
        assert_rule_error(
            &["repository = \"pypi\"\nname = \"r\"\n"],
            6,
            "[[rule]] \"r\" action",
            "missing",
        );
        assert_rule_error(
            &["repository = \"pypi\"\nname = \"r\"\naction = \"DENY\"\noperation = \"UPLOAD\"\n"],
            10,
            "[[rule]] \"r\" operation",
            "the only one is \"DOWNLOAD\"",
        );
        assert_rule_error(
            &["repository = \"pypy\"\nname = \"r\"\naction = \"DENY\"\n"],
            7,
            "[[rule]] \"r\" repository",
            "no repository is named \"pypy\"; a rule belongs to one of the defined repositories: pypi",
        );
        assert_rule_error(
            &["name = \"r\"\naction = \"DENY\"\n"],
            6,
            "[[rule]] \"r\" repository",
            "missing",
        );
        assert_rule_error(
            &["repository = \"pypi\"\nname = \"r\"\naction = \"DENY\"\npackage = \"-bad\"\n"],
            10,
            "[[rule]] \"r\" package",
            "`-bad` starts or ends with a separator",
        );
        assert_rule_error(
            &["repository = \"pypi\"\nname = \"r\"\naction = \"DENY\"\ncondition = \" \"\n"],
            10,
            "[[rule]] \"r\" condition",
            "must not be empty",
        );
        assert_rule_error(
            &["repository = \"pypi\"\nname = \"r\"\naction = \"DENY\"\nconditon = \"true\"\n"],
            10,
            "unknown key `conditon`",
            "[[rule]]",
        );
    }

    #[test]
    fn duplicate_rule_names_name_both_lines() {
        let rule = "repository = \"pypi\"\nname = \"r\"\naction = \"DENY\"\npackage = \"a\"\n";
        let other = "repository = \"pypi\"\nname = \"r\"\naction = \"DENY\"\npackage = \"b\"\n";
        assert_rule_error(
            &[rule, other],
            12,
            "[[rule]] \"r\" name",
            "repository \"pypi\" has two rules named \"r\", at line 6 and at line 12",
        );
    }

    #[test]
    fn one_rule_per_scope_and_the_error_names_both_rules() {
        assert_rule_error(
            &[
                "repository = \"pypi\"\nname = \"first\"\naction = \"DENY\"\n",
                "repository = \"pypi\"\nname = \"second\"\naction = \"ALLOW\"\n",
            ],
            11,
            "[[rule]] \"second\" package",
            "only one repository-wide rule (a rule without `package`), but rule \"first\" (line 6) and rule \"second\" (line 11) both are",
        );
        // Different spellings of one project are one package.
        assert_rule_error(
            &[
                "repository = \"pypi\"\nname = \"first\"\naction = \"DENY\"\npackage = \"Foo_Bar\"\n",
                "repository = \"pypi\"\nname = \"second\"\naction = \"ALLOW\"\npackage = \"foo.bar\"\n",
            ],
            12,
            "[[rule]] \"second\" package",
            "rule \"first\" (line 6) and rule \"second\" (line 12) both cover package \"foo-bar\"",
        );
    }

    #[test]
    fn urls_are_normalised_to_an_index_root() {
        for (written, normalised) in [
            (
                "https://example.invalid/simple",
                "https://example.invalid/simple/",
            ),
            (
                "https://example.invalid/simple/",
                "https://example.invalid/simple/",
            ),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/"),
            (
                " HTTPS://Example.Invalid/Simple ",
                "https://example.invalid/Simple/",
            ),
        ] {
            assert_eq!(
                base_url(written).map(String::from),
                Ok(normalised.to_owned()),
                "{written}"
            );
        }
    }

    #[test]
    fn urls_with_other_schemes_or_extras_are_refused() {
        let reason = |text: &str| match base_url(text) {
            Err(Problem::Url { reason, .. }) => reason,
            other => panic!("{text}: {other:?}"),
        };
        assert!(reason("ftp://example.invalid/simple/").contains("scheme `ftp`"));
        assert!(reason("example.invalid/simple").contains("absolute URL"));
        assert!(reason("https://example.invalid/simple/?x=1").contains("query"));
        assert!(reason("https://example.invalid/simple/#top").contains("fragment"));
        assert!(reason("https://user:secret@example.invalid/").contains("credentials"));
    }

    #[test]
    fn url_errors_never_echo_a_password() {
        let error = error_of("[[repository]]\nname = \"p\"\ntype = \"remote\"\nurl = \"https://__token__:hunter2@example.invalid/simple/\"\n");
        assert_eq!(error.line(), Some(4));
        let message = error.to_string();
        assert!(
            !message.contains("hunter2") && message.contains("***"),
            "{message}"
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
    fn public_url_is_normalised() {
        let config = parse_text(&format!(
            "[server]\npublic_url = \"https://pypi.example.invalid/mirror\"\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(
            config.server.public_url.map(String::from),
            Some("https://pypi.example.invalid/mirror/".to_owned())
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("corp-ca.pem"), "not checked here").unwrap();
        let source = format!(
            "[store]\npath = \"./data\"\n{MINIMAL}ca_file = \"corp-ca.pem\"\n[repository.auth]\npassword_file = \"secrets/token\"\nauth_hosts = [\"Files.Example.Invalid\", \"127.0.0.1:8443\"]\n"
        );
        let origin = dir.path().join("proxy.toml");
        let config = parse(&source, &origin.display().to_string(), &no_env).unwrap();
        assert_eq!(config.store.path, dir.path().join("data"));
        let remote = remote_of(&config, 0);
        assert_eq!(remote.ca_file, Some(dir.path().join("corp-ca.pem")));
        let auth = remote.auth.as_ref().unwrap();
        assert_eq!(auth.username, "__token__");
        assert_eq!(auth.password_file, dir.path().join("secrets/token"));
        assert_eq!(auth.auth_hosts, ["files.example.invalid", "127.0.0.1:8443"]);
    }

    #[test]
    fn absolute_paths_are_kept() {
        let config = parse_text(&format!(
            "[store]\npath = \"/var/lib/wheelgate\"\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(config.store.path, PathBuf::from("/var/lib/wheelgate"));
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
    fn tls_files_must_exist_and_resolve_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tls.crt"), "").unwrap();
        std::fs::write(dir.path().join("tls.key"), "").unwrap();
        let origin = dir.path().join("proxy.toml").display().to_string();
        let source =
            format!("[server.tls]\ncert_file = \"tls.crt\"\nkey_file = \"tls.key\"\n{MINIMAL}");
        let config = parse(&source, &origin, &no_env).unwrap();
        let tls = config.server.tls.unwrap();
        assert_eq!(tls.cert_file, dir.path().join("tls.crt"));
        assert_eq!(tls.key_file, dir.path().join("tls.key"));
        let error = parse(
            &format!("[server.tls]\ncert_file = \"tls.crt\"\n{MINIMAL}"),
            &origin,
            &no_env,
        )
        .unwrap_err();
        assert_eq!(error.line(), Some(2));
        assert!(
            error.to_string().contains("[server.tls] key_file: missing"),
            "{error}"
        );
    }

    #[test]
    fn implicit_tables_and_dotted_keys_are_accepted() {
        let source = format!("server.listen = \"127.0.0.1:0\"\n{MINIMAL}auth.password_file = \"t\"\nauth.username = \"u\"\n");
        let config = parse_text(&source).unwrap();
        assert_eq!(config.server.listen.port(), 0);
        assert_eq!(
            remote_of(&config, 0)
                .auth
                .as_ref()
                .map(|auth| auth.username.as_str()),
            Some("u")
        );
        let error = error_of(&format!(
            "{MINIMAL}\n[server.tls]\ncert_file = \"/nonexistent/tls.crt\"\n"
        ));
        assert_eq!(error.line(), Some(7));
        assert!(
            error.to_string().contains("[server.tls] cert_file"),
            "{error}"
        );
        let error = error_of(&format!("{MINIMAL}\n[server.tls]\n"));
        assert_eq!(error.line(), Some(6));
        assert!(
            error
                .to_string()
                .contains("[server.tls] cert_file: missing"),
            "{error}"
        );
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

    #[test]
    fn integers_are_range_checked() {
        let error = error_of(&format!("{MINIMAL}retries = 11\n"));
        assert_eq!(error.line(), Some(5));
        assert!(error.to_string().contains("from 0 to 10"), "{error}");
        let error = error_of(&format!("[server]\nmax_concurrent_fetches = 0\n{MINIMAL}"));
        assert!(error.to_string().contains("from 1 to"), "{error}");
        let error = error_of(&format!("{MINIMAL}retries = \"three\"\n"));
        assert!(
            error
                .to_string()
                .contains("\"three\" is not a whole number"),
            "{error}"
        );
    }

    #[test]
    fn listen_address_must_be_an_ip_and_port() {
        let config = parse_text(&format!("[server]\nlisten = \"127.0.0.1:0\"\n{MINIMAL}")).unwrap();
        assert_eq!(config.server.listen.port(), 0);
        let error = error_of(&format!("[server]\nlisten = \"localhost:3141\"\n{MINIMAL}"));
        assert_eq!(error.line(), Some(2));
        assert!(error.to_string().contains("127.0.0.1:3141"), "{error}");
    }

    #[test]
    fn refusing_anonymous_read_needs_users() {
        let error = error_of(&format!("[access]\nanonymous_read = false\n{MINIMAL}"));
        assert_eq!(error.line(), Some(2));
        assert!(error.to_string().contains("[[user]]"), "{error}");
    }

    #[test]
    fn table_headers_are_recognised() {
        assert_eq!(
            table_header("[[repository]]  # remote"),
            Some("[[repository]]")
        );
        assert_eq!(
            table_header(" [repository.auth]"),
            Some("[repository.auth]")
        );
        assert_eq!(table_header("members = [\"a\"]"), None);
        assert_eq!(table_header("[\"a\", \"b\"]"), None);
    }
}
