//! `proxy.toml`: the one place a deployment describes its repositories, store and server (SPEC §7).
//!
//! The file is parsed once, at start-up or on reload, into [`Config`]: plain, typed, validated
//! data that the rest of wheelgate reads without re-checking anything. All the ways a file can be
//! wrong are found here, before a port is bound, and each error names the file, the line, the key
//! and what to write instead, because `wheelgate check` and a failed reload show nothing else.
//!
//! This file holds the typed result and the entry points. The work is split below it: `raw`
//! mirrors the TOML shape with serde (unknown keys, nesting), `values` holds the small value
//! languages (repository names, durations, sizes, `${VAR}`), `rule` the values of `[[rule]]`
//! (rule names, actions), `user` those of `[[user]]` (user names, roles, password hashes),
//! `parse` turns the raw shape into
//! [`Config`], resolving paths against the configuration file's directory and checking what
//! involves several keys, and `error` words what can go wrong.

mod error;
mod mode;
mod package_origin;
mod parse;
mod raw;
mod rule;
mod user;
mod values;

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use crate::origin::{PackageGroups, Restriction, Setting};

pub use error::{ConfigError, Problem};
pub use mode::Mode;
pub use package_origin::PackageOriginConfig;
pub use rule::{Action, Operation, RuleConfig, RuleName, RuleNameError, MAX_RULE_NAME_LEN};
pub use user::{
    Credential, HashScheme, PasswordHash, PasswordHashError, Role, Roles, UserConfig, UserName,
    UserNameError, MAX_USER_NAME_LEN, TOKEN_USER_NAME,
};
pub use values::{
    format_duration, format_size, parse_duration, parse_size, EnvError, RepoName, RepoNameError,
};

use parse::Parser;

/// A whole, validated configuration.
///
/// Plain data (`Clone`, comparable) so that a reload can build a new one, compare it with the one
/// in force and swap it in atomically. Its `Debug` output shows no secret (password hashes are
/// redacted; token and password files appear only as paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub access: AccessConfig,
    /// `[[user]]` client users (SPEC §8), in file order, with unique names; checked by
    /// `crate::access`.
    pub users: Vec<UserConfig>,
    /// In file order.
    pub repositories: Vec<RepositoryConfig>,
    /// `[[rule]]` download rules (SPEC §5), in file order; compiled by `crate::policy`.
    pub rules: Vec<RuleConfig>,
    /// `[[package_group]]` origin controls (SPEC §6), matched and resolved at load; the root
    /// group `/*` is always there.
    pub package_groups: PackageGroups,
    /// `[[package_origin]]` overrides of package-level origin records (SPEC §6), in file order,
    /// one per repository and package.
    pub package_origins: Vec<PackageOriginConfig>,
    /// The absolute path of the file, set by [`load`]; `None` when parsed from a string.
    pub source_path: Option<PathBuf>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Port 0 is allowed (tests bind an ephemeral port).
    pub listen: SocketAddr,
    /// Served at `/simple/`; always names one of [`Config::repositories`].
    pub default_repository: RepoName,
    /// Absolute http(s) URL whose path ends with `/`; `None` means links relative to each page.
    pub public_url: Option<Url>,
    pub tls: Option<TlsConfig>,
    pub shutdown_grace: Duration,
    pub max_upload_size: u64,
    /// At least 1.
    pub max_concurrent_fetches: usize,
    /// How long a connection may go without a request in progress before it is closed: from
    /// accept (TLS handshake included) to its first complete request head, and from the end of
    /// one response to the next request head. Not zero.
    pub request_header_timeout: Duration,
    /// How long an upload's body may go without a byte arriving before the upload is abandoned
    /// (408) and its temporary file and disk reservation released. Not zero.
    pub upload_idle_timeout: Duration,
    /// Connections served at once; `None` sizes the cap to the process's file limit at start
    /// (see `front::limit`). At least 1.
    pub max_connections: Option<usize>,
    /// The largest file downloaded from an upstream, in bytes; at least 1.
    pub max_file_size: u64,
}

