//! Reading PEP 691 JSON pages, with the PEP 700, 714, 740 and 792 additions.
//!
//! serde reads a page into loose structs that accept unknown keys and missing optional fields;
//! the page must then declare `meta.api-version` 1.x, and each file becomes a validated
//! [`FileEntry`] or is dropped and counted. When serde cannot read a page that declares another
//! API version, the version is reported rather than the mismatch it caused.
//!
//! The PEP 792 `project-status` is read leniently: it is new, and a page whose status has an
//! unexpected shape is still a page of files. The standard's object (`status`, or `state` as the
//! PEP's text once spelt it, and `reason`) is read; so are a bare marker string and the
//! `meta.project-status` / `meta.project-status-reason` strings of the specification's example;
//! anything else is no status (`active`).

use std::collections::BTreeMap;

use serde::Deserialize;
use url::Url;

use super::hashes::Hashes;
use super::link::{resolve_file_url, split_fragment};
use super::{
    check_size, versions_from_files, CoreMetadata, FileEntry, PageError, PageKind, PageLocation,
    ProjectIndex, ProjectPage, ProjectStatus, Yanked, MAX_FILES,
};
use crate::simple::digest::Sha256Digest;
use crate::simple::filename::DistFilename;
use crate::simple::name::ProjectName;

#[derive(Deserialize)]
struct JsonMeta {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
    #[serde(rename = "project-status", default)]
    project_status: Loose,
    #[serde(rename = "project-status-reason", default)]
    project_status_reason: Loose,
}

/// A value that should be a string; anything else reads as absent instead of failing the page.
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Loose {
    Text(String),
    #[default]
    #[serde(skip)]
    Absent,
    Other(serde::de::IgnoredAny),
}

impl Loose {
    fn text(&self) -> Option<&str> {
        match self {
            Loose::Text(text) => Some(text),
            Loose::Absent | Loose::Other(_) => None,
        }
    }
}

/// PEP 792 `project-status`: the standard's object, or a bare marker.
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum JsonProjectStatus {
    Object {
        #[serde(default)]
        status: Loose,
        #[serde(default)]
        state: Loose,
        #[serde(default)]
        reason: Loose,
    },
    Marker(String),
    #[default]
    #[serde(skip)]
    Absent,
    Other(serde::de::IgnoredAny),
}
/// Used only to explain a failed parse: a page of an API version we do not know is better
/// reported as that than as whatever structural mismatch it caused.
#[derive(Deserialize)]
struct JsonMetaOnly {
    meta: Option<JsonMeta>,
}

#[derive(Deserialize)]
struct JsonProjectPage {
    meta: Option<JsonMeta>,
    #[serde(default)]
    files: Vec<JsonFile>,
    versions: Option<Vec<String>>,
    #[serde(rename = "project-status", default)]
    project_status: JsonProjectStatus,
}

