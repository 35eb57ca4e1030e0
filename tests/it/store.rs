//! The store (issue 3, SPEC §4): what wheelgate has served once it can serve again with the
//! upstream gone and after a restart; concurrent requests for one file share one upstream fetch
//! and stream while it runs; a file that betrays its sha256 leaves nothing behind; a kill -9 in the
//! middle of a 200 MiB transfer leaves a store that opens and serves the whole file again, with
//! the server's memory bounded while it streams. A file whose upstream published no sha256 is
//! linked by a key derived from its URL, then stored under the digest of its content once fetched;
//! and a store capped by `max_size` evicts the least recently used file first.
//!
//! Every claim is checked against the upstream's request log or the store directory itself
//! (`<store>/blobs/sha256/<2 hex>/<64 hex>`, `<store>/tmp/`), not only against what clients saw.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::http::StatusCode;
use sha2::{Digest, Sha256};

use crate::harness::clients::{self, dists};
use crate::harness::fixtures::{catalog, sha256_hex};
use crate::harness::generated::{self, Generated};
use crate::harness::http::{self, StreamedResponse};
use crate::harness::upstream::{Mode, JSON_MEDIA_TYPE};
use crate::harness::{resolve, wait_until, TestBed, TokenLayout};
use crate::install::expected_app_install;
use crate::simple_api::anchors;

/// How long asynchronous cleanup (a discarded temporary file) may take to show on disk.
const CLEANUP_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug)]
enum Client {
    Pip,
    Uv,
}

fn install(client: Client, bed: &TestBed, target_name: &str) {
    let target = bed.target_dir(target_name);
    let run = match client {
        Client::Pip => clients::pip_install(&bed.wheelgate.index_url(), &target, &["wgfx-app"]),
        Client::Uv => clients::uv_install(&bed.wheelgate.index_url(), &target, &["wgfx-app"]),
    };
    run.assert_success();
    assert_eq!(
        clients::installed(&target),
        expected_app_install(),
        "{client:?} ({target_name}) installed the wrong set; output:\n{}\nwheelgate's output:\n{}",
        run.output(),
        bed.wheelgate.output()
    );
}

/// Warm the store with one install, stop the upstream, then install again into fresh targets:
/// through the same process, and through a process restarted on the same store.
fn installs_from_the_store_alone(client: Client) {
    let mut bed = TestBed::start(Mode::Json);
    install(client, &bed, "warm");
    assert!(
        !bed.upstream.requests_for("/simple/wgfx-app/").is_empty(),
        "the warm-up install never reached the upstream"
    );

    bed.upstream.stop();
    install(client, &bed, "upstream-stopped");

    bed.wheelgate.restart();
    install(client, &bed, "after-restart");
}

#[test]
fn pip_installs_from_the_store_alone_with_the_upstream_stopped_and_after_a_restart() {
    installs_from_the_store_alone(Client::Pip);
}

#[test]
fn uv_installs_from_the_store_alone_with_the_upstream_stopped_and_after_a_restart() {
    installs_from_the_store_alone(Client::Uv);
}

/// What one client of the fifty got.
struct Fetched {
    response: Result<StreamedResponse, String>,
    sha256: String,
}

