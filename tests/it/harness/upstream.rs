//! The fixture upstream: an in-process simple index on 127.0.0.1 serving the generated fixtures.
//!
//! It behaves like a private index would, because that is what wheelgate must cope with: it
//! requires `__token__` basic auth on its own origin, redirects non-normalised project URLs, answers
//! PEP 691 JSON only when asked (or never, in `HtmlOnly` mode), mixes relative and absolute links,
//! keeps some files on other origins (one of them behind a cross-origin 302), can serve a file
//! whose bytes betray its declared sha256, and publishes no digest at all for a project marked
//! `no_hash` (as indexes that never computed one do). Every request on every origin is recorded so that tests
//! can check who was sent the credentials.
//!
//! It keeps up with the index API too: projects of the fixtures can state a PEP 792 status (HTML
//! meta tags, JSON `project-status`) and offer PEP 740 provenance for their files, served on the
//! main origin under `/integrity/` the way the public index lays it out, each page declaring the
//! API version it needs.
//!
//! For the store tests it also behaves like an index worth caching: pages carry an `ETag` and a
//! `Last-Modified` and answer a matching conditional request with 304 (the log records the
//! validators sent and the status given, so a revalidation is visible); the main origin can be put
//! "down" (503 to everything); and it serves the generated files of `generated.rs` as streams of
//! 64 KiB chunks, optionally throttled, one of them held behind a gate the test opens.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::fixtures::{
    catalog, normalize, sha256_hex, Catalog, DistFile, FileKind, FileOrigin, LinkStyle, Project,
};
use super::generated::{self, Delivery, Generated, CHUNK};

/// The PEP 691 JSON media type.
pub const JSON_MEDIA_TYPE: &str = "application/vnd.pypi.simple.v1+json";
/// The PEP 691 HTML media type.
pub const HTML_MEDIA_TYPE: &str = "application/vnd.pypi.simple.v1+html";
/// The `Last-Modified` of every page: the fixtures never change while a test runs.
pub const PAGES_LAST_MODIFIED: &str = "Mon, 01 Jan 2024 00:00:00 GMT";

/// Every response body: whole (pages, small files) or streamed (generated files).
type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Which page formats the upstream offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// PEP 691 JSON (v1.1) when the Accept header asks for it, HTML otherwise.
    Json,
    /// PEP 503 HTML only, whatever the Accept header says.
    HtmlOnly,
}

/// One of the upstream's listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The index itself; requires the token.
    Main,
    /// Serves some projects' files without auth; the target of the cross-origin redirect.
    Second,
    /// Listed in the repository's `auth_hosts`; requires the token.
    Third,
}

/// What the upstream saw of one request.
#[derive(Clone)]
pub struct RecordedRequest {
    pub origin: Origin,
    pub method: String,
    /// Path and query exactly as received.
    pub path: String,
    pub authorization: Option<String>,
    pub accept: Option<String>,
    /// The validators of a conditional request.
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    /// The status the upstream answered with.
    pub status: u16,
}

/// Failure messages print the log: the credentials are shown only as present or absent.
impl std::fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordedRequest")
            .field("origin", &self.origin)
            .field("method", &self.method)
            .field("path", &self.path)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("accept", &self.accept)
            .field("if_none_match", &self.if_none_match)
            .field("if_modified_since", &self.if_modified_since)
            .field("status", &self.status)
            .finish()
    }
}

impl RecordedRequest {
    /// Whether the request carried a validator (a revalidation).
    pub fn is_conditional(&self) -> bool {
        self.if_none_match.is_some() || self.if_modified_since.is_some()
    }
}

struct Shared {
    mode: Mode,
    catalog: &'static Catalog,
    token: Mutex<String>,
    corrupt: AtomicBool,
    /// When set, the main origin answers 503 to everything.
    down: AtomicBool,
    /// Microseconds to sleep before each chunk of a generated file (0: full speed).
    throttle_micros: Arc<AtomicU64>,
    /// Holds gated generated files after their first part until it becomes true.
    gate: tokio::sync::watch::Sender<bool>,
    log: Mutex<Vec<RecordedRequest>>,
    main_base: String,
    second_base: String,
    third_base: String,
}

/// A running fixture upstream. Dropping it stops the listeners.
pub struct Upstream {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: tokio::sync::watch::Sender<bool>,
    main_addr: SocketAddr,
    second_addr: SocketAddr,
    third_addr: SocketAddr,
}

/// Locks a mutex even if a panicking test thread poisoned it: the data (a log, a token) stays valid.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The `Authorization` header value for `__token__:<token>`.
pub fn basic_auth_value(token: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("__token__:{token}"));
    format!("Basic {encoded}")
}

