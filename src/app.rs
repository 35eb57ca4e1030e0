//! The running configuration: the repositories and rules built from a validated [`Config`], and
//! how a new configuration replaces it.
//!
//! `Config` is plain data read from `proxy.toml`; `App` is what serves requests: each repository
//! with its upstream client and caches, the compiled download rules, and the limits shared by
//! all of them. Building an `App` is the last step of loading a configuration, so a configuration
//! that cannot be put in force (an unreadable CA file, a rule whose condition does not compile)
//! is refused whole and the previous one stays.
//!
//! [`Live`] holds the `App` in force. A request takes the current `Arc<App>` once and keeps it to
//! the end, so a reload never changes the rules under a request that has started. The store and
//! the in-flight downloads belong to the process, not to a configuration: they carry over.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::access::Users;
use crate::config::{self, Config, ConfigError};
use crate::metrics::ReloadResult;
use crate::policy::{Policy, PolicyError};
use crate::repository::remote::flight::Flights;
use crate::repository::{self, BuildError, Counters, Repositories};
use crate::store::{Store, StoreError, StoreOptions};

/// Why a configuration could not be put in force.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Repository(#[from] BuildError),
    #[error("{origin}: {source}")]
    Rules {
        origin: String,
        #[source]
        source: PolicyError,
    },
}

/// Everything a request needs, shared by all connections.
pub struct App {
    pub config: Config,
    /// The repository layer: every page and file is served through it.
    pub repositories: Repositories,
}

fn origin(config: &Config) -> String {
    config
        .source_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "proxy.toml".to_owned())
}

/// Compiles the rules of `config`.
pub fn compile_policy(config: &Config) -> Result<Policy, AppError> {
    Policy::compile(&config.rules).map_err(|source| AppError::Rules {
        origin: origin(config),
        source,
    })
}

/// Checks what `App::build` would build, without a store: the repositories' upstream clients
/// (TLS roots, CA files) and the rules. For `wheelgate check`, which must not lock the store of a
/// running server.
pub fn validate(config: &Config) -> Result<Policy, AppError> {
    repository::validate(config)?;
    compile_policy(config)
}

impl App {
    /// Builds the repositories of `config` over the process's one store and its flights (both
    /// outlive configuration reloads).
    pub fn build(
        config: Config,
        store: Store,
        flights: Arc<Flights>,
        counters: Arc<Counters>,
    ) -> Result<App, AppError> {
        let users = Arc::new(Users::new(&config));
        App::build_with(config, store, flights, counters, users)
    }

    fn build_with(
        config: Config,
        store: Store,
        flights: Arc<Flights>,
        counters: Arc<Counters>,
        users: Arc<Users>,
    ) -> Result<App, AppError> {
        let policy = compile_policy(&config)?;
        store.space().set_floor(config.store.min_free_space);
        let repositories = Repositories::build(&config, policy, store, flights, counters, users)?;
        Ok(App {
            config,
            repositories,
        })
    }

    /// Logs what each repository will do.
    pub fn log_summary(&self) {
        self.repositories.log_summary();
    }
}

/// Opens the store `config` names, with its size cap and memory cache. Fails with
/// [`StoreError::Locked`] while another process (a running server) holds it.
pub fn open_store(config: &Config) -> Result<Store, StoreError> {
    Store::open(StoreOptions {
        path: config.store.path.clone(),
        max_size: config.store.max_size,
        memory: repository::hot_file_memory(config),
    })
}

/// The last step of a clean stop: last-use times written and the catalog flushed, off the
/// async workers.
pub async fn close_store(store: Store) -> Result<(), String> {
    let closing = tokio::task::spawn_blocking(move || {
        store.persist_recency()?;
        store.flush()
    })
    .await;
    match closing {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(error) => Err(error.to_string()),
    }
}

/// The configuration in force, and its replacement on reload.
pub struct Live {
    current: RwLock<Arc<App>>,
    config_path: PathBuf,
    store: Store,
    flights: Arc<Flights>,
    counters: Arc<Counters>,
    reloads: AtomicU64,
}

impl Live {
    /// Builds the `App` of `config` over `store`, with the process's flights and counters.
    pub fn build(config: Config, config_path: PathBuf, store: Store) -> Result<Live, AppError> {
        let flights = Arc::new(Flights::new(store.tmp_dir(), store.space()));
        let counters = Arc::new(Counters::default());
        let app = App::build(config, store.clone(), flights.clone(), counters.clone())?;
        Ok(Live::new(app, config_path, store, flights, counters))
    }

    pub fn new(
        app: App,
        config_path: PathBuf,
        store: Store,
        flights: Arc<Flights>,
        counters: Arc<Counters>,
    ) -> Live {
        Live {
            store,
            counters,
            current: RwLock::new(Arc::new(app)),
            config_path,
            flights,
            reloads: AtomicU64::new(0),
        }
    }

    /// The configuration in force now.
    pub fn current(&self) -> Arc<App> {
        match self.current.read() {
            Ok(app) => app.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The process's store, shared by every configuration generation.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The downloads in flight, shared by every configuration generation.
    pub fn flights(&self) -> &Arc<Flights> {
        &self.flights
    }

    /// Reads, validates and builds the configuration file again and swaps it in. On any error
    /// the configuration in force stays and the error is returned (the caller logs it). Either
    /// way the reload is counted in `wheelgate_config_reloads_total`.
    pub fn reload(&self) -> Result<(), AppError> {
        let reloaded = self.load_and_swap();
        self.counters.metrics.record_reload(match reloaded {
            Ok(()) => ReloadResult::Success,
            Err(_) => ReloadResult::Failure,
        });
        reloaded
    }

    fn load_and_swap(&self) -> Result<(), AppError> {
        let config = config::load(&self.config_path)?;
        let previous = self.current();
        let restart_only = previous.config.restart_only_changes(&config);
        // Unchanged users keep their remembered password checks: a reload (a ConfigMap edit
        // of a rule, say) should not make every client pay for a slow hash again.
        let users =
            if previous.config.users == config.users && previous.config.access == config.access {
                previous.repositories.users_handle()
            } else {
                Arc::new(Users::new(&config))
            };
        let app = App::build_with(
            config,
            self.store.clone(),
            self.flights.clone(),
            self.counters.clone(),
            users,
        )?;
        for key in restart_only {
            tracing::warn!(
                key,
                "this change takes effect only at restart; the running server keeps the old value"
            );
        }
        let app = Arc::new(app);
        match self.current.write() {
            Ok(mut current) => *current = app,
            Err(poisoned) => *poisoned.into_inner() = app,
        }
        let generation = self.reloads.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(generation, path = %self.config_path.display(), "configuration reloaded");
        Ok(())
    }

    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }
}