#[test]
fn fifty_concurrent_requests_share_one_upstream_fetch_and_stream_while_it_runs() {
    const CLIENTS: usize = 50;
    let bed = TestBed::start(Mode::Json);
    let (slow, after) = generated::expect_gated();
    let url = bed.file_url(slow.project, slow.filename);

    // Each client counts itself once its first body bytes arrive.
    let started = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (url, started) = (url.clone(), Arc::clone(&started));
            std::thread::spawn(move || {
                let mut hasher = Sha256::new();
                let mut first = true;
                let response = http::get_streaming(&url, &[], &mut |data: &[u8]| {
                    if first && !data.is_empty() {
                        first = false;
                        started.fetch_add(1, Ordering::SeqCst);
                    }
                    hasher.update(data);
                });
                Fetched {
                    response,
                    sha256: hex::encode(hasher.finalize()),
                }
            })
        })
        .collect();

    // The upstream has sent its first MiB and waits at the gate: every client must already be
    // receiving, so they cannot be waiting for the whole file.
    let all_started = wait_until(Duration::from_secs(30), || {
        started.load(Ordering::SeqCst) == CLIENTS
    });
    let fetches = bed.upstream.requests_for(&slow.path());
    if !all_started {
        bed.upstream.release_gate();
        panic!(
            "only {} of {CLIENTS} clients received bytes while the upstream held the file after its first {after} bytes \
             (upstream fetches so far: {}); followers must read the growing temporary file",
            started.load(Ordering::SeqCst),
            fetches.len()
        );
    }
    assert_eq!(
        fetches.len(),
        1,
        "{CLIENTS} concurrent requests must share one upstream fetch: {fetches:?}"
    );

    bed.upstream.release_gate();
    let mut cache_states = Vec::new();
    for (index, handle) in handles.into_iter().enumerate() {
        let fetched = handle
            .join()
            .unwrap_or_else(|_| panic!("client {index} panicked"));
        let response = fetched
            .response
            .unwrap_or_else(|e| panic!("client {index}: no response: {e}"));
        assert_eq!(response.status, StatusCode::OK, "client {index}");
        assert!(
            response.body_error.is_none(),
            "client {index}: body broke off: {:?}",
            response.body_error
        );
        assert_eq!(
            (response.received, fetched.sha256.as_str()),
            (slow.size, slow.sha256()),
            "client {index}: wrong bytes"
        );
        cache_states.push(response.cache().unwrap_or("(none)").to_owned());
    }
    assert_eq!(
        bed.upstream.requests_for(&slow.path()).len(),
        1,
        "still one upstream fetch after the transfer"
    );
    let misses = cache_states.iter().filter(|s| *s == "miss").count();
    let hits = cache_states.iter().filter(|s| *s == "hit").count();
    assert_eq!(
        (misses, hits),
        (1, CLIENTS - 1),
        "one client started the fetch, the others joined it: {cache_states:?}"
    );

    let later = http::get(&url, &[]);
    assert_eq!(later.cache(), Some("hit"), "{url} once stored");
    assert_eq!(
        crate::harness::fixtures::sha256_hex(later.expect_ok(&url)),
        slow.sha256()
    );
    assert_eq!(
        bed.upstream.requests_for(&slow.path()).len(),
        1,
        "a stored file is served without the upstream"
    );
}

#[test]
fn a_file_that_betrays_its_sha256_leaves_nothing_in_the_store() {
    let bed = TestBed::start(Mode::Json);
    let bad = generated::expect("wgfx-badhash");
    let url = bed.file_url(bad.project, bad.filename);
    let corrupted_sha256 = bad.corrupted_sha256();

    let outcome = http::try_get(&url, &[]);
    assert_eq!(
        bed.upstream.requests_for(&bad.path()).len(),
        1,
        "wheelgate never fetched the file, nothing was tested"
    );
    if let Ok(response) = &outcome {
        assert!(
            !response.status.is_success() || response.body_error.is_some(),
            "GET {url} completed with {} and {} bytes; a file that does not match its sha256 must fail the client",
            response.status,
            response.body.len()
        );
        assert_ne!(
            response.body.len() as u64,
            bad.size,
            "the mismatching bytes arrived whole"
        );
    }

    let leftovers = |bed: &TestBed| -> Vec<String> {
        let blobs = bed.store_files("blobs").into_iter().filter(|path| {
            let same_size = std::fs::metadata(path).is_ok_and(|m| m.len() == bad.size);
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            same_size || name == bad.sha256() || name == corrupted_sha256
        });
        blobs
            .chain(bed.store_files("tmp"))
            .map(|p| p.display().to_string())
            .collect()
    };
    assert!(
        wait_until(CLEANUP_WAIT, || leftovers(&bed).is_empty()),
        "a mismatching download must leave no blob and nothing in tmp/; found {:?}",
        leftovers(&bed)
    );

    bed.upstream.set_corrupt(false);
    let repaired = http::get(&url, &[]);
    assert_eq!(
        repaired.status,
        StatusCode::OK,
        "{url} after the upstream was fixed: {}",
        repaired.text()
    );
    assert_eq!(
        crate::harness::fixtures::sha256_hex(repaired.expect_ok(&url)),
        bad.sha256()
    );
    assert_eq!(
        bed.upstream.requests_for(&bad.path()).len(),
        2,
        "the failed fetch was not kept: the file is fetched again"
    );
    let blob = bed.blob_path(bad.sha256());
    assert!(
        wait_until(CLEANUP_WAIT, || std::fs::metadata(&blob)
            .is_ok_and(|m| m.len() == bad.size)),
        "the verified file must be stored as {}; blobs: {:?}",
        blob.display(),
        bed.store_files("blobs")
    );
    assert!(
        wait_until(CLEANUP_WAIT, || bed.store_files("tmp").is_empty()),
        "tmp/ after a commit: {:?}",
        bed.store_files("tmp")
    );
}

