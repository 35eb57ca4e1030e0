//! `wheelgate warm FILE` (SPEC §9): fills the cache from a requirements.txt, a uv.lock or a
//! pylock.toml, so that a CI image build or an air-gapped site can install the locked set later
//! with the upstream out of reach.
//!
//! Warm is a client of wheelgate: it reads project pages and downloads files over HTTP, as pip
//! would, so that what it caches is exactly what pip and uv will ask for, under the same rules.
//! It reaches wheelgate one of three ways, and says which:
//! - `--url`: the wheelgate at that address (credentials in its userinfo);
//! - a server runs on the configured store (sled's lock says so): through it, at the
//!   configuration's `listen` address;
//! - otherwise, "directly on the store": wheelgate's own server started in this process over
//!   the store (`local`), stopped cleanly at the end.
//!
//! The input formats are parsed into one model (`input`) by `requirements`, `uv_lock` and
//! `pylock` (the last two share `lock`); `select` picks the files of a page; `client` downloads; `driver` runs it all; and
//! `progress` reports and tallies; `trust` says which https servers are believed.

mod client;
mod driver;
mod input;
mod local;
mod lock;
mod progress;
mod pylock;
mod requirements;
mod select;
mod trust;
mod uv_lock;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use url::Url;

pub use client::Credentials;
pub use input::{InputError, InputFormat, WarmList};
pub use progress::Summary;
pub use trust::TrustError;

use crate::app::AppError;
use crate::config::{self, Config, ConfigError, RepoName};
use crate::store::StoreError;
use crate::upstream::RedactedUrl;
use client::WarmClient;
use local::LocalServer;
use progress::Progress;

/// Requests in flight at once, by default.
pub const DEFAULT_JOBS: usize = 8;

/// What the command line asks of `wheelgate warm`.
#[derive(Debug, Clone)]
pub struct Options {
    pub file: PathBuf,
    /// The input format; by default the file's name tells.
    pub format: Option<InputFormat>,
    /// The configuration file (`--config`).
    pub config: PathBuf,
    /// The repository to warm; the configuration's default repository otherwise.
    pub repo: Option<String>,
    /// A wheelgate to warm through, instead of the one the configuration describes.
    pub url: Option<String>,
    /// Requests in flight at once.
    pub jobs: usize,
    /// Draw a progress bar (stderr is a terminal) rather than plain lines.
    pub terminal: bool,
}

/// Why warm could not run. [`WarmError::is_usage`] tells a usage or configuration error (exit 2)
/// from a runtime failure (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    App(AppError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error(transparent)]
    Store(StoreError),
    #[error("{0}")]
    Runtime(String),
}

impl WarmError {
    /// A usage error or an invalid configuration or input, rather than a failure while running.
    pub fn is_usage(&self) -> bool {
        !matches!(self, WarmError::Store(_) | WarmError::Runtime(_))
    }
}

/// Reads the input, finds wheelgate, warms, and returns the tally (printing progress to stderr
/// as it goes).
pub async fn run(options: &Options) -> Result<Summary, WarmError> {
    let list = read_input(&options.file, options.format)?;
    let target = Target::choose(options).await?;
    eprintln!("{}", target.describe);
    let warmed = warm(&target, &list, options).await;
    // The local server is stopped whatever happened, so that what was fetched is stored.
    if let Some(local) = target.local {
        local.stop().await?;
    }
    warmed
}

async fn warm(target: &Target, list: &WarmList, options: &Options) -> Result<Summary, WarmError> {
    let client = WarmClient::new(
        &target.base,
        target.credentials.as_ref(),
        target.pinned.as_deref(),
    )?;
    let index = target
        .base
        .join(&format!("{}/simple/", target.repo))
        .map_err(|e| WarmError::Usage(format!("cannot build the index URL: {e}")))?;
    let progress = Arc::new(Progress::new(options.terminal));
    Ok(driver::run(&client, &index, list, options.jobs, progress).await)
}

