//! Answering one request, in HTTP terms only: the route is parsed, the caller authenticated, the
//! repository layer asked, and its answer written as a response (conditional requests, gzip,
//! ranges, the headers clients and operators read). What may be served is decided in
//! `crate::repository`, never here.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::TryStreamExt as _;
use http::header::{
    HeaderName, HeaderValue, ACCEPT, ACCEPT_ENCODING, ACCEPT_RANGES, ALLOW, AUTHORIZATION,
    CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, HOST, IF_NONE_MATCH, RANGE,
    VARY, WWW_AUTHENTICATE,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;

use super::range::{self, ByteRange};
use super::response::{
    self, Body, BoxError, X_WHEELGATE_CACHE, X_WHEELGATE_DENIED, X_WHEELGATE_RETRIED,
};
use super::route::{self, RepoRef, Route, RouteError};
use super::sendfile::Regions;
use crate::access::{Caller, CHALLENGE};
use crate::app::App;
use crate::config::RepoName;
use crate::logging::access::{self, AccessRecord};
use crate::metrics::{self, CacheKind, Gauges, Metrics, RepoMetrics, Source, UploadOutcome};
use crate::repository::{
    ArtifactBody, CacheStatus, Content, FileBody, FileRequest, Page, PageRequest, Published,
    Rendered, ServeError, UploadRequest, WouldDeny, VARY_PAGE, X_WHEELGATE_AUDIT,
    X_WHEELGATE_UNAVAILABLE,
};
use crate::simple::digest::Sha256Digest;
use crate::simple::name::ProjectName;
use crate::simple::negotiate::{format_from_query, negotiate, Format};
use crate::simple::part::FilePart;

/// Files are immutable once their digest is known: clients may keep them forever.
const IMMUTABLE: &str = "max-age=31536000, immutable";

/// Serves one request and writes its access-log line.
pub async fn handle<B>(app: Arc<App>, request: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let request = Request::from_parts(parts, ());
    let method = request.method().clone();
    let Dispatched {
        mut response,
        route,
        repo,
    } = dispatch(&app, &request, body).await;
    if method == Method::HEAD {
        // Keep the headers (Content-Length included) and drop the body.
        *response.body_mut() = response::empty();
    }
    let header = |name: &HeaderName| response.headers().get(name).and_then(|v| v.to_str().ok());
    // `bytes` is the announced length (none for a stream of unknown length); `elapsed` is the
    // time to the response head: a streamed file's transfer goes on after this line.
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    app.repositories
        .metrics()
        .record_request(repo, route, status, elapsed);
    access::write(&AccessRecord {
        method: method.as_str(),
        path: request.uri().path(),
        status,
        bytes: header(&CONTENT_LENGTH).and_then(|v| v.parse().ok()),
        cache: header(&X_WHEELGATE_CACHE).unwrap_or("-"),
        denied_by: header(&X_WHEELGATE_DENIED).unwrap_or("-"),
        audit: header(&X_WHEELGATE_AUDIT),
        elapsed,
    });
    response
}

/// A response with what the request metrics are labelled by.
struct Dispatched<'a> {
    response: Response<Body>,
    route: metrics::Route,
    /// The counters of the repository the request named (those of no repository otherwise).
    repo: &'a RepoMetrics,
}

/// The `route` label of a route, and the repository it names.
fn labels_of(route: &Route) -> (metrics::Route, Option<Option<&RepoName>>) {
    match route {
        Route::Home => (metrics::Route::Status, None),
        Route::Health => (metrics::Route::Health, None),
        Route::Ready => (metrics::Route::Ready, None),
        Route::Metrics => (metrics::Route::Metrics, None),
        Route::Index(repo) => (metrics::Route::Index, Some(named(repo))),
        Route::Project(repo, _) => (metrics::Route::Project, Some(named(repo))),
        Route::File(file) => match file.part {
            FilePart::Metadata => (metrics::Route::Metadata, Some(Some(&file.repo))),
            FilePart::File | FilePart::Provenance => (metrics::Route::File, Some(Some(&file.repo))),
        },
        Route::Repository(repo) => (metrics::Route::Upload, Some(Some(repo))),
        Route::Redirect(_) | Route::LegacyJson => (metrics::Route::Other, None),
    }
}

