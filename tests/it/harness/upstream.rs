//! The fixture upstream: an in-process simple index on 127.0.0.1 serving the generated fixtures.
//!
//! It behaves like a private index would, because that is what wheelgate must cope with: it
//! requires `__token__` basic auth on its own origin, redirects non-normalised project URLs, answers
//! PEP 691 JSON only when asked (or never, in `HtmlOnly` mode), mixes relative and absolute links,
//! keeps some files on other origins (one of them behind a cross-origin 302) and can serve a file
//! whose bytes betray its declared sha256. Every request on every origin is recorded so that tests
//! can check who was sent the credentials.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::fixtures::{catalog, normalize, Catalog, DistFile, FileKind, FileOrigin, LinkStyle, Project};

/// The PEP 691 JSON media type.
pub const JSON_MEDIA_TYPE: &str = "application/vnd.pypi.simple.v1+json";
/// The PEP 691 HTML media type.
pub const HTML_MEDIA_TYPE: &str = "application/vnd.pypi.simple.v1+html";

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
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub origin: Origin,
    pub method: String,
    /// Path and query exactly as received.
    pub path: String,
    pub authorization: Option<String>,
    pub accept: Option<String>,
}

struct Shared {
    mode: Mode,
    catalog: &'static Catalog,
    token: Mutex<String>,
    corrupt: AtomicBool,
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
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
            l.local_addr().unwrap_or_else(|e| panic!("fixture listener has no local address: {e}"))
        };
        let (main_addr, second_addr, third_addr) = (addr(&main), addr(&second), addr(&third));
        let shared = Arc::new(Shared {
            mode,
            catalog: catalog(),
            token: Mutex::new(token.to_owned()),
            corrupt: AtomicBool::new(true),
            log: Mutex::new(Vec::new()),
            main_base: format!("http://{main_addr}"),
            second_base: format!("http://{second_addr}"),
            third_base: format!("http://{third_addr}"),
        });
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        for (listener, origin) in [(main, Origin::Main), (second, Origin::Second), (third, Origin::Third)] {
            let shared = Arc::clone(&shared);
            let shutdown_rx = shutdown_rx.clone();
            let _guard = runtime.enter();
            let listener = tokio::net::TcpListener::from_std(listener)
                .unwrap_or_else(|e| panic!("cannot register the fixture listener with tokio: {e}"));
            runtime.spawn(accept_loop(listener, shared, origin, shutdown_rx));
        }
        Upstream { shared, runtime: Some(runtime), shutdown, main_addr, second_addr, third_addr }
    }

    /// The index URL a user would give pip: `http://127.0.0.1:<port>/simple/`.
    pub fn index_url(&self) -> String {
        format!("{}/simple/", self.shared.main_base)
    }

    /// The index URL with the current token in its userinfo, for pointing clients at it directly.
    pub fn index_url_with_token(&self) -> String {
        format!("http://__token__:{}@{}/simple/", self.token(), self.main_addr)
    }

    pub fn third_addr(&self) -> SocketAddr {
        self.third_addr
    }

    /// Every `host:port` the upstream listens on, to check that no page leaks them.
    pub fn host_ports(&self) -> [String; 3] {
        [self.main_addr.to_string(), self.second_addr.to_string(), self.third_addr.to_string()]
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

    /// Every request recorded so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).clone()
    }

    /// The recorded requests that reached one origin.
    pub fn requests_on(&self, origin: Origin) -> Vec<RecordedRequest> {
        self.requests().into_iter().filter(|r| r.origin == origin).collect()
    }

    /// The recorded requests whose path (without query) is exactly `path`.
    pub fn requests_for(&self, path: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.split('?').next() == Some(path))
            .collect()
    }

    /// Stops accepting and tears the listeners down (also done on drop).
    pub fn stop(mut self) {
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
    request.headers().get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn handle(shared: &Shared, origin: Origin, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| request.uri().path().to_owned());
    let authorization = header_string(request, header::AUTHORIZATION);
    let accept = header_string(request, header::ACCEPT);
    lock(&shared.log).push(RecordedRequest {
        origin,
        method: request.method().to_string(),
        path: path.clone(),
        authorization: authorization.clone(),
        accept: accept.clone(),
    });

    let response = if origin != Origin::Second
        && authorization.as_deref() != Some(basic_auth_value(&lock(&shared.token)).as_str())
    {
        let mut response = text(StatusCode::UNAUTHORIZED, "401 Unauthorized: a valid __token__ is required\n");
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"wgfx fixture index\""));
        response
    } else {
        let path = request.uri().path();
        match origin {
            Origin::Main => route_main(shared, path, accept.as_deref()),
            Origin::Second => route_files(shared, path, "/far/", &[FileOrigin::Second, FileOrigin::Redirect]),
            Origin::Third => route_files(shared, path, "/tok/", &[FileOrigin::Third]),
        }
    };
    if request.method() == Method::HEAD {
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, Full::new(Bytes::new()));
    }
    response
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body.as_bytes().to_vec())
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