impl Upstream {
    /// Starts the three origins on ephemeral ports, expecting `token` on the authenticated ones.
    pub fn start(mode: Mode, token: &str) -> Upstream {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fixture-upstream")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the fixture upstream's runtime: {e}"));
        let bind = || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap_or_else(|e| panic!("cannot bind the fixture upstream on 127.0.0.1:0: {e}"));
            listener
                .set_nonblocking(true)
                .unwrap_or_else(|e| panic!("cannot make the fixture listener non-blocking: {e}"));
            listener
        };
        let (main, second, third) = (bind(), bind(), bind());
        let addr = |l: &std::net::TcpListener| {
            l.local_addr()
                .unwrap_or_else(|e| panic!("fixture listener has no local address: {e}"))
        };
        let (main_addr, second_addr, third_addr) = (addr(&main), addr(&second), addr(&third));
        let shared = Arc::new(Shared {
            mode,
            catalog: catalog(),
            token: Mutex::new(token.to_owned()),
            corrupt: AtomicBool::new(true),
            down: AtomicBool::new(false),
            throttle_micros: Arc::new(AtomicU64::new(0)),
            gate: tokio::sync::watch::Sender::new(false),
            log: Mutex::new(Vec::new()),
            main_base: format!("http://{main_addr}"),
            second_base: format!("http://{second_addr}"),
            third_base: format!("http://{third_addr}"),
        });
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        for (listener, origin) in [
            (main, Origin::Main),
            (second, Origin::Second),
            (third, Origin::Third),
        ] {
            let shared = Arc::clone(&shared);
            let shutdown_rx = shutdown_rx.clone();
            let _guard = runtime.enter();
            let listener = tokio::net::TcpListener::from_std(listener)
                .unwrap_or_else(|e| panic!("cannot register the fixture listener with tokio: {e}"));
            runtime.spawn(accept_loop(listener, shared, origin, shutdown_rx));
        }
        Upstream {
            shared,
            runtime: Some(runtime),
            shutdown,
            main_addr,
            second_addr,
            third_addr,
        }
    }

    /// The index URL a user would give pip: `http://127.0.0.1:<port>/simple/`.
    pub fn index_url(&self) -> String {
        format!("{}/simple/", self.shared.main_base)
    }

    /// The index URL with the current token in its userinfo, for pointing clients at it directly.
    pub fn index_url_with_token(&self) -> String {
        format!(
            "http://__token__:{}@{}/simple/",
            self.token(),
            self.main_addr
        )
    }

    /// The index's own origin (plain HTTP), for a front that relays to it.
    pub fn main_addr(&self) -> SocketAddr {
        self.main_addr
    }

    pub fn third_addr(&self) -> SocketAddr {
        self.third_addr
    }

    /// Every `host:port` the upstream listens on, to check that no page leaks them.
    pub fn host_ports(&self) -> [String; 3] {
        [
            self.main_addr.to_string(),
            self.second_addr.to_string(),
            self.third_addr.to_string(),
        ]
    }

    /// The token the authenticated origins currently expect.
    pub fn token(&self) -> String {
        lock(&self.shared.token).clone()
    }

    /// Changes the expected token (the upstream side of a rotation).
    pub fn set_token(&self, token: &str) {
        *lock(&self.shared.token) = token.to_owned();
    }

    /// Switches between serving the true bytes of the corrupt fixture and altered ones.
    pub fn set_corrupt(&self, corrupt: bool) {
        self.shared.corrupt.store(corrupt, Ordering::SeqCst);
    }

    /// Puts the main origin down (503 to every request) or back up.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Sleeps `pause` before each 64 KiB chunk of every generated file (None: full speed). It
    /// applies to transfers already running, so a test can slow one down and let a later one run.
    pub fn set_throttle(&self, pause: Option<Duration>) {
        let micros = pause.map_or(0, |p| u64::try_from(p.as_micros()).unwrap_or(u64::MAX));
        self.shared.throttle_micros.store(micros, Ordering::SeqCst);
    }

    /// Lets gated transfers (and later ones) send the rest of their file.
    pub fn release_gate(&self) {
        self.shared.gate.send_replace(true);
    }

    /// Every request recorded so far, in the order they were answered.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).clone()
    }

    /// The recorded requests that reached one origin.
    pub fn requests_on(&self, origin: Origin) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.origin == origin)
            .collect()
    }

    /// The recorded requests whose path (without query) is exactly `path`.
    pub fn requests_for(&self, path: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.split('?').next() == Some(path))
            .collect()
    }

    /// Stops accepting and tears the listeners down (also done on drop). The request log stays
    /// readable, so a test can show that nothing reached the upstream afterwards.
    pub fn stop(&mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    origin: Origin,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                // An accept error concerns one connection attempt; keep serving the others.
                let Ok((stream, _)) = accepted else { continue };
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let response = handle(&shared, origin, &request);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = shutdown.changed() => break,
        }
    }
}

fn header_string(request: &Request<Incoming>, name: header::HeaderName) -> Option<String> {
    request
        .headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// The request headers the page handlers look at.
struct Asked {
    accept: Option<String>,
    if_none_match: Option<String>,
    if_modified_since: Option<String>,
}

fn handle(shared: &Shared, origin: Origin, request: &Request<Incoming>) -> Response<Body> {
    let path = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| request.uri().path().to_owned());
    let authorization = header_string(request, header::AUTHORIZATION);
    let asked = Asked {
        accept: header_string(request, header::ACCEPT),
        if_none_match: header_string(request, header::IF_NONE_MATCH),
        if_modified_since: header_string(request, header::IF_MODIFIED_SINCE),
    };
    let response = respond_to(shared, origin, request, authorization.as_deref(), &asked);
    lock(&shared.log).push(RecordedRequest {
        origin,
        method: request.method().to_string(),
        path,
        authorization,
        accept: asked.accept,
        if_none_match: asked.if_none_match,
        if_modified_since: asked.if_modified_since,
        status: response.status().as_u16(),
    });
    if request.method() == Method::HEAD {
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, empty_body());
    }
    response
}