/// Streams `url`, hashing as it goes; `received` counts the bytes so far for the caller to watch.
fn stream_and_hash(url: &str, received: &AtomicU64) -> (Result<StreamedResponse, String>, String) {
    let mut hasher = Sha256::new();
    let response = http::get_streaming(url, &[], &mut |data: &[u8]| {
        hasher.update(data);
        received.fetch_add(data.len() as u64, Ordering::SeqCst);
    });
    (response, hex::encode(hasher.finalize()))
}

#[test]
fn kill_9_mid_download_then_restart_serves_the_whole_file_with_bounded_memory() {
    const KILL_AFTER: u64 = 40 * 1024 * 1024;
    // Fixed, and far below the file's 200 MiB: what it bounds is memory that does not grow with
    // the file. wheelgate reads a fast upstream in buffers of up to 4 MiB and the allocator keeps
    // up to 16 MiB of them free per arena until the quiet trim (src/trim.rs): this debug build
    // then peaked at 66 MiB, and the release build's cold 1 GiB at 50 MiB (25-31 MiB with
    // 400 KiB reads).
    const RSS_LIMIT_KIB: u64 = 96 * 1024;
    let mut bed = TestBed::start(Mode::Json);
    let huge = generated::expect("wgfx-huge");
    // Computed here, before the page asks for it, so the upstream answers the page at once.
    let expected_sha256 = huge.sha256().to_owned();
    let url = bed.file_url(huge.project, huge.filename);

    // Throttled (3200 chunks) so the transfer is still running when the process is killed.
    bed.upstream.set_throttle(Some(Duration::from_millis(2)));
    let received = Arc::new(AtomicU64::new(0));
    let first = {
        let (url, received) = (url.clone(), Arc::clone(&received));
        std::thread::spawn(move || stream_and_hash(&url, &received))
    };
    let reached = wait_until(Duration::from_secs(90), || {
        received.load(Ordering::SeqCst) >= KILL_AFTER
    });
    assert!(
        reached,
        "the client received only {} bytes of {} in 90 s",
        received.load(Ordering::SeqCst),
        huge.size
    );
    bed.wheelgate.kill();
    let (interrupted, _) = first
        .join()
        .unwrap_or_else(|_| panic!("the first client panicked"));
    if let Ok(response) = interrupted {
        assert!(
            response.body_error.is_some() || response.received < huge.size,
            "the transfer was killed at {} bytes yet completed",
            received.load(Ordering::SeqCst)
        );
    }
    let killed_at = received.load(Ordering::SeqCst);

    bed.upstream.set_throttle(None);
    bed.wheelgate.start_again();
    assert!(
        wait_until(CLEANUP_WAIT, || bed.store_files("tmp").is_empty()),
        "the restarted server must discard the partial download; tmp/ holds {:?}",
        bed.store_files("tmp")
    );
    assert!(
        !bed.blob_path(&expected_sha256).exists(),
        "a partial download was committed as a blob"
    );

    let url = bed.file_url(huge.project, huge.filename);
    let started = Instant::now();
    let (response, sha256) = stream_and_hash(&url, &AtomicU64::new(0));
    let response = response.unwrap_or_else(|e| panic!("GET {url} after the restart: {e}"));
    let peak_kib = bed.wheelgate.peak_rss_kib();
    eprintln!(
        "wgfx-huge: killed after {killed_at} bytes; after the restart {} bytes streamed cold in {:.1?}; \
         the restarted server's peak RSS (VmHWM) is {peak_kib} KiB ({:.1} MiB), RSS now {} KiB",
        response.received,
        started.elapsed(),
        peak_kib as f64 / 1024.0,
        bed.wheelgate.rss_kib()
    );
    assert_eq!(response.status, StatusCode::OK);
    assert!(
        response.body_error.is_none(),
        "the transfer after the restart broke off: {:?}",
        response.body_error
    );
    assert_eq!(
        (response.received, sha256.as_str()),
        (huge.size, expected_sha256.as_str()),
        "the whole file, with its sha256"
    );
    assert_eq!(
        bed.upstream.requests_for(&huge.path()).len(),
        2,
        "the file must be fetched again after the crash"
    );
    assert!(
        peak_kib < RSS_LIMIT_KIB,
        "streaming a 200 MiB file cold must keep wheelgate's peak RSS under {} MiB; VmHWM is {peak_kib} KiB",
        RSS_LIMIT_KIB / 1024
    );
    assert!(
        wait_until(CLEANUP_WAIT, || std::fs::metadata(
            bed.blob_path(&expected_sha256)
        )
        .is_ok_and(|m| m.len() == huge.size)),
        "the verified file must be committed as {}",
        bed.blob_path(&expected_sha256).display()
    );
    assert!(
        bed.store_files("tmp").is_empty(),
        "tmp/ after the commit: {:?}",
        bed.store_files("tmp")
    );
}