/// The methods each kind of route answers.
fn method_not_allowed(method: &Method, allow: &'static str) -> Response<Body> {
    let mut response = response::error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("{method} is not supported here; use {allow}"),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

async fn dispatch<'a, B>(app: &'a App, request: &Request<()>, body: B) -> Dispatched<'a>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let repositories = &app.repositories;
    let metrics = repositories.metrics();
    let unlabelled = |response| Dispatched {
        response,
        route: metrics::Route::Other,
        repo: metrics.no_repository(),
    };
    let route = match route::parse(request.uri().path()) {
        Ok(route) => route,
        Err(RouteError::BadRequest(reason)) => {
            return unlabelled(response::error(StatusCode::BAD_REQUEST, &reason))
        }
        Err(RouteError::NotFound(reason)) => {
            return unlabelled(response::error(StatusCode::NOT_FOUND, &reason))
        }
    };
    let (label, named_repo) = labels_of(&route);
    let repo = match named_repo {
        Some(name) => repositories.repo_metrics(name),
        None => metrics.no_repository(),
    };
    let labelled = |response, route| Dispatched {
        response,
        route,
        repo,
    };
    let head = match (request.method(), &route) {
        (&Method::GET, _) => false,
        (&Method::HEAD, _) => true,
        (&Method::POST, Route::Repository(name)) => {
            // Boxed: an upload's state is large and rare, and every connection's in-flight
            // request is sized to the largest path it may take.
            let published = Box::pin(upload(app, request, name, body)).await;
            let outcome = match &published {
                Ok(Published::Created) => UploadOutcome::Created,
                Ok(Published::Identical) => UploadOutcome::Identical,
                Err(error) if error.status().is_server_error() => UploadOutcome::Failed,
                Err(_) => UploadOutcome::Rejected,
            };
            metrics.record_upload(repo, outcome);
            return labelled(
                published.map(published_response).unwrap_or_else(failure),
                label,
            );
        }
        (method, Route::Repository(_)) => {
            return labelled(
                method_not_allowed(method, "GET, HEAD, POST"),
                metrics::Route::Other,
            )
        }
        (method, _) => return labelled(method_not_allowed(method, "GET, HEAD"), label),
    };
    // A GET of `/<repo>/` is a redirect to its index, not an upload.
    let label = match route {
        Route::Repository(_) => metrics::Route::Other,
        _ => label,
    };
    // Health, readiness and redirects answer everyone; every other route is for a caller
    // who may read.
    let open = matches!(
        route,
        Route::Health
            | Route::Ready
            | Route::Redirect(_)
            | Route::LegacyJson
            | Route::Repository(_)
    );
    let caller = if open {
        Caller::Anonymous
    } else {
        match caller(app, request).await {
            Ok(caller) => caller,
            Err(error) => return labelled(failure(error), label),
        }
    };
    let result = match route {
        Route::Health => Ok(response::with_body(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "ok\n",
        )),
        Route::Ready => Ok(ready(&app.repositories)),
        Route::Redirect(location) => Ok(response::redirect(&location)),
        Route::LegacyJson => Ok(response::error(
            StatusCode::NOT_FOUND,
            "wheelgate does not offer the legacy JSON API (/pypi/<project>/json); \
             use the simple API at /simple/<project>/ (PEP 691 JSON with \
             Accept: application/vnd.pypi.simple.v1+json)",
        )),
        Route::Repository(repo) => Ok(response::redirect(&format!("/{repo}/simple/"))),
        Route::Home => home(app, &caller, request),
        Route::Metrics => exposition(app, &caller),
        Route::Index(name) => {
            let served = Served { repo, head };
            index_page(app, &caller, &name, request, served).await
        }
        Route::Project(name, project) => {
            let served = Served { repo, head };
            project_page(app, &caller, &name, &project, request, served).await
        }
        Route::File(file) => serve_file(app, &caller, &file, head, request, repo).await,
    };
    labelled(result.unwrap_or_else(failure), label)
}

/// How a page request is counted: for its repository, and (unless HEAD) its bytes.
#[derive(Clone, Copy)]
struct Served<'a> {
    repo: &'a RepoMetrics,
    head: bool,
}

/// Who sent the request, from its `Authorization` header.
async fn caller<B>(app: &App, request: &Request<B>) -> Result<Caller, ServeError> {
    let Some(authorization) = request.headers().get(AUTHORIZATION) else {
        return Ok(Caller::Anonymous);
    };
    // Boxed: a password check's state is large, and only credentialed requests take it.
    let users = app.repositories.users();
    let authenticated = Box::pin(users.authenticate(Some(authorization.as_bytes()))).await;
    if authenticated.is_err() {
        app.repositories.metrics().record_auth_failure();
    }
    Ok(authenticated?)
}

