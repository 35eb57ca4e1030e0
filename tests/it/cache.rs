//! Caching as clients and the upstream see it (issue 3, SPEC §2 and §4): index pages are fresh
//! for `index_ttl`, then revalidated (a 304 from upstream is a hit), served stale when the upstream
//! fails, served from the store alone when the repository is offline, and a client's
//! `Cache-Control: max-age=0` does not force a refetch. Warm files carry their sha256 as ETag, are
//! immutable, and answer ranges; pages answer `If-None-Match` and compress.
//!
//! Each page claim is shown with the upstream's request log: how many requests reached it, which
//! were conditional, and what it answered.

use std::io::Read;
use std::time::{Duration, Instant};

use ::http::StatusCode;

use crate::harness::fixtures::{catalog, sha256_hex};
use crate::harness::generated;
use crate::harness::http::{self, HttpResponse};
use crate::harness::upstream::{Mode, RecordedRequest, Upstream, JSON_MEDIA_TYPE};
use crate::harness::{link_in, wait_until, TestBed, TokenLayout};

const PAGE: &str = "/simple/wgfx-app/";
const ACCEPT_JSON: (&str, &str) = ("accept", JSON_MEDIA_TYPE);

fn page_requests(upstream: &Upstream) -> Vec<RecordedRequest> {
    upstream.requests_for(PAGE)
}

