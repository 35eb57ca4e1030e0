//! The simple API surface of SPEC §2 as pip and uv see it: redirects, PEP 691 negotiation,
//! `Vary: Accept`, rewritten file links, every per-file attribute kept (in JSON and in HTML),
//! PEP 658 `.metadata`, HEAD, 404s, and file bytes identical to the upstream's.

use std::collections::BTreeMap;

use ::http::StatusCode;

use crate::harness::fixtures::{catalog, FileKind, Project};
use crate::harness::http::{self, HttpResponse};
use crate::harness::upstream::{Mode, HTML_MEDIA_TYPE, JSON_MEDIA_TYPE};
use crate::harness::{assert_no_secret, resolve, TestBed};

const ACCEPT_JSON: (&str, &str) = ("accept", JSON_MEDIA_TYPE);

fn location_path(response: &HttpResponse, url: &str) -> String {
    let location = response
        .header("location")
        .unwrap_or_else(|| panic!("{url}: a {} without Location", response.status));
    resolve(url, location).path().to_owned()
}

fn assert_vary_accept(response: &HttpResponse, url: &str) {
    let vary = response
        .header("vary")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        vary.split(',').any(|v| v.trim() == "accept"),
        "{url}: Vary must name Accept, got {vary:?}"
    );
}

fn content_type(response: &HttpResponse) -> String {
    response
        .header("content-type")
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// The link every file must get: `/pypi/files/<project>/<sha256>/<filename>` on wheelgate.
fn assert_wheelgate_link(
    bed: &TestBed,
    page_url: &str,
    href: &str,
    project: &Project,
    filename: &str,
) -> url::Url {
    let (_, file) = catalog()
        .file(filename)
        .unwrap_or_else(|| panic!("{page_url} lists an unknown file {filename}"));
    let resolved = resolve(page_url, href);
    assert_eq!(
        resolved.host_str().zip(resolved.port()),
        Some(("127.0.0.1", bed.wheelgate.addr().port())),
        "{filename}: the link {href:?} must point at wheelgate"
    );
    assert_eq!(
        resolved.path(),
        format!(
            "/pypi/files/{}/{}/{}",
            project.normalized, file.sha256, filename
        ),
        "{filename}: link layout"
    );
    for host_port in bed.upstream.host_ports() {
        assert!(
            !href.contains(&host_port),
            "{filename}: the link {href:?} leaks the upstream's {host_port}"
        );
    }
    resolved
}

#[test]
fn redirects_normalise_names_and_add_trailing_slashes() {
    let bed = TestBed::start(Mode::Json);
    for (path, expected) in [
        ("/simple/WGFX_App/", "/simple/wgfx-app/"),
        ("/simple/wgfx_gamma.util/", "/simple/wgfx-gamma-util/"),
        ("/simple/wgfx-app", "/simple/wgfx-app/"),
        ("/simple", "/simple/"),
        ("/pypi/simple/wgfx-app", "/pypi/simple/wgfx-app/"),
    ] {
        let url = bed.url(path);
        let response = http::get(&url, &[]);
        assert_eq!(
            response.status,
            StatusCode::MOVED_PERMANENTLY,
            "{path}: {}",
            response.text()
        );
        assert_eq!(location_path(&response, &url), expected, "{path}");
    }
    let url = bed.url("/pypi/simple/WGFX.App/");
    let response = http::get(&url, &[]);
    assert_eq!(response.status, StatusCode::MOVED_PERMANENTLY, "{url}");
    assert!(
        location_path(&response, &url).ends_with("/simple/wgfx-app/"),
        "{url}"
    );
}

#[test]
fn content_negotiation_follows_pep_691() {
    let bed = TestBed::start(Mode::Json);
    for path in ["/simple/", "/simple/wgfx-app/", "/pypi/simple/wgfx-app/"] {
        let url = bed.url(path);
        let json = http::get(&url, &[ACCEPT_JSON]);
        json.expect_ok(&url);
        assert!(
            content_type(&json).starts_with(JSON_MEDIA_TYPE),
            "{url}: {}",
            content_type(&json)
        );
        assert!(
            json.json()["meta"]["api-version"].is_string(),
            "{url}: meta.api-version missing"
        );
        assert_vary_accept(&json, &url);

        for (accept, expected) in [
            (None, "text/html"),
            (Some("text/html"), "text/html"),
            (Some(HTML_MEDIA_TYPE), HTML_MEDIA_TYPE),
            (
                Some("application/vnd.pypi.simple.v1+json;q=0.2, text/html;q=0.9"),
                "text/html",
            ),
            (Some("application/xml"), "text/html"),
        ] {
            let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
            let html = http::get(&url, &headers);
            html.expect_ok(&url);
            assert!(
                content_type(&html).starts_with(expected),
                "{url} with Accept {accept:?}: {}",
                content_type(&html)
            );
            assert!(
                html.text().contains("<a "),
                "{url} with Accept {accept:?}: no links in\n{}",
                html.text()
            );
            assert_vary_accept(&html, &url);
        }
    }
    let q_prefers_json = http::get(
        &bed.url("/simple/wgfx-app/"),
        &[(
            "accept",
            "text/html;q=0.1, application/vnd.pypi.simple.v1+json",
        )],
    );
    assert!(
        content_type(&q_prefers_json).starts_with(JSON_MEDIA_TYPE),
        "q-values must be honoured"
    );
}

#[test]
fn index_lists_the_upstream_projects() {
    let bed = TestBed::start(Mode::Json);
    let json = http::get(&bed.url("/simple/"), &[ACCEPT_JSON]).json();
    let names: Vec<String> = json["projects"]
        .as_array()
        .unwrap_or_else(|| panic!("/simple/ JSON has no projects array: {json}"))
        .iter()
        .filter_map(|p| p["name"].as_str().map(crate::harness::fixtures::normalize))
        .collect();
    for project in &catalog().projects {
        assert!(
            names.contains(&project.normalized),
            "/simple/ does not list {}",
            project.normalized
        );
    }
}

fn check_json_page(mode: Mode) {
    let bed = TestBed::start(mode);
    for name in [
        "wgfx-app",
        "wgfx-alpha",
        "wgfx-far",
        "wgfx-hop",
        "wgfx-gamma-util",
    ] {
        let project = catalog().expect_project(name);
        let url = bed.url(&format!("/simple/{name}/"));
        let response = http::get(&url, &[ACCEPT_JSON]);
        response.expect_ok(&url);
        let page = response.json();
        assert!(
            page["meta"]["api-version"]
                .as_str()
                .is_some_and(|v| v.starts_with("1.")),
            "{url}: {page}"
        );
        if mode == Mode::Json {
            let versions: Vec<&str> = page["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str())
                .collect();
            let mut expected: Vec<&str> = project.versions.iter().map(String::as_str).collect();
            let mut got = versions.clone();
            expected.sort_unstable();
            got.sort_unstable();
            assert_eq!(got, expected, "{url}: versions");
        }
        let files = page["files"]
            .as_array()
            .unwrap_or_else(|| panic!("{url}: no files array in {page}"));
        assert_eq!(
            files.len(),
            project.files.len(),
            "{url}: every upstream file must be listed"
        );
        for entry in files {
            let filename = entry["filename"]
                .as_str()
                .unwrap_or_else(|| panic!("{url}: a file without filename: {entry}"));
            let file = project.expect_file(filename);
            let href = entry["url"]
                .as_str()
                .unwrap_or_else(|| panic!("{url}: {filename} has no url"));
            assert_wheelgate_link(&bed, &url, href, project, filename);
            assert_eq!(
                entry["hashes"]["sha256"].as_str(),
                Some(file.sha256.as_str()),
                "{filename}: hashes"
            );
            assert_eq!(
                entry["requires-python"].as_str(),
                file.requires_python.as_deref(),
                "{filename}: requires-python"
            );
            match &file.yanked {
                Some(reason) => assert_eq!(
                    entry["yanked"].as_str(),
                    Some(reason.as_str()),
                    "{filename}: yanked reason"
                ),
                None => assert!(
                    entry["yanked"].is_null() || entry["yanked"] == false,
                    "{filename}: not yanked, got {}",
                    entry["yanked"]
                ),
            }
            match &file.metadata_sha256 {
                Some(sha) => assert_eq!(
                    entry["core-metadata"]["sha256"].as_str(),
                    Some(sha.as_str()),
                    "{filename}: core-metadata"
                ),
                None => assert!(
                    entry["core-metadata"].is_null() || entry["core-metadata"] == false,
                    "{filename}: no metadata upstream, got {}",
                    entry["core-metadata"]
                ),
            }
            if mode == Mode::Json {
                assert_eq!(
                    entry["size"].as_u64(),
                    Some(file.bytes.len() as u64),
                    "{filename}: size"
                );
                assert_eq!(
                    entry["upload-time"].as_str(),
                    Some(file.upload_time.now().as_str()),
                    "{filename}: upload-time"
                );
            }
        }
    }
}

#[test]
fn json_pages_keep_every_file_attribute_from_a_json_upstream() {
    check_json_page(Mode::Json);
}

#[test]
fn json_pages_keep_every_file_attribute_from_an_html_upstream() {
    check_json_page(Mode::HtmlOnly);
}

/// The anchors of an HTML page: text -> raw (still escaped) attributes.
pub(crate) fn anchors(html: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let dom = tl::parse(html, tl::ParserOptions::default())
        .unwrap_or_else(|e| panic!("unparsable HTML ({e}):\n{html}"));
    let parser = dom.parser();
    let mut out = BTreeMap::new();
    for node in dom.nodes() {
        let Some(tag) = node.as_tag() else { continue };
        if tag.name().as_bytes() != b"a" {
            continue;
        }
        let attributes = tag
            .attributes()
            .iter()
            .map(|(k, v)| {
                (
                    k.into_owned(),
                    v.map(|v| v.into_owned()).unwrap_or_default(),
                )
            })
            .collect();
        out.insert(tag.inner_text(parser).trim().to_owned(), attributes);
    }
    out
}

fn check_html_page(mode: Mode) {
    let bed = TestBed::start(mode);
    for name in ["wgfx-app", "wgfx-alpha", "wgfx-far"] {
        let project = catalog().expect_project(name);
        let url = bed.url(&format!("/simple/{name}/"));
        let response = http::get(&url, &[("accept", "text/html")]);
        response.expect_ok(&url);
        let links = anchors(&response.text());
        assert_eq!(
            links.len(),
            project.files.len(),
            "{url}: one link per file, got {links:?}"
        );
        for file in &project.files {
            let attributes = links.get(&file.filename).unwrap_or_else(|| {
                panic!(
                    "{url}: no link for {}; page:\n{}",
                    file.filename,
                    response.text()
                )
            });
            let raw_href = attributes
                .get("href")
                .unwrap_or_else(|| panic!("{}: link without href", file.filename));
            let href = html_escape::decode_html_entities(raw_href).into_owned();
            let (link, fragment) = href.split_once('#').unwrap_or((href.as_str(), ""));
            assert_eq!(
                fragment,
                format!("sha256={}", file.sha256),
                "{}: the #sha256 fragment must be kept",
                file.filename
            );
            assert_wheelgate_link(&bed, &url, link, project, &file.filename);
            let decoded = |key: &str| {
                attributes
                    .get(key)
                    .map(|v| html_escape::decode_html_entities(v).into_owned())
            };
            assert_eq!(
                decoded("data-requires-python"),
                file.requires_python,
                "{}: data-requires-python",
                file.filename
            );
            if let Some(raw) = attributes.get("data-requires-python") {
                assert!(
                    !raw.contains('>') && !raw.contains('<'),
                    "{}: data-requires-python must be entity-escaped, got {raw:?}",
                    file.filename
                );
            }
            assert_eq!(
                decoded("data-yanked"),
                file.yanked,
                "{}: data-yanked",
                file.filename
            );
            let expected_metadata = file
                .metadata_sha256
                .as_ref()
                .map(|sha| format!("sha256={sha}"));
            assert_eq!(
                decoded("data-core-metadata"),
                expected_metadata,
                "{}: data-core-metadata",
                file.filename
            );
            assert_eq!(
                decoded("data-dist-info-metadata"),
                expected_metadata,
                "{}: data-dist-info-metadata",
                file.filename
            );
        }
    }
}

#[test]
fn html_pages_keep_every_data_attribute_from_a_json_upstream() {
    check_html_page(Mode::Json);
}

#[test]
fn html_pages_keep_every_data_attribute_from_an_html_upstream() {
    check_html_page(Mode::HtmlOnly);
}

/// Every file link of a JSON page, resolved, by filename.
fn file_links(bed: &TestBed, project: &str) -> BTreeMap<String, String> {
    let url = bed.url(&format!("/simple/{project}/"));
    let page = http::get(&url, &[ACCEPT_JSON]).json();
    page["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| {
            Some((
                f["filename"].as_str()?.to_owned(),
                resolve(&url, f["url"].as_str()?).to_string(),
            ))
        })
        .collect()
}

#[test]
fn files_and_metadata_are_served_byte_identical() {
    let bed = TestBed::start(Mode::Json);
    // Relative and absolute main-origin links, the second origin, the redirect, the auth_hosts origin.
    for (project, filename) in [
        ("wgfx-app", "wgfx_app-1.1.0-py3-none-any.whl"),
        ("wgfx-app", "wgfx_app-1.1.0.tar.gz"),
        ("wgfx-alpha", "wgfx_alpha-1.0.0-py3-none-any.whl"),
        ("wgfx-far", "wgfx_far-1.1.0-py3-none-any.whl"),
        ("wgfx-hop", "wgfx_hop-1.0.0-py3-none-any.whl"),
        ("wgfx-tokenhost", "wgfx_tokenhost-1.0.0-py3-none-any.whl"),
    ] {
        let fixture = catalog().expect_project(project).expect_file(filename);
        let links = file_links(&bed, project);
        let link = links
            .get(filename)
            .unwrap_or_else(|| panic!("{project}: no link for {filename} in {links:?}"));
        let response = http::get(link, &[]);
        assert!(
            response.expect_ok(link) == fixture.bytes.as_slice(),
            "{filename}: bytes differ from the upstream's"
        );

        let head = http::head(link, &[]);
        assert_eq!(head.status, StatusCode::OK, "HEAD {link}");
        assert!(head.body.is_empty(), "HEAD {link} must not carry a body");

        if fixture.kind == FileKind::Wheel {
            let metadata_url = format!("{link}.metadata");
            let metadata = http::get(&metadata_url, &[]);
            assert_eq!(
                Some(metadata.expect_ok(&metadata_url)),
                fixture.metadata.as_deref(),
                "{metadata_url}: must be the wheel's METADATA"
            );
            assert_eq!(
                http::head(&metadata_url, &[]).status,
                StatusCode::OK,
                "HEAD {metadata_url}"
            );
        }
    }
}

#[test]
fn head_answers_every_page_route() {
    let bed = TestBed::start(Mode::Json);
    for path in [
        "/simple/",
        "/simple/wgfx-app/",
        "/pypi/simple/wgfx-app/",
        "/-/health",
        "/-/ready",
    ] {
        let url = bed.url(path);
        let get = http::get(&url, &[]);
        let head = http::head(&url, &[]);
        assert_eq!(head.status, get.status, "HEAD {path} must answer like GET");
        assert_eq!(head.status, StatusCode::OK, "HEAD {path}");
        assert!(head.body.is_empty(), "HEAD {path} must not carry a body");
    }
    let head = http::head(&bed.url("/simple/WGFX_App/"), &[]);
    assert_eq!(
        head.status,
        StatusCode::MOVED_PERMANENTLY,
        "HEAD on a non-normalised name"
    );
}

#[test]
fn unknown_projects_and_the_legacy_json_api_are_404_with_a_reason() {
    let bed = TestBed::start(Mode::Json);
    for path in [
        "/simple/wgfx-no-such-project/",
        "/pypi/simple/wgfx-no-such-project/",
        "/pypi/wgfx-app/json",
    ] {
        for accept in [None, Some(JSON_MEDIA_TYPE)] {
            let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
            let response = http::get(&bed.url(path), &headers);
            assert_eq!(
                response.status,
                StatusCode::NOT_FOUND,
                "{path} (Accept {accept:?}): {}",
                response.text()
            );
            assert!(
                !response.text().trim().is_empty(),
                "{path}: a 404 must say why"
            );
        }
    }
    assert!(
        !bed.upstream
            .requests_for("/simple/wgfx-no-such-project/")
            .is_empty(),
        "the unknown project must have been asked upstream, not refused blindly"
    );
}

#[test]
fn health_and_readiness_answer() {
    let bed = TestBed::start(Mode::HtmlOnly);
    for path in ["/-/health", "/-/ready"] {
        let response = http::get(&bed.url(path), &[]);
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{path}: {}",
            response.text()
        );
    }
    // The page a person sees at `/` names the repository, its upstream without credentials,
    // and the store's and the rules' counters.
    let home = http::get(&bed.url("/"), &[]);
    let text = home.text();
    assert_eq!(home.status, StatusCode::OK, "{text}");
    assert!(
        text.contains("pypi/simple/") && text.contains(&bed.upstream.index_url()),
        "{text}"
    );
    assert!(text.contains("0 rules in force"), "{text}");
    assert_no_secret(&text, &[bed.upstream.token()], "the home page");
}