/// `[server.tls]`: PEM files, resolved against the configuration file's directory and present
/// when the configuration was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Resolved against the configuration file's directory.
    pub path: PathBuf,
    /// Bytes; at least 1.
    pub max_size: u64,
    /// Bytes; 0 disables the in-memory cache.
    pub memory_cache: u64,
    /// Bytes of the store's disk that downloads and uploads leave free; 0 only refuses what the
    /// disk cannot hold.
    pub min_free_space: u64,
    /// `[store.shared]`: the S3-compatible bucket central replicas share (issue 17).
    pub shared: Option<SharedConfig>,
}

/// `[store.shared]`, validated: where the bucket is and how to sign for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedConfig {
    /// An http(s) URL of an S3-compatible server (path-style requests); `None` for AWS S3.
    pub endpoint: Option<Url>,
    pub bucket: String,
    pub region: String,
    /// Empty, or ends with `/` and does not start with one.
    pub prefix: String,
    pub credentials: SharedCredentials,
    /// How long a request to the bucket may go without a byte arriving (its answer's head
    /// included) before it is given up and the bucket counted unreachable for it.
    pub idle_timeout: Duration,
}

/// How wheelgate signs its requests to the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedCredentials {
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`) from the
    /// environment, read when the store opens.
    Environment,
    /// `access_key_id` and the secret in `secret_access_key_file` (trimmed), read when the store
    /// opens and again whenever the file changes.
    Static {
        access_key_id: String,
        secret_access_key_file: PathBuf,
    },
}

/// `[access]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessConfig {
    /// Whether clients without credentials may read (index pages and files). When false, at
    /// least one of [`Config::users`] has the read role.
    pub anonymous_read: bool,
}

/// One `[[repository]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryConfig {
    pub name: RepoName,
    /// The line of its `[[repository]]` header, for messages about it at run time.
    pub line: usize,
    pub kind: RepositoryKind,
}

/// What a repository is.
// One value per repository, built once per load: boxing the remote settings would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepositoryKind {
    Remote(RemoteConfig),
    /// `type = "hosted"`: packages published to wheelgate (SPEC §1); it has no keys of its own.
    Hosted,
    /// `type = "group"`: its members served as one index (SPEC §1).
    Group(GroupConfig),
}

/// A `type = "group"` repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// In the order their files take precedence. Validated at load: at least one, each a
    /// defined repository other than the group itself, no repeats, and no cycle through
    /// groups.
    pub members: Vec<RepoName>,
}

impl RepositoryKind {
    /// The `type` value as written in `proxy.toml`.
    pub fn type_name(&self) -> &'static str {
        match self {
            RepositoryKind::Remote(_) => "remote",
            RepositoryKind::Hosted => "hosted",
            RepositoryKind::Group(_) => "group",
        }
    }
}

/// A `type = "remote"` repository: an upstream simple index, fetched on demand and cached (§3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConfig {
    /// The upstream's simple-index root, path ending with `/`; `None` when configured as `""`.
    pub url: Option<Url>,
    pub index_ttl: Duration,
    pub negative_ttl: Duration,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    /// At most 10.
    pub retries: u32,
    /// PEM roots added to the trust store; the file existed when the configuration was loaded.
    pub ca_file: Option<PathBuf>,
    /// `true` (the default): the operating system's trust store (corporate CAs; `SSL_CERT_FILE` /
    /// `SSL_CERT_DIR` replace its locations) as well as the built-in web PKI roots. `false`: the
    /// built-in roots only.
    pub native_roots: bool,
    /// Serve only what the store holds. Always true when [`RemoteConfig::url`] is `None`, so
    /// callers need to look at one flag.
    pub offline: bool,
    pub auth: Option<RemoteAuth>,
    /// Hosts (lowercase `host` or `host:port`) that file links may point to even though they
    /// resolve to a loopback, private or link-local address.
    pub file_hosts: Vec<String>,
}