fn filenames(page: &HttpResponse) -> Vec<String> {
    let json = page.json();
    json["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["filename"].as_str().map(str::to_owned))
        .collect()
}

/// Sleeps until `since + ttl + margin`, so that what was stored at `since` is stale.
fn sleep_past_ttl(since: Instant) {
    let stale_at = since + Duration::from_millis(1200);
    if let Some(left) = stale_at.checked_duration_since(Instant::now()) {
        std::thread::sleep(left);
    }
}

#[test]
fn index_pages_expire_revalidate_serve_stale_and_go_offline() {
    let mut bed = TestBed::start_configured(Mode::Json, TokenLayout::File, "info", |config| {
        config.index_ttl = "1s".into();
    });
    let url = bed.url(PAGE);

    // Cold: one upstream request.
    let first = http::get(&url, &[ACCEPT_JSON]);
    let stored_at = Instant::now();
    first.expect_ok(&url);
    assert_eq!(first.cache(), Some("miss"), "{url} cold");
    assert_eq!(
        page_requests(&bed.upstream).len(),
        1,
        "a cold page is one upstream request"
    );

    // Fresh: no upstream request, even when the client asks for max-age=0 as pip does.
    let second = http::get(&url, &[ACCEPT_JSON]);
    let pip_like = http::get(&url, &[ACCEPT_JSON, ("cache-control", "max-age=0")]);
    let elapsed = stored_at.elapsed();
    assert_eq!(
        second.cache(),
        Some("hit"),
        "{url} again {elapsed:?} after it was stored (index_ttl 1s)"
    );
    assert_eq!(
        pip_like.cache(),
        Some("hit"),
        "pip's `Cache-Control: max-age=0` must not force a refetch ({elapsed:?} in)"
    );
    assert_eq!(second.body, first.body);
    assert_eq!(
        page_requests(&bed.upstream).len(),
        1,
        "fresh pages are served without the upstream ({elapsed:?} in)"
    );

    // A file, stored now so that the offline phase can serve it.
    let wheel = catalog().expect_project("wgfx-app").wheel("1.1.0");
    let file = http::get(&link_in(&first, &url, &wheel.filename), &[]);
    assert!(
        file.expect_ok(&wheel.filename) == wheel.bytes.as_slice(),
        "{} bytes",
        wheel.filename
    );

    // Stale: revalidated with a conditional request, which the upstream answers 304.
    sleep_past_ttl(stored_at);
    let third = http::get(&url, &[ACCEPT_JSON]);
    let revalidated_at = Instant::now();
    assert_eq!(
        third.cache(),
        Some("revalidated"),
        "{url} after the TTL, upstream unchanged"
    );
    assert_eq!(
        third.body, first.body,
        "a revalidated page is the stored one"
    );
    let log = page_requests(&bed.upstream);
    assert_eq!(log.len(), 2, "one revalidation request: {log:?}");
    assert!(
        log[1].is_conditional(),
        "the revalidation must carry If-None-Match or If-Modified-Since: {:?}",
        log[1]
    );
    assert_eq!(
        log[1].status, 304,
        "the upstream recognised the validator: {:?}",
        log[1]
    );

    // Stale-if-error: the upstream fails, the stored page is served and says so.
    bed.upstream.set_down(true);
    sleep_past_ttl(revalidated_at);
    let fourth = http::get(&url, &[ACCEPT_JSON]);
    assert_eq!(
        fourth.status,
        StatusCode::OK,
        "{url} with the upstream down: {}",
        fourth.text()
    );
    assert_eq!(
        fourth.cache(),
        Some("stale"),
        "{url} served from the store while the upstream fails"
    );
    assert_eq!(fourth.body, first.body);
    let failed: Vec<RecordedRequest> = page_requests(&bed.upstream).into_iter().skip(2).collect();
    assert!(
        !failed.is_empty(),
        "a stale page must be revalidated before it is served stale"
    );
    assert!(
        failed.iter().all(|r| r.status == 503),
        "the upstream was down for all of them: {failed:?}"
    );

    // Offline: the same store, no upstream contact at all.
    let before_offline = bed.upstream.requests().len();
    bed.restart_with(|config| config.offline = true);
    let url = bed.url(PAGE);
    let offline_page = http::get(&url, &[ACCEPT_JSON]);
    offline_page.expect_ok(&url);
    // Not in memory after the restart: read again from the store, which is a `miss` of the memory
    // cache (the upstream is not asked, as the request count below shows).
    assert_eq!(
        offline_page.cache(),
        Some("miss"),
        "offline page: X-Wheelgate-Cache {:?}",
        offline_page.cache()
    );
    assert_eq!(
        filenames(&offline_page),
        filenames(&first),
        "the offline page lists what the stored one does"
    );
    let file_url = link_in(&offline_page, &url, &wheel.filename);
    let offline_file = http::get(&file_url, &[]);
    assert!(
        offline_file.expect_ok(&file_url) == wheel.bytes.as_slice(),
        "offline file bytes"
    );
    let unknown = http::raw_get(bed.wheelgate.addr(), b"/simple/wgfx-never-cached/")
        .unwrap_or_else(|e| panic!("GET /simple/wgfx-never-cached/: {e}"));
    assert_eq!(
        unknown.status,
        404,
        "an uncached project offline: {}",
        unknown.text()
    );
    let reason = format!("{} {}", unknown.reason_phrase, unknown.text()).to_ascii_lowercase();
    assert!(
        reason.contains("offline"),
        "the 404 must say the repository is offline; got {reason:?}"
    );
    let after: Vec<RecordedRequest> = bed
        .upstream
        .requests()
        .into_iter()
        .skip(before_offline)
        .collect();
    assert!(
        after.is_empty(),
        "an offline repository must never contact the upstream: {after:?}"
    );
}

/// One file to check warm: where it is and what its bytes are.
struct WarmCase {
    project: &'static str,
    filename: String,
    sha256: String,
    size: u64,
    head: Vec<u8>,
    tail: Vec<u8>,
}

#[test]
fn warm_files_carry_validators_and_answer_ranges() {
    let bed = TestBed::start(Mode::Json);
    bed.upstream.release_gate();
    let slow = generated::expect("wgfx-slow");
    let wheel = catalog().expect_project("wgfx-app").wheel("1.1.0");
    let wheel_size = wheel.bytes.len() as u64;
    let cases = [
        // Stored as a blob file.
        WarmCase {
            project: slow.project,
            filename: slow.filename.to_owned(),
            sha256: slow.sha256().to_owned(),
            size: slow.size,
            head: slow.bytes(0, 100),
            tail: slow.bytes(slow.size - 10, slow.size),
        },
        // Small enough to sit inline in the catalog.
        WarmCase {
            project: "wgfx-app",
            filename: wheel.filename.clone(),
            sha256: wheel.sha256.clone(),
            size: wheel_size,
            head: wheel.bytes.get(..100).unwrap_or_default().to_vec(),
            tail: wheel
                .bytes
                .get(wheel.bytes.len() - 10..)
                .unwrap_or_default()
                .to_vec(),
        },
    ];
    for case in &cases {
        let name = &case.filename;
        let url = bed.file_url(case.project, name);
        let cold = http::get(&url, &[]);
        assert_eq!(sha256_hex(cold.expect_ok(name)), case.sha256, "{name} cold");
        assert_eq!(cold.cache(), Some("miss"), "{name} cold");

        // The cold transfer ends for clients as soon as the bytes are verified; the commit to the
        // store follows. A request in between joins the finishing download (a hit, but served as a
        // stream). Wait for the stored copy, which is what this test is about.
        let committed = wait_until(Duration::from_secs(5), || {
            http::head(&url, &[]).header("accept-ranges").is_some()
        });
        assert!(committed, "{name} was never committed to the store");
        let warm = http::get(&url, &[]);
        assert_eq!(sha256_hex(warm.expect_ok(name)), case.sha256, "{name} warm");
        assert_eq!(warm.cache(), Some("hit"), "{name} warm");
        let size = case.size.to_string();
        assert_eq!(
            warm.header("content-length"),
            Some(size.as_str()),
            "{name}: warm files have a Content-Length"
        );
        assert_eq!(
            warm.header("etag"),
            Some(format!("\"{}\"", case.sha256).as_str()),
            "{name}: the ETag is the sha256"
        );
        let cache_control = warm.header("cache-control").unwrap_or_default();
        assert!(
            cache_control.contains("immutable") && cache_control.contains("max-age=31536000"),
            "{name}: Cache-Control {cache_control:?}"
        );
        assert_eq!(warm.header("accept-ranges"), Some("bytes"), "{name}");

        let first_hundred = http::get(&url, &[("range", "bytes=0-99")]);
        assert_eq!(
            first_hundred.status,
            StatusCode::PARTIAL_CONTENT,
            "{name} bytes=0-99: {}",
            first_hundred.text()
        );
        assert_eq!(first_hundred.body, case.head, "{name} bytes=0-99");
        assert_eq!(
            first_hundred.header("content-range"),
            Some(format!("bytes 0-99/{size}").as_str()),
            "{name}"
        );
        assert_eq!(
            first_hundred.header("content-length"),
            Some("100"),
            "{name}"
        );

        let suffix = http::get(&url, &[("range", "bytes=-10")]);
        assert_eq!(
            suffix.status,
            StatusCode::PARTIAL_CONTENT,
            "{name} bytes=-10: {}",
            suffix.text()
        );
        assert_eq!(suffix.body, case.tail, "{name} bytes=-10");
        let expected_range = format!("bytes {}-{}/{size}", case.size - 10, case.size - 1);
        assert_eq!(
            suffix.header("content-range"),
            Some(expected_range.as_str()),
            "{name}"
        );

        let beyond = http::get(&url, &[("range", &format!("bytes={size}-"))]);
        assert_eq!(
            beyond.status,
            StatusCode::RANGE_NOT_SATISFIABLE,
            "{name} bytes={size}-: {}",
            beyond.text()
        );
    }
    assert_eq!(
        bed.upstream.requests_for(&slow.path()).len(),
        1,
        "warm requests never reach the upstream"
    );
}

fn gunzip(bytes: &[u8], what: &str) -> Vec<u8> {
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut decoded)
        .unwrap_or_else(|e| panic!("{what}: not valid gzip: {e}"));
    decoded
}

