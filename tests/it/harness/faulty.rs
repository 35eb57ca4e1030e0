//! A fault-injecting upstream: a simple index on 127.0.0.1 that speaks HTTP/1.1 by hand over tokio
//! `TcpStream`s, so that it can misbehave below anything hyper would let a server do.
//!
//! The hardening tests (issue 16) need an upstream that resets a connection mid-body (`SO_LINGER`
//! 0), closes early with or without a `Content-Length`, sends more bytes than it announced, sends
//! bytes that betray the declared sha256, answers 5xx, 401 or 403, never answers at all, drips its
//! body, or serves a page that is not a page. A hyper server frames its responses itself, so none
//! of that can be written with one; this server writes every byte of every response.
//!
//! It serves real projects: the wheels and sdists of the fixture catalog (`fixtures.rs`) and the
//! generated blob-sized files (`generated.rs`), on project pages with their sha256 (none for a
//! `no_hash` project) and their size, in PEP 691 JSON when asked and HTML otherwise, with an ETag
//! that a conditional request can match (304). Each request path can be *scripted*: a queue of
//! [`Fault`]s, one per request, after which the path is healthy again (or a fault that stays until
//! the test heals the path). Every request is recorded with the fault it got, so a test can tell
//! how many attempts wheelgate made and what they carried.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::clients::ClientRun;
use super::fixtures::{catalog, sha256_hex};
use super::generated;
use super::upstream::JSON_MEDIA_TYPE;
use super::wheelgate::{run_for, RemoteConfig, Wheelgate};
use super::{
    blob_path_in, file_url_on, files_under, new_token, wait_until, write_file, SecretFile,
    TokenLayout,
};

/// The largest request head read; wheelgate's are a few hundred bytes.
const MAX_HEAD: usize = 64 * 1024;

/// What the upstream does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The true answer, properly framed (a 304 when the request's `If-None-Match` matches).
    Healthy,
    /// Waits this long before the status line, then answers as `Healthy`.
    Delay(Duration),
    /// The head with the true `Content-Length`, `after` body bytes, then a TCP reset
    /// (`SO_LINGER` 0).
    Reset { after: usize },
    /// The head with the true `Content-Length`, `after` body bytes, then a clean close (FIN).
    Truncate { after: usize },
    /// No `Content-Length` (`Connection: close`, the body ends when the connection does): `after`
    /// body bytes, or the whole body when None, then a clean close.
    CloseDelimited { after: Option<usize> },
    /// The head with the true `Content-Length`, the whole body, then `extra` more bytes on the
    /// connection, which stays open.
    Overlong { extra: usize },
    /// A `Content-Length` `by` bytes short of the body, then the whole body; the connection
    /// stays open.
    Underdeclared { by: usize },
    /// The true framing and length with one byte flipped in the middle of the body.
    WrongBytes,
    /// This status with a short plain-text body (and a `WWW-Authenticate` challenge for 401).
    Status(u16),
    /// This status with the request head (every header, `Authorization` included) echoed in the
    /// body, as careless servers' error pages do.
    EchoRequest(u16),
    /// A redirect (`status`, such as 302) to `location`.
    Redirect { status: u16, location: String },
    /// Reads the request and never answers; the connection stays open until the upstream stops.
    NeverStarts,
    /// The head at once, then `bytes` body bytes every `every`.
    Drip { every: Duration, bytes: usize },
    /// A 200 with this content type and body instead of the true resource.
    Replace { content_type: String, body: Vec<u8> },
}

/// What the upstream saw of one request, and the fault it answered with.
#[derive(Clone)]
pub struct FaultyRequest {
    pub method: String,
    /// Path and query exactly as received.
    pub path: String,
    pub authorization: Option<String>,
    pub if_none_match: Option<String>,
    pub fault: Fault,
}

/// Failure messages print the log: the credentials are shown only as present or absent.
impl std::fmt::Debug for FaultyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("if_none_match", &self.if_none_match)
            .field("fault", &self.fault)
            .finish()
    }
}