/// The link wheelgate must give a file its upstream published no digest for, in either page
/// format: `/pypi/files/<project>/url-<64 lowercase hex>/<filename>` with no `#sha256=` fragment
/// (wheelgate cannot vouch for a digest it has not computed). Returns the resolved link.
fn assert_url_keyed_link(page_url: &str, href: &str, project: &str, filename: &str) -> url::Url {
    assert!(
        !href.contains("#sha256="),
        "{page_url}: {filename} has no known digest, yet its link {href:?} claims one"
    );
    let resolved = resolve(page_url, href);
    let segments: Vec<&str> = resolved.path().split('/').collect();
    let [_, "pypi", "files", linked_project, key, linked_filename] = segments.as_slice() else {
        panic!("{page_url}: the link {href:?} of {filename} is not /pypi/files/<project>/<key>/<filename>")
    };
    assert_eq!(
        (*linked_project, *linked_filename),
        (project, filename),
        "{page_url}: link {href:?}"
    );
    let url_hex = key.strip_prefix("url-").unwrap_or_else(|| {
        panic!("{page_url}: {filename} has no upstream digest, so its key must be `url-<sha256 of its URL>`, got {key:?}")
    });
    assert!(
        url_hex.len() == 64
            && url_hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{page_url}: the key {key:?} of {filename} must be `url-` and 64 lowercase hex digits"
    );
    resolved
}

