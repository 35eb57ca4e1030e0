//! `wheelgate cache …` as a command: load the configuration, ask the server running on the
//! store or open the store itself, say which was done, print the report, choose the exit code.
//!
//! Exit codes (SPEC §9): 0 done (for `verify`: nothing damaged); 1 a runtime failure, or
//! `verify` found damaged bodies; 2 a usage error (an unknown repository, a bad project name)
//! or an invalid configuration.

use std::path::Path;
use std::process::ExitCode;

use super::report::Report;
use super::{execute, purge_project, purge_targets, CacheError, Request};
use crate::admin::client::{self, AskError};
use crate::admin::socket_path;
use crate::config::{self, Config};
use crate::store::{Store, StoreError, StoreOptions};

/// A cache command as the command line gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Stats,
    Verify {
        forget_damaged_uploads: bool,
    },
    Gc,
    Purge {
        project: String,
        repository: Option<String>,
    },
    OriginExplain {
        repository: String,
        package: String,
        version: Option<String>,
    },
}

const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;

/// Runs `command` with the configuration at `config_path`.
pub fn run(config_path: &Path, command: Command) -> ExitCode {
    let config = match config::load(config_path) {
        Ok(config) => config,
        Err(error) => return fail(&error.to_string(), EXIT_USAGE),
    };
    let request = match request_for(&config, command) {
        Ok(request) => request,
        Err(error) => return fail(&error.to_string(), exit_code(&error)),
    };
    let socket = socket_path(&config.store.path);
    match client::ask(&socket, &request) {
        Ok(answer) => {
            println!(
                "asked the running server (pid {}) over {}",
                answer.pid,
                socket.display()
            );
            finish(&answer.report)
        }
        Err(AskError::NoServer { stale }) => directly(&config, &request, stale),
        Err(AskError::Refused { failure }) => {
            let code = if failure.usage {
                EXIT_USAGE
            } else {
                EXIT_FAILURE
            };
            fail(&format!("the running server: {}", failure.error), code)
        }
        Err(error) => fail(&error.to_string(), EXIT_FAILURE),
    }
}

/// The request for `command`, checked against the configuration before anything is asked.
fn request_for(config: &Config, command: Command) -> Result<Request, CacheError> {
    Ok(match command {
        Command::Stats => Request::Stats,
        Command::Verify {
            forget_damaged_uploads,
        } => Request::Verify {
            forget_damaged_uploads,
        },
        Command::Gc => Request::Gc {
            max_size: config.store.max_size,
        },
        Command::Purge {
            project,
            repository,
        } => {
            purge_project(&project)?;
            purge_targets(config, repository.as_deref())?;
            Request::Purge {
                project,
                repository,
            }
        }
        Command::OriginExplain {
            repository,
            package,
            version,
        } => Request::OriginExplain {
            repository,
            package,
            version,
        },
    })
}

/// No server answers: the command opens the store itself (which fails if a process holds it).
fn directly(config: &Config, request: &Request, stale_socket: bool) -> ExitCode {
    let path = &config.store.path;
    if !path.is_dir() {
        return fail(
            &format!(
                "there is no store at {} (store.path in the configuration): wheelgate has not \
                 stored anything with this configuration yet",
                path.display()
            ),
            EXIT_FAILURE,
        );
    }
    let store = match Store::open(StoreOptions {
        path: path.clone(),
        max_size: config.store.max_size,
        memory: 0,
    }) {
        Ok(store) => store,
        Err(StoreError::Locked { .. }) => {
            return fail(
                &format!(
                    "the store at {} is in use by another process, and no server answers on its \
                     admin socket {}: a server is starting or stopping, or another cache command \
                     is running; try again in a moment",
                    path.display(),
                    socket_path(path).display()
                ),
                EXIT_FAILURE,
            )
        }
        Err(error) => return fail(&error.to_string(), EXIT_FAILURE),
    };
    println!("no server running: opened the store at {}", path.display());
    if stale_socket {
        // The store's lock is ours: no server can be using the socket.
        let socket = socket_path(path);
        if std::fs::remove_file(&socket).is_ok() {
            println!(
                "removed the stale admin socket {} (its server did not stop cleanly)",
                socket.display()
            );
        }
    }
    let done = execute(&store, config, request).and_then(|report| {
        store.flush()?;
        Ok(report)
    });
    match done {
        Ok(report) => finish(&report),
        Err(error) => fail(&error.to_string(), exit_code(&error)),
    }
}

fn finish(report: &Report) -> ExitCode {
    print!("{report}");
    if report.found_damage() {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

fn exit_code(error: &CacheError) -> u8 {
    if error.is_usage() {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    }
}

fn fail(message: &str, code: u8) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}
