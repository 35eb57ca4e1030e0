//! Download rules (SPEC §5, §5.1, issue 4) as pip, uv, a plain HTTP client and an operator see them.
//!
//! The rules are written into `proxy.toml` exactly as an operator writes them, and every claim is
//! checked from the outside: pages lose the denied files (and pip and uv then resolve to an allowed
//! version), a page left empty and a denied file are 403s that name the rule, the fixture upstream's
//! request log shows that a denied file was never fetched, no spelling of a project name gets
//! round a rule, conditions see the fields SPEC §5 documents (PEP 440 ordering through `version()`,
//! CEL's own lexicographic ordering on plain strings, PEP 700 upload times), invalid rules are
//! refused at start-up, by `wheelgate check` and on reload, and the `wheelgate rules` commands
//! print and decide what the server enforces.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ::http::StatusCode;

use crate::harness::clients::{self, dists};
use crate::harness::fixtures::{catalog, DistFile, FileKind};
use crate::harness::generated;
use crate::harness::http::{self, HttpResponse};
use crate::harness::upstream::{Mode, JSON_MEDIA_TYPE};
use crate::harness::wheelgate::{self, rule_toml};
use crate::harness::{resolve, wait_until, TestBed};

const ACCEPT_JSON: (&str, &str) = ("accept", JSON_MEDIA_TYPE);
const ACCEPT_HTML: (&str, &str) = ("accept", "text/html");
/// The header naming the rules behind a refusal.
const DENIED_HEADER: &str = "x-wheelgate-denied";
/// How long a running wheelgate may take to apply an edited configuration.
pub(crate) const RELOAD_LIMIT: Duration = Duration::from_secs(5);

/// The rule of the first scenario: wgfx-kappa has 1.0, 1.9 and 2.0; 2.0 is denied.
const NO_KAPPA_2: &str = "no-kappa-2";

fn no_kappa_2() -> String {
    rule_toml(
        NO_KAPPA_2,
        "DENY",
        Some("wgfx-kappa"),
        Some("pkg.version.id == '2.0'"),
    )
}

/// How wheelgate names a rule in refusals: `rule "<name>" in repository "pypi"`.
fn named(rule: &str) -> String {
    named_in(rule, "pypi")
}

/// How wheelgate names a rule of `repo` in refusals: `rule "<name>" in repository "<repo>"`.
pub(crate) fn named_in(rule: &str, repo: &str) -> String {
    format!("rule \"{rule}\" in repository \"{repo}\"")
}

/// A fixture file by name; panics naming it when the catalog has none.
fn fixture(filename: &str) -> &'static DistFile {
    match catalog().file(filename) {
        Some((_, file)) => file,
        None => panic!("no fixture file {filename}"),
    }
}

/// The path wheelgate links a fixture file at: `/pypi/files/<project>/<sha256>/<filename>`.
fn file_path(filename: &str) -> String {
    let (project, file) = catalog()
        .file(filename)
        .unwrap_or_else(|| panic!("no fixture file {filename}"));
    format!(
        "/pypi/files/{}/{}/{}",
        project.normalized, file.sha256, file.filename
    )
}

/// The filenames of `project`'s files whose version is one of `versions`.
fn files_of(project: &str, versions: &[&str]) -> BTreeSet<String> {
    catalog()
        .expect_project(project)
        .files
        .iter()
        .filter(|f| versions.contains(&f.version.as_str()))
        .map(|f| f.filename.clone())
        .collect()
}

/// The project's JSON page through wheelgate, which must be a 200.
fn json_page(bed: &TestBed, project: &str) -> serde_json::Value {
    let url = bed.url(&format!("/simple/{project}/"));
    let response = http::get(&url, &[ACCEPT_JSON]);
    response.expect_ok(&url);
    response.json()
}