fn respond_to(
    shared: &Shared,
    origin: Origin,
    request: &Request<Incoming>,
    authorization: Option<&str>,
    asked: &Asked,
) -> Response<Body> {
    if origin == Origin::Main && shared.down.load(Ordering::SeqCst) {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "503 Service Unavailable: the fixture upstream is down\n",
        );
    }
    if origin != Origin::Second
        && authorization != Some(basic_auth_value(&lock(&shared.token)).as_str())
    {
        let mut response = text(
            StatusCode::UNAUTHORIZED,
            "401 Unauthorized: a valid __token__ is required\n",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"wgfx fixture index\""),
        );
        return response;
    }
    let path = request.uri().path();
    match origin {
        Origin::Main => route_main(shared, path, asked),
        Origin::Second => route_files(
            shared,
            path,
            "/far/",
            &[FileOrigin::Second, FileOrigin::Redirect],
        ),
        Origin::Third => route_files(shared, path, "/tok/", &[FileOrigin::Third]),
    }
}

fn empty_body() -> Body {
    Empty::new().boxed_unsync()
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    respond(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut response = text(status, "redirecting\n");
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn route_main(shared: &Shared, path: &str, asked: &Asked) -> Response<Body> {
    if path == "/simple" {
        return redirect(StatusCode::MOVED_PERMANENTLY, "/simple/");
    }
    if path == "/simple/" {
        return index_page(shared, asked);
    }
    if let Some(rest) = path.strip_prefix("/simple/") {
        let name = rest.strip_suffix('/').unwrap_or(rest);
        if name.is_empty() || name.contains('/') {
            return text(StatusCode::NOT_FOUND, "404 Not Found\n");
        }
        let normalized = normalize(name);
        if normalized != name || !rest.ends_with('/') {
            return redirect(
                StatusCode::MOVED_PERMANENTLY,
                &format!("/simple/{normalized}/"),
            );
        }
        if let Some(file) = generated::find(&normalized) {
            return generated_page(shared, file, asked);
        }
        return match shared.catalog.project(&normalized) {
            Some(project) => project_page(shared, project, asked),
            None => text(StatusCode::NOT_FOUND, "404 Not Found: no such project\n"),
        };
    }
    if let Some(rest) = path.strip_prefix("/redirect/") {
        if find_file(shared, rest, &[FileOrigin::Redirect]).is_some() {
            return redirect(
                StatusCode::FOUND,
                &format!("{}/far/{rest}", shared.second_base),
            );
        }
        return text(StatusCode::NOT_FOUND, "404 Not Found\n");
    }
    if let Some(file) = generated::all().iter().find(|g| g.path() == path) {
        return stream_generated(shared, file);
    }
    if let Some(rest) = path.strip_prefix("/integrity/") {
        return provenance(shared, rest);
    }
    route_files(shared, path, "/files/", &[FileOrigin::Main])
}

/// `/integrity/<project>/<version>/<filename>/provenance`: a file's PEP 740 provenance, for the
/// files whose release offers one.
fn provenance(shared: &Shared, rest: &str) -> Response<Body> {
    let found = rest.split('/').collect::<Vec<_>>();
    let [project, version, filename, "provenance"] = found.as_slice() else {
        return text(StatusCode::NOT_FOUND, "404 Not Found\n");
    };
    let provenance = shared
        .catalog
        .project(project)
        .and_then(|p| p.files.iter().find(|f| f.filename == *filename))
        .filter(|f| f.version == *version)
        .and_then(|f| f.provenance.clone());
    match provenance {
        Some(body) => respond(StatusCode::OK, "application/json", body),
        None => text(
            StatusCode::NOT_FOUND,
            "404 Not Found: no provenance for this file\n",
        ),
    }
}

/// A generated file as a stream of 64 KiB chunks with a Content-Length, produced as it is sent
/// (the 200 MiB one is never in memory), throttled and gated as the test asks.
fn stream_generated(shared: &Shared, file: &'static Generated) -> Response<Body> {
    struct State {
        file: &'static Generated,
        offset: u64,
        corrupt: bool,
        throttle_micros: Arc<AtomicU64>,
        gate: tokio::sync::watch::Receiver<bool>,
    }
    let state = State {
        file,
        offset: 0,
        // Decided once per transfer, as a real upstream serving a bad file would.
        corrupt: shared.corrupt.load(Ordering::SeqCst),
        throttle_micros: Arc::clone(&shared.throttle_micros),
        gate: shared.gate.subscribe(),
    };
    let chunks = futures_util::stream::unfold(state, |mut state| async move {
        if state.offset >= state.file.size {
            return None;
        }
        if let Delivery::Gated { after } = state.file.delivery {
            if state.offset >= after {
                // A dropped sender means the upstream is shutting down: end the body short.
                state.gate.wait_for(|open| *open).await.ok()?;
            }
        }
        let pause = state.throttle_micros.load(Ordering::SeqCst);
        if pause > 0 {
            tokio::time::sleep(Duration::from_micros(pause)).await;
        }
        let mut end = (state.offset + CHUNK as u64).min(state.file.size);
        if let Delivery::Gated { after } = state.file.delivery {
            if state.offset < after {
                end = end.min(after);
            }
        }
        let bytes = state.file.served_bytes(state.offset, end, state.corrupt);
        state.offset = end;
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(bytes))), state))
    });
    let mut response = Response::new(StreamBody::new(chunks).boxed_unsync());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(file.size));
    response
}

