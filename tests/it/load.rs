//! Load with faults: 500 concurrent clients for two minutes, mixing warm pages and files, ranges,
//! cold misses and uploads, against an upstream that injects faults into the cold traffic.
//!
//! What it proves is the hardening promise under pressure, not a speed: no client ever receives
//! a complete body with wrong bytes; every request on cached content succeeds while the cold
//! traffic fails around it; a cold request fails only where the upstream injected a fault into
//! that very project; no acknowledged upload is lost; no 500; and afterwards the server's open
//! files and memory come back to where they were before the load (memory: within a quarter, or
//! 32 MiB, of the baseline taken after a warm-up run of the same mix, since the store's index
//! legitimately grows with what the run stored). The figures (requests, latencies, memory,
//! descriptors) are printed and written to `target/load-report.txt`; timing is never asserted.
//!
//! It takes every core for three minutes, which would starve the timing of the other tests, so
//! it is ignored by `cargo test` and run alone by `.ci/run`:
//! `cargo test --test it -- --ignored --nocapture load::`. `WHEELGATE_LOAD_SECS` shortens or
//! lengthens the run (default 120).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::harness::fixtures::sha256_hex;
use crate::harness::uploads::{plain_wheel, UploadForm};
use crate::harness::wheelgate::Wheelgate;
use crate::harness::{write_file, Account};

const CLIENTS: usize = 500;
/// Projects fetched before the load starts; every request for them must succeed.
const HOT: u64 = 40;
/// The server's memory cache: what it may legitimately keep of the run's cold files.
const MEMORY_CACHE_MIB: u64 = 16;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// What the upstream does to the first request for a cold project's page or file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// 503, then healthy.
    Unavailable,
    /// Half the body, then the connection breaks.
    Reset,
    /// The whole length, one byte changed.
    WrongBytes,
    /// Fewer bytes than the Content-Length, then the connection breaks.
    Truncated,
    /// A second of silence before the answer.
    Delay,
}

/// The fault of project `n`'s page and of its file, on their first request. Hot projects have
/// none; one cold project in ten has a page fault, another one in ten a file fault.
fn faults_of(hot: bool, n: u64) -> (Option<Fault>, Option<Fault>) {
    if hot {
        return (None, None);
    }
    match n % 10 {
        3 => (Some(Fault::Unavailable), None),
        6 => {
            let fault = [
                Fault::Reset,
                Fault::WrongBytes,
                Fault::Truncated,
                Fault::Delay,
            ][(n / 10 % 4) as usize];
            (None, Some(fault))
        }
        _ => (None, None),
    }
}

/// One upstream project: `wgload-hot-N` or `wgload-cold-N`, one wheel of 2-130 KiB.
struct Project {
    name: String,
    filename: String,
    bytes: Bytes,
    sha256: String,
}