/// Parses `path` in `format` (by default, the one its name says).
pub fn read_input(path: &Path, format: Option<InputFormat>) -> Result<WarmList, InputError> {
    let list = match format.unwrap_or_else(|| InputFormat::of_path(path)) {
        InputFormat::Requirements => requirements::read(path)?,
        InputFormat::UvLock => uv_lock::read(path)?,
        InputFormat::Pylock => pylock::read(path)?,
    };
    if list.requirements.is_empty() && list.skipped.is_empty() {
        return Err(InputError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(list)
}

/// The wheelgate warm goes through.
struct Target {
    /// Its root URL, ending in `/`, without credentials.
    base: Url,
    credentials: Option<Credentials>,
    /// The server's own certificate file, trusted as it is.
    pinned: Option<PathBuf>,
    repo: RepoName,
    /// The line saying which way warm goes.
    describe: String,
    /// The server this process started, when warming directly on the store.
    local: Option<LocalServer>,
}

impl Target {
    async fn choose(options: &Options) -> Result<Target, WarmError> {
        if let Some(url) = &options.url {
            return Target::given(url, options);
        }
        let config = config::load(&options.config)?;
        let repo = repository(&config, options.repo.as_deref())?;
        match crate::app::open_store(&config) {
            Ok(store) => {
                let path = config.store.path.clone();
                let local = LocalServer::start(config, options.config.clone(), store).await?;
                Ok(Target {
                    base: local.base().clone(),
                    credentials: local.credentials().cloned(),
                    pinned: None,
                    describe: format!(
                        "warming repository {repo} directly on the store {} (no server runs on it)",
                        path.display()
                    ),
                    repo,
                    local: Some(local),
                })
            }
            Err(StoreError::Locked { path }) => Target::running(&config, repo, &path),
            Err(error) => Err(WarmError::Store(error)),
        }
    }

    /// `--url`: credentials come from its userinfo, the repository from `--repo` or else the
    /// configuration.
    fn given(raw: &str, options: &Options) -> Result<Target, WarmError> {
        let (base, credentials) = base_url(raw)?;
        let repo = match &options.repo {
            Some(repo) => RepoName::parse(repo)
                .map_err(|e| WarmError::Usage(format!("--repo {repo:?}: {e}")))?,
            None => {
                let config = config::load(&options.config).map_err(|e| {
                    WarmError::Usage(format!(
                        "{e}\nwith --url, name the repository to warm with --repo, or give the \
                         configuration it comes from with --config"
                    ))
                })?;
                config.server.default_repository.clone()
            }
        };
        Ok(Target {
            describe: format!(
                "warming repository {repo} through the wheelgate at {}",
                RedactedUrl::new(&base)
            ),
            base,
            credentials,
            pinned: None,
            repo,
            local: None,
        })
    }

    /// A server holds the store: warm goes through it, at the configuration's address.
    fn running(config: &Config, repo: RepoName, store: &Path) -> Result<Target, WarmError> {
        let listen = config.server.listen;
        if listen.port() == 0 {
            return Err(WarmError::Usage(format!(
                "a process holds the store {}, but the configuration listens on port 0, so its \
                 address is unknown: give it with --url http://host:port/",
                store.display()
            )));
        }
        let tls = config.server.tls.as_ref();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let addr = SocketAddr::new(reachable(listen.ip()), listen.port());
        let base = Url::parse(&format!("{scheme}://{addr}/"))
            .map_err(|e| WarmError::Usage(format!("the configuration's listen address: {e}")))?;
        Ok(Target {
            describe: format!(
                "warming repository {repo} through the running server at {base} (it holds the \
                 store {})",
                store.display()
            ),
            base,
            credentials: None,
            pinned: tls.map(|tls| tls.cert_file.clone()),
            repo,
            local: None,
        })
    }
}

/// An address a client can connect to: loopback for a server listening on every interface.
fn reachable(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

/// The repository `--repo` names (it must be one the configuration defines), or the default.
fn repository(config: &Config, repo: Option<&str>) -> Result<RepoName, WarmError> {
    match repo {
        Some(raw) => config.named_repository(raw).map_err(WarmError::Usage),
        None => Ok(config.server.default_repository.clone()),
    }
}

/// `--url`: wheelgate's root URL (http or https), its userinfo taken out as credentials. An
/// index URL (`…/simple/`) is refused, since warm names the repository itself.
fn base_url(raw: &str) -> Result<(Url, Option<Credentials>), WarmError> {
    let usage = |reason: &str| WarmError::Usage(format!("--url {raw:?}: {reason}"));
    let mut url = Url::parse(raw).map_err(|e| usage(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(usage(
            "give wheelgate's http(s) address, as http://host:port/",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(usage(
            "give wheelgate's address without a query or fragment",
        ));
    }
    if url.path().trim_end_matches('/').ends_with("/simple") {
        return Err(usage(
            "this is an index URL; give wheelgate's own address (without /simple/) and the \
             repository with --repo",
        ));
    }
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    let credentials = (!url.username().is_empty()).then(|| Credentials {
        username: decode(url.username()),
        password: url.password().map(decode).unwrap_or_default(),
    });
    let _ = url.set_username("");
    let _ = url.set_password(None);
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok((url, credentials))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_credentials_are_taken_out_of_the_base() {
        let (base, credentials) = base_url("http://ci%40corp:p%3Ass@127.0.0.1:3141").unwrap();
        assert_eq!(base.as_str(), "http://127.0.0.1:3141/");
        let credentials = credentials.unwrap();
        assert_eq!(credentials.username, "ci@corp");
        assert_eq!(credentials.password, "p:ss");
        assert!(!format!("{credentials:?}").contains("p:ss"));
        let (base, credentials) = base_url("https://proxy.example.invalid/pypi-cache").unwrap();
        assert_eq!(base.as_str(), "https://proxy.example.invalid/pypi-cache/");
        assert!(credentials.is_none());
        for (bad, why) in [
            ("http://127.0.0.1:3141/simple/", "index URL"),
            ("http://127.0.0.1:3141/pypi/simple", "index URL"),
            ("ftp://127.0.0.1/", "http(s)"),
            ("http://127.0.0.1/?token=1", "query"),
            ("not a url", "--url"),
        ] {
            let error = base_url(bad).unwrap_err().to_string();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn wildcard_listen_addresses_are_reached_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0".parse().unwrap()),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            reachable("::".parse().unwrap()),
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        );
        assert_eq!(
            reachable("10.0.0.5".parse().unwrap()),
            "10.0.0.5".parse::<IpAddr>().unwrap()
        );
    }
}
