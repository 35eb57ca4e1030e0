//! The HTTP machinery behind [`Upstream`]: TLS, proxies, retries, redirects, timeouts and auth.
//!
//! hyper-util's legacy client pools connections and negotiates HTTP/2 by ALPN, but it neither
//! follows redirects nor retries, and it has no notion of "who may see our token". Those rules
//! are the point of this module, so they are written here, where they can be read and tested in
//! one place, rather than left to a higher-level client's defaults.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::{Body as _, Incoming};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rand::Rng as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
use tower_service::Service;
use url::Url;

use super::{
    AuthSettings, FileFetch, PageFetch, ProxyMode, RedactedUrl, TimeoutKind, UpstreamError,
    UpstreamSettings, Validators,
};
use crate::secret::SecretFile;

/// Redirect hops followed before giving up (browsers use 20, curl 50; an index needs one or two).
const MAX_REDIRECTS: usize = 10;
/// The first retry waits about this long; each further one doubles it.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// No backoff wait is longer than this.
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// A `Retry-After` longer than this is not waited for: a client of ours is waiting meanwhile, and
/// pip's own timeout is 15 s per read.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Pooled connections idle for longer than this are closed: below the 60 s keep-alive common on
/// load balancers, so that we usually close an idle connection before the far side does (a
/// request racing the far side's close is retried anyway).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type HttpClient = Client<HttpsConnector<ProxyConnector>, Empty<Bytes>>;

/// The client for one remote repository's upstream. Cloning is cheap: clones share the pool.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    repository: String,
    root: Url,
    client: HttpClient,
    first_byte_timeout: Duration,
    connect_timeout: Duration,
    idle_timeout: Duration,
    retries: u32,
    auth: Option<UpstreamAuth>,
    user_agent: HeaderValue,
}

/// The credentials and the hosts that may receive them.
struct UpstreamAuth {
    username: String,
    secret: SecretFile,
    hosts: Vec<AuthHost>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = &self.inner;
        let mut s = f.debug_struct("Upstream");
        s.field("repository", &inner.repository)
            .field("root", &RedactedUrl::new(&inner.root));
        if let Some(auth) = &inner.auth {
            s.field("username", &auth.username)
                .field("secret", &auth.secret)
                .field("auth_hosts", &auth.hosts);
        }
        s.field("retries", &inner.retries).finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the client, with proxies taken from the environment (see [`ProxyMode::FromEnv`]).
    /// Reads `ca_file` now, so that a bad one is reported at start-up; the secret file is only
    /// read when a request needs it.
    pub fn new(settings: UpstreamSettings) -> Result<Upstream, UpstreamError> {
        Upstream::with_proxy(settings, ProxyMode::FromEnv)
    }

    /// Builds the client with an explicit proxy configuration.
    pub fn with_proxy(
        settings: UpstreamSettings,
        proxy: ProxyMode,
    ) -> Result<Upstream, UpstreamError> {
        let repository = settings.repository.clone();
        check_root(&repository, &settings.url)?;
        let auth = settings
            .auth
            .as_ref()
            .map(|auth| build_auth(&repository, auth))
            .transpose()?;
        let tls = tls_config(&settings)?;

        let mut tcp = HttpConnector::new();
        // The TLS layer above receives https URIs and hands them down; the scheme is its business.
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(settings.connect_timeout));
        tcp.set_nodelay(true);
        let matcher = match proxy {
            ProxyMode::FromEnv => Matcher::from_env(),
            ProxyMode::Explicit(matcher) => matcher,
        };
        let connector = ProxyConnector {
            tcp,
            matcher: Arc::new(matcher),
        };
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(https);

