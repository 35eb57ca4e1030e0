//! Hostile upstreams (issue 16): every fault the faulty upstream (`harness/faulty.rs`) can inject,
//! one test per family, each checking the four promises.
//!
//! 1. The client gets a clear error (a 502 or 504 whose reason names the repository and whose body
//!    names the upstream URL) or the right bytes; a transfer that fails after the head ends in a
//!    broken connection, never in a 200 whose short or wrong body looks complete.
//! 2. The store holds nothing partial or wrong: the file is not recorded (a HEAD says `miss`), no
//!    blob, nothing left in `tmp/`, and `wheelgate cache verify` finds every stored body sound.
//! 3. The next request, once the upstream is healthy, works and gets the right bytes.
//! 4. A cached page whose upstream now fails is served stale (SPEC §4, stale-if-error), and says
//!    so in `X-Wheelgate-Cache`.
//!
//! Files are tried at both sizes wheelgate treats differently: a small wheel (gathered in memory
//! until its digest is checked) and a 1 MiB generated file (written to a temporary file that
//! clients follow). Pages are tried cold (nothing cached: an error) and cached but stale (index_ttl
//! 1 s: served stale). The remote has one retry and short timeouts (`FAULTY_TIMEOUTS`).

use std::time::{Duration, Instant};

use ::http::StatusCode;

use crate::harness::clients::{self, dists};
use crate::harness::faulty::{Fault, Faulty, FaultyBed};
use crate::harness::fixtures::{catalog, sha256_hex};
use crate::harness::generated;
use crate::harness::http::{self, HttpResponse, RawResponse};
use crate::harness::upstream::JSON_MEDIA_TYPE;
use crate::harness::wait_until;

/// The index_ttl of the beds: pages go stale quickly.
const TTL: Duration = Duration::from_secs(1);

/// A file the faulty upstream serves.
struct Subject {
    project: &'static str,
    filename: String,
    bytes: Vec<u8>,
    sha256: String,
}

impl Subject {
    /// A real wheel of a fixture project: small, so wheelgate gathers it in memory.
    fn wheel(project: &'static str, version: &str) -> Subject {
        let wheel = catalog().expect_project(project).wheel(version);
        Subject {
            project,
            filename: wheel.filename.clone(),
            bytes: wheel.bytes.clone(),
            sha256: wheel.sha256.clone(),
        }
    }

    /// A 1 MiB generated file: wheelgate writes it to a temporary file.
    fn big(project: &'static str) -> Subject {
        let file = generated::expect(project);
        Subject {
            project,
            filename: file.filename.to_owned(),
            bytes: file.bytes(0, file.size),
            sha256: file.sha256().to_owned(),
        }
    }

