//! The admin channel: how a `wheelgate cache …` command asks the server running on a store to do
//! the work, since sled's lock keeps every other process out of the store while it runs.
//!
//! The channel is a unix socket in the store directory, [`SOCKET_NAME`], never a TCP port: it is
//! reachable from this machine only, and only by the user the server runs as (the socket is
//! created with mode 0600), so it needs no credentials; the public listener has no admin route.
//! The server creates it once the store is open and removes it when it stops. A socket file
//! left by a server that was killed is stale: nobody answers on it, and both the next server
//! and a command that then opens the store itself remove it.
//!
//! The protocol is minimal HTTP/1.1 over the socket: `POST /cache` with a JSON
//! [`crate::cache::Request`]; the answer is a JSON [`Answer`] (200) or [`Failure`] (400 for a
//! request the server's configuration refuses, 500 for a failure of the store).

pub mod client;
pub mod server;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::report::Report;

/// The socket's file name in the store directory.
pub const SOCKET_NAME: &str = "admin.sock";

/// The one route.
pub const CACHE_ROUTE: &str = "/cache";

/// Where the admin socket of the store at `store` is.
pub fn socket_path(store: &Path) -> PathBuf {
    store.join(SOCKET_NAME)
}

/// A request done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The server's process id, for the command to say whom it asked.
    pub pid: u32,
    pub report: Report,
}

/// A request refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub error: String,
    /// The request is at fault (an unknown repository, a bad project name): the command exits 2.
    pub usage: bool,
}
