//! The `wheelgate` command: `serve` (the default) and `check`.
//!
//! Exit codes (SPEC §9): 0 ok, 1 runtime failure, 2 usage error or invalid configuration.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use wheelgate::app::App;
use wheelgate::config;
use wheelgate::front::{shutdown_signal, Server};

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
    // Building the repositories also checks what loading cannot: CA files parse, TLS builds.
    if let Err(error) = App::build(config) {
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
        let app = match App::build(config) {
            Ok(app) => Arc::new(app),
            Err(error) => {
                tracing::error!("{error}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
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
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}