        Ok(Upstream {
            inner: Arc::new(Inner {
                repository,
                root: settings.url,
                client,
                first_byte_timeout: settings.first_byte_timeout,
                connect_timeout: settings.connect_timeout,
                idle_timeout: settings.idle_timeout,
                retries: settings.retries,
                auth,
                user_agent: HeaderValue::from_static(concat!(
                    "wheelgate/",
                    env!("CARGO_PKG_VERSION")
                )),
            }),
        })
    }

    /// The upstream simple-index root.
    pub fn root(&self) -> &Url {
        &self.inner.root
    }

    /// GETs a page (the index or a project page), following redirects and retrying, and reads the
    /// whole body, refusing more than `limit` bytes. With `validators` the request is conditional
    /// and may come back as [`PageFetch::NotModified`].
    pub async fn fetch_page(
        &self,
        url: &Url,
        accept: &str,
        validators: Option<&Validators>,
        limit: usize,
    ) -> Result<PageFetch, UpstreamError> {
        let started = Instant::now();
        let mut headers = HeaderMap::new();
        let accept =
            HeaderValue::from_str(accept).map_err(|_| UpstreamError::InvalidRequestHeader {
                name: "Accept",
                url: RedactedUrl::new(url),
            })?;
        headers.insert(header::ACCEPT, accept);
        if let Some(validators) = validators {
            // Validators come from an earlier upstream response, where they were valid header
            // text; one that no longer parses only costs a full fetch, so it is dropped.
            if let Some(value) = validators
                .etag
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                headers.insert(header::IF_NONE_MATCH, value);
            }
            if let Some(value) = validators
                .last_modified
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                headers.insert(header::IF_MODIFIED_SINCE, value);
            }
        }
        let conditional = headers.contains_key(header::IF_NONE_MATCH)
            || headers.contains_key(header::IF_MODIFIED_SINCE);

        let (final_url, response) = self.get(url, headers, conditional).await?;
        let received = validators_of(response.headers());
        if response.status() == StatusCode::NOT_MODIFIED {
            let previous = validators.cloned().unwrap_or_default();
            return Ok(PageFetch::NotModified {
                final_url,
                validators: Validators {
                    etag: received.etag.or(previous.etag),
                    last_modified: received.last_modified.or(previous.last_modified),
                },
                elapsed: started.elapsed(),
            });
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_limited(
            response.into_body(),
            &final_url,
            limit,
            self.inner.idle_timeout,
        )
        .await?;
        Ok(PageFetch::Fresh {
            final_url,
            content_type,
            body,
            validators: received,
            elapsed: started.elapsed(),
        })
    }

    /// GETs a file for streaming to clients. Redirects are followed and failures retried until
    /// the response headers arrive, never after the body started (a client may already hold
    /// part of it). The body enforces the idle timeout between chunks.
    pub async fn fetch_file(&self, url: &Url) -> Result<FileFetch, UpstreamError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let (final_url, response) = self.get(url, headers, false).await?;
        let content_length = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = FileBody::new(
            response.into_body(),
            RedactedUrl::new(&final_url),
            self.inner.idle_timeout,
        );
        Ok(FileFetch {
            final_url,
            content_length,
            body,
        })
    }

    /// Sends a GET and follows redirects, returning the final URL and a response that is a
    /// success (200/203, or 304 when `conditional`); every other outcome becomes an error.
    async fn get(
        &self,
        start: &Url,
        mut headers: HeaderMap,
        conditional: bool,
    ) -> Result<(Url, Response<Incoming>), UpstreamError> {
        check_fetchable(start)?;
        // Bytes must arrive exactly as published (they are hashed), and we carry no decoder.
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        headers.insert(header::USER_AGENT, self.inner.user_agent.clone());

        let mut retry = RetryBudget {
            left: self.inner.retries,
            attempt: 0,
        };
        let mut url = start.clone();
        // Once a hop leaves the origin the chain started from, the rest of the chain is not ours.
        let mut origin_kept = true;
        let mut hops = 0usize;
        loop {
            let send_auth = origin_kept && self.may_receive_auth(&url);
            let response = self.send(&url, &headers, send_auth, &mut retry).await?;
            let status = response.status();
            if is_redirect(status) {
                if hops >= MAX_REDIRECTS {
                    return Err(UpstreamError::TooManyRedirects {
                        url: RedactedUrl::new(start),
                        limit: MAX_REDIRECTS,
                    });
                }
                hops += 1;
                let next = redirect_target(&url, response.headers())?;
                if next.origin() != start.origin() {
                    origin_kept = false;
                }
                tracing::debug!(
                    repository = %self.inner.repository,
                    from = %RedactedUrl::new(&url),
                    to = %RedactedUrl::new(&next),
                    "following upstream redirect"
                );
                url = next;
                continue;
            }
            return match status {
                StatusCode::OK | StatusCode::NON_AUTHORITATIVE_INFORMATION => Ok((url, response)),
                StatusCode::NOT_MODIFIED if conditional => Ok((url, response)),
                StatusCode::NOT_MODIFIED => Err(UpstreamError::Protocol {
                    url: RedactedUrl::new(&url),
                    reason: "304 Not Modified to a request that was not conditional".to_owned(),
                }),
                _ => Err(self.status_error(&url, status, send_auth)),
            };
        }
    }

    /// One request to one URL, retried on connection failures, first-byte timeouts, 429 and
    /// 502/503/504 while the budget lasts. Returns whatever response ended the retrying.
    async fn send(
        &self,
        url: &Url,
        headers: &HeaderMap,
        send_auth: bool,
        retry: &mut RetryBudget,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let inner = &self.inner;
        loop {
            let request = self.build_request(url, headers, send_auth)?;
            let may_retry = retry.left > 0 && is_idempotent(request.method());
            let failure =
                match tokio::time::timeout(inner.first_byte_timeout, inner.client.request(request))
                    .await
                {
                    Ok(Ok(response)) => {
                        let status = response.status();
                        if !may_retry || !retryable_status(status) {
                            return Ok(response);
                        }
                        let delay = match retry_after(status, response.headers(), SystemTime::now())
                        {
                            Some(wait) if wait > MAX_RETRY_AFTER => {
                                return Err(UpstreamError::RetryAfterTooLong {
                                    url: RedactedUrl::new(url),
                                    status,
                                    wait,
                                    max: MAX_RETRY_AFTER,
                                });
                            }
                            Some(wait) => wait,
                            None => backoff(retry.attempt),
                        };
                        (
                            UpstreamError::Status {
                                url: RedactedUrl::new(url),
                                status,
                            },
                            delay,
                        )
                    }
                    Ok(Err(error)) => {
                        // Any failure before response headers is retried, not only connect
                        // errors: a GET that died before its answer (a reset pooled
                        // connection) is safe to repeat.
                        let error = classify_client_error(&error, url, inner.connect_timeout);
                        if !may_retry {
                            return Err(error);
                        }
                        (error, backoff(retry.attempt))
                    }
                    Err(_elapsed) => {
                        let error = UpstreamError::Timeout {
                            kind: TimeoutKind::FirstByte,
                            url: RedactedUrl::new(url),
                            after: inner.first_byte_timeout,
                        };
                        if !may_retry {
                            return Err(error);
                        }
                        (error, backoff(retry.attempt))
                    }
                };
            let (error, delay) = failure;
            retry.left -= 1;
            retry.attempt += 1;
            tracing::warn!(
                repository = %inner.repository,
                attempt = retry.attempt,
                retries_left = retry.left,
                delay_ms = delay.as_millis() as u64,
                error = %error,
                "retrying upstream request"
            );
            tokio::time::sleep(delay).await;
        }
    }

    fn build_request(
        &self,
        url: &Url,
        headers: &HeaderMap,
        send_auth: bool,
    ) -> Result<Request<Empty<Bytes>>, UpstreamError> {
        let mut request = Request::new(Empty::new());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = request_uri(url)?;
        *request.headers_mut() = headers.clone();
        if send_auth {
            if let Some(value) = self.authorization(url)? {
                request.headers_mut().insert(header::AUTHORIZATION, value);
            }
        }
        Ok(request)
    }

    /// True when `url` may receive the credentials on its own merits: the upstream's own origin
    /// or an `auth_hosts` host. (Redirect history is the caller's business.)
    fn may_receive_auth(&self, url: &Url) -> bool {
        match &self.inner.auth {
            None => false,
            Some(auth) => {
                url.origin() == self.inner.root.origin()
                    || auth.hosts.iter().any(|h| h.matches(url))
            }
        }
    }

    /// The `Authorization` header, built from the secret file as it is now.
    fn authorization(&self, url: &Url) -> Result<Option<HeaderValue>, UpstreamError> {
        let Some(auth) = &self.inner.auth else {
            return Ok(None);
        };
        let secret = auth
            .secret
            .current()
            .map_err(|source| UpstreamError::Credentials {
                repository: self.inner.repository.clone(),
                source,
            })?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            auth.username,
            secret.expose()
        ));
        let mut value = HeaderValue::try_from(format!("Basic {encoded}")).map_err(|_| {
            UpstreamError::InvalidRequestHeader {
                name: "Authorization",
                url: RedactedUrl::new(url),
            }
        })?;
        // Keeps it out of hyper's Debug output and out of HTTP/2's HPACK dynamic table.
        value.set_sensitive(true);
        Ok(Some(value))
    }

    fn status_error(&self, url: &Url, status: StatusCode, sent_auth: bool) -> UpstreamError {
        let repository = self.inner.repository.clone();
        let url = RedactedUrl::new(url);
        match status {
            StatusCode::NOT_FOUND | StatusCode::GONE => UpstreamError::NotFound { url, status },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                if sent_auth {
                    UpstreamError::CredentialsRefused {
                        repository,
                        url,
                        status,
                    }
                } else if self.inner.auth.is_some() {
                    UpstreamError::CredentialsWithheld {
                        repository,
                        url,
                        status,
                    }
                } else {
                    UpstreamError::CredentialsMissing {
                        repository,
                        url,
                        status,
                    }
                }
            }
            _ => UpstreamError::Status { url, status },
        }
    }
}

/// Retries left for one fetch (all hops of a redirect chain share them) and how many were used,
/// which sets the backoff.
struct RetryBudget {
    left: u32,
    attempt: u32,
}

fn check_root(repository: &str, root: &Url) -> Result<(), UpstreamError> {
    let reason = if !matches!(root.scheme(), "http" | "https") {
        Some("is not an http or https URL")
    } else if root.host().is_none() {
        Some("has no host")
    } else if !root.path().ends_with('/') {
        Some("does not end with '/'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(UpstreamError::InvalidRoot {
            repository: repository.to_owned(),
            url: RedactedUrl::new(root),
            reason,
        }),
        None => Ok(()),
    }
}

fn check_fetchable(url: &Url) -> Result<(), UpstreamError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UpstreamError::UnsupportedUrl {
            url: RedactedUrl::new(url),
            reason: "only http and https URLs are fetched",
        });
    }
    if url.host().is_none() {
        return Err(UpstreamError::UnsupportedUrl {
            url: RedactedUrl::new(url),
            reason: "the URL has no host",
        });
    }
    Ok(())
}

/// The request target: userinfo and fragment are never sent (credentials go in a header we
/// control, fragments such as `#sha256=` are for the client).
fn request_uri(url: &Url) -> Result<Uri, UpstreamError> {
    let mut target = url.clone();
    let _ = target.set_username("");
    let _ = target.set_password(None);
    target.set_fragment(None);
    target
        .as_str()
        .parse::<Uri>()
        .map_err(|_| UpstreamError::UnsupportedUrl {
            url: RedactedUrl::new(url),
            reason: "it cannot be expressed as an HTTP request target",
        })
}

