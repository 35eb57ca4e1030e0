//! [`Upstream`]: the client for one remote repository's upstream, and the two fetches it offers.
//!
//! hyper-util's legacy client pools connections and negotiates HTTP/2 by ALPN, but it neither
//! follows redirects nor retries, and it has no notion of "who may see our token". This module
//! builds that client (TCP, the proxy layer, TLS, the pool) and holds what every fetch shares: the
//! request that goes out, what a final status means, a page read whole with its validators, a file
//! handed on as a stream. The rules that are the point of the upstream client are written in the
//! sibling modules, one rule each, where they can be read and tested on their own: `redirect`,
//! `retry`, `auth`, `proxy`, `tls` and `body`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::Empty;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use url::Url;

use super::auth::{build_auth, parse_hosts, UpstreamAuth};
use super::body::{read_limited, FileBody};
use super::destination::{CheckedResolver, Policy};
use super::proxy::ProxyConnector;
use super::tls::{tls_config, Trust};
use super::{
    FileFetch, PageFetch, ProxyMode, RedactedUrl, UpstreamError, UpstreamSettings, Validators,
};

/// Pooled connections idle for longer than this are closed: below the 60 s keep-alive common on
/// load balancers, so that we usually close an idle connection before the far side does (a
/// request racing the far side's close is retried anyway).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// The most a connection reads from an upstream at once; hyper's default is about 400 KiB. A fast
/// upstream (a central on the same network) fills any buffer, and draining its socket in a few
/// large reads instead of many small ones cut a cold 1 GiB transfer's CPU by 7-17% (fewer
/// receive calls, window updates and wake-ups on both sides: benches/README.md, "Larger
/// upstream reads"). hyper grows a connection's buffer towards this only while reads fill it, so
/// pages and slow upstreams keep small buffers. [`crate::trim`] sizes the allocator's thresholds
/// from it.
pub const READ_BUFFER: usize = 4 << 20;

type HttpClient = Client<HttpsConnector<ProxyConnector>, Empty<Bytes>>;

/// The client for one remote repository's upstream. Cloning is cheap: clones share the pool.
#[derive(Clone)]
pub struct Upstream {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) repository: String,
    pub(super) root: Url,
    pub(super) client: HttpClient,
    pub(super) first_byte_timeout: Duration,
    pub(super) connect_timeout: Duration,
    idle_timeout: Duration,
    /// What the TLS client trusts, for the message of a refused certificate.
    pub(super) trust: Trust,
    pub(super) retries: u32,
    pub(super) auth: Option<UpstreamAuth>,
    pub(super) user_agent: HeaderValue,
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
    /// Loads the TLS roots (the system store, `SSL_CERT_FILE` / `SSL_CERT_DIR`, `ca_file`) now,
    /// so that a bad one is reported at start-up; the secret file is only read when a request
    /// needs it.
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
        let (tls, trust) = tls_config(&settings)?;

        let file_hosts = parse_hosts(&settings.file_hosts, |entry, reason| {
            UpstreamError::InvalidFileHost {
                repository: repository.clone(),
                entry: entry.to_owned(),
                reason,
            }
        })?;
        let policy = Arc::new(Policy::new(&settings.url, file_hosts));
        let checked = tuned(
            HttpConnector::new_with_resolver(CheckedResolver {
                policy: policy.clone(),
            }),
            settings.connect_timeout,
        );
        let open = tuned(HttpConnector::new(), settings.connect_timeout);
        let matcher = match proxy {
            ProxyMode::FromEnv => Matcher::from_env(),
            ProxyMode::Explicit(matcher) => matcher,
        };
        let connector = ProxyConnector {
            tcp: checked,
            open,
            matcher: Arc::new(matcher),
            policy,
        };
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .http1_max_buf_size(READ_BUFFER)
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
                trust,
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

    pub(super) fn build_request(
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

    pub(super) fn status_error(
        &self,
        url: &Url,
        status: StatusCode,
        sent_auth: bool,
    ) -> UpstreamError {
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

/// A TCP connector set up for upstream connections.
fn tuned<R>(mut connector: HttpConnector<R>, connect_timeout: Duration) -> HttpConnector<R> {
    // The TLS layer above receives https URIs and hands them down; the scheme is its business.
    connector.enforce_http(false);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector
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

pub(super) fn check_fetchable(url: &Url) -> Result<(), UpstreamError> {
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

#[cfg(test)]
mod tests {
    use futures_util::Stream;
    use http::Response;
    use http_body_util::{BodyExt as _, Full};

    use super::*;
    use crate::upstream::testing::*;
    use crate::upstream::AddressClass;

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

    // ----- the destination policy -----

    #[tokio::test]
    async fn internal_destinations_of_a_public_upstream_are_refused_without_connecting() {
        let files = serve(|_, _| async { text(200, "file") }).await;
        let port = files.addr.port();
        // A public root (a documentation address, never contacted).
        let public = Url::parse("http://192.0.2.1/simple/").unwrap();
        let up = upstream(settings(&public));
        for (link, class) in [
            // A name: refused by the resolver, on what it resolves to.
            (
                format!("http://localhost:{port}/f.whl"),
                AddressClass::Loopback,
            ),
            (
                format!("http://127.0.0.1:{port}/f.whl"),
                AddressClass::Loopback,
            ),
            (
                "http://169.254.169.254/latest/f.whl".to_owned(),
                AddressClass::LinkLocal,
            ),
            (
                "http://[fd00::1]:8080/f.whl".to_owned(),
                AddressClass::Private,
            ),
        ] {
            let err = up
                .fetch_file(&Url::parse(&link).unwrap())
                .await
                .unwrap_err();
            match &err {
                UpstreamError::Refused { reason, .. } => assert_eq!(reason.class, class, "{link}"),
                other => panic!("{link}: expected a refusal, got {other:?}"),
            }
            assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
            assert!(err.to_string().contains("file_hosts"), "{err}");
        }
        assert!(files.seen().is_empty(), "nothing was connected to");

        // Listed: fetched.
        let mut listed = settings(&public);
        listed.file_hosts = vec!["localhost".to_owned(), format!("127.0.0.1:{port}")];
        let up = upstream(listed);
        for link in [
            format!("http://localhost:{port}/f.whl"),
            format!("http://127.0.0.1:{port}/f.whl"),
        ] {
            up.fetch_file(&Url::parse(&link).unwrap()).await.unwrap();
        }
        assert_eq!(files.seen().len(), 2);
    }

    #[tokio::test]
    async fn a_loopback_upstream_may_link_to_loopback_but_not_to_private() {
        let index = serve(|seen, _| async move {
            if seen.path == "/away" {
                redirect(302, "http://10.255.255.1:9/f.whl")
            } else {
                text(200, "file")
            }
        })
        .await;
        let up = upstream(settings(&index.url("/simple/")));
        up.fetch_file(&index.url("/f.whl")).await.unwrap();
        let err = up.fetch_file(&index.url("/away")).await.unwrap_err();
        assert!(
            matches!(&err, UpstreamError::Refused { reason, .. } if reason.class == AddressClass::Private),
            "{err:?}"
        );
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
    fn request_targets_drop_userinfo_and_fragment() {
        let url = Url::parse("https://user:pw@example.invalid/f.whl?x=1#sha256=abc").unwrap();
        assert_eq!(
            request_uri(&url).unwrap().to_string(),
            "https://example.invalid/f.whl?x=1"
        );
    }
}