fn listed_files(page: &serde_json::Value) -> BTreeSet<String> {
    page["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["filename"].as_str())
        .map(str::to_owned)
        .collect()
}

fn listed_versions(page: &serde_json::Value) -> Vec<String> {
    page["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .map(str::to_owned)
        .collect()
}

/// The texts of the anchors of an HTML page (the filenames, on a project page).
fn anchor_texts(html: &str) -> BTreeSet<String> {
    let dom = tl::parse(html, tl::ParserOptions::default())
        .unwrap_or_else(|e| panic!("unparsable HTML ({e}):\n{html}"));
    let parser = dom.parser();
    dom.nodes()
        .iter()
        .filter_map(|node| node.as_tag())
        .filter(|tag| tag.name().as_bytes() == b"a")
        .map(|tag| tag.inner_text(parser).trim().to_owned())
        .collect()
}

/// The project's HTML page through wheelgate, as the set of filenames it links.
fn html_files(bed: &TestBed, project: &str) -> BTreeSet<String> {
    let url = bed.url(&format!("/simple/{project}/"));
    let response = http::get(&url, &[ACCEPT_HTML]);
    response.expect_ok(&url);
    anchor_texts(&response.text())
}

/// A 403 whose body and `X-Wheelgate-Denied` header name `rule` (HEAD responses have no body).
fn assert_denied(response: &HttpResponse, what: &str, rule: &str, has_body: bool) {
    assert_denied_in(response, what, rule, "pypi", has_body)
}

/// A 403 whose body and `X-Wheelgate-Denied` header name `rule` of `repo` (HEAD responses have no
/// body).
pub(crate) fn assert_denied_in(
    response: &HttpResponse,
    what: &str,
    rule: &str,
    repo: &str,
    has_body: bool,
) {
    let named = named_in(rule, repo);
    assert_eq!(
        response.status,
        StatusCode::FORBIDDEN,
        "{what} must be denied by {named}; body:\n{}",
        response.text()
    );
    if has_body {
        assert!(
            response.text().contains(&named),
            "{what}: the 403 body must name {named}, got:\n{}",
            response.text()
        );
    }
    let header = response.header(DENIED_HEADER).unwrap_or_default();
    assert!(
        header.contains(rule),
        "{what}: {DENIED_HEADER} must name {rule:?}, got {header:?}; headers:\n{}",
        response.headers_text()
    );
}

/// Panics if the upstream was ever asked for `filename` (or its `.metadata`), on any origin.
fn assert_never_fetched(bed: &TestBed, filename: &str) {
    let asked: Vec<_> = bed
        .upstream
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(filename))
        .collect();
    assert!(
        asked.is_empty(),
        "the upstream was asked for the denied file {filename}: {asked:?}"
    );
}

// --- 1. One denied version ------------------------------------------------------------------

#[test]
fn pages_leave_out_the_denied_version() {
    let bed = TestBed::start_with_rules(Mode::Json, &no_kappa_2());
    let page_url = bed.url("/simple/wgfx-kappa/");
    let page = json_page(&bed, "wgfx-kappa");
    assert_eq!(
        listed_files(&page),
        files_of("wgfx-kappa", &["1.0", "1.9"]),
        "JSON page of wgfx-kappa: {page}"
    );
    assert_eq!(
        listed_versions(&page),
        ["1.0", "1.9"],
        "2.0 has no file left, so it leaves `versions` too: {page}"
    );
    // The files that are left keep their links, in the layout the file tests compute.
    for entry in page["files"].as_array().into_iter().flatten() {
        let filename = entry["filename"].as_str().unwrap_or_default();
        let href = entry["url"]
            .as_str()
            .unwrap_or_else(|| panic!("{filename} has no url: {entry}"));
        assert_eq!(
            resolve(&page_url, href).path(),
            file_path(filename),
            "{filename}: link"
        );
    }
    assert_eq!(
        html_files(&bed, "wgfx-kappa"),
        files_of("wgfx-kappa", &["1.0", "1.9"]),
        "HTML page of wgfx-kappa"
    );
    // Another project is not touched by a package rule.
    assert_eq!(
        listed_files(&json_page(&bed, "wgfx-delta")).len(),
        catalog().expect_project("wgfx-delta").files.len()
    );
}

#[test]
fn pip_installs_the_newest_allowed_version_and_cannot_pin_the_denied_one() {
    let bed = TestBed::start_with_rules(Mode::Json, &no_kappa_2());
    let target = bed.target_dir("newest");
    let run = clients::pip_install(&bed.wheelgate.index_url(), &target, &["wgfx-kappa"]);
    run.assert_success();
    assert_eq!(
        clients::installed(&target),
        dists(&[("wgfx-kappa", "1.9")]),
        "pip output:\n{}",
        run.output()
    );

    let pinned = bed.target_dir("pinned");
    let run = clients::pip_install(&bed.wheelgate.index_url(), &pinned, &["wgfx-kappa==2.0"]);
    assert!(
        !run.success(),
        "pip installed the denied wgfx-kappa 2.0:\n{}",
        run.output()
    );
    assert!(
        clients::installed(&pinned).is_empty(),
        "pip left something behind: {:?}",
        clients::installed(&pinned)
    );
    for filename in files_of("wgfx-kappa", &["2.0"]) {
        assert_never_fetched(&bed, &filename);
    }
}

#[test]
fn uv_installs_the_newest_allowed_version() {
    let bed = TestBed::start_with_rules(Mode::Json, &no_kappa_2());
    let target = bed.target_dir("uv");
    let run = clients::uv_install(&bed.wheelgate.index_url(), &target, &["wgfx-kappa"]);
    run.assert_success();
    assert_eq!(
        clients::installed(&target),
        dists(&[("wgfx-kappa", "1.9")]),
        "uv output:\n{}",
        run.output()
    );
    for filename in files_of("wgfx-kappa", &["2.0"]) {
        assert_never_fetched(&bed, &filename);
    }
}

#[test]
fn a_denied_file_is_refused_without_asking_upstream() {
    let bed = TestBed::start_with_rules(Mode::Json, &no_kappa_2());
    // Seen through the page first, as a client would, so that wheelgate knows where the file lives.
    json_page(&bed, "wgfx-kappa");
    let wheel = "wgfx_kappa-2.0-py3-none-any.whl";
    let sdist = "wgfx_kappa-2.0.tar.gz";
    for path in [
        file_path(wheel),
        file_path(sdist),
        format!("{}.metadata", file_path(wheel)),
    ] {
        let url = bed.url(&path);
        assert_denied(
            &http::get(&url, &[]),
            &format!("GET {path}"),
            NO_KAPPA_2,
            true,
        );
        assert_denied(
            &http::head(&url, &[]),
            &format!("HEAD {path}"),
            NO_KAPPA_2,
            false,
        );
    }
    // The same URL layout serves an allowed file, so the 403s above are the rule's doing.
    let allowed = "wgfx_kappa-1.9-py3-none-any.whl";
    let url = bed.url(&file_path(allowed));
    assert_eq!(
        http::get(&url, &[]).expect_ok(&url),
        fixture(allowed).bytes.as_slice()
    );
    assert_never_fetched(&bed, wheel);
    assert_never_fetched(&bed, sdist);
}

#[test]
fn a_denied_file_is_refused_even_before_its_page_was_seen() {
    let bed = TestBed::start_with_rules(Mode::Json, &no_kappa_2());
    let wheel = "wgfx_kappa-2.0-py3-none-any.whl";
    let path = file_path(wheel);
    assert_denied(
        &http::get(&bed.url(&path), &[]),
        &format!("GET {path} (page never requested)"),
        NO_KAPPA_2,
        true,
    );
    assert_never_fetched(&bed, wheel);
}

// --- 2. Allowlists ----------------------------------------------------------------------------

const DENY_UNLISTED: &str = "deny-everything-else";

/// A repository-wide DENY and ALLOW rules for wgfx-beta and its dependencies; delta only below 2.
fn allowlist() -> String {
    [
        rule_toml(DENY_UNLISTED, "DENY", None, None),
        rule_toml("allow-beta", "ALLOW", Some("wgfx-beta"), None),
        rule_toml(
            "allow-delta-1",
            "ALLOW",
            Some("wgfx-delta"),
            Some("version(pkg.version.id) < version('2')"),
        ),
        rule_toml("allow-epsilon", "ALLOW", Some("wgfx-epsilon"), None),
    ]
    .concat()
}

#[test]
fn an_allowlist_installs_only_the_listed_projects() {
    let bed = TestBed::start_with_rules(Mode::Json, &allowlist());
    let target = bed.target_dir("listed");
    let run = clients::pip_install(&bed.wheelgate.index_url(), &target, &["wgfx-beta"]);
    run.assert_success();
    assert_eq!(
        clients::installed(&target),
        dists(&[
            ("wgfx-beta", "2.0.0"),
            ("wgfx-delta", "1.5.0"),
            ("wgfx-epsilon", "0.3.0")
        ]),
        "pip output:\n{}",
        run.output()
    );

    let unlisted = bed.target_dir("unlisted");
    let run = clients::pip_install(&bed.wheelgate.index_url(), &unlisted, &["wgfx-alpha"]);
    assert!(
        !run.success(),
        "pip installed wgfx-alpha, which no ALLOW rule lists:\n{}",
        run.output()
    );
    assert!(clients::installed(&unlisted).is_empty());

    // An unlisted project's page is a 403 naming the repository-wide rule, in both formats.
    let url = bed.url("/simple/wgfx-alpha/");
    assert_denied(
        &http::get(&url, &[ACCEPT_JSON]),
        "the JSON page of wgfx-alpha",
        DENY_UNLISTED,
        true,
    );
    assert_denied(
        &http::get(&url, &[ACCEPT_HTML]),
        "the HTML page of wgfx-alpha",
        DENY_UNLISTED,
        true,
    );
    let alpha = "wgfx_alpha-1.0.0-py3-none-any.whl";
    assert_denied(
        &http::get(&bed.url(&file_path(alpha)), &[]),
        "a file of wgfx-alpha",
        DENY_UNLISTED,
        true,
    );
    assert_never_fetched(&bed, alpha);

    // §5.1: where the package's ALLOW does not match (delta 2.0.0), the repository-wide DENY decides.
    assert_eq!(
        listed_files(&json_page(&bed, "wgfx-delta")),
        files_of("wgfx-delta", &["1.0.0", "1.5.0"])
    );
    let delta_2 = "wgfx_delta-2.0.0-py3-none-any.whl";
    assert_denied(
        &http::get(&bed.url(&file_path(delta_2)), &[]),
        "wgfx-delta 2.0.0",
        DENY_UNLISTED,
        true,
    );
    assert_never_fetched(&bed, delta_2);
}

// --- 3. Name spellings ----------------------------------------------------------------------

const NO_GAMMA_02: &str = "no-gamma-0.2";
const NO_ZETA: &str = "no-zeta";

/// Rules whose packages are themselves written unnormalised: they must still apply.
fn spelling_rules() -> String {
    [
        rule_toml(
            NO_GAMMA_02,
            "DENY",
            Some("WGFX.Gamma_Util"),
            Some("pkg.version.id == '0.2.0'"),
        ),
        rule_toml(NO_ZETA, "DENY", Some("wgfx_ZETA"), None),
    ]
    .concat()
}

#[test]
fn name_spellings_cannot_bypass_a_rule() {
    let bed = TestBed::start_with_rules(Mode::Json, &spelling_rules());
    let allowed_gamma = files_of("wgfx-gamma-util", &["0.1.0"]);
    // Spellings served under their own URL instead of redirected: collected, so that one run
    // shows every one of them (the policy itself is asserted at once).
    let mut not_redirected = Vec::new();
    for spelling in [
        "wgfx-gamma-util",
        "wgfx_gamma_util",
        "wgfx.gamma.util",
        "WGFX-gamma-Util",
        "WGFX_Gamma.Util",
        "%77gfx-gamma-util",
        "wgfx%2Dgamma%5Futil",
        "%57GFX%2EGamma%2EUtil",
    ] {
        for prefix in ["/simple/", "/pypi/simple/"] {
            let url = bed.url(&format!("{prefix}{spelling}/"));
            let (response, visited) = http::get_following(&url, &[ACCEPT_JSON]);
            response.expect_ok(&url);
            // First what matters for policy: whatever the spelling, the page is filtered.
            assert_eq!(
                listed_files(&response.json()),
                allowed_gamma,
                "{url} (via {visited:?})"
            );
            let last = visited.last().cloned().unwrap_or_default();
            if !(last.ends_with("/simple/wgfx-gamma-util/")
                && (spelling == "wgfx-gamma-util" || visited.len() > 1))
            {
                not_redirected.push(visited);
            }
        }
    }
    for spelling in [
        "wgfx-zeta",
        "wgfx_zeta",
        "WGFX.Zeta",
        "%77gfx-zeta",
        "WGFX%5Fzeta",
    ] {
        let url = bed.url(&format!("/simple/{spelling}/"));
        let (response, visited) = http::get_following(&url, &[ACCEPT_JSON]);
        assert_denied(
            &response,
            &format!("{url} (via {visited:?})"),
            NO_ZETA,
            true,
        );
    }

    let denied = "wgfx_gamma_util-0.2.0-py3-none-any.whl";
    let sha = &fixture(denied).sha256;
    let encoded_filename = "%77gfx_gamma_util-0.2.0-py3-none-any.whl".to_owned();
    for project in [
        "wgfx-gamma-util",
        "wgfx_gamma_util",
        "WGFX.Gamma.Util",
        "%77gfx-gamma-util",
    ] {
        for filename in [
            denied,
            encoded_filename.as_str(),
            &format!("{denied}.metadata"),
        ] {
            let url = bed.url(&format!("/pypi/files/{project}/{sha}/{filename}"));
            let (response, visited) = http::get_following(&url, &[]);
            assert_denied(
                &response,
                &format!("{url} (via {visited:?})"),
                NO_GAMMA_02,
                true,
            );
        }
    }
    assert_never_fetched(&bed, denied);
    assert_never_fetched(&bed, "wgfx_gamma_util-0.2.0.tar.gz");

    let target = bed.target_dir("gamma");
    let run = clients::pip_install(&bed.wheelgate.index_url(), &target, &["WGFX_Gamma.Util"]);
    run.assert_success();
    assert_eq!(
        clients::installed(&target),
        dists(&[("wgfx-gamma-util", "0.1.0")]),
        "pip output:\n{}",
        run.output()
    );

    assert!(
        not_redirected.is_empty(),
        "every other spelling must 301 to the normalised page, not be served under its own URL; these were not:\n{}",
        not_redirected.iter().map(|visited| format!("  {}", visited.join(" -> "))).collect::<Vec<_>>().join("\n")
    );
}

// --- 4. What conditions see -------------------------------------------------------------------

/// One bed per condition: which of the project's files its page keeps.
struct ConditionCase {
    what: &'static str,
    package: Option<&'static str>,
    condition: &'static str,
    project: &'static str,
    keeps: fn(&DistFile) -> bool,
}

#[test]
fn pep440_ordering_is_opt_in_and_plain_strings_compare_lexicographically() {
    check_conditions(&[
        ConditionCase {
            what: "version() orders 9.0 before 10.0 (PEP 440)",
            package: Some("wgfx-tens"),
            condition: "version(pkg.version.id) < version('10.0')",
            project: "wgfx-tens",
            keeps: |f| f.version == "10.0",
        },
        ConditionCase {
            what: "a plain string comparison is CEL's lexicographic one: '9.0' < '10.0' is false",
            package: Some("wgfx-tens"),
            condition: "pkg.version.id < '10.0'",
            project: "wgfx-tens",
            keeps: |f| f.version == "9.0" || f.version == "10.0",
        },
        ConditionCase {
            what: "satisfies() takes a PEP 440 specifier set",
            package: Some("wgfx-tens"),
            condition: "pkg.version.id.satisfies('>=2,<10')",
            project: "wgfx-tens",
            keeps: |f| f.version == "1.0" || f.version == "10.0",
        },
    ]);
}

#[test]
fn conditions_see_the_package_and_file_fields() {
    check_conditions(&[
        ConditionCase {
            what: "pkg.file.kind",
            package: Some("wgfx-kappa"),
            condition: "pkg.file.kind == 'sdist'",
            project: "wgfx-kappa",
            keeps: |f| f.kind == FileKind::Wheel,
        },
        ConditionCase {
            what: "pkg.file.name",
            package: Some("wgfx-kappa"),
            condition: "pkg.file.name.endsWith('.whl') && pkg.file.kind == 'wheel'",
            project: "wgfx-kappa",
            keeps: |f| f.kind == FileKind::Sdist,
        },
        ConditionCase {
            what: "pkg.version.yanked",
            package: None,
            condition: "pkg.version.yanked",
            project: "wgfx-alpha",
            keeps: |f| f.yanked.is_none(),
        },
        ConditionCase {
            what: "pkg.id is the normalised name",
            package: None,
            condition: "pkg.id == 'wgfx-gamma-util' && pkg.version.id == '0.1.0'",
            project: "wgfx-gamma-util",
            keeps: |f| f.version == "0.2.0",
        },
    ]);
}

fn check_conditions(cases: &[ConditionCase]) {
    std::thread::scope(|scope| {
        for case in cases {
            scope.spawn(move || {
                let rules = rule_toml("under-test", "DENY", case.package, Some(case.condition));
                let bed = TestBed::start_with_rules(Mode::Json, &rules);
                let expected: BTreeSet<String> = catalog()
                    .expect_project(case.project)
                    .files
                    .iter()
                    .filter(|f| (case.keeps)(f))
                    .map(|f| f.filename.clone())
                    .collect();
                assert_eq!(
                    listed_files(&json_page(&bed, case.project)),
                    expected,
                    "{}: DENY `{}` on {}",
                    case.what,
                    case.condition,
                    case.project
                );
            });
        }
    });
}

// --- 5. Cooldowns and failing closed --------------------------------------------------------

const COOLDOWN: &str = "cooldown-72h";
const COOLDOWN_CONDITION: &str = "now - pkg.version.upload_time < duration('72h')";

#[test]
fn a_cooldown_hides_a_release_uploaded_an_hour_ago() {
    let bed = TestBed::start_with_rules(
        Mode::Json,
        &rule_toml(
            COOLDOWN,
            "DENY",
            Some("wgfx-fresh"),
            Some(COOLDOWN_CONDITION),
        ),
    );
    let page = json_page(&bed, "wgfx-fresh");
    assert_eq!(
        listed_files(&page),
        files_of("wgfx-fresh", &["1.0"]),
        "1.1 was uploaded an hour ago: {page}"
    );
    assert_eq!(listed_versions(&page), ["1.0"]);
    let fresh = "wgfx_fresh-1.1-py3-none-any.whl";
    assert_denied(
        &http::get(&bed.url(&file_path(fresh)), &[]),
        "the fresh wheel",
        COOLDOWN,
        true,
    );

    let target = bed.target_dir("fresh");
    let run = clients::pip_install(&bed.wheelgate.index_url(), &target, &["wgfx-fresh"]);
    run.assert_success();
    assert_eq!(
        clients::installed(&target),
        dists(&[("wgfx-fresh", "1.0")]),
        "pip output:\n{}",
        run.output()
    );
    assert_never_fetched(&bed, fresh);
}

#[test]
fn conditions_that_cannot_be_evaluated_fail_closed() {
    // An HTML-only upstream gives no upload times, so the cooldown cannot be evaluated.
    let mut bed = TestBed::start_with_rules(
        Mode::HtmlOnly,
        &rule_toml(
            COOLDOWN,
            "DENY",
            Some("wgfx-fresh"),
            Some(COOLDOWN_CONDITION),
        ),
    );
    let url = bed.url("/simple/wgfx-fresh/");
    assert_denied(
        &http::get(&url, &[ACCEPT_JSON]),
        "a DENY rule that cannot be evaluated counts as matching",
        COOLDOWN,
        true,
    );
    assert_never_fetched(&bed, "wgfx_fresh-1.0-py3-none-any.whl");

    let vetted = [
        rule_toml(DENY_UNLISTED, "DENY", None, None),
        rule_toml(
            "vetted-fresh",
            "ALLOW",
            Some("wgfx-fresh"),
            Some("now - pkg.version.upload_time > duration('72h')"),
        ),
    ]
    .concat();
    bed.restart_with(|config| config.extra_toml = vetted);
    let url = bed.url("/simple/wgfx-fresh/");
    assert_denied(
        &http::get(&url, &[ACCEPT_JSON]),
        "an ALLOW rule that cannot be evaluated counts as not matching",
        DENY_UNLISTED,
        true,
    );
    assert_never_fetched(&bed, "wgfx_fresh-1.0-py3-none-any.whl");
}

// --- 6. Invalid rules, at start-up and on reload ----------------------------------------------

/// A configuration with `rules`, for a wheelgate that is only checked or refuses to start.
fn standalone_config(dir: &Path, rules: &str) -> PathBuf {
    crate::harness::standalone_config(dir, |config| config.extra_toml = rules.to_owned())
}

/// The 1-based lines of the `[[rule]]` table that holds `marker` (its header to its last line).
fn table_lines(config: &str, marker: &str) -> std::ops::RangeInclusive<usize> {
    let lines: Vec<&str> = config.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("{marker:?} is not in:\n{config}"));
    let header = lines
        .get(..=at)
        .unwrap_or_default()
        .iter()
        .rposition(|l| l.trim() == "[[rule]]")
        .unwrap_or(at);
    let end = lines
        .get(at..)
        .unwrap_or_default()
        .iter()
        .position(|l| l.trim().is_empty())
        .map_or(lines.len() - 1, |n| at + n - 1);
    header + 1..=end + 1
}

