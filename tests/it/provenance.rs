//! PEP 740 provenance and PEP 792 project status through wheelgate (issue 13): what the index says
//! about trust reaches pip, uv and the download rules.
//!
//! The fixture upstream states a status for `wgfx-archived` and offers provenance for some files
//! (`fixtures/projects.toml`), in JSON and, for the `HtmlOnly` upstream, in HTML. wheelgate's JSON
//! and HTML pages must carry both, with each `.provenance` link pointing at wheelgate and serving
//! the upstream's bytes (fetched once, then from the store), and declare the API version they
//! need. The rules see them as `pkg.project.status` and `pkg.file.provenance`: a rule can refuse an
//! archived project's every file (page, file, metadata and provenance, none fetched upstream) or
//! require provenance, and pip and uv then resolve accordingly. A hosted repository has no
//! provenance: its `.provenance` URLs are a 404 that says so.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use ::http::StatusCode;

use crate::harness::clients::{self, dists, ClientRun};
use crate::harness::fixtures::{catalog, DistFile, Project};
use crate::harness::http::{self, HttpResponse};
use crate::harness::upstream::{Mode, JSON_MEDIA_TYPE};
use crate::harness::wheelgate::rule_toml;
use crate::harness::{resolve, wait_until, TestBed};
use crate::publish::{assert_refusal, publishing_bed, INTERNAL};
use crate::simple_api::anchors;

const ACCEPT_JSON: (&str, &str) = ("accept", JSON_MEDIA_TYPE);
const ACCEPT_HTML: (&str, &str) = ("accept", "text/html");
const ARCHIVED: &str = "wgfx-archived";
const ATTESTED: &str = "wgfx-attested";
const NO_ARCHIVED: &str = "no-archived-projects";

fn project(name: &str) -> &'static Project {
    catalog().expect_project(name)
}

/// The fixture file of `project` called `filename`.
fn fixture<'a>(project: &'a Project, filename: &str) -> &'a DistFile {
    project.expect_file(filename)
}

/// A page through wheelgate, which must be a 200.
fn get_page(bed: &TestBed, name: &str, accept: (&str, &str)) -> (String, HttpResponse) {
    let url = bed.url(&format!("/simple/{name}/"));
    let response = http::get(&url, &[accept]);
    response.expect_ok(&url);
    (url, response)
}

/// Every file of a JSON page: filename -> (file URL, provenance URL), both resolved.
fn json_links(
    page_url: &str,
    page: &serde_json::Value,
) -> BTreeMap<String, (String, Option<String>)> {
    page["files"]
        .as_array()
        .unwrap_or_else(|| panic!("{page_url}: no files in {page}"))
        .iter()
        .map(|f| {
            let filename = f["filename"].as_str().unwrap_or_default().to_owned();
            let url = f["url"]
                .as_str()
                .unwrap_or_else(|| panic!("{filename} has no url: {f}"));
            let provenance = match &f["provenance"] {
                serde_json::Value::String(href) => Some(resolve(page_url, href).to_string()),
                serde_json::Value::Null => None,
                other => panic!("{filename}: provenance must be a string or absent, got {other}"),
            };
            (filename, (resolve(page_url, url).to_string(), provenance))
        })
        .collect()
}

/// The wheelgate URL a file's provenance must have: its own URL, fragment dropped, plus
/// `.provenance`.
fn expected_provenance_url(file_url: &str) -> String {
    let mut url = url::Url::parse(file_url).unwrap_or_else(|e| panic!("{file_url}: {e}"));
    url.set_fragment(None);
    format!("{url}.provenance")
}

/// The path wheelgate links a fixture file at: `/pypi/files/<project>/<sha256>/<filename>`.
fn file_path(project: &Project, file: &DistFile) -> String {
    format!(
        "/pypi/files/{}/{}/{}",
        project.normalized, file.sha256, file.filename
    )
}