/// Looks up `<project>/<filename>[.metadata]`; the bool says whether the metadata was asked for.
fn find_file<'a>(
    shared: &'a Shared,
    rest: &str,
    origins: &[FileOrigin],
) -> Option<(&'a Project, &'a DistFile, bool)> {
    let (project, filename) = rest.split_once('/')?;
    let project = shared
        .catalog
        .project(project)
        .filter(|p| origins.contains(&p.origin))?;
    let (filename, wants_metadata) = match filename.strip_suffix(".metadata") {
        Some(stripped) => (stripped, true),
        None => (filename, false),
    };
    let file = project.files.iter().find(|f| f.filename == filename)?;
    Some((project, file, wants_metadata))
}

fn route_files(
    shared: &Shared,
    path: &str,
    prefix: &str,
    origins: &[FileOrigin],
) -> Response<Body> {
    let Some(rest) = path.strip_prefix(prefix) else {
        return text(StatusCode::NOT_FOUND, "404 Not Found\n");
    };
    match find_file(shared, rest, origins) {
        Some((_, file, true)) => match &file.metadata {
            Some(metadata) => respond(StatusCode::OK, "application/octet-stream", metadata.clone()),
            None => text(
                StatusCode::NOT_FOUND,
                "404 Not Found: no metadata for this file\n",
            ),
        },
        Some((_, file, false)) => {
            let bytes = if file.corrupt && shared.corrupt.load(Ordering::SeqCst) {
                file.corrupted_bytes()
            } else {
                file.bytes.clone()
            };
            let content_type = match file.kind {
                FileKind::Wheel => "application/zip",
                FileKind::Sdist => "application/gzip",
            };
            respond(StatusCode::OK, content_type, bytes)
        }
        None => text(StatusCode::NOT_FOUND, "404 Not Found\n"),
    }
}

/// Whether the Accept header prefers PEP 691 JSON over every HTML type it names (q-values honoured).
fn wants_json(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let mut json_q: f32 = 0.0;
    let mut html_q: f32 = 0.0;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            JSON_MEDIA_TYPE => json_q = json_q.max(q),
            HTML_MEDIA_TYPE | "text/html" => html_q = html_q.max(q),
            _ => {}
        }
    }
    json_q > 0.0 && json_q >= html_q
}

/// Whether an `If-None-Match` list names `etag` (weak comparison, `*` matches anything).
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let strip = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    if_none_match
        .split(',')
        .any(|candidate| candidate.trim() == "*" || strip(candidate) == strip(etag))
}

