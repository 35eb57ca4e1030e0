//! `/-/metrics` (issue 15): known traffic through the real binary moves each metric by the
//! expected amount.
//!
//! The exposition is scraped before and after, parsed, and compared series by series: a page miss
//! then a hit, a file miss then a hit, a file a rule refuses, a page of a repository whose upstream
//! refuses connections, an upload, a request with a wrong password, and a configuration reload.
//! The counts must also survive the reload, which rebuilds every repository.

use std::collections::BTreeMap;
use std::time::Duration;

use ::http::StatusCode;

use crate::harness::fixtures::catalog;
use crate::harness::http;
use crate::harness::uploads::{self, UploadForm};
use crate::harness::upstream::JSON_MEDIA_TYPE;
use crate::harness::wheelgate::{bare_remote_toml, rule_toml};
use crate::harness::{wait_until, Account, TestBed};
use crate::publish::{publishing_bed, INTERNAL};

/// A repository whose upstream refuses every connection (nothing listens on port 9).
pub(crate) const DEAD: &str = "dead";
/// The rule refusing wgfx-kappa 2.0.
pub(crate) const NO_KAPPA_2: &str = "no-kappa-2";
pub(crate) const KAPPA: &str = "wgfx-kappa";

/// A bed with the remote `pypi` (rule no-kappa-2), the hosted `internal`, the unreachable
/// remote `dead`, and the users of `publishing_bed`.
pub(crate) fn operations_bed() -> (TestBed, Account, Account) {
    publishing_bed(|config| {
        config.extra_repositories = bare_remote_toml(DEAD, "http://127.0.0.1:9/simple/");
        config.extra_toml = rule_toml(
            NO_KAPPA_2,
            "DENY",
            Some(KAPPA),
            Some("pkg.version.id == '2.0'"),
        );
    })
}

/// The path wheelgate links a wgfx-kappa file at.
pub(crate) fn kappa_file(version: &str) -> (String, u64) {
    let project = catalog().expect_project(KAPPA);
    let file = project
        .files
        .iter()
        .find(|f| f.version == version && f.filename.ends_with(".whl"))
        .unwrap_or_else(|| panic!("no wgfx-kappa {version} wheel"));
    (
        format!("/pypi/files/{KAPPA}/{}/{}", file.sha256, file.filename),
        file.bytes.len() as u64,
    )
}

/// One scrape: every series (`name{labels}`) with its value.
#[derive(Debug)]
pub(crate) struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    pub(crate) fn of(bed: &TestBed) -> Scrape {
        let url = bed.url("/-/metrics");
        let response = http::get(&url, &[]);
        let body = response.expect_ok(&url);
        assert!(
            response
                .header("content-type")
                .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
            "{}",
            response.headers_text()
        );
        Scrape::parse(&String::from_utf8_lossy(body))
    }

    fn parse(text: &str) -> Scrape {
        let series = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                let (series, value) = line
                    .rsplit_once(' ')
                    .unwrap_or_else(|| panic!("not a sample line: {line}"));
                let value = value
                    .parse()
                    .unwrap_or_else(|e| panic!("bad value in {line}: {e}"));
                (series.to_owned(), value)
            })
            .collect();
        Scrape(series)
    }

    /// A series' value; 0 for one not (yet) in the exposition.
    fn value(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    /// The sum of the series of metric `name` whose labels include each of `labels`
    /// (`kind="origin"`), whatever their other labels; 0 when none is in the exposition.
    pub(crate) fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        let prefix = format!("{name}{{");
        self.0
            .iter()
            .filter(|(series, _)| {
                series.starts_with(&prefix) && labels.iter().all(|label| series.contains(label))
            })
            .map(|(_, value)| value)
            .sum()
    }
}

