//! The `wheelgate` command: `serve` (the default) and `check`.
//!
//! Exit codes (SPEC §9): 0 ok, 1 runtime failure, 2 usage error or invalid configuration.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use wheelgate::app::App;
use wheelgate::config;
use wheelgate::front::{shutdown_signal, Server};
use wheelgate::store::flight::Flights;
use wheelgate::store::{Store, StoreOptions};

#[derive(Parser)]
#[command(name = "wheelgate", version, about = "A caching pull-through proxy for Python package indexes")]
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, default_value = "./proxy.toml")]
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
    init_logging(cli.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Check => check(&cli.config),
        Command::Serve => serve(&cli.config),
    }
}

/// Logs go to stderr; `WHEELGATE_LOG` takes a tracing filter (`info`, `debug`,
/// `wheelgate=debug,hyper=info`). Colours only on a terminal.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WHEELGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let summary = config.describe();
    // Building the upstream clients also checks what loading cannot: CA files parse, TLS builds.
    // The store is not opened: a running server holds its lock.
    if let Err(error) = wheelgate::app::validate(&config) {
        eprintln!("error: {error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    println!("{}: configuration is valid", path.display());
    print!("{summary}");
    ExitCode::SUCCESS
}

fn serve(path: &std::path::Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    runtime.block_on(async move {
        let store = match Store::open(StoreOptions {
            path: config.store.path.clone(),
            max_size: config.store.max_size,
        }) {
            Ok(store) => store,
            Err(error) => {
                tracing::error!("{error}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        };
        let flights = Arc::new(Flights::new(store.tmp_dir()));
        let app = match App::build(config, store.clone(), flights) {
            Ok(app) => Arc::new(app),
            Err(error) => {
                tracing::error!("{error}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let recency = tokio::spawn(persist_recency(store.clone()));
        app.log_summary();
        let listen = app.config.server.listen;
        let server = match Server::bind(app).await {
            Ok(server) => server,
            Err(error) => {
                tracing::error!(%error, "cannot listen on {listen}: is another process using it?");
                return ExitCode::from(EXIT_RUNTIME);
            }
        };
        match server.local_addr() {
            Ok(addr) => tracing::info!("listening on http://{addr}"),
            Err(error) => tracing::warn!(%error, "listening, but the bound address is unknown"),
        }
        server.run(shutdown_signal()).await;
        recency.abort();
        let closing = tokio::task::spawn_blocking(move || {
            store.persist_recency()?;
            store.flush()
        })
        .await;
        match closing {
            Ok(Ok(())) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "could not flush the store at shutdown");
                ExitCode::from(EXIT_RUNTIME)
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