fn redirect(status: StatusCode, location: &str) -> Response<Full<Bytes>> {
    let mut response = text(status, "redirecting\n");
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn route_main(shared: &Shared, path: &str, accept: Option<&str>) -> Response<Full<Bytes>> {
    if path == "/simple" {
        return redirect(StatusCode::MOVED_PERMANENTLY, "/simple/");
    }
    if path == "/simple/" {
        return index_page(shared, accept);
    }
    if let Some(rest) = path.strip_prefix("/simple/") {
        let name = rest.strip_suffix('/').unwrap_or(rest);
        if name.is_empty() || name.contains('/') {
            return text(StatusCode::NOT_FOUND, "404 Not Found\n");
        }
        let normalized = normalize(name);
        if normalized != name || !rest.ends_with('/') {
            return redirect(StatusCode::MOVED_PERMANENTLY, &format!("/simple/{normalized}/"));
        }
        return match shared.catalog.project(&normalized) {
            Some(project) => project_page(shared, project, accept),
            None => text(StatusCode::NOT_FOUND, "404 Not Found: no such project\n"),
        };
    }
    if let Some(rest) = path.strip_prefix("/redirect/") {
        if find_file(shared, rest, &[FileOrigin::Redirect]).is_some() {
            return redirect(StatusCode::FOUND, &format!("{}/far/{rest}", shared.second_base));
        }
        return text(StatusCode::NOT_FOUND, "404 Not Found\n");
    }
    route_files(shared, path, "/files/", &[FileOrigin::Main])
}

/// Looks up `<project>/<filename>[.metadata]`; the bool says whether the metadata was asked for.
fn find_file<'a>(
    shared: &'a Shared,
    rest: &str,
    origins: &[FileOrigin],
) -> Option<(&'a Project, &'a DistFile, bool)> {
    let (project, filename) = rest.split_once('/')?;
    let project = shared.catalog.project(project).filter(|p| origins.contains(&p.origin))?;
    let (filename, wants_metadata) = match filename.strip_suffix(".metadata") {
        Some(stripped) => (stripped, true),
        None => (filename, false),
    };
    let file = project.files.iter().find(|f| f.filename == filename)?;
    Some((project, file, wants_metadata))
}

