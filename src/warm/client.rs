//! The HTTP client `wheelgate warm` talks to wheelgate with, as pip would: project pages in PEP
//! 691 JSON, files and their `.metadata` downloaded whole.
//!
//! A downloaded body is not kept: it is hashed as it streams by and dropped, since filling
//! wheelgate's cache is the point, and the digest proves that what the cache now serves is what
//! the page (or the lock) promised. What a response means for warm is decided here, once: the
//! `X-Wheelgate-Cache` header tells a file fetched from the upstream (`miss`) from one already
//! cached, and a 403 with `X-Wheelgate-Denied` is a download rule's refusal (a 403 without it is
//! a user lacking the read role, which is a failure).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sha2::{Digest as _, Sha256};
use url::Url;

use crate::simple::page::MAX_PAGE_BYTES;
use crate::simple::Sha256Digest;
use crate::upstream::RedactedUrl;

/// How long connecting to wheelgate may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait for response headers or for the next piece of a body. wheelgate itself bounds
/// its upstream fetches; this only keeps warm from hanging on a server that stopped answering.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How much of an error body is read for its reason.
const MAX_REASON_BYTES: usize = 4096;

/// The PEP 691 JSON media type pages are asked for.
const JSON_PAGE: &str = "application/vnd.pypi.simple.v1+json";

/// HTTP Basic credentials for wheelgate's users (SPEC §8). `Debug` shows the user only.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// How a file reached warm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheState {
    /// wheelgate fetched it from its upstream for this request.
    Fetched,
    /// wheelgate served it from its cache.
    Cached,
}

/// A downloaded body, gone, with what was learnt from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Downloaded {
    pub state: CacheState,
    pub size: u64,
    pub sha256: Sha256Digest,
}

/// Why a request did not give what warm asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// A download rule refused it: the rule's words.
    #[error("{0}")]
    Denied(String),
    #[error("wheelgate asks for credentials ({0}): give a user with the read role in --url, as http://USER:PASSWORD@host:port/")]
    Unauthorized(String),
    #[error("{status}: {reason}")]
    Status { status: StatusCode, reason: String },
    #[error("{url}: {reason}")]
    Transport { url: RedactedUrl, reason: String },
    #[error("{url}: no answer for {} s; is wheelgate overloaded or stuck?", IDLE_TIMEOUT.as_secs())]
    Timeout { url: RedactedUrl },
    #[error("{url}: the page is larger than {} MiB", MAX_PAGE_BYTES / (1024 * 1024))]
    TooLarge { url: RedactedUrl },
    /// An answer warm cannot use (a page that does not parse).
    #[error("{0}")]
    Unusable(String),
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The client. Cloning is cheap: clones share the pool.
#[derive(Clone)]
pub struct WarmClient {
    client: HttpClient,
    inner: Arc<Inner>,
}

struct Inner {
    /// Where credentials may go: wheelgate's own origin.
    origin: url::Origin,
    authorization: Option<HeaderValue>,
    user_agent: HeaderValue,
}

impl WarmClient {
    /// A client for the wheelgate at `base`, sending `credentials` to its origin only; over
    /// https it trusts what `super::trust` says, and the certificates in `pinned` (wheelgate's
    /// own `[server.tls] cert_file`, when warm reaches the server the configuration describes).
    pub fn new(
        base: &Url,
        credentials: Option<&Credentials>,
        pinned: Option<&std::path::Path>,
    ) -> Result<WarmClient, super::trust::TrustError> {
        let tls = super::trust::tls_config(base.scheme() == "https", pinned)?;
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        tcp.set_nodelay(true);
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        let authorization = credentials.map(|c| {
            let encoded = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", c.username, c.password));
            let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
                .unwrap_or_else(|_| HeaderValue::from_static(""));
            value.set_sensitive(true);
            value
        });
        Ok(WarmClient {
            client,
            inner: Arc::new(Inner {
                origin: base.origin(),
                authorization,
                user_agent: HeaderValue::from_static(concat!(
                    "wheelgate-warm/",
                    env!("CARGO_PKG_VERSION")
                )),
            }),
        })
    }