/// Fetches both formats of the hashless project's page and checks the file's link in each;
/// returns the link (the same in both).
fn hashless_links(bed: &TestBed, filename: &str) -> url::Url {
    let project = "wgfx-nohash";
    let page_url = bed.url(&format!("/simple/{project}/"));

    let json_page = http::get(&page_url, &[("accept", JSON_MEDIA_TYPE)]);
    json_page.expect_ok(&page_url);
    let json = json_page.json();
    let entry = json["files"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["filename"] == filename)
        .unwrap_or_else(|| panic!("{page_url} (JSON) does not list {filename}: {json}"));
    assert!(
        entry["hashes"].get("sha256").is_none(),
        "{page_url}: {filename} has no upstream sha256, yet hashes = {}",
        entry["hashes"]
    );
    let href = entry["url"]
        .as_str()
        .unwrap_or_else(|| panic!("{page_url}: {filename} has no url: {entry}"));
    let from_json = assert_url_keyed_link(&page_url, href, project, filename);

    let html_page = http::get(&page_url, &[("accept", "text/html")]);
    let html = String::from_utf8_lossy(html_page.expect_ok(&page_url)).into_owned();
    let links = anchors(&html);
    let href = links
        .get(filename)
        .and_then(|attributes| attributes.get("href"))
        .unwrap_or_else(|| panic!("{page_url} (HTML) has no link for {filename}:\n{html}"));
    let from_html = assert_url_keyed_link(&page_url, href, project, filename);
    assert_eq!(
        from_json, from_html,
        "{page_url}: one file, one key, whatever the format"
    );
    from_json
}

#[test]
fn a_file_without_an_upstream_sha256_is_keyed_by_its_url_then_stored_by_its_content() {
    let wheel = catalog().expect_project("wgfx-nohash").wheel("1.0.0");
    let upstream_path = format!("/files/wgfx-nohash/{}", wheel.filename);

    // An HTML upstream states the (missing) digest in the link fragment, a JSON one in `hashes`.
    let html_bed = TestBed::start(Mode::HtmlOnly);
    hashless_links(&html_bed, &wheel.filename);
    drop(html_bed);

    let mut bed = TestBed::start(Mode::Json);
    let url = hashless_links(&bed, &wheel.filename).to_string();
    let key = url.rsplit('/').nth(1).unwrap_or_default().to_owned();

    let first = http::get(&url, &[]);
    assert_eq!(
        sha256_hex(first.expect_ok(&url)),
        wheel.sha256,
        "{url}: the bytes of {}",
        wheel.filename
    );
    assert_eq!(
        first.cache(),
        Some("miss"),
        "{url}: the first request fetches it"
    );

    // The commit follows the transfer: poll until the file is served as stored.
    let mut last_state = None;
    let stored = wait_until(Duration::from_secs(5), || {
        let later = http::get(&url, &[]);
        assert_eq!(
            later.expect_ok(&url),
            wheel.bytes.as_slice(),
            "{url}: a later request got other bytes"
        );
        last_state = later.cache().map(str::to_owned);
        last_state.as_deref() == Some("hit")
    });
    assert!(
        stored,
        "{url} was never served as a hit once fetched; last X-Wheelgate-Cache: {last_state:?}"
    );
    assert_eq!(
        bed.upstream.requests_for(&upstream_path).len(),
        1,
        "once fetched, the file is served without the upstream"
    );

    // Stored under the digest of its content (the wheel is too big to sit inline), not its URL
    // key. The blob is renamed into place before the catalog records it: wait for both.
    let blob = bed.blob_path(&wheel.sha256);
    let committed = wait_until(CLEANUP_WAIT, || {
        std::fs::metadata(&blob).is_ok_and(|m| m.len() == wheel.bytes.len() as u64)
            && http::head(&url, &[]).header("accept-ranges").is_some()
    });
    assert!(
        committed,
        "{} ({} bytes) must be committed as {}; blobs: {:?}",
        wheel.filename,
        wheel.bytes.len(),
        blob.display(),
        bed.store_files("blobs")
    );
    let url_hex = key.strip_prefix("url-").unwrap_or_default();
    assert!(
        !bed.blob_path(url_hex).exists(),
        "the URL key {key} must not name a blob: the store is content-addressed"
    );
    let warm = http::head(&url, &[]);
    assert_eq!(
        warm.header("etag"),
        Some(format!("\"{}\"", wheel.sha256).as_str()),
        "{url}: once pinned, the ETag is the content's sha256"
    );

    let expected = dists(&[("wgfx-nohash", "1.0.0")]);
    let target = bed.target_dir("warm");
    let run = clients::pip_install(&bed.wheelgate.index_url(), &target, &["wgfx-nohash"]);
    run.assert_success();
    assert_eq!(
        clients::installed(&target),
        expected,
        "pip through wheelgate; output:\n{}",
        run.output()
    );

    // The pages are still fresh (index_ttl 10m): with the upstream gone, the store alone serves.
    bed.upstream.stop();
    let target = bed.target_dir("upstream-stopped");
    let run = clients::pip_install(&bed.wheelgate.index_url(), &target, &["wgfx-nohash"]);
    run.assert_success();
    assert_eq!(
        clients::installed(&target),
        expected,
        "pip with the upstream stopped; output:\n{}\nwheelgate's output:\n{}",
        run.output(),
        bed.wheelgate.output()
    );
    assert_eq!(
        bed.upstream.requests_for(&upstream_path).len(),
        1,
        "the file was fetched from the upstream once in all"
    );
}