/// Checks a project's pages in both formats against the fixture: the API version, the status, and
/// for each file a provenance link at wheelgate exactly when the upstream offers one. Returns the
/// provenance URLs by filename.
fn check_pages(bed: &TestBed, name: &str) -> BTreeMap<String, Option<String>> {
    let fixture_project = project(name);
    let (json_url, json) = get_page(bed, name, ACCEPT_JSON);
    let body = json.text();
    let page = json.json();
    let expected_version = if fixture_project.status.is_some() {
        "1.4"
    } else {
        "1.3"
    };
    assert_eq!(
        page["meta"]["api-version"], expected_version,
        "{json_url}: {page}"
    );
    match &fixture_project.status {
        Some(status) => {
            assert_eq!(page["project-status"]["status"], status.as_str(), "{page}");
            assert_eq!(
                page["project-status"]["reason"].as_str(),
                fixture_project.status_reason.as_deref(),
                "{page}"
            );
        }
        None => assert!(page.get("project-status").is_none(), "{page}"),
    }
    for host_port in bed.upstream.host_ports() {
        assert!(
            !body.contains(&host_port),
            "{json_url} leaks the upstream {host_port}: {body}"
        );
    }
    let links = json_links(&json_url, &page);
    assert_eq!(links.len(), fixture_project.files.len(), "{page}");
    let wheelgate = bed.wheelgate.addr().to_string();
    let mut provenance = BTreeMap::new();
    for (filename, (file_url, provenance_url)) in &links {
        let file = fixture(fixture_project, filename);
        match (&file.provenance, provenance_url) {
            (Some(_), Some(url)) => {
                assert_eq!(url, &expected_provenance_url(file_url), "{filename}");
                let parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
                assert_eq!(
                    format!(
                        "{}:{}",
                        parsed.host_str().unwrap_or_default(),
                        parsed.port().unwrap_or(80)
                    ),
                    wheelgate,
                    "{filename}: the provenance link must point at wheelgate"
                );
                assert_eq!(
                    parsed.path(),
                    format!("{}.provenance", file_path(fixture_project, file)),
                    "{filename}: the provenance key is the file's key"
                );
            }
            (None, None) => {}
            (offered, linked) => panic!(
                "{filename}: the upstream offers provenance: {}, the page links {linked:?}",
                offered.is_some()
            ),
        }
        provenance.insert(filename.clone(), provenance_url.clone());
    }

    let (html_url, html) = get_page(bed, name, ACCEPT_HTML);
    let html = html.text();
    assert!(
        html.contains(&format!(
            "<meta name=\"pypi:repository-version\" content=\"{expected_version}\">"
        )),
        "{html_url}:\n{html}"
    );
    match &fixture_project.status {
        Some(status) => {
            assert!(
                html.contains(&format!(
                    "<meta name=\"pypi:project-status\" content=\"{status}\">"
                )),
                "{html_url}:\n{html}"
            );
            let reason = fixture_project.status_reason.as_deref().unwrap_or_default();
            let escaped = html_escape::encode_double_quoted_attribute(reason);
            assert!(
                html.contains(&format!(
                    "<meta name=\"pypi:project-status-reason\" content=\"{escaped}\">"
                )),
                "{html_url}:\n{html}"
            );
        }
        None => assert!(!html.contains("pypi:project-status"), "{html}"),
    }
    let anchors = anchors(&html);
    assert_eq!(anchors.len(), links.len(), "{html_url}:\n{html}");
    for (filename, attributes) in &anchors {
        let linked = attributes
            .get("data-provenance")
            .map(|href| resolve(&html_url, &html_escape::decode_html_entities(href)).to_string());
        assert_eq!(
            &linked, &provenance[filename],
            "{filename}: HTML and JSON pages link the same provenance"
        );
    }
    provenance
}

