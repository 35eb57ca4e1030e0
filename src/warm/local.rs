//! Warming "directly on the store": when no server runs on it, warm starts wheelgate's own server
//! in this process, on 127.0.0.1 and a free port, over the configured store, and goes through it
//! like any client; then stops it the way `serve` stops, so every file fetched is stored.
//!
//! Going through the real server keeps one code path: the pages and files cached, the rules
//! applied, the digests checked are exactly those of a running wheelgate. The server gets the
//! configuration as written, except that it listens on loopback only, without TLS and with links
//! relative to its pages. Where the configuration lets only users read, warm adds one user of its
//! own for this run, with the read role and a random password no one else learns.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use url::Url;

use super::client::Credentials;
use super::WarmError;
use crate::app::{self, Live};
use crate::config::{Config, Credential, PasswordHash, Role, Roles, UserConfig, UserName};
use crate::front::Server;
use crate::store::Store;

/// wheelgate's server, running in this process for the length of a warm run.
pub struct LocalServer {
    base: Url,
    credentials: Option<Credentials>,
    store: Store,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<()>,
}

impl LocalServer {
    /// Starts the server of `config` over `store` (opened by the caller, so it holds the lock).
    pub async fn start(
        mut config: Config,
        config_path: PathBuf,
        store: Store,
    ) -> Result<LocalServer, WarmError> {
        config.server.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        config.server.tls = None;
        config.server.public_url = None;
        let credentials = if config.access.anonymous_read {
            None
        } else {
            let (user, credentials) = own_user(&config).await?;
            config.users.push(user);
            Some(credentials)
        };
        let live =
            Arc::new(Live::build(config, config_path, store.clone()).map_err(WarmError::App)?);
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let server = Server::bind(live, listen, None)
            .await
            .map_err(|e| WarmError::Runtime(format!("cannot listen on 127.0.0.1: {e}")))?;
        let addr = server
            .local_addr()
            .map_err(|e| WarmError::Runtime(format!("the local server has no address: {e}")))?;
        let base = Url::parse(&format!("http://{addr}/"))
            .map_err(|e| WarmError::Runtime(format!("the local server's URL: {e}")))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Ok(LocalServer {
            base,
            credentials,
            store,
            stop,
            serving,
        })
    }

    /// `http://127.0.0.1:<port>/`.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The credentials of warm's own user, when the configuration needs users to read.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// Stops the server gracefully (downloads still being stored finish, within
    /// `shutdown_grace`) and flushes the store.
    pub async fn stop(self) -> Result<(), WarmError> {
        let _ = self.stop.send(());
        self.serving
            .await
            .map_err(|e| WarmError::Runtime(format!("the local server failed: {e}")))?;
        app::close_store(self.store).await.map_err(|error| {
            WarmError::Runtime(format!("could not flush the store after warming: {error}"))
        })
    }
}

/// A user for this run only: a name no configured user has, the read role on every repository,
/// and a random password, hashed as `[[user]]` hashes are.
async fn own_user(config: &Config) -> Result<(UserConfig, Credentials), WarmError> {
    let failed =
        |reason: String| WarmError::Runtime(format!("cannot set up warm's own user: {reason}"));
    let name = loop {
        let candidate = format!("wheelgate-warm-{:08x}", rand::random::<u32>());
        let name = UserName::parse(&candidate).map_err(|e| failed(e.to_string()))?;
        if config.user(&name).is_none() {
            break name;
        }
    };
    let password = format!("{:032x}", rand::random::<u128>());
    let to_hash = password.clone();
    let hash = tokio::task::spawn_blocking(move || crate::access::hash_password(&to_hash))
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(e.to_string()))?;
    let hash = PasswordHash::parse(&hash).map_err(|e| failed(e.to_string()))?;
    let roles = Roles::of([Role::Read]).ok_or_else(|| failed("no role".to_owned()))?;
    let credentials = Credentials {
        username: name.as_str().to_owned(),
        password,
    };
    let user = UserConfig {
        name,
        credential: Credential::PasswordHash(hash),
        roles,
        repositories: None,
        line: 0,
    };
    Ok((user, credentials))
}
