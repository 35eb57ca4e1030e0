//! Rendering our own index pages.
//!
//! Every page we serve points its file links back at wheelgate (SPEC §2), so that downloads pass
//! through our cache and policy, while keeping everything a resolver needs from the upstream page:
//! digests, `requires-python`, yank status and metadata availability, and what the index says
//! about trust: each file's PEP 740 provenance (linked as `<file>.provenance` at wheelgate too) and
//! the project's PEP 792 status. Output is deterministic (same page in, same bytes out) so that
//! ETags are stable, and all escaping is done by html-escape and serde_json rather than by hand.
//!
//! A page declares the lowest API version that covers what it carries: 1.1 (PEP 700) for a plain
//! page, 1.3 when a file has provenance (PEP 740), 1.4 when the project has a status other than a
//! bare `active` (PEP 792). A client that warns about newer minor versions thus only warns where a
//! page uses something new.

use std::borrow::Cow;
use std::collections::BTreeMap;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Serialize;
use url::Url;

use super::digest::{FileKey, Sha256Digest};
use super::filename::DistFilename;
use super::name::ProjectName;
use super::page::{CoreMetadata, FileEntry, ProjectIndex, ProjectPage, ProjectStatus, Yanked};
use super::part::FilePart;

/// The repository version of the project list and of plain project pages: PEP 691 v1 with the
/// PEP 700 additions.
const API_VERSION: &str = "1.1";
/// The version that added `provenance` (PEP 740).
const API_VERSION_PROVENANCE: &str = "1.3";
/// The version that added `project-status` (PEP 792).
const API_VERSION_STATUS: &str = "1.4";

/// The lowest API version that covers what `page` carries.
fn project_api_version(page: &ProjectPage) -> &'static str {
    if !page.status.is_default() {
        API_VERSION_STATUS
    } else if page.files.iter().any(|f| f.provenance.is_some()) {
        API_VERSION_PROVENANCE
    } else {
        API_VERSION
    }
}

/// Everything but RFC 3986 unreserved characters is escaped in a path segment, except `+` and `!`
/// which are common in versions (`1.0+cpu`, `1!2.0`), are legal in paths and read better.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'+')
    .remove(b'!');

/// How file links are written on our pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    /// Everything before the project segment, ending in `<repo>/files/`.
    prefix: String,
}

impl Links {
    /// Relative links: `up` is the number of path segments to climb from the page to the server
    /// root (page `/simple/foo/` -> 2, `/pypi/simple/foo/` -> 3); `repo` is the repository the page
    /// was served from, so a direct download passes the same policy as the page did.
    pub fn relative(up: usize, repo: &str) -> Links {
        let mut prefix = "../".repeat(up);
        push_repo_files(&mut prefix, repo);
        Links { prefix }
    }

    /// Absolute links under `public_url` (a missing trailing `/` is supplied).
    pub fn absolute(public_url: &Url, repo: &str) -> Links {
        let mut prefix = public_url.as_str().to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        push_repo_files(&mut prefix, repo);
        Links { prefix }
    }

    /// The URL of a file: `<prefix><repo>/files/<project>/<key>/<filename as a path segment>`.
    pub fn file_url(
        &self,
        project: &ProjectName,
        key: &FileKey,
        filename: &DistFilename,
    ) -> String {
        let key = key.to_string();
        let mut url = String::with_capacity(
            self.prefix.len() + project.as_str().len() + key.len() + filename.as_str().len() + 8,
        );
        url.push_str(&self.prefix);
        // Project names are `[a-z0-9-]` after normalisation: nothing to escape.
        url.push_str(project.as_str());
        url.push('/');
        url.push_str(&key);
        url.push('/');
        url.extend(utf8_percent_encode(filename.as_str(), SEGMENT));
        url
    }

    /// The link for one entry of a page, which lives under the page's project.
    fn entry_url(&self, project: &ProjectName, file: &FileEntry) -> String {
        self.file_url(project, &file.key(), &file.filename)
    }

    /// The link for a part of one entry: `<entry url>.provenance` and the like.
    fn part_url(&self, project: &ProjectName, file: &FileEntry, part: FilePart) -> String {
        let mut url = self.entry_url(project, file);
        url.push_str(part.suffix());
        url
    }