#[test]
fn provenance_and_status_reach_both_formats_and_provenance_is_served_and_cached() {
    for mode in [Mode::Json, Mode::HtmlOnly] {
        let bed = TestBed::start(mode);
        check_pages(&bed, ATTESTED);
        let links = check_pages(&bed, ARCHIVED);
        let archived = project(ARCHIVED);
        for (filename, url) in &links {
            let url = url
                .as_deref()
                .unwrap_or_else(|| panic!("{mode:?}: {filename} has no provenance link"));
            let expected = fixture(archived, filename)
                .provenance
                .as_deref()
                .unwrap_or_default();
            let first = http::get(url, &[]);
            assert_eq!(first.expect_ok(url), expected, "{mode:?}: {url}");
            assert_eq!(first.header("content-type"), Some("application/json"));
            assert_eq!(first.cache(), Some("miss"), "{url}");
            let again = http::get(url, &[]);
            assert_eq!(again.expect_ok(url), expected);
            assert_eq!(
                again.cache(),
                Some("hit"),
                "{url}: the second request comes from the store"
            );
            // The store commits a download in the background; once it has, HEAD knows the size.
            let stored = wait_until(Duration::from_secs(5), || {
                http::head(url, &[]).cache() == Some("hit")
            });
            assert!(
                stored,
                "{mode:?}: HEAD {url} never found the provenance stored"
            );
            let head = http::head(url, &[]);
            assert_eq!(head.status, StatusCode::OK, "HEAD {url}");
            assert_eq!(
                head.header("content-length"),
                Some(expected.len().to_string().as_str()),
                "HEAD {url}: {}",
                head.headers_text()
            );
            let upstream_path = format!(
                "/integrity/{ARCHIVED}/{}/{filename}/provenance",
                fixture(archived, filename).version
            );
            assert_eq!(
                bed.upstream.requests_for(&upstream_path).len(),
                1,
                "{mode:?}: {upstream_path} must be fetched once and then kept"
            );
        }

        // A file the upstream offers no provenance for: its `.provenance` is a 404 saying so.
        let attested = project(ATTESTED);
        let bare = attested.wheel("1.1");
        let url = bed.url(&format!("{}.provenance", file_path(attested, bare)));
        let missing = http::get(&url, &[]);
        assert_eq!(
            missing.status,
            StatusCode::NOT_FOUND,
            "{url}: {}",
            missing.text()
        );
        assert!(
            missing.text().contains("offers no provenance"),
            "{url}: {}",
            missing.text()
        );
    }
}

/// `pip install` or `uv pip install`: index URL, target, requirements.
type Install = fn(&str, &Path, &[&str]) -> ClientRun;

#[test]
fn pip_and_uv_install_from_pages_with_provenance_and_status() {
    let bed = TestBed::start(Mode::Json);
    let installers: [(&str, Install); 2] =
        [("pip", clients::pip_install), ("uv", clients::uv_install)];
    for (client, install) in installers {
        let target = bed.target_dir(client);
        let run = install(&bed.wheelgate.index_url(), &target, &[ARCHIVED, ATTESTED]);
        run.assert_success();
        assert_eq!(
            clients::installed(&target),
            dists(&[(ARCHIVED, "1.0"), (ATTESTED, "1.1")]),
            "{client} output:\n{}",
            run.output()
        );
    }
}

/// A 403 naming the rule, in the body and in `X-Wheelgate-Denied`.
fn assert_denied(response: &HttpResponse, what: &str) {
    assert_eq!(
        response.status,
        StatusCode::FORBIDDEN,
        "{what} must be denied; body:\n{}",
        response.text()
    );
    let rule = format!("rule \"{NO_ARCHIVED}\" in repository \"pypi\"");
    if !response.body.is_empty() {
        assert!(
            response.text().contains(&rule),
            "{what}: {}",
            response.text()
        );
    }
    assert!(
        response
            .header("x-wheelgate-denied")
            .is_some_and(|h| h.contains(NO_ARCHIVED)),
        "{what}: {}",
        response.headers_text()
    );
}