struct InvalidCase {
    what: &'static str,
    rules: String,
    /// A text unique to the faulty rule's table, to find its lines.
    marker: String,
    /// What the message must contain to name the faulty rule.
    names: Vec<String>,
}

fn invalid_cases() -> Vec<InvalidCase> {
    let valid = no_kappa_2();
    let long_name = "a".repeat(257);
    vec![
        InvalidCase {
            what: "bad name characters",
            rules: format!(
                "{valid}{}",
                rule_toml("no/slash", "DENY", Some("wgfx-alpha"), None)
            ),
            marker: "no/slash".into(),
            names: vec!["no/slash".into()],
        },
        InvalidCase {
            what: "a 257-character name",
            rules: format!(
                "{valid}{}",
                rule_toml(&long_name, "DENY", Some("wgfx-alpha"), None)
            ),
            marker: long_name.clone(),
            names: vec!["257".into()],
        },
        InvalidCase {
            what: "duplicate names",
            rules: format!(
                "{valid}{}{}",
                rule_toml("twice", "DENY", Some("wgfx-alpha"), None),
                rule_toml("twice", "DENY", Some("wgfx-beta"), None)
            ),
            marker: "\"wgfx-beta\"".into(),
            names: vec!["twice".into()],
        },
        InvalidCase {
            what: "two rules for one package (spelt differently)",
            rules: format!(
                "{valid}{}{}",
                rule_toml("first-for-alpha", "DENY", Some("wgfx-alpha"), None),
                rule_toml("second-for-alpha", "ALLOW", Some("WGFX_Alpha"), None)
            ),
            marker: "second-for-alpha".into(),
            names: vec!["first-for-alpha".into(), "second-for-alpha".into()],
        },
        InvalidCase {
            what: "a CEL syntax error",
            rules: format!(
                "{valid}{}",
                rule_toml(
                    "broken-syntax",
                    "DENY",
                    Some("wgfx-alpha"),
                    Some("pkg.version.id == ")
                )
            ),
            marker: "broken-syntax".into(),
            names: vec!["broken-syntax".into()],
        },
        InvalidCase {
            what: "an unknown field",
            rules: format!(
                "{valid}{}",
                rule_toml(
                    "misspelt-field",
                    "DENY",
                    Some("wgfx-alpha"),
                    Some("pkg.nme == 'wgfx-alpha'")
                )
            ),
            marker: "misspelt-field".into(),
            names: vec!["misspelt-field".into(), "nme".into()],
        },
    ]
}