/// A page in the negotiated format, with validators; 304 when the client's validators match
/// (`If-None-Match` wins over `If-Modified-Since`, as RFC 9110 says). The ETag is derived from the
/// body, so the JSON and HTML representations have different ones.
fn page(
    shared: &Shared,
    asked: &Asked,
    json: impl FnOnce() -> String,
    html: impl FnOnce() -> String,
) -> Response<Body> {
    let accept = asked.accept.as_deref();
    let (content_type, body) = if shared.mode == Mode::Json && wants_json(accept) {
        (JSON_MEDIA_TYPE, json().into_bytes())
    } else {
        let content_type = match accept {
            Some(a) if shared.mode == Mode::Json && a.contains(HTML_MEDIA_TYPE) => HTML_MEDIA_TYPE,
            _ => "text/html; charset=utf-8",
        };
        (content_type, html().into_bytes())
    };
    let etag = format!("\"{}\"", sha256_hex(&body).get(..32).unwrap_or_default());
    let not_modified = match (&asked.if_none_match, &asked.if_modified_since) {
        (Some(if_none_match), _) => etag_matches(if_none_match, &etag),
        (None, Some(since)) => since.trim() == PAGES_LAST_MODIFIED,
        (None, None) => false,
    };
    let mut response = if not_modified {
        let mut response = Response::new(empty_body());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        respond(StatusCode::OK, content_type, body)
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(
        header::LAST_MODIFIED,
        HeaderValue::from_static(PAGES_LAST_MODIFIED),
    );
    if shared.mode == Mode::Json {
        headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    }
    response
}

fn index_page(shared: &Shared, asked: &Asked) -> Response<Body> {
    let projects = &shared.catalog.projects;
    let generated = generated::all();
    page(
        shared,
        asked,
        || {
            let names: Vec<_> = projects
                .iter()
                .map(|p| p.name.as_str())
                .chain(generated.iter().map(|g| g.project))
                .map(|name| serde_json::json!({ "name": name }))
                .collect();
            serde_json::json!({ "meta": { "api-version": "1.1" }, "projects": names }).to_string()
        },
        || {
            let mut html = String::from(
                "<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.1\">\
                 <title>Simple index</title></head><body>\n",
            );
            for p in projects {
                html.push_str(&format!(
                    "<a href=\"/simple/{}/\">{}</a><br/>\n",
                    p.normalized,
                    html_escape::encode_text(&p.name)
                ));
            }
            for g in generated {
                html.push_str(&format!(
                    "<a href=\"/simple/{0}/\">{0}</a><br/>\n",
                    g.project
                ));
            }
            html.push_str("</body></html>\n");
            html
        },
    )
}

/// The href of a file as the upstream writes it in its pages.
fn file_href(shared: &Shared, project: &Project, file: &DistFile) -> String {
    let tail = format!("{}/{}", project.normalized, file.filename);
    match (project.origin, project.links) {
        (FileOrigin::Main, LinkStyle::Relative) => format!("../../files/{tail}"),
        (FileOrigin::Main, LinkStyle::Absolute) => format!("{}/files/{tail}", shared.main_base),
        (FileOrigin::Second, _) => format!("{}/far/{tail}", shared.second_base),
        (FileOrigin::Third, _) => format!("{}/tok/{tail}", shared.third_base),
        (FileOrigin::Redirect, _) => format!("../../redirect/{tail}"),
    }
}

/// The href of a file's provenance as the upstream writes it, when it offers one: relative for a
/// project whose file links are, absolute otherwise.
fn provenance_href(shared: &Shared, project: &Project, file: &DistFile) -> Option<String> {
    file.provenance.as_ref()?;
    let tail = format!(
        "integrity/{}/{}/{}/provenance",
        project.normalized, file.version, file.filename
    );
    Some(match (project.origin, project.links) {
        (FileOrigin::Main, LinkStyle::Relative) => format!("../../{tail}"),
        _ => format!("{}/{tail}", shared.main_base),
    })
}

/// The API version a project page declares: 1.4 with a status (PEP 792), 1.3 with provenance
/// (PEP 740), 1.1 otherwise.
fn api_version(project: &Project) -> &'static str {
    if project.status.is_some() {
        "1.4"
    } else if project.files.iter().any(|f| f.provenance.is_some()) {
        "1.3"
    } else {
        "1.1"
    }
}

/// The metadata digest a page announces: none when the project publishes no digests at all (the
/// `.metadata` file is still served, as an index that never computed digests would).
fn published_metadata_sha256<'a>(project: &Project, file: &'a DistFile) -> Option<&'a str> {
    file.metadata_sha256.as_deref().filter(|_| !project.no_hash)
}

fn project_page(shared: &Shared, project: &Project, asked: &Asked) -> Response<Body> {
    page(
        shared,
        asked,
        || {
            let files: Vec<_> = project
                .files
                .iter()
                .map(|f| {
                    let metadata = match published_metadata_sha256(project, f) {
                        Some(sha) => serde_json::json!({ "sha256": sha }),
                        None => serde_json::json!(false),
                    };
                    let hashes = if project.no_hash { serde_json::json!({}) } else { serde_json::json!({ "sha256": f.sha256 }) };
                    let mut entry = serde_json::json!({
                        "filename": f.filename,
                        "url": file_href(shared, project, f),
                        "hashes": hashes,
                        "yanked": match &f.yanked { Some(reason) => serde_json::json!(reason), None => serde_json::json!(false) },
                        "core-metadata": metadata,
                        "dist-info-metadata": metadata,
                        "size": f.bytes.len(),
                        "upload-time": f.upload_time.now(),
                    });
                    if let (Some(rp), Some(object)) = (&f.requires_python, entry.as_object_mut()) {
                        object.insert("requires-python".into(), serde_json::json!(rp));
                    }
                    // Like the public index: a key on every file of a 1.3 page, null without.
                    if let (Some(object), true) = (entry.as_object_mut(), api_version(project) != "1.1") {
                        object.insert("provenance".into(), serde_json::json!(provenance_href(shared, project, f)));
                    }
                    entry
                })
                .collect();
            let mut page = serde_json::json!({
                "meta": { "api-version": api_version(project) },
                "name": project.normalized,
                "versions": project.versions,
                "files": files,
            });
            if let (Some(status), Some(object)) = (&project.status, page.as_object_mut()) {
                let mut state = serde_json::json!({ "status": status });
                if let (Some(reason), Some(fields)) =
                    (&project.status_reason, state.as_object_mut())
                {
                    fields.insert("reason".into(), serde_json::json!(reason));
                }
                object.insert("project-status".into(), state);
            }
            page.to_string()
        },
        || {
            let attr = |s: &str| html_escape::encode_double_quoted_attribute(s).into_owned();
            let mut status = String::new();
            if let Some(marker) = &project.status {
                status.push_str(&format!(
                    "<meta name=\"pypi:project-status\" content=\"{}\">",
                    attr(marker)
                ));
            }
            if let Some(reason) = &project.status_reason {
                status.push_str(&format!(
                    "<meta name=\"pypi:project-status-reason\" content=\"{}\">",
                    attr(reason)
                ));
            }
            let mut html = format!(
                "<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"{1}\">{2}\
                 <title>Links for {0}</title></head><body><h1>Links for {0}</h1>\n",
                html_escape::encode_text(&project.name),
                api_version(project),
                status,
            );
            for f in &project.files {
                let fragment = if project.no_hash {
                    String::new()
                } else {
                    format!("#sha256={}", f.sha256)
                };
                let mut a = format!(
                    "<a href=\"{}{fragment}\"",
                    attr(&file_href(shared, project, f))
                );
                if let Some(rp) = &f.requires_python {
                    a.push_str(&format!(" data-requires-python=\"{}\"", attr(rp)));
                }
                if let Some(reason) = &f.yanked {
                    a.push_str(&format!(" data-yanked=\"{}\"", attr(reason)));
                }
                if let Some(sha) = published_metadata_sha256(project, f) {
                    a.push_str(&format!(" data-dist-info-metadata=\"sha256={sha}\" data-core-metadata=\"sha256={sha}\""));
                }
                if let Some(href) = provenance_href(shared, project, f) {
                    a.push_str(&format!(" data-provenance=\"{}\"", attr(&href)));
                }
                a.push_str(&format!(
                    ">{}</a><br/>\n",
                    html_escape::encode_text(&f.filename)
                ));
                html.push_str(&a);
            }
            html.push_str("</body></html>\n");
            html
        },
    )
}

