//! Hostile and heavy upstream pages (issue 16): the fetch slots bound page fetches too, a failed
//! load is remembered for `negative_ttl` (while a stored copy is still served stale), big pages are
//! parsed and rendered without stalling other requests, a page bigger than the memory cache says
//! `miss` each time it is read again, and a page past the limits is refused early, in bounded
//! memory, with an error naming the project, the upstream and the limit.
//!
//! The upstream here is a small programmable one on 127.0.0.1: each path answers what the test
//! set (status, body, delay), and it counts the requests it has in flight at once.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::http::header::CONTENT_TYPE;
use ::http::{HeaderValue, Request, Response, StatusCode};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::harness::http;
use crate::harness::upstream::JSON_MEDIA_TYPE;
use crate::harness::wheelgate::{toml_string, Wheelgate};

const ACCEPT_JSON: (&str, &str) = ("accept", JSON_MEDIA_TYPE);

/// What the upstream answers for one path.
#[derive(Clone)]
struct Reply {
    status: u16,
    body: Bytes,
    delay: Duration,
}

impl Reply {
    fn json(body: impl Into<Bytes>) -> Reply {
        Reply {
            status: 200,
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    fn status(status: u16) -> Reply {
        Reply {
            status,
            body: Bytes::from_static(b"upstream trouble"),
            delay: Duration::ZERO,
        }
    }

    fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct State {
    replies: Mutex<HashMap<String, Reply>>,
    requests: Mutex<Vec<String>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

/// The programmable upstream.
struct PageUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    _runtime: tokio::runtime::Runtime,
}

impl PageUpstream {
    fn start() -> PageUpstream {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("the page upstream's runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(State::default());
        let shared = state.clone();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        PageUpstream {
            addr,
            state,
            _runtime: runtime,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/simple/", self.addr)
    }

    fn set(&self, path: &str, reply: Reply) {
        self.state
            .replies
            .lock()
            .unwrap()
            .insert(path.to_owned(), reply);
    }

    /// How many requests the upstream received for `path`.
    fn asked(&self, path: &str) -> usize {
        let requests = self.state.requests.lock().unwrap();
        requests.iter().filter(|p| *p == path).count()
    }
}

async fn answer(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    state.requests.lock().unwrap().push(path.clone());
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.most_in_flight.fetch_max(now, Ordering::SeqCst);
    let reply = state.replies.lock().unwrap().get(&path).cloned();
    let reply = reply.unwrap_or(Reply {
        status: 404,
        body: Bytes::from_static(b"no such page"),
        delay: Duration::ZERO,
    });
    tokio::time::sleep(reply.delay).await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut response = Response::new(Full::new(reply.body));
    *response.status_mut() = StatusCode::from_u16(reply.status).expect("a status");
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON_MEDIA_TYPE));
    response
}

/// wheelgate in front of `upstream`, with the given extra `[server]` and `[store]` lines and
/// remote keys.
fn wheelgate(
    dir: &Path,
    upstream: &PageUpstream,
    server: &str,
    store: &str,
    remote: &str,
) -> Wheelgate {
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndefault_repository = \"pypi\"\n{server}\n\
         [store]\npath = {store_path}\n{store}\n\
         [[repository]]\nname = \"pypi\"\ntype = \"remote\"\nurl = {url}\nretries = 0\n{remote}\n",
        store_path = toml_string(&dir.join("store").to_string_lossy()),
        url = toml_string(&upstream.url()),
    );
    let path = dir.join("proxy.toml");
    std::fs::write(&path, config).expect("write proxy.toml");
    Wheelgate::start(&path, dir, "info")
}

/// A PEP 691 page of `files` files named `<project>-<i>.tar.gz`, each with `hashes` digests of
/// other algorithms beside its sha256.
fn json_page(project: &str, files: usize, hashes: usize) -> String {
    let digests: String = (0..hashes)
        .map(|n| format!(r#""algo{n}":"{n:04x}","#))
        .collect();
    let sha = "a".repeat(64);
    let mut body = String::from(r#"{"meta":{"api-version":"1.1"},"files":["#);
    for i in 0..files {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"filename":"{project}-{i}.tar.gz","url":"/f/{project}-{i}.tar.gz","hashes":{{{digests}"sha256":"{sha}"}}}}"#
        ));
    }
    body.push_str("]}");
    body
}

fn page_path(project: &str) -> String {
    format!("/simple/{project}/")
}

/// (a) Forty distinct slow pages asked at once: the upstream never has more than
/// `max_concurrent_fetches` of them in flight.
#[test]
fn page_fetches_take_the_fetch_slots() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = PageUpstream::start();
    for i in 0..40 {
        let project = format!("slow{i}");
        upstream.set(
            &page_path(&project),
            Reply::json(json_page(&project, 1, 0)).after(Duration::from_millis(250)),
        );
    }
    let gate = wheelgate(dir.path(), &upstream, "max_concurrent_fetches = 4", "", "");
    let clients: Vec<_> = (0..40)
        .map(|i| {
            let url = gate.url(&page_path(&format!("slow{i}")));
            std::thread::spawn(move || http::get(&url, &[ACCEPT_JSON]).status)
        })
        .collect();
    for client in clients {
        assert_eq!(client.join().unwrap(), StatusCode::OK);
    }
    let most = upstream.state.most_in_flight.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&most),
        "the upstream had {most} page requests in flight at once; max_concurrent_fetches is 4"
    );
}