/// Asserts that each series moved by exactly its delta between `before` and `after`.
fn assert_deltas(before: &Scrape, after: &Scrape, expected: &[(&str, f64)]) {
    let mut wrong = Vec::new();
    for (series, delta) in expected {
        let moved = after.value(series) - before.value(series);
        if (moved - delta).abs() > 1e-9 {
            wrong.push(format!("{series}: moved by {moved}, expected {delta}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{}\n\nafter:\n{:#?}",
        wrong.join("\n"),
        after.0
    );
}

fn requests(repository: &str, route: &str, status: u16) -> String {
    format!(
        "wheelgate_http_requests_total{{repository=\"{repository}\",route=\"{route}\",status=\"{status}\"}}"
    )
}

fn cache(repository: &str, kind: &str, outcome: &str) -> String {
    format!(
        "wheelgate_cache_requests_total{{repository=\"{repository}\",kind=\"{kind}\",outcome=\"{outcome}\"}}"
    )
}

fn upstream(repository: &str, outcome: &str) -> String {
    format!(
        "wheelgate_upstream_requests_total{{repository=\"{repository}\",outcome=\"{outcome}\"}}"
    )
}

#[test]
fn known_traffic_moves_each_metric_by_the_expected_amount() {
    let (mut bed, publisher, _) = operations_bed();
    let accept_json = ("accept", JSON_MEDIA_TYPE);
    // The exposition names every metric from the start, with the label values it promises.
    let first = Scrape::of(&bed);
    for series in [
        "wheelgate_served_bytes_total{source=\"cache\"}",
        "wheelgate_served_bytes_total{source=\"upstream\"}",
        "wheelgate_upstream_request_duration_seconds_count",
        "wheelgate_singleflight_joins_total",
        "wheelgate_store_bytes",
        "wheelgate_store_artifacts",
        "wheelgate_config_reloads_total{result=\"success\"}",
        "wheelgate_config_reloads_total{result=\"failure\"}",
        "wheelgate_auth_failures_total",
    ] {
        assert!(
            first.0.contains_key(series),
            "{series} missing: {:#?}",
            first.0
        );
    }
    let before = Scrape::of(&bed);

    // A page: a miss, then a hit. Both bodies are the same rendering.
    let page_url = bed.url(&format!("/simple/{KAPPA}/"));
    let miss = http::get(&page_url, &[accept_json]);
    let page_bytes = miss.expect_ok(&page_url).len() as f64;
    assert_eq!(miss.cache(), Some("miss"));
    let hit = http::get(&page_url, &[accept_json]);
    assert_eq!(hit.expect_ok(&page_url).len() as f64, page_bytes);
    assert_eq!(hit.cache(), Some("hit"));

    // A file: a miss, then (once the store has committed it, so that the second request does
    // not join the download still landing) a hit from the store.
    let (allowed, size) = kappa_file("1.0");
    let get_file = |expected: &str| {
        let response = http::get(&bed.url(&allowed), &[]);
        assert_eq!(response.expect_ok(&allowed).len() as u64, size);
        assert_eq!(response.cache(), Some(expected), "{allowed}");
    };
    get_file("miss");
    let stored = wait_until(Duration::from_secs(10), || {
        Scrape::of(&bed).value("wheelgate_store_bytes") - before.value("wheelgate_store_bytes")
            >= size as f64
    });
    assert!(stored, "the file was not stored: {:#?}", Scrape::of(&bed).0);
    get_file("hit");
    // A file the rule refuses.
    let (denied, _) = kappa_file("2.0");
    let refused = http::get(&bed.url(&denied), &[]);
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());

    // A repository whose upstream refuses connections: a 502.
    let dead = http::get(&bed.url(&format!("/{DEAD}/simple/{KAPPA}/")), &[]);
    assert_eq!(dead.status, StatusCode::BAD_GATEWAY, "{}", dead.text());

    // An upload, and a request with a wrong password.
    let wheel = uploads::app_wheel();
    let uploaded = bed.upload(INTERNAL, &UploadForm::of(wheel), Some(&publisher));
    assert_eq!(uploaded.status, 200, "{}", uploaded.text());
    let wrong = bed.raw_get_as("/simple/", Some(&publisher.with_wrong_password()));
    assert_eq!(wrong.status, 401, "{}", wrong.text());

    let after = Scrape::of(&bed);
    let scrapes_between = after
        .value("wheelgate_http_request_duration_seconds_count{route=\"metrics\"}")
        - before.value("wheelgate_http_request_duration_seconds_count{route=\"metrics\"}");
    assert!(scrapes_between >= 2.0, "{scrapes_between}");
    assert_deltas(
        &before,
        &after,
        &[
            (&requests("pypi", "project", 200), 2.0),
            (&requests("pypi", "file", 200), 2.0),
            (&requests("pypi", "file", 403), 1.0),
            (&requests(DEAD, "project", 502), 1.0),
            (&requests(INTERNAL, "upload", 200), 1.0),
            (&requests("pypi", "index", 401), 1.0),
            // Every scrape but this one: the one before, and those that waited for the store.
            (&requests("-", "metrics", 200), scrapes_between),
            (
                "wheelgate_http_request_duration_seconds_count{route=\"project\"}",
                3.0,
            ),
            (
                "wheelgate_http_request_duration_seconds_count{route=\"file\"}",
                3.0,
            ),
            (&cache("pypi", "page", "miss"), 1.0),
            (&cache("pypi", "page", "hit"), 1.0),
            (&cache("pypi", "file", "miss"), 1.0),
            (&cache("pypi", "file", "hit"), 1.0),
            (&cache(DEAD, "page", "miss"), 0.0),
            (
                "wheelgate_served_bytes_total{source=\"upstream\"}",
                page_bytes + size as f64,
            ),
            (
                "wheelgate_served_bytes_total{source=\"cache\"}",
                page_bytes + size as f64,
            ),
            // The page and the file; the dead repository's one request (its retry included).
            (&upstream("pypi", "ok"), 2.0),
            (&upstream(DEAD, "error"), 1.0),
            ("wheelgate_upstream_request_duration_seconds_count", 3.0),
            (
                &format!(
                    "wheelgate_denials_total{{repository=\"pypi\",kind=\"rule\",name=\"{NO_KAPPA_2}\",mode=\"enforce\"}}"
                ),
                1.0,
            ),
            ("wheelgate_uploads_total{repository=\"internal\",outcome=\"created\"}", 1.0),
            ("wheelgate_auth_failures_total", 1.0),
            ("wheelgate_singleflight_joins_total", 0.0),
        ],
    );

    // The upload is stored too.
    assert!(
        after.value("wheelgate_store_artifacts") - before.value("wheelgate_store_artifacts") >= 2.0,
        "{:#?}",
        after.0
    );

    // A reload rebuilds the repositories; the counts carry over, and the reload is counted.
    let before_reload = Scrape::of(&bed);
    bed.edit_config(|_| {});
    let reloaded = wait_until(Duration::from_secs(10), || {
        Scrape::of(&bed).value("wheelgate_config_reloads_total{result=\"success\"}")
            > before_reload.value("wheelgate_config_reloads_total{result=\"success\"}")
    });
    assert!(reloaded, "no reload counted:\n{}", bed.wheelgate.output());
    let after_reload = Scrape::of(&bed);
    for series in [
        requests("pypi", "project", 200),
        cache("pypi", "file", "hit"),
        upstream("pypi", "ok"),
        "wheelgate_served_bytes_total{source=\"cache\"}".to_owned(),
        "wheelgate_uploads_total{repository=\"internal\",outcome=\"created\"}".to_owned(),
    ] {
        assert_eq!(
            after_reload.value(&series),
            before_reload.value(&series),
            "{series} after the reload"
        );
    }
    assert_eq!(
        after_reload.value("wheelgate_config_reloads_total{result=\"failure\"}"),
        before_reload.value("wheelgate_config_reloads_total{result=\"failure\"}"),
    );
}

#[test]
fn metrics_are_readable_as_the_status_page_is() {
    let reader = Account::new("reader");
    let bed = TestBed::start_hosted(|config| {
        config.users = vec![reader.user(&["read"])];
        config.anonymous_read = Some(false);
    });
    for path in ["/-/metrics", "/"] {
        let anonymous = bed.raw_get_as(path, None);
        assert_eq!(anonymous.status, 401, "{path} without credentials");
        let user = bed.raw_get_as(path, Some(&reader));
        assert_eq!(user.status, 200, "{path} as a reader: {}", user.text());
    }
    let text = bed.raw_get_as("/-/metrics", Some(&reader)).text();
    assert!(
        text.contains("# TYPE wheelgate_http_requests_total counter"),
        "{text}"
    );
    assert!(
        text.contains(
            "wheelgate_http_requests_total{repository=\"-\",route=\"metrics\",status=\"401\"} 1"
        ),
        "{text}"
    );
}