/// Exit 2 and a message that names the rule and one of its lines.
fn assert_refused(
    run: &clients::ClientRun,
    case: &InvalidCase,
    lines: &std::ops::RangeInclusive<usize>,
    command: &str,
) {
    assert_eq!(
        run.exit_code,
        Some(2),
        "`wheelgate {command}` with {} must exit 2:\n{}",
        case.what,
        run.output()
    );
    let output = run.output();
    for name in &case.names {
        assert!(
            output.contains(name.as_str()),
            "`wheelgate {command}` with {}: the message must name {name:?}:\n{output}",
            case.what
        );
    }
    let names_line = lines
        .clone()
        .any(|n| output.contains(&format!("line {n}")) || output.contains(&format!(":{n}:")));
    assert!(names_line, "`wheelgate {command}` with {}: the message must name a line of the rule ({lines:?}):\n{output}", case.what);
}

#[test]
fn invalid_rules_are_refused_by_check_and_at_start_up() {
    std::thread::scope(|scope| {
        for case in invalid_cases() {
            scope.spawn(move || {
                let dir = tempfile::tempdir()
                    .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
                let config = standalone_config(dir.path(), &case.rules);
                let text = std::fs::read_to_string(&config)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", config.display()));
                let lines = table_lines(&text, &case.marker);
                let config = config.to_string_lossy().into_owned();
                let check = wheelgate::run(&["check", "--config", &config], dir.path());
                assert_refused(&check, &case, &lines, "check");
                let serve = wheelgate::run_for(
                    &["serve", "--config", &config],
                    dir.path(),
                    Duration::from_secs(15),
                );
                assert_refused(&serve, &case, &lines, "serve");
            });
        }
    });
}