    /// Its path on the faulty upstream, where faults are scripted.
    fn path(&self) -> String {
        Faulty::file_path(self.project, &self.filename)
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// The projects every bed serves: `small()`'s, `big()`'s, and pages to break.
const PROJECTS: [&str; 8] = [
    "wgfx-delta",
    "wgfx-lru-a",
    "wgfx-lru-b",
    "wgfx-epsilon",
    "wgfx-zeta",
    "wgfx-beta",
    "wgfx-alpha",
    "wgfx-kappa",
];

fn small() -> Subject {
    Subject::wheel("wgfx-delta", "2.0.0")
}

/// Another small wheel of the same project, for a second fault on a cold file.
fn small_older() -> Subject {
    Subject::wheel("wgfx-delta", "1.5.0")
}

fn big() -> Subject {
    Subject::big("wgfx-lru-a")
}

/// A bed on `PROJECTS` whose pages go stale after `TTL`.
fn bed() -> FaultyBed {
    FaultyBed::start(&PROJECTS, "info", |config| {
        config.index_ttl = "1s".to_owned();
    })
}

/// The path part of a URL, for the raw client.
fn path_of(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.path().to_owned())
        .unwrap_or_else(|e| panic!("bad URL {url}: {e}"))
}

/// Asks for a file that must fail, with a client that tells a broken body from a whole one.
/// A connection closed before any answer is no clear error: it panics.
fn get_failing(url: &str, bed: &FaultyBed, what: &str) -> HttpResponse {
    http::try_get(url, &[]).unwrap_or_else(|e| {
        panic!(
            "{what}: the connection closed without any answer ({e}); a failure before the first \
             byte must be a 502 or 504 with a reason\nwheelgate:\n{}",
            bed.wheelgate.output()
        )
    })
}

/// Promise 1 for a transfer that must fail: a 502/504 naming the repository and the file, or a
/// 200 whose body broke off short of the file. Never a complete-looking body.
fn assert_failed(response: &HttpResponse, subject: &Subject, bed: &FaultyBed, what: &str) {
    match response.status {
        StatusCode::OK => {
            assert!(
                response.body_error.is_some(),
                "{what}: a 200 whose body ended cleanly ({} of {} bytes, sha256 {}): a client \
                 would take it for the file\nwheelgate:\n{}",
                response.body.len(),
                subject.len(),
                sha256_hex(&response.body),
                bed.wheelgate.output()
            );
            assert!(
                response.body.len() < subject.len(),
                "{what}: the client received {} bytes of a {}-byte file before the break",
                response.body.len(),
                subject.len()
            );
        }
        StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => {
            assert!(
                response.text().contains("repository pypi")
                    && response.text().contains(&subject.filename),
                "{what}: the error must name the repository and the file: {}",
                response.text()
            );
        }
        other => panic!(
            "{what}: expected a broken 200 or a 502/504, got {other}: {}",
            response.text()
        ),
    }
}

/// Promise 1 for an error before any byte, with the raw client so the reason phrase is seen:
/// `status`, a reason naming the repository, a body naming the upstream and holding `needles`.
fn assert_clear_error(
    bed: &FaultyBed,
    url: &str,
    status: u16,
    needles: &[&str],
    what: &str,
) -> RawResponse {
    let response = http::raw_get(bed.wheelgate.addr(), path_of(url).as_bytes())
        .unwrap_or_else(|e| panic!("{what}: GET {url}: {e}"));
    let text = response.text();
    assert_eq!(
        response.status,
        status,
        "{what}: {url} answered {} {:?}: {text}\nwheelgate:\n{}",
        response.status,
        response.reason_phrase,
        bed.wheelgate.output()
    );
    assert!(
        response.reason_phrase.contains("repository pypi"),
        "{what}: the reason phrase must name the repository: {:?}",
        response.reason_phrase
    );
    let upstream = bed.faulty.addr().to_string();
    assert!(
        text.contains(&upstream),
        "{what}: the body must name the upstream ({upstream}): {text}"
    );
    for needle in needles {
        assert!(
            text.contains(needle),
            "{what}: the body must say {needle:?}: {text}"
        );
    }
    response
}

/// Promise 2 for one file: not recorded (a HEAD through wheelgate says `miss`), no blob under its
/// digest, and `tmp/` empties.
fn assert_nothing_stored(bed: &FaultyBed, url: &str, subject: &Subject, what: &str) {
    let head = http::head(url, &[]);
    assert_eq!(
        head.cache(),
        Some("miss"),
        "{what}: after the failed transfer {} must not be stored",
        subject.filename
    );
    assert!(
        !bed.blob_path(&subject.sha256).exists(),
        "{what}: a blob exists for {}",
        subject.filename
    );
    assert!(
        wait_until(Duration::from_secs(10), || bed
            .store_files("tmp")
            .is_empty()),
        "{what}: tmp/ still holds {:?}",
        bed.store_files("tmp")
    );
}

/// Promise 3 for one file: the next request gets the right bytes from the upstream, which are
/// then stored and served again as a hit.
fn assert_recovers(bed: &FaultyBed, url: &str, subject: &Subject, what: &str) {
    let response = http::get(url, &[]);
    assert_eq!(
        sha256_hex(response.expect_ok(url)),
        subject.sha256,
        "{what}: the request after the fault got other bytes"
    );
    assert_eq!(response.cache(), Some("miss"), "{what}: fetched again");
    let stored = wait_until(Duration::from_secs(10), || {
        http::head(url, &[]).cache() == Some("hit")
    });
    assert!(
        stored,
        "{what}: {} was never stored once healthy\nwheelgate:\n{}",
        subject.filename,
        bed.wheelgate.output()
    );
    let again = http::get(url, &[]);
    assert_eq!(
        again.expect_ok(url),
        subject.bytes.as_slice(),
        "{what}: the stored copy"
    );
    assert_eq!(again.cache(), Some("hit"), "{what}");
}

/// Scripts `fault` once for `subject`, asks for it, and checks promises 1 to 3.
fn file_fault_fails_cleanly(bed: &FaultyBed, subject: &Subject, fault: Fault, what: &str) {
    let url = bed.file_url(subject.project, &subject.filename);
    bed.faulty.script(&subject.path(), [fault.clone()]);
    let response = get_failing(&url, bed, what);
    assert_failed(&response, subject, bed, what);
    assert_eq!(
        bed.faulty
            .requests_for(&subject.path())
            .last()
            .map(|r| &r.fault),
        Some(&fault),
        "{what}: the upstream must have been asked and misbehaved"
    );
    assert_nothing_stored(bed, &url, subject, what);
    assert_recovers(bed, &url, subject, what);
}

/// Scripts `fault` once for `subject` and checks that the client gets exactly the right bytes.
fn file_fault_is_harmless(bed: &FaultyBed, subject: &Subject, fault: Fault, what: &str) {
    let url = bed.file_url(subject.project, &subject.filename);
    bed.faulty.script(&subject.path(), [fault.clone()]);
    let started = Instant::now();
    let response = http::get(&url, &[]);
    assert_eq!(
        sha256_hex(response.expect_ok(&url)),
        subject.sha256,
        "{what}: wrong bytes after {:?}\nwheelgate:\n{}",
        started.elapsed(),
        bed.wheelgate.output()
    );
    assert_eq!(
        bed.faulty
            .requests_for(&subject.path())
            .first()
            .map(|r| &r.fault),
        Some(&fault),
        "{what}: the upstream must have misbehaved"
    );
    let stored = wait_until(Duration::from_secs(10), || {
        http::head(&url, &[]).cache() == Some("hit")
    });
    assert!(stored, "{what}: the file was not stored");
}

fn page_url(bed: &FaultyBed, project: &str) -> String {
    bed.url(&format!("/simple/{project}/"))
}

fn get_page(bed: &FaultyBed, project: &str) -> HttpResponse {
    http::get(&page_url(bed, project), &[("accept", JSON_MEDIA_TYPE)])
}

/// The page lists exactly the project's files.
fn assert_page_lists_files(response: &HttpResponse, project: &str, what: &str) {
    let page = response.json();
    let mut listed: Vec<String> = page["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["filename"].as_str().map(str::to_owned))
        .collect();
    listed.sort();
    let mut expected: Vec<String> = catalog()
        .expect_project(project)
        .files
        .iter()
        .map(|f| f.filename.clone())
        .collect();
    expected.sort();
    assert_eq!(listed, expected, "{what}: the page of {project}");
}

/// Fetches the page (from the upstream) and waits until it is stale.
fn cache_then_go_stale(bed: &FaultyBed, project: &str) {
    let response = get_page(bed, project);
    response.expect_ok(project);
    assert_page_lists_files(&response, project, "the healthy page");
    std::thread::sleep(TTL + Duration::from_millis(300));
}

/// Promise 4: with `fault` on the upstream page, the stale copy is served and says so.
fn assert_served_stale(bed: &FaultyBed, project: &str, fault: Fault, what: &str) {
    let path = Faulty::page_path(project);
    bed.faulty.always(&path, fault.clone());
    let before = bed.faulty.requests_for(&path).len();
    let response = get_page(bed, project);
    assert_eq!(
        response.status,
        StatusCode::OK,
        "{what}: a cached page must be served stale when the upstream fails: {}\nwheelgate:\n{}",
        response.text(),
        bed.wheelgate.output()
    );
    assert_eq!(response.cache(), Some("stale"), "{what}: X-Wheelgate-Cache");
    assert_page_lists_files(&response, project, what);
    let asked = bed.faulty.requests_for(&path);
    assert!(
        asked.len() > before && asked.iter().skip(before).all(|r| r.fault == fault),
        "{what}: the upstream must have been asked, and failed: {asked:?}"
    );
    bed.faulty.heal(&path);
    assert_page_recovers(bed, project, what);
}

/// Promise 4 on the page of `wgfx-epsilon`: cached, gone stale, then served stale while the
/// upstream answers with `fault`; and back from the upstream once it is healthy.
fn stale_page_survives(bed: &FaultyBed, fault: Fault, what: &str) {
    cache_then_go_stale(bed, "wgfx-epsilon");
    assert_served_stale(bed, "wgfx-epsilon", fault, what);
}

/// Promise 3 for a page: once the upstream is healthy, the page comes from it again (a page
/// served stale, or a failed load, may be remembered for a second).
fn assert_page_recovers(bed: &FaultyBed, project: &str, what: &str) {
    let mut last = None;
    let recovered = wait_until(Duration::from_secs(6), || {
        let response = get_page(bed, project);
        let fresh = response.status == StatusCode::OK
            && matches!(response.cache(), Some("miss" | "revalidated"));
        last = Some(response);
        fresh
    });
    let last = last.unwrap_or_else(|| panic!("{what}: no request was made"));
    assert!(
        recovered,
        "{what}: the page never came back from the healthy upstream; last: {} {:?} {}",
        last.status,
        last.cache(),
        last.text()
    );
    assert_page_lists_files(&last, project, what);
}

/// Promises 1 and 3 for a page nothing cached: `fault` gives `status` naming the repository and
/// the upstream page, then the healthy upstream's page comes through.
fn assert_cold_page_fails(
    bed: &FaultyBed,
    project: &str,
    fault: Fault,
    status: u16,
    needles: &[&str],
    what: &str,
) {
    let path = Faulty::page_path(project);
    bed.faulty.always(&path, fault);
    assert_clear_error(bed, &page_url(bed, project), status, needles, what);
    bed.faulty.heal(&path);
    assert_page_recovers(bed, project, what);
}

#[test]
fn delays_within_the_timeouts_only_slow_the_answer_down() {
    let bed = bed();
    let pause = Duration::from_millis(600);
    file_fault_is_harmless(&bed, &small(), Fault::Delay(pause), "a delayed small file");
    file_fault_is_harmless(&bed, &big(), Fault::Delay(pause), "a delayed 1 MiB file");

    // A first attempt slower than first_byte_timeout (2 s) is given up and retried.
    let older = small_older();
    let url = bed.file_url(older.project, &older.filename);
    bed.faulty.script(
        &older.path(),
        [Fault::Delay(Duration::from_secs(4)), Fault::Healthy],
    );
    let response = http::get(&url, &[]);
    assert_eq!(
        response.expect_ok(&url),
        older.bytes.as_slice(),
        "after a retry"
    );
    assert_eq!(bed.faulty.requests_for(&older.path()).len(), 2, "one retry");

    let path = Faulty::page_path("wgfx-zeta");
    bed.faulty.script(&path, [Fault::Delay(pause)]);
    let cold = get_page(&bed, "wgfx-zeta");
    cold.expect_ok("a delayed cold page");
    assert_page_lists_files(&cold, "wgfx-zeta", "a delayed cold page");

    cache_then_go_stale(&bed, "wgfx-epsilon");
    bed.faulty
        .script(&Faulty::page_path("wgfx-epsilon"), [Fault::Delay(pause)]);
    let revalidated = get_page(&bed, "wgfx-epsilon");
    revalidated.expect_ok("a delayed revalidation");
    assert_eq!(
        revalidated.cache(),
        Some("revalidated"),
        "a slow 304 within the timeout is a revalidation, not a stale serve"
    );
    bed.assert_store_sound("after delays");
}

#[test]
fn a_reset_mid_body_cuts_the_client_off_and_stores_nothing() {
    let bed = bed();
    let small = small();
    let big = big();
    let reset_small = Fault::Reset {
        after: small.len() / 2,
    };
    file_fault_fails_cleanly(&bed, &small, reset_small, "a small file reset mid-body");
    let reset_big = Fault::Reset { after: 600 * 1024 };
    file_fault_fails_cleanly(&bed, &big, reset_big, "a 1 MiB file reset mid-body");

    let reset_page = Fault::Reset { after: 100 };
    assert_cold_page_fails(
        &bed,
        "wgfx-zeta",
        reset_page.clone(),
        502,
        &["/simple/wgfx-zeta/"],
        "a cold page reset mid-body",
    );
    stale_page_survives(&bed, reset_page, "a stale page reset mid-body");
    bed.assert_store_sound("after resets");
}

#[test]
fn a_body_cut_short_of_its_content_length_is_an_error_not_a_short_file() {
    let bed = bed();
    let small = small();
    let big = big();
    let cut_small = Fault::Truncate {
        after: small.len() - 10,
    };
    file_fault_fails_cleanly(&bed, &small, cut_small, "a small file cut short");
    let cut_big = Fault::Truncate { after: 900 * 1024 };
    file_fault_fails_cleanly(&bed, &big, cut_big, "a 1 MiB file cut short");

    let cut_page = Fault::Truncate { after: 100 };
    assert_cold_page_fails(
        &bed,
        "wgfx-zeta",
        cut_page.clone(),
        502,
        &["/simple/wgfx-zeta/"],
        "a cold page cut short",
    );
    stale_page_survives(&bed, cut_page, "a stale page cut short");
    bed.assert_store_sound("after truncations");
}

#[test]
fn a_close_delimited_body_that_ends_early_fails_its_sha256() {
    let bed = bed();
    let small = small();
    let big = big();
    let early = |subject: &Subject| Fault::CloseDelimited {
        after: Some(subject.len() / 2),
    };
    file_fault_fails_cleanly(&bed, &small, early(&small), "a small file closed early");
    file_fault_fails_cleanly(&bed, &big, early(&big), "a 1 MiB file closed early");
    // A close-delimited body that is whole is a file like any other.
    file_fault_is_harmless(
        &bed,
        &small_older(),
        Fault::CloseDelimited { after: None },
        "a whole close-delimited file",
    );

    // A page has no digest: cut short, its JSON does not parse.
    let cut_page = Fault::CloseDelimited { after: Some(150) };
    assert_cold_page_fails(
        &bed,
        "wgfx-zeta",
        cut_page.clone(),
        502,
        &["/simple/wgfx-zeta/", "not valid"],
        "a cold page closed early",
    );
    stale_page_survives(&bed, cut_page, "a stale page closed early");
    bed.assert_store_sound("after early closes");
}

/// A file whose upstream publishes no digest is pinned to the digest of its first download
/// (SPEC §4). A close-delimited body that ends early is indistinguishable from a whole one at the
/// HTTP level; only the `size` the JSON page declares (PEP 700) tells, and wheelgate holds the
/// body to it: without that check the short body was served as a complete 200 and pinned.
#[test]
fn a_hashless_file_cut_short_without_a_content_length_is_caught_by_its_declared_size() {
    let bed = FaultyBed::start(&["wgfx-nohash"], "info", |_| {});
    let subject = Subject::wheel("wgfx-nohash", "1.0.0");
    file_fault_fails_cleanly(
        &bed,
        &subject,
        Fault::CloseDelimited {
            after: Some(subject.len() / 2),
        },
        "a hashless file closed early",
    );
    bed.assert_store_sound("after a hashless early close");
}

#[test]
fn a_body_longer_than_its_content_length_never_reaches_a_client_whole() {
    let bed = bed();
    let small = small();
    let big = big();
    // Bytes past the announced length are not part of the body: the file is right, and the
    // connection they poisoned is not used again.
    file_fault_is_harmless(
        &bed,
        &small,
        Fault::Overlong { extra: 4096 },
        "a small file with trailing junk",
    );
    file_fault_is_harmless(
        &bed,
        &big,
        Fault::Overlong { extra: 4096 },
        "a 1 MiB file with trailing junk",
    );
    // A length that announces less than the upstream sends cuts the file: its sha256 fails.
    file_fault_fails_cleanly(
        &bed,
        &small_older(),
        Fault::Underdeclared { by: 100 },
        "a small file announced short",
    );
    let big_b = Subject::big("wgfx-lru-b");
    file_fault_fails_cleanly(
        &bed,
        &big_b,
        Fault::Underdeclared { by: 100 },
        "a 1 MiB file announced short",
    );

    let short_page = Fault::Underdeclared { by: 40 };
    assert_cold_page_fails(
        &bed,
        "wgfx-zeta",
        short_page.clone(),
        502,
        &["/simple/wgfx-zeta/", "not valid"],
        "a cold page announced short",
    );
    cache_then_go_stale(&bed, "wgfx-epsilon");
    bed.faulty.script(
        &Faulty::page_path("wgfx-epsilon"),
        [Fault::Overlong { extra: 2048 }],
    );
    let page = get_page(&bed, "wgfx-epsilon");
    page.expect_ok("a page with trailing junk");
    assert_page_lists_files(&page, "wgfx-epsilon", "a page with trailing junk");
    std::thread::sleep(TTL + Duration::from_millis(300));
    assert_served_stale(
        &bed,
        "wgfx-epsilon",
        short_page,
        "a stale page announced short",
    );
    bed.assert_store_sound("after long bodies");
}

#[test]
fn wrong_bytes_are_withheld_and_nothing_is_stored() {
    let bed = bed();
    file_fault_fails_cleanly(
        &bed,
        &small(),
        Fault::WrongBytes,
        "a small file with a flipped byte",
    );
    file_fault_fails_cleanly(
        &bed,
        &big(),
        Fault::WrongBytes,
        "a 1 MiB file with a flipped byte",
    );
    assert!(
        bed.wheelgate.output().contains("sha256 mismatch"),
        "the mismatch must be logged"
    );
    bed.assert_store_sound("after wrong bytes");
}

#[test]
fn server_errors_are_retried_once_then_reported_and_never_cached() {
    let bed = bed();
    // 503 then healthy: the retry gets the file.
    let small = small();
    file_fault_is_harmless(&bed, &small, Fault::Status(503), "a 503 then the file");
    assert_eq!(bed.faulty.requests_for(&small.path()).len(), 2, "one retry");

    // Two 503s use up the retry: a clear 502, and the next request gets the file.
    let big = big();
    let url = bed.file_url(big.project, &big.filename);
    bed.faulty
        .script(&big.path(), [Fault::Status(503), Fault::Status(503)]);
    assert_clear_error(&bed, &url, 502, &["503", &big.filename], "two 503s");
    assert_eq!(bed.faulty.requests_for(&big.path()).len(), 2);
    assert_nothing_stored(&bed, &url, &big, "two 503s");
    assert_recovers(&bed, &url, &big, "after two 503s");

    // 500 is not one of the statuses worth a retry (SPEC §3: 429, 502, 503, 504).
    let older = small_older();
    let url = bed.file_url(older.project, &older.filename);
    bed.faulty.script(&older.path(), [Fault::Status(500)]);
    assert_clear_error(&bed, &url, 502, &["500", &older.filename], "a 500");
    assert_eq!(
        bed.faulty.requests_for(&older.path()).len(),
        1,
        "a 500 is not retried"
    );
    assert_nothing_stored(&bed, &url, &older, "a 500");
    assert_recovers(&bed, &url, &older, "after a 500");

    let zeta = Faulty::page_path("wgfx-zeta");
    bed.faulty.script(&zeta, [Fault::Status(502)]);
    let page = get_page(&bed, "wgfx-zeta");
    page.expect_ok("a 502 then the page");
    assert_eq!(
        bed.faulty.requests_for(&zeta).len(),
        2,
        "one retry of the page"
    );
    assert_cold_page_fails(
        &bed,
        "wgfx-beta",
        Fault::Status(503),
        502,
        &["503"],
        "a cold page always 503",
    );
    stale_page_survives(&bed, Fault::Status(500), "a stale page and a 500");
    stale_page_survives(&bed, Fault::Status(503), "a stale page and 503s");
    bed.assert_store_sound("after server errors");
}

#[test]
fn refused_credentials_are_a_502_that_says_so_and_are_not_cached() {
    let bed = bed();
    for (subject, status) in [(small(), 401), (big(), 403)] {
        let what = format!("a file refused with {status}");
        let url = bed.file_url(subject.project, &subject.filename);
        bed.faulty.script(&subject.path(), [Fault::Status(status)]);
        let refused = assert_clear_error(
            &bed,
            &url,
            502,
            &["refused the credentials", &status.to_string()],
            &what,
        );
        assert!(
            refused.reason_phrase.contains("refused the credentials"),
            "{what}: {:?}",
            refused.reason_phrase
        );
        assert_eq!(
            bed.faulty.requests_for(&subject.path()).len(),
            1,
            "{what}: a refusal is not retried"
        );
        assert_nothing_stored(&bed, &url, &subject, &what);
        assert_recovers(&bed, &url, &subject, &what);
    }
    assert_cold_page_fails(
        &bed,
        "wgfx-zeta",
        Fault::Status(401),
        502,
        &["refused the credentials", "/simple/wgfx-zeta/"],
        "a cold page refused with 401",
    );
    assert_cold_page_fails(
        &bed,
        "wgfx-beta",
        Fault::Status(403),
        502,
        &["refused the credentials"],
        "a cold page refused with 403",
    );
    stale_page_survives(&bed, Fault::Status(401), "a stale page refused with 401");
    bed.assert_store_sound("after refusals");
}

#[test]
fn a_response_that_never_starts_is_a_504_after_the_first_byte_timeout() {
    let bed = bed();
    let small = small();
    let url = bed.file_url(small.project, &small.filename);
    bed.faulty.always(&small.path(), Fault::NeverStarts);
    let started = Instant::now();
    assert_clear_error(
        &bed,
        &url,
        504,
        &["first_byte_timeout"],
        "a file that never starts",
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(15),
        "two attempts of first_byte_timeout 2 s, then the 504: took {waited:?}"
    );
    assert_eq!(bed.faulty.requests_for(&small.path()).len(), 2, "one retry");
    assert_nothing_stored(&bed, &url, &small, "a file that never starts");
    bed.faulty.heal(&small.path());
    assert_recovers(&bed, &url, &small, "after a file that never started");

    assert_cold_page_fails(
        &bed,
        "wgfx-zeta",
        Fault::NeverStarts,
        504,
        &["first_byte_timeout", "/simple/wgfx-zeta/"],
        "a cold page that never starts",
    );
    stale_page_survives(&bed, Fault::NeverStarts, "a stale page that never starts");
    bed.assert_store_sound("after silences");
}

#[test]
fn a_steady_drip_succeeds_and_one_slower_than_the_idle_timeout_fails_cleanly() {
    let bed = bed();
    let small = small();
    let big = big();
    // Pieces every 150 ms: the whole takes longer than idle_timeout (1 s), no pause does.
    let steady_small = Fault::Drip {
        every: Duration::from_millis(150),
        bytes: small.len() / 12 + 1,
    };
    let started = Instant::now();
    file_fault_is_harmless(
        &bed,
        &small_older(),
        steady_small.clone(),
        "a small file dripping steadily",
    );
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "the drip took {:?}",
        started.elapsed()
    );
    let steady_big = Fault::Drip {
        every: Duration::from_millis(100),
        bytes: 64 * 1024,
    };
    file_fault_is_harmless(&bed, &big, steady_big, "a 1 MiB file dripping steadily");

    let stalling = Fault::Drip {
        every: Duration::from_millis(2500),
        bytes: small.len() / 3,
    };
    file_fault_fails_cleanly(
        &bed,
        &small,
        stalling.clone(),
        "a small file dripping too slowly",
    );

    let page_bytes = 64;
    let steady_page = Fault::Drip {
        every: Duration::from_millis(50),
        bytes: page_bytes,
    };
    bed.faulty
        .script(&Faulty::page_path("wgfx-beta"), [steady_page]);
    let page = get_page(&bed, "wgfx-beta");
    page.expect_ok("a page dripping steadily");
    assert_page_lists_files(&page, "wgfx-beta", "a page dripping steadily");
    assert_cold_page_fails(
        &bed,
        "wgfx-zeta",
        stalling.clone(),
        504,
        &["idle_timeout"],
        "a cold page dripping too slowly",
    );
    stale_page_survives(&bed, stalling, "a stale page dripping too slowly");
    bed.assert_store_sound("after drips");
}

/// Pages that are not pages: each kind is a 502 naming the upstream page while nothing is cached,
/// and a stale serve once a good copy is.
#[test]
fn malformed_pages_are_a_502_naming_the_upstream_or_served_stale() {
    let bed = bed();
    let html_page =
        b"<!DOCTYPE html><html><body><a href=\"x-1.0.tar.gz\">x</a></body></html>".to_vec();
    let kinds: [(&str, &str, Fault); 4] = [
        (
            "invalid JSON",
            "wgfx-zeta",
            Fault::Replace {
                content_type: JSON_MEDIA_TYPE.to_owned(),
                body: b"{\"meta\": {\"api-version\": \"1.1\"}, \"files\": [{\"filename\": ".to_vec(),
            },
        ),
        (
            "HTML garbage",
            "wgfx-beta",
            Fault::Replace {
                content_type: "text/html".to_owned(),
                body: vec![0xff, 0xfe, 0x00, 0x3c, 0x61, 0x80, 0x81, 0xc3, 0x28],
            },
        ),
        (
            "HTML labelled as JSON",
            "wgfx-alpha",
            Fault::Replace {
                content_type: JSON_MEDIA_TYPE.to_owned(),
                body: html_page,
            },
        ),
        (
            "JSON of the wrong types",
            "wgfx-kappa",
            Fault::Replace {
                content_type: JSON_MEDIA_TYPE.to_owned(),
                body: br#"{"meta": {"api-version": "1.1"}, "name": "x", "files": [{"filename": 5, "url": ["a"], "hashes": "none"}]}"#.to_vec(),
            },
        ),
    ];
    for (what, cold_project, fault) in &kinds {
        assert_cold_page_fails(
            &bed,
            cold_project,
            fault.clone(),
            502,
            &[&format!("/simple/{cold_project}/")],
            &format!("a cold page of {what}"),
        );
    }
    cache_then_go_stale(&bed, "wgfx-epsilon");
    for (what, _, fault) in kinds {
        std::thread::sleep(TTL + Duration::from_millis(300));
        assert_served_stale(
            &bed,
            "wgfx-epsilon",
            fault,
            &format!("a stale page and {what}"),
        );
    }
    bed.assert_store_sound("after malformed pages");
}

/// Promise 3 with real clients: after a file reset mid-body and a page that failed, pip and uv
/// install through wheelgate once the upstream is healthy.
#[test]
fn pip_and_uv_install_once_the_upstream_is_healthy_again() {
    let bed = bed();
    let small = small();
    let url = bed.file_url(small.project, &small.filename);
    bed.faulty.script(
        &small.path(),
        [Fault::Reset {
            after: small.len() / 3,
        }],
    );
    let response = get_failing(&url, &bed, "the reset before pip");
    assert_failed(&response, &small, &bed, "the reset before pip");
    let target = bed.dir.path().join("pip-target");
    let run = clients::pip_install(&bed.wheelgate.index_url(), &target, &["wgfx-delta"]);
    run.assert_success();
    assert_eq!(
        clients::installed(&target),
        dists(&[("wgfx-delta", "2.0.0")]),
        "pip after the reset:\n{}",
        run.output()
    );
    assert_eq!(bed.faulty.requests_for(&small.path()).len(), 2);

    let epsilon = Faulty::page_path("wgfx-epsilon");
    bed.faulty.always(&epsilon, Fault::Status(503));
    assert_clear_error(
        &bed,
        &page_url(&bed, "wgfx-epsilon"),
        502,
        &["503"],
        "the page before uv",
    );
    bed.faulty.heal(&epsilon);
    let target = bed.dir.path().join("uv-target");
    // A failed page load may be remembered for negative_ttl (1 s).
    std::thread::sleep(Duration::from_millis(1200));
    let run = clients::uv_install(&bed.wheelgate.index_url(), &target, &["wgfx-epsilon"]);
    run.assert_success();
    assert_eq!(
        clients::installed(&target),
        dists(&[("wgfx-epsilon", "0.3.0")]),
        "uv after the failed page:\n{}",
        run.output()
    );
    bed.assert_store_sound("after the installs");
}