fn build_auth(repository: &str, settings: &AuthSettings) -> Result<UpstreamAuth, UpstreamError> {
    if settings.username.contains(':') {
        return Err(UpstreamError::InvalidUsername {
            repository: repository.to_owned(),
        });
    }
    let hosts = settings
        .auth_hosts
        .iter()
        .map(|entry| {
            AuthHost::parse(entry).map_err(|reason| UpstreamError::InvalidAuthHost {
                repository: repository.to_owned(),
                entry: entry.clone(),
                reason,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(UpstreamAuth {
        username: settings.username.clone(),
        secret: SecretFile::new(settings.password_file.clone()),
        hosts,
    })
}

/// An `auth_hosts` entry: a host, and a port when the entry named one (otherwise any port).
#[derive(Debug, Clone, PartialEq, Eq)]
struct AuthHost {
    host: url::Host<String>,
    port: Option<u16>,
}

impl AuthHost {
    fn parse(entry: &str) -> Result<AuthHost, &'static str> {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err("is empty");
        }
        if entry.contains("://") {
            return Err("has a scheme");
        }
        if entry.contains(['/', '@', '?', '#']) {
            return Err("is not a bare host (it has a path, userinfo, query or fragment)");
        }
        let (host, port) = if entry.starts_with('[') {
            // An IPv6 literal: "[::1]" or "[::1]:8443".
            let close = entry
                .find(']')
                .ok_or("has an unclosed '[' (IPv6 literal)")?;
            let (host, rest) = entry.split_at(close + 1);
            match rest.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if rest.is_empty() => (host, None),
                None => return Err("has text after the IPv6 literal"),
            }
        } else {
            match entry.split_once(':') {
                Some((_, port)) if port.contains(':') => {
                    return Err("has more than one ':' (write IPv6 literals in brackets)")
                }
                Some((host, port)) => (host, Some(port)),
                None => (entry, None),
            }
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| "has a port that is not a number from 0 to 65535")
            })
            .transpose()?;
        let host = url::Host::parse(host).map_err(|_| "is not a valid host name or IP address")?;
        Ok(AuthHost { host, port })
    }

    fn matches(&self, url: &Url) -> bool {
        let host_matches = url.host().map(|h| h.to_owned()).as_ref() == Some(&self.host);
        host_matches
            && self
                .port
                .is_none_or(|port| url.port_or_known_default() == Some(port))
    }
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

fn redirect_target(from: &Url, headers: &HeaderMap) -> Result<Url, UpstreamError> {
    let bad = |reason: String| UpstreamError::BadRedirect {
        url: RedactedUrl::new(from),
        reason,
    };
    let location = headers
        .get(header::LOCATION)
        .ok_or_else(|| bad("the redirect has no Location header".to_owned()))?
        .to_str()
        .map_err(|_| bad("the Location header is not ASCII text".to_owned()))?;
    let next = from
        .join(location.trim())
        .map_err(|e| bad(format!("the Location header is not a valid URL ({e})")))?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(bad(format!(
            "it points to a {}: URL; only http and https are followed",
            next.scheme()
        )));
    }
    Ok(next)
}

fn validators_of(headers: &HeaderMap) -> Validators {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    Validators {
        etag: text(header::ETAG),
        last_modified: text(header::LAST_MODIFIED),
    }
}

/// Only requests that can be repeated without side effects are retried. wheelgate only sends
/// GETs today; the check keeps the rule in force should another method ever be added.
fn is_idempotent(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD
}

fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// How long the upstream asked us to wait, for the statuses where `Retry-After` means that
/// (429 and 503). `None` when it gave no usable answer.
fn retry_after(status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if !matches!(status.as_u16(), 429 | 503) {
        return None;
    }
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // A number too large for u64 is certainly too long to wait.
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Exponential backoff with jitter: about 100 ms, 200 ms, 400 ms … capped at 5 s, each drawn
/// from the upper half of its step so that many proxies retrying at once spread out.
fn backoff(attempt: u32) -> Duration {
    let step = BACKOFF_START
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(BACKOFF_CAP);
    let half = step / 2;
    let jitter_ms = rand::thread_rng().gen_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter_ms)
}

/// An HTTP date in any of the three forms RFC 9110 §5.6.7 obliges recipients to accept.
fn parse_http_date(text: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let (year, month, day, time) = match parts.as_slice() {
        // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
        [weekday, day, month, year, time, "GMT"] if weekday.ends_with(',') => (
            year.parse::<i64>().ok()?,
            month_number(month)?,
            day.parse::<u32>().ok()?,
            *time,
        ),
        // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
        [weekday, date, time, "GMT"] if weekday.ends_with(',') => {
            let mut fields = date.split('-');
            let (day, month, year) = (fields.next()?, fields.next()?, fields.next()?);
            if fields.next().is_some() || year.len() != 2 {
                return None;
            }
            let year = year.parse::<i64>().ok()?;
            // RFC 9110: a two-digit year that looks more than 50 years ahead is in the past.
            let year = if year < 70 { 2000 + year } else { 1900 + year };
            (year, month_number(month)?, day.parse::<u32>().ok()?, *time)
        }
        // asctime: Sun Nov  6 08:49:37 1994
        [_weekday, month, day, time, year] => (
            year.parse::<i64>().ok()?,
            month_number(month)?,
            day.parse::<u32>().ok()?,
            *time,
        ),
        _ => return None,
    };
    let mut clock = time.split(':');
    let hour = clock.next()?.parse::<u64>().ok()?;
    let minute = clock.next()?.parse::<u64>().ok()?;
    let second = clock.next()?.parse::<u64>().ok()?;
    if clock.next().is_some()
        || hour > 23
        || minute > 59
        || second > 60
        || !(1..=31).contains(&day)
        || year < 1970
    {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

fn month_number(name: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    MONTHS.iter().position(|m| *m == name).map(|i| i as u32 + 1)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Turns a hyper client error into ours. A connect timeout surfaces as an `io::ErrorKind::TimedOut`
/// somewhere in the source chain (also when it happened on the way to a proxy).
fn classify_client_error(
    error: &(dyn std::error::Error + 'static),
    url: &Url,
    connect_timeout: Duration,
) -> UpstreamError {
    let url = RedactedUrl::new(url);
    let mut timed_out = false;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            timed_out = true;
        }
        current = e.source();
    }
    if timed_out {
        return UpstreamError::Timeout {
            kind: TimeoutKind::Connect,
            url,
            after: connect_timeout,
        };
    }
    let reason = error_chain(error);
    let is_connect = error
        .downcast_ref::<hyper_util::client::legacy::Error>()
        .is_some_and(hyper_util::client::legacy::Error::is_connect);
    if is_connect {
        UpstreamError::Connect { url, reason }
    } else {
        UpstreamError::Protocol { url, reason }
    }
}

/// "outer: inner: innermost", skipping links that repeat their parent's text.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// Reads a whole page, failing as soon as it exceeds `limit` or the upstream falls silent for
/// longer than `idle`.
async fn read_limited(
    mut body: Incoming,
    url: &Url,
    limit: usize,
    idle: Duration,
) -> Result<Bytes, UpstreamError> {
    let too_large = || UpstreamError::PageTooLarge {
        url: RedactedUrl::new(url),
        limit,
    };
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large());
    }
    let mut page = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_elapsed) => {
                return Err(UpstreamError::Timeout {
                    kind: TimeoutKind::Idle,
                    url: RedactedUrl::new(url),
                    after: idle,
                })
            }
            Ok(None) => return Ok(page.freeze()),
            Ok(Some(Err(e))) => {
                return Err(UpstreamError::Protocol {
                    url: RedactedUrl::new(url),
                    reason: error_chain(&e),
                })
            }
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers carry nothing a page needs.
        if let Ok(data) = frame.into_data() {
            if page.len().saturating_add(data.len()) > limit {
                return Err(too_large());
            }
            page.extend_from_slice(&data);
        }
    }
}

/// The body of a file on its way from the upstream, as a stream of chunks.
///
/// The idle timeout measures how long *we* wait for the upstream: the clock starts when a poll
/// finds no data, not when the last chunk was handed out, so a slow client that leaves the
/// stream unpolled does not make the upstream look idle.
pub struct FileBody {
    body: Incoming,
    url: RedactedUrl,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    waiting: bool,
    done: bool,
}

impl std::fmt::Debug for FileBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBody")
            .field("url", &self.url)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl FileBody {
    fn new(body: Incoming, url: RedactedUrl, idle: Duration) -> FileBody {
        FileBody {
            body,
            url,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
            done: false,
        }
    }
}