#[test]
fn a_reload_keeps_the_old_rules_when_the_new_ones_are_invalid() {
    let mut bed = TestBed::start_with_rules(Mode::Json, &no_kappa_2());
    let kappa_versions = |bed: &TestBed| listed_versions(&json_page(bed, "wgfx-kappa"));
    assert_eq!(kappa_versions(&bed), ["1.0", "1.9"]);

    // An invalid edit that would also move the rule to 1.9, were any of it applied.
    let logged_before = bed.wheelgate.output().len();
    bed.edit_config(|config| {
        config.extra_toml = [
            rule_toml(
                NO_KAPPA_2,
                "DENY",
                Some("wgfx-kappa"),
                Some("pkg.version.id == '1.9'"),
            ),
            rule_toml(
                "broken-on-reload",
                "DENY",
                Some("wgfx-alpha"),
                Some("pkg.nme == 'wgfx-alpha'"),
            ),
        ]
        .concat()
    });
    bed.wheelgate.hangup();
    let logged = wait_until(RELOAD_LIMIT, || {
        bed.wheelgate
            .output()
            .get(logged_before..)
            .is_some_and(|new| new.contains("broken-on-reload"))
    });
    assert!(logged, "within {RELOAD_LIMIT:?} of SIGHUP, wheelgate must log why the edit is refused, naming the rule:\n{}", bed.wheelgate.output());
    // Past the file watch's next look at the same invalid file, too.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        kappa_versions(&bed),
        ["1.0", "1.9"],
        "the previous rules must stay in force"
    );
    let old_denied = file_path("wgfx_kappa-2.0-py3-none-any.whl");
    assert_denied(
        &http::get(&bed.url(&old_denied), &[]),
        "2.0 under the previous rules",
        NO_KAPPA_2,
        true,
    );

    // A valid edit, without a signal: the file watch applies it.
    bed.edit_config(|config| {
        config.extra_toml = rule_toml(
            NO_KAPPA_2,
            "DENY",
            Some("wgfx-kappa"),
            Some("pkg.version.id == '1.9'"),
        )
    });
    let applied = wait_until(RELOAD_LIMIT, || kappa_versions(&bed) == ["1.0", "2.0"]);
    assert!(
        applied,
        "the edited rule must apply within {RELOAD_LIMIT:?}; the page lists {:?}\n{}",
        kappa_versions(&bed),
        bed.wheelgate.output()
    );
    let new_denied = file_path("wgfx_kappa-1.9-py3-none-any.whl");
    assert_denied(
        &http::get(&bed.url(&new_denied), &[]),
        "1.9 under the edited rule",
        NO_KAPPA_2,
        true,
    );
    let url = bed.url(&old_denied);
    assert_eq!(
        http::get(&url, &[]).expect_ok(&url),
        fixture("wgfx_kappa-2.0-py3-none-any.whl").bytes.as_slice()
    );
}