#[derive(Deserialize)]
struct JsonFile {
    filename: String,
    url: String,
    hashes: Option<BTreeMap<String, Option<String>>>,
    #[serde(rename = "requires-python")]
    requires_python: Option<String>,
    yanked: Option<JsonYanked>,
    #[serde(rename = "core-metadata")]
    core_metadata: Option<JsonMetadata>,
    #[serde(rename = "dist-info-metadata")]
    dist_info_metadata: Option<JsonMetadata>,
    /// The key PEP 691 originally specified, still sent by some older servers.
    #[serde(rename = "data-dist-info-metadata")]
    legacy_dist_info_metadata: Option<JsonMetadata>,
    size: Option<u64>,
    #[serde(rename = "upload-time")]
    upload_time: Option<String>,
    /// PEP 740: a URL, or null.
    provenance: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonYanked {
    Flag(bool),
    Reason(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonMetadata {
    Flag(bool),
    Hashes(BTreeMap<String, Option<String>>),
}

#[derive(Deserialize)]
struct JsonIndex {
    meta: Option<JsonMeta>,
    #[serde(default)]
    projects: Vec<JsonIndexProject>,
}

#[derive(Deserialize)]
struct JsonIndexProject {
    name: Option<String>,
}

fn check_api_version(
    meta: Option<&JsonMeta>,
    kind: PageKind,
    at: &PageLocation,
) -> Result<(), PageError> {
    let Some(found) = meta.and_then(|m| m.api_version.as_deref()) else {
        return Err(PageError::MissingApiVersion {
            kind,
            at: at.clone(),
        });
    };
    let supported = match found.trim().split_once('.') {
        Some((major, minor)) => {
            major == "1" && !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    };
    if supported {
        Ok(())
    } else {
        Err(PageError::UnsupportedApiVersion {
            kind,
            at: at.clone(),
            found: found.chars().take(40).collect(),
        })
    }
}

/// Turns a serde failure into the most useful error: an unsupported API version if the page
/// declares one, the syntax error otherwise.
fn json_error(
    body: &[u8],
    kind: PageKind,
    at: &PageLocation,
    source: serde_json::Error,
) -> PageError {
    if let Ok(meta_only) = serde_json::from_slice::<JsonMetaOnly>(body) {
        if let Err(version_error) = check_api_version(meta_only.meta.as_ref(), kind, at) {
            if matches!(version_error, PageError::UnsupportedApiVersion { .. }) {
                return version_error;
            }
        }
    }
    PageError::Json {
        kind,
        at: at.clone(),
        source,
    }
}

/// Parses a PEP 691 JSON project page. Relative file URLs are resolved against `page_url`.
pub fn parse_project_json(
    body: &[u8],
    page_url: &Url,
    expected: &ProjectName,
) -> Result<ProjectPage, PageError> {
    let kind = PageKind::ProjectPage;
    let at = PageLocation::of(page_url);
    check_size(body, kind, &at)?;
    let page: JsonProjectPage =
        serde_json::from_slice(body).map_err(|e| json_error(body, kind, &at, e))?;
    check_api_version(page.meta.as_ref(), kind, &at)?;
    if page.files.len() > MAX_FILES {
        return Err(PageError::TooManyFiles {
            at,
            limit: MAX_FILES,
        });
    }
    let mut files = Vec::with_capacity(page.files.len());
    let mut dropped = 0;
    for raw in page.files {
        match json_file(raw, page_url) {
            Some(entry) => files.push(entry),
            None => dropped += 1,
        }
    }
    let versions = match page.versions {
        Some(versions) => versions,
        None => versions_from_files(&files),
    };
    let status = project_status(&page.project_status, page.meta.as_ref());
    Ok(ProjectPage {
        name: expected.clone(),
        files,
        versions,
        status,
        dropped,
    })
}

/// The page's PEP 792 status: the top-level `project-status`, else the `meta` strings.
fn project_status(top: &JsonProjectStatus, meta: Option<&JsonMeta>) -> ProjectStatus {
    match top {
        JsonProjectStatus::Object {
            status,
            state,
            reason,
        } => ProjectStatus::from_page(status.text().or(state.text()), reason.text()),
        JsonProjectStatus::Marker(marker) => ProjectStatus::from_page(Some(marker), None),
        JsonProjectStatus::Absent | JsonProjectStatus::Other(_) => match meta {
            Some(meta) => ProjectStatus::from_page(
                meta.project_status.text(),
                meta.project_status_reason.text(),
            ),
            None => ProjectStatus::default(),
        },
    }
}

fn json_file(raw: JsonFile, page_url: &Url) -> Option<FileEntry> {
    let filename = DistFilename::parse(&raw.filename).ok()?;
    let (url, fragment) = resolve_file_url(page_url, &raw.url)?;
    let mut hashes = Hashes::default();
    for (algorithm, value) in raw.hashes.iter().flatten() {
        if let Some(value) = value {
            hashes.add(algorithm, value).ok()?;
        }
    }
    // A digest in the URL fragment only fills in what the hashes dictionary left out.
    if let Some((algorithm, value)) = fragment.as_deref().and_then(split_fragment) {
        if !hashes.has(&algorithm) {
            hashes.add(&algorithm, value).ok()?;
        }
    }
    let yanked = match raw.yanked {
        None | Some(JsonYanked::Flag(false)) => Yanked::No,
        Some(JsonYanked::Flag(true)) => Yanked::Yes { reason: None },
        Some(JsonYanked::Reason(reason)) => Yanked::with_reason(&reason),
    };
    // PEP 714: `core-metadata` is authoritative when present; the older names are fallbacks.
    let core_metadata = raw
        .core_metadata
        .or(raw.dist_info_metadata)
        .or(raw.legacy_dist_info_metadata)
        .map_or(CoreMetadata::Absent, |m| match m {
            JsonMetadata::Flag(false) => CoreMetadata::Absent,
            JsonMetadata::Flag(true) => CoreMetadata::Present { sha256: None },
            JsonMetadata::Hashes(map) => metadata_from_hashes(&map),
        });
    let (sha256, other_hashes) = hashes.finish();
    Some(FileEntry {
        filename,
        url,
        sha256,
        other_hashes,
        requires_python: raw.requires_python.filter(|s| !s.is_empty()),
        yanked,
        core_metadata,
        size: raw.size,
        upload_time: raw.upload_time.filter(|t| is_timestamp(t)),
        // A provenance link that cannot be used leaves the file without provenance, not unusable.
        provenance: raw
            .provenance
            .and_then(|href| resolve_file_url(page_url, &href))
            .map(|(url, _)| url),
        origin: None,
    })
}

fn metadata_from_hashes(map: &BTreeMap<String, Option<String>>) -> CoreMetadata {
    let sha256 = map
        .iter()
        .find(|(algorithm, _)| algorithm.eq_ignore_ascii_case("sha256"))
        .and_then(|(_, value)| value.as_deref());
    match sha256 {
        None => CoreMetadata::Present { sha256: None },
        // A metadata digest that cannot be read cannot be verified; advertising no metadata makes
        // clients fall back to the artifact itself instead of failing on a mismatch.
        Some(hex) => match Sha256Digest::parse_hex(hex) {
            Ok(digest) => CoreMetadata::Present {
                sha256: Some(digest),
            },
            Err(_) => CoreMetadata::Absent,
        },
    }
}

/// Parses a PEP 691 JSON project list.
pub fn parse_index_json(body: &[u8]) -> Result<ProjectIndex, PageError> {
    let kind = PageKind::ProjectList;
    let at = PageLocation::default();
    check_size(body, kind, &at)?;
    let index: JsonIndex =
        serde_json::from_slice(body).map_err(|e| json_error(body, kind, &at, e))?;
    check_api_version(index.meta.as_ref(), kind, &at)?;
    // Invalid names are skipped rather than failing the list: one odd entry upstream must not
    // hide every other project.
    let projects = index
        .projects
        .iter()
        .filter_map(|p| p.name.as_deref())
        .filter_map(|name| ProjectName::parse(name.trim()).ok())
        .collect();
    Ok(ProjectIndex::from_unsorted(projects))
}

/// A loose RFC 3339 check: `YYYY-MM-DDTHH:MM:SS(.fraction)?` then `Z` or `±HH:MM`. Values that do
/// not read are dropped rather than passed on to policy as garbage.
fn is_timestamp(s: &str) -> bool {
    let [y1, y2, y3, y4, b'-', mo1, mo2, b'-', d1, d2, sep, h1, h2, b':', mi1, mi2, b':', s1, s2, rest @ ..] =
        s.as_bytes()
    else {
        return false;
    };
    let digits = [y1, y2, y3, y4, mo1, mo2, d1, d2, h1, h2, mi1, mi2, s1, s2];
    if !digits.iter().all(|b| b.is_ascii_digit()) || !matches!(sep, b'T' | b't' | b' ') {
        return false;
    }
    let two = |a: &u8, b: &u8| u32::from(a - b'0') * 10 + u32::from(b - b'0');
    let in_range = (1..=12).contains(&two(mo1, mo2))
        && (1..=31).contains(&two(d1, d2))
        && two(h1, h2) <= 23
        && two(mi1, mi2) <= 59
        && two(s1, s2) <= 60;
    if !in_range {
        return false;
    }
    let rest = match rest {
        [b'.', tail @ ..] => {
            let digits = tail.iter().take_while(|b| b.is_ascii_digit()).count();
            if digits == 0 {
                return false;
            }
            tail.get(digits..).unwrap_or_default()
        }
        _ => rest,
    };
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', oh1, oh2, b':', om1, om2] => {
            [oh1, oh2, om1, om2].iter().all(|b| b.is_ascii_digit())
                && two(oh1, oh2) <= 23
                && two(om1, om2) <= 59
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::simple::digest::FileKey;
    use crate::simple::page::testing::*;
    use crate::simple::page::StatusMarker;

    #[test]
    fn json_with_all_fields() {
        let body = format!(
            r#"{{
  "meta": {{"api-version": "1.1", "_last-serial": 7}},
  "name": "Foo",
  "unknown-top-level": [1, 2],
  "files": [
    {{
      "filename": "foo-1.0-py3-none-any.whl",
      "url": "../../packages/foo-1.0-py3-none-any.whl",
      "hashes": {{"sha256": "{upper}", "MD5": "ABCDEF", "blake2b_256": "0123"}},
      "requires-python": ">=3.8",
      "yanked": "broken build",
      "core-metadata": {{"sha256": "{HEX_B}"}},
      "dist-info-metadata": true,
      "size": 1234,
      "upload-time": "2024-01-02T03:04:05.678901Z",
      "provenance": null
    }},
    {{
      "filename": "foo-1.1.tar.gz",
      "url": "https://files.example.invalid/foo-1.1.tar.gz#sha256={HEX_B}",
      "hashes": {{}},
      "yanked": true,
      "dist-info-metadata": {{"sha256": "{HEX_A}"}},
      "upload-time": "yesterday"
    }},
    {{
      "filename": "foo-1.2.tar.gz",
      "url": "https://files.example.invalid/foo-1.2.tar.gz",
      "yanked": false,
      "data-dist-info-metadata": true
    }},
    {{
      "filename": "foo-1.3.tar.gz",
      "url": "https://files.example.invalid/foo-1.3.tar.gz",
      "hashes": {{"sha256": "{HEX_A}"}},
      "yanked": "",
      "core-metadata": false,
      "dist-info-metadata": true,
      "requires-python": null,
      "size": null
    }}
  ],
  "versions": ["1.0", "1.1", "1.2", "1.3", "2.0"]
}}"#,
            upper = HEX_A.to_ascii_uppercase()
        );
        let page = parse_project_json(body.as_bytes(), &page_url(), &foo()).unwrap();
        assert_eq!(page.name, foo());
        assert_eq!(page.dropped, 0);
        assert_eq!(page.versions, ["1.0", "1.1", "1.2", "1.3", "2.0"]);
        assert_eq!(page.files.len(), 4);

        let f = &page.files[0];
        assert_eq!(f.filename.as_str(), "foo-1.0-py3-none-any.whl");
        assert_eq!(
            f.url.as_str(),
            "https://index.example.invalid/packages/foo-1.0-py3-none-any.whl"
        );
        assert_eq!(f.sha256, Some(digest(HEX_A)));
        assert_eq!(
            f.other_hashes,
            [
                ("blake2b_256".to_owned(), "0123".to_owned()),
                ("md5".to_owned(), "abcdef".to_owned())
            ]
        );
        assert_eq!(f.requires_python.as_deref(), Some(">=3.8"));
        assert_eq!(
            f.yanked,
            Yanked::Yes {
                reason: Some("broken build".into())
            }
        );
        // PEP 714: core-metadata wins over dist-info-metadata.
        assert_eq!(
            f.core_metadata,
            CoreMetadata::Present {
                sha256: Some(digest(HEX_B))
            }
        );
        assert_eq!(f.size, Some(1234));
        assert_eq!(
            f.upload_time.as_deref(),
            Some("2024-01-02T03:04:05.678901Z")
        );
        assert_eq!(f.key(), FileKey::Sha256(digest(HEX_A)));

        let f = &page.files[1];
        assert_eq!(
            f.url.as_str(),
            "https://files.example.invalid/foo-1.1.tar.gz"
        );
        assert_eq!(
            f.sha256,
            Some(digest(HEX_B)),
            "fragment fills in a missing hash"
        );
        assert_eq!(f.yanked, Yanked::Yes { reason: None });
        assert_eq!(
            f.core_metadata,
            CoreMetadata::Present {
                sha256: Some(digest(HEX_A))
            }
        );
        assert_eq!(f.upload_time, None, "unreadable upload time is dropped");
        assert_eq!(f.size, None);

        let f = &page.files[2];
        assert_eq!(f.yanked, Yanked::No);
        assert_eq!(f.core_metadata, CoreMetadata::Present { sha256: None });
        assert_eq!(f.sha256, None);
        assert_eq!(
            f.key(),
            FileKey::Url(Sha256Digest::of(
                b"https://files.example.invalid/foo-1.2.tar.gz"
            ))
        );

        let f = &page.files[3];
        assert_eq!(f.yanked, Yanked::Yes { reason: None });
        assert_eq!(
            f.core_metadata,
            CoreMetadata::Absent,
            "core-metadata false wins"
        );
        assert_eq!(f.requires_python, None);
    }

    #[test]
    fn json_provenance_and_project_status() {
        let body = format!(
            r#"{{"meta":{{"api-version":"1.4"}},"name":"foo",
            "project-status":{{"status":"Archived","reason":"moved to bar"}},
            "files":[
              {{"filename":"foo-1.0.tar.gz","url":"https://files.example.invalid/foo-1.0.tar.gz",
                "hashes":{{"sha256":"{HEX_A}"}},
                "provenance":"https://index.example.invalid/integrity/foo/1.0/foo-1.0.tar.gz/provenance"}},
              {{"filename":"foo-1.1.tar.gz","url":"https://files.example.invalid/foo-1.1.tar.gz",
                "hashes":{{}},"provenance":"../../files/foo-1.1.tar.gz.provenance#frag"}},
              {{"filename":"foo-1.2.tar.gz","url":"https://files.example.invalid/foo-1.2.tar.gz",
                "hashes":{{}},"provenance":null}},
              {{"filename":"foo-1.3.tar.gz","url":"https://files.example.invalid/foo-1.3.tar.gz",
                "hashes":{{}},"provenance":"javascript:alert(1)"}}
            ]}}"#
        );
        let page = parse_project_json(body.as_bytes(), &page_url(), &foo()).unwrap();
        assert_eq!(
            page.dropped, 0,
            "a bad provenance link does not drop its file"
        );
        assert_eq!(
            provenance_urls(&page),
            [
                Some("https://index.example.invalid/integrity/foo/1.0/foo-1.0.tar.gz/provenance"),
                Some("https://index.example.invalid/files/foo-1.1.tar.gz.provenance"),
                None,
                None
            ]
        );
        assert_eq!(page.status.marker, StatusMarker::Archived);
        assert_eq!(page.status.reason.as_deref(), Some("moved to bar"));
    }

