//! Reading PEP 503 HTML pages, with the PEP 592, 658, 714 and 740 attributes and the PEP 792 meta
//! tags.
//!
//! Index HTML in the wild is sloppy, so a page is not built into a document: its anchors are read
//! off the token stream of our own `tokenizer`. On a project page each `<a href>` is a file, named
//! by its URL as pip and uv name it and resolved against the page's first `<base href>`, and the
//! first `pypi:project-status` and `pypi:project-status-reason` meta tags, wherever they sit, give
//! the project's status; on the project list each anchor's text is a project name.

mod tokenizer;

use std::borrow::Cow;

use url::Url;

use super::hashes::{is_hash_name, is_hex_value, Hashes};
use super::link::{resolve_file_url, split_fragment};
use super::{
    check_size, versions_from_files, CoreMetadata, FileEntry, PageError, PageKind, PageLocation,
    ProjectIndex, ProjectPage, ProjectStatus, Yanked, MAX_FILES,
};
use crate::simple::digest::Sha256Digest;
use crate::simple::filename::DistFilename;
use crate::simple::name::ProjectName;
use tokenizer::{StartTag, Token, Tokenizer};

fn html_text<'a>(body: &'a [u8], kind: PageKind, at: &PageLocation) -> Result<&'a str, PageError> {
    check_size(body, kind, at)?;
    std::str::from_utf8(body).map_err(|e| PageError::NotUtf8 {
        kind,
        at: at.clone(),
        offset: e.valid_up_to(),
    })
}

/// Parses a PEP 503 HTML project page. Relative links are resolved against the page's
/// `<base href>` if it has one, else against `page_url`.
pub fn parse_project_html(
    body: &[u8],
    page_url: &Url,
    expected: &ProjectName,
) -> Result<ProjectPage, PageError> {
    let kind = PageKind::ProjectPage;
    let at = PageLocation::of(page_url);
    let text = html_text(body, kind, &at)?;

    let head = Head::read(text);
    // Browsers use the first `<base href>` for the whole document, wherever it sits, so it is
    // found before any link is resolved.
    let base = head.base.and_then(|href| page_url.join(href.trim()).ok());
    let base = base.as_ref().unwrap_or(page_url);

    let mut files = Vec::new();
    let mut dropped = 0;
    for token in Tokenizer::new(text) {
        let Token::Start(tag) = token else {
            continue;
        };
        if !tag.is("a") {
            continue;
        }
        let Some(Some(href)) = tag.attribute("href") else {
            continue;
        };
        if files.len() + dropped >= MAX_FILES {
            return Err(PageError::TooManyFiles {
                project: expected.clone(),
                at,
                limit: MAX_FILES,
            });
        }
        match html_file(&tag, base, &href) {
            Some(entry) => files.push(entry),
            None => dropped += 1,
        }
    }
    let versions = versions_from_files(&files);
    Ok(ProjectPage {
        name: expected.clone(),
        files,
        versions,
        status: ProjectStatus::from_page(head.status.as_deref(), head.status_reason.as_deref()),
        dropped,
    })
}

/// What a project page says about itself rather than about one file: the first of each.
#[derive(Default)]
struct Head<'a> {
    base: Option<Cow<'a, str>>,
    status: Option<Cow<'a, str>>,
    status_reason: Option<Cow<'a, str>>,
}