/// `[repository.auth]`: credentials wheelgate sends upstream.
///
/// Holds only the path of the secret, which the upstream module reads per request (so a rotated
/// Kubernetes secret is picked up); nothing here is secret, so `Debug` is safe to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAuth {
    pub username: String,
    /// Resolved against the configuration file's directory; not read or checked at load.
    pub password_file: PathBuf,
    /// Extra hosts (lowercase `host` or `host:port`) that may receive the credentials, such as a
    /// separate files host.
    pub auth_hosts: Vec<String>,
}

impl Config {
    /// The repository called `name`, if the configuration defines one.
    pub fn repository(&self, name: &RepoName) -> Option<&RepositoryConfig> {
        self.repositories.iter().find(|repo| &repo.name == name)
    }

    /// The repositories that hold files themselves (remote and hosted) that `name` serves, in
    /// the order their files take precedence, each with the repositories a file passes through
    /// to get there: `name` itself, the groups between, and the repository that holds it. A
    /// remote or hosted repository serves itself; a group its members', depth first, each
    /// repository once (where it is reached first). Empty for an unknown name.
    pub fn sources_of(&self, name: &RepoName) -> Vec<(&RepositoryConfig, Vec<RepoName>)> {
        let mut found: Vec<(&RepositoryConfig, Vec<RepoName>)> = Vec::new();
        let mut path = Vec::new();
        self.collect_sources(name, &mut path, &mut found);
        found
    }

    fn collect_sources<'a>(
        &'a self,
        name: &RepoName,
        path: &mut Vec<RepoName>,
        found: &mut Vec<(&'a RepositoryConfig, Vec<RepoName>)>,
    ) {
        // The configuration has no cycles (checked at load); this guard only keeps a bad
        // configuration built by hand from recursing forever.
        if path.contains(name) {
            return;
        }
        let Some(repo) = self.repository(name) else {
            return;
        };
        path.push(name.clone());
        match &repo.kind {
            RepositoryKind::Group(group) => {
                for member in &group.members {
                    self.collect_sources(member, path, found);
                }
            }
            RepositoryKind::Remote(_) | RepositoryKind::Hosted => {
                if !found.iter().any(|(known, _)| known.name == repo.name) {
                    found.push((repo, path.clone()));
                }
            }
        }
        path.pop();
    }

