//! Turns the raw TOML shape into a validated [`Config`]: `${VAR}` expansion, typed values,
//! defaults, paths resolved against the configuration file's directory, and the checks that
//! involve several keys (duplicate names, the default repository).
//!
//! Every error is built here with the line it belongs to, taken from the span toml recorded for
//! the offending value, because a message without a line sends the user searching the file.
//!
//! This file is the core every section shares: the [`Parser`] (positions, keys, syntax errors)
//! and the typed readers of single values (strings with `${VAR}`, durations, sizes, integers,
//! booleans, paths). Each group of sections has its own file below it: `server` (`[server]`,
//! `[server.tls]`), `store`, `repositories` (`[[repository]]`, remote settings and their
//! `[repository.auth]`), `groups` (a group's `members`), `rules` (`[[rule]]`), `package_groups`
//! (`[[package_group]]`) and `access`
//! (`[access]` and `[[user]]`).

mod access;
mod groups;
mod package_groups;
mod package_origins;
mod repositories;
mod rules;
mod server;
mod store;

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use url::Url;

use super::raw::{RawConfig, Scalar};
use super::values::{expand_env, parse_duration, parse_size};
use super::{Config, ConfigError, Mode, Problem, RepoName, RepositoryConfig};

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
        let repositories = self.repositories(&raw.repository)?;
        let server = self.server(raw.server.as_ref(), &repositories)?;
        let store = self.store(raw.store.as_ref())?;
        let users = self.users(&raw.user, &repositories)?;
        let access = self.access(raw.access.as_ref(), &users)?;
        let rules = self.rules(&raw.rule, &repositories)?;
        let package_groups = self.package_groups(&raw.package_group, &repositories)?;
        let package_origins = self.package_origins(&raw.package_origin, &repositories)?;
        Ok(Config {
            server,
            store,
            access,
            users,
            repositories,
            rules,
            package_groups,
            package_origins,
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

    /// The line of a table's header (`[store.shared]`), to report a key the table lacks; the
    /// first line when the table was only created implicitly (`store.shared.bucket = …`).
    fn header_line(&self, header: &str) -> usize {
        self.source
            .lines()
            .position(|line| table_header(line).is_some_and(|found| found == header))
            .map_or(1, |index| index + 1)
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

    /// A required key that a table lacks, reported at the table's `line` with what to write.
    fn missing_key(
        &self,
        line: usize,
        section: &str,
        name: &'static str,
        hint: &'static str,
    ) -> ConfigError {
        self.invalid(
            Some(line),
            Key { section, name },
            Problem::MissingKey { hint },
        )
    }

    /// The `repository` key of a table that applies to a defined repository: its name checked,
    /// and the repository it names; `unknown` is the problem when none is defined by that name
    /// (it gets the name and the defined names).
    fn defined_repository<'r>(
        &self,
        field: &Spanned<Scalar>,
        key: Key<'_>,
        repositories: &'r [RepositoryConfig],
        unknown: impl FnOnce(String, Vec<String>) -> Problem,
    ) -> Result<&'r RepositoryConfig, ConfigError> {
        let name = RepoName::parse(&self.text(field, key)?)
            .map_err(|error| self.at(field, key, Problem::RepoName(error)))?;
        repositories
            .iter()
            .find(|repo| repo.name == name)
            .ok_or_else(|| {
                let defined = repositories.iter().map(|r| r.name.to_string()).collect();
                self.at(field, key, unknown(name.to_string(), defined))
            })
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
            .replace(
                "expected a sequence",
                "expected a list in brackets, e.g. [\"a\", \"b\"]",
            )
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
                    hint: "; a zero timeout would fail every request it governs",
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

    /// `mode = "enforce" | "audit"` of a rule or a package group; enforce when absent.
    fn mode(&self, field: Option<&Spanned<Scalar>>, key: Key<'_>) -> Result<Mode, ConfigError> {
        let Some(field) = field else {
            return Ok(Mode::default());
        };
        let text = self.text(field, key)?;
        Mode::parse(text.trim()).ok_or_else(|| {
            self.at(
                field,
                key,
                Problem::UnknownMode {
                    found: text.clone(),
                },
            )
        })
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
        return Err(problem(
            &masked(&url),
            "it contains credentials, which would end up in logs; for an upstream, put them in [repository.auth] (username and password_file)",
        ));
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(problem(
            &masked(&url),
            &format!(
                "the scheme `{}` is not supported; use http or https",
                url.scheme()
            ),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(problem(&masked(&url), "it has no host"));
    }
    if url.query().is_some() {
        return Err(problem(&masked(&url), "it has a query string (?…); wheelgate appends paths to this URL, so give the bare root"));
    }
    if url.fragment().is_some() {
        return Err(problem(&masked(&url), "it has a fragment (#…); remove it"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// A URL as a configuration error may echo it: the user name, password, query and fragment
/// masked, since a token can hide in any of them (`https://<token>@host/`, `?token=`).
fn masked(url: &Url) -> String {
    let mut shown = url.clone();
    if !shown.username().is_empty() {
        let _ = shown.set_username("***");
    }
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    if shown.query().is_some() {
        shown.set_query(Some("***"));
    }
    if shown.fragment().is_some() {
        shown.set_fragment(Some("***"));
    }
    shown.to_string()
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

/// What the tests of every section share: a parse with no environment, and a minimal file.
#[cfg(test)]
mod testing {
    pub(super) use crate::config::parse;
    use crate::config::{Config, ConfigError, RemoteConfig, RepositoryKind};

    pub(super) fn no_env(_: &str) -> Option<String> {
        None
    }

    pub(super) fn parse_text(source: &str) -> Result<Config, ConfigError> {
        parse(source, "/etc/wheelgate/proxy.toml", &no_env)
    }

    pub(super) fn error_of(source: &str) -> ConfigError {
        match parse_text(source) {
            Ok(config) => panic!("expected an error, got {config:#?}"),
            Err(error) => error,
        }
    }

    pub(super) fn remote_of(config: &Config, index: usize) -> &RemoteConfig {
        match &config.repositories[index].kind {
            RepositoryKind::Remote(remote) => remote,
            other => panic!("repository {index} is {}, not remote", other.type_name()),
        }
    }

    pub(super) const MINIMAL: &str = "[[repository]]\nname = \"pypi\"\ntype = \"remote\"\nurl = \"https://example.invalid/simple/\"\n";
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

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
        // A token hides in a password, a bare user name (`https://<token>@host/`), a query or a
        // fragment, whatever else is wrong with the URL.
        for url in [
            "https://__token__:hunter2@example.invalid/simple/",
            "https://hunter2@example.invalid/simple/",
            "https://example.invalid/simple/?token=hunter2",
            "https://example.invalid/simple/#hunter2",
            "ftp://hunter2@example.invalid/simple/",
        ] {
            let error = error_of(&format!(
                "[[repository]]\nname = \"p\"\ntype = \"remote\"\nurl = \"{url}\"\n"
            ));
            assert_eq!(error.line(), Some(4), "{url}");
            let message = error.to_string();
            assert!(
                !message.contains("hunter2") && message.contains("***"),
                "{message}"
            );
        }
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