impl<'a> Head<'a> {
    fn read(text: &'a str) -> Head<'a> {
        let mut head = Head::default();
        for token in Tokenizer::new(text) {
            let Token::Start(tag) = token else {
                continue;
            };
            if tag.is("base") {
                if head.base.is_none() {
                    head.base = tag.attribute("href").flatten();
                }
            } else if tag.is("meta") {
                let name = tag.attribute("name").flatten();
                let slot = match name.as_deref().map(str::trim) {
                    Some(n) if n.eq_ignore_ascii_case("pypi:project-status") => &mut head.status,
                    Some(n) if n.eq_ignore_ascii_case("pypi:project-status-reason") => {
                        &mut head.status_reason
                    }
                    _ => continue,
                };
                if slot.is_none() {
                    *slot = tag.attribute("content").flatten();
                }
            }
        }
        head
    }
}

fn html_file(tag: &StartTag<'_>, base: &Url, href: &str) -> Option<FileEntry> {
    let (url, fragment) = resolve_file_url(base, href)?;
    // pip and uv take the filename from the URL, not the anchor text, so we do too.
    let last_segment = url.path_segments()?.next_back()?;
    let decoded = percent_encoding::percent_decode_str(last_segment)
        .decode_utf8()
        .ok()?;
    let filename = DistFilename::parse(&decoded).ok()?;

    let mut hashes = Hashes::default();
    if let Some((algorithm, value)) = fragment.as_deref().and_then(split_fragment) {
        hashes.add(&algorithm, value).ok()?;
    }
    let requires_python = tag
        .attribute("data-requires-python")
        .flatten()
        .filter(|s| !s.is_empty())
        .map(Cow::into_owned);
    let yanked = match tag.attribute("data-yanked") {
        None => Yanked::No,
        Some(reason) => Yanked::with_reason(reason.as_deref().unwrap_or_default()),
    };
    // PEP 714: `data-core-metadata` is authoritative when present.
    let core_metadata = tag
        .attribute("data-core-metadata")
        .or_else(|| tag.attribute("data-dist-info-metadata"))
        .map_or(CoreMetadata::Absent, |value| {
            metadata_from_attribute(value.as_deref().unwrap_or_default())
        });
    // PEP 740; a link that cannot be used leaves the file without provenance.
    let provenance = tag
        .attribute("data-provenance")
        .flatten()
        .and_then(|href| resolve_file_url(base, &href))
        .map(|(url, _)| url);
    let (sha256, other_hashes) = hashes.finish();
    Some(FileEntry {
        filename,
        url,
        sha256,
        other_hashes,
        requires_python,
        yanked,
        core_metadata,
        size: None,
        upload_time: None,
        provenance,
        origin: None,
    })
}

/// PEP 658 attribute values: `true`, or `<algorithm>=<hex>`. Anything unreadable counts as
/// absent, so clients fall back to the artifact instead of fetching metadata that may not exist.
fn metadata_from_attribute(value: &str) -> CoreMetadata {
    let value = value.trim();
    if value.eq_ignore_ascii_case("true") {
        return CoreMetadata::Present { sha256: None };
    }
    let Some((algorithm, hex)) = value.split_once('=') else {
        return CoreMetadata::Absent;
    };
    if algorithm.trim().eq_ignore_ascii_case("sha256") {
        match Sha256Digest::parse_hex(hex.trim()) {
            Ok(digest) => CoreMetadata::Present {
                sha256: Some(digest),
            },
            Err(_) => CoreMetadata::Absent,
        }
    } else if is_hash_name(algorithm.trim()) && is_hex_value(hex.trim()) {
        CoreMetadata::Present { sha256: None }
    } else {
        CoreMetadata::Absent
    }
}

/// Parses a PEP 503 HTML project list: the text of each anchor is a project name; anchors whose
/// text is not a valid name are skipped.
pub fn parse_index_html(body: &[u8]) -> Result<ProjectIndex, PageError> {
    let kind = PageKind::ProjectList;
    let at = PageLocation::default();
    let text = html_text(body, kind, &at)?;
    let mut projects = Vec::new();
    // The text of the anchor being read, in one buffer reused for every anchor. An anchor ends at
    // `</a>`, at the next `<a>` (anchors cannot nest) or at the end of the page.
    let mut anchor_text = String::new();
    let mut in_anchor = false;
    fn finish_anchor(anchor_text: &mut String, projects: &mut Vec<ProjectName>) {
        let decoded = html_escape::decode_html_entities(anchor_text.trim());
        projects.extend(ProjectName::parse(decoded.trim()).ok());
        anchor_text.clear();
    }
    for token in Tokenizer::new(text) {
        match token {
            Token::Start(tag) if tag.is("a") => {
                if in_anchor {
                    finish_anchor(&mut anchor_text, &mut projects);
                }
                in_anchor = true;
            }
            Token::End(name) if in_anchor && name.eq_ignore_ascii_case("a") => {
                finish_anchor(&mut anchor_text, &mut projects);
                in_anchor = false;
            }
            Token::Text(text) if in_anchor => anchor_text.push_str(text),
            _ => {}
        }
    }
    if in_anchor {
        finish_anchor(&mut anchor_text, &mut projects);
    }
    Ok(ProjectIndex::from_unsorted(projects))
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::simple::page::testing::*;
    use crate::simple::page::StatusMarker;

    #[test]
    fn html_project_page() {
        let body = format!(
            r#"<!DOCTYPE html>
<html><head><meta name="pypi:repository-version" content="1.1"><title>Links for foo</title></head>
<body>
<h1>Links for foo</h1>
<a href="../../packages/foo-1.0-py3-none-any.whl#sha256={upper}" data-requires-python="&gt;=3.8&amp;&lt;4" data-core-metadata="sha256={HEX_B}" data-dist-info-metadata="true">foo-1.0-py3-none-any.whl</a><br/>
<A HREF='https://files.example.invalid/foo-1.1.tar.gz#md5=ABC123' DATA-YANKED="bad &quot;release&quot;">foo-1.1.tar.gz</A>
<a href="/other/foo-1.2.tar.gz" data-yanked data-dist-info-metadata="sha256={HEX_A}">foo-1.2.tar.gz</a>
<a href="foo-1.3.tar.gz" data-yanked="" data-core-metadata="garbage" data-dist-info-metadata="true">x</a>
<a href="javascript:alert(1)">foo-9.tar.gz</a>
<a href="data:text/plain,foo-9.tar.gz">foo-9.tar.gz</a>
<a href="https://files.example.invalid/%2E%2E%2Fetc.whl">evil</a>
<a href="https://files.example.invalid/bar-1.0.tar.gz#sha256=short">bar</a>
<a name="anchor-without-href">nothing</a>
<a href="https://files.example.invalid/foo-1.4%2Blocal.tar.gz">plus</a>
</body></html>"#,
            upper = HEX_A.to_ascii_uppercase()
        );
        let page = parse_project_html(body.as_bytes(), &page_url(), &foo()).unwrap();
        let names: Vec<&str> = page.files.iter().map(|f| f.filename.as_str()).collect();
        assert_eq!(
            names,
            [
                "foo-1.0-py3-none-any.whl",
                "foo-1.1.tar.gz",
                "foo-1.2.tar.gz",
                "foo-1.3.tar.gz",
                "foo-1.4+local.tar.gz"
            ]
        );
        assert_eq!(page.dropped, 4);
        assert_eq!(page.versions, ["1.0", "1.1", "1.2", "1.3", "1.4+local"]);

        let f = &page.files[0];
        assert_eq!(
            f.url.as_str(),
            "https://index.example.invalid/packages/foo-1.0-py3-none-any.whl"
        );
        assert_eq!(f.sha256, Some(digest(HEX_A)));
        assert_eq!(f.requires_python.as_deref(), Some(">=3.8&<4"));
        assert_eq!(f.yanked, Yanked::No);
        assert_eq!(
            f.core_metadata,
            CoreMetadata::Present {
                sha256: Some(digest(HEX_B))
            }
        );

        let f = &page.files[1];
        assert_eq!(
            f.url.as_str(),
            "https://files.example.invalid/foo-1.1.tar.gz"
        );
        assert_eq!(f.sha256, None);
        assert_eq!(f.other_hashes, [("md5".to_owned(), "abc123".to_owned())]);
        assert_eq!(
            f.yanked,
            Yanked::Yes {
                reason: Some("bad \"release\"".into())
            }
        );
        assert_eq!(f.core_metadata, CoreMetadata::Absent);

        let f = &page.files[2];
        assert_eq!(
            f.url.as_str(),
            "https://index.example.invalid/other/foo-1.2.tar.gz"
        );
        assert_eq!(f.yanked, Yanked::Yes { reason: None });
        assert_eq!(
            f.core_metadata,
            CoreMetadata::Present {
                sha256: Some(digest(HEX_A))
            }
        );

        let f = &page.files[3];
        assert_eq!(
            f.url.as_str(),
            "https://index.example.invalid/simple/foo/foo-1.3.tar.gz"
        );
        assert_eq!(f.yanked, Yanked::Yes { reason: None });
        assert_eq!(
            f.core_metadata,
            CoreMetadata::Absent,
            "an unreadable data-core-metadata still takes precedence"
        );
    }

    #[test]
    fn html_provenance_and_project_status() {
        let body = br#"<!DOCTYPE html><html><head>
            <meta name="pypi:repository-version" content="1.4">
            <META NAME="pypi:project-status" CONTENT="Quarantined">
            <meta name="pypi:project-status-reason" content="malware &amp; worse">
            <meta name="pypi:project-status" content="active">
            <base href="https://mirror.example.invalid/root/">
            </head><body>
            <a href="foo-1.0.tar.gz" data-provenance="foo-1.0.tar.gz.provenance">a</a>
            <a href="foo-1.1.tar.gz" data-provenance="https://index.example.invalid/integrity/foo/1.1/foo-1.1.tar.gz/provenance">b</a>
            <a href="foo-1.2.tar.gz" data-provenance="javascript:alert(1)">c</a>
            <a href="foo-1.3.tar.gz" data-provenance>d</a>
            <a href="foo-1.4.tar.gz">e</a>
            </body></html>"#;
        let page = parse_project_html(body, &page_url(), &foo()).unwrap();
        assert_eq!(page.dropped, 0);
        assert_eq!(
            provenance_urls(&page),
            [
                // Relative links resolve like file links, against <base href>.
                Some("https://mirror.example.invalid/root/foo-1.0.tar.gz.provenance"),
                Some("https://index.example.invalid/integrity/foo/1.1/foo-1.1.tar.gz/provenance"),
                None,
                None,
                None
            ]
        );
        // The first status tag wins, wherever it sits; its reason is entity-decoded.
        assert_eq!(page.status.marker, StatusMarker::Quarantined);
        assert_eq!(page.status.reason.as_deref(), Some("malware & worse"));

        let plain =
            parse_project_html(b"<a href=\"foo-1.0.tar.gz\">x</a>", &page_url(), &foo()).unwrap();
        assert!(plain.status.is_default());
        let in_body = br#"<body><meta name="pypi:project-status" content="archived"></body>"#;
        let page = parse_project_html(in_body, &page_url(), &foo()).unwrap();
        assert_eq!(page.status.marker, StatusMarker::Archived);
        let odd =
            br#"<meta name="pypi:project-status" content="<b>"><meta name="pypi:project-status">"#;
        assert!(parse_project_html(odd, &page_url(), &foo())
            .unwrap()
            .status
            .is_default());
    }

    #[test]
    fn html_base_href() {
        let body = br#"<html><head><base href="https://mirror.example.invalid/root/"></head>
            <body><a href="pkgs/foo-1.0.tar.gz">foo-1.0.tar.gz</a>
            <a href="//cdn.example.invalid/foo-1.1.tar.gz">foo-1.1.tar.gz</a></body></html>"#;
        let page = parse_project_html(body, &page_url(), &foo()).unwrap();
        assert_eq!(
            page.files[0].url.as_str(),
            "https://mirror.example.invalid/root/pkgs/foo-1.0.tar.gz"
        );
        assert_eq!(
            page.files[1].url.as_str(),
            "https://cdn.example.invalid/foo-1.1.tar.gz"
        );
        // A relative <base href> is itself resolved against the page.
        let body = br#"<base href="../../mirror/"><a href="foo-1.0.tar.gz">x</a>"#;
        let page = parse_project_html(body, &page_url(), &foo()).unwrap();
        assert_eq!(
            page.files[0].url.as_str(),
            "https://index.example.invalid/mirror/foo-1.0.tar.gz"
        );
    }

    #[test]
    fn html_not_utf8_is_an_error() {
        let err = parse_project_html(b"<a href=\"x\xff.whl\">", &page_url(), &foo()).unwrap_err();
        assert!(
            matches!(err, PageError::NotUtf8 { offset: 10, .. }),
            "{err}"
        );
    }

    #[test]
    fn html_odd_structure() {
        let body = br#"<a href="foo-1.0.tar.gz"><a href="foo-1.1.tar.gz"></div></div></a><p><a
            href = "foo-1.2.tar.gz" >x"#;
        let page = parse_project_html(body, &page_url(), &foo()).unwrap();
        assert_eq!(page.files.len(), 3);
        let empty = parse_project_html(b"", &page_url(), &foo()).unwrap();
        assert!(empty.files.is_empty());
    }

    /// Random HTML-ish token soup and random bytes must give a page or an error, never a panic.
    #[test]
    fn html_garbage_never_panics() {
        let tokens: [&str; 28] = [
            "<",
            ">",
            "</",
            "/>",
            "<a ",
            "</a>",
            "href=",
            "\"",
            "'",
            "=",
            "#sha256=",
            HEX_A,
            "data-yanked",
            "data-core-metadata=",
            "<base href=",
            " data-provenance=",
            "<meta name=\"pypi:project-status\" content=",
            "&amp;",
            "&#x",
            "&",
            ";",
            "foo-1.0.tar.gz",
            "../",
            "javascript:",
            "<!--",
            "-->",
            "é",
            "<script>",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(503);
        for round in 0..2000 {
            let body: Vec<u8> = if round % 4 == 0 {
                (0..rng.gen_range(0..256)).map(|_| rng.gen()).collect()
            } else {
                let mut s = String::new();
                for _ in 0..rng.gen_range(0..64) {
                    s.push_str(tokens[rng.gen_range(0..tokens.len())]);
                    if rng.gen_bool(0.2) {
                        s.push(char::from(rng.gen_range(0x20u8..0x7f)));
                    }
                }
                s.into_bytes()
            };
            let _ = parse_project_html(&body, &page_url(), &foo());
            let _ = parse_index_html(&body);
        }
    }

    #[test]
    fn too_many_files() {
        let one = "<a href=\"f-1.0.tar.gz\"></a>";
        let body = one.repeat(MAX_FILES + 1);
        let err = parse_project_html(body.as_bytes(), &page_url(), &foo()).unwrap_err();
        assert!(matches!(err, PageError::TooManyFiles { .. }), "{err}");
        let body = one.repeat(MAX_FILES);
        assert_eq!(
            parse_project_html(body.as_bytes(), &page_url(), &foo())
                .unwrap()
                .files
                .len(),
            MAX_FILES
        );
    }

    #[test]
    fn metadata_attribute_values() {
        assert_eq!(
            metadata_from_attribute("true"),
            CoreMetadata::Present { sha256: None }
        );
        assert_eq!(metadata_from_attribute("false"), CoreMetadata::Absent);
        assert_eq!(metadata_from_attribute(""), CoreMetadata::Absent);
        assert_eq!(
            metadata_from_attribute("md5=abcdef"),
            CoreMetadata::Present { sha256: None }
        );
        assert_eq!(
            metadata_from_attribute(&format!("SHA256={}", HEX_A.to_ascii_uppercase())),
            CoreMetadata::Present {
                sha256: Some(digest(HEX_A))
            }
        );
        assert_eq!(metadata_from_attribute("sha256=zz"), CoreMetadata::Absent);
    }
}