    /// The repository a command line names with `--repo`: one the configuration defines, or a
    /// message listing those it does.
    pub fn named_repository(&self, raw: &str) -> Result<RepoName, String> {
        match RepoName::parse(raw) {
            Ok(name) if self.repository(&name).is_some() => Ok(name),
            _ => Err(format!(
                "no repository named {raw:?} in the configuration; it defines: {}",
                self.repositories
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// The user called `name`, if the configuration defines one.
    pub fn user(&self, name: &UserName) -> Option<&UserConfig> {
        self.users.iter().find(|user| &user.name == name)
    }

    /// Which settings that only take effect at restart (`listen`, `tls`, `store`, the connection
    /// limits) differ in
    /// `newer`, so that a reload can say it did not apply them.
    pub fn restart_only_changes(&self, newer: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.server.listen != newer.server.listen {
            changed.push("listen");
        }
        if self.server.tls != newer.server.tls {
            changed.push("tls");
        }
        if self.store != newer.store {
            changed.push("store");
        }
        if self.server.request_header_timeout != newer.server.request_header_timeout {
            changed.push("request_header_timeout");
        }
        if self.server.max_connections != newer.server.max_connections {
            changed.push("max_connections");
        }
        changed
    }

    /// The human summary printed by `wheelgate check`: what the file defines, with defaults filled
    /// in, and never a secret (only the paths of password and token files, and a user's hash
    /// algorithm). Ends with a newline.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_description(&mut out);
        out
    }

    fn write_description(&self, out: &mut String) -> fmt::Result {
        let server = &self.server;
        if let Some(path) = &self.source_path {
            writeln!(out, "file: {}", path.display())?;
        }
        match &server.tls {
            None => writeln!(out, "listen: {} (plain HTTP)", server.listen)?,
            Some(tls) => writeln!(
                out,
                "listen: {} (HTTPS, certificate {}, key {})",
                server.listen,
                tls.cert_file.display(),
                tls.key_file.display()
            )?,
        }
        match &server.public_url {
            None => writeln!(out, "links: relative to each page")?,
            Some(url) => writeln!(out, "links: absolute, under {url}")?,
        }
        writeln!(
            out,
            "default repository: {} (served at /simple/)",
            server.default_repository
        )?;
        writeln!(
            out,
            "limits: shutdown grace {}, max upload size {}, upload idle timeout {}, max concurrent \
             upstream fetches {}",
            format_duration(server.shutdown_grace),
            format_size(server.max_upload_size),
            format_duration(server.upload_idle_timeout),
            server.max_concurrent_fetches
        )?;
        match server.max_connections {
            Some(max) => writeln!(
                out,
                "connections: request header timeout {}, at most {max} at once",
                format_duration(server.request_header_timeout)
            )?,
            None => writeln!(
                out,
                "connections: request header timeout {}, at most as many at once as the file \
                 limit allows (sized at start)",
                format_duration(server.request_header_timeout)
            )?,
        }
        writeln!(
            out,
            "store: {} (max size {}, memory cache {})",
            self.store.path.display(),
            format_size(self.store.max_size),
            format_size(self.store.memory_cache)
        )?;
        let anonymous = if self.access.anonymous_read {
            "allowed"
        } else {
            "refused"
        };
        writeln!(out, "anonymous read: {anonymous}")?;
        if self.users.is_empty() {
            writeln!(out, "users: none")?;
        } else {
            writeln!(out, "users:")?;
        }
        for user in &self.users {
            describe_user(out, user)?;
        }
        writeln!(out, "repositories:")?;
        for repo in &self.repositories {
            writeln!(
                out,
                "  {} ({}, line {}), served at /{}/simple/",
                repo.name,
                repo.kind.type_name(),
                repo.line,
                repo.name
            )?;
            match &repo.kind {
                RepositoryKind::Remote(remote) => describe_remote(out, remote)?,
                RepositoryKind::Hosted => writeln!(
                    out,
                    "    packages published to it: twine upload or uv publish to /{}/",
                    repo.name
                )?,
                RepositoryKind::Group(group) => {
                    let members: Vec<&str> = group.members.iter().map(RepoName::as_str).collect();
                    writeln!(out, "    members, first wins: {}", members.join(", "))?;
                    // Through groups among its members, the repositories whose files it serves.
                    let sources: Vec<&str> = self
                        .sources_of(&repo.name)
                        .into_iter()
                        .map(|(source, _)| source.name.as_str())
                        .collect();
                    if sources != members {
                        writeln!(
                            out,
                            "    serves the files of, first wins: {}",
                            sources.join(", ")
                        )?;
                    }
                }
            }
        }
        if self.rules.is_empty() {
            writeln!(out, "download rules: none")?;
        } else {
            writeln!(out, "download rules:")?;
        }
        for rule in &self.rules {
            let scope = match &rule.package {
                Some(package) => format!("package {package}"),
                None => "repository-wide".to_owned(),
            };
            write!(
                out,
                "  {} in repository {} (line {}): {} {}, {scope}",
                rule.name, rule.repository, rule.line, rule.action, rule.operation
            )?;
            if rule.mode == Mode::Audit {
                write!(out, ", audit only")?;
            }
            match &rule.condition {
                Some(condition) => writeln!(out, ", when {condition}")?,
                None => writeln!(out, ", always")?,
            }
        }
        writeln!(out, "package groups (origin controls):")?;
        for group in self.package_groups.configs() {
            let place = match group.line {
                Some(line) => format!("line {line}"),
                None => "not configured".to_owned(),
            };
            let settings: Vec<String> = Restriction::ALL
                .iter()
                .map(|&restriction| match group.setting(restriction) {
                    Setting::AllowSpecificRepositories(list) => {
                        let names: Vec<&str> = list.iter().map(RepoName::as_str).collect();
                        format!(
                            "{} ALLOW_SPECIFIC_REPOSITORIES [{}]",
                            restriction.key(),
                            names.join(", ")
                        )
                    }
                    other => format!("{} {}", restriction.key(), other.as_str()),
                })
                .collect();
            writeln!(
                out,
                "  {} ({place}, mode {}): {}",
                group.pattern,
                group.mode,
                settings.join(", ")
            )?;
        }
        if !self.package_origins.is_empty() {
            writeln!(out, "package-level origin overrides:")?;
        }
        for entry in &self.package_origins {
            let settings: Vec<String> = [("publish", entry.publish), ("upstream", entry.upstream)]
                .into_iter()
                .filter_map(|(key, value)| Some(format!("{key} {}", value?.as_str())))
                .collect();
            writeln!(
                out,
                "  {} in repository {} (line {}): {}",
                entry.package,
                entry.repository,
                entry.line,
                settings.join(", ")
            )?;
        }
        Ok(())
    }
}

fn describe_user(out: &mut String, user: &UserConfig) -> fmt::Result {
    write!(
        out,
        "  {} (line {}): roles {} on ",
        user.name, user.line, user.roles
    )?;
    match &user.repositories {
        None => write!(out, "every repository")?,
        Some(repositories) => {
            for (index, name) in repositories.iter().enumerate() {
                let separator = if index == 0 { "" } else { ", " };
                write!(out, "{separator}{name}")?;
            }
        }
    }
    match &user.credential {
        Credential::PasswordHash(hash) => {
            writeln!(out, "; password ({} hash)", hash.algorithm())
        }
        Credential::TokenFile(path) => {
            writeln!(out, "; token read from {} when it logs in", path.display())
        }
    }
}

fn describe_remote(out: &mut String, remote: &RemoteConfig) -> fmt::Result {
    match (&remote.url, remote.offline) {
        (None, _) => writeln!(out, "    url: offline (no url)")?,
        (Some(url), true) => writeln!(out, "    url: {url} (offline: serving only the store)")?,
        (Some(url), false) => writeln!(out, "    url: {url}")?,
    }
    writeln!(
        out,
        "    index ttl {}, negative ttl {}",
        format_duration(remote.index_ttl),
        format_duration(remote.negative_ttl)
    )?;
    writeln!(
        out,
        "    timeouts: connect {}, first byte {}, idle {}; retries {}",
        format_duration(remote.connect_timeout),
        format_duration(remote.first_byte_timeout),
        format_duration(remote.idle_timeout),
        remote.retries
    )?;
    let roots = if remote.native_roots {
        "built-in web PKI roots and the OS trust store (or SSL_CERT_FILE / SSL_CERT_DIR)"
    } else {
        "built-in web PKI roots only (native_roots = false)"
    };
    match &remote.ca_file {
        None => writeln!(out, "    trust: {roots}")?,
        Some(ca) => writeln!(out, "    trust: {roots} plus {}", ca.display())?,
    }
    match &remote.auth {
        None => writeln!(out, "    auth: none")?,
        Some(auth) => {
            write!(
                out,
                "    auth: username {}, password read from {} on each request",
                auth.username,
                auth.password_file.display()
            )?;
            if !auth.auth_hosts.is_empty() {
                write!(out, "; also sent to {}", auth.auth_hosts.join(", "))?;
            }
            writeln!(out)?;
        }
    }
    Ok(())
}

/// Reads and validates the configuration file at `path`.
///
/// Relative paths in the file are resolved against the file's own directory (made absolute), so
/// the result does not depend on where wheelgate was started from. `${VAR}` references read the
/// process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let base_dir = absolute.parent().unwrap_or_else(|| Path::new(""));
    let origin = path.display().to_string();
    let env = |name: &str| std::env::var(name).ok();
    let mut config = Parser {
        source: &source,
        origin: &origin,
        base_dir,
        env: &env,
    }
    .parse()?;
    config.source_path = Some(absolute);
    Ok(config)
}

/// Parses and validates configuration text.
///
/// `origin` is the file name used in messages; relative paths in the text are resolved against
/// its directory (so `"proxy.toml"` leaves them relative to the working directory). `env` looks up
/// the environment variables named by `${VAR}`, so tests need not touch the process environment.
/// Files that must exist at load (`ca_file`, TLS certificate and key) are checked on disk.
pub fn parse(
    source: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let base_dir = Path::new(origin).parent().unwrap_or_else(|| Path::new(""));
    Parser {
        source,
        origin,
        base_dir,
        env,
    }
    .parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../proxy.toml");

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse_text(source: &str) -> Result<Config, ConfigError> {
        parse(source, "/etc/wheelgate/proxy.toml", &no_env)
    }

    fn remote_of(config: &Config, index: usize) -> &RemoteConfig {
        match &config.repositories[index].kind {
            RepositoryKind::Remote(remote) => remote,
            other => panic!("repository {index} is {}, not remote", other.type_name()),
        }
    }

    const MINIMAL: &str = "[[repository]]\nname = \"pypi\"\ntype = \"remote\"\nurl = \"https://example.invalid/simple/\"\n";

    #[test]
    fn shipped_proxy_toml_loads_offline_with_an_empty_environment() {
        let config = parse(SHIPPED, "proxy.toml", &no_env).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:3141".parse().unwrap());
        assert_eq!(config.server.default_repository.as_str(), "all");
        assert_eq!(config.server.public_url, None);
        assert_eq!(config.server.tls, None);
        assert_eq!(config.server.shutdown_grace, Duration::from_secs(30));
        assert_eq!(config.server.max_upload_size, 1 << 30);
        assert_eq!(config.server.max_concurrent_fetches, 64);
        assert_eq!(config.store.path, PathBuf::from("wheelgate-data"));
        assert_eq!(config.store.max_size, 20 << 30);
        assert_eq!(config.store.memory_cache, 256 << 20);
        assert!(config.access.anonymous_read);
        assert_eq!(config.repositories.len(), 3);
        assert_eq!(config.repositories[1].name.as_str(), "internal");
        assert_eq!(config.repositories[1].kind, RepositoryKind::Hosted);
        // The default repository is the group of the two: the hosted one's files first.
        assert_eq!(config.repositories[2].name.as_str(), "all");
        assert_eq!(
            config.repositories[2].kind,
            RepositoryKind::Group(GroupConfig {
                members: vec![
                    RepoName::parse("internal").unwrap(),
                    RepoName::parse("pypi").unwrap()
                ],
            })
        );
        let remote = remote_of(&config, 0);
        assert_eq!(remote.url, None);
        assert!(remote.offline);
        assert_eq!(remote.auth, None);
        assert_eq!(remote.index_ttl, Duration::from_secs(600));
        assert_eq!(remote.negative_ttl, Duration::from_secs(60));
        assert_eq!(remote.retries, 3);
        assert!(remote.native_roots);
        assert!(config.describe().contains("offline (no url)"));
        // The hosted and group repositories' tables are the file's second and third
        // `[[repository]]` headers.
        let header_lines: Vec<usize> = SHIPPED
            .lines()
            .enumerate()
            .filter(|(_, line)| *line == "[[repository]]")
            .map(|(index, _)| index + 1)
            .collect();
        let described = config.describe();
        assert!(
            described.contains(&format!(
                "internal (hosted, line {}), served at /internal/simple/",
                header_lines[1]
            )),
            "{described}"
        );
        assert!(
            described.contains(&format!(
                "all (group, line {}), served at /all/simple/\n    members, first wins: internal, pypi\n",
                header_lines[2]
            )),
            "{described}"
        );
        assert!(
            described.contains("default repository: all (served at /simple/)"),
            "{described}"
        );
    }

    #[test]
    fn shipped_proxy_toml_documents_a_working_auth_block() {
        let uncommented: String = SHIPPED
            .lines()
            .map(|line| {
                let auth_line = [
                    "# [repository.auth]",
                    "# username",
                    "# password_file",
                    "# auth_hosts",
                ]
                .iter()
                .any(|prefix| line.starts_with(prefix));
                if auth_line {
                    &line[2..]
                } else {
                    line
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let config = parse(&uncommented, "proxy.toml", &no_env).unwrap();
        let auth = remote_of(&config, 0).auth.clone().unwrap();
        assert_eq!(auth.username, "__token__");
        assert_eq!(auth.password_file, PathBuf::from("/run/secrets/pypi-token"));
        assert_eq!(auth.auth_hosts, ["files.example.internal"]);
    }

    #[test]
    fn shipped_proxy_toml_documents_working_user_blocks() {
        let mut in_user = false;
        let uncommented: String = SHIPPED
            .lines()
            .map(|line| {
                in_user = line == "# [[user]]" || (in_user && line.starts_with("# "));
                if in_user {
                    format!("{}\n", &line[2..])
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        // The example hash is elided; put a well-formed one in its place.
        let source = uncommented.replace(
            "$argon2id$v=19$m=19456,t=2,p=1$...",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$tAyG9rmrzQ+Im5kPbr8Ss9Yc5wtUPN6ik4txCH0UVj4",
        );
        let config = parse(&source, "proxy.toml", &no_env).unwrap();
        let names: Vec<&str> = config.users.iter().map(|user| user.name.as_str()).collect();
        assert_eq!(names, ["ci-publisher", "deploy"]);
        assert_eq!(
            config.users[1].credential,
            Credential::TokenFile(PathBuf::from("/run/secrets/deploy-token"))
        );
        // As shipped, with the elided hash, the block is refused with a pointer to the command.
        let error = parse(&uncommented, "proxy.toml", &no_env).unwrap_err();
        assert!(
            error.to_string().contains("wheelgate hash-password"),
            "{error}"
        );
    }

    #[test]
    fn shipped_proxy_toml_takes_its_upstream_from_the_environment() {
        let env = |name: &str| {
            (name == "WHEELGATE_UPSTREAM_URL").then(|| "https://example.invalid/simple".to_owned())
        };
        let config = parse(SHIPPED, "proxy.toml", &env).unwrap();
        let remote = remote_of(&config, 0);
        assert_eq!(
            remote.url.as_ref().map(Url::as_str),
            Some("https://example.invalid/simple/")
        );
        assert!(!remote.offline);
    }

    #[test]
    fn describe_shows_settings_but_no_secret_contents() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "pypi-SECRET").unwrap();
        let source = format!("{MINIMAL}[repository.auth]\npassword_file = \"token\"\n");
        let config = parse(
            &source,
            &dir.path().join("proxy.toml").display().to_string(),
            &no_env,
        )
        .unwrap();
        let text = config.describe();
        assert!(text.contains("listen: 127.0.0.1:3141"), "{text}");
        assert!(text.contains("default repository: pypi"), "{text}");
        assert!(text.contains("pypi (remote, line 1)"), "{text}");
        assert!(
            text.contains("url: https://example.invalid/simple/"),
            "{text}"
        );
        assert!(text.contains("index ttl 10m"), "{text}");
        assert!(
            text.contains("username __token__") && text.contains(&token.display().to_string()),
            "{text}"
        );
        assert!(
            text.contains("max size 20GiB, memory cache 256MiB"),
            "{text}"
        );
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn restart_only_changes_are_detected() {
        let before = parse_text(MINIMAL).unwrap();
        let after = parse_text(&format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{MINIMAL}index_ttl = \"1m\"\n"
        ))
        .unwrap();
        assert_eq!(before.restart_only_changes(&after), ["listen"]);
        assert!(before.restart_only_changes(&before.clone()).is_empty());
    }

    #[test]
    fn load_reads_the_file_and_records_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        let config = load(&path).unwrap();
        assert_eq!(config.source_path.as_deref(), Some(path.as_path()));
        assert_eq!(config.store.path, dir.path().join("wheelgate-data"));
        let error = load(&dir.path().join("absent.toml")).unwrap_err();
        assert!(matches!(error, ConfigError::Read { .. }));
        assert!(error.to_string().contains("absent.toml"), "{error}");
    }
}
