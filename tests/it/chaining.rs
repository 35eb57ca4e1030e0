//! Chaining (issue 17): a sidecar wheelgate whose remote repository's upstream is a central
//! wheelgate, with `[repository.auth]` on the sidecar and a `[[user]]` with a token on the
//! central. What the upstream said about each file reaches the sidecar's clients unchanged; a
//! refusal by the central reaches them as the central's 403 and reason, and counts on the sidecar
//! as a refusal, not an upstream error; a failure the central retried upstream is not retried
//! again by the sidecar; with the central down the sidecar serves what it holds.

use std::path::Path;
use std::time::Duration;

use ::http::StatusCode;

use crate::harness::clients::{self, installed};
use crate::harness::http;
use crate::harness::upstream::{Mode, JSON_MEDIA_TYPE};
use crate::harness::wheelgate::{rule_toml, RemoteConfig, UserConfig, Wheelgate};
use crate::harness::{link_in, new_token, write_file, TestBed, TokenLayout};
use crate::install::expected_app_install;

/// The projects of `wgfx-app`'s install: between them a yanked file, requires-python, PEP 658
/// metadata, upload times, and files on a second origin and behind a redirect upstream.
const APP_SET: [&str; 5] = [
    "wgfx-app",
    "wgfx-alpha",
    "wgfx-beta",
    "wgfx-far",
    "wgfx-hop",
];

/// Gives a central the one user `sidecar`, who reads with `token` (from a file beside the store).
fn sidecar_reads(config: &mut RemoteConfig, token: &str) {
    let token_file = config.store.with_file_name("sidecar-token");
    write_file(&token_file, &format!("{token}\n"));
    config.users = vec![UserConfig::with_token_file(
        "sidecar",
        &token_file,
        &["read"],
    )];
}

/// The central: the fixture upstream behind a wheelgate that lets only its `sidecar` user read,
/// and denies `wgfx-zeta` by a download rule. Returns it with the sidecar's token.
fn central() -> (TestBed, String) {
    let token = new_token();
    let bed = TestBed::start_configured(Mode::Json, TokenLayout::File, "info", |config| {
        sidecar_reads(config, &token);
        config.anonymous_read = Some(false);
        config.extra_toml = rule_toml("no-zeta", "DENY", Some("wgfx-zeta"), None);
    });
    (bed, token)
}

/// A sidecar in `dir` whose default repository is the central, with the central's token in
/// `[repository.auth]` and pages fresh for `index_ttl`.
fn sidecar(dir: &Path, central: &Wheelgate, token: &str, index_ttl: &str) -> Wheelgate {
    let token_file = dir.join("central-token");
    write_file(&token_file, &format!("{token}\n"));
    let mut config = RemoteConfig::new(
        dir.join("store"),
        central.index_url(),
        token_file,
        Vec::new(),
    );
    config.index_ttl = index_ttl.to_owned();
    let path = dir.join("proxy.toml");
    write_file(&path, &config.to_toml());
    Wheelgate::start(&path, dir, "info")
}

/// A project's JSON page on `wheelgate` (as `authorization`, if any), its files as the client
/// sees them without their URLs (which each wheelgate rewrites to itself).
fn files_without_urls(
    wheelgate: &Wheelgate,
    project: &str,
    authorization: Option<&str>,
) -> Vec<serde_json::Value> {
    let url = wheelgate.url(&format!("/simple/{project}/"));
    let mut headers = vec![("accept", JSON_MEDIA_TYPE)];
    headers.extend(authorization.map(|value| ("authorization", value)));
    let page = http::get(&url, &headers);
    page.expect_ok(&url);
    let mut files = page.json()["files"].as_array().cloned().unwrap_or_default();
    for file in &mut files {
        if let Some(object) = file.as_object_mut() {
            object.remove("url");
            object.remove("provenance");
        }
    }
    files
}