/// A path's script: faults for the next requests, then `then` for every later one.
struct Script {
    queue: VecDeque<Fault>,
    then: Fault,
}

/// One servable thing: a page representation or a file.
#[derive(Clone)]
struct Resource {
    content_type: String,
    body: Vec<u8>,
    etag: Option<String>,
}

/// A project's page in both formats.
struct Pages {
    json: Resource,
    html: Resource,
}

struct Shared {
    /// The token the upstream expects as `__token__` basic auth; None: no auth.
    token: Option<String>,
    index: Pages,
    pages: HashMap<String, Pages>,
    files: HashMap<String, Resource>,
    scripts: Mutex<HashMap<String, Script>>,
    log: Mutex<Vec<FaultyRequest>>,
}

/// Locks a mutex even if a panicking test thread poisoned it: the data stays valid.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running fault-injecting upstream. Dropping it stops it (and drops every open connection).
pub struct Faulty {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
}

/// The `Authorization` value of `__token__:<token>`.
pub fn token_authorization(token: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("__token__:{token}"));
    format!("Basic {encoded}")
}

fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", sha256_hex(body).get(..32).unwrap_or_default())
}

fn resource(content_type: &str, body: Vec<u8>, with_etag: bool) -> Resource {
    Resource {
        content_type: content_type.to_owned(),
        etag: with_etag.then(|| etag_of(&body)),
        body,
    }
}

/// One file as a project page lists it.
struct Listed {
    filename: String,
    bytes: Vec<u8>,
    sha256: Option<String>,
    requires_python: Option<String>,
}

fn project_pages(project: &str, versions: &[String], files: &[Listed]) -> Pages {
    let entries: Vec<_> = files
        .iter()
        .map(|f| {
            let hashes = match &f.sha256 {
                Some(sha) => serde_json::json!({ "sha256": sha }),
                None => serde_json::json!({}),
            };
            let mut entry = serde_json::json!({
                "filename": f.filename,
                "url": format!("../../files/{project}/{}", f.filename),
                "hashes": hashes,
                "yanked": false,
                "size": f.bytes.len(),
                "upload-time": "2024-06-01T00:00:00.000000Z",
            });
            if let (Some(rp), Some(object)) = (&f.requires_python, entry.as_object_mut()) {
                object.insert("requires-python".into(), serde_json::json!(rp));
            }
            entry
        })
        .collect();
    let json = serde_json::json!({
        "meta": { "api-version": "1.1" },
        "name": project,
        "versions": versions,
        "files": entries,
    })
    .to_string();
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.1\">\
         <title>Links for {project}</title></head><body><h1>Links for {project}</h1>\n"
    );
    for f in files {
        let fragment = f
            .sha256
            .as_ref()
            .map(|sha| format!("#sha256={sha}"))
            .unwrap_or_default();
        let requires = f
            .requires_python
            .as_ref()
            .map(|rp| {
                format!(
                    " data-requires-python=\"{}\"",
                    html_escape::encode_double_quoted_attribute(rp)
                )
            })
            .unwrap_or_default();
        html.push_str(&format!(
            "<a href=\"../../files/{project}/{0}{fragment}\"{requires}>{0}</a><br/>\n",
            f.filename
        ));
    }
    html.push_str("</body></html>\n");
    Pages {
        json: resource(JSON_MEDIA_TYPE, json.into_bytes(), true),
        html: resource("text/html; charset=utf-8", html.into_bytes(), true),
    }
}

fn index_pages(projects: &[&str]) -> Pages {
    let names: Vec<_> = projects
        .iter()
        .map(|name| serde_json::json!({ "name": name }))
        .collect();
    let json =
        serde_json::json!({ "meta": { "api-version": "1.1" }, "projects": names }).to_string();
    let mut html = String::from(
        "<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.1\">\
         <title>Simple index</title></head><body>\n",
    );
    for name in projects {
        html.push_str(&format!("<a href=\"/simple/{name}/\">{name}</a><br/>\n"));
    }
    html.push_str("</body></html>\n");
    Pages {
        json: resource(JSON_MEDIA_TYPE, json.into_bytes(), true),
        html: resource("text/html; charset=utf-8", html.into_bytes(), true),
    }
}