/// The store's cap in the eviction test: room for two of the 1 MiB `wgfx-lru-*` files, not three.
const LRU_MAX_SIZE: &str = "2500KiB";
const LRU_MAX_BYTES: u64 = 2500 * 1024;

#[test]
fn max_size_evicts_the_least_recently_used_file_first() {
    let bed = TestBed::start_configured(Mode::Json, TokenLayout::File, "info", |config| {
        config.max_size = Some(LRU_MAX_SIZE.to_owned());
    });
    let [a, b, c] = ["wgfx-lru-a", "wgfx-lru-b", "wgfx-lru-c"].map(generated::expect);
    assert!(
        a.size + b.size <= LRU_MAX_BYTES && a.size + b.size + c.size > LRU_MAX_BYTES,
        "max_size {LRU_MAX_SIZE} must hold two of the files but not three"
    );
    let url_of = |file: &Generated| bed.file_url(file.project, file.filename);
    let (url_a, url_b, url_c) = (url_of(a), url_of(b), url_of(c));

    let fetch = |file: &Generated, url: &str, expected: &str, when: &str| {
        let response = http::get(url, &[]);
        assert_eq!(
            sha256_hex(response.expect_ok(url)),
            file.sha256(),
            "{} {when}: wrong bytes",
            file.project
        );
        assert_eq!(response.cache(), Some(expected), "{} {when}", file.project);
    };
    // The commit follows the transfer; a stored file is served with ranges.
    let wait_stored = |file: &Generated, url: &str| {
        let stored = wait_until(CLEANUP_WAIT, || {
            bed.blob_path(file.sha256()).exists()
                && http::head(url, &[]).header("accept-ranges").is_some()
        });
        assert!(
            stored,
            "{} was never committed; blobs: {:?}",
            file.project,
            bed.store_files("blobs")
        );
    };
    let blob_exists = |file: &Generated| bed.blob_path(file.sha256()).exists();
    let fetches = |file: &Generated| bed.upstream.requests_for(&file.path()).len();

    fetch(a, &url_a, "miss", "first");
    wait_stored(a, &url_a);
    fetch(b, &url_b, "miss", "first");
    wait_stored(b, &url_b);
    // A is used again, so B becomes the least recently used.
    fetch(a, &url_a, "hit", "again");

    fetch(c, &url_c, "miss", "first");
    wait_stored(c, &url_c);
    assert!(
        wait_until(CLEANUP_WAIT, || !blob_exists(b)),
        "storing C went over max_size {LRU_MAX_SIZE}: B, the least recently used, must be evicted; blobs: {:?}",
        bed.store_files("blobs")
    );
    assert!(
        blob_exists(a) && blob_exists(c),
        "only B is evicted; blobs: {:?}",
        bed.store_files("blobs")
    );

    fetch(a, &url_a, "hit", "after the eviction");
    assert_eq!(fetches(a), 1, "A stayed stored: no new upstream request");

    fetch(b, &url_b, "miss", "after its eviction");
    assert_eq!(
        fetches(b),
        2,
        "an evicted file is fetched from the upstream again"
    );
    wait_stored(b, &url_b);
    // C is now the least recently used (A was used after it).
    assert!(
        wait_until(CLEANUP_WAIT, || !blob_exists(c)),
        "storing B again went over max_size: C, now the least recently used, must be evicted; blobs: {:?}",
        bed.store_files("blobs")
    );
    assert!(
        blob_exists(a) && blob_exists(b),
        "A and B remain; blobs: {:?}",
        bed.store_files("blobs")
    );
    assert_eq!(
        (fetches(a), fetches(c)),
        (1, 1),
        "upstream requests for A and C"
    );
}