    /// Our link for the entry's provenance, when the upstream offers one.
    fn provenance_url(&self, project: &ProjectName, file: &FileEntry) -> Option<String> {
        file.provenance
            .as_ref()
            .map(|_| self.part_url(project, file, FilePart::Provenance))
    }
}

fn push_repo_files(prefix: &mut String, repo: &str) {
    prefix.extend(utf8_percent_encode(repo, SEGMENT));
    prefix.push_str("/files/");
}

fn push_attr(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    html_escape::encode_double_quoted_attribute_to_string(value, out);
    out.push('"');
}

fn metadata_attribute(metadata: &CoreMetadata) -> Option<String> {
    match metadata {
        CoreMetadata::Absent => None,
        CoreMetadata::Present { sha256: None } => Some("true".to_owned()),
        CoreMetadata::Present {
            sha256: Some(digest),
        } => Some(format!("sha256={digest}")),
    }
}

fn html_head(out: &mut String, title: &str, api_version: &str, status: Option<&ProjectStatus>) {
    out.push_str("<!DOCTYPE html>\n<html>\n  <head>\n    <meta charset=\"utf-8\">\n");
    out.push_str("    <meta name=\"pypi:repository-version\" content=\"");
    out.push_str(api_version);
    out.push_str("\">\n");
    if let Some(status) = status.filter(|s| !s.is_default()) {
        html_meta(out, "pypi:project-status", status.marker.as_str());
        if let Some(reason) = &status.reason {
            html_meta(out, "pypi:project-status-reason", reason);
        }
    }
    out.push_str("    <title>");
    html_escape::encode_text_to_string(title, out);
    out.push_str("</title>\n  </head>\n  <body>\n");
}

fn html_meta(out: &mut String, name: &str, content: &str) {
    out.push_str("    <meta");
    push_attr(out, "name", name);
    push_attr(out, "content", content);
    out.push_str(">\n");
}

const HTML_TAIL: &str = "  </body>\n</html>\n";

/// The PEP 503 HTML page for a project (served as `text/html` or
/// `application/vnd.pypi.simple.v1+html`).
pub fn render_project_html(page: &ProjectPage, links: &Links) -> String {
    let title = format!("Links for {}", page.name);
    let mut out = String::with_capacity(256 + page.files.len() * 320);
    html_head(
        &mut out,
        &title,
        project_api_version(page),
        Some(&page.status),
    );
    out.push_str("    <h1>");
    html_escape::encode_text_to_string(&title, &mut out);
    out.push_str("</h1>\n");
    for file in &page.files {
        let mut href = links.entry_url(&page.name, file);
        if let Some(digest) = file.sha256 {
            href.push_str("#sha256=");
            href.push_str(&digest.to_hex());
        }
        out.push_str("    <a");
        push_attr(&mut out, "href", &href);
        if let Some(requires_python) = &file.requires_python {
            push_attr(&mut out, "data-requires-python", requires_python);
        }
        if let Yanked::Yes { reason } = &file.yanked {
            push_attr(
                &mut out,
                "data-yanked",
                reason.as_deref().unwrap_or_default(),
            );
        }
        if let Some(value) = metadata_attribute(&file.core_metadata) {
            // Both names, for clients from before and after PEP 714.
            push_attr(&mut out, "data-dist-info-metadata", &value);
            push_attr(&mut out, "data-core-metadata", &value);
        }
        if let Some(provenance) = links.provenance_url(&page.name, file) {
            push_attr(&mut out, "data-provenance", &provenance);
        }
        out.push('>');
        html_escape::encode_text_to_string(file.filename.as_str(), &mut out);
        out.push_str("</a><br />\n");
    }
    out.push_str(HTML_TAIL);
    out
}

#[derive(Serialize)]
struct JsonMeta {
    #[serde(rename = "api-version")]
    api_version: &'static str,
}

const META: JsonMeta = JsonMeta {
    api_version: API_VERSION,
};

#[derive(Serialize)]
struct JsonProjectPage<'a> {
    meta: JsonMeta,
    name: &'a str,
    #[serde(rename = "project-status", skip_serializing_if = "Option::is_none")]
    project_status: Option<JsonStatus<'a>>,
    files: Vec<JsonFile<'a>>,
    versions: &'a [String],
}