#[test]
fn pages_answer_if_none_match_and_compress() {
    let bed = TestBed::start(Mode::Json);
    let url = bed.url(PAGE);
    for accept in [JSON_MEDIA_TYPE, "text/html"] {
        let what = format!("{url} ({accept})");
        let page = http::get(&url, &[("accept", accept)]);
        page.expect_ok(&what);
        assert_eq!(
            page.header("content-encoding"),
            None,
            "{what}: identity unless the client accepts gzip"
        );
        let etag = page
            .header("etag")
            .unwrap_or_else(|| panic!("{what}: pages carry an ETag"))
            .to_owned();

        let not_modified = http::get(&url, &[("accept", accept), ("if-none-match", &etag)]);
        assert_eq!(
            not_modified.status,
            StatusCode::NOT_MODIFIED,
            "{what} with If-None-Match {etag}"
        );
        assert!(not_modified.body.is_empty(), "{what}: a 304 has no body");
        let other = http::get(
            &url,
            &[("accept", accept), ("if-none-match", "\"not-this-one\"")],
        );
        assert_eq!(
            other.status,
            StatusCode::OK,
            "{what}: a different validator gets the page"
        );

        let gzipped = http::get(&url, &[("accept", accept), ("accept-encoding", "gzip")]);
        gzipped.expect_ok(&what);
        assert_eq!(
            gzipped.header("content-encoding"),
            Some("gzip"),
            "{what} with Accept-Encoding: gzip"
        );
        assert_eq!(
            gunzip(&gzipped.body, &what),
            page.body,
            "{what}: gzip decodes to the identity page"
        );
    }
    let upstream_pages = bed.upstream.requests_for(PAGE).len();
    assert!(
        upstream_pages <= 2,
        "one upstream fetch per format at most, got {upstream_pages}"
    );
}

