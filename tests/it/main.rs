//! wheelgate's integration tests: one test binary (`it`) that runs the real wheelgate binary
//! against an in-process fixture upstream and drives it with pip, uv and raw HTTP.
//!
//! The harness lives in `harness/`; each other module covers one part of the behaviour (see its
//! own doc comment). Run them with `cargo test --test it`.

mod harness;

mod cache;
mod cache_cli;
mod chaining;
mod cli;
mod connections;
mod deploy;
mod disk_full;
mod faults;
mod file_limits;
mod fleet;
mod groups;
mod install;
mod integrity;
mod load;
mod malformed;
mod metrics;
mod origin;
mod package_groups;
mod page_limits;
mod provenance;
mod publish;
mod rules;
mod s3_server;
mod secrets;
mod simple_api;
mod status_page;
mod store;
mod tls;
mod upstream_auth;
mod upstream_tls;
mod users;
mod warm;