/// PEP 792 `project-status`.
#[derive(Serialize)]
struct JsonStatus<'a> {
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonFile<'a> {
    filename: &'a str,
    url: String,
    hashes: BTreeMap<&'a str, Cow<'a, str>>,
    #[serde(rename = "requires-python", skip_serializing_if = "Option::is_none")]
    requires_python: Option<&'a str>,
    yanked: JsonYanked<'a>,
    #[serde(rename = "core-metadata")]
    core_metadata: JsonMetadata,
    #[serde(rename = "dist-info-metadata")]
    dist_info_metadata: JsonMetadata,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(rename = "upload-time", skip_serializing_if = "Option::is_none")]
    upload_time: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provenance: Option<String>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum JsonYanked<'a> {
    Flag(bool),
    Reason(&'a str),
}

#[derive(Serialize, Clone)]
#[serde(untagged)]
enum JsonMetadata {
    Flag(bool),
    Hashes { sha256: String },
}

impl JsonMetadata {
    fn of(metadata: &CoreMetadata) -> JsonMetadata {
        match metadata {
            CoreMetadata::Absent => JsonMetadata::Flag(false),
            CoreMetadata::Present { sha256: None } => JsonMetadata::Flag(true),
            CoreMetadata::Present {
                sha256: Some(digest),
            } => JsonMetadata::Hashes {
                sha256: digest.to_hex(),
            },
        }
    }
}

fn json_hashes<'a>(
    sha256: Option<&Sha256Digest>,
    other: &'a [(String, String)],
) -> BTreeMap<&'a str, Cow<'a, str>> {
    let mut hashes: BTreeMap<&str, Cow<str>> = other
        .iter()
        .map(|(algorithm, value)| (algorithm.as_str(), Cow::Borrowed(value.as_str())))
        .collect();
    if let Some(digest) = sha256 {
        hashes.insert("sha256", Cow::Owned(digest.to_hex()));
    }
    hashes
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    // These structs hold only strings, numbers, booleans and string-keyed maps, which serde_json
    // always serialises; an error here would be a bug in this file, not bad input.
    serde_json::to_vec(value).expect("serialising string-keyed page structs cannot fail")
}

/// The PEP 691 JSON page for a project (API version 1.1, with PEP 700 fields; 1.3 or 1.4 when it
/// carries PEP 740 provenance or a PEP 792 status).
pub fn render_project_json(page: &ProjectPage, links: &Links) -> Vec<u8> {
    let files = page
        .files
        .iter()
        .map(|file| {
            let metadata = JsonMetadata::of(&file.core_metadata);
            JsonFile {
                filename: file.filename.as_str(),
                url: links.entry_url(&page.name, file),
                hashes: json_hashes(file.sha256.as_ref(), &file.other_hashes),
                requires_python: file.requires_python.as_deref(),
                yanked: match &file.yanked {
                    Yanked::No => JsonYanked::Flag(false),
                    Yanked::Yes { reason: None } => JsonYanked::Flag(true),
                    Yanked::Yes {
                        reason: Some(reason),
                    } => JsonYanked::Reason(reason),
                },
                dist_info_metadata: metadata.clone(),
                core_metadata: metadata,
                size: file.size,
                upload_time: file.upload_time.as_deref(),
                provenance: links.provenance_url(&page.name, file),
            }
        })
        .collect();
    let status = &page.status;
    to_json(&JsonProjectPage {
        meta: JsonMeta {
            api_version: project_api_version(page),
        },
        name: page.name.as_str(),
        project_status: (!status.is_default()).then(|| JsonStatus {
            status: status.marker.as_str(),
            reason: status.reason.as_deref(),
        }),
        files,
        versions: &page.versions,
    })
}

/// The PEP 503 HTML project list. Links are `<up_prefix><name>/`, relative to the list's own URL
/// (so `up_prefix` is normally empty).
pub fn render_index_html(index: &ProjectIndex, up_prefix: &str) -> String {
    let mut out = String::with_capacity(256 + index.projects.len() * 64);
    html_head(&mut out, "Simple index", API_VERSION, None);
    for name in &index.projects {
        out.push_str("    <a");
        push_attr(&mut out, "href", &format!("{up_prefix}{name}/"));
        out.push('>');
        // Normalised names need no escaping; encoding anyway keeps this safe if that changes.
        html_escape::encode_text_to_string(name.as_str(), &mut out);
        out.push_str("</a><br />\n");
    }
    out.push_str(HTML_TAIL);
    out
}