fn route_files(shared: &Shared, path: &str, prefix: &str, origins: &[FileOrigin]) -> Response<Full<Bytes>> {
    let Some(rest) = path.strip_prefix(prefix) else {
        return text(StatusCode::NOT_FOUND, "404 Not Found\n");
    };
    match find_file(shared, rest, origins) {
        Some((_, file, true)) => match &file.metadata {
            Some(metadata) => respond(StatusCode::OK, "application/octet-stream", metadata.clone()),
            None => text(StatusCode::NOT_FOUND, "404 Not Found: no metadata for this file\n"),
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

fn page(shared: &Shared, accept: Option<&str>, json: impl FnOnce() -> String, html: impl FnOnce() -> String) -> Response<Full<Bytes>> {
    let mut response = if shared.mode == Mode::Json && wants_json(accept) {
        respond(StatusCode::OK, JSON_MEDIA_TYPE, json().into_bytes())
    } else {
        let content_type = match accept {
            Some(a) if shared.mode == Mode::Json && a.contains(HTML_MEDIA_TYPE) => HTML_MEDIA_TYPE,
            _ => "text/html; charset=utf-8",
        };
        respond(StatusCode::OK, content_type, html().into_bytes())
    };
    if shared.mode == Mode::Json {
        response.headers_mut().insert(header::VARY, HeaderValue::from_static("Accept"));
    }
    response
}

fn index_page(shared: &Shared, accept: Option<&str>) -> Response<Full<Bytes>> {
    let projects = &shared.catalog.projects;
    page(
        shared,
        accept,
        || {
            let names: Vec<_> = projects.iter().map(|p| serde_json::json!({ "name": p.name })).collect();
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

fn project_page(shared: &Shared, project: &Project, accept: Option<&str>) -> Response<Full<Bytes>> {
    page(
        shared,
        accept,
        || {
            let files: Vec<_> = project
                .files
                .iter()
                .map(|f| {
                    let metadata = match &f.metadata_sha256 {
                        Some(sha) => serde_json::json!({ "sha256": sha }),
                        None => serde_json::json!(false),
                    };
                    let mut entry = serde_json::json!({
                        "filename": f.filename,
                        "url": file_href(shared, project, f),
                        "hashes": { "sha256": f.sha256 },
                        "yanked": match &f.yanked { Some(reason) => serde_json::json!(reason), None => serde_json::json!(false) },
                        "core-metadata": metadata,
                        "dist-info-metadata": metadata,
                        "size": f.bytes.len(),
                        "upload-time": f.upload_time,
                    });
                    if let (Some(rp), Some(object)) = (&f.requires_python, entry.as_object_mut()) {
                        object.insert("requires-python".into(), serde_json::json!(rp));
                    }
                    entry
                })
                .collect();
            serde_json::json!({
                "meta": { "api-version": "1.1" },
                "name": project.normalized,
                "versions": project.versions,
                "files": files,
            })
            .to_string()
        },
        || {
            let attr = |s: &str| html_escape::encode_double_quoted_attribute(s).into_owned();
            let mut html = format!(
                "<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.1\">\
                 <title>Links for {0}</title></head><body><h1>Links for {0}</h1>\n",
                html_escape::encode_text(&project.name)
            );
            for f in &project.files {
                let mut a = format!("<a href=\"{}#sha256={}\"", attr(&file_href(shared, project, f)), f.sha256);
                if let Some(rp) = &f.requires_python {
                    a.push_str(&format!(" data-requires-python=\"{}\"", attr(rp)));
                }
                if let Some(reason) = &f.yanked {
                    a.push_str(&format!(" data-yanked=\"{}\"", attr(reason)));
                }
                if let Some(sha) = &f.metadata_sha256 {
                    a.push_str(&format!(" data-dist-info-metadata=\"sha256={sha}\" data-core-metadata=\"sha256={sha}\""));
                }
                a.push_str(&format!(">{}</a><br/>\n", html_escape::encode_text(&f.filename)));
                html.push_str(&a);
            }
            html.push_str("</body></html>\n");
            html
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation_honours_q_values() {
        assert!(!wants_json(None));
        assert!(wants_json(Some(JSON_MEDIA_TYPE)));
        assert!(wants_json(Some("application/vnd.pypi.simple.v1+json, text/html;q=0.1")));
        assert!(!wants_json(Some("application/vnd.pypi.simple.v1+json;q=0.2, text/html")));
        assert!(!wants_json(Some("application/vnd.pypi.simple.v1+json;q=0")));
        assert!(!wants_json(Some("text/html")));
    }

    /// The upstream must behave like a private index, or the wheelgate tests prove nothing.
    #[test]
    fn the_fixture_upstream_behaves_like_a_private_index() {
        use crate::harness::http;
        let token = crate::harness::new_token();
        let upstream = Upstream::start(Mode::Json, &token);
        let auth = basic_auth_value(&token);
        let authed = [("authorization", auth.as_str())];
        let main = |path: &str| format!("http://{}{path}", upstream.main_addr);

        assert_eq!(http::get(&main("/simple/wgfx-app/"), &[]).status, StatusCode::UNAUTHORIZED);
        let wrong = basic_auth_value("wrong");
        assert_eq!(http::get(&main("/simple/wgfx-app/"), &[("authorization", wrong.as_str())]).status, StatusCode::UNAUTHORIZED);

        let moved = http::get(&main("/simple/WGFX_App"), &authed);
        assert_eq!((moved.status, moved.header("location")), (StatusCode::MOVED_PERMANENTLY, Some("/simple/wgfx-app/")));
        assert_eq!(http::get(&main("/simple/wgfx-nothing/"), &authed).status, StatusCode::NOT_FOUND);

        let json = http::get(&main("/simple/wgfx-alpha/"), &[authed[0], ("accept", JSON_MEDIA_TYPE)]);
        let page = json.json();
        assert_eq!(page["files"][4]["yanked"].as_str(), Some("broken import; use 1.0.0 & wait for 1.2.1"));
        let html = http::get(&main("/simple/wgfx-app/"), &authed).text();
        assert!(html.contains("data-requires-python=\"&gt;=3.99\""), "{html}");
        assert!(html.contains("href=\"../../files/wgfx-app/wgfx_app-1.0.0-py3-none-any.whl#sha256="), "{html}");

        let hop = http::get(&main("/redirect/wgfx-hop/wgfx_hop-1.0.0-py3-none-any.whl"), &authed);
        let target = format!("http://{}/far/wgfx-hop/wgfx_hop-1.0.0-py3-none-any.whl", upstream.second_addr);
        assert_eq!((hop.status, hop.header("location")), (StatusCode::FOUND, Some(target.as_str())));
        let far = http::get(&target, &[]);
        assert_eq!(far.expect_ok(&target), catalog().expect_project("wgfx-hop").wheel("1.0.0").bytes.as_slice());

        let third = format!("http://{}/tok/wgfx-tokenhost/wgfx_tokenhost-1.0.0-py3-none-any.whl", upstream.third_addr);
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
        assert_eq!(http::get(&main("/simple/"), &authed).status, StatusCode::UNAUTHORIZED);
        let log = upstream.requests();
        assert!(log.iter().any(|r| r.origin == Origin::Second && r.authorization.is_none()));
        assert!(log.iter().any(|r| r.method == "HEAD"));
        assert_eq!(upstream.requests_for("/simple/wgfx-alpha/")[0].accept.as_deref(), Some(JSON_MEDIA_TYPE));
        upstream.stop();
    }

    #[test]
    fn basic_auth_is_the_token_user() {
        // base64("__token__:abc")
        assert_eq!(basic_auth_value("abc"), "Basic X190b2tlbl9fOmFiYw==");
    }
}