fn project(hot: bool, n: u64) -> Project {
    let kind = if hot { "hot" } else { "cold" };
    let name = format!("wgload-{kind}-{n}");
    let filename = format!("wgload_{kind}_{n}-1.0-py3-none-any.whl");
    // xorshift: different bytes for every project, cheap to make.
    let mut state = (n + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let size = 2048 + (state % (128 * 1024)) as usize;
    let mut bytes = Vec::with_capacity(size + 8);
    while bytes.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(size);
    let sha256 = sha256_hex(&bytes);
    Project {
        name,
        filename,
        bytes: Bytes::from(bytes),
        sha256,
    }
}

/// The upstream: pages and files of any `wgload-*` project, faults on first requests.
#[derive(Default)]
struct Upstream {
    /// Requests seen per path (a fault fires on the first).
    seen: Mutex<HashMap<String, u32>>,
    /// Cold projects whose page or file got a fault.
    faulted: Mutex<HashSet<u64>>,
    requests: AtomicU64,
}

impl Upstream {
    fn parse_name(name: &str) -> Option<(bool, u64)> {
        let (hot, n) = if let Some(n) = name.strip_prefix("wgload-hot-") {
            (true, n)
        } else {
            (false, name.strip_prefix("wgload-cold-")?)
        };
        Some((hot, n.parse().ok()?))
    }

    fn parse_file(filename: &str) -> Option<(bool, u64)> {
        let stem = filename.strip_suffix("-1.0-py3-none-any.whl")?;
        Self::parse_name(&stem.replace('_', "-"))
    }

    /// Whether this is the first request for `path`, counting it.
    fn first(&self, path: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let count = seen.entry(path.to_owned()).or_default();
        *count += 1;
        *count == 1
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Body> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let path = request.uri().path().to_owned();
        let json = request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/vnd.pypi.simple.v1+json"));
        if let Some(name) = path
            .strip_prefix("/simple/")
            .and_then(|rest| rest.strip_suffix('/'))
        {
            let Some((hot, n)) = Self::parse_name(name) else {
                return plain(StatusCode::NOT_FOUND, "no such project");
            };
            if faults_of(hot, n).0.is_some() && self.first(&path) {
                self.fault_fired(n);
                return plain(StatusCode::SERVICE_UNAVAILABLE, "injected: unavailable");
            }
            return page(&project(hot, n), json);
        }
        if let Some(filename) = path.strip_prefix("/files/") {
            let Some((hot, n)) = Self::parse_file(filename) else {
                return plain(StatusCode::NOT_FOUND, "no such file");
            };
            let project = project(hot, n);
            let fault = faults_of(hot, n).1.filter(|_| self.first(&path));
            if fault.is_some() {
                self.fault_fired(n);
            }
            return file(project.bytes, fault).await;
        }
        plain(StatusCode::NOT_FOUND, "not an index path")
    }

    fn fault_fired(&self, n: u64) {
        self.faulted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(n);
    }

    fn faulted(&self, n: u64) -> bool {
        self.faulted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&n)
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(text.to_owned()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
}

fn page(project: &Project, json: bool) -> Response<Body> {
    let (content_type, body) = if json {
        let body = serde_json::json!({
            "meta": {"api-version": "1.1"},
            "name": project.name,
            "versions": ["1.0"],
            "files": [{
                "filename": project.filename,
                "url": format!("/files/{}", project.filename),
                "hashes": {"sha256": project.sha256},
                "size": project.bytes.len(),
            }],
        });
        ("application/vnd.pypi.simple.v1+json", body.to_string())
    } else {
        let body = format!(
            "<!DOCTYPE html><html><body><a href=\"/files/{f}#sha256={h}\">{f}</a></body></html>",
            f = project.filename,
            h = project.sha256
        );
        ("text/html", body)
    };
    let mut response = plain(StatusCode::OK, &body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

async fn file(bytes: Bytes, fault: Option<Fault>) -> Response<Body> {
    let length = bytes.len();
    let half = length / 2;
    let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = match fault {
        None | Some(Fault::Unavailable) => vec![Ok(Frame::data(bytes))],
        Some(Fault::Delay) => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            vec![Ok(Frame::data(bytes))]
        }
        Some(Fault::WrongBytes) => {
            let mut wrong = bytes.to_vec();
            wrong[half] ^= 0x55;
            vec![Ok(Frame::data(Bytes::from(wrong)))]
        }
        Some(Fault::Reset) => vec![
            Ok(Frame::data(bytes.slice(..half))),
            Err(std::io::Error::other("injected: reset")),
        ],
        Some(Fault::Truncated) => vec![
            Ok(Frame::data(bytes.slice(..length - 100))),
            Err(std::io::Error::other("injected: truncated")),
        ],
    };
    let mut response =
        Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync());
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, http::HeaderValue::from(length));
    response
}

async fn serve_upstream(upstream: Arc<Upstream>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the load upstream");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let upstream = upstream.clone();
                    async move { Ok::<_, Infallible>(upstream.answer(request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// One answer as a client saw it: the status and the body, or why the transfer broke.
struct Answer {
    status: StatusCode,
    body: Result<Bytes, String>,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn send(client: &HttpClient, request: Request<Full<Bytes>>) -> Result<Answer, String> {
    let response = tokio::time::timeout(Duration::from_secs(60), client.request(request))
        .await
        .map_err(|_| "no answer within 60 s".to_owned())?
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    let body = tokio::time::timeout(Duration::from_secs(60), response.into_body().collect())
        .await
        .map_err(|_| "the body stalled for 60 s".to_owned())
        .and_then(|collected| {
            collected
                .map(|c| c.to_bytes())
                .map_err(|e| format!("the body broke off: {e}"))
        });
    Ok(Answer { status, body })
}

fn get(url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::get(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::new())).expect("a request")
}

/// The file URL on a JSON project page served by wheelgate, made absolute.
fn file_url(page_url: &str, body: &[u8]) -> Result<String, String> {
    let page: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the page is not JSON: {e}"))?;
    let href = page["files"][0]["url"]
        .as_str()
        .ok_or_else(|| format!("the page has no file: {page}"))?;
    let page_url = url::Url::parse(page_url).map_err(|e| e.to_string())?;
    page_url
        .join(href)
        .map(String::from)
        .map_err(|e| format!("{href}: {e}"))
}

#[derive(Default)]
struct Tally {
    /// Operation kind -> latencies in microseconds.
    latencies: BTreeMap<&'static str, Vec<u64>>,
    /// Cold projects whose request failed, with why (each must have had a fault).
    cold_failures: Vec<(u64, String)>,
    /// Anything that breaks the promise.
    defects: Vec<String>,
    /// (project, filename, sha256) of each acknowledged upload.
    uploads: Vec<(String, String, String)>,
    /// Range requests answered with the whole file (correct, if not what was asked).
    ranges_sent_whole: u64,
}

struct Load {
    client: HttpClient,
    base: String,
    hot_files: Arc<Vec<(String, Project)>>,
    publisher: String,
    /// Names this run's uploads apart from another run's.
    phase: &'static str,
    deadline: Instant,
    next_cold: AtomicU64,
    tally: Mutex<Tally>,
}

/// What one run of the mix saw.
struct Run {
    tally: Tally,
    elapsed: Duration,
    fds_peak: u64,
}

impl Load {
    /// `CLIENTS` clients run the mix against `base` for `seconds`; cold projects are numbered
    /// from `first_cold`.
    fn run(
        runtime: &tokio::runtime::Runtime,
        template: (&str, &Arc<Vec<(String, Project)>>, &str),
        phase: &'static str,
        seconds: u64,
        first_cold: u64,
        pid: u32,
    ) -> Run {
        let (base, hot_files, publisher) = template;
        let load = Arc::new(Load {
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(CLIENTS)
                .build_http(),
            base: base.to_owned(),
            hot_files: hot_files.clone(),
            publisher: publisher.to_owned(),
            phase,
            deadline: Instant::now() + Duration::from_secs(seconds),
            next_cold: AtomicU64::new(first_cold),
            tally: Mutex::new(Tally::default()),
        });
        let started = Instant::now();
        let fds_peak = runtime.block_on(async {
            let peak = Arc::new(AtomicU64::new(0));
            let sampler = {
                let peak = peak.clone();
                tokio::spawn(async move {
                    loop {
                        peak.fetch_max(open_fds(pid) as u64, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                })
            };
            let tasks: Vec<_> = (0..CLIENTS)
                .map(|id| tokio::spawn(load.clone().client_loop(id)))
                .collect();
            for task in tasks {
                task.await.expect("a client task");
            }
            sampler.abort();
            peak.load(Ordering::Relaxed)
        });
        let elapsed = started.elapsed();
        let Some(Load { client, tally, .. }) = Arc::into_inner(load) else {
            panic!("a client task still holds the load");
        };
        drop(client);
        Run {
            tally: tally.into_inner().unwrap_or_else(|p| p.into_inner()),
            elapsed,
            fds_peak,
        }
    }
}

impl Load {
    fn record(&self, kind: &'static str, started: Instant) {
        let micros = started.elapsed().as_micros() as u64;
        let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        tally.latencies.entry(kind).or_default().push(micros);
    }

    fn defect(&self, what: String) {
        let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        if tally.defects.len() < 50 {
            tally.defects.push(what);
        }
    }

    async fn client_loop(self: Arc<Self>, id: usize) {
        let mut state = (id as u64 + 7).wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
        let mut seq = 0u32;
        while Instant::now() < self.deadline {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let pick = state % 100;
            let hot = &self.hot_files[(state / 100 % HOT) as usize];
            let started = Instant::now();
            match pick {
                0..=44 => {
                    self.warm_file(hot).await;
                    self.record("warm file", started);
                }
                45..=59 => {
                    self.warm_page(&hot.1, state % 2 == 0).await;
                    self.record("warm page", started);
                }
                60..=69 => {
                    self.range(hot, state).await;
                    self.record("range", started);
                }
                70..=97 => {
                    let n = self.next_cold.fetch_add(1, Ordering::Relaxed);
                    self.cold(n).await;
                    self.record("cold page+file", started);
                }
                _ => {
                    seq += 1;
                    self.upload(id, seq).await;
                    self.record("upload", started);
                }
            }
        }
    }

    async fn warm_file(&self, (url, project): &(String, Project)) {
        match send(&self.client, get(url, &[])).await {
            Ok(Answer {
                status: StatusCode::OK,
                body: Ok(body),
            }) if sha256_hex(&body) == project.sha256 => {}
            Ok(answer) => self.defect(format!(
                "warm file {url}: {} {}",
                answer.status,
                describe(&answer.body)
            )),
            Err(e) => self.defect(format!("warm file {url}: {e}")),
        }
    }

    async fn warm_page(&self, project: &Project, json: bool) {
        let url = format!("{}/pypi/simple/{}/", self.base, project.name);
        let accept = if json {
            "application/vnd.pypi.simple.v1+json"
        } else {
            "text/html"
        };
        match send(&self.client, get(&url, &[("accept", accept)])).await {
            Ok(Answer {
                status: StatusCode::OK,
                body: Ok(body),
            }) => {
                let text = String::from_utf8_lossy(&body);
                if !text.contains(&project.filename) || !text.contains(&project.sha256) {
                    self.defect(format!("warm page {url} lacks its file: {text}"));
                }
            }
            Ok(answer) => self.defect(format!(
                "warm page {url}: {} {}",
                answer.status,
                describe(&answer.body)
            )),
            Err(e) => self.defect(format!("warm page {url}: {e}")),
        }
    }

    async fn range(&self, (url, project): &(String, Project), state: u64) {
        let start = (state >> 20) as usize % (project.bytes.len() - 1000);
        let range = format!("bytes={start}-{}", start + 999);
        match send(&self.client, get(url, &[("range", &range)])).await {
            Ok(Answer {
                status: StatusCode::PARTIAL_CONTENT,
                body: Ok(body),
            }) if body == project.bytes.slice(start..start + 1000) => {}
            // A server may ignore a range (RFC 9110 §14.2): wheelgate does while the file's
            // download is still being committed, and sends it whole.
            Ok(Answer {
                status: StatusCode::OK,
                body: Ok(body),
            }) if body == project.bytes => {
                let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
                tally.ranges_sent_whole += 1;
            }
            Ok(answer) => self.defect(format!(
                "range {range} of {url}: {} {}",
                answer.status,
                describe(&answer.body)
            )),
            Err(e) => self.defect(format!("range {range} of {url}: {e}")),
        }
    }

    async fn cold(&self, n: u64) {
        let project = project(false, n);
        let page_url = format!("{}/pypi/simple/{}/", self.base, project.name);
        let accept = [("accept", "application/vnd.pypi.simple.v1+json")];
        let failed = |why: String| (n, why);
        let outcome = match send(&self.client, get(&page_url, &accept)).await {
            Ok(Answer {
                status: StatusCode::OK,
                body: Ok(body),
            }) => match file_url(&page_url, &body) {
                Ok(url) => match send(&self.client, get(&url, &[])).await {
                    Ok(Answer {
                        status: StatusCode::OK,
                        body: Ok(body),
                    }) => {
                        if sha256_hex(&body) != project.sha256 {
                            self.defect(format!(
                                "cold file {url}: a complete 200 with wrong bytes"
                            ));
                        }
                        None
                    }
                    Ok(answer) => Some(failed(format!(
                        "file: {} {}",
                        answer.status,
                        describe(&answer.body)
                    ))),
                    Err(e) => Some(failed(format!("file: {e}"))),
                },
                Err(e) => {
                    self.defect(format!("cold page {page_url}: {e}"));
                    None
                }
            },
            Ok(answer) => Some(failed(format!(
                "page: {} {}",
                answer.status,
                describe(&answer.body)
            ))),
            Err(e) => Some(failed(format!("page: {e}"))),
        };
        if let Some(failure) = outcome {
            let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
            tally.cold_failures.push(failure);
        }
    }

    async fn upload(&self, id: usize, seq: u32) {
        let name = format!("wgload-up-{}-{id}", self.phase);
        let dist = plain_wheel(&name, &format!("1.{seq}"));
        let form = UploadForm::of(&dist).multipart();
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}/internal/", self.base))
            .header(header::CONTENT_TYPE, form.content_type())
            .header(header::AUTHORIZATION, &self.publisher)
            .body(Full::new(Bytes::from(form.body())))
            .expect("an upload request");
        match send(&self.client, request).await {
            Ok(Answer {
                status: StatusCode::OK,
                body: Ok(_),
            }) => {
                let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
                tally.uploads.push((name, dist.filename, dist.sha256));
            }
            Ok(answer) => self.defect(format!(
                "upload {}: {} {}",
                dist.filename,
                answer.status,
                describe(&answer.body)
            )),
            Err(e) => self.defect(format!("upload {}: {e}", dist.filename)),
        }
    }
}

fn describe(body: &Result<Bytes, String>) -> String {
    match body {
        Ok(bytes) => String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned(),
        Err(e) => e.clone(),
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at] as f64 / 1000.0
}

#[test]
#[ignore = "three minutes on every core: `.ci/run` runs it alone, after `cargo test`"]
fn five_hundred_clients_with_upstream_faults_get_no_wrong_byte_and_lose_no_upload() {
    let seconds: u64 = std::env::var("WHEELGATE_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let upstream = Arc::new(Upstream::default());
    let upstream_addr = runtime.block_on(serve_upstream(upstream.clone()));

    let dir = tempfile::tempdir().expect("a test directory");
    let publisher = Account::new("load-publisher");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndefault_repository = \"pypi\"\n\n\
         [store]\npath = {store}\nmemory_cache = \"{MEMORY_CACHE_MIB}MiB\"\n\n\
         [[repository]]\nname = \"pypi\"\ntype = \"remote\"\nurl = \"http://{upstream_addr}/simple/\"\n\
         retries = 1\n\n\
         [[repository]]\nname = \"internal\"\ntype = \"hosted\"\n{user}",
        store = crate::harness::wheelgate::toml_string(&dir.path().join("store").to_string_lossy()),
        user = publisher.user(&["read", "publish"]).to_toml(),
    );
    let config_path = dir.path().join("proxy.toml");
    write_file(&config_path, &config);
    let wheelgate = Wheelgate::start(&config_path, dir.path(), "info");
    let base = format!("http://{}", wheelgate.addr());
    let pid = wheelgate.pid();

    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(CLIENTS)
        .build_http();
    // Warm-up: every hot project's page and file through wheelgate, so that the load's warm
    // requests are hits.
    let hot_files = runtime.block_on(async {
        let mut hot = Vec::new();
        for n in 0..HOT {
            let project = project(true, n);
            let page_url = format!("{base}/pypi/simple/{}/", project.name);
            let answer = send(
                &client,
                get(
                    &page_url,
                    &[("accept", "application/vnd.pypi.simple.v1+json")],
                ),
            )
            .await
            .expect("a warm-up page");
            let body = answer.body.expect("a warm-up page body");
            let url = file_url(&page_url, &body).expect("a file on the warm-up page");
            let answer = send(&client, get(&url, &[])).await.expect("a warm-up file");
            assert_eq!(
                answer.body.as_ref().map(|b| sha256_hex(b)).as_deref(),
                Ok(project.sha256.as_str()),
                "warm-up of {url}"
            );
            hot.push((url, project));
        }
        hot
    });
    drop(client);
    let hot_files = Arc::new(hot_files);
    let authorization = publisher.authorization();
    let template = (base.as_str(), &hot_files, authorization.as_str());
    // The baseline: open files on the fresh server; memory after a short run of the same mix,
    // which brings the caches (bounded by configuration) and the allocator to their steady size.
    let fds_before = open_fds(pid);
    let warmup = Load::run(
        &runtime,
        template,
        "warmup",
        (seconds / 6).max(10),
        1 << 40,
        pid,
    );
    assert!(
        warmup.tally.defects.is_empty(),
        "the warm-up run broke promises: {:?}",
        warmup.tally.defects
    );
    std::thread::sleep(Duration::from_secs(2));
    let rss_before = wheelgate.rss_kib();

    let Run {
        mut tally,
        elapsed,
        fds_peak,
    } = Load::run(&runtime, template, "load", seconds, 0, pid);
    let (rss_peak, rss_end) = (wheelgate.peak_rss_kib(), wheelgate.rss_kib());

    // Nothing acknowledged is lost: every upload is listed and downloads with its bytes.
    runtime.block_on(async {
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        let mut by_project: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
        for (project, filename, sha256) in &tally.uploads {
            by_project
                .entry(project)
                .or_default()
                .push((filename, sha256));
        }
        for (project, files) in by_project {
            let url = format!("{base}/internal/simple/{project}/");
            let answer = send(
                &client,
                get(&url, &[("accept", "application/vnd.pypi.simple.v1+json")]),
            )
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
            let page: serde_json::Value =
                serde_json::from_slice(&answer.body.unwrap_or_default()).unwrap_or_default();
            let listed: HashMap<&str, (&str, &str)> = page["files"]
                .as_array()
                .map(|files| {
                    files
                        .iter()
                        .filter_map(|f| {
                            Some((
                                f["filename"].as_str()?,
                                (f["hashes"]["sha256"].as_str()?, f["url"].as_str()?),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            for (filename, sha256) in files {
                match listed.get(filename) {
                    Some((listed_sha, href)) if *listed_sha == sha256 => {
                        let file = url::Url::parse(&url)
                            .and_then(|u| u.join(href))
                            .map(String::from)
                            .unwrap_or_default();
                        let answer = send(&client, get(&file, &[])).await;
                        let got = answer
                            .ok()
                            .and_then(|a| a.body.ok())
                            .map(|b| sha256_hex(&b));
                        if got.as_deref() != Some(sha256) {
                            tally.defects.push(format!(
                                "acknowledged upload {filename}: downloaded {got:?}"
                            ));
                        }
                    }
                    other => tally.defects.push(format!(
                        "acknowledged upload {filename} is not listed right on {url}: {other:?}"
                    )),
                }
            }
        }
    });

    let rss_verified = wheelgate.rss_kib();

    // Every cold failure is explained by a fault the upstream injected into that project.
    let unexplained: Vec<&(u64, String)> = tally
        .cold_failures
        .iter()
        .filter(|(n, _)| !upstream.faulted(*n))
        .collect();
    let server_errors_500 = wheelgate
        .output()
        .lines()
        .filter(|l| l.contains(" wheelgate::access: request ") && l.contains(" status=500 "))
        .count();

    // Resources come back: the connections close (idle upstream connections after the pool's
    // 50 s), and memory returns to the baseline once the server has been quiet long enough to
    // give its freed heap back (`trim`, 10 s). What may remain is what the run added to the
    // store (its in-memory index, sled's cache) for the tens of thousands of projects it stored,
    // and a faster machine stores more in the same two minutes: 53,000 cold projects left
    // 28–35 MiB, 64,000 left 49 MiB. So a quarter of the baseline, and half a KiB per cold
    // project; a leak per request (over 200,000 of them) still exceeds that.
    let cold_projects =
        tally.cold_failures.len() + tally.latencies.get("cold page+file").map_or(0, Vec::len);
    let memory_allowance = (rss_before / 4).max(32 * 1024) + cold_projects as u64 / 2;
    let settle = Instant::now();
    let (mut fds_after, mut rss_after) = (open_fds(pid), wheelgate.rss_kib());
    while (fds_after > fds_before + 2 || rss_after > rss_before + memory_allowance)
        && settle.elapsed() < Duration::from_secs(75)
    {
        std::thread::sleep(Duration::from_millis(500));
        (fds_after, rss_after) = (open_fds(pid), wheelgate.rss_kib());
    }

    let mut report = format!(
        "load: {CLIENTS} clients for {:.0} s, {} upstream requests, {} cold projects asked, {} \
         cold projects with an injected fault, {} cold failures, {} uploads acknowledged, {} ranges \
         answered whole\n",
        elapsed.as_secs_f64(),
        upstream.requests.load(Ordering::Relaxed),
        cold_projects,
        upstream.faulted.lock().map(|f| f.len()).unwrap_or(0),
        tally.cold_failures.len(),
        tally.uploads.len(),
        tally.ranges_sent_whole,
    );
    for (kind, latencies) in &mut tally.latencies {
        latencies.sort_unstable();
        report.push_str(&format!(
            "  {kind:<15} {:>7} requests  {:>7.1}/s  p50 {:>7.1} ms  p99 {:>7.1} ms\n",
            latencies.len(),
            latencies.len() as f64 / elapsed.as_secs_f64(),
            percentile(latencies, 0.5),
            percentile(latencies, 0.99),
        ));
    }
    report.push_str(&format!(
        "  memory: {} MiB before (after a warm-up run), {} MiB peak, {} MiB at the end of the run, \
         {} MiB after checking the uploads, {} MiB after settling {:.0} s (memory cache \
         {MEMORY_CACHE_MIB} MiB)\n  \
         open files: {fds_before} before, {} peak, {fds_after} after\n",
        rss_before / 1024,
        rss_peak / 1024,
        rss_end / 1024,
        rss_verified / 1024,
        rss_after / 1024,
        settle.elapsed().as_secs_f64(),
        fds_peak,
    ));
    eprintln!("{report}");
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/load-report.txt"),
        &report,
    );

    assert!(
        tally.defects.is_empty(),
        "{} broken promises, the first:\n{}\n{report}",
        tally.defects.len(),
        tally.defects.join("\n")
    );
    assert!(
        unexplained.is_empty(),
        "cold requests failed where the upstream injected no fault: {:?}\n{report}",
        &unexplained[..unexplained.len().min(20)]
    );
    assert_eq!(server_errors_500, 0, "wheelgate answered 500s\n{report}");
    assert!(
        !tally.uploads.is_empty() && tally.latencies.contains_key("cold page+file"),
        "the load did not exercise uploads and cold misses\n{report}"
    );
    assert!(
        upstream.faulted.lock().map(|f| f.len()).unwrap_or(0) > 0,
        "no fault was injected\n{report}"
    );
    assert!(
        fds_after <= fds_before + 2,
        "open files did not come back: {fds_before} before, {fds_after} after\n{report}"
    );
    assert!(
        rss_after <= rss_before + memory_allowance,
        "memory did not come back: {} MiB before, {} MiB after (allowed {} MiB more)\n{report}",
        rss_before / 1024,
        rss_after / 1024,
        memory_allowance / 1024
    );
}