/// (b) A page load that fails with nothing stored is asked upstream once within `negative_ttl`,
/// again after it; a stored page whose revalidation fails is still served, stale.
#[test]
fn failed_page_loads_are_remembered_and_stale_pages_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = PageUpstream::start();
    upstream.set(&page_path("broken"), Reply::status(500));
    upstream.set(&page_path("garbled"), Reply::json("{\"meta\": nope"));
    upstream.set(&page_path("kept"), Reply::json(json_page("kept", 2, 0)));
    let gate = wheelgate(
        dir.path(),
        &upstream,
        "",
        "",
        "index_ttl = \"1s\"\nnegative_ttl = \"3s\"",
    );
    for project in ["broken", "garbled"] {
        let url = gate.url(&page_path(project));
        let answers: Vec<StatusCode> = (0..5)
            .map(|_| http::get(&url, &[ACCEPT_JSON]).status)
            .collect();
        assert!(
            answers.iter().all(|s| *s == StatusCode::BAD_GATEWAY),
            "{project}: {answers:?}"
        );
        assert_eq!(
            upstream.asked(&page_path(project)),
            1,
            "{project}: a failed load is remembered for negative_ttl"
        );
    }
    std::thread::sleep(Duration::from_millis(3200));
    let url = gate.url(&page_path("broken"));
    assert_eq!(
        http::get(&url, &[ACCEPT_JSON]).status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        upstream.asked(&page_path("broken")),
        2,
        "after negative_ttl the upstream is asked again"
    );

    // A stored page whose revalidation fails (an error, then a malformed page) is served stale.
    let url = gate.url(&page_path("kept"));
    let first = http::get(&url, &[ACCEPT_JSON]);
    first.expect_ok(&url);
    std::thread::sleep(Duration::from_millis(1500));
    for failure in [Reply::status(500), Reply::json("not json")] {
        upstream.set(&page_path("kept"), failure);
        let stale = http::get(&url, &[ACCEPT_JSON]);
        stale.expect_ok(&url);
        assert_eq!(stale.cache(), Some("stale"), "{}", stale.headers_text());
        assert_eq!(stale.body, first.body);
        // Stale pages are retried soon (index_ttl is 1s).
        std::thread::sleep(Duration::from_millis(1200));
    }
}