#[test]
fn a_download_in_flight_finishes_under_the_rules_it_started_with() {
    let (slow, after) = generated::expect_gated();
    let expected_sha = slow.sha256().to_owned(); // computed before the upstream needs it
    let mut bed = TestBed::start(Mode::Json);
    let url = bed.file_url("wgfx-slow", slow.filename);
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let download = {
        let (url, received) = (url.clone(), std::sync::Arc::clone(&received));
        std::thread::spawn(move || {
            let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
            let response = http::get_streaming(&url, &[], &mut |data: &[u8]| {
                received.fetch_add(data.len() as u64, std::sync::atomic::Ordering::SeqCst);
                sha2::Digest::update(&mut hasher, data);
            });
            (response, hex::encode(sha2::Digest::finalize(hasher)))
        })
    };
    // Bytes arriving show the download was decided and is streaming; the rest waits at the gate
    // (wheelgate may hold back part of the first MiB, so any byte counts).
    let started = wait_until(Duration::from_secs(10), || {
        received.load(std::sync::atomic::Ordering::SeqCst) > 0
    });
    assert!(
        started,
        "no byte of wgfx-slow arrived while the upstream held it after {after} bytes"
    );

    bed.edit_config(|config| {
        config.extra_toml = rule_toml("no-slow", "DENY", Some("wgfx-slow"), None)
    });
    bed.wheelgate.hangup();
    let page = bed.url("/simple/wgfx-slow/");
    let applied = wait_until(RELOAD_LIMIT, || {
        http::get(&page, &[ACCEPT_JSON]).status == StatusCode::FORBIDDEN
    });
    assert!(
        applied,
        "the new rule must apply within {RELOAD_LIMIT:?}:\n{}",
        bed.wheelgate.output()
    );

    bed.upstream.release_gate();
    let (response, digest) = download
        .join()
        .unwrap_or_else(|_| panic!("the download thread panicked"));
    let response = response.unwrap_or_else(|e| panic!("the download in flight failed: {e}"));
    assert_eq!(response.status, StatusCode::OK);
    assert!(
        response.body_error.is_none(),
        "the download in flight was cut: {:?}",
        response.body_error
    );
    assert_eq!(
        (response.received, digest),
        (slow.size, expected_sha),
        "the download in flight must finish whole"
    );
    assert_denied(
        &http::get(&url, &[]),
        "wgfx-slow after the reload",
        "no-slow",
        true,
    );
}