/// `POST /<repo>/`: the legacy upload API.
async fn upload<B>(
    app: &App,
    request: &Request<()>,
    repo: &RepoName,
    body: B,
) -> Result<Published, ServeError>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let caller = caller(app, request).await?;
    let headers = request.headers();
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    app.repositories
        .upload(
            &caller,
            UploadRequest {
                repo,
                content_type,
                length,
                body: body.into_data_stream(),
            },
        )
        .await
}

/// The answer to a successful upload.
fn published_response(published: Published) -> Response<Body> {
    let text = match published {
        Published::Created => "published\n",
        Published::Identical => "already published with the same content; nothing changed\n",
    };
    response::with_body(StatusCode::OK, "text/plain; charset=utf-8", text)
}

/// `/-/ready`: 200 while the server can serve. An unreachable shared bucket is said in the body
/// but keeps the 200: the replica still serves what its own store holds, and taking it out of
/// the load balancer would leave the clients less, not more.
fn ready(repositories: &crate::repository::Repositories) -> Response<Body> {
    let text = match repositories.shared_bucket() {
        Some(crate::shared::BucketState::Down { since, reason }) => format!(
            "ready, degraded: the shared bucket has been unreachable for {} s ({reason}); \
             uploads are refused, files are served from this replica's store\n",
            since.elapsed().map_or(0, |d| d.as_secs())
        ),
        _ => "ready\n".to_owned(),
    };
    response::with_body(StatusCode::OK, "text/plain; charset=utf-8", text)
}

/// The response for a request the repository layer could not serve.
fn failure(error: ServeError) -> Response<Body> {
    let status = error.status();
    let reason = error.to_string();
    if status.is_server_error() {
        tracing::warn!(status = status.as_u16(), "{reason}");
    }
    let mut response = response::error(status, &reason);
    let headers = response.headers_mut();
    if let Some(value) = error
        .denied_by()
        .and_then(|by| HeaderValue::from_str(by).ok())
    {
        headers.insert(X_WHEELGATE_DENIED, value);
    }
    if let Some(cache) = error.cache_status() {
        headers.insert(X_WHEELGATE_CACHE, cache.header_value());
    }
    if error.after_upstream_retries() {
        headers.insert(X_WHEELGATE_RETRIED, HeaderValue::from_static("upstream"));
    }
    if error.wants_credentials() {
        headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
    }
    response
}

/// The repository a simple-API path names: `None` for the default one.
fn named(repo: &RepoRef) -> Option<&RepoName> {
    match repo {
        RepoRef::Default => None,
        RepoRef::Named(name) => Some(name),
    }
}

fn format_for<B>(request: &Request<B>) -> Format {
    format_from_query(request.uri().query())
        .unwrap_or_else(|| negotiate(request.headers().get(ACCEPT).and_then(|v| v.to_str().ok())))
}

/// True when the client takes gzip (`Accept-Encoding: gzip`, not `gzip;q=0`).
fn accepts_gzip<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q == 0.0))
            });
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

/// True when `If-None-Match` names `etag` (or is `*`).
fn not_modified<B>(request: &Request<B>, etag: &HeaderValue) -> bool {
    let Some(etag) = etag.to_str().ok() else {
        return false;
    };
    request
        .headers()
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

/// Sends a page: 304 when the client has it, gzip when it takes it. The headers were built with
/// the rendering; a group's page served without some members names them.
fn page_response<B, T>(
    request: &Request<B>,
    page: &Page<T>,
    metrics: &Metrics,
    served: Served<'_>,
) -> Response<Body> {
    served.repo.record_cache(CacheKind::Page, page.status);
    let mut response = rendered_response(request, page.rendered(), page.status);
    if !served.head && response.status() == StatusCode::OK {
        let source = if page.from_upstream() {
            Source::Upstream
        } else {
            Source::Cache
        };
        let length = hyper::body::Body::size_hint(response.body()).exact();
        metrics.record_served(source, length.unwrap_or(0));
    }
    if let Some(WouldDeny(group)) = &page.audit {
        // Beside the audited rules the rendering may already name.
        let value = match response.headers().get(X_WHEELGATE_AUDIT) {
            Some(rules) => format!("{}; {group}", String::from_utf8_lossy(rules.as_bytes())),
            None => group.clone(),
        };
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(X_WHEELGATE_AUDIT, value);
        }
    }
    if let Some(members) = &page.unavailable {
        let names: Vec<&str> = members.iter().map(RepoName::as_str).collect();
        // Repository names are header-safe by construction.
        if let Ok(value) = HeaderValue::from_str(&names.join(", ")) {
            response
                .headers_mut()
                .insert(X_WHEELGATE_UNAVAILABLE, value);
        }
    }
    response
}