/// One response read off a raw HTTP/1.1 connection.
struct Answer {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

/// Reads the answers to `heads` (the methods of requests pipelined on one connection) from
/// `raw`, everything the connection sent until it closed.
fn split_answers(raw: &[u8], heads: &[bool]) -> Vec<Answer> {
    let mut rest = raw;
    let mut answers = Vec::new();
    for &is_head in heads {
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("answer {} has no complete head", answers.len() + 1));
        let headers = String::from_utf8_lossy(&rest[..end]).into_owned();
        let status: u16 = headers[9..12].parse().expect("a status code");
        let length: usize = headers
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .expect("a Content-Length");
        rest = &rest[end + 4..];
        let take = if is_head { 0 } else { length };
        assert!(
            rest.len() >= take,
            "answer {} is cut short",
            answers.len() + 1
        );
        answers.push(Answer {
            status,
            headers,
            body: rest[..take].to_vec(),
        });
        rest = &rest[take..];
    }
    assert!(
        rest.is_empty(),
        "{} bytes after the last answer",
        rest.len()
    );
    answers
}

/// A cold download's bytes leave plain connections from its temporary file: those already written
/// by sendfile, those a reader far behind asks for mapped rather than read (src/front/sendfile.rs,
/// src/repository/remote/flight.rs). A client that reads nothing until the download has landed,
/// on a connection that pipelines a second request behind it, must still get every byte, and
/// the first answer must end where its Content-Length says; over HTTP/2 as well.
#[test]
fn a_cold_file_is_served_byte_for_byte_to_a_reader_far_behind_its_download() {
    let bed = TestBed::start(Mode::Json);
    let cold = generated::expect("wgfx-cold-a");
    let whole = cold.bytes(0, cold.size);
    let url = bed.file_url(cold.project, cold.filename);
    let path = url::Url::parse(&url).expect("a file URL").path().to_owned();
    let wire = format!(
        "GET {path} HTTP/1.1\r\nHost: wheelgate\r\n\r\n\
         GET {path} HTTP/1.1\r\nHost: wheelgate\r\nConnection: close\r\n\r\n"
    );
    // Nothing is read until the download has landed: the socket's buffers fill at once, and the
    // rest of the first answer is read from the temporary file or the stored blob.
    let blob = bed.blob_path(cold.sha256());
    let raw = pipelined(&bed, &wire, || {
        let landed = wait_until(Duration::from_secs(30), || blob.exists());
        assert!(landed, "the download of {url} did not land within 30 s");
    });
    let answers = split_answers(&raw, &[false, false]);
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer.status, 200, "answer {}: {}", i + 1, answer.headers);
        assert!(answer.body == whole, "answer {}: wrong bytes", i + 1);
    }
    assert!(
        answers[0]
            .headers
            .to_ascii_lowercase()
            .contains("x-wheelgate-cache: miss"),
        "the first answer came from the download: {}",
        answers[0].headers
    );

    let cold = generated::expect("wgfx-cold-b");
    let url = bed.file_url(cold.project, cold.filename);
    assert_served_over_http2(&url, &cold.bytes(0, cold.size));
}

