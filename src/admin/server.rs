//! The server's end of the admin channel: the socket in the store directory and its one route,
//! which runs a cache command on the server's own store.
//!
//! A command runs on a blocking thread (verify reads every stored body), so the runtime that
//! serves clients is never held up; the store's own locks keep it consistent with the requests
//! served meanwhile. A purge also forgets the project's pages held in memory, so that the next
//! request really goes to the upstream.

use std::convert::Infallible;
use std::fs::{self, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use super::{socket_path, Answer, Failure, CACHE_ROUTE, SOCKET_NAME};
use crate::app::Live;
use crate::cache::report::Report;
use crate::cache::{execute, CacheError, Request};
use crate::simple::name::ProjectName;

/// The largest request body read: a request is a few dozen bytes of JSON.
const MAX_REQUEST: usize = 64 * 1024;

/// The listening admin socket. Dropping it removes the socket file.
pub struct AdminSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl AdminSocket {
    /// Creates the admin socket of the store directory `store`, mode 0600, replacing a stale
    /// one. The store must be open in this process: its lock proves that no other server uses
    /// the name. Call it within the tokio runtime.
    pub fn bind(store: &Path) -> io::Result<AdminSocket> {
        let path = socket_path(store);
        // Bound under a name of its own, made private, then renamed over the public name (which
        // replaces a stale socket atomically): nobody can reach it by that name before its mode
        // is 0600.
        let staging = store.join(format!(".{SOCKET_NAME}.{}", std::process::id()));
        match fs::remove_file(&staging) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = std::os::unix::net::UnixListener::bind(&staging)?;
        let published = fs::set_permissions(&staging, Permissions::from_mode(0o600))
            .and_then(|()| fs::rename(&staging, &path));
        if let Err(error) = published {
            let _ = fs::remove_file(&staging);
            return Err(error);
        }
        listener.set_nonblocking(true)?;
        let listener = UnixListener::from_std(listener)?;
        Ok(AdminSocket { listener, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers cache commands until the task is dropped (at shutdown), which removes the socket.
    pub async fn run(self, live: Arc<Live>) {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "the admin socket could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let live = live.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let live = live.clone();
                    async move { Ok::<_, Infallible>(answer(live, request).await) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(error) = served {
                    tracing::debug!(%error, "an admin connection ended with an error");
                }
            });
        }
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The one route: `POST /cache` with a JSON [`Request`].
async fn answer(live: Arc<Live>, request: http::Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::POST || request.uri().path() != CACHE_ROUTE {
        return failure(
            StatusCode::NOT_FOUND,
            format!("the admin socket answers POST {CACHE_ROUTE} only"),
            true,
        );
    }
    let body = match Limited::new(request.into_body(), MAX_REQUEST)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(error) => {
            return failure(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request: {error}"),
                true,
            )
        }
    };
    let command: Request = match serde_json::from_slice(&body) {
        Ok(command) => command,
        Err(error) => {
            return failure(
                StatusCode::BAD_REQUEST,
                format!(
                    "the request is not a cache command this server knows ({error}); is the \
                     command from another wheelgate version?"
                ),
                true,
            )
        }
    };
    tracing::info!(?command, "cache command over the admin socket");
    let app = live.current();
    let store = live.store().clone();
    let ran = tokio::task::spawn_blocking(move || {
        let report = execute(&store, &app.config, &command)?;
        if let Report::Purge(purged) = &report {
            if let Ok(project) = ProjectName::parse(&purged.project) {
                for (repository, _) in &purged.repositories {
                    app.repositories.forget_page_in_memory(repository, &project);
                }
            }
        }
        Ok::<_, CacheError>(report)
    })
    .await
    .unwrap_or_else(|join| Err(CacheError::Interrupted(join.to_string())));
    match ran {
        Ok(report) => json(
            StatusCode::OK,
            &Answer {
                pid: std::process::id(),
                report,
            },
        ),
        Err(error) => {
            tracing::warn!(%error, "a cache command over the admin socket failed");
            let status = if error.is_usage() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            failure(status, error.to_string(), error.is_usage())
        }
    }
}

fn failure(status: StatusCode, error: String, usage: bool) -> Response<Full<Bytes>> {
    json(status, &Failure { error, usage })
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    // Reports and failures are plain structs of strings and numbers: serialising them cannot
    // fail, and an empty body would be refused by the command rather than trusted.
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