#[test]
fn pages_and_files_pass_two_hops_unchanged_and_a_central_refusal_is_a_403_with_its_reason() {
    let (central, token) = central();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let sidecar = sidecar(dir.path(), &central.wheelgate, &token, "10m");

    let as_sidecar = http::basic_auth("__token__", &token);
    let mut seen = (false, false, false);
    for project in APP_SET {
        let through_sidecar = files_without_urls(&sidecar, project, None);
        let at_central = files_without_urls(&central.wheelgate, project, Some(&as_sidecar));
        assert!(
            !through_sidecar.is_empty(),
            "{project}: no files through the sidecar"
        );
        assert_eq!(
            through_sidecar, at_central,
            "{project}: the sidecar's page differs from the central's beyond the URLs"
        );
        for file in &through_sidecar {
            seen.0 |= file["yanked"].is_string();
            seen.1 |= file["requires-python"].is_string();
            seen.2 |= file["core-metadata"]["sha256"].is_string()
                && file["upload-time"].is_string()
                && file["hashes"]["sha256"].is_string();
        }
    }
    assert_eq!(
        seen,
        (true, true, true),
        "the pages compared must carry a yanked file, requires-python, and hashes, metadata and \
         upload times"
    );

    // The bytes of a file and of its PEP 658 metadata are the upstream's.
    let project = crate::harness::fixtures::catalog().expect_project("wgfx-app");
    let file = project.expect_file("wgfx_app-1.1.0-py3-none-any.whl");
    let page_url = sidecar.url("/simple/wgfx-app/");
    let page = http::get(&page_url, &[("accept", JSON_MEDIA_TYPE)]);
    let file_url = link_in(&page, &page_url, &file.filename);
    assert!(
        http::get(&file_url, &[]).expect_ok(&file_url) == file.bytes.as_slice(),
        "the wheel's bytes changed on the way"
    );
    let metadata_url = format!("{file_url}.metadata");
    assert!(
        Some(http::get(&metadata_url, &[]).expect_ok(&metadata_url)) == file.metadata.as_deref(),
        "the metadata's bytes changed on the way"
    );

    // The central's download rule: its 403, its reason and its rule, not a 502 about credentials.
    let denied_url = sidecar.url("/simple/wgfx-zeta/");
    let denied = http::get(&denied_url, &[("accept", JSON_MEDIA_TYPE)]);
    let central_answer = http::get(
        &central.wheelgate.url("/simple/wgfx-zeta/"),
        &[("accept", JSON_MEDIA_TYPE), ("authorization", &as_sidecar)],
    );
    assert_eq!(
        central_answer.status,
        StatusCode::FORBIDDEN,
        "the central itself must refuse wgfx-zeta: {}",
        central_answer.text()
    );
    let central_reason = central_answer.text();
    let central_reason = central_reason.lines().next().unwrap_or_default().trim();
    assert_eq!(
        denied.status,
        StatusCode::FORBIDDEN,
        "the sidecar must pass the central's refusal on: {}",
        denied.text()
    );
    assert!(
        denied.text().contains(central_reason) && denied.header("x-wheelgate-denied").is_some(),
        "the sidecar's 403 must carry the central's reason ({central_reason}) and its rules; got \
         {:?} {}",
        denied.header("x-wheelgate-denied"),
        denied.text()
    );
    assert!(
        !sidecar.output().contains(&token) && !central.wheelgate.output().contains(&token),
        "the sidecar's token was logged"
    );
}

#[test]
fn pip_and_uv_install_through_a_sidecar_and_keep_installing_once_the_central_is_down() {
    let (mut central, token) = central();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let sidecar = sidecar(dir.path(), &central.wheelgate, &token, "1s");
    let expected = expected_app_install();

    let target = central.target_dir("pip-before");
    let run = clients::pip_install(&sidecar.index_url(), &target, &["wgfx-app"]);
    run.assert_success();
    assert_eq!(
        installed(&target),
        expected,
        "pip through the sidecar: {}",
        run.output()
    );
    assert!(
        !central
            .upstream
            .requests_for("/simple/wgfx-app/")
            .is_empty(),
        "the central never asked its upstream: the install did not go through the chain"
    );

    // The central goes away; once the sidecar's pages are stale it still serves them and the
    // files it holds, to both clients.
    central.wheelgate.stop();
    std::thread::sleep(Duration::from_millis(1500));
    let page_url = sidecar.url("/simple/wgfx-app/");
    let page = http::get(&page_url, &[("accept", JSON_MEDIA_TYPE)]);
    page.expect_ok(&page_url);
    assert_eq!(
        page.header("x-wheelgate-cache"),
        Some("stale"),
        "with the central down the page must be the stored copy, marked stale"
    );
    let target = central.target_dir("pip-after");
    let run = clients::pip_install(&sidecar.index_url(), &target, &["wgfx-app"]);
    run.assert_success();
    assert_eq!(
        installed(&target),
        expected,
        "pip with the central down: {}",
        run.output()
    );
    let target = central.target_dir("uv-after");
    let run = clients::uv_install(&sidecar.index_url(), &target, &["wgfx-app"]);
    run.assert_success();
    assert_eq!(
        installed(&target),
        expected,
        "uv with the central down: {}",
        run.output()
    );
}