#[test]
fn a_rule_on_the_project_status_denies_an_archived_projects_files() {
    let rule = rule_toml(
        NO_ARCHIVED,
        "DENY",
        None,
        Some("pkg.project.status == 'archived'"),
    );
    let bed = TestBed::start_with_rules(Mode::Json, &rule);
    let archived = project(ARCHIVED);
    let page_url = bed.url(&format!("/simple/{ARCHIVED}/"));
    assert_denied(&http::get(&page_url, &[ACCEPT_JSON]), "the JSON page");
    assert_denied(&http::get(&page_url, &[ACCEPT_HTML]), "the HTML page");
    for file in &archived.files {
        let path = file_path(archived, file);
        for part in ["", ".metadata", ".provenance"] {
            let url = bed.url(&format!("{path}{part}"));
            assert_denied(&http::get(&url, &[]), &format!("GET {url}"));
            assert_denied(&http::head(&url, &[]), &format!("HEAD {url}"));
        }
    }

    let target = bed.target_dir("archived");
    let run = clients::pip_install(&bed.wheelgate.index_url(), &target, &[ARCHIVED]);
    assert!(
        !run.success(),
        "pip installed the archived project:\n{}",
        run.output()
    );
    assert!(clients::installed(&target).is_empty());
    // An active project is not touched by the rule.
    let target = bed.target_dir("active");
    let run = clients::uv_install(&bed.wheelgate.index_url(), &target, &[ATTESTED]);
    run.assert_success();
    assert_eq!(clients::installed(&target), dists(&[(ATTESTED, "1.1")]));

    for file in &archived.files {
        bed.assert_upstream_never_asked(
            &file.filename,
            "every file of the archived project is denied",
        );
    }
}

#[test]
fn a_rule_can_require_provenance() {
    let rule = rule_toml(
        "attested-only",
        "DENY",
        Some(ATTESTED),
        Some("!pkg.file.provenance"),
    );
    let bed = TestBed::start_with_rules(Mode::Json, &rule);
    let attested = project(ATTESTED);
    let (page_url, json) = get_page(&bed, ATTESTED, ACCEPT_JSON);
    let listed: Vec<String> = json_links(&page_url, &json.json()).into_keys().collect();
    let expected: Vec<String> = attested
        .files
        .iter()
        .filter(|f| f.provenance.is_some())
        .map(|f| f.filename.clone())
        .collect();
    assert!(!expected.is_empty() && expected.len() < attested.files.len());
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(
        listed, expected_sorted,
        "only files with provenance are left"
    );

    let target = bed.target_dir("pip");
    let run = clients::pip_install(&bed.wheelgate.index_url(), &target, &[ATTESTED]);
    run.assert_success();
    assert_eq!(
        clients::installed(&target),
        dists(&[(ATTESTED, "1.0")]),
        "1.1 has no provenance, so pip falls back to 1.0:\n{}",
        run.output()
    );
}

#[test]
fn a_hosted_repository_has_no_provenance() {
    let (bed, publisher, _reader) = publishing_bed(|_| {});
    let wheel = crate::harness::uploads::app_wheel();
    let form = crate::harness::uploads::UploadForm::of(wheel);
    let uploaded = bed.upload(INTERNAL, &form, Some(&publisher));
    assert_eq!(uploaded.status, 200, "{}", uploaded.text());

    let page_url = bed.url(&format!("/{INTERNAL}/simple/{}/", wheel.normalized));
    let response = http::get(&page_url, &[ACCEPT_JSON]);
    let page = response.json();
    assert_eq!(page["meta"]["api-version"], "1.1", "{page}");
    assert!(page.get("project-status").is_none(), "{page}");
    let links = json_links(&page_url, &page);
    let (file_url, provenance) = &links[&wheel.filename];
    assert_eq!(provenance, &None);

    let path = format!(
        "{}.provenance",
        url::Url::parse(file_url)
            .map(|u| u.path().to_owned())
            .unwrap_or_default()
    );
    let refused = bed.raw_get_as(&path, None);
    assert_refusal(
        &refused,
        404,
        &format!("GET {path}"),
        &["no provenance", INTERNAL],
    );
}