    /// A project page in PEP 691 JSON, whole.
    pub async fn page(&self, url: &Url) -> Result<Bytes, FetchError> {
        let response = self.get(url, Some(JSON_PAGE)).await?;
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = next_chunk(&mut body, url).await? {
            if bytes.len() + chunk.len() > MAX_PAGE_BYTES {
                return Err(FetchError::TooLarge {
                    url: RedactedUrl::new(url),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(bytes))
    }

    /// Downloads `url`, hashing and dropping the bytes.
    pub async fn download(&self, url: &Url) -> Result<Downloaded, FetchError> {
        let response = self.get(url, None).await?;
        let state = cache_state(&response);
        let mut body = response.into_body();
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = next_chunk(&mut body, url).await? {
            hasher.update(&chunk);
            size += chunk.len() as u64;
        }
        Ok(Downloaded {
            state,
            size,
            sha256: Sha256Digest::from_bytes(hasher.finalize().into()),
        })
    }

    /// A GET whose answer is 200, or the reason it is not.
    async fn get(
        &self,
        url: &Url,
        accept: Option<&'static str>,
    ) -> Result<http::Response<hyper::body::Incoming>, FetchError> {
        let transport = |reason: String| FetchError::Transport {
            url: RedactedUrl::new(url),
            reason,
        };
        let mut request = Request::get(url.as_str())
            .header(header::USER_AGENT, self.inner.user_agent.clone())
            .body(Empty::new())
            .map_err(|e| transport(e.to_string()))?;
        if let Some(accept) = accept {
            request
                .headers_mut()
                .insert(header::ACCEPT, HeaderValue::from_static(accept));
        }
        if let Some(authorization) = &self.inner.authorization {
            if url.origin() == self.inner.origin {
                request
                    .headers_mut()
                    .insert(header::AUTHORIZATION, authorization.clone());
            }
        }
        let response = tokio::time::timeout(IDLE_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| FetchError::Timeout {
                url: RedactedUrl::new(url),
            })?
            .map_err(|e| transport(hyper_error(&e)))?;
        let status = response.status();
        if status == StatusCode::OK {
            return Ok(response);
        }
        let denied = response.headers().contains_key("x-wheelgate-denied");
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let reason = reason_of(response.into_body()).await;
        Err(match status {
            StatusCode::FORBIDDEN if denied => FetchError::Denied(reason),
            StatusCode::UNAUTHORIZED => FetchError::Unauthorized(reason),
            _ if status.is_redirection() => FetchError::Status {
                status,
                reason: format!(
                    "redirected to {} (is --url wheelgate's own address?)",
                    location.as_deref().unwrap_or("nowhere")
                ),
            },
            _ => FetchError::Status { status, reason },
        })
    }
}

fn cache_state(response: &http::Response<hyper::body::Incoming>) -> CacheState {
    match response
        .headers()
        .get("x-wheelgate-cache")
        .and_then(|v| v.to_str().ok())
    {
        Some("hit") => CacheState::Cached,
        _ => CacheState::Fetched,
    }
}

async fn next_chunk(
    body: &mut hyper::body::Incoming,
    url: &Url,
) -> Result<Option<Bytes>, FetchError> {
    loop {
        let frame = tokio::time::timeout(IDLE_TIMEOUT, body.frame())
            .await
            .map_err(|_| FetchError::Timeout {
                url: RedactedUrl::new(url),
            })?;
        match frame {
            None => return Ok(None),
            Some(Err(error)) => {
                return Err(FetchError::Transport {
                    url: RedactedUrl::new(url),
                    reason: format!(
                        "the transfer broke off: {} (wheelgate aborts a file whose bytes do not \
                         match its sha256; its log says why)",
                        hyper_error(&error)
                    ),
                })
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// The first line of an error body: wheelgate's errors are one line a person can act on.
async fn reason_of(mut body: hyper::body::Incoming) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_REASON_BYTES {
        match tokio::time::timeout(Duration::from_secs(10), body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let line: String = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no reason given)")
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect();
    line.trim().to_owned()
}

/// A hyper error with its causes, which say what actually went wrong (connection refused…).
fn hyper_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