    #[test]
    fn json_project_status_is_read_leniently() {
        // `top` is a top-level member, `meta` members of `meta`, each with a leading comma.
        let status = |top: &str, meta: &str| {
            let body = format!(r#"{{"meta":{{"api-version":"1.4"{meta}}}{top},"files":[]}}"#);
            parse_project_json(body.as_bytes(), &page_url(), &foo())
                .unwrap_or_else(|e| panic!("{body}: {e}"))
                .status
        };
        let marker = |top: &str| status(top, "").marker;
        assert_eq!(marker(""), StatusMarker::Active);
        assert_eq!(
            marker(r#","project-status":{"status":"quarantined"}"#),
            StatusMarker::Quarantined
        );
        // The PEP's text once spelt the key `state`; `status` wins when both are there.
        assert_eq!(
            marker(r#","project-status":{"state":"deprecated"}"#),
            StatusMarker::Deprecated
        );
        assert_eq!(
            marker(r#","project-status":{"state":"deprecated","status":"archived"}"#),
            StatusMarker::Archived
        );
        assert_eq!(
            marker(r#","project-status":"archived""#),
            StatusMarker::Archived
        );
        // The specification's example puts the strings in `meta`.
        let in_meta = status(
            "",
            r#","project-status":"archived","project-status-reason":"done""#,
        );
        assert_eq!(in_meta.marker, StatusMarker::Archived);
        assert_eq!(in_meta.reason.as_deref(), Some("done"));
        // Shapes that make no sense are no status, and the page still parses.
        for odd in [
            r#","project-status":null"#,
            r#","project-status":7"#,
            r#","project-status":{"status":["archived"],"reason":1}"#,
            r#","project-status":{}"#,
            r#","project-status":{"status":"not a marker"}"#,
        ] {
            assert!(status(odd, "").is_default(), "{odd}");
        }
        assert!(status("", r#","project-status":{"status":"archived"}"#).is_default());
    }

    #[test]
    fn json_minimal_and_derived_versions() {
        let body = br#"{"meta":{"api-version":"1.0"},"name":"foo","files":[
            {"filename":"foo-1.0.tar.gz","url":"https://files.example.invalid/a/foo-1.0.tar.gz","hashes":{}},
            {"filename":"foo-1.0-py3-none-any.whl","url":"https://files.example.invalid/b/foo-1.0-py3-none-any.whl","hashes":{}},
            {"filename":"foo-0.9.zip","url":"/c/foo-0.9.zip","hashes":{}},
            {"filename":"foo.exe","url":"/c/foo.exe","hashes":{}}
        ]}"#;
        let page = parse_project_json(body, &page_url(), &foo()).unwrap();
        assert_eq!(page.versions, ["1.0", "0.9"]);
        assert_eq!(
            page.files[2].url.as_str(),
            "https://index.example.invalid/c/foo-0.9.zip"
        );
        assert!(page
            .files
            .iter()
            .all(|f| f.core_metadata == CoreMetadata::Absent));
    }

    #[test]
    fn json_name_mismatch_is_kept_and_files_of_other_projects_too() {
        let body = br#"{"meta":{"api-version":"1.1"},"name":"bar","files":[
            {"filename":"bar-1.0.tar.gz","url":"https://files.example.invalid/bar-1.0.tar.gz","hashes":{}}
        ],"versions":[]}"#;
        let page = parse_project_json(body, &page_url(), &foo()).unwrap();
        assert_eq!(page.name, foo());
        assert_eq!(page.files.len(), 1);
        assert_eq!(page.files[0].filename.project().unwrap().as_str(), "bar");
    }

    #[test]
    fn json_drops_unusable_files() {
        let body = format!(
            r#"{{"meta":{{"api-version":"1.1"}},"name":"foo","files":[
            {{"filename":"../evil.whl","url":"https://files.example.invalid/x","hashes":{{}}}},
            {{"filename":"foo-1.0.tar.gz","url":"javascript:alert(1)","hashes":{{}}}},
            {{"filename":"foo-1.0.tar.gz","url":"file:///etc/passwd","hashes":{{}}}},
            {{"filename":"foo-1.0.tar.gz","url":"https://files.example.invalid/foo-1.0.tar.gz","hashes":{{"sha256":"nothex"}}}},
            {{"filename":"foo-1.0.tar.gz","url":"https://files.example.invalid/foo-1.0.tar.gz","hashes":{{"sha256":"{HEX_A}"}}}}
        ]}}"#
        );
        let page = parse_project_json(body.as_bytes(), &page_url(), &foo()).unwrap();
        assert_eq!(page.files.len(), 1);
        assert_eq!(page.dropped, 4);
    }