impl Stream for FileBody {
    type Item = Result<Bytes, UpstreamError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.waiting = false;
                    match frame.into_data() {
                        Ok(data) if !data.is_empty() => return Poll::Ready(Some(Ok(data))),
                        // Empty data frames and trailers: keep reading.
                        _ => continue,
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(UpstreamError::Protocol {
                        url: this.url.clone(),
                        reason: error_chain(&e),
                    })));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if !this.waiting {
                        this.waiting = true;
                        this.deadline
                            .as_mut()
                            .reset(tokio::time::Instant::now() + this.idle);
                    }
                    if this.deadline.as_mut().poll(cx).is_ready() {
                        this.done = true;
                        return Poll::Ready(Some(Err(UpstreamError::Timeout {
                            kind: TimeoutKind::Idle,
                            url: this.url.clone(),
                            after: this.idle,
                        })));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// The TLS configuration: the ring provider passed explicitly (a process-wide default provider
/// may be absent or be another one), Mozilla's roots or the system's, plus `ca_file`.
fn tls_config(settings: &UpstreamSettings) -> Result<rustls::ClientConfig, UpstreamError> {
    let repository = &settings.repository;
    let mut roots = rustls::RootCertStore::empty();
    if settings.native_roots {
        let loaded = rustls_native_certs::load_native_certs();
        for error in &loaded.errors {
            tracing::warn!(
                repository = %repository,
                error = %error,
                "could not load some system root certificates"
            );
        }
        let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
        if added == 0 {
            let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
            return Err(UpstreamError::NativeRoots {
                repository: repository.clone(),
                reason: format!(
                    "{ignored} unusable certificates; {}",
                    if errors.is_empty() {
                        "no errors reported".to_owned()
                    } else {
                        errors.join("; ")
                    }
                ),
            });
        }
    } else {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = &settings.ca_file {
        let contents_error = |reason: String| UpstreamError::CaFileContents {
            repository: repository.clone(),
            path: path.clone(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|source| UpstreamError::CaFile {
            repository: repository.clone(),
            path: path.clone(),
            source,
        })?;
        let mut count = 0usize;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| contents_error(format!("invalid PEM: {e}")))?;
            roots.add(cert).map_err(|e| {
                contents_error(format!(
                    "certificate {} is not a usable root: {e}",
                    count + 1
                ))
            })?;
            count += 1;
        }
        if count == 0 {
            return Err(contents_error("no certificate found".to_owned()));
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| UpstreamError::Tls {
        repository: repository.clone(),
        reason: e.to_string(),
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(config)
}

/// The transport below TLS: a direct TCP connection, or a tunnel through an HTTP proxy when the
/// proxy matcher (environment or explicit) says so for the destination.
///
/// Every proxied connection is an HTTP `CONNECT` tunnel, for `http://` upstreams too (not the
/// absolute-form requests some clients send to HTTP proxies): one code path, the proxy never
/// sees request headers such as `Authorization`, and the TLS layer above runs end to end through
/// the tunnel for `https://` upstreams. Only `http://` proxy URLs are supported; credentials in
/// the proxy URL's userinfo become `Proxy-Authorization: Basic`.
#[derive(Clone)]
struct ProxyConnector {
    tcp: HttpConnector,
    matcher: Arc<Matcher>,
}

/// Why a connection through the proxy layer failed. Proxy URLs are shown without userinfo (the
/// matcher strips it when it parses them).
#[derive(Debug, thiserror::Error)]
enum ProxyConnectError {
    #[error(
        "proxy {proxy} uses the {scheme}: scheme, which wheelgate does not support; use an http:// \
         proxy URL"
    )]
    UnsupportedProxy { proxy: String, scheme: String },
    #[error("destination {0} has no host")]
    NoHost(String),
    #[error("through proxy {proxy}: {source}")]
    Tunnel {
        proxy: String,
        // hyper-util does not export its tunnel error type.
        source: BoxError,
    },
}

impl Service<Uri> for ProxyConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let mut tcp = self.tcp.clone();
        let Some(intercept) = self.matcher.intercept(&dst) else {
            return Box::pin(async move { tcp.call(dst).await.map_err(Into::into) });
        };
        let proxy_uri = intercept.uri().clone();
        let proxy = proxy_uri.to_string();
        let auth = intercept.basic_auth().cloned();
        Box::pin(async move {
            let scheme = proxy_uri.scheme_str().unwrap_or("http");
            if scheme != "http" {
                return Err(ProxyConnectError::UnsupportedProxy {
                    proxy,
                    scheme: scheme.to_owned(),
                }
                .into());
            }
            let target = with_explicit_port(&dst)
                .ok_or_else(|| ProxyConnectError::NoHost(dst.to_string()))?;
            let mut tunnel = Tunnel::new(proxy_uri, tcp);
            if let Some(auth) = auth {
                tunnel = tunnel.with_auth(auth);
            }
            tunnel.call(target).await.map_err(|source| {
                ProxyConnectError::Tunnel {
                    proxy,
                    source: Box::new(source),
                }
                .into()
            })
        })
    }
}