/// The files of a fixture project or of a generated one, as its page lists them.
fn listed_files(project: &str) -> (Vec<String>, Vec<Listed>) {
    if let Some(file) = generated::find(project) {
        assert!(
            file.size <= 16 << 20,
            "the faulty upstream holds its files in memory: {project} is too big"
        );
        let bytes = file.bytes(0, file.size);
        let listed = Listed {
            filename: file.filename.to_owned(),
            sha256: Some(file.sha256().to_owned()),
            bytes,
            requires_python: None,
        };
        return (vec![file.version.to_owned()], vec![listed]);
    }
    let fixture = catalog().expect_project(project);
    let files = fixture
        .files
        .iter()
        .map(|f| Listed {
            filename: f.filename.clone(),
            bytes: f.bytes.clone(),
            sha256: (!fixture.no_hash).then(|| f.sha256.clone()),
            requires_python: f.requires_python.clone(),
        })
        .collect();
    (fixture.versions.clone(), files)
}

impl Faulty {
    /// Starts the upstream serving `projects` (normalised names of fixture or generated
    /// projects), requiring `__token__:<token>` basic auth when `token` is Some.
    pub fn start(projects: &[&str], token: Option<&str>) -> Faulty {
        let mut pages = HashMap::new();
        let mut files = HashMap::new();
        for project in projects {
            let (versions, listed) = listed_files(project);
            for file in &listed {
                let content_type = match file.filename.ends_with(".whl") {
                    true => "application/zip",
                    false => "application/gzip",
                };
                files.insert(
                    format!("/files/{project}/{}", file.filename),
                    resource(content_type, file.bytes.clone(), false),
                );
            }
            pages.insert(
                format!("/simple/{project}/"),
                project_pages(project, &versions, &listed),
            );
        }
        let shared = Arc::new(Shared {
            token: token.map(str::to_owned),
            index: index_pages(projects),
            pages,
            files,
            scripts: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("faulty-upstream")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the faulty upstream's runtime: {e}"));
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("cannot bind the faulty upstream on 127.0.0.1:0: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("cannot make the faulty listener non-blocking: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the faulty listener has no address: {e}"));
        {
            let _guard = runtime.enter();
            let listener = tokio::net::TcpListener::from_std(listener)
                .unwrap_or_else(|e| panic!("cannot register the faulty listener: {e}"));
            let shared = Arc::clone(&shared);
            runtime.spawn(async move {
                loop {
                    // An accept error concerns one connection attempt; keep serving.
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(serve_connection(Arc::clone(&shared), stream));
                }
            });
        }
        Faulty {
            shared,
            runtime: Some(runtime),
            addr,
        }
    }

    /// The index URL a user would give pip: `http://127.0.0.1:<port>/simple/`.
    pub fn index_url(&self) -> String {
        format!("http://{}/simple/", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `/simple/<project>/`.
    pub fn page_path(project: &str) -> String {
        format!("/simple/{project}/")
    }

    /// `/files/<project>/<filename>`.
    pub fn file_path(project: &str, filename: &str) -> String {
        format!("/files/{project}/{filename}")
    }

    /// The bytes the upstream serves (when healthy) at `path`; panics for an unknown file.
    pub fn file_bytes(&self, path: &str) -> Vec<u8> {
        self.shared
            .files
            .get(path)
            .map(|r| r.body.clone())
            .unwrap_or_else(|| panic!("the faulty upstream serves no file at {path}"))
    }

    /// The next requests for `path` get `faults`, one each, in order; later ones are healthy.
    pub fn script(&self, path: &str, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.shared.scripts).insert(
            path.to_owned(),
            Script {
                queue: faults.into_iter().collect(),
                then: Fault::Healthy,
            },
        );
    }

    /// Every request for `path` gets `fault` until `heal`.
    pub fn always(&self, path: &str, fault: Fault) {
        lock(&self.shared.scripts).insert(
            path.to_owned(),
            Script {
                queue: VecDeque::new(),
                then: fault,
            },
        );
    }

    /// `path` is healthy again.
    pub fn heal(&self, path: &str) {
        lock(&self.shared.scripts).remove(path);
    }

    /// Every request recorded so far, in the order they arrived.
    pub fn requests(&self) -> Vec<FaultyRequest> {
        lock(&self.shared.log).clone()
    }

    /// The recorded requests whose path (without query) is `path`.
    pub fn requests_for(&self, path: &str) -> Vec<FaultyRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.split('?').next() == Some(path))
            .collect()
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// A request head, parsed.
struct Head {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request head from `stream` (bytes after it stay in `buffer`); None when the
/// connection ends or sends something that is not a request head.
async fn read_head(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<(Head, Vec<u8>)> {
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let raw: Vec<u8> = buffer.drain(..end + 4).collect();
            let text = String::from_utf8_lossy(&raw).into_owned();
            let mut lines = text.split("\r\n");
            let mut request_line = lines.next()?.split(' ');
            let method = request_line.next()?.to_owned();
            let target = request_line.next()?.to_owned();
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect();
            return Some((
                Head {
                    method,
                    target,
                    headers,
                },
                raw,
            ));
        }
        if buffer.len() > MAX_HEAD {
            return None;
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
    }
}

async fn serve_connection(shared: Arc<Shared>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buffer = Vec::new();
    while let Some((head, raw)) = read_head(&mut stream, &mut buffer).await {
        let keep_open = answer(&shared, &mut stream, &head, &raw).await;
        if stream.linger().ok().flatten() == Some(Duration::ZERO) {
            // A reset: dropping the socket sends the RST; a FIN first would end the body cleanly.
            return;
        }
        let client_closes = head
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if !keep_open || client_closes {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// What a request asks for, once routed.
enum Target {
    Found(Resource),
    Missing,
}

fn route(shared: &Shared, path: &str, accept: Option<&str>) -> Target {
    let wants_json = accept.is_some_and(|a| a.contains(JSON_MEDIA_TYPE));
    let pick = |pages: &Pages| {
        if wants_json {
            pages.json.clone()
        } else {
            pages.html.clone()
        }
    };
    if path == "/simple/" {
        return Target::Found(pick(&shared.index));
    }
    if let Some(pages) = shared.pages.get(path) {
        return Target::Found(pick(pages));
    }
    match shared.files.get(path) {
        Some(file) => Target::Found(file.clone()),
        None => Target::Missing,
    }
}

/// Answers one request; returns whether the connection may carry another.
async fn answer(shared: &Shared, stream: &mut TcpStream, head: &Head, raw: &[u8]) -> bool {
    let path = head.target.split('?').next().unwrap_or_default().to_owned();
    let authorization = head.header("authorization").map(str::to_owned);
    let authorized = match &shared.token {
        Some(token) => authorization.as_deref() == Some(token_authorization(token).as_str()),
        None => true,
    };
    let fault = if !authorized {
        Fault::Status(401)
    } else {
        let mut scripts = lock(&shared.scripts);
        match scripts.get_mut(&path) {
            Some(script) => script
                .queue
                .pop_front()
                .unwrap_or_else(|| script.then.clone()),
            None => Fault::Healthy,
        }
    };
    lock(&shared.log).push(FaultyRequest {
        method: head.method.clone(),
        path: head.target.clone(),
        authorization,
        if_none_match: head.header("if-none-match").map(str::to_owned),
        fault: fault.clone(),
    });
    let target = route(shared, &path, head.header("accept"));
    let head_only = head.method == "HEAD";
    let healthy = || match &target {
        Target::Missing => plain(404, "404 Not Found: the faulty upstream has no such path\n"),
        Target::Found(found) => {
            let matches = found.etag.as_deref().is_some_and(|etag| {
                head.header("if-none-match")
                    .is_some_and(|inm| inm.split(',').any(|c| c.trim() == etag))
            });
            if matches {
                let etag = found.etag.clone().unwrap_or_default();
                (head_bytes(304, &[("ETag", etag)], Some(0)), Vec::new())
            } else {
                (framed_head(found, found.body.len()), found.body.clone())
            }
        }
    };
    let body_of = |target: &Target| match target {
        Target::Found(found) => found.clone(),
        Target::Missing => Resource {
            content_type: "text/plain".to_owned(),
            body: b"404 Not Found\n".to_vec(),
            etag: None,
        },
    };
    match fault {
        Fault::Healthy => {
            let (head_part, body) = healthy();
            send(stream, &head_part, if head_only { &[] } else { &body }).await
        }
        Fault::Delay(pause) => {
            tokio::time::sleep(pause).await;
            let (head_part, body) = healthy();
            send(stream, &head_part, if head_only { &[] } else { &body }).await
        }
        Fault::Reset { after } => {
            let found = body_of(&target);
            let cut = found.body.get(..after).unwrap_or(&found.body);
            let _ = send(stream, &framed_head(&found, found.body.len()), cut).await;
            // Let the bytes leave before the reset discards what is still queued.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = stream.set_zero_linger();
            false
        }
        Fault::Truncate { after } => {
            let found = body_of(&target);
            let cut = found.body.get(..after).unwrap_or(&found.body);
            let _ = send(stream, &framed_head(&found, found.body.len()), cut).await;
            false
        }
        Fault::CloseDelimited { after } => {
            let found = body_of(&target);
            let cut = match after {
                Some(after) => found.body.get(..after).unwrap_or(&found.body),
                None => &found.body,
            };
            let head_part = head_bytes(
                200,
                &[
                    ("Content-Type", found.content_type.clone()),
                    ("Connection", "close".to_owned()),
                ],
                None,
            );
            let _ = send(stream, &head_part, cut).await;
            false
        }
        Fault::Overlong { extra } => {
            let found = body_of(&target);
            let mut body = found.body.clone();
            body.extend(std::iter::repeat_n(b'X', extra));
            send(stream, &framed_head(&found, found.body.len()), &body).await
        }
        Fault::Underdeclared { by } => {
            let found = body_of(&target);
            let declared = found.body.len().saturating_sub(by);
            send(stream, &framed_head(&found, declared), &found.body).await
        }
        Fault::WrongBytes => {
            let found = body_of(&target);
            let mut body = found.body.clone();
            let middle = body.len() / 2;
            if let Some(byte) = body.get_mut(middle) {
                *byte ^= 0x5a;
            }
            send(stream, &framed_head(&found, body.len()), &body).await
        }
        Fault::Status(status) => {
            let text = format!("{status} fault injected by the faulty upstream\n");
            let mut extra = vec![("Content-Type", "text/plain".to_owned())];
            if status == 401 {
                extra.push((
                    "WWW-Authenticate",
                    "Basic realm=\"faulty upstream\"".to_owned(),
                ));
            }
            send(
                stream,
                &head_bytes(status, &extra, Some(text.len())),
                text.as_bytes(),
            )
            .await
        }
        Fault::EchoRequest(status) => {
            let mut text = b"the faulty upstream refuses this request:\n".to_vec();
            text.extend_from_slice(raw);
            let extra = [("Content-Type", "text/plain".to_owned())];
            send(stream, &head_bytes(status, &extra, Some(text.len())), &text).await
        }
        Fault::Redirect { status, location } => {
            let extra = [("Location", location)];
            send(stream, &head_bytes(status, &extra, Some(0)), &[]).await
        }
        Fault::NeverStarts => {
            // Cancelled when the upstream stops.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            false
        }
        Fault::Drip { every, bytes } => {
            let found = body_of(&target);
            if !send(stream, &framed_head(&found, found.body.len()), &[]).await {
                return false;
            }
            for piece in found.body.chunks(bytes.max(1)) {
                tokio::time::sleep(every).await;
                if stream.write_all(piece).await.is_err() || stream.flush().await.is_err() {
                    return false;
                }
            }
            true
        }
        Fault::Replace { content_type, body } => {
            let found = Resource {
                content_type,
                body,
                etag: None,
            };
            send(stream, &framed_head(&found, found.body.len()), &found.body).await
        }
    }
}

fn plain(status: u16, text: &str) -> (Vec<u8>, Vec<u8>) {
    let extra = [("Content-Type", "text/plain".to_owned())];
    (
        head_bytes(status, &extra, Some(text.len())),
        text.as_bytes().to_vec(),
    )
}

/// A 200 head for `found` announcing `length` bytes, with its ETag.
fn framed_head(found: &Resource, length: usize) -> Vec<u8> {
    let mut extra = vec![("Content-Type", found.content_type.clone())];
    if let Some(etag) = &found.etag {
        extra.push(("ETag", etag.clone()));
    }
    head_bytes(200, &extra, Some(length))
}

fn reason(status: u16) -> &'static str {
    ::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Whatever")
}

/// `HTTP/1.1 <status> <reason>`, the headers, `Content-Length` when given, the blank line.
fn head_bytes(status: u16, headers: &[(&str, String)], length: Option<usize>) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(length) = length {
        head.push_str(&format!("Content-Length: {length}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Writes a head and a body; false when the connection failed.
async fn send(stream: &mut TcpStream, head: &[u8], body: &[u8]) -> bool {
    stream.write_all(head).await.is_ok()
        && stream.write_all(body).await.is_ok()
        && stream.flush().await.is_ok()
}

/// The timeouts of a faulty bed's remote: short, so that a response that never starts or a drip
/// that stalls fails within seconds (the defaults are 5 s, 30 s and 60 s).
pub const FAULTY_TIMEOUTS: &str =
    "connect_timeout = \"2s\"\nfirst_byte_timeout = \"2s\"\nidle_timeout = \"1s\"\n";

/// One faulty upstream, one wheelgate in front of it (repository `pypi`, one retry, the short
/// timeouts of [`FAULTY_TIMEOUTS`], a failed page remembered at most 1 s), and their directory.
pub struct FaultyBed {
    pub faulty: Faulty,
    pub wheelgate: Wheelgate,
    pub dir: tempfile::TempDir,
    /// The upstream token, which wheelgate reads from its secret file.
    pub token: String,
    config: RemoteConfig,
}

impl FaultyBed {
    /// Serves `projects`, logging at `log_level`, with the configuration adjusted by `adjust`.
    pub fn start(
        projects: &[&str],
        log_level: &str,
        adjust: impl FnOnce(&mut RemoteConfig),
    ) -> FaultyBed {
        let token = new_token();
        let faulty = Faulty::start(projects, Some(&token));
        let dir =
            tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create the test directory: {e}"));
        let secret = SecretFile::create(dir.path(), TokenLayout::File, &token);
        let mut config = RemoteConfig::new(
            dir.path().join("store"),
            faulty.index_url(),
            secret.path(),
            Vec::new(),
        );
        config.negative_ttl = Some("1s".to_owned());
        config.remote_toml = FAULTY_TIMEOUTS.to_owned();
        adjust(&mut config);
        let config_path = dir.path().join("proxy.toml");
        write_file(&config_path, &config.to_toml());
        let wheelgate = Wheelgate::start(&config_path, dir.path(), log_level);
        FaultyBed {
            faulty,
            wheelgate,
            dir,
            token,
            config,
        }
    }

    /// `http://<wheelgate><path>`.
    pub fn url(&self, path: &str) -> String {
        self.wheelgate.url(path)
    }

    /// The configuration file wheelgate runs with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("proxy.toml")
    }

    /// The wheelgate URL of `filename`, as its project's JSON page links it (fetching the page).
    pub fn file_url(&self, project: &str, filename: &str) -> String {
        file_url_on(&self.wheelgate, project, filename)
    }

    /// The store directory.
    pub fn store(&self) -> PathBuf {
        self.config.store.clone()
    }

    /// Where the store keeps a blob: `<store>/blobs/sha256/<first two hex>/<all hex>`.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        blob_path_in(&self.store(), sha256)
    }

    /// The regular files under `<store>/<sub>`.
    pub fn store_files(&self, sub: &str) -> Vec<PathBuf> {
        files_under(&self.store().join(sub))
    }

    /// `wheelgate <args> --config <proxy.toml>`, run beside the server (commands that need the
    /// store ask it over its admin socket).
    pub fn command(&self, args: &[&str]) -> ClientRun {
        let config = self.config_path();
        let config = config.to_string_lossy();
        let mut all = args.to_vec();
        all.extend_from_slice(&["--config", &config]);
        run_for(&all, self.dir.path(), Duration::from_secs(120))
    }

    /// The store holds nothing partial or wrong: `tmp/` empties, and `wheelgate cache verify`
    /// finds every stored body matching its sha256.
    pub fn assert_store_sound(&self, what: &str) {
        assert!(
            wait_until(Duration::from_secs(10), || self
                .store_files("tmp")
                .is_empty()),
            "{what}: the store's tmp/ still holds {:?}",
            self.store_files("tmp")
        );
        let verify = self.command(&["cache", "verify"]);
        assert!(
            verify.exit_code == Some(0)
                && verify
                    .stdout
                    .contains("every stored body matches its sha256"),
            "{what}: `wheelgate cache verify` must find the store sound; exit {:?}\n{}\nwheelgate:\n{}",
            verify.exit_code,
            verify.output(),
            self.wheelgate.output()
        );
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// Sends `GET <path>` with the token and reads until the connection ends or `patience`
    /// passes in silence; returns the bytes and the error that ended the read, if any.
    fn exchange(
        faulty: &Faulty,
        token: &str,
        path: &str,
        extra: &str,
        patience: Duration,
    ) -> (Answer, Option<std::io::ErrorKind>) {
        let mut stream = std::net::TcpStream::connect(faulty.addr()).expect("connect");
        stream.set_read_timeout(Some(patience)).expect("timeout");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nAccept: {JSON_MEDIA_TYPE}\r\n{extra}Connection: close\r\n\r\n",
            token_authorization(token)
        );
        stream.write_all(request.as_bytes()).expect("write");
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => return (Answer(received), None),
                Ok(n) => received.extend_from_slice(&chunk[..n]),
                Err(e) => return (Answer(received), Some(e.kind())),
            }
        }
    }

    /// The raw bytes of an answer: a text head and a binary body.
    struct Answer(Vec<u8>);

    impl Answer {
        fn split(&self) -> usize {
            self.0
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(self.0.len(), |at| at + 4)
        }

        /// The head, as text.
        fn head(&self) -> String {
            String::from_utf8_lossy(&self.0[..self.split()]).into_owned()
        }

        fn body(&self) -> &[u8] {
            &self.0[self.split()..]
        }
    }

    impl std::fmt::Display for Answer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{} (+{} body bytes)", self.head(), self.body().len())
        }
    }

    /// The faults must be the ones they say, or the wheelgate tests prove nothing.
    #[test]
    fn the_faulty_upstream_misbehaves_exactly_as_scripted() {
        let token = "wgfx-faulty-self-test";
        let faulty = Faulty::start(&["wgfx-delta"], Some(token));
        let page = Faulty::page_path("wgfx-delta");
        let patience = Duration::from_secs(5);

        let (answer, _) = exchange(&faulty, "wrong", &page, "", patience);
        assert!(answer.head().starts_with("HTTP/1.1 401 "), "{answer}");
        let (answer, end) = exchange(&faulty, token, &page, "", patience);
        assert!(
            answer.head().starts_with("HTTP/1.1 200 OK\r\n") && end.is_none(),
            "{answer}"
        );
        let json: serde_json::Value = serde_json::from_slice(answer.body()).expect("JSON");
        let wheel = catalog().expect_project("wgfx-delta").wheel("2.0.0");
        assert!(json["files"]
            .as_array()
            .expect("files")
            .iter()
            .any(|f| f["filename"] == wheel.filename.as_str()
                && f["hashes"]["sha256"] == wheel.sha256.as_str()));
        let etag = answer
            .head()
            .lines()
            .find_map(|l| l.strip_prefix("ETag: "))
            .expect("an ETag")
            .to_owned();
        let (answer, _) = exchange(
            &faulty,
            token,
            &page,
            &format!("If-None-Match: {etag}\r\n"),
            patience,
        );
        assert!(answer.head().starts_with("HTTP/1.1 304 "), "{answer}");

        let file = Faulty::file_path("wgfx-delta", &wheel.filename);
        assert_eq!(faulty.file_bytes(&file), wheel.bytes);
        let size = wheel.bytes.len();
        let length = format!("Content-Length: {size}\r\n");
        faulty.script(
            &file,
            [
                Fault::Reset { after: 10 },
                Fault::Truncate { after: 10 },
                Fault::CloseDelimited { after: Some(10) },
                Fault::Underdeclared { by: 3 },
                Fault::NeverStarts,
                Fault::Status(503),
            ],
        );
        let (answer, end) = exchange(&faulty, token, &file, "", patience);
        assert!(answer.head().contains(&length), "{answer}");
        assert_eq!(answer.body().len(), 10, "reset after 10 bytes");
        assert_eq!(end, Some(std::io::ErrorKind::ConnectionReset));
        let (answer, end) = exchange(&faulty, token, &file, "", patience);
        assert!(answer.head().contains(&length) && end.is_none(), "{answer}");
        assert_eq!(answer.body().len(), 10, "a clean close after 10 bytes");
        let (answer, end) = exchange(&faulty, token, &file, "", patience);
        assert!(
            !answer.head().contains("Content-Length") && end.is_none(),
            "{answer}"
        );
        assert_eq!(answer.body().len(), 10, "close-delimited, 10 bytes");
        let (answer, _) = exchange(&faulty, token, &file, "", patience);
        assert!(
            answer
                .head()
                .contains(&format!("Content-Length: {}\r\n", size - 3)),
            "{answer}"
        );
        assert_eq!(answer.body().len(), size, "the whole body all the same");
        let (answer, end) = exchange(&faulty, token, &file, "", Duration::from_millis(300));
        assert!(answer.0.is_empty(), "never starts: {answer}");
        assert!(
            matches!(
                end,
                Some(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
            ),
            "{end:?}"
        );
        let (answer, _) = exchange(&faulty, token, &file, "", patience);
        assert!(answer.head().starts_with("HTTP/1.1 503 "), "{answer}");
        let (answer, _) = exchange(&faulty, token, &file, "", patience);
        assert!(
            answer.head().starts_with("HTTP/1.1 200 "),
            "healthy once the script is out"
        );
        assert_eq!(answer.body(), wheel.bytes.as_slice());

        let faults: Vec<Fault> = faulty
            .requests_for(&file)
            .into_iter()
            .map(|r| r.fault)
            .collect();
        assert_eq!(faults.len(), 7);
        assert_eq!(faults.last(), Some(&Fault::Healthy));
        assert!(faulty
            .requests_for(&file)
            .iter()
            .all(|r| r.authorization.as_deref() == Some(token_authorization(token).as_str())));
    }
}