    #[test]
    fn json_api_versions() {
        let page =
            |v: &str| format!(r#"{{"meta":{{"api-version":"{v}"}},"name":"foo","files":[]}}"#);
        for ok in ["1.0", "1.1", "1.4"] {
            assert!(
                parse_project_json(page(ok).as_bytes(), &page_url(), &foo()).is_ok(),
                "{ok}"
            );
        }
        for bad in ["2.0", "0.9", "1", "v1.0", "1.x", ""] {
            let err = parse_project_json(page(bad).as_bytes(), &page_url(), &foo()).unwrap_err();
            assert!(
                matches!(err, PageError::UnsupportedApiVersion { .. }),
                "{bad}: {err}"
            );
        }
        let err =
            parse_project_json(br#"{"name":"foo","files":[]}"#, &page_url(), &foo()).unwrap_err();
        assert!(matches!(err, PageError::MissingApiVersion { .. }), "{err}");
        // A v2 page whose files no longer fit our model reports the version, not the mismatch.
        let v2 = br#"{"meta":{"api-version":"2.0"},"files":{"foo.whl":{"uri":1}}}"#;
        let err = parse_project_json(v2, &page_url(), &foo()).unwrap_err();
        assert!(
            matches!(err, PageError::UnsupportedApiVersion { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("2.0"), "{err}");
    }

    #[test]
    fn json_garbage_is_rejected_with_position() {
        let err = parse_project_json(b"{\"meta\":\n  {\"api-version\": }", &page_url(), &foo())
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PageError::Json { .. }), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        assert!(
            msg.contains("https://index.example.invalid/simple/foo/"),
            "{msg}"
        );
        for garbage in [
            &b""[..],
            b"null",
            b"[]",
            b"<html>",
            b"\xff\xfe",
            b"{\"files\": 3}",
        ] {
            assert!(parse_project_json(garbage, &page_url(), &foo()).is_err());
        }
        let wrong_type = br#"{"meta":{"api-version":"1.1"},"files":[{"filename":"a.whl","url":"x","size":"big"}]}"#;
        assert!(matches!(
            parse_project_json(wrong_type, &page_url(), &foo()),
            Err(PageError::Json { .. })
        ));
    }

    #[test]
    fn json_mutations_never_panic() {
        let seed = format!(
            r#"{{"meta":{{"api-version":"1.1"}},"name":"foo","files":[{{"filename":"foo-1.0-py3-none-any.whl","url":"../x/foo-1.0-py3-none-any.whl#sha256={HEX_A}","hashes":{{"sha256":"{HEX_A}"}},"yanked":"r","core-metadata":{{"sha256":"{HEX_B}"}},"size":3,"upload-time":"2024-01-02T03:04:05Z"}}],"versions":["1.0"]}}"#
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(691);
        for _ in 0..3000 {
            let mut body = seed.clone().into_bytes();
            for _ in 0..rng.gen_range(1..6) {
                let at = rng.gen_range(0..body.len());
                match rng.gen_range(0..3) {
                    0 => body[at] = rng.gen(),
                    1 => {
                        body.remove(at);
                    }
                    _ => {
                        let bytes = b"{}[]\",:\\0e-";
                        body.insert(at, bytes[rng.gen_range(0..bytes.len())]);
                    }
                }
            }
            let _ = parse_project_json(&body, &page_url(), &foo());
            let _ = parse_index_json(&body);
        }
    }

    #[test]
    fn timestamps() {
        for ok in [
            "2024-01-02T03:04:05Z",
            "2024-01-02T03:04:05.123456Z",
            "2024-01-02 03:04:05+01:00",
            "2024-12-31T23:59:60-05:30",
        ] {
            assert!(is_timestamp(ok), "{ok}");
        }
        for bad in [
            "",
            "2024-01-02",
            "2024-01-02T03:04:05",
            "2024-13-02T03:04:05Z",
            "2024-01-02T24:04:05Z",
            "2024-01-02T03:04:05.Z",
            "2024-01-02T03:04:05Zjunk",
            "２０２４-01-02T03:04:05Z",
            "2024-01-02T03:04:05+0100",
        ] {
            assert!(!is_timestamp(bad), "{bad}");
        }
    }
}