/// `dst` with its port spelled out: hyper-util's tunnel assumes 443 when the URI has none, which
/// is wrong for `http://` destinations.
fn with_explicit_port(dst: &Uri) -> Option<Uri> {
    let host = dst.host()?;
    let port = dst
        .port_u16()
        .unwrap_or(if dst.scheme_str() == Some("http") {
            80
        } else {
            443
        });
    let authority = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Uri::builder()
        .scheme(dst.scheme_str().unwrap_or("https"))
        .authority(authority)
        .path_and_query("/")
        .build()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, OnceLock};

    use futures_util::StreamExt as _;
    use http_body_util::combinators::BoxBody;
    use http_body_util::{Full, StreamBody};
    use hyper::body::Frame;
    use hyper::service::service_fn;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    /// A self-signed root, only ever parsed (no handshake uses it).
    const TEST_ROOT_PEM: &str = concat!(
        "-----BEGIN CERTIFICATE-----\n",
        "MIIBkzCCATmgAwIBAgIUbrJfLlwCRaeWML9FCfRVfrbxs54wCgYIKoZIzj0EAwIw\n",
        "HjEcMBoGA1UEAwwTd2hlZWxnYXRlIHRlc3Qgcm9vdDAgFw0yNjExMjUwNzA0NDBa\n",
        "GA8yMTI2MTEwMTA3MDQ0MFowHjEcMBoGA1UEAwwTd2hlZWxnYXRlIHRlc3Qgcm9v\n",
        "dDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABNd2jh+5dPo/QJJtsqa3KF6r9xmC\n",
        "+nGoPA0/DdONG48B1N/zM269DZ7FsoPlMm4EKtEknxYJDy9O01mATCB2QNmjUzBR\n",
        "MB0GA1UdDgQWBBTtq1I7Vsywi4Ug7DbXG5yAhrIWSzAfBgNVHSMEGDAWgBTtq1I7\n",
        "Vsywi4Ug7DbXG5yAhrIWSzAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gA\n",
        "MEUCIQDnCO+4n83/YRavbx2adep009Fk9LGrfYceBASgxwkdHgIgN7oCbY/NxtrO\n",
        "4kqPcMrKJAt5YNnDGVPcn4ZxTv2XazU=\n",
        "-----END CERTIFICATE-----\n",
    );

    type TestBody = BoxBody<Bytes, Infallible>;

    /// One request as the test server saw it.
    #[derive(Clone, Debug)]
    struct Seen {
        path: String,
        headers: HeaderMap,
    }

    impl Seen {
        fn header(&self, name: header::HeaderName) -> Option<String> {
            self.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        }
        fn authorization(&self) -> Option<String> {
            self.header(header::AUTHORIZATION)
        }
    }

    struct TestServer {
        addr: SocketAddr,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl TestServer {
        fn url(&self, path: &str) -> Url {
            Url::parse(&format!("http://{}{}", self.addr, path)).unwrap()
        }
        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    /// A hyper HTTP/1 server on 127.0.0.1:0. The handler gets each request and its index among
    /// all requests the server received.
    async fn serve<F, Fut>(handler: F) -> TestServer
    where
        F: Fn(Seen, usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = Arc::clone(&handler);
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let entry = Seen {
                            path: request
                                .uri()
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default(),
                            headers: request.headers().clone(),
                        };
                        let index = {
                            let mut all = record.lock().unwrap();
                            all.push(entry.clone());
                            all.len() - 1
                        };
                        let response = handler(entry, index);
                        async move { Ok::<_, Infallible>(response.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestServer { addr, seen }
    }

    fn text(status: u16, body: &'static str) -> Response<TestBody> {
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(body.as_bytes())).boxed())
            .unwrap()
    }

    fn redirect(status: u16, location: &str) -> Response<TestBody> {
        Response::builder()
            .status(status)
            .header(header::LOCATION, location)
            .body(Full::new(Bytes::new()).boxed())
            .unwrap()
    }

    /// A chunked body: `first`, then silence for `pause`, then `rest`.
    fn stalling(first: &'static str, pause: Duration, rest: &'static str) -> Response<TestBody> {
        let head = futures_util::stream::once(async move {
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(first.as_bytes())))
        });
        let tail = futures_util::stream::once(async move {
            tokio::time::sleep(pause).await;
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(rest.as_bytes())))
        });
        Response::new(http_body_util::BodyExt::boxed(StreamBody::new(
            head.chain(tail),
        )))
    }

    fn settings(root: &Url) -> UpstreamSettings {
        UpstreamSettings {
            repository: "pypi".to_owned(),
            url: root.clone(),
            connect_timeout: Duration::from_secs(2),
            first_byte_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            retries: 0,
            ca_file: None,
            native_roots: false,
            auth: None,
        }
    }

    fn with_auth(
        mut settings: UpstreamSettings,
        password_file: &Path,
        auth_hosts: Vec<String>,
    ) -> UpstreamSettings {
        settings.auth = Some(AuthSettings {
            username: "__token__".to_owned(),
            password_file: password_file.to_path_buf(),
            auth_hosts,
        });
        settings
    }

    /// Never the process environment: a developer's HTTP_PROXY must not change test outcomes.
    fn direct() -> ProxyMode {
        ProxyMode::Explicit(Matcher::builder().build())
    }

    fn upstream(settings: UpstreamSettings) -> Upstream {
        Upstream::with_proxy(settings, direct()).unwrap()
    }

    fn basic(token: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("__token__:{token}"))
        )
    }

    fn token_file(dir: &Path, token: &str) -> PathBuf {
        let path = dir.join("token");
        std::fs::write(&path, format!("{token}\n")).unwrap();
        path
    }

    async fn page(up: &Upstream, url: &Url) -> Result<PageFetch, UpstreamError> {
        up.fetch_page(
            url,
            "application/vnd.pypi.simple.v1+json, text/html;q=0.1",
            None,
            1 << 20,
        )
        .await
    }

    async fn drain(mut body: FileBody) -> Result<Vec<u8>, UpstreamError> {
        let mut all = Vec::new();
        while let Some(chunk) = body.next().await {
            all.extend_from_slice(&chunk?);
        }
        Ok(all)
    }

    // ----- auth -----

    #[tokio::test]
    async fn auth_and_request_headers_go_to_the_upstream_origin() {
        let index = serve(|_, _| async { text(200, "page") }).await;
        let dir = tempfile::tempdir().unwrap();
        let up = upstream(with_auth(
            settings(&index.url("/simple/")),
            &token_file(dir.path(), "tok-1"),
            vec![],
        ));
        let fetched = page(&up, &index.url("/simple/a/")).await.unwrap();
        assert!(matches!(fetched, PageFetch::Fresh { ref body, .. } if body.as_ref() == b"page"));
        let seen = index.seen();
        assert_eq!(seen[0].authorization(), Some(basic("tok-1")));
        assert_eq!(
            seen[0].header(header::ACCEPT).as_deref(),
            Some("application/vnd.pypi.simple.v1+json, text/html;q=0.1")
        );
        assert_eq!(
            seen[0].header(header::ACCEPT_ENCODING).as_deref(),
            Some("identity")
        );
        assert!(seen[0]
            .header(header::USER_AGENT)
            .is_some_and(|ua| ua.starts_with("wheelgate/")));
    }

    #[tokio::test]
    async fn auth_is_not_sent_to_another_origin() {
        let index = serve(|_, _| async { text(200, "page") }).await;
        let files = serve(|_, _| async { text(200, "wheel bytes") }).await;
        let dir = tempfile::tempdir().unwrap();
        let up = upstream(with_auth(
            settings(&index.url("/simple/")),
            &token_file(dir.path(), "tok-1"),
            vec![],
        ));
        let fetch = up
            .fetch_file(&files.url("/f/x-1.0-py3-none-any.whl"))
            .await
            .unwrap();
        assert_eq!(fetch.content_length, Some(11));
        assert_eq!(drain(fetch.body).await.unwrap(), b"wheel bytes");
        assert_eq!(files.seen()[0].authorization(), None);
        // Same host, other port: another origin too.
        assert_eq!(index.addr.ip(), files.addr.ip());
    }

    #[tokio::test]
    async fn auth_is_sent_to_auth_hosts() {
        let index = serve(|_, _| async { text(200, "page") }).await;
        let files = serve(|_, _| async { text(200, "wheel") }).await;
        let elsewhere = serve(|_, _| async { text(200, "wheel") }).await;
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec![format!("127.0.0.1:{}", files.addr.port())];
        let up = upstream(with_auth(
            settings(&index.url("/simple/")),
            &token_file(dir.path(), "tok-1"),
            hosts,
        ));
        drain(up.fetch_file(&files.url("/f")).await.unwrap().body)
            .await
            .unwrap();
        drain(up.fetch_file(&elsewhere.url("/f")).await.unwrap().body)
            .await
            .unwrap();
        assert_eq!(files.seen()[0].authorization(), Some(basic("tok-1")));
        assert_eq!(
            elsewhere.seen()[0].authorization(),
            None,
            "the entry named a port"
        );
    }

    #[tokio::test]
    async fn auth_is_dropped_for_the_rest_of_a_chain_that_left_the_origin() {
        let back = Arc::new(OnceLock::<String>::new());
        let back_for_files = Arc::clone(&back);
        let files = serve(move |_, _| {
            let location = back_for_files.get().cloned().unwrap_or_default();
            async move { redirect(302, &location) }
        })
        .await;
        let to_files = files.url("/hop").to_string();
        let index = serve(move |seen, _| {
            let response = if seen.path == "/start" {
                redirect(302, &to_files)
            } else {
                text(200, "done")
            };
            async move { response }
        })
        .await;
        back.set(index.url("/end").to_string()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // The files host may receive credentials on its own, and the chain returns to the
        // upstream's origin: neither may carry them once the chain left the origin it began at.
        let hosts = vec![format!("127.0.0.1:{}", files.addr.port())];
        let up = upstream(with_auth(
            settings(&index.url("/simple/")),
            &token_file(dir.path(), "tok-1"),
            hosts,
        ));
        let fetch = up.fetch_file(&index.url("/start")).await.unwrap();
        assert_eq!(fetch.final_url, index.url("/end"));
        let index_seen = index.seen();
        assert_eq!(index_seen[0].authorization(), Some(basic("tok-1")));
        assert_eq!(index_seen[1].path, "/end");
        assert_eq!(index_seen[1].authorization(), None);
        assert_eq!(files.seen()[0].authorization(), None);
    }

    // ----- redirects -----

    #[tokio::test]
    async fn redirects_are_followed_relative_to_the_current_url() {
        let index = serve(|seen, _| async move {
            match seen.path.as_str() {
                "/a/r1" => redirect(301, "r2"),
                "/a/r2" => redirect(307, "/final"),
                _ => text(200, "final page"),
            }
        })
        .await;
        let up = upstream(settings(&index.url("/simple/")));
        match page(&up, &index.url("/a/r1")).await.unwrap() {
            PageFetch::Fresh {
                final_url, body, ..
            } => {
                assert_eq!(final_url, index.url("/final"));
                assert_eq!(body.as_ref(), b"final page");
            }
            other => panic!("expected a fresh page, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn redirect_loops_are_bounded() {
        let index = serve(|_, _| async { redirect(302, "/loop?token=abc") }).await;
        let up = upstream(settings(&index.url("/simple/")));
        let err = page(&up, &index.url("/loop")).await.unwrap_err();
        assert!(
            matches!(
                err,
                UpstreamError::TooManyRedirects {
                    limit: MAX_REDIRECTS,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        assert!(
            err.to_string().contains(&index.url("/loop").to_string()),
            "{err}"
        );
        assert_eq!(index.seen().len(), MAX_REDIRECTS + 1);
    }

    #[tokio::test]
    async fn redirects_to_other_schemes_are_refused() {
        let index = serve(|_, _| async { redirect(302, "ftp://files.example.invalid/x") }).await;
        let up = upstream(settings(&index.url("/simple/")));
        let err = page(&up, &index.url("/simple/x/")).await.unwrap_err();
        assert!(matches!(err, UpstreamError::BadRedirect { .. }), "{err:?}");
        assert!(err.to_string().contains("ftp"), "{err}");
    }

    // ----- retries -----

    #[tokio::test]
    async fn retry_after_is_honoured_for_429() {
        let index = serve(|_, n| async move {
            if n == 0 {
                Response::builder()
                    .status(429)
                    .header(header::RETRY_AFTER, "1")
                    .body(Full::new(Bytes::new()).boxed())
                    .unwrap()
            } else {
                text(200, "ok")
            }
        })
        .await;
        let mut s = settings(&index.url("/simple/"));
        s.retries = 1;
        let up = upstream(s);
        let started = Instant::now();
        page(&up, &index.url("/simple/")).await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(950),
            "waited only {:?}",
            started.elapsed()
        );
        assert_eq!(index.seen().len(), 2);
    }

    #[tokio::test]
    async fn a_long_retry_after_is_not_waited_for() {
        let index = serve(|_, _| async {
            Response::builder()
                .status(503)
                .header(header::RETRY_AFTER, "120")
                .body(Full::new(Bytes::new()).boxed())
                .unwrap()
        })
        .await;
        let mut s = settings(&index.url("/simple/"));
        s.retries = 3;
        let up = upstream(s);
        let err = page(&up, &index.url("/simple/")).await.unwrap_err();
        assert!(
            matches!(err, UpstreamError::RetryAfterTooLong { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("120"), "{err}");
        assert_eq!(index.seen().len(), 1);
    }

    async fn flaky_server() -> TestServer {
        serve(|_, n| async move {
            if n < 2 {
                text(503, "busy")
            } else {
                text(200, "ok")
            }
        })
        .await
    }

    #[tokio::test]
    async fn server_errors_are_retried_within_the_budget() {
        let index = flaky_server().await;
        let mut s = settings(&index.url("/simple/"));
        s.retries = 3;
        let up = upstream(s);
        page(&up, &index.url("/simple/")).await.unwrap();
        assert_eq!(index.seen().len(), 3);
    }

    #[tokio::test]
    async fn without_retries_a_server_error_is_a_502() {
        let index = flaky_server().await;
        let up = upstream(settings(&index.url("/simple/")));
        let err = page(&up, &index.url("/simple/x/")).await.unwrap_err();
        assert!(
            matches!(
                err,
                UpstreamError::Status {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        assert!(
            err.to_string().contains("503") && err.to_string().contains("/simple/x/"),
            "{err}"
        );
        assert_eq!(index.seen().len(), 1);
    }

    #[tokio::test]
    async fn connection_refused_is_a_502_after_retries() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let root = Url::parse(&format!("http://{addr}/simple/")).unwrap();
        let mut s = settings(&root);
        s.retries = 1;
        let err = page(&upstream(s), &root).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Connect { .. }), "{err:?}");
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    }

    // ----- statuses -----

    #[tokio::test]
    async fn not_found_and_gone_are_not_found() {
        let index = serve(|seen, _| async move {
            if seen.path == "/gone/" {
                text(410, "")
            } else {
                text(404, "")
            }
        })
        .await;
        let up = upstream(settings(&index.url("/simple/")));
        for path in ["/simple/nope/", "/gone/"] {
            let err = page(&up, &index.url(path)).await.unwrap_err();
            assert!(err.is_not_found(), "{err:?}");
            assert_eq!(err.status(), StatusCode::NOT_FOUND);
        }
    }

    #[tokio::test]
    async fn refused_credentials_are_reported_without_the_secret() {
        let index = serve(|_, _| async { text(401, "bad token") }).await;
        let dir = tempfile::tempdir().unwrap();
        let up = upstream(with_auth(
            settings(&index.url("/simple/")),
            &token_file(dir.path(), "sekrit-tok"),
            vec![],
        ));
        let err = page(&up, &index.url("/simple/")).await.unwrap_err();
        assert!(
            matches!(err, UpstreamError::CredentialsRefused { .. }),
            "{err:?}"
        );
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        let message = err.to_string();
        assert!(
            message.contains("refused the credentials for repository pypi"),
            "{message}"
        );
        for shown in [message, format!("{err:?}")] {
            assert!(
                !shown.contains("sekrit") && !shown.contains(&basic("sekrit-tok")),
                "{shown}"
            );
        }
    }

    #[tokio::test]
    async fn a_demand_for_credentials_without_any_says_so() {
        let index = serve(|_, _| async { text(403, "") }).await;
        let up = upstream(settings(&index.url("/simple/")));
        let err = page(&up, &index.url("/simple/")).await.unwrap_err();
        assert!(
            matches!(err, UpstreamError::CredentialsMissing { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("demands credentials"), "{err}");
    }

    #[tokio::test]
    async fn conditional_requests_come_back_not_modified() {
        let index = serve(|seen, _| async move {
            if seen.header(header::IF_NONE_MATCH).as_deref() == Some("\"v1\"") {
                Response::builder()
                    .status(304)
                    .header(header::ETAG, "\"v1\"")
                    .body(Full::new(Bytes::new()).boxed())
                    .unwrap()
            } else {
                text(200, "page")
            }
        })
        .await;
        let up = upstream(settings(&index.url("/simple/")));
        let ours = Validators {
            etag: Some("\"v1\"".to_owned()),
            last_modified: Some("Sun, 06 Nov 1994 08:49:37 GMT".to_owned()),
        };
        let fetched = up
            .fetch_page(&index.url("/simple/a/"), "text/html", Some(&ours), 1024)
            .await
            .unwrap();
        match fetched {
            PageFetch::NotModified {
                validators,
                final_url,
                ..
            } => {
                assert_eq!(validators, ours);
                assert_eq!(final_url, index.url("/simple/a/"));
            }
            other => panic!("expected 304, got {other:?}"),
        }
        let seen = index.seen();
        assert_eq!(
            seen[0].header(header::IF_MODIFIED_SINCE).as_deref(),
            Some("Sun, 06 Nov 1994 08:49:37 GMT")
        );
    }

    // ----- timeouts and limits -----

    #[tokio::test]
    async fn first_byte_timeout_is_a_504() {
        let index = serve(|_, _| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            text(200, "late")
        })
        .await;
        let mut s = settings(&index.url("/simple/"));
        s.first_byte_timeout = Duration::from_millis(200);
        let err = page(&upstream(s), &index.url("/simple/"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                UpstreamError::Timeout {
                    kind: TimeoutKind::FirstByte,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(err.to_string().contains("first_byte_timeout"), "{err}");
    }

    #[tokio::test]
    async fn first_byte_timeouts_are_retried() {
        let index = serve(|_, n| async move {
            if n == 0 {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            text(200, "ok")
        })
        .await;
        let mut s = settings(&index.url("/simple/"));
        s.first_byte_timeout = Duration::from_millis(200);
        s.retries = 1;
        page(&upstream(s), &index.url("/simple/")).await.unwrap();
    }

    #[tokio::test]
    async fn idle_timeout_mid_file_ends_the_stream_with_an_error() {
        let index =
            serve(|_, _| async { stalling("first", Duration::from_secs(3), "second") }).await;
        let mut s = settings(&index.url("/simple/"));
        s.idle_timeout = Duration::from_millis(200);
        let fetch = upstream(s).fetch_file(&index.url("/f.whl")).await.unwrap();
        let mut body = fetch.body;
        assert_eq!(body.next().await.unwrap().unwrap().as_ref(), b"first");
        let err = body.next().await.unwrap().unwrap_err();
        assert!(
            matches!(
                err,
                UpstreamError::Timeout {
                    kind: TimeoutKind::Idle,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(
            body.next().await.is_none(),
            "the stream ends after the error"
        );
    }

    #[tokio::test]
    async fn a_slow_reader_does_not_trip_the_idle_timeout() {
        let index =
            serve(|_, _| async { stalling("first", Duration::from_millis(50), "second") }).await;
        let mut s = settings(&index.url("/simple/"));
        s.idle_timeout = Duration::from_millis(300);
        let mut body = upstream(s)
            .fetch_file(&index.url("/f.whl"))
            .await
            .unwrap()
            .body;
        assert_eq!(body.next().await.unwrap().unwrap().as_ref(), b"first");
        // The consumer dawdles for longer than the idle timeout; the upstream was not idle.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(body.next().await.unwrap().unwrap().as_ref(), b"second");
    }

    #[tokio::test]
    async fn idle_timeout_mid_page_is_a_504() {
        let index =
            serve(|_, _| async { stalling("<html>", Duration::from_secs(3), "</html>") }).await;
        let mut s = settings(&index.url("/simple/"));
        s.idle_timeout = Duration::from_millis(200);
        let err = page(&upstream(s), &index.url("/simple/"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                UpstreamError::Timeout {
                    kind: TimeoutKind::Idle,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn pages_over_the_limit_are_refused() {
        let index = serve(|seen, _| async move {
            if seen.path == "/declared/" {
                text(200, "0123456789abcdefghij")
            } else {
                stalling("0123456789", Duration::from_millis(10), "abcdefghij")
            }
        })
        .await;
        let up = upstream(settings(&index.url("/simple/")));
        for path in ["/declared/", "/chunked/"] {
            let err = up
                .fetch_page(&index.url(path), "text/html", None, 15)
                .await
                .unwrap_err();
            assert!(
                matches!(err, UpstreamError::PageTooLarge { limit: 15, .. }),
                "{path}: {err:?}"
            );
            assert!(err.to_string().contains("larger than 15 bytes"), "{err}");
            let fits = up
                .fetch_page(&index.url(path), "text/html", None, 20)
                .await
                .unwrap();
            assert!(
                matches!(fits, PageFetch::Fresh { ref body, .. } if body.len() == 20),
                "{path}"
            );
        }
    }

    // ----- the secret -----

    #[tokio::test]
    async fn a_rewritten_secret_is_used_on_the_next_request() {
        let index = serve(|_, _| async { text(200, "page") }).await;
        let dir = tempfile::tempdir().unwrap();
        let path = token_file(dir.path(), "tok-a");
        let up = upstream(with_auth(settings(&index.url("/simple/")), &path, vec![]));
        page(&up, &index.url("/simple/")).await.unwrap();
        std::fs::write(&path, "tok-bb\n").unwrap();
        page(&up, &index.url("/simple/")).await.unwrap();
        let seen = index.seen();
        assert_eq!(seen[0].authorization(), Some(basic("tok-a")));
        assert_eq!(seen[1].authorization(), Some(basic("tok-bb")));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_kubernetes_symlink_swap_is_used_on_the_next_request() {
        use std::os::unix::fs::symlink;
        let index = serve(|_, _| async { text(200, "page") }).await;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("..2026_a")).unwrap();
        std::fs::write(root.join("..2026_a/token"), "tok-a").unwrap();
        symlink("..2026_a", root.join("..data")).unwrap();
        symlink("..data/token", root.join("token")).unwrap();
        let up = upstream(with_auth(
            settings(&index.url("/simple/")),
            &root.join("token"),
            vec![],
        ));
        page(&up, &index.url("/simple/")).await.unwrap();

        std::fs::create_dir(root.join("..2026_b")).unwrap();
        std::fs::write(root.join("..2026_b/token"), "tok-b").unwrap();
        symlink("..2026_b", root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        page(&up, &index.url("/simple/")).await.unwrap();

        let seen = index.seen();
        assert_eq!(seen[0].authorization(), Some(basic("tok-a")));
        assert_eq!(seen[1].authorization(), Some(basic("tok-b")));
    }

    #[tokio::test]
    async fn a_missing_secret_is_a_502_naming_the_file() {
        let index = serve(|_, _| async { text(200, "page") }).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-mounted");
        let up = upstream(with_auth(settings(&index.url("/simple/")), &path, vec![]));
        let err = page(&up, &index.url("/simple/")).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        let message = err.to_string();
        assert!(
            message.starts_with("cannot read the upstream credentials for repository pypi from "),
            "{message}"
        );
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(
            message.ends_with("mount the secret or fix password_file"),
            "{message}"
        );
        assert!(
            index.seen().is_empty(),
            "no request goes out without its credentials"
        );
    }

    #[tokio::test]
    async fn debug_output_never_shows_the_secret() {
        let index = serve(|seen, _| async move {
            if seen.path == "/deny" {
                text(401, "")
            } else {
                text(200, "page")
            }
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let s = with_auth(
            settings(&index.url("/simple/")),
            &token_file(dir.path(), "zz-secret-zz"),
            vec![],
        );
        let up = upstream(s.clone());
        let fetched = page(&up, &index.url("/simple/")).await.unwrap();
        let file = up.fetch_file(&index.url("/f")).await.unwrap();
        let err = page(&up, &index.url("/deny")).await.unwrap_err();
        let encoded = basic("zz-secret-zz");
        for shown in [
            format!("{up:?}"),
            format!("{s:?}"),
            format!("{fetched:?}"),
            format!("{file:?}"),
            format!("{err:?}"),
            err.to_string(),
        ] {
            assert!(
                !shown.contains("zz-secret-zz") && !shown.contains(&encoded),
                "leaked in {shown}"
            );
        }
        assert!(
            format!("{up:?}").contains("token"),
            "the Debug output names the secret file"
        );
    }

    // ----- proxies -----

    /// A CONNECT proxy: records each request head, answers 200 and splices the bytes.
    async fn connect_proxy() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&heads);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        let mut byte = [0u8; 1];
                        if client.read_exact(&mut byte).await.is_err() {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    record.lock().unwrap().push(head.clone());
                    let target = head
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_owned();
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                        return;
                    };
                    let _ = client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        (addr, heads)
    }

    #[tokio::test]
    async fn requests_tunnel_through_the_proxy() {
        let index = serve(|_, _| async { text(200, "via proxy") }).await;
        let (proxy, heads) = connect_proxy().await;
        let matcher = Matcher::builder()
            .http(format!("http://puser:ppass@{proxy}"))
            .build();
        let up = Upstream::with_proxy(
            settings(&index.url("/simple/")),
            ProxyMode::Explicit(matcher),
        )
        .unwrap();
        let fetched = page(&up, &index.url("/simple/")).await.unwrap();
        assert!(
            matches!(fetched, PageFetch::Fresh { ref body, .. } if body.as_ref() == b"via proxy")
        );
        let heads = heads.lock().unwrap().clone();
        assert_eq!(heads.len(), 1, "{heads:?}");
        assert!(
            heads[0].starts_with(&format!(
                "CONNECT 127.0.0.1:{} HTTP/1.1\r\n",
                index.addr.port()
            )),
            "{}",
            heads[0]
        );
        let proxy_auth = base64::engine::general_purpose::STANDARD.encode("puser:ppass");
        assert!(
            heads[0].contains(&format!("Proxy-Authorization: Basic {proxy_auth}")),
            "{}",
            heads[0]
        );
        // Through a tunnel the request itself is origin-form, exactly as without a proxy.
        assert_eq!(index.seen()[0].path, "/simple/");
    }

    #[tokio::test]
    async fn no_proxy_hosts_bypass_the_proxy() {
        let index = serve(|_, _| async { text(200, "direct") }).await;
        let (proxy, heads) = connect_proxy().await;
        let matcher = Matcher::builder()
            .http(format!("http://{proxy}"))
            .no("127.0.0.1")
            .build();
        let up = Upstream::with_proxy(
            settings(&index.url("/simple/")),
            ProxyMode::Explicit(matcher),
        )
        .unwrap();
        page(&up, &index.url("/simple/")).await.unwrap();
        assert!(heads.lock().unwrap().is_empty());
        assert_eq!(index.seen().len(), 1);
    }

    #[tokio::test]
    async fn socks_proxies_are_refused_with_a_reason() {
        let index = serve(|_, _| async { text(200, "direct") }).await;
        let matcher = Matcher::builder().http("socks5://127.0.0.1:9").build();
        let up = Upstream::with_proxy(
            settings(&index.url("/simple/")),
            ProxyMode::Explicit(matcher),
        )
        .unwrap();
        let err = page(&up, &index.url("/simple/")).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains("socks5"), "{err}");
    }

    // ----- construction -----

    #[test]
    fn roots_must_be_http_and_end_with_a_slash() {
        for bad in [
            "ftp://example.invalid/simple/",
            "https://example.invalid/simple",
        ] {
            let err =
                Upstream::with_proxy(settings(&Url::parse(bad).unwrap()), direct()).unwrap_err();
            assert!(
                matches!(err, UpstreamError::InvalidRoot { .. }),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn bad_auth_settings_are_refused() {
        let root = Url::parse("https://example.invalid/simple/").unwrap();
        let mut s = with_auth(
            settings(&root),
            Path::new("/run/secrets/token"),
            vec!["https://files.example.invalid".to_owned()],
        );
        let err = Upstream::with_proxy(s.clone(), direct()).unwrap_err();
        assert!(
            matches!(err, UpstreamError::InvalidAuthHost { .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("https://files.example.invalid"),
            "{err}"
        );
        if let Some(auth) = s.auth.as_mut() {
            auth.auth_hosts.clear();
            auth.username = "a:b".to_owned();
        }
        let err = Upstream::with_proxy(s, direct()).unwrap_err();
        assert!(
            matches!(err, UpstreamError::InvalidUsername { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn ca_file_is_read_and_checked() {
        let root = Url::parse("https://example.invalid/simple/").unwrap();
        let dir = tempfile::tempdir().unwrap();

        let mut s = settings(&root);
        let missing = dir.path().join("corp-ca.pem");
        s.ca_file = Some(missing.clone());
        let err = Upstream::with_proxy(s.clone(), direct()).unwrap_err();
        assert!(matches!(err, UpstreamError::CaFile { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );

        std::fs::write(&missing, "not a certificate\n").unwrap();
        let err = Upstream::with_proxy(s.clone(), direct()).unwrap_err();
        assert!(
            matches!(err, UpstreamError::CaFileContents { .. }),
            "{err:?}"
        );

        std::fs::write(&missing, TEST_ROOT_PEM).unwrap();
        let up = Upstream::with_proxy(s, direct()).unwrap();
        assert_eq!(up.root(), &root);
    }

    // ----- pure helpers -----

    #[test]
    fn handles_can_move_between_tasks() {
        fn shareable<T: Send + Sync + 'static>() {}
        fn streamable<T: Stream<Item = Result<Bytes, UpstreamError>> + Send + Unpin + 'static>() {}
        shareable::<Upstream>();
        shareable::<UpstreamError>();
        streamable::<FileBody>();
    }

    #[test]
    fn auth_hosts_parse_and_match() {
        let any_port = AuthHost::parse("Files.Example.Invalid").unwrap();
        assert!(any_port.matches(&Url::parse("https://files.example.invalid/x").unwrap()));
        assert!(any_port.matches(&Url::parse("http://files.example.invalid:8080/x").unwrap()));
        assert!(!any_port.matches(&Url::parse("https://evil.example.invalid/x").unwrap()));
        assert!(
            !any_port.matches(&Url::parse("https://files.example.invalid.evil.invalid/x").unwrap())
        );

        let with_port = AuthHost::parse("files.example.invalid:443").unwrap();
        assert!(with_port.matches(&Url::parse("https://files.example.invalid/x").unwrap()));
        assert!(!with_port.matches(&Url::parse("http://files.example.invalid/x").unwrap()));

        let v6 = AuthHost::parse("[::1]:8443").unwrap();
        assert!(v6.matches(&Url::parse("https://[::1]:8443/x").unwrap()));
        assert!(!v6.matches(&Url::parse("https://[::1]/x").unwrap()));

        for bad in [
            "",
            "https://files.example.invalid",
            "files.example.invalid/simple",
            "a:b:c",
            "host:99999",
            "user@host",
            "[::1",
        ] {
            assert!(AuthHost::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn http_dates_in_all_three_forms() {
        let expected = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(expected)
        );
        assert_eq!(
            parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(expected)
        );
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), Some(expected));
        assert_eq!(
            parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_164_800))
        );
        for bad in [
            "",
            "tomorrow",
            "Sun, 06 Nov 1994 08:49:37 CET",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:00:00 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_for_429_and_503_only() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_770);
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(
            retry_after(StatusCode::TOO_MANY_REQUESTS, &headers, now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(retry_after(StatusCode::BAD_GATEWAY, &headers, now), None);
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(
            retry_after(StatusCode::SERVICE_UNAVAILABLE, &headers, now),
            Some(Duration::from_secs(7))
        );
        let later = now + Duration::from_secs(60);
        assert_eq!(
            retry_after(StatusCode::SERVICE_UNAVAILABLE, &headers, later),
            Some(Duration::ZERO)
        );
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(
            retry_after(StatusCode::SERVICE_UNAVAILABLE, &headers, now),
            None
        );
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("99999999999999999999999"),
        );
        assert!(retry_after(StatusCode::SERVICE_UNAVAILABLE, &headers, now)
            .is_some_and(|d| d > MAX_RETRY_AFTER));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for _ in 0..50 {
            let first = backoff(0);
            assert!(
                first >= BACKOFF_START / 2 && first <= BACKOFF_START,
                "{first:?}"
            );
            let third = backoff(2);
            assert!(
                third >= Duration::from_millis(200) && third <= Duration::from_millis(400),
                "{third:?}"
            );
            let late = backoff(40);
            assert!(late >= BACKOFF_CAP / 2 && late <= BACKOFF_CAP, "{late:?}");
        }
    }

    #[test]
    fn only_safe_methods_are_retried() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::HEAD));
        assert!(!is_idempotent(&Method::POST));
    }

    #[test]
    fn a_timed_out_connect_is_a_connect_timeout() {
        #[derive(Debug, thiserror::Error)]
        #[error("tcp connect error")]
        struct Wrapper(#[source] std::io::Error);
        let url = Url::parse("https://user:pw@example.invalid/simple/?t=1").unwrap();
        let timed_out = Wrapper(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connect timeout",
        ));
        let err = classify_client_error(&timed_out, &url, Duration::from_secs(5));
        assert!(
            matches!(
                err,
                UpstreamError::Timeout {
                    kind: TimeoutKind::Connect,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("connect_timeout") && !err.to_string().contains("pw"),
            "{err}"
        );
        let reset = Wrapper(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        let err = classify_client_error(&reset, &url, Duration::from_secs(5));
        assert!(
            matches!(err, UpstreamError::Protocol { ref reason, .. }
                if reason == "tcp connect error: reset"),
            "{err:?}"
        );
    }

    #[test]
    fn tunnel_targets_always_carry_a_port() {
        let port_of =
            |uri: &str| with_explicit_port(&uri.parse::<Uri>().unwrap()).map(|u| u.to_string());
        assert_eq!(
            port_of("http://example.invalid").as_deref(),
            Some("http://example.invalid:80/")
        );
        assert_eq!(
            port_of("https://example.invalid").as_deref(),
            Some("https://example.invalid:443/")
        );
        assert_eq!(
            port_of("http://example.invalid:8080").as_deref(),
            Some("http://example.invalid:8080/")
        );
        assert_eq!(
            port_of("https://[::1]").as_deref(),
            Some("https://[::1]:443/")
        );
    }

    #[test]
    fn request_targets_drop_userinfo_and_fragment() {
        let url = Url::parse("https://user:pw@example.invalid/f.whl?x=1#sha256=abc").unwrap();
        assert_eq!(
            request_uri(&url).unwrap().to_string(),
            "https://example.invalid/f.whl?x=1"
        );
    }
}