/// Writes `wire` (pipelined requests, the last one closing) on one new connection, calls
/// `before_reading`, then reads everything the connection sends until it closes.
fn pipelined(bed: &TestBed, wire: &str, before_reading: impl FnOnce()) -> Vec<u8> {
    use std::io::{Read as _, Write as _};

    let mut connection = std::net::TcpStream::connect(bed.wheelgate.addr()).expect("connect");
    connection
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("a read timeout");
    connection
        .write_all(wire.as_bytes())
        .expect("send the requests");
    before_reading();
    let mut raw = Vec::new();
    connection.read_to_end(&mut raw).expect("read the answers");
    raw
}

/// `url` answers 200 over HTTP/2 (prior knowledge) with exactly `expected`.
fn assert_served_over_http2(url: &str, expected: &[u8]) {
    let (status, version, body) = http::get_http2(url).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (status, version),
        (StatusCode::OK, ::http::Version::HTTP_2),
        "{url}"
    );
    assert!(body == expected, "{url}: wrong bytes over HTTP/2");
}

/// A warm file kept in memory leaves plain connections by sendfile from its blob
/// (src/front/sendfile.rs). However a connection asks for it (a HEAD before it, a range, the same
/// file twice in one pipelined write, HTTP/2) every byte must be the file's, and each answer must
/// end where its Content-Length says, or the next answer on the connection would be misread.
#[test]
fn a_warm_file_is_served_byte_for_byte_however_a_connection_asks_for_it() {
    let bed = TestBed::start(Mode::Json);
    let warm = generated::expect("wgfx-warm");
    let whole = warm.bytes(0, warm.size);
    let url = bed.file_url(warm.project, warm.filename);
    let cold = http::get(&url, &[]);
    assert!(
        cold.expect_ok(&url) == whole.as_slice(),
        "cold: wrong bytes"
    );
    // Stored once its commit is through; until then requests share the finished download.
    let stored = wait_until(Duration::from_secs(10), || {
        http::head(&url, &[]).cache() == Some("hit")
    });
    assert!(stored, "{url} was not stored within 10 s");
    // Read into memory by the first request that finds it stored.
    let first = http::get(&url, &[]);
    assert!(
        first.expect_ok(&url) == whole.as_slice(),
        "stored: wrong bytes"
    );
    assert_eq!(
        first.header("accept-ranges"),
        Some("bytes"),
        "served from the store"
    );

    let parsed = url::Url::parse(&url).expect("a file URL");
    let path = parsed.path();
    let (start, end) = (1_000, 250_000);
    let requests = [
        ("HEAD", None),
        ("GET", None),
        ("GET", Some(format!("bytes={start}-{end}"))),
        ("GET", None),
        ("GET", None),
    ];
    let mut wire = String::new();
    for (i, (method, range)) in requests.iter().enumerate() {
        wire.push_str(&format!("{method} {path} HTTP/1.1\r\nHost: wheelgate\r\n"));
        if let Some(range) = range {
            wire.push_str(&format!("Range: {range}\r\n"));
        }
        if i + 1 == requests.len() {
            wire.push_str("Connection: close\r\n");
        }
        wire.push_str("\r\n");
    }
    let raw = pipelined(&bed, &wire, || {});
    let heads: Vec<bool> = requests.iter().map(|(m, _)| *m == "HEAD").collect();
    let answers = split_answers(&raw, &heads);

    assert_eq!(answers[0].status, 200, "HEAD: {}", answers[0].headers);
    for i in [1, 3, 4] {
        assert_eq!(answers[i].status, 200, "GET {i}: {}", answers[i].headers);
        assert!(answers[i].body == whole, "GET {i}: wrong bytes");
    }
    assert_eq!(answers[2].status, 206, "range: {}", answers[2].headers);
    assert!(
        answers[2].body == whole[start..=end],
        "range {start}-{end}: wrong bytes"
    );

    assert_served_over_http2(&url, &whole);
    assert_eq!(
        bed.upstream.requests_for(&warm.path()).len(),
        1,
        "the upstream was asked for the file more than once"
    );
}
