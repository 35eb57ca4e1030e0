//! The `wheelgate` command: `serve` (the default), `check`, `rules list|describe|test`,
//! `origin list`, `cache stats|verify|gc|purge`, `hash-password`, `health` and `warm`.
//!
//! Exit codes (SPEC §9): 0 ok, 1 runtime failure, 2 usage error or invalid configuration;
//! `rules test` exits 0 for allow, 1 for deny, 2 for an error; `cache verify` exits 1 when it
//! found damaged bodies.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand, ValueEnum};

use wheelgate::access::{self as client_access, HashPasswordError};
use wheelgate::admin::server::AdminSocket;
use wheelgate::app::{self, Live};
use wheelgate::cache;
use wheelgate::config::{self, Config, RepoName, RuleName};
use wheelgate::front::{shutdown_signal, Server};
use wheelgate::logging::access::{self, LogFormat as AccessFormat};
use wheelgate::logging::{buffered_stderr, LogGuard};
use wheelgate::origin;
use wheelgate::policy::{self, Policy};
use wheelgate::probe::Probe;
use wheelgate::store::Store;
use wheelgate::warm::{InputFormat, Options as WarmOptions};

#[derive(Parser)]
#[command(
    name = "wheelgate",
    version,
    about = "A caching pull-through proxy for Python package indexes"
)]
struct Cli {
    /// The configuration file.
    #[arg(
        long,
        global = true,
        env = "WHEELGATE_CONFIG",
        default_value = "./proxy.toml"
    )]
    config: PathBuf,
    /// How log lines are written to stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the simple API (the default command).
    Serve,
    /// Validate the configuration and print what it defines.
    Check,
    /// Inspect the download rules of the configuration.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Inspect and maintain the store: through the running server when there is one (over the
    /// admin socket in the store directory), else on the store directly.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Inspect origin controls (where packages may come from): the package groups, and what
    /// decides for one package (through the running server when there is one, else on the
    /// store directly).
    #[command(subcommand)]
    Origin(OriginCommand),
    /// Print an argon2id hash of a password, for `password_hash` in a `[[user]]`. The password
    /// is typed at the terminal (twice, not echoed) or piped in as one line.
    HashPassword,
    /// Ask the running server for `/-/health` on the address the configuration listens on: exit
    /// 0 when it answers 200, 1 otherwise. For container health checks (the image has no curl).
    Health,
    /// Fill the cache from a requirements.txt (pinned), a uv.lock or a pylock.toml (PEP 751):
    /// through the running server, or directly on the store when none runs. Exits 1 when any
    /// file failed.
    Warm {
        /// The file listing what to warm.
        file: PathBuf,
        /// The file's format, when its name does not say it (`uv.lock`, `pylock.toml` and
        /// `pylock.<name>.toml` are recognised; any other name is read as a requirements file).
        #[arg(long, value_enum)]
        format: Option<WarmFormat>,
        /// The repository to warm; by default the configuration's default repository.
        #[arg(long)]
        repo: Option<String>,
        /// Warm through the wheelgate at this address (`http://[USER:PASSWORD@]host:port/`)
        /// instead of the one the configuration describes.
        #[arg(long)]
        url: Option<String>,
        /// Downloads at once.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
        jobs: u16,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum WarmFormat {
    Requirements,
    UvLock,
    Pylock,
}

#[derive(Subcommand)]
enum RulesCommand {
    /// List the rules, of one repository or of all.
    List {
        #[arg(long)]
        repo: Option<String>,
    },
    /// Show one rule.
    Describe {
        name: String,
        #[arg(long)]
        repo: String,
    },
    /// Decide a download: exit 0 when allowed, 1 when denied.
    Test {
        #[arg(long)]
        repo: String,
        package: String,
        version: String,
        filename: Option<String>,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Print how many files and pages the store holds and how much of max_size they use.
    Stats,
    /// Hash every stored body again and remove the damaged ones (they are fetched again);
    /// exits 1 when it found any. A damaged hosted upload is the only copy: it is kept and
    /// reported unless --forget-damaged-uploads is given.
    Verify {
        /// Forget hosted uploads whose body is damaged, so the files can be published again.
        #[arg(long)]
        forget_damaged_uploads: bool,
    },
    /// Evict least recently used cached files until the store is within the configured
    /// max_size (hosted uploads are never evicted).
    Gc,
    /// Forget a project's stored pages so that the next request fetches them from the upstream.
    Purge {
        /// The project, in any spelling (it is normalised).
        project: String,
        /// Only this remote repository (default: every remote repository).
        #[arg(long)]
        repo: Option<String>,
    },
}

#[derive(Subcommand)]
enum OriginCommand {
    /// List the package groups as a tree, each under its parent, with the effective setting of
    /// each restriction and where it is inherited from.
    List,
    /// Print the package's group with the effective mode of each restriction and where it is
    /// inherited from, the package-level origin controls that bear on a repository and where
    /// each came from (first upload, first ingestion, [[package_origin]]); with a version, the
    /// member the repository would serve it from, or why none.
    Explain {
        /// The repository asked about.
        #[arg(long)]
        repo: String,
        /// The package, in any spelling (it is normalised).
        package: String,
        version: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Held to the end of main: dropping it flushes the log lines still queued.
    let command = cli.command.unwrap_or(Command::Serve);
    // warm reports its own progress; the access log of the server it may start would bury it.
    let default_level = match command {
        Command::Warm { .. } => "warn",
        _ => "info",
    };
    let _log = init_logging(cli.log_format, default_level);
    match command {
        Command::Check => check(&cli.config),
        Command::Serve => serve(&cli.config),
        Command::Rules(command) => rules(&cli.config, command),
        Command::Origin(OriginCommand::List) => origin_list(&cli.config),
        Command::Cache(command) => cache::cli::run(&cli.config, cache_command(command)),
        Command::Origin(OriginCommand::Explain {
            repo,
            package,
            version,
        }) => cache::cli::run(
            &cli.config,
            cache::cli::Command::OriginExplain {
                repository: repo,
                package,
                version,
            },
        ),
        Command::HashPassword => hash_password(),
        Command::Warm {
            file,
            format,
            repo,
            url,
            jobs,
        } => warm(WarmOptions {
            file,
            format: format.map(|format| match format {
                WarmFormat::Requirements => InputFormat::Requirements,
                WarmFormat::UvLock => InputFormat::UvLock,
                WarmFormat::Pylock => InputFormat::Pylock,
            }),
            config: cli.config,
            repo,
            url,
            jobs: usize::from(jobs),
            terminal: std::io::stderr().is_terminal(),
        }),
        Command::Health => health(&cli.config),
    }
}

fn cache_command(command: CacheCommand) -> cache::cli::Command {
    match command {
        CacheCommand::Stats => cache::cli::Command::Stats,
        CacheCommand::Verify {
            forget_damaged_uploads,
        } => cache::cli::Command::Verify {
            forget_damaged_uploads,
        },
        CacheCommand::Gc => cache::cli::Command::Gc,
        CacheCommand::Purge { project, repo } => cache::cli::Command::Purge {
            project,
            repository: repo,
        },
    }
}

/// Logs go to stderr; `WHEELGATE_LOG` takes a tracing filter (`info`, `debug`,
/// `wheelgate=debug,hyper=info`), `default_level` applies without it. Colours only on a terminal.
/// Lines are written in batches (see `wheelgate::logging`): one access-log line per request must
/// not cost a syscall each.
fn init_logging(format: LogFormat, default_level: &str) -> LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WHEELGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let (writer, guard) = buffered_stderr();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer.clone())
        .with_ansi(std::io::stderr().is_terminal());
    let access_format = match format {
        LogFormat::Text => {
            builder.init();
            AccessFormat::Text
        }
        LogFormat::Json => {
            builder.json().init();
            AccessFormat::Json
        }
    };
    access::install(&writer, access_format);
    guard
}

/// Loads and validates the configuration (upstream clients and rules included) for the commands
/// that do not serve. The store is not opened: a running server holds its lock.
fn load_validated(path: &Path) -> Result<(Config, Policy), ExitCode> {
    let config = config::load(path).map_err(|error| {
        eprintln!("error: {error}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    let policy = app::validate(&config).map_err(|error| {
        eprintln!("error: {error}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    if let Some(tls) = &config.server.tls {
        wheelgate::front::tls::acceptor(tls).map_err(|error| {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_CONFIG)
        })?;
    }
    Ok((config, policy))
}

fn check(path: &Path) -> ExitCode {
    match load_validated(path) {
        Ok((config, _)) => {
            println!("{}: configuration is valid", path.display());
            print!("{}", config.describe());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `wheelgate hash-password`: the hash on stdout, nothing else, so that it can be captured with
/// `$(…)`. Needs no configuration file.
fn hash_password() -> ExitCode {
    let password = match client_access::cli::read_password() {
        Ok(password) => password,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match client_access::hash_password(&password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(error @ HashPasswordError::Empty) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// `wheelgate health`: one line on stdout when healthy, the reason on stderr otherwise.
fn health(path: &Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let probe = Probe::for_server(&config.server);
    let runtime = match runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(probe.run()) {
        Ok(()) => {
            println!("healthy: {}", probe.target());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("unhealthy: {error}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// The async runtime of a command that talks to a server; a failure to start it is said.
fn runtime(builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = builder;
    builder.enable_all().build().map_err(|error| {
        eprintln!("error: cannot start the async runtime: {error}");
        ExitCode::from(EXIT_RUNTIME)
    })
}

/// `wheelgate warm`: the summary on stdout; exit 1 when any file failed, 2 for a usage error.
fn warm(options: WarmOptions) -> ExitCode {
    let runtime = match runtime(tokio::runtime::Builder::new_multi_thread()) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(wheelgate::warm::run(&options)) {
        Ok(summary) => {
            println!("{summary}");
            if summary.failed > 0 {
                ExitCode::from(EXIT_RUNTIME)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(if error.is_usage() {
                EXIT_CONFIG
            } else {
                EXIT_RUNTIME
            })
        }
    }
}

fn repo_arg(config: &Config, raw: &str) -> Result<RepoName, ExitCode> {
    config.named_repository(raw).map_err(|error| {
        eprintln!("error: {error}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn rules(path: &Path, command: RulesCommand) -> ExitCode {
    let (config, policy) = match load_validated(path) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let result = match command {
        RulesCommand::List { repo } => {
            let repo = match repo.map(|r| repo_arg(&config, &r)).transpose() {
                Ok(repo) => repo,
                Err(code) => return code,
            };
            print!("{}", policy::cli::list(&policy, repo.as_ref()));
            return ExitCode::SUCCESS;
        }
        RulesCommand::Describe { name, repo } => {
            let repo = match repo_arg(&config, &repo) {
                Ok(repo) => repo,
                Err(code) => return code,
            };
            let name = match RuleName::parse(&name) {
                Ok(name) => name,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            policy::cli::describe(&policy, &name, &repo).map(|text| {
                print!("{text}");
                ExitCode::SUCCESS
            })
        }
        RulesCommand::Test {
            repo,
            package,
            version,
            filename,
        } => {
            let repo = match repo_arg(&config, &repo) {
                Ok(repo) => repo,
                Err(code) => return code,
            };
            policy::cli::test(
                &policy,
                &repo,
                &package,
                &version,
                filename.as_deref(),
                SystemTime::now(),
            )
            .map(|outcome| {
                print!("{}", outcome.text);
                if outcome.decision.is_allowed() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            })
        }
    };
    result.unwrap_or_else(|error| {
        eprintln!("error: {error}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn origin_list(path: &Path) -> ExitCode {
    let (config, _) = match load_validated(path) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    print!("{}", origin::cli::list(&config.package_groups));
    ExitCode::SUCCESS
}

fn serve(path: &Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    wheelgate::trim::keep_freed_buffers();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let path = path.to_owned();
    runtime.block_on(async move {
        let store = match app::open_store(&config) {
            Ok(store) => store,
            Err(error) => {
                tracing::error!("{error}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        };
        if let Some(shared) = &config.store.shared {
            match wheelgate::shared::Shared::open(shared) {
                Ok(bucket) => {
                    tokio::spawn(bucket.clone().watch());
                    store.attach_shared(bucket);
                    tracing::info!(
                        bucket = %shared.bucket,
                        prefix = %shared.prefix,
                        "files are shared with the other replicas through the bucket"
                    );
                }
                Err(error) => {
                    tracing::error!("{error}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
        }
        let live = match Live::build(config, path, store.clone()) {
            Ok(live) => Arc::new(live),
            Err(error) => {
                tracing::error!("{error}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let app = live.current();
        app.log_summary();
        let listen = app.config.server.listen;
        let tls = match app
            .config
            .server
            .tls
            .as_ref()
            .map(wheelgate::front::tls::acceptor)
            .transpose()
        {
            Ok(tls) => tls,
            Err(error) => {
                tracing::error!("{error}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        drop(app);
        let server = match Server::bind(live.clone(), listen, tls).await {
            Ok(server) => server,
            Err(error) => {
                tracing::error!(%error, "cannot listen on {listen}: is another process using it?");
                return ExitCode::from(EXIT_RUNTIME);
            }
        };
        match server.local_addr() {
            Ok(addr) => tracing::info!("listening on {}://{addr}", server.scheme()),
            Err(error) => tracing::warn!(%error, "listening, but the bound address is unknown"),
        }
        let admin = match AdminSocket::bind(store.path()) {
            Ok(socket) => {
                tracing::info!(socket = %socket.path().display(), "cache commands are answered on the admin socket");
                Some(tokio::spawn(socket.run(live.clone())))
            }
            Err(error) => {
                tracing::warn!(
                    %error,
                    socket = %wheelgate::admin::socket_path(store.path()).display(),
                    "cannot create the admin socket: `wheelgate cache` commands cannot reach this \
                     server (a unix socket path must be shorter than 108 bytes; a shorter \
                     store.path helps)"
                );
                None
            }
        };
        let recency = tokio::spawn(persist_recency(store.clone()));
        let trim = tokio::spawn(wheelgate::trim::when_quiet(
            live.current().repositories.metrics().clone(),
            store.clone(),
        ));
        let reloader = tokio::spawn(watch_config(live));
        server.run(shutdown_signal()).await;
        if let Some(admin) = admin {
            // Dropping the task's socket removes its file.
            admin.abort();
            let _ = admin.await;
        }
        recency.abort();
        trim.abort();
        reloader.abort();
        match app::close_store(store).await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(error) => {
                tracing::error!(%error, "could not flush the store at shutdown");
                ExitCode::from(EXIT_RUNTIME)
            }
        }
    })
}

/// How often last-use times reach the catalog. Hits only touch memory (SPEC §4); a crash loses
/// at most this much recency, which only makes eviction slightly less exact.
const RECENCY_PERIOD: Duration = Duration::from_secs(30);

async fn persist_recency(store: Store) {
    let mut ticker = tokio::time::interval(RECENCY_PERIOD);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.persist_recency()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "could not persist last-use times"),
            Err(error) => tracing::warn!(%error, "could not persist last-use times"),
        }
    }
}

/// How often the configuration file is checked for changes.
const CONFIG_POLL: Duration = Duration::from_secs(1);

/// What identifies a version of the configuration file: device, inode, mtime and length, read
/// through symlinks, so that an edit in place and a Kubernetes ConfigMap's `..data` swap are both
/// seen.
fn file_identity(path: &Path) -> Option<(u64, u64, Option<SystemTime>, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.dev(), meta.ino(), meta.modified().ok(), meta.len()))
}

/// Reloads the configuration on SIGHUP and when the file changes.
async fn watch_config(live: Arc<Live>) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; reloads happen on file changes only");
            None
        }
    };
    let mut seen = file_identity(live.config_path());
    let mut ticker = tokio::time::interval(CONFIG_POLL);
    loop {
        let signalled = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await.is_some(),
                None => std::future::pending().await,
            }
        };
        let reason = tokio::select! {
            true = signalled => "SIGHUP",
            _ = ticker.tick() => {
                if file_identity(live.config_path()) == seen {
                    continue;
                }
                "file changed"
            }
        };
        // Taken before reading the file, so an edit made while reloading is seen next time.
        seen = file_identity(live.config_path());
        let target = live.clone();
        match tokio::task::spawn_blocking(move || target.reload()).await {
            Ok(Ok(())) => tracing::info!(reason, "new configuration in force"),
            Ok(Err(error)) => tracing::error!(
                reason,
                "the edited configuration was refused; the previous one stays in force: {error}"
            ),
            Err(error) => tracing::error!(reason, %error, "configuration reload failed"),
        }
    }
}