#[test]
fn anchors_keep_attribute_values_raw() {
    let links = anchors(
        "<html><body><a href=\"../../x.whl#sha256=ab\" data-requires-python=\"&gt;=3.8\" data-yanked=\"\">x.whl</a>\n\
         <a href=\"y.tar.gz\">y.tar.gz</a></body></html>",
    );
    assert_eq!(links.len(), 2);
    let x = &links["x.whl"];
    assert_eq!(
        x.get("data-requires-python").map(String::as_str),
        Some("&gt;=3.8")
    );
    assert_eq!(x.get("data-yanked").map(String::as_str), Some(""));
    assert_eq!(
        links["y.tar.gz"].get("href").map(String::as_str),
        Some("y.tar.gz")
    );
}

#[test]
fn the_front_speaks_http2_with_prior_knowledge() {
    let bed = TestBed::start(Mode::Json);
    let page_url = bed.url("/simple/wgfx-alpha/");
    let over_h1 = http::get(&page_url, &[]);
    let h1_body = over_h1.expect_ok(&page_url).to_vec();
    let (status, version, body) = http::get_http2(&page_url).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, StatusCode::OK, "{page_url} over HTTP/2");
    assert_eq!(
        version,
        ::http::Version::HTTP_2,
        "{page_url} was not answered over HTTP/2"
    );
    assert_eq!(body, h1_body, "the same page over HTTP/1.1 and HTTP/2");

    let project = catalog().expect_project("wgfx-alpha");
    let wheel = project.wheel("1.0.0");
    let file_url = bed.file_url("wgfx-alpha", &wheel.filename);
    let (status, version, body) = http::get_http2(&file_url).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (status, version),
        (StatusCode::OK, ::http::Version::HTTP_2),
        "{file_url}"
    );
    assert!(body == wheel.bytes, "{file_url}: wrong bytes over HTTP/2");
}