/// The access log (SPEC §9): one line per request, in tracing's text shape, naming the path, the
/// status, the announced length and how the cache was involved.
#[test]
fn the_access_log_names_each_request_and_its_cache_status() {
    let mut bed = TestBed::start(Mode::Json);
    let url = bed.url(PAGE);
    let first = http::get(&url, &[ACCEPT_JSON]);
    first.expect_ok(&url);
    let second = http::get(&url, &[ACCEPT_JSON]);
    second.expect_ok(&url);
    let missing = bed.url("/simple/wgfx-no-such-project/");
    assert_eq!(
        http::get(&missing, &[ACCEPT_JSON]).status,
        StatusCode::NOT_FOUND
    );
    // The lines are written in batches; a graceful stop writes what is left.
    bed.wheelgate.stop();
    let output = bed.wheelgate.output();
    let access: Vec<&str> = output
        .lines()
        .filter(|l| l.contains(" INFO wheelgate::access: request "))
        .collect();
    let length = second.body.len();
    for (cache, status, path, bytes) in [
        ("miss", 200, PAGE, length.to_string()),
        ("hit", 200, PAGE, length.to_string()),
    ] {
        let wanted = format!(
            "method=GET path={path} status={status} bytes={bytes} cache={cache} denied_by=- ms="
        );
        assert!(
            access.iter().any(|l| l.contains(&wanted)),
            "no access line with {wanted:?} in:\n{}",
            access.join("\n")
        );
    }
    assert!(
        access
            .iter()
            .any(|l| l.contains("path=/simple/wgfx-no-such-project/ status=404 ")),
        "no access line for the 404 in:\n{}",
        access.join("\n")
    );
    for line in &access {
        let timestamp = line.split_whitespace().next().unwrap_or_default();
        assert!(
            timestamp.len() == 27 && timestamp.ends_with('Z') && timestamp.as_bytes()[10] == b'T',
            "not an RFC 3339 timestamp with microseconds: {line}"
        );
    }
}
