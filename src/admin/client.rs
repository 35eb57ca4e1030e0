//! The command's end of the admin channel: one request to the server on the store's socket.
//!
//! No socket file, or one nobody answers on (left by a server that was killed), means no server
//! is running: the command then opens the store itself. The request waits as long as the server
//! works on it (a verify of a large store reads every byte of it).

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::{Answer, Failure, CACHE_ROUTE};
use crate::cache::Request;

/// Why the running server did not answer a request.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// Nothing listens on the socket: it is absent, or `stale` (a file nobody answers on).
    #[error("no server answers on the admin socket")]
    NoServer { stale: bool },
    #[error(
        "cannot connect to the admin socket {}: {source}; run the command as the user that runs \
         the server",
        socket.display()
    )]
    Connect { socket: PathBuf, source: io::Error },
    #[error(
        "the exchange with the server over the admin socket {} failed: {reason}; look at the \
         server's log",
        socket.display()
    )]
    Exchange { socket: PathBuf, reason: String },
    /// The server refused the request or failed to carry it out.
    #[error("the running server: {}", failure.error)]
    Refused { failure: Failure },
}

/// Sends `request` to the server listening on `socket` and waits for its answer.
pub fn ask(socket: &Path, request: &Request) -> Result<Answer, AskError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| AskError::Exchange {
            socket: socket.to_owned(),
            reason: format!("cannot start the async runtime: {error}"),
        })?;
    runtime.block_on(exchange(socket, request))
}

async fn exchange(socket: &Path, request: &Request) -> Result<Answer, AskError> {
    let stream = match UnixStream::connect(socket).await {
        Ok(stream) => stream,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(AskError::NoServer { stale: false })
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(AskError::NoServer { stale: true })
        }
        Err(source) => {
            return Err(AskError::Connect {
                socket: socket.to_owned(),
                source,
            })
        }
    };
    let failed = |reason: String| AskError::Exchange {
        socket: socket.to_owned(),
        reason,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(e.to_string()))?;
    let driver = tokio::spawn(connection);
    // Requests are plain data: serialising one cannot fail.
    let body = serde_json::to_vec(request).unwrap_or_default();
    let http_request = http::Request::post(CACHE_ROUTE)
        .header(HOST, "localhost")
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| failed(e.to_string()))?;
    let response = sender
        .send_request(http_request)
        .await
        .map_err(|e| failed(format!("the server closed the connection: {e}")))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| failed(e.to_string()))?
        .to_bytes();
    driver.abort();
    if status.is_success() {
        return serde_json::from_slice(&body)
            .map_err(|e| failed(format!("its answer ({status}) is not a report: {e}")));
    }
    match serde_json::from_slice::<Failure>(&body) {
        Ok(failure) => Err(AskError::Refused { failure }),
        Err(_) => Err(failed(format!(
            "it answered {status}: {}",
            String::from_utf8_lossy(&body)
        ))),
    }
}