/// The sum of `wheelgate_upstream_requests_total` samples with `outcome="<outcome>"` in a
/// Prometheus exposition.
fn upstream_requests(metrics: &str, outcome: &str) -> u64 {
    let label = format!("outcome=\"{outcome}\"");
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("wheelgate_upstream_requests_total{") && line.contains(&label)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|value| value as u64)
        .sum()
}

#[test]
fn a_central_refusal_is_counted_as_refused_on_the_sidecar_not_as_an_upstream_error() {
    let (central, token) = central();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let sidecar = sidecar(dir.path(), &central.wheelgate, &token, "10m");
    for path in ["/simple/wgfx-zeta/", "/simple/wgfx-zeta/"] {
        let denied = http::get(&sidecar.url(path), &[("accept", JSON_MEDIA_TYPE)]);
        assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.text());
    }
    let metrics = http::get(&sidecar.url("/-/metrics"), &[]);
    metrics.expect_ok(&sidecar.url("/-/metrics"));
    let metrics = metrics.text();
    assert!(
        upstream_requests(&metrics, "refused") >= 1 && upstream_requests(&metrics, "error") == 0,
        "the central's 403 must count as outcome=\"refused\" on the sidecar, never \"error\" \
         (which WheelgateUpstreamFailing alerts on):\n{}",
        metrics
            .lines()
            .filter(|line| line.starts_with("wheelgate_upstream_requests_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn a_centrals_error_after_its_own_retries_is_not_retried_by_the_sidecar() {
    use crate::harness::faulty::{Fault, Faulty, FaultyBed};

    // The central: a faulty upstream behind a wheelgate with one retry, whose `sidecar` user
    // the sidecar reads as.
    let token = new_token();
    let central = FaultyBed::start(&["wgfx-alpha"], "info", |config| {
        sidecar_reads(config, &token);
    });
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let sidecar = sidecar(dir.path(), &central.wheelgate, &token, "10m");

    let wheel = crate::harness::fixtures::catalog()
        .expect_project("wgfx-alpha")
        .wheel("1.0.0");
    let file_path = Faulty::file_path("wgfx-alpha", &wheel.filename);
    central.faulty.always(&file_path, Fault::Status(503));
    let page_url = sidecar.url("/simple/wgfx-alpha/");
    let page = http::get(&page_url, &[("accept", JSON_MEDIA_TYPE)]);
    page.expect_ok(&page_url);
    let file_url = link_in(&page, &page_url, &wheel.filename);
    let failed = http::get(&file_url, &[]);
    assert_eq!(
        failed.status,
        StatusCode::BAD_GATEWAY,
        "{}\n{}",
        failed.text(),
        sidecar.output()
    );
    // The central asked once and retried once; the sidecar (one retry too) did not ask again.
    let asked = central.faulty.requests_for(&file_path).len();
    assert_eq!(
        asked,
        2,
        "the upstream was asked {asked} times for the file: the sidecar's retries multiplied the \
         central's\nsidecar:\n{}",
        sidecar.output()
    );
    // The central's answer carries the mark that stopped the sidecar.
    let as_sidecar = http::basic_auth("__token__", &token);
    let central_url = central.url("/pypi/simple/wgfx-alpha/");
    let central_page = http::get(
        &central_url,
        &[("accept", JSON_MEDIA_TYPE), ("authorization", &as_sidecar)],
    );
    let central_file = link_in(&central_page, &central_url, &wheel.filename);
    let answer = http::get(&central_file, &[("authorization", &as_sidecar)]);
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.text());
    assert_eq!(
        answer.header("x-wheelgate-retried"),
        Some("upstream"),
        "the central's 502 after its retries must carry X-Wheelgate-Retried"
    );
}
