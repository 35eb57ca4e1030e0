//! The property both page targets check: a page wheelgate serves says what the upstream said.

use url::Url;
use wheelgate::simple::render::Links;
use wheelgate::simple::{
    parse_project_html, parse_project_json, render_project_html, render_project_json, ProjectName,
    ProjectPage,
};

/// The upstream page every input is parsed as.
pub fn upstream_page() -> (Url, ProjectName) {
    let url = Url::parse("https://upstream.example.invalid/simple/demo/").unwrap();
    (url, ProjectName::parse("demo").unwrap())
}

/// Renders `page` both ways and parses each rendering back.
pub fn check(page: &ProjectPage) {
    let public = Url::parse("https://wheelgate.example.invalid/").unwrap();
    let served = Url::parse("https://wheelgate.example.invalid/pypi/simple/demo/").unwrap();
    let links = Links::absolute(&public, "pypi");

    let json = render_project_json(page, &links);
    let again = parse_project_json(&json, &served, &page.name)
        .unwrap_or_else(|e| panic!("our JSON does not parse back: {e}"));
    same_files(page, &again, true);
    assert_eq!(page.versions, again.versions, "versions");
    assert_eq!(page.status, again.status, "status");

    let html = render_project_html(page, &links);
    let again = parse_project_html(html.as_bytes(), &served, &page.name)
        .unwrap_or_else(|e| panic!("our HTML does not parse back: {e}"));
    same_files(page, &again, false);
}

fn same_files(upstream: &ProjectPage, served: &ProjectPage, json: bool) {
    let format = if json { "JSON" } else { "HTML" };
    assert_eq!(
        served.dropped, 0,
        "{format}: wheelgate rendered a file it cannot read back"
    );
    assert_eq!(
        upstream.files.len(),
        served.files.len(),
        "{format}: file count"
    );
    for (before, after) in upstream.files.iter().zip(&served.files) {
        let file = before.filename.as_str();
        assert_eq!(before.filename, after.filename, "{format}: filename");
        assert_eq!(before.sha256, after.sha256, "{format}: sha256 of {file}");
        assert_eq!(
            before.requires_python, after.requires_python,
            "{format}: requires-python of {file}"
        );
        assert_eq!(before.yanked, after.yanked, "{format}: yanked of {file}");
        assert_eq!(
            before.core_metadata, after.core_metadata,
            "{format}: core-metadata of {file}"
        );
        if json {
            assert_eq!(before.size, after.size, "{format}: size of {file}");
            assert_eq!(
                before.upload_time, after.upload_time,
                "{format}: upload-time of {file}"
            );
        }
    }
}