fn rendered_response<B>(
    request: &Request<B>,
    rendered: &Rendered,
    status: CacheStatus,
) -> Response<Body> {
    let variant = if accepts_gzip(request) {
        rendered.gzip()
    } else {
        rendered.identity()
    };
    if not_modified(request, &variant.etag) {
        let mut response = Response::new(response::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        let headers = response.headers_mut();
        headers.insert(VARY, HeaderValue::from_static(VARY_PAGE));
        headers.insert(ETAG, variant.etag.clone());
        headers.insert(X_WHEELGATE_CACHE, status.header_value());
        if let Some(audit) = variant.headers.get(X_WHEELGATE_AUDIT) {
            headers.insert(X_WHEELGATE_AUDIT, audit.clone());
        }
        response
    } else {
        let mut response = Response::new(response::full(variant.body.clone()));
        *response.headers_mut() = variant.headers.clone();
        if status != CacheStatus::Hit {
            response
                .headers_mut()
                .insert(X_WHEELGATE_CACHE, status.header_value());
        }
        response
    }
}

async fn index_page<B>(
    app: &App,
    caller: &Caller,
    repo: &RepoRef,
    request: &Request<B>,
    served: Served<'_>,
) -> Result<Response<Body>, ServeError> {
    let page = app
        .repositories
        .index_page(caller, named(repo), format_for(request))
        .await?;
    Ok(page_response(
        request,
        &page,
        app.repositories.metrics(),
        served,
    ))
}

async fn project_page<B>(
    app: &App,
    caller: &Caller,
    repo: &RepoRef,
    project: &ProjectName,
    request: &Request<B>,
    served: Served<'_>,
) -> Result<Response<Body>, ServeError> {
    let page_request = PageRequest {
        format: format_for(request),
        depth: repo.project_page_depth(),
    };
    let page = app
        .repositories
        .project_page(caller, named(repo), project, page_request)
        .await?;
    Ok(page_response(
        request,
        &page,
        app.repositories.metrics(),
        served,
    ))
}

async fn serve_file<B>(
    app: &App,
    caller: &Caller,
    file: &FileRequest,
    head: bool,
    request: &Request<B>,
    repo: &RepoMetrics,
) -> Result<Response<Body>, ServeError> {
    let metrics = app.repositories.metrics();
    let content_type = match file.part {
        FilePart::File => "application/octet-stream",
        FilePart::Metadata => "text/plain; charset=utf-8",
        // A PEP 740 provenance object is JSON.
        FilePart::Provenance => "application/json",
    };
    let audit: Option<WouldDeny>;
    let mut response = if head {
        let (info, would_deny) = app.repositories.file_info(caller, file).await?;
        audit = would_deny;
        let mut response = Response::new(response::empty());
        let headers = response.headers_mut();
        if let Some(size) = info.size {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
        }
        file_headers(headers, info.sha256, info.stored);
        let status = if info.stored {
            CacheStatus::Hit
        } else {
            CacheStatus::Miss
        };
        repo.record_cache(CacheKind::File, status);
        headers.insert(X_WHEELGATE_CACHE, status.header_value());
        response
    } else {
        let (served, would_deny) = app.repositories.file(caller, file).await?;
        audit = would_deny;
        repo.record_cache(CacheKind::File, served.status);
        let mut response = match served.body {
            FileBody::Stored { size, body } => {
                stored_response(request, served.sha256, size, body, metrics)
            }
            FileBody::Arriving { length, stream } => {
                // Counted as the bytes reach the client, so a transfer that fails midway
                // counts what was sent.
                let counter = metrics.clone();
                let regions = Regions::of(request).cloned();
                let stream = stream.map_ok(move |piece| {
                    counter.record_served(Source::Upstream, piece.bytes.len() as u64);
                    if let (Some(regions), Some(file)) = (&regions, piece.file) {
                        regions.register(piece.bytes.clone(), file);
                    }
                    piece.bytes
                });
                let mut response = Response::new(response::stream(stream));
                if let Some(length) = length {
                    response
                        .headers_mut()
                        .insert(CONTENT_LENGTH, HeaderValue::from(length));
                }
                file_headers(response.headers_mut(), served.sha256, false);
                response
            }
        };
        response
            .headers_mut()
            .insert(X_WHEELGATE_CACHE, served.status.header_value());
        response
    };
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(value) = audit.and_then(|WouldDeny(rules)| HeaderValue::from_str(&rules).ok()) {
        headers.insert(X_WHEELGATE_AUDIT, value);
    }
    Ok(response)
}

/// ETag and caching headers of a file; ranges are offered for stored files only.
fn file_headers(headers: &mut http::HeaderMap, digest: Option<Sha256Digest>, ranges: bool) {
    if let Some(digest) = digest {
        let mut etag = [b'"'; 66];
        etag[1..65].copy_from_slice(&digest.hex_bytes());
        if let Ok(etag) = HeaderValue::from_bytes(&etag) {
            headers.insert(ETAG, etag);
        }
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    }
    if ranges {
        headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
}

/// A stored file, whole or the one range asked for.
fn stored_response<B>(
    request: &Request<B>,
    sha256: Option<Sha256Digest>,
    size: u64,
    body: ArtifactBody,
    metrics: &Metrics,
) -> Response<Body> {
    let header = request.headers().get(RANGE).and_then(|v| v.to_str().ok());
    let (status, start, len) = match range::parse(header, size) {
        ByteRange::Full => (StatusCode::OK, 0, size),
        ByteRange::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        ByteRange::Unsatisfiable => {
            let mut response = response::error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                &format!("the requested range is outside the file ({size} bytes)"),
            );
            if let Ok(value) = HeaderValue::from_str(&range::unsatisfied_range(size)) {
                response.headers_mut().insert(CONTENT_RANGE, value);
            }
            return response;
        }
    };
    metrics.record_served(Source::Cache, len);
    let body = match body.read(start, len) {
        Content::Bytes(bytes, file) => {
            if let (Some(regions), Some(file)) = (Regions::of(request), file) {
                regions.register(bytes.clone(), file);
            }
            response::full(bytes)
        }
        Content::Stream(stream) => response::stream(stream),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(value) =
            HeaderValue::from_str(&range::content_range(start, start + len - 1, size))
        {
            headers.insert(CONTENT_RANGE, value);
        }
    }
    file_headers(headers, sha256, true);
    response
}

/// The status page at `/`: open to whoever may read.
fn home<B>(app: &App, caller: &Caller, request: &Request<B>) -> Result<Response<Body>, ServeError> {
    app.repositories.may_see_status(caller)?;
    let host = request
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    let body = crate::status::page(app, host);
    Ok(response::with_body(
        StatusCode::OK,
        "text/html; charset=utf-8",
        body,
    ))
}

/// `/-/metrics`: the Prometheus exposition, readable by whoever may see the status page.
fn exposition(app: &App, caller: &Caller) -> Result<Response<Body>, ServeError> {
    let repositories = &app.repositories;
    repositories.may_see_status(caller)?;
    let stats = repositories.store_stats();
    let text = repositories.metrics().encode(Gauges {
        store_bytes: stats.artifact_bytes,
        store_artifacts: stats.artifacts,
        file_joins: repositories.file_joins(),
        shared_bucket_up: repositories
            .shared_bucket()
            .map(|state| state == crate::shared::BucketState::Up),
    });
    Ok(response::with_body(
        StatusCode::OK,
        metrics::CONTENT_TYPE,
        text,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::remote::flight::Flights;
    use crate::store::{Store, StoreOptions};
    use http_body_util::Full;

    /// hyper keeps each connection's request future in one allocation for the connection's
    /// life, sized to the largest path a request may take: 1,000 idle keep-alive connections
    /// hold 1,000 of them. Rare, large paths (a download from the upstream, an upload, a password
    /// check) are boxed where they start so they do not set that size.
    #[test]
    fn a_requests_future_stays_small() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[server]\ndefault_repository = \"pypi\"\n\n[store]\npath = \"{}\"\n\n[[repository]]\nname = \"pypi\"\ntype = \"remote\"\n\
             url = \"http://127.0.0.1:9/simple/\"\n\n[[repository]]\nname = \"internal\"\n\
             type = \"hosted\"\n",
            dir.path().display()
        );
        let config = crate::config::parse(&text, "proxy.toml", &|_| None).unwrap();
        let store = Store::open(StoreOptions {
            path: config.store.path.clone(),
            max_size: config.store.max_size,
            memory: 1 << 20,
        })
        .unwrap();
        let flights = Arc::new(Flights::new(dir.path().join("tmp"), store.space()));
        let app = Arc::new(App::build(config, store, flights, Default::default()).unwrap());
        let request = handle(app, Request::new(Full::new(Bytes::new())));
        let size = std::mem::size_of_val(&request);
        assert!(size <= 4096, "a request's future takes {size} bytes");
    }
}