#[derive(Serialize)]
struct JsonIndex<'a> {
    meta: JsonMeta,
    projects: Vec<JsonIndexProject<'a>>,
}

#[derive(Serialize)]
struct JsonIndexProject<'a> {
    name: &'a str,
}

/// The PEP 691 JSON project list.
pub fn render_index_json(index: &ProjectIndex) -> Vec<u8> {
    to_json(&JsonIndex {
        meta: META,
        projects: index
            .projects
            .iter()
            .map(|name| JsonIndexProject {
                name: name.as_str(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simple::page::{
        parse_index_html, parse_index_json, parse_project_html, parse_project_json, StatusMarker,
    };

    const HEX_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const HEX_B: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn name(s: &str) -> ProjectName {
        ProjectName::parse(s).unwrap()
    }

    fn digest(hex: &str) -> Sha256Digest {
        Sha256Digest::parse_hex(hex).unwrap()
    }

    fn entry(filename: &str, upstream: &str) -> FileEntry {
        FileEntry {
            filename: DistFilename::parse(filename).unwrap(),
            url: Url::parse(upstream).unwrap(),
            sha256: None,
            other_hashes: Vec::new(),
            requires_python: None,
            yanked: Yanked::No,
            core_metadata: CoreMetadata::Absent,
            size: None,
            upload_time: None,
            provenance: None,
            origin: None,
        }
    }

    /// A page with every field a resolver reads; file `a` has provenance, the project a status.
    fn sample_page() -> ProjectPage {
        let mut a = entry(
            "foo-1.0-py3-none-any.whl",
            "https://files.example.invalid/a/foo-1.0-py3-none-any.whl",
        );
        a.sha256 = Some(digest(HEX_A));
        a.other_hashes = vec![("md5".into(), "abcdef".into())];
        a.requires_python = Some(">=3.8, <4 & \"quoted\"".into());
        a.yanked = Yanked::Yes {
            reason: Some("broken <b>build</b> & \"more\"".into()),
        };
        a.core_metadata = CoreMetadata::Present {
            sha256: Some(digest(HEX_B)),
        };
        a.size = Some(42);
        a.upload_time = Some("2024-01-02T03:04:05.5Z".into());
        a.provenance = Some(
            Url::parse("https://index.example.invalid/integrity/foo/1.0/a/provenance").unwrap(),
        );

        let mut b = entry(
            "foo-1.0+cpu.tar.gz",
            "https://files.example.invalid/b/foo-1.0+cpu.tar.gz",
        );
        b.yanked = Yanked::Yes { reason: None };
        b.core_metadata = CoreMetadata::Present { sha256: None };

        let c = entry(
            "Foo 2.0 (win) é#?.exe",
            "https://files.example.invalid/c/foo.exe",
        );
        ProjectPage {
            name: name("foo"),
            files: vec![a, b, c],
            versions: vec!["1.0".into(), "1.0+cpu".into()],
            status: ProjectStatus {
                marker: StatusMarker::Archived,
                reason: Some("moved to <b>bar</b> & \"baz\"".into()),
            },
            dropped: 0,
        }
    }

    /// The sample page without PEP 740 and PEP 792 content.
    fn plain_page() -> ProjectPage {
        let mut page = sample_page();
        page.status = ProjectStatus::default();
        for file in &mut page.files {
            file.provenance = None;
        }
        page
    }

    /// What a page looks like after a trip through our rendering: the same files, now at our URLs.
    fn expected_after_round_trip(
        page: &ProjectPage,
        links: &Links,
        served_at: &Url,
    ) -> Vec<FileEntry> {
        page.files
            .iter()
            .map(|f| {
                let mut f = f.clone();
                f.url = served_at.join(&links.entry_url(&page.name, &f)).unwrap();
                f.provenance = links
                    .provenance_url(&page.name, &f)
                    .map(|url| served_at.join(&url).unwrap());
                f
            })
            .collect()
    }

    #[test]
    fn file_urls() {
        let key = FileKey::Sha256(digest(HEX_A));
        let f = DistFilename::parse("foo-1.0+cpu-py3-none-any.whl").unwrap();
        assert_eq!(
            Links::relative(2, "pypi").file_url(&name("foo"), &key, &f),
            format!("../../pypi/files/foo/{HEX_A}/foo-1.0+cpu-py3-none-any.whl")
        );
        let public = Url::parse("https://pypi.example.invalid/proxy").unwrap();
        let odd = DistFilename::parse("a b#c?d%e.zip").unwrap();
        assert_eq!(
            Links::absolute(&public, "all").file_url(&name("foo"), &FileKey::Url(digest(HEX_B)), &odd),
            format!("https://pypi.example.invalid/proxy/all/files/foo/url-{HEX_B}/a%20b%23c%3Fd%25e.zip")
        );
    }

    #[test]
    fn json_round_trip() {
        let page = sample_page();
        let links = Links::relative(3, "pypi");
        let served_at = Url::parse("http://127.0.0.1:3141/pypi/simple/foo/").unwrap();
        let body = render_project_json(&page, &links);
        let parsed = parse_project_json(&body, &served_at, &page.name).unwrap();
        assert_eq!(parsed.dropped, 0);
        assert_eq!(parsed.versions, page.versions);
        assert_eq!(parsed.status, page.status);
        assert_eq!(
            parsed.files,
            expected_after_round_trip(&page, &links, &served_at)
        );
        assert_eq!(
            parsed.files[0].provenance.as_ref().map(Url::as_str),
            Some(format!("http://127.0.0.1:3141/pypi/files/foo/{HEX_A}/foo-1.0-py3-none-any.whl.provenance").as_str())
        );
        assert!(parsed.files[0]
            .url
            .as_str()
            .starts_with(&format!("http://127.0.0.1:3141/pypi/files/foo/{HEX_A}/")));
        assert!(parsed.files[2].url.as_str().contains("/url-"));
    }

    #[test]
    fn json_shape() {
        let page = sample_page();
        let body = render_project_json(&page, &Links::relative(2, "pypi"));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["meta"]["api-version"], "1.4");
        assert_eq!(v["name"], "foo");
        assert_eq!(
            v["project-status"],
            serde_json::json!({"status": "archived", "reason": "moved to <b>bar</b> & \"baz\""})
        );
        let a = &v["files"][0];
        assert_eq!(a["hashes"]["sha256"], HEX_A);
        assert_eq!(a["hashes"]["md5"], "abcdef");
        assert_eq!(a["yanked"], "broken <b>build</b> & \"more\"");
        assert_eq!(a["core-metadata"]["sha256"], HEX_B);
        assert_eq!(a["dist-info-metadata"], a["core-metadata"]);
        assert_eq!(a["size"], 42);
        assert_eq!(a["upload-time"], "2024-01-02T03:04:05.5Z");
        assert_eq!(
            a["provenance"],
            format!("../../pypi/files/foo/{HEX_A}/foo-1.0-py3-none-any.whl.provenance")
        );
        let b = &v["files"][1];
        assert!(b.get("provenance").is_none());
        assert_eq!(b["yanked"], true);
        assert_eq!(b["core-metadata"], true);
        assert!(b.get("size").is_none() && b.get("upload-time").is_none());
        assert!(b.get("requires-python").is_none());
        assert_eq!(b["hashes"], serde_json::json!({}));
        let c = &v["files"][2];
        assert_eq!(c["yanked"], false);
        assert_eq!(c["core-metadata"], false);
        assert_eq!(v["versions"], serde_json::json!(["1.0", "1.0+cpu"]));
    }

    #[test]
    fn html_round_trip() {
        let page = sample_page();
        let links = Links::relative(2, "pypi");
        let served_at = Url::parse("http://127.0.0.1:3141/simple/foo/").unwrap();
        let body = render_project_html(&page, &links);
        let parsed = parse_project_html(body.as_bytes(), &served_at, &page.name).unwrap();
        assert_eq!(parsed.dropped, 0);
        // HTML carries only the sha256 and none of the PEP 700 fields.
        let expected: Vec<FileEntry> = expected_after_round_trip(&page, &links, &served_at)
            .into_iter()
            .map(|mut f| {
                f.other_hashes.clear();
                f.size = None;
                f.upload_time = None;
                f
            })
            .collect();
        assert_eq!(parsed.files, expected);
        assert_eq!(parsed.versions, page.versions);
        assert_eq!(parsed.status, page.status);
    }

    #[test]
    fn html_shape() {
        let page = sample_page();
        let html = render_project_html(&page, &Links::relative(2, "pypi"));
        assert!(html.contains(r#"<meta name="pypi:repository-version" content="1.4">"#));
        assert!(html.contains(r#"<meta name="pypi:project-status" content="archived">"#));
        assert!(html.contains(
            r#"<meta name="pypi:project-status-reason" content="moved to &lt;b&gt;bar&lt;/b&gt; &amp; &quot;baz&quot;">"#
        ));
        assert!(html.contains(&format!(
            r#"data-provenance="../../pypi/files/foo/{HEX_A}/foo-1.0-py3-none-any.whl.provenance""#
        )));
        assert_eq!(html.matches("data-provenance").count(), 1);
        assert!(html.contains(&format!(
            r#"href="../../pypi/files/foo/{HEX_A}/foo-1.0-py3-none-any.whl#sha256={HEX_A}""#
        )));
        assert!(html.contains(r#"data-requires-python="&gt;=3.8, &lt;4 &amp; &quot;quoted&quot;""#));
        assert!(html.contains(&format!(r#"data-dist-info-metadata="sha256={HEX_B}""#)));
        assert!(html.contains(&format!(r#"data-core-metadata="sha256={HEX_B}""#)));
        assert!(html.contains(
            r#"data-yanked="" data-dist-info-metadata="true" data-core-metadata="true""#
        ));
        assert!(html.contains(">Foo 2.0 (win) é#?.exe</a>"));
        assert!(
            !html.contains("<b>"),
            "yank and status reasons must be escaped"
        );
        assert_eq!(
            html,
            render_project_html(&page, &Links::relative(2, "pypi")),
            "deterministic"
        );
    }

    #[test]
    fn api_version_is_the_lowest_that_covers_the_page() {
        let version = |page: &ProjectPage| {
            let links = Links::relative(2, "pypi");
            let json: serde_json::Value =
                serde_json::from_slice(&render_project_json(page, &links)).unwrap();
            let html = render_project_html(page, &links);
            let declared = json["meta"]["api-version"].as_str().unwrap().to_owned();
            assert!(
                html.contains(&format!(
                    r#"<meta name="pypi:repository-version" content="{declared}">"#
                )),
                "both formats declare {declared}"
            );
            declared
        };
        let plain = plain_page();
        assert_eq!(version(&plain), "1.1");
        let html = render_project_html(&plain, &Links::relative(2, "pypi"));
        assert!(!html.contains("pypi:project-status") && !html.contains("data-provenance"));
        let json = render_project_json(&plain, &Links::relative(2, "pypi"));
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert!(v.get("project-status").is_none());
        assert!(v["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f.get("provenance").is_none()));

        let mut attested = plain_page();
        attested.files[1].provenance = Some(Url::parse("https://index.example.invalid/p").unwrap());
        assert_eq!(version(&attested), "1.3");

        let mut deprecated = plain_page();
        deprecated.status.marker = StatusMarker::Deprecated;
        assert_eq!(version(&deprecated), "1.4");
        let mut explained = plain_page();
        explained.status.reason = Some("still maintained".into());
        assert_eq!(version(&explained), "1.4");
        assert_eq!(version(&sample_page()), "1.4");
    }

    #[test]
    fn absolute_links_give_absolute_provenance_urls() {
        let public = Url::parse("https://pypi.example.invalid/").unwrap();
        let body = render_project_json(&sample_page(), &Links::absolute(&public, "pypi"));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["files"][0]["provenance"],
            format!("https://pypi.example.invalid/pypi/files/foo/{HEX_A}/foo-1.0-py3-none-any.whl.provenance")
        );
    }

    #[test]
    fn index_round_trip() {
        let index = ProjectIndex {
            projects: vec![name("a-b"), name("foo"), name("zope-interface")],
        };
        let html = render_index_html(&index, "");
        assert!(html.contains(r#"<a href="foo/">foo</a>"#));
        assert_eq!(parse_index_html(html.as_bytes()).unwrap(), index);
        let json = render_index_json(&index);
        assert_eq!(parse_index_json(&json).unwrap(), index);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["meta"]["api-version"], "1.1");
        assert_eq!(v["projects"][1]["name"], "foo");
        assert!(render_index_html(&index, "../simple/").contains(r#"href="../simple/a-b/""#));
    }
}