/// The page of a generated project: one file, relative link, declared sha256 and size, no
/// metadata file (it is not a real wheel). Its sha256 is computed on first use: a test that wants
/// the page quickly computes `Generated::sha256` first, outside the upstream's runtime.
fn generated_page(shared: &Shared, file: &'static Generated, asked: &Asked) -> Response<Body> {
    let href = format!("../../files/{}/{}", file.project, file.filename);
    page(
        shared,
        asked,
        || {
            serde_json::json!({
                "meta": { "api-version": "1.1" },
                "name": file.project,
                "versions": [file.version],
                "files": [{
                    "filename": file.filename,
                    "url": href,
                    "hashes": { "sha256": file.sha256() },
                    "yanked": false,
                    "core-metadata": false,
                    "dist-info-metadata": false,
                    "size": file.size,
                    "upload-time": "2024-06-01T00:00:00.000000Z",
                }],
            })
            .to_string()
        },
        || {
            format!(
                "<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.1\">\
                 <title>Links for {0}</title></head><body><h1>Links for {0}</h1>\n\
                 <a href=\"{href}#sha256={sha}\">{name}</a><br/>\n</body></html>\n",
                file.project,
                sha = file.sha256(),
                name = file.filename,
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn recorded_requests_never_print_the_credentials() {
        let request = RecordedRequest {
            origin: Origin::Main,
            method: "GET".into(),
            path: "/simple/".into(),
            authorization: Some(basic_auth_value("wgfx-secret-shown")),
            accept: None,
            if_none_match: None,
            if_modified_since: None,
            status: 200,
        };
        let printed = format!("{request:?}");
        assert!(
            !printed.contains(&basic_auth_value("wgfx-secret-shown")),
            "{printed}"
        );
        assert!(
            printed.contains("<redacted>") && printed.contains("/simple/"),
            "{printed}"
        );
    }

    #[test]
    fn etags_compare_weakly() {
        assert!(etag_matches("\"abc\"", "\"abc\""));
        assert!(etag_matches("W/\"abc\"", "\"abc\""));
        assert!(etag_matches("\"x\", \"abc\"", "\"abc\""));
        assert!(etag_matches("*", "\"abc\""));
        assert!(!etag_matches("\"abd\"", "\"abc\""));
    }

    #[test]
    fn accept_negotiation_honours_q_values() {
        assert!(!wants_json(None));
        assert!(wants_json(Some(JSON_MEDIA_TYPE)));
        assert!(wants_json(Some(
            "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
        )));
        assert!(!wants_json(Some(
            "application/vnd.pypi.simple.v1+json;q=0.2, text/html"
        )));
        assert!(!wants_json(Some("application/vnd.pypi.simple.v1+json;q=0")));
        assert!(!wants_json(Some("text/html")));
    }

    /// The upstream must behave like a private index, or the wheelgate tests prove nothing.
    #[test]
    fn the_fixture_upstream_behaves_like_a_private_index() {
        use crate::harness::http;
        let token = crate::harness::new_token();
        let mut upstream = Upstream::start(Mode::Json, &token);
        let auth = basic_auth_value(&token);
        let authed = [("authorization", auth.as_str())];
        let main = |path: &str| format!("http://{}{path}", upstream.main_addr);

        assert_eq!(
            http::get(&main("/simple/wgfx-app/"), &[]).status,
            StatusCode::UNAUTHORIZED
        );
        let wrong = basic_auth_value("wrong");
        assert_eq!(
            http::get(
                &main("/simple/wgfx-app/"),
                &[("authorization", wrong.as_str())]
            )
            .status,
            StatusCode::UNAUTHORIZED
        );

        let moved = http::get(&main("/simple/WGFX_App"), &authed);
        assert_eq!(
            (moved.status, moved.header("location")),
            (StatusCode::MOVED_PERMANENTLY, Some("/simple/wgfx-app/"))
        );
        assert_eq!(
            http::get(&main("/simple/wgfx-nothing/"), &authed).status,
            StatusCode::NOT_FOUND
        );

        let json = http::get(
            &main("/simple/wgfx-alpha/"),
            &[authed[0], ("accept", JSON_MEDIA_TYPE)],
        );
        let page = json.json();
        assert_eq!(
            page["files"][4]["yanked"].as_str(),
            Some("broken import; use 1.0.0 & wait for 1.2.1")
        );
        let html = http::get(&main("/simple/wgfx-app/"), &authed).text();
        assert!(
            html.contains("data-requires-python=\"&gt;=3.99\""),
            "{html}"
        );
        assert!(
            html.contains("href=\"../../files/wgfx-app/wgfx_app-1.0.0-py3-none-any.whl#sha256="),
            "{html}"
        );

        let hop = http::get(
            &main("/redirect/wgfx-hop/wgfx_hop-1.0.0-py3-none-any.whl"),
            &authed,
        );
        let target = format!(
            "http://{}/far/wgfx-hop/wgfx_hop-1.0.0-py3-none-any.whl",
            upstream.second_addr
        );
        assert_eq!(
            (hop.status, hop.header("location")),
            (StatusCode::FOUND, Some(target.as_str()))
        );
        let far = http::get(&target, &[]);
        assert_eq!(
            far.expect_ok(&target),
            catalog()
                .expect_project("wgfx-hop")
                .wheel("1.0.0")
                .bytes
                .as_slice()
        );

        let third = format!(
            "http://{}/tok/wgfx-tokenhost/wgfx_tokenhost-1.0.0-py3-none-any.whl",
            upstream.third_addr
        );
        assert_eq!(http::get(&third, &[]).status, StatusCode::UNAUTHORIZED);
        assert_eq!(http::get(&third, &authed).status, StatusCode::OK);

        let corrupt = catalog().expect_project("wgfx-corrupt").wheel("1.0.0");
        let url = main("/files/wgfx-corrupt/wgfx_corrupt-1.0.0-py3-none-any.whl");
        assert_eq!(http::get(&url, &authed).body, corrupt.corrupted_bytes());
        upstream.set_corrupt(false);
        assert_eq!(http::get(&url, &authed).body, corrupt.bytes);
        let metadata = http::get(&format!("{url}.metadata"), &authed);
        assert_eq!(Some(metadata.body), corrupt.metadata.clone());
        let head = http::head(&url, &authed);
        assert!(head.status == StatusCode::OK && head.body.is_empty());

        let raw = http::raw_get(upstream.main_addr, b"/simple/wgfx-nothing/").expect("an answer");
        assert_eq!(raw.status, 401, "raw requests carry no token");

        upstream.set_token("rotated");
        assert_eq!(
            http::get(&main("/simple/"), &authed).status,
            StatusCode::UNAUTHORIZED
        );
        let log = upstream.requests();
        assert!(log
            .iter()
            .any(|r| r.origin == Origin::Second && r.authorization.is_none()));
        assert!(log.iter().any(|r| r.method == "HEAD"));
        assert_eq!(
            upstream.requests_for("/simple/wgfx-alpha/")[0]
                .accept
                .as_deref(),
            Some(JSON_MEDIA_TYPE)
        );
        upstream.stop();
    }

    #[test]
    fn pages_revalidate_and_the_main_origin_can_go_down() {
        use crate::harness::http;
        let token = crate::harness::new_token();
        let upstream = Upstream::start(Mode::Json, &token);
        let auth = basic_auth_value(&token);
        let url = format!("http://{}/simple/wgfx-app/", upstream.main_addr);
        let json = [
            ("authorization", auth.as_str()),
            ("accept", JSON_MEDIA_TYPE),
        ];
        let first = http::get(&url, &json);
        let etag = first
            .header("etag")
            .expect("pages carry an ETag")
            .to_owned();
        assert_eq!(first.header("last-modified"), Some(PAGES_LAST_MODIFIED));
        let html_etag = http::get(&url, &json[..1])
            .header("etag")
            .map(str::to_owned);
        assert_ne!(
            html_etag.as_deref(),
            Some(etag.as_str()),
            "each representation has its own ETag"
        );

        let revalidated = http::get(
            &url,
            &[json[0], json[1], ("if-none-match", &format!("W/{etag}"))],
        );
        assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
        assert!(revalidated.body.is_empty());
        assert_eq!(revalidated.header("etag"), Some(etag.as_str()));
        let changed = http::get(&url, &[json[0], json[1], ("if-none-match", "\"other\"")]);
        assert_eq!(
            changed.status,
            StatusCode::OK,
            "a stale validator gets the page"
        );
        let since = http::get(
            &url,
            &[json[0], json[1], ("if-modified-since", PAGES_LAST_MODIFIED)],
        );
        assert_eq!(since.status, StatusCode::NOT_MODIFIED);

        upstream.set_down(true);
        assert_eq!(
            http::get(&url, &json).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        upstream.set_down(false);
        assert_eq!(http::get(&url, &json).status, StatusCode::OK);

        let log = upstream.requests_for("/simple/wgfx-app/");
        let statuses: Vec<u16> = log.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 200, 304, 200, 304, 503, 200]);
        assert_eq!(log.iter().filter(|r| r.is_conditional()).count(), 3);
        assert_eq!(
            log[2].if_none_match.as_deref(),
            Some(format!("W/{etag}").as_str())
        );
    }

    #[test]
    fn generated_files_stream_and_wait_at_the_gate() {
        use crate::harness::http;
        let token = crate::harness::new_token();
        let upstream = Upstream::start(Mode::Json, &token);
        let auth = basic_auth_value(&token);
        let authed = [("authorization", auth.as_str())];
        let main = |path: &str| format!("http://{}{path}", upstream.main_addr);

        let page = http::get(
            &main("/simple/wgfx-badhash/"),
            &[authed[0], ("accept", JSON_MEDIA_TYPE)],
        )
        .json();
        let bad = generated::expect("wgfx-badhash");
        assert_eq!(
            page["files"][0]["hashes"]["sha256"].as_str(),
            Some(bad.sha256())
        );
        assert_eq!(page["files"][0]["size"].as_u64(), Some(bad.size));
        let href = page["files"][0]["url"].as_str().expect("a url");
        let url = crate::harness::resolve(&main("/simple/wgfx-badhash/"), href).to_string();
        let corrupt = http::get(&url, &authed);
        assert_eq!(
            corrupt.header("content-length"),
            Some(bad.size.to_string().as_str())
        );
        assert_eq!(sha256_hex(corrupt.expect_ok(&url)), bad.corrupted_sha256());
        upstream.set_corrupt(false);
        assert_eq!(
            sha256_hex(http::get(&url, &authed).expect_ok(&url)),
            bad.sha256()
        );

        // The gated file: the first part arrives, the rest only after the release.
        let (slow, after) = generated::expect_gated();
        let received = Arc::new(AtomicU64::new(0));
        let url = main(&slow.path());
        let client = {
            let (received, auth) = (Arc::clone(&received), auth.clone());
            std::thread::spawn(move || {
                let mut hasher = Sha256::new();
                let response = http::get_streaming(
                    &url,
                    &[("authorization", auth.as_str())],
                    &mut |data: &[u8]| {
                        received.fetch_add(data.len() as u64, Ordering::SeqCst);
                        hasher.update(data);
                    },
                );
                (response, hex::encode(hasher.finalize()))
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while received.load(Ordering::SeqCst) < after && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            received.load(Ordering::SeqCst),
            after,
            "exactly the first part arrives before the release"
        );
        upstream.release_gate();
        let (response, digest) = client.join().expect("the client thread");
        let response = response.expect("a response");
        assert!(response.body_error.is_none(), "{:?}", response.body_error);
        assert_eq!(
            (response.received, digest.as_str()),
            (slow.size, slow.sha256())
        );
    }

    /// Provenance and status reach both formats of the fixture's pages, and the provenance links
    /// lead to the provenance bytes; without this the wheelgate tests of them prove nothing.
    #[test]
    fn the_fixture_upstream_offers_provenance_and_status() {
        use crate::harness::{http, resolve};
        let token = crate::harness::new_token();
        let upstream = Upstream::start(Mode::Json, &token);
        let auth = basic_auth_value(&token);
        let page_url = format!("http://{}/simple/wgfx-archived/", upstream.main_addr);
        let json = http::get(
            &page_url,
            &[("authorization", &auth), ("accept", JSON_MEDIA_TYPE)],
        );
        let page = json.json();
        assert_eq!(page["meta"]["api-version"], "1.4");
        assert_eq!(page["project-status"]["status"], "archived");
        let archived = catalog().expect_project("wgfx-archived");
        let wheel = archived.wheel("1.0");
        let href = page["files"][0]["provenance"]
            .as_str()
            .expect("a provenance link");
        let target = resolve(&page_url, href).to_string();
        assert_eq!(
            http::get(&target, &[("authorization", &auth)]).expect_ok(&target),
            wheel.provenance.as_deref().expect("fixture provenance")
        );
        let html = http::get(&page_url, &[("authorization", &auth)]).text();
        assert!(
            html.contains("<meta name=\"pypi:project-status\" content=\"archived\">"),
            "{html}"
        );
        assert!(
            html.contains(&format!("data-provenance=\"{href}\"")),
            "{html}"
        );

        let attested = format!("http://{}/simple/wgfx-attested/", upstream.main_addr);
        let page = http::get(
            &attested,
            &[("authorization", &auth), ("accept", JSON_MEDIA_TYPE)],
        )
        .json();
        assert_eq!(page["meta"]["api-version"], "1.3");
        assert!(page.get("project-status").is_none());
        let relative: Vec<_> = page["files"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| f["provenance"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(relative.iter().filter(|p| p.is_some()).count(), 2, "{page}");
        assert!(relative
            .iter()
            .flatten()
            .all(|p| p.starts_with("../../integrity/")));
        let missing = format!(
            "http://{}/integrity/wgfx-attested/1.1/wgfx_attested-1.1-py3-none-any.whl/provenance",
            upstream.main_addr
        );
        assert_eq!(
            http::get(&missing, &[("authorization", &auth)]).status,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn basic_auth_is_the_token_user() {
        // base64("__token__:abc")
        assert_eq!(basic_auth_value("abc"), "Basic X190b2tlbl9fOmFiYw==");
    }
}