/// (c) `/-/health` answers promptly while two huge pages are parsed, rendered and compressed.
#[test]
fn health_answers_while_huge_pages_are_worked_on() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = PageUpstream::start();
    for project in ["huge-a", "huge-b"] {
        upstream.set(
            &page_path(project),
            Reply::json(json_page(project, 40_000, 12)),
        );
    }
    let gate = wheelgate(dir.path(), &upstream, "", "memory_cache = \"1GiB\"", "");
    let health = gate.url("/-/health");
    http::get(&health, &[]).expect_ok(&health);
    let pages: Vec<_> = ["huge-a", "huge-b"]
        .into_iter()
        .map(|project| {
            let url = gate.url(&page_path(project));
            std::thread::spawn(move || {
                http::get(&url, &[ACCEPT_JSON, ("accept-encoding", "gzip")]).status
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    let mut probes = 0;
    while pages.iter().any(|page| !page.is_finished()) {
        let started = Instant::now();
        http::get(&health, &[]).expect_ok(&health);
        slowest = slowest.max(started.elapsed());
        probes += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    for page in pages {
        assert_eq!(page.join().unwrap(), StatusCode::OK);
    }
    assert!(
        probes > 3,
        "the pages were done before the probes could run"
    );
    assert!(
        slowest < Duration::from_millis(500),
        "/-/health took {slowest:?} while huge pages were worked on ({probes} probes)"
    );
}

/// (d) A page heavier than the whole memory cache is not kept: each request reads it again from
/// the store and says `miss`, never `hit`, in the header and in the metrics alike.
#[test]
fn a_page_bigger_than_the_memory_cache_says_miss_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = PageUpstream::start();
    upstream.set(&page_path("wide"), Reply::json(json_page("wide", 5000, 0)));
    upstream.set(&page_path("small"), Reply::json(json_page("small", 2, 0)));
    let gate = wheelgate(dir.path(), &upstream, "", "memory_cache = \"4MiB\"", "");
    let url = gate.url(&page_path("wide"));
    let first = http::get(&url, &[ACCEPT_JSON]);
    first.expect_ok(&url);
    assert_eq!(first.cache(), Some("miss"));
    // Let the store's writer record it.
    std::thread::sleep(Duration::from_millis(1000));
    for n in 0..6 {
        let again = http::get(&url, &[ACCEPT_JSON]);
        again.expect_ok(&url);
        assert_eq!(
            again.cache(),
            Some("miss"),
            "request {n}: read again from the store"
        );
        assert_eq!(again.body, first.body);
    }
    assert_eq!(
        upstream.asked(&page_path("wide")),
        1,
        "read from the store, not the upstream"
    );
    // A small page is kept as before.
    let small = gate.url(&page_path("small"));
    assert_eq!(http::get(&small, &[ACCEPT_JSON]).cache(), Some("miss"));
    assert_eq!(http::get(&small, &[ACCEPT_JSON]).cache(), Some("hit"));
    let metrics = http::get(&gate.url("/-/metrics"), &[]).text();
    let line = |outcome: &str| {
        format!(
            "wheelgate_cache_requests_total{{repository=\"pypi\",kind=\"page\",outcome=\"{outcome}\"}}"
        )
    };
    let count = |outcome: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line(outcome)))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    };
    assert_eq!((count("miss"), count("hit")), (8.0, 1.0), "{metrics}");
}

/// (e) Pages past the limits (a `versions` list, files) are refused with a 502 that names the
/// project, the upstream and the limit, and wheelgate's memory stays bounded while reading them.
#[test]
fn pages_past_the_limits_are_refused_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = PageUpstream::start();
    let sixty_mib = 60 << 20;
    let mut versions = String::with_capacity(sixty_mib + 64);
    versions.push_str(r#"{"meta":{"api-version":"1.1"},"files":[],"versions":["1""#);
    while versions.len() < sixty_mib {
        versions.push_str(r#","1""#);
    }
    versions.push_str("]}");
    upstream.set(&page_path("many-versions"), Reply::json(versions));
    let mut files = String::with_capacity(sixty_mib + 64);
    files.push_str(
        r#"{"meta":{"api-version":"1.1"},"files":[{"filename":"m-0.tar.gz","url":"/f/0"}"#,
    );
    let mut i = 1;
    while files.len() < sixty_mib {
        files.push_str(&format!(r#",{{"filename":"m-{i}.tar.gz","url":"/f/{i}"}}"#));
        i += 1;
    }
    files.push_str("]}");
    upstream.set(&page_path("many-files"), Reply::json(files));
    let gate = wheelgate(dir.path(), &upstream, "", "", "");
    for (project, what) in [
        ("many-versions", "200000 versions"),
        ("many-files", "200000 files"),
    ] {
        let url = gate.url(&page_path(project));
        let refused = http::get(&url, &[ACCEPT_JSON]);
        // The start is enough to judge (a wrong answer would be the whole 60 MiB page).
        let reason: String = refused.text().chars().take(600).collect();
        assert_eq!(refused.status, StatusCode::BAD_GATEWAY, "{reason}");
        assert!(
            reason.contains(&format!("of {project}"))
                && reason.contains(&upstream.addr.to_string())
                && reason.contains(what),
            "{reason}"
        );
    }
    let peak_mib = gate.peak_rss_kib() / 1024;
    assert!(
        peak_mib < 200,
        "wheelgate peaked at {peak_mib} MiB reading two 60 MiB pages"
    );
}