// --- 6b. Audit mode ----------------------------------------------------------------------------

/// The header naming the audited rules behind a request served anyway.
pub(crate) const AUDIT_HEADER: &str = "x-wheelgate-audit";

/// `no-kappa-2` in `mode = "audit"`.
fn audited_no_kappa_2() -> String {
    format!("{}mode = \"audit\"\n", no_kappa_2())
}

/// The access-log lines wheelgate has written so far.
pub(crate) fn access_lines(bed: &TestBed) -> Vec<String> {
    bed.wheelgate
        .output()
        .lines()
        .filter(|line| line.contains(" INFO wheelgate::access: request "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn an_audited_deny_serves_the_file_and_logs_the_rule_then_enforced_by_reload_it_refuses() {
    let mut bed = TestBed::start_with_rules(Mode::Json, &audited_no_kappa_2());
    let url = bed.url("/simple/wgfx-kappa/");
    let page = http::get(&url, &[ACCEPT_JSON]);
    page.expect_ok(&url);
    assert_eq!(
        listed_versions(&page.json()),
        ["1.0", "1.9", "2.0"],
        "an audited rule leaves the page whole"
    );
    assert_eq!(
        page.header(AUDIT_HEADER),
        Some(named(NO_KAPPA_2).as_str()),
        "the page names the audited rule; headers:\n{}",
        page.headers_text()
    );

    let target = bed.target_dir("audited");
    let run = clients::pip_install(&bed.wheelgate.index_url(), &target, &["wgfx-kappa"]);
    run.assert_success();
    assert_eq!(
        clients::installed(&target),
        dists(&[("wgfx-kappa", "2.0")]),
        "pip installs the version the audited rule would deny:\n{}",
        run.output()
    );
    let wheel = "wgfx_kappa-2.0-py3-none-any.whl";
    let logged = wait_until(RELOAD_LIMIT, || {
        access_lines(&bed).iter().any(|line| {
            line.contains(wheel)
                && line.contains(" status=200 ")
                && line.contains(&format!(
                    "audit=\"rule \\\"{NO_KAPPA_2}\\\" in repository \\\"pypi\\\"\""
                ))
        })
    });
    assert!(
        logged,
        "the access line of the audited download must name the rule after audit=:\n{}",
        access_lines(&bed).join("\n")
    );
    // An allowed file's line carries no audit.
    let response = http::get(&bed.url(&file_path("wgfx_kappa-1.9-py3-none-any.whl")), &[]);
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.header(AUDIT_HEADER), None);
    let direct = http::get(&bed.url(&file_path(wheel)), &[]);
    assert_eq!(direct.status, StatusCode::OK);
    assert_eq!(
        direct.header(AUDIT_HEADER),
        Some(named(NO_KAPPA_2).as_str())
    );
    assert!(
        bed.wheelgate
            .output()
            .contains("served in audit mode: an audited rule would deny this"),
        "the would-deny is logged:\n{}",
        bed.wheelgate.output()
    );

    // The same rule enforced, by a live reload: the page rendered under the audit must not be
    // served again.
    bed.edit_config(|config| config.extra_toml = no_kappa_2());
    bed.wheelgate.hangup();
    let applied = wait_until(RELOAD_LIMIT, || {
        listed_versions(&json_page(&bed, "wgfx-kappa")) == ["1.0", "1.9"]
    });
    assert!(
        applied,
        "the enforced rule must apply to the next page within {RELOAD_LIMIT:?}:\n{}",
        bed.wheelgate.output()
    );
    let enforced = bed.target_dir("enforced");
    let run = clients::pip_install(&bed.wheelgate.index_url(), &enforced, &["wgfx-kappa"]);
    run.assert_success();
    assert_eq!(
        clients::installed(&enforced),
        dists(&[("wgfx-kappa", "1.9")]),
        "pip output:\n{}",
        run.output()
    );
    assert_denied(
        &http::get(&bed.url(&file_path(wheel)), &[]),
        "2.0 with the rule enforced",
        NO_KAPPA_2,
        true,
    );
}

// --- 7. The `wheelgate rules` commands ----------------------------------------------------------

/// A package rule with a condition, a package ALLOW and a repository-wide DENY of sdists.
fn cli_rules() -> String {
    [
        no_kappa_2(),
        rule_toml("allow-beta", "ALLOW", Some("wgfx-beta"), None),
        rule_toml(
            "deny-sdists",
            "DENY",
            None,
            Some("pkg.file.kind == 'sdist'"),
        ),
    ]
    .concat()
}

/// The blocks of `rules list`: one map of `KEY` to value per block, blocks split by blank lines.
fn list_blocks(stdout: &str) -> Vec<BTreeMap<String, String>> {
    stdout
        .split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            block
                .lines()
                .filter_map(|line| line.split_once(':'))
                .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
                .collect()
        })
        .collect()
}

fn block(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn rules_list_prints_gcloud_style_blocks() {
    let dir =
        tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
    let config = standalone_config(dir.path(), &cli_rules());
    let config = config.to_string_lossy().into_owned();
    let expected = vec![
        block(&[
            ("RULE", NO_KAPPA_2),
            ("PACKAGE", "wgfx-kappa"),
            ("ACTION", "DENY"),
            ("OPERATION", "DOWNLOAD"),
            ("CONDITION", "pkg.version.id == '2.0'"),
            ("MODE", "enforce"),
        ]),
        block(&[
            ("RULE", "allow-beta"),
            ("PACKAGE", "wgfx-beta"),
            ("ACTION", "ALLOW"),
            ("OPERATION", "DOWNLOAD"),
            ("CONDITION", ""),
            ("MODE", "enforce"),
        ]),
        block(&[
            ("RULE", "deny-sdists"),
            ("PACKAGE", ""),
            ("ACTION", "DENY"),
            ("OPERATION", "DOWNLOAD"),
            ("CONDITION", "pkg.file.kind == 'sdist'"),
            ("MODE", "enforce"),
        ]),
    ];
    for args in [
        vec!["rules", "list", "--config", &config, "--repo", "pypi"],
        vec!["rules", "list", "--config", &config],
    ] {
        let run = wheelgate::run(&args, dir.path());
        assert_eq!(
            run.exit_code,
            Some(0),
            "`wheelgate {}`:\n{}",
            args.join(" "),
            run.output()
        );
        let mut blocks = list_blocks(&run.stdout);
        // Listing every repository may add the repository to each block.
        for listed in &mut blocks {
            if let Some(repository) = listed.remove("REPOSITORY") {
                assert_eq!(repository, "pypi", "`wheelgate {}`", args.join(" "));
            }
        }
        assert_eq!(
            blocks,
            expected,
            "`wheelgate {}` printed:\n{}",
            args.join(" "),
            run.stdout
        );
    }
}

#[test]
fn rules_describe_prints_one_rule() {
    let dir =
        tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
    let config = standalone_config(dir.path(), &cli_rules());
    let config = config.to_string_lossy().into_owned();
    let run = wheelgate::run(
        &[
            "rules", "describe", NO_KAPPA_2, "--repo", "pypi", "--config", &config,
        ],
        dir.path(),
    );
    assert_eq!(run.exit_code, Some(0), "{}", run.output());
    for part in [
        NO_KAPPA_2,
        "DENY",
        "DOWNLOAD",
        "wgfx-kappa",
        "pkg.version.id == '2.0'",
    ] {
        assert!(
            run.stdout.contains(part),
            "`rules describe {NO_KAPPA_2}` must show {part:?}:\n{}",
            run.stdout
        );
    }
    assert!(
        !run.stdout.contains("allow-beta"),
        "describe shows one rule:\n{}",
        run.stdout
    );

    let run = wheelgate::run(
        &[
            "rules",
            "describe",
            "no-such-rule",
            "--repo",
            "pypi",
            "--config",
            &config,
        ],
        dir.path(),
    );
    assert!(
        !run.success(),
        "describing an unknown rule must fail:\n{}",
        run.output()
    );
    assert!(
        run.stderr.contains("no-such-rule"),
        "the error must name the rule asked for:\n{}",
        run.output()
    );
}

#[test]
fn rules_test_decides_as_the_server_does() {
    let dir =
        tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
    let config = standalone_config(dir.path(), &cli_rules());
    let config = config.to_string_lossy().into_owned();
    // (arguments after `--repo R`, expected exit code, the rule the output must name)
    let cases: &[(&[&str], i32, Option<&str>)] = &[
        (&["wgfx-kappa", "2.0"], 1, Some(NO_KAPPA_2)),
        (&["WGFX_Kappa", "2.0"], 1, Some(NO_KAPPA_2)),
        (&["wgfx-kappa", "1.9"], 0, None),
        (
            &["wgfx-kappa", "1.9", "wgfx_kappa-1.9.tar.gz"],
            1,
            Some("deny-sdists"),
        ),
        (
            &["wgfx-kappa", "2.0", "wgfx_kappa-2.0-py3-none-any.whl"],
            1,
            Some(NO_KAPPA_2),
        ),
        // §5.1: the package's matching ALLOW decides before the repository-wide DENY.
        (
            &["wgfx-beta", "2.0.0", "wgfx_beta-2.0.0.tar.gz"],
            0,
            Some("allow-beta"),
        ),
        (&["not a name!", "1.0"], 2, None),
        (&["wgfx-kappa", "1.9", "wgfx_alpha-1.9.tar.gz"], 2, None),
    ];
    for (args, code, rule) in cases {
        let mut full = vec!["rules", "test", "--config", &config, "--repo", "pypi"];
        full.extend_from_slice(args);
        let run = wheelgate::run(&full, dir.path());
        assert_eq!(
            run.exit_code,
            Some(*code),
            "`wheelgate {}`:\n{}",
            full.join(" "),
            run.output()
        );
        if let Some(rule) = rule {
            assert!(
                run.stdout.contains(&named(rule)),
                "`wheelgate {}` must name {}:\n{}",
                full.join(" "),
                named(rule),
                run.output()
            );
        }
        let verdict = if *code == 0 { "ALLOW" } else { "DENY" };
        if *code != 2 {
            assert!(
                run.stdout.contains(verdict),
                "`wheelgate {}` must print {verdict}:\n{}",
                full.join(" "),
                run.output()
            );
        }
    }
    let run = wheelgate::run(
        &[
            "rules",
            "test",
            "--config",
            &config,
            "--repo",
            "nowhere",
            "wgfx-kappa",
            "2.0",
        ],
        dir.path(),
    );
    assert_eq!(
        run.exit_code,
        Some(2),
        "an unknown repository is an error:\n{}",
        run.output()
    );
    assert!(
        run.stderr.contains("nowhere"),
        "the error must name the repository:\n{}",
        run.output()
    );
}
